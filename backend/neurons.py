"""What a neuron writes: its output direction, and that direction's effect on the logits."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backend.capture import Capture
from backend.loading import LoadedModel
from backend.readout import readout_tensor
from backend.tokens import token_strings

FORWARD_AD_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class NeuronEffect:
    """How one unit of a neuron's activation moves the next-token logits at one position."""

    layer: int
    neuron: int
    position: int
    promoted: list[str]  # (k,) tokens whose logits rise most, strongest first
    promoted_values: np.ndarray  # (k,) float32, logit change per unit activation
    suppressed: list[str]  # (k,) tokens whose logits fall most, strongest first
    suppressed_values: np.ndarray  # (k,) float32, negative


def top_neurons(acts: np.ndarray, count: int) -> np.ndarray:
    """Neurons with the largest |activation| anywhere in the prompt: acts (n, d_mlp)."""
    peak = np.abs(acts).max(axis=0)
    return np.argsort(-peak, kind="stable")[:count]


def output_direction(lm: LoadedModel, layer: int, neuron: int) -> torch.Tensor:
    """Column ``neuron`` of layer ``layer``'s MLP output projection: (d_model,)."""
    proj: nn.Module = lm.anatomy.mlp_out[layer]
    if not 0 <= neuron < lm.info.d_mlp:
        raise IndexError(f"neuron must lie in [0, {lm.info.d_mlp}); got {neuron}")
    weight = proj.weight.detach()
    # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
    column = weight[:, neuron] if isinstance(proj, nn.Linear) else weight[neuron, :]
    return column.float().cpu()


def readout_change(lm: LoadedModel, resid: np.ndarray, direction: np.ndarray,
                   k: int = 10) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """The tokens whose logits a direction (d_model,) raises and lowers most at a final residual (d_model,).

    The exact first-order change of the model's own readout (final norm, unembedding, any
    soft-capping) per unit along ``direction``: a Jacobian-vector product, so the norm's
    scaling is taken into account. Returns (promoted, their changes, suppressed, theirs).
    """
    base = np.array(resid, dtype=np.float32).reshape(1, -1)  # a writable copy
    with FORWARD_AD_LOCK:  # forward-mode AD levels are process-wide: two threads at once corrupt each other
        _, change = torch.func.jvp(lambda r: readout_tensor(lm, r), (torch.from_numpy(base),),
                                   (torch.from_numpy(np.asarray(direction, np.float32).reshape(1, -1)),))
    change = change[0].detach().float().cpu()
    top, bottom = change.topk(k), (-change).topk(k)
    return (token_strings(lm.tokenizer, top.indices.tolist()), top.values.numpy(),
            token_strings(lm.tokenizer, bottom.indices.tolist()), -bottom.values.numpy())


def neuron_effect(lm: LoadedModel, cap: Capture, layer: int, neuron: int,
                  position: int = -1, k: int = 10) -> NeuronEffect:
    """Direct effect of the neuron's output direction on the logits at ``position`` (``readout_change``)."""
    position = int(np.arange(cap.n_tokens)[position])
    direction = output_direction(lm, layer, neuron).numpy()
    promoted, up, suppressed, down = readout_change(lm, cap.resid[cap.n_layers, position], direction, k)
    return NeuronEffect(layer=layer, neuron=neuron, position=position, promoted=promoted, promoted_values=up,
                        suppressed=suppressed, suppressed_values=down)
