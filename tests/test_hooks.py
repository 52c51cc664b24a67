"""The one hook toolkit (``backend.hooks``) and the site names (``backend.sites``), against hooks written here.

The module paths below are the tests' own knowledge of where each family keeps what; the
backend finds the same modules by structure.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import hooks, load_model
from backend.errors import Cancelled, UnsupportedModel
from backend.sites import EMBED, Site, from_hook_name
from tests.tiny import FAMILY_BY_NAME, build, module_at

PROMPT = "Mia went to the park with Max and one two three"
# per family: the module whose input is the MLP's input, its up projection (and the up columns), a norm of block 1
PATHS = {
    "gpt2": {"mlp_in": ("mlp", "in"), "mlp_pre": ("mlp.c_fc", "out"), "norm": "ln_1", "attn_in": "attn.c_proj"},
    "llama": {"mlp_in": ("mlp", "in"), "mlp_pre": ("mlp.up_proj", "out"), "norm": "input_layernorm",
              "attn_in": "self_attn.o_proj"},
    "gpt_neox": {"mlp_in": ("mlp", "in"), "mlp_pre": ("mlp.dense_h_to_4h", "out"), "norm": "input_layernorm",
                 "attn_in": "attention.dense"},
    "opt": {"mlp_in": ("fc1", "in"), "mlp_pre": ("fc1", "out"), "norm": "self_attn_layer_norm",
            "attn_in": "self_attn.out_proj"},
    "phi3": {"mlp_in": ("mlp", "in"), "mlp_pre": ("mlp.gate_up_proj", "out_second_half"), "norm": "input_layernorm",
             "attn_in": "self_attn.o_proj"},
}


@pytest.fixture(scope="module", params=sorted(PATHS))
def fam(request, tmp_path_factory):
    family = FAMILY_BY_NAME[request.param]
    lm = load_model(build(family, tmp_path_factory.mktemp(family.name)), device="cpu")
    return family, lm, torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])


def hooked_value(lm, path: str, side: str, ids: torch.Tensor) -> torch.Tensor:
    """The (n, width) value at a module's input or output, read with a hook written here."""
    seen = {}
    module = module_at(lm.model, path)

    def keep_input(module, args) -> None:  # returns None: a returned value would replace the input
        seen.setdefault("v", args[0].detach().clone())

    def keep_output(module, args, out) -> None:
        seen.setdefault("v", out.detach().clone())

    if side == "in":
        handle = module.register_forward_pre_hook(keep_input)
    else:
        handle = module.register_forward_hook(keep_output)
    try:
        with torch.no_grad():
            lm.model(ids)
    finally:
        handle.remove()
    value = seen["v"].reshape(ids.shape[1], -1)
    return value[:, value.shape[1] // 2:] if side == "out_second_half" else value


def toolkit_value(lm, site: Site, ids: torch.Tensor) -> torch.Tensor:
    store = {}
    with hooks.exclusive(lm):
        hooks.forward(lm, ids, [hooks.read(site, store)])
    return store[site][0]


def test_every_site_reads_what_a_hook_written_here_reads(fam):
    family, lm, ids = fam
    block = f"{family.layers_path}.1"
    paths = PATHS[family.name]
    for kind in ("mlp_in", "mlp_pre"):
        path, side = paths[kind]
        want = hooked_value(lm, f"{block}.{path}", side, ids)
        torch.testing.assert_close(toolkit_value(lm, Site(kind, 1), ids), want)
    torch.testing.assert_close(toolkit_value(lm, Site("norm", 1, 0), ids),
                               hooked_value(lm, f"{block}.{paths['norm']}", "out", ids))
    torch.testing.assert_close(toolkit_value(lm, Site("norm", None, 0), ids),
                               hooked_value(lm, family.final_norm, "out", ids))
    heads = hooked_value(lm, f"{block}.{paths['attn_in']}", "in", ids)
    width = heads.shape[1] // lm.info.n_heads
    torch.testing.assert_close(toolkit_value(lm, Site("heads", 1), ids), heads)
    torch.testing.assert_close(toolkit_value(lm, Site("head", 1, 2), ids), heads[:, 2 * width:3 * width])
    torch.testing.assert_close(toolkit_value(lm, Site("neurons", 1), ids),
                               hooked_value(lm, f"{block}.{family.mlp_out}", "in", ids))
    torch.testing.assert_close(toolkit_value(lm, Site("mlp_out", 1), ids),
                               hooked_value(lm, f"{block}.{family.mlp_out}", "out", ids))
    with torch.no_grad():
        states = lm.model(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(toolkit_value(lm, EMBED, ids), states[0][0])
    torch.testing.assert_close(toolkit_value(lm, Site("resid", 2), ids), states[2][0])
    assert hooks.hook_count(lm.model) == 0


def test_actions_change_what_they_say_and_nothing_else(fam):
    family, lm, ids = fam
    n, d = ids.shape[1], lm.info.d_model
    store = {}
    with hooks.exclusive(lm):
        plain = hooks.forward(lm, ids, [hooks.read(Site("resid", 2), store, "plain")]).outputs.logits
        delta = torch.linspace(-1, 1, d)
        added = hooks.forward(lm, ids, [hooks.add(Site("resid", 2), delta, positions=[1, 3]),
                                        hooks.read(Site("resid", 2), store, "added")]).outputs.logits
        source = torch.randn(n, d)
        frozen = hooks.forward(lm, ids, [hooks.freeze(Site("resid", 2), source),
                                         hooks.read(Site("resid", 2), store, "frozen")]).outputs.logits
        rows = torch.tensor([2, 0, n - 1])
        batch = ids.repeat(3, 1)
        hooks.forward(lm, batch, [hooks.patch_rows(Site("resid", 2), source, positions=rows),
                                  hooks.read(Site("resid", 2), store, "patched")])
        stopped = hooks.forward(lm, ids, [], stop_after=1)
    want = store["plain"].clone()
    want[:, [1, 3]] += delta
    torch.testing.assert_close(store["added"], want)
    torch.testing.assert_close(store["frozen"][0], source)
    assert not torch.allclose(added, plain) and not torch.allclose(frozen, plain)
    for row, pos in enumerate(rows.tolist()):
        want = store["plain"][0].clone()
        want[pos] = source[pos]
        torch.testing.assert_close(store["patched"][row], want)
    assert stopped.outputs is None
    with torch.no_grad():
        torch.testing.assert_close(stopped.stopped, lm.model(ids, output_hidden_states=True).hidden_states[2])
    assert hooks.hook_count(lm.model) == 0


def test_a_failing_action_and_a_cancelled_run_leave_no_hook(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path), device="cpu")
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])

    def boom(value):
        raise RuntimeError("boom")

    with hooks.exclusive(lm):
        before = hooks.forward(lm, ids).outputs.logits
        with pytest.raises(RuntimeError, match="boom"):
            hooks.forward(lm, ids, [hooks.add(EMBED, torch.ones(32)), hooks.Action(Site("mlp_out", 1), boom)])
        assert hooks.hook_count(lm.model) == 0
        with pytest.raises(Cancelled):
            hooks.forward(lm, ids, [hooks.add(EMBED, torch.ones(32))], should_stop=lambda: True)
        assert hooks.hook_count(lm.model) == 0
        torch.testing.assert_close(hooks.forward(lm, ids).outputs.logits, before)
    with pytest.raises(UnsupportedModel, match="outside this model"):
        hooks.forward(lm, ids, [hooks.read(Site("mlp_out", 9), {})])
    assert hooks.hook_count(lm.model) == 0 and not lm.lock.locked()


