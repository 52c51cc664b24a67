"""The local replacement model's forward pass, with what attribution reads and where it injects (``backend.graph``).

One batched forward of identical rows, the caller holding ``hooks.exclusive(lm, grad=True,
attention=hooks.FROZEN_ATTENTION)``: every norm's scale held (``backend.replacement``), the
embeddings, each layer's nodes and each layer's error as leaves, so that a backward pass
gives every source's direct effect on what it was injected at. With ``through=True`` the
nodes are not cut: each node's value is a function of its own input (its gate or active set
held), so a backward gives every node's *total* effect, which ranks nodes when ``max_nodes``
keeps only some.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from backend import hooks
from backend.features import Transcoders, through
from backend.loading import LoadedModel
from backend.replacement import frozen_norm
from backend.sites import EMBED, Site


@dataclass
class Kept:
    """Per layer, the nodes a graph keeps at each position: (n, m) ids, and which slots are real (padding)."""

    index: list[torch.Tensor]  # per layer (n, m) int64
    real: list[torch.Tensor]  # per layer (n, m) bool


@dataclass
class ReplacementPass:
    """What one forward leaves: the leaves edges read, and the tensors targets inject at."""

    rows: int
    embed: torch.Tensor | None = None  # (rows, n, d) leaf: the embeddings
    values: list[torch.Tensor] = field(default_factory=list)  # per layer (rows, n, m): kept node values
    errors: list[torch.Tensor] = field(default_factory=list)  # per layer (rows, n, d) leaf
    inputs: list[torch.Tensor] = field(default_factory=list)  # per layer: feature targets' (MLP input) or neuron
    gates: list[torch.Tensor] = field(default_factory=list)  # targets' (up projection output) injection points
    unembed_in: torch.Tensor | None = None  # (rows, d) at the last position: the unembedding's input
    logits: torch.Tensor | None = None  # (rows, vocab) the model's logits, no grad


def leaf(value: torch.Tensor) -> torch.Tensor:
    """A copy that gradients stop at and are kept for."""
    return value.detach().clone().requires_grad_(True)


def active_kept(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every active entry of (n, F) activations, as (n, m) ids and a mask of the real ones."""
    m = max(1, int((acts != 0).sum(-1).max()))
    top = acts.abs().topk(m, dim=-1)
    return top.indices, top.values > 0


def _transcoder_actions(tc: Transcoders, kept: Kept | None, state: ReplacementPass, through_nodes: bool,
                        found: Kept) -> list[hooks.Action]:
    """Each MLP's output rebuilt: kept features' decoder rows, the rest as the error, the skip path of its input."""
    actions = []
    for layer, transcoder in enumerate(tc.layers):
        def rebuilt(out: torch.Tensor, x: torch.Tensor, layer: int = layer, transcoder=transcoder) -> torch.Tensor:
            x = x.float()
            with torch.no_grad():
                acts = transcoder.encode_tensor(x[0])  # the rows are identical
            if kept is None:
                index, real = active_kept(acts)
            else:
                index, real = kept.index[layer], kept.real[layer]
            found.index[layer], found.real[layer] = index, real
            if through_nodes:  # the value as a function of the input; the active set held
                pre = transcoder.pre(x)  # (rows, n, F)
                values = pre.gather(2, index.expand(state.rows, -1, -1)) * real
                values.retain_grad()
            else:
                values = leaf((acts.gather(1, index) * real).expand(state.rows, -1, -1))
            built = torch.einsum("bnm,nmd->bnd", values, transcoder.W_dec[index]) + transcoder.b_dec
            if transcoder.W_skip is not None:
                built = built + x @ transcoder.W_skip.T
            error = leaf((out.float() - built).detach())
            state.values[layer], state.errors[layer], state.inputs[layer] = values, error, x
            return built + error
        actions += through(transcoder, rebuilt, keep_grad=True)
    return actions


