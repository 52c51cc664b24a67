"""Suggested corrupt prompts: one word of a kind swapped, the token count kept (checked with the tokenizers)."""

from __future__ import annotations

import pytest

from backend import load_model
from backend.corrupt import suggest_corrupt
from tests.tiny import FAMILY_BY_NAME, build


@pytest.fixture(scope="module")
def demo():
    return load_model()


@pytest.mark.parametrize(("prompt", "swap"), [
    ("The capital of France is", ("France", "Italy")),
    ("I have 3 apples and", ("3", "4")),
    ("Monday, Tuesday, Wednesday, Thursday,", ("Thursday", "Monday")),
])
def test_the_last_word_of_a_kind_is_swapped_and_the_length_kept(demo, prompt, swap):
    found = suggest_corrupt(demo, prompt)
    assert (found.original, found.replacement) == swap
    assert found.prompt == prompt[:found.start] + swap[1] + prompt[found.start + len(swap[0]):]
    assert len(demo.tokenizer(found.prompt)["input_ids"]) == len(demo.tokenizer(prompt)["input_ids"])


def test_no_swap_that_keeps_the_length_gives_none(demo):
    assert suggest_corrupt(demo, "xyz") is None
    assert suggest_corrupt(demo, "!!") is None


def test_another_tokenizer_keeps_its_own_token_count(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["llama"], tmp_path), device="cpu")
    prompt = "When Mary and John went to the store, John gave a drink to"
    found = suggest_corrupt(lm, prompt)
    assert (found.original, found.start) == ("John", prompt.rindex("John"))  # the last name, nearest the answer
    assert found.replacement != "John"
    assert len(lm.tokenizer(found.prompt)["input_ids"]) == len(lm.tokenizer(prompt)["input_ids"])
