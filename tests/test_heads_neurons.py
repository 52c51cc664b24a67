"""Head scores against plain loops, and a neuron's logit effect against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend import capture, load_model
from backend.heads import head_scores
from backend.neurons import neuron_effect, output_direction
from backend.readout import readout
from tests.tiny import FAMILY_BY_NAME, build


@pytest.fixture(scope="module", params=["gpt2", "gemma2"])
def lm(request, tmp_path_factory):
    return load_model(build(FAMILY_BY_NAME[request.param], tmp_path_factory.mktemp(request.param)),
                      device="cpu")


def loop_scores(att: np.ndarray, ids: list[int]):
    """Each score by its definition, one query at a time."""
    n = len(ids)
    prev = np.mean([att[q, q - 1] for q in range(1, n)])
    first = np.mean([att[q, 0] for q in range(1, n)])
    dup, ind = [], []
    for q in range(n):
        copies = [j for j in range(q) if ids[j] == ids[q]]
        if copies:
            dup.append(sum(att[q, j] for j in copies))
            targets = [j + 1 for j in copies if j + 1 < q - 1]  # the token just before is a previous-token read
            if targets:
                ind.append(sum(att[q, t] for t in targets))
    ent = np.mean([-sum(a * math.log(a) for a in att[q] if a > 0) for q in range(n)])
    return prev, first, np.mean(dup), np.mean(ind), ent


def test_head_scores_match_definitions(lm):
    cap = capture(lm, "one two three four one two three four five")
    scores = head_scores(cap)
    ids = cap.token_ids.tolist()
    for layer in range(cap.n_layers):
        for head in range(cap.n_heads):
            prev, first, dup, ind, ent = loop_scores(cap.attention[layer, head].astype(np.float64), ids)
            got = [scores.previous_token, scores.first_token, scores.duplicate_token,
                   scores.induction, scores.entropy]
            want = [prev, first, dup, ind, ent]
            for g, w in zip(got, want, strict=True):
                assert abs(float(g[layer, head]) - w) < 1e-5


def test_head_scores_without_repeats_are_nan(lm):
    cap = capture(lm, "one two three")
    scores = head_scores(cap)
    assert np.isnan(scores.induction).all() and np.isnan(scores.duplicate_token).all()
    assert np.isfinite(scores.previous_token).all()


def test_neuron_effect_matches_finite_difference(lm):
    cap = capture(lm, "The capital of France is")
    layer, neuron = 1, 5
    effect = neuron_effect(lm, cap, layer, neuron, position=-1, k=5)
    base = cap.resid[-1, -1].astype(np.float64)
    direction = output_direction(lm, layer, neuron).numpy().astype(np.float64)
    eps = 1e-3
    plus = readout(lm, (base + eps * direction)[None].astype(np.float32))[0].double()
    minus = readout(lm, (base - eps * direction)[None].astype(np.float32))[0].double()
    slope = ((plus - minus) / (2 * eps)).numpy()
    order = np.argsort(-slope)
    np.testing.assert_allclose(effect.promoted_values, slope[order[:5]], rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(effect.suppressed_values, slope[order[::-1][:5]], rtol=2e-2, atol=2e-3)
    assert effect.position == cap.n_tokens - 1


def test_output_direction_is_the_weight_column(lm):
    layer, neuron = 0, 3
    proj = lm.anatomy.mlp_out[layer]
    hidden = torch.zeros(1, lm.info.d_mlp)
    hidden[0, neuron] = 1.0
    with torch.no_grad():
        bias = proj(torch.zeros(1, lm.info.d_mlp))
        want = proj(hidden) - bias
    np.testing.assert_allclose(output_direction(lm, layer, neuron).numpy(), want[0].numpy(), atol=1e-6)
    with pytest.raises(IndexError):
        output_direction(lm, layer, lm.info.d_mlp)


def test_neuron_effects_from_many_threads_at_once_are_their_solo_results(lm):
    """Forward-mode AD keeps process-wide state: a page served to a room computes effects concurrently."""
    import threading

    cap = capture(lm, "one two three four one two three four five")
    jobs = [(layer, neuron) for layer in range(cap.n_layers) for neuron in range(6)]
    solo = {job: neuron_effect(lm, cap, *job).promoted_values for job in jobs}
    results, errors = {}, []

    def work(job):
        try:
            results[job] = neuron_effect(lm, cap, *job).promoted_values
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    for _ in range(3):
        threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for job in jobs:
            np.testing.assert_array_equal(results[job], solo[job])
