"""Every captured field against what transformers itself computes on the same weights.

The backend loads each tiny model with its default attention (sdpa); the reference is
the same folder loaded with eager attention and asked for ``output_attentions`` and
``output_hidden_states``. The lens reference is the model itself cut down to its first
``i`` layers: its own forward, final norm and logit post-processing, no backend code.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from backend import capture, lens_logits, load_model
from tests.tiny import FAMILIES, Family, build, module_at

PROMPT = "Mia went to the park 😀 北京, then Max said: </script> one two three!"
ATOL = 2e-4


def close(got: np.ndarray, want: torch.Tensor | np.ndarray, atol: float = ATOL) -> None:
    want = want.detach().float().numpy() if isinstance(want, torch.Tensor) else want
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = 1.0 + float(np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=atol * scale, rtol=0)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.name for f in FAMILIES])
def run(request, tmp_path_factory):
    """(family, loaded model, eager reference model, reference outputs, capture)."""
    family: Family = request.param
    folder = build(family, tmp_path_factory.mktemp(family.name))
    lm = load_model(folder, device="cpu")
    ref = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    cap = capture(lm, PROMPT)
    neurons = {}
    hooks = [module_at(layer, family.mlp_out).register_forward_pre_hook(
        lambda m, args, i=i: neurons.__setitem__(i, args[0].detach().reshape(-1, args[0].shape[-1])))
        for i, layer in enumerate(module_at(ref, family.layers_path))]
    try:
        with torch.no_grad():
            out = ref(torch.tensor([cap.token_ids.tolist()]), output_attentions=True,
                      output_hidden_states=True, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return family, lm, ref, out, neurons, cap


def test_attention_setting_restored(run):
    family, lm, _, _, _, _ = run
    before = lm.model.config._attn_implementation
    capture(lm, "one two")
    assert lm.model.config._attn_implementation == before
    if family.name == "llama":  # the switch from sdpa to eager and back is exercised
        assert before == "sdpa"


def test_attention_matches_eager(run):
    _, _, _, out, _, cap = run
    want = torch.stack([a[0] for a in out.attentions])
    close(cap.attention, want)
    np.testing.assert_allclose(cap.attention.sum(-1), 1.0, atol=1e-5)


def test_resid_matches_hidden_states(run):
    family, _, ref, out, _, cap = run
    hidden = out.hidden_states
    for i in range(cap.n_layers):
        close(cap.resid[i], hidden[i][0])
    # the last is what enters the final norm (the API says: before it), read here with a hook of the test's own
    seen = {}

    def keep(module, args) -> None:
        seen["x"] = args[0].detach()[0].clone()

    handle = module_at(ref, family.final_norm).register_forward_pre_hook(keep)
    try:
        with torch.no_grad():
            ref(torch.tensor([cap.token_ids.tolist()]), use_cache=False)
    finally:
        handle.remove()
    close(cap.resid[-1], seen["x"])


def test_neurons_match_down_projection_input(run):
    _, _, _, _, neurons, cap = run
    assert cap.neurons.shape[0] == len(neurons)
    for i in range(cap.n_layers):
        close(cap.neurons[i], neurons[i])


def test_logits_match(run):
    _, _, _, out, _, cap = run
    close(cap.logits, out.logits[0])
    close(lens_logits(run[1], cap, cap.n_layers), out.logits[0])


@contextmanager
def first_layers(model, family: Family, n: int):
    """The model itself with only its first ``n`` decoder layers."""
    layers = module_at(model, family.layers_path)
    parent = module_at(model, family.layers_path.rsplit(".", 1)[0])
    name = family.layers_path.rsplit(".", 1)[1]
    config = model.config
    saved = (config.num_hidden_layers, getattr(config, "layer_types", None))
    setattr(parent, name, torch.nn.ModuleList(list(layers)[:n]))
    config.num_hidden_layers = n
    if saved[1] is not None:
        config.layer_types = saved[1][:n]
    try:
        yield model
    finally:
        setattr(parent, name, layers)
        config.num_hidden_layers = saved[0]
        if saved[1] is not None:
            config.layer_types = saved[1]


def test_lens_matches_truncated_model(run):
    family, lm, ref, _, _, cap = run
    ids = torch.tensor([cap.token_ids.tolist()])
    for layer in range(cap.n_layers + 1):
        with first_layers(ref, family, layer) as cut, torch.no_grad():
            want = cut(ids, use_cache=False).logits[0]
        close(lens_logits(lm, cap, layer), want)
    # positions subset returns the same rows
    close(lens_logits(lm, cap, 1, [0, 3]), lens_logits(lm, cap, 1)[[0, 3]])
