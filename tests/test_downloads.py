"""What a reader takes away from each view: its numbers, and Python that gives the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend import capture, lens_summary, load_model
from backend.edits import HeadAblation
from backend.heads import head_scores
from backend.whatif import edit_effect
from views import downloads

PROMPT = "apple river lamp cloud seven green door apple river lamp cloud seven green"


@pytest.fixture(scope="module")
def run():
    lm = load_model()
    cap = capture(lm, PROMPT)
    return lm, cap, lens_summary(lm, cap), head_scores(cap)


def test_view_numbers_are_the_captured_numbers(run):
    lm, cap, summary, scores = run
    attention = json.loads(downloads.to_json(downloads.attention_numbers(cap, scores)))
    np.testing.assert_allclose(attention["scores"]["induction"], scores.induction, atol=1e-7)
    np.testing.assert_allclose(attention["last_token_reads"], cap.attention[:, :, -1, :], atol=1e-7)
    lens = json.loads(downloads.to_json(downloads.lens_numbers(cap, summary)))
    assert lens["top_tokens"][-1][-1][0] == summary.top_tokens[-1, -1, 0] == " door"
    np.testing.assert_allclose(lens["top_probs"], summary.top_probs, atol=1e-7)
    neurons = json.loads(downloads.to_json(downloads.neuron_numbers(cap)))
    first = neurons["layers"][3]
    np.testing.assert_allclose(first["activations"][0], cap.neurons[3, :, first["neurons"][0]], atol=1e-6)
    effect = edit_effect(lm, cap, (HeadAblation(3, 1),), max_tokens=256)
    what_if = json.loads(downloads.to_json(downloads.what_if_numbers(effect)))
    assert what_if["after"][" door"] == pytest.approx(float(effect.after_probs[0]))


@pytest.mark.parametrize("view", downloads.VIEWS)
def test_the_python_snippet_runs_and_gives_the_views_numbers(run, view):
    _, cap, summary, scores = run
    namespace: dict = {}
    second = "xray-demo-secret" if view == "compare" else None
    exec(downloads.python_snippet(view, PROMPT, None, 256, (HeadAblation(3, 1),), second), namespace)  # noqa: S102
    np.testing.assert_array_equal(namespace["cap"].logits, cap.logits)
    if view == "attention":
        np.testing.assert_array_equal(namespace["scores"].induction, scores.induction)
    if view == "lens":
        np.testing.assert_array_equal(namespace["summary"].top_ids, summary.top_ids)
    if view == "whatif":
        assert namespace["effect"].edits == (HeadAblation(3, 1),)
    if view == "patching":
        assert namespace["sweep"].resid[0, 4] == pytest.approx(1.0, abs=1e-3)
    if view == "compare":
        from backend.compare import compare

        diff = namespace["diff"]
        assert namespace["lm_b"].info.name == "xray-demo-secret"
        np.testing.assert_allclose(diff.kl, compare(namespace["lm"], namespace["lm_b"], PROMPT).kl, atol=1e-6)
