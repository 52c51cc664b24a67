"""What a reader takes away from each view: its numbers, and Python that gives the same numbers."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest

from backend import capture, lens_summary, load_model
from backend.compare import compare
from backend.edits import HeadAblation
from backend.features import load_transcoders
from backend.graph import attribute
from backend.heads import head_scores
from backend.lens import token_trajectory
from backend.loading import TWIN_ID
from backend.neurons import neuron_effect
from backend.patching import patching_sweep
from backend.run import Run
from backend.whatif import edit_effect
from views import downloads
from views.content.attention import AttentionChoices
from views.content.features import FeatureChoices
from views.content.lens import LensChoices
from views.content.neurons import NeuronChoices
from views.content.patching import PatchingChoices
from views.snippets import python_snippet

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


def printed(script: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(script, "snippet.py", "exec"), {})  # noqa: S102 - the snippet the page shows
    return out.getvalue()


def floats(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?\d+\.\d+", line)]


def test_the_snippets_use_the_pages_choices_and_print_its_numbers(run):
    lm, cap, summary, scores = run
    base = Run(None, "auto", "auto", PROMPT, 256)
    out = printed(python_snippet("attention", base, AttentionChoices("induction", 2, 1, 9)))
    assert f"head 3.2 induction score: {scores.induction[2, 1]:.4f}" in out
    np.testing.assert_allclose(floats(out.splitlines()[1]), cap.attention[2, 1, 9, :10], atol=1e-4)
    door = int(cap.logits[-1].argmax())
    last = cap.n_tokens - 1
    out = printed(python_snippet("lens", base, LensChoices(0, last, last, door))).splitlines()
    assert out[0] == f"top guess at position {last} after each layer (embeddings first):"
    assert out[-2] == f"  4: ' door' {summary.top_probs[4, last, 0]:.4f}"
    want = token_trajectory(lm, cap, door, [last]).probs[:, 0]
    np.testing.assert_allclose(floats(out[-1]), want, atol=1e-4)
    out = printed(python_snippet("neurons", base, NeuronChoices(2, False, 5, 17))).splitlines()
    assert out[0] == f"neuron 17 of layer 3 at position 5: {cap.neurons[2, 5, 17]:+.4f}"
    effect = neuron_effect(lm, cap, 2, 17, 5)
    np.testing.assert_allclose(floats(out[1]), effect.promoted_values, atol=1e-4)
    out = printed(python_snippet("whatif", base, (HeadAblation(3, 1),))).splitlines()
    changed = edit_effect(lm, cap, (HeadAblation(3, 1),), max_tokens=256)
    np.testing.assert_allclose(floats(out[1]), changed.after_probs, atol=1e-4)
    clean, corrupt = "The capital of France is", "The capital of Italy is"
    answer, foil = int(capture(lm, clean).logits[-1].argmax()), int(capture(lm, corrupt).logits[-1].argmax())
    out = printed(python_snippet("patching", base, PatchingChoices(clean, corrupt, answer, foil))).splitlines()
    sweep = patching_sweep(lm, clean, corrupt, answer, foil)
    np.testing.assert_allclose([floats(line) for line in out[2:]], sweep.resid, atol=1e-4)
    out = printed(python_snippet("compare", replace(base, compare=TWIN_ID))).splitlines()
    diff = compare(lm, load_model(TWIN_ID), PROMPT)
    np.testing.assert_allclose(floats(out[2]), diff.kl[1:, -1], atol=1e-4)
    assert "No change is in force" in printed(python_snippet("whatif", base))


def test_the_feature_and_graph_snippets_give_the_pages_numbers(run):
    lm, *_ = run
    base = Run(None, "auto", "auto", "The capital of France is", 256, features="bundled")
    tc = load_transcoders(lm)
    cap = capture(lm, base.prompt, features=tc)
    out = printed(python_snippet("features", base, FeatureChoices(3, 5, 42))).splitlines()
    np.testing.assert_allclose(floats(out[1]), cap.features.layers[3].column(42), atol=1e-4)
    out = printed(python_snippet("graph", base, (0.8, 64))).splitlines()
    graph = attribute(lm, base.prompt, transcoders=tc, node_threshold=1.0, edge_threshold=1.0)
    graph = (graph.full or graph).prune(0.8, 0.98)
    assert out[0] == f"{len(graph.nodes)} nodes, {int((graph.adjacency != 0).sum())} edges"
