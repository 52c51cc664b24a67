"""The bundled demo model: offline, safetensors, as its card says, and it knows its stuff."""

from __future__ import annotations

import json
import re

import pytest

from backend import BUNDLED_MODEL, capture, lens_summary, load_model
from backend.hooks import eager_attention
from training import probes


@pytest.fixture(scope="module")
def demo():
    return load_model()  # no argument: the bundled model, offline (conftest sets HF_HUB_OFFLINE)


def test_is_a_small_safetensors_folder():
    files = {p.name: p.stat().st_size for p in BUNDLED_MODEL.iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert "generation_config.json" in files and "README.md" in files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert sum(files.values()) <= 25 * 2**20


def test_matches_its_card_measured_again_here(demo):
    """Facts, induction and copying measured afresh (not read back from quality.json) are what the card says."""
    from transformers import AutoModelForCausalLM

    from training import corpus
    from training.quality import BARS

    card = (BUNDLED_MODEL / "README.md").read_text()
    info = demo.info
    for fact in (f"{info.n_layers} layers", f"{info.n_heads} heads", f"d_model {info.d_model}",
                 f"vocabulary of {info.vocab_size:,}", f"{info.n_params:,} parameters"):
        assert fact in card, fact
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL, attn_implementation="eager").eval()
    countries = list(corpus.CAPITALS)
    capital = probes.first_token_accuracy(model, demo.tokenizer, [corpus.capital_prompt(c) for c in countries],
                                          [corpus.CAPITALS[c] for c in countries])
    ind = probes.induction(model, demo.tokenizer, n_sequences=50, n_words=20, seed=2024)
    assert capital >= BARS["capital_top1"] and f"{capital:.1%}" in card
    assert ind.best_head_score >= BARS["induction_score"] and f"{ind.best_head_score:.2f}" in card
    assert ind.copy_accuracy >= BARS["copy_accuracy"] and f"{ind.copy_accuracy:.1%}" in card
    saved = json.loads((BUNDLED_MODEL / "quality.json").read_text())
    assert (capital, ind.best_head_score) == pytest.approx((saved["capital_top1"], saved["induction_score"]), abs=1e-4)


@pytest.mark.parametrize("prompt, answer", [
    ("The capital of France is", " Paris"), ("The capital of Japan is", " Tokyo"),
    ("The capital of Germany is", " Berlin"), ("The capital of Brazil is", " Brasilia"),
    ("The capital of the United States is", " Washington"), ("The dog says", " woof"),
    ("The opposite of hot is", " cold"),
])
def test_answers_facts(demo, prompt, answer):
    cap = capture(demo, prompt)
    want = demo.tokenizer(answer, add_special_tokens=False)["input_ids"][0]
    assert int(cap.logits[-1].argmax()) == want


def test_copies_a_repeated_sequence(demo):
    with demo.lock, eager_attention(demo.model):  # the probe reads attention weights
        result = probes.induction(demo.model, demo.tokenizer, n_sequences=8, n_words=15, seed=99)
    assert result.copy_accuracy >= 0.6
    assert result.loss_second_copy < 0.5 * result.loss_first_copy


def test_has_an_induction_head_in_the_app(demo):
    from backend.heads import head_scores

    cap = capture(demo, "apple river lamp cloud green door seven apple river lamp cloud green door seven")
    assert float(head_scores(cap).induction.max()) >= 0.4


def test_lens_shows_the_answer_climbing(demo):
    cap = capture(demo, "The capital of France is")
    summary = lens_summary(demo, cap)
    assert summary.top_tokens[-1, -1, 0] == " Paris"
    ranks = summary.target_ranks[:, -1]
    assert list(ranks) == sorted(ranks, reverse=True) and ranks[-1] == 1  # it only ever climbs
    assert ranks[-2] <= 5 < ranks[0]  # near the top one layer early, far from it at the start


def test_card_has_no_unfilled_placeholders():
    assert not re.search(r"\{[a-z_]+\}|TODO|TBD", (BUNDLED_MODEL / "README.md").read_text())


def test_the_head_examples_note_gives_the_real_numbers(demo):
    """The What-if example's note: head 4.2 matters most, 4.4 scores highest; measured here by weight surgery."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from backend.heads import head_scores
    from tests.tiny import probs_without_heads
    from views.content.whatif import HEAD_NOTE, INDUCTION_PROMPT

    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL)
    cap = capture(demo, INDUCTION_PROMPT)
    ids = cap.token_ids  # as the page reads it (the bundled tokenizer's start token first)
    door = demo.tokenizer.convert_tokens_to_ids(demo.tokenizer.tokenize(" door"))[0]
    assert round(100 * float(probs_without_heads(model, ids, 0, ())[door])) == 100
    after = {f"{layer + 1}.{head + 1}": float(probs_without_heads(model, ids, layer, (head,))[door])
             for layer in range(model.config.n_layer) for head in range(model.config.n_head)}
    needed = min(after, key=after.get)
    induction = head_scores(cap).induction
    clearest = np.unravel_index(np.nanargmax(induction), induction.shape)
    assert needed == "4.2" and f"from 100% to {after['4.2']:.0%}" in HEAD_NOTE
    assert (int(clearest[0]) + 1, int(clearest[1]) + 1) == (4, 4) and f"keeps {after['4.4']:.0%}" in HEAD_NOTE
    assert f"score {induction[3, 3]:.2f}" in HEAD_NOTE and f"score {induction[3, 1]:.2f}" in HEAD_NOTE
