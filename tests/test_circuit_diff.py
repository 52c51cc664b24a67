"""The circuit diff (backend.compare.circuit_diff) against references computed here from the models' own modules.

The references read the bundled GPT-2-shaped pair with forward hooks written in this file:
each MLP's input and output, each attention's input to its output projection, the final
residual. A direct effect on ``logit(a) - logit(b)`` is a vector read through the final
LayerNorm with its scale held at this prompt's value: ``((v - mean v) / sigma * w) . (U_a - U_b)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import capture, load_model
from backend.compare import circuit_diff
from backend.features import load_transcoders
from backend.loading import TWIN_ID
from tests import palette
from views.content.circuit_diff import MARK, circuit_content

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def pair():
    demo, twin = load_model(), load_model(TWIN_ID)
    return demo, twin, load_transcoders(demo)


@pytest.fixture(scope="module")
def diff(pair):
    demo, twin, tc = pair
    return circuit_diff(demo, twin, PROMPT, transcoders=tc)


def _record(lm, prompt: str) -> dict:
    """Every MLP's input and output, every attention's c_proj input and output, and the last block's output."""
    blocks = lm.model.transformer.h
    seen: dict = {}
    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.mlp.register_forward_hook(
            lambda m, args, out, i=i: seen.update({("mlp_in", i): args[0][0], ("mlp_out", i): out[0]})))
        handles.append(block.attn.c_proj.register_forward_hook(
            lambda m, args, out, i=i: seen.update({("z", i): args[0][0], ("attn_out", i): out[0]})))
    handles.append(blocks[-1].register_forward_hook(
        lambda m, args, out: seen.update(final=(out[0] if isinstance(out, tuple) else out)[0])))
    try:
        with torch.no_grad():
            lm.model(torch.tensor([lm.tokenizer(prompt)["input_ids"]]))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _direct(lm, final_last: torch.Tensor, v: torch.Tensor, a: int, b: int) -> float:
    """A vector's direct effect on logit(a) - logit(b) through the final LayerNorm (its scale held) and unembedding."""
    ln = lm.model.transformer.ln_f
    x = final_last.double()
    sigma = torch.sqrt(x.var(unbiased=False) + ln.eps)
    u = lm.model.lm_head.weight.detach().double()
    v = v.double()
    return float(((v - v.mean()) / sigma * ln.weight.detach().double()) @ (u[a] - u[b]))


def _encode(transcoder, x: torch.Tensor) -> torch.Tensor:
    """The TopK transcoder's activations, written out: top k of the raw pre-activations (circuit-tracer's order)."""
    pre = x.double() @ transcoder.W_enc.double() + transcoder.b_enc.double()
    top = pre.topk(transcoder.k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)


def _reconstruct(transcoder, x: torch.Tensor) -> torch.Tensor:
    acts = _encode(transcoder, x)
    return acts @ transcoder.W_dec.double() + transcoder.b_dec.double() + x.double() @ transcoder.W_skip.double().T


def test_a_model_against_itself_matches_node_for_node(pair):
    demo, _, tc = pair
    same = circuit_diff(demo, demo, PROMPT, transcoders=tc)
    counts = same.counts()
    assert counts["new"] == counts["gone"] == counts["weakened"] == counts["strengthened"] == 0
    assert counts["shared"] == len(same.nodes) > 0
    assert all(n.activation_a == n.activation_b for n in same.nodes)
    assert same.path_kept == pytest.approx(1.0)
    assert same.suppressors == () and same.same_answer
    assert all(e.fvu_a == pytest.approx(e.fvu_b) for e in same.errors)


def test_the_twin_still_fires_the_demo_models_features_measured_with_its_encoder(pair, diff):
    demo, twin, tc = pair
    assert diff.answer_a[1] == " Paris" and diff.answer_b[1] == " a"
    seen_a, seen_b = _record(demo, PROMPT), _record(twin, PROMPT)
    for node in diff.path + tuple(n for n in diff.nodes if n.status == "new")[:5]:
        for seen, value in ((seen_a, node.activation_a), (seen_b, node.activation_b)):
            acts = _encode(tc.layers[node.layer], seen[("mlp_in", node.layer)][node.position])
            assert value == pytest.approx(float(acts[node.index]), abs=1e-3)
    new = [n for n in diff.nodes if n.status == "new"]
    assert new and all(n.activation_a == 0 and n.activation_b != 0 for n in new)
    assert 0.3 < diff.path_kept < 1.2  # measured 0.71: most of A's path for ' Paris' still fires in the twin


