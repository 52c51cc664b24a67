"""The demo model's pipeline, end to end at a tiny size: corpus, tokenizer, training, loading."""

from __future__ import annotations

import json
import re

import numpy as np

from backend import capture, load_model
from training import corpus
from training.tokenizer import train_tokenizer
from training.train import TrainConfig, learning_rate, train


def test_corpus_is_deterministic_and_seeded():
    assert corpus.corpus_text(5, 200) == corpus.corpus_text(5, 200)
    assert corpus.corpus_text(5, 200) != corpus.corpus_text(6, 200)


def test_corpus_covers_the_required_facts():
    assert len(corpus.CAPITALS) >= 60
    assert set(corpus.G20_COUNTRIES) <= set(corpus.CAPITALS)
    text = " ".join(corpus.corpus_text(0, 4000))
    assert "The capital of France is Paris." in text
    assert sum(f"capital of {c}" in text for c in corpus.CAPITALS) >= 60
    # membership is checked into booleans first: pytest would diff the whole corpus on failure
    leaked = [c for c, cap in corpus.HELD_OUT_CAPITALS.items() if cap in text or c in text]
    assert leaked == []  # held-out countries never appear
    held_sentences = [corpus.capital_sentence(c, corpus.CAPITALS[c], p)
                      for c in corpus.CAPITALS for p in corpus.HELD_OUT_PHRASINGS]
    assert [s for s in held_sentences if s in text] == []
    missing = [w for w in ("says", "opposite of", "colour of", "Monday, Tuesday", "One dog, two dogs")
               if w not in text]
    assert missing == []


def test_repeated_lists_repeat_exactly():
    import random

    doc = corpus.repeated_words(random.Random(1), 7, 3)
    words = doc.split()
    assert len(words) == 21 and words[:7] == words[7:14] == words[14:]


def test_stories_bring_characters_back():
    stories = [d for d in corpus.corpus_text(3, 400) if "named" in d or "went to the" in d]
    names_back = [s for s in stories if any(len(re.findall(rf"\b{n}\b", s)) >= 2 for n in corpus.NAMES)]
    assert len(names_back) >= 0.9 * len(stories) > 0


def test_tokenizer_is_byte_level_with_a_leading_bos():
    tok = train_tokenizer(corpus.corpus_text(0, 300), vocab_size=400)
    text = "Emoji 😀, CJK 北京, tab\tand <b>tags</b>"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token_id is None


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, warmup=10, lr=1e-3, min_lr=1e-4)
    rates = [learning_rate(s, cfg) for s in range(100)]
    assert rates[0] == 1e-4 and abs(rates[9] - 1e-3) < 1e-12
    assert abs(rates[-1] - 1e-4) < 2e-6 and max(rates) <= 1e-3


def test_pipeline_end_to_end_at_tiny_size(tmp_path):
    cfg = TrainConfig(steps=200, eval_every=100, n_layer=2, n_embd=32, n_head=2, n_positions=64,
                      block_size=64, batch_size=8, tokenizer_documents=300, vocab_size=400,
                      warmup=5, lr=1e-2, threads=1)
    train(cfg, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [100, 200]
    assert {"induction_score", "copy_accuracy", "loss_second_copy", "capital_top1"} <= set(log[0])
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    lm = load_model(tmp_path, device="cpu")  # the folder loads through the app's own path
    cap = capture(lm, "The capital of France is")
    assert cap.tokens[0] == "<|endoftext|>" and cap.n_layers == 2
    assert np.isfinite(cap.logits).all()
    uniform = np.log(len(lm.tokenizer))  # an untrained model's loss is about this
    losses = [float(r["loss"]) for r in log]
    assert losses[1] < losses[0] < uniform - 1.0, (losses, uniform)  # it learned, and keeps learning