def _neuron_actions(lm: LoadedModel, kept: Kept | None, state: ReplacementPass, through_nodes: bool,
                    found: Kept) -> list[hooks.Action]:
    """Each layer's neurons as ``gate * u`` (gate held): the kept ones as nodes, the others' output as the error."""
    actions = []
    for layer in range(lm.info.n_layers):
        def up(u: torch.Tensor, layer: int = layer) -> None:
            state.gates[layer] = u  # the up projection's output: where a neuron's pre-activation is injected

        def neurons(a: torch.Tensor, layer: int = layer) -> torch.Tensor:
            u = state.gates[layer]
            held = torch.where(u.detach().abs() > 1e-6, a.detach() / u.detach(), torch.zeros_like(a))
            state.inputs[layer] = held[0]  # (n, d_mlp): each neuron's held gate
            n, width = a.shape[1], a.shape[2]
            if kept is None:
                index = torch.arange(width).expand(n, -1)
                real = torch.ones(n, width, dtype=torch.bool)
            else:
                index, real = kept.index[layer], kept.real[layer]
            found.index[layer], found.real[layer] = index, real
            rows_index = index.expand(state.rows, -1, -1)
            if through_nodes:
                values = (held * u).gather(2, rows_index) * real
                values.retain_grad()
            else:
                values = leaf((a.detach()[0].gather(1, index) * real).expand(state.rows, -1, -1))
            rest = a.detach().clone()
            rest.scatter_(2, rows_index, torch.where(real, 0.0, a.detach()[0].gather(1, index)).expand_as(values))
            error = leaf(rest)  # what the neurons left out write (zero when all are kept)
            state.values[layer], state.errors[layer] = values, error
            return torch.zeros_like(a).scatter(2, rows_index, values * real) + error
        actions += [hooks.Action(Site("mlp_pre", layer), up), hooks.replace(Site("neurons", layer), neurons)]
    return actions


def replacement_pass(lm: LoadedModel, ids: list[int], rows: int, tc: Transcoders | None, kept: Kept | None,
                     should_stop: Callable[[], bool] | None = None, through_nodes: bool = False) -> tuple[
                         ReplacementPass, Kept]:
    """The replacement model's forward for ``rows`` identical rows, and the nodes it kept per layer."""
    n_layers = lm.info.n_layers
    state = ReplacementPass(rows=rows, values=[None] * n_layers, errors=[None] * n_layers,
                            inputs=[None] * n_layers, gates=[None] * n_layers)
    found = Kept(index=[None] * n_layers, real=[None] * n_layers)

    def embed(value: torch.Tensor) -> torch.Tensor:
        state.embed = leaf(value)
        return state.embed

    norms = hooks.norm_sites(lm)
    block_norms = [site for site in norms if site.layer is not None]
    actions = [hooks.replace(EMBED, embed), *(frozen_norm(site) for site in block_norms)]
    actions += (_transcoder_actions(tc, kept, state, through_nodes, found) if tc is not None
                else _neuron_actions(lm, kept, state, through_nodes, found))
    input_ids = torch.tensor([ids] * rows, device=lm.input_device)
    done = hooks.forward(lm, input_ids, actions, stop_after=n_layers - 1, should_stop=should_stop)
    state.unembed_in = unembed_input(lm, done.stopped[:, -1].float())
    with torch.no_grad():
        logits = lm.anatomy.unembed(state.unembed_in.detach().to(lm.anatomy.unembed.weight.dtype)).float()
        for transform in lm.anatomy.after_unembed:
            logits = transform(logits)
    state.logits = logits
    return state, found


def unembed_input(lm: LoadedModel, last: torch.Tensor) -> torch.Tensor:
    """The final residual at the last position through the final norm (its scale held) and any projection."""
    anatomy = lm.anatomy
    x = last[:, None]  # (rows, 1, d)
    if anatomy.final_norm is not None:
        out = anatomy.final_norm(x.to(next(anatomy.final_norm.parameters(), x).dtype))
        x = frozen_norm(Site("norm", None, 0)).fn(out.float(), x, anatomy.final_norm)
    for step in anatomy.before_unembed:
        x = step(x)
    return x[:, 0].float()


def logit_vectors(lm: LoadedModel, token_ids: list[int]) -> torch.Tensor:
    """(t, d) each target's unembedding row minus the mean row: the gradient of its logit minus the mean logit."""
    weight = lm.anatomy.unembed.weight.detach().float()
    return weight[token_ids] - weight.mean(0)