def test_the_unexpressed_share_of_each_mlp_is_its_fvu_under_the_demo_models_transcoders(pair, diff):
    _, twin, tc = pair
    seen = _record(twin, PROMPT)
    for layer in range(len(tc.layers)):
        x, y = seen[("mlp_in", layer)][1:], seen[("mlp_out", layer)][1:].double()  # the first token left out
        fvu = float(((y - _reconstruct(tc.layers[layer], x)) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
        assert diff.errors[layer].fvu_b == pytest.approx(fvu, rel=1e-3, abs=1e-5)
    assert all(e.fvu_b > e.fvu_a for e in diff.errors)  # the twin's MLPs hold what the demo model's features miss


def test_the_suppressors_effects_are_direct_effects_on_the_logit_difference(pair, diff):
    _, twin, tc = pair
    seen = _record(twin, PROMPT)
    last = len(diff.tokens) - 1
    a, b = diff.answer_a[0], diff.answer_b[0]
    final = seen["final"][last]
    effects = [s.effect for s in diff.suppressors]
    assert effects == sorted(effects) and all(e < 0 for e in effects)
    checked = 0
    for s in diff.suppressors:
        if s.kind == "error" and s.layer == len(tc.layers) - 1 and s.position == last:  # its only path is direct
            x = seen[("mlp_in", s.layer)][last]
            error = seen[("mlp_out", s.layer)][last].double() - _reconstruct(tc.layers[s.layer], x)
            assert s.effect == pytest.approx(_direct(twin, final, error, a, b), rel=2e-3, abs=2e-3)
            checked += 1
        if s.kind == "head":
            z = seen[("z", s.layer)][last]
            width = z.shape[-1] // twin.info.n_heads
            part = slice(s.index * width, (s.index + 1) * width)
            vector = z[part].double() @ twin.model.transformer.h[s.layer].attn.c_proj.weight.detach().double()[part]
            assert s.effect == pytest.approx(_direct(twin, final, vector, a, b), rel=2e-3, abs=2e-3)
            checked += 1
    assert checked >= 2  # the top suppressor (layer 4's error at '␣is') and at least one head


def test_switching_off_the_first_suppressor_in_the_twin_gives_the_answer_back(pair, diff):
    demo, twin, tc = pair
    first = diff.suppressors[0]
    assert (first.kind, first.layer) == ("error", 3)  # the twin's layer-4 MLP, where cross-model patching points
    a, b = diff.answer_a[0], diff.answer_b[0]
    m_a = float(np.subtract(*capture(demo, PROMPT).logits[-1][[a, b]]))
    m_b = float(np.subtract(*capture(twin, PROMPT).logits[-1][[a, b]]))
    off = capture(twin, PROMPT, edits=(first.edit(tc.source),)).logits[-1]
    restored = (float(off[a] - off[b]) - m_b) / (m_a - m_b)
    assert first.restored == pytest.approx(restored, abs=1e-4)
    assert restored > 0.3  # measured 0.46
    assert first.answer_off == " Paris" and int(off.argmax()) == a


def test_the_circuit_charts_are_safe_for_colour_blind_readers(diff):
    content = circuit_content(diff, {}, "xray-demo", TWIN_ID)
    assert content.errors is not None and palette.problems(content.errors) == []
    assert palette.problems(content.graph) == []
    outlines = [c for trace in content.graph.data if trace.mode == "markers" for c in trace.marker.line.color]
    assert MARK in outlines  # the new features are marked, in black against the others' white
    assert set(outlines) <= {MARK, "#ffffff"}
    assert "outlined in black" in content.graph_note