def test_sites_are_spelled_and_read_back():
    for site in (Site("resid", 0), Site("head", 2, 1), Site("mlp_out", 3), Site("norm", 1, 0), Site("norm", None, 0),
                 Site("readout")):
        assert Site.parse(str(site)) == site
    assert str(Site("head", 2, 1)) == "head.2.1" and str(Site("norm", None, 0)) == "norm.final"
    for bad in ("head.2", "resid", "resid.-1", "neurons.x", "unknown.1"):
        with pytest.raises(ValueError):
            Site.parse(bad)
    assert from_hook_name("blocks.3.hook_resid_post") == Site("resid", 4)
    assert from_hook_name("blocks.3.hook_resid_pre") == Site("resid", 3)
    assert from_hook_name("blocks.2.ln2.hook_normalized") == from_hook_name("blocks.2.mlp.hook_in") == Site("mlp_in", 2)
    assert from_hook_name("blocks.1.hook_mlp_out") == Site("mlp_out", 1)
    assert from_hook_name("layers.3.mlp") == from_hook_name("transformer.h.3.mlp") == Site("mlp_out", 3)
    assert from_hook_name("layers.5") == Site("resid", 6)
    with pytest.raises(ValueError, match="names no place"):
        from_hook_name("blocks.3.hook_resid_mid")
    assert sorted({Site("resid", 2), Site("resid", 2)}) == [Site("resid", 2)]  # frozen, hashable, ordered


def test_the_pattern_site_reads_the_attention_weights(tmp_path):
    lm = load_model(build(FAMILY_BY_NAME["llama"], tmp_path), device="cpu")
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    store = {}
    with hooks.exclusive(lm, attention="eager"):
        hooks.forward(lm, ids, [hooks.read(Site("pattern", 1), store)])
    with torch.no_grad():
        lm.model.set_attn_implementation("eager")
        want = lm.model(ids, output_attentions=True).attentions[1]
    np.testing.assert_allclose(store[Site("pattern", 1)].numpy(), want.numpy(), atol=1e-6)
