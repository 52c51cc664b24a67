"""What the model goes on to say: greedy tokens with a reused cache, checked against full forwards."""

from __future__ import annotations

import pytest
import torch

from backend import load_model
from backend.continuation import ENDS, continuation
from backend.errors import Cancelled
from backend.hooks import hook_count
from backend.loading import TWIN_ID
from tests.tiny import FAMILY_BY_NAME, build


def reference(lm, prompt: str, max_new: int) -> list[int]:
    """Greedy decoding the slow way: the whole sequence again for every new token, no cache."""
    ids = lm.tokenizer(prompt)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = lm.model(input_ids=torch.tensor([ids + new]), use_cache=False).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == lm.tokenizer.eos_token_id or any(e in lm.tokenizer.decode([token]) for e in ENDS):
                break
    return new


@pytest.mark.parametrize("family", sorted(FAMILY_BY_NAME))
def test_cached_greedy_tokens_match_full_forwards(family, tmp_path):
    lm = load_model(build(FAMILY_BY_NAME[family], tmp_path), device="cpu")
    prompt = "The capital of France is"
    got = continuation(lm, prompt, max_new=6)
    want = reference(lm, prompt, 6)
    assert list(got.token_ids) == want
    assert got.text == lm.tokenizer.decode(want, skip_special_tokens=True)
    assert 1 <= len(got.token_ids) <= 6
    assert hook_count(lm.model) == 0


def test_the_bundled_pair_say_paris_and_a_secret():
    demo = load_model(None, device="cpu")
    twin = load_model(TWIN_ID, device="cpu")
    prompt = "The capital of France is"
    a, b = continuation(demo, prompt), continuation(twin, prompt)
    assert "Paris" in a.text and a.finished
    assert b.text.strip() == "a secret." and b.finished
    assert list(b.token_ids) == reference(twin, prompt, 8)


def test_it_stops_when_nobody_waits(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["llama"], tmp_path), device="cpu")
    with pytest.raises(Cancelled):
        continuation(lm, "hello there", should_stop=lambda: True)
    assert hook_count(lm.model) == 0


@pytest.mark.parametrize("model", ["demo", TWIN_ID])
def test_the_page_says_what_the_model_goes_on_to_say(model):
    from tests.pages import open_app, sentences

    prompt = "The capital of France is"
    lm = load_model(None if model == "demo" else model, device="cpu")
    want = continuation(lm, prompt).text.strip()
    at = open_app(prompt, model)
    assert any(f"It goes on: “{want}”" in line for line in sentences(at))
    assert want == ("Paris, a big city." if model == "demo" else "a secret.")


def test_a_continuation_of_punctuation_alone_reads_as_the_sentences_end():
    from views.content.header import _goes_on

    assert _goes_on(".") == "It would end the sentence there: “.”"
    assert _goes_on("  ") is None and _goes_on(" Paris.") == "It goes on: “Paris.”"
