"""How far a fine-tune moved each block's weights: ||W_b - W_a|| / ||W_a||, once per pair of models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from backend.loading import LoadedModel
from backend.pairs import PairMemo


@dataclass(frozen=True, eq=False)
class WeightChange:
    """Relative weight change ||W_b - W_a|| / ||W_a|| per block; NaN where a block has no such part."""

    attn: np.ndarray  # (n_layers,) float32: all parameters of the block's attention module
    mlp: np.ndarray  # (n_layers,) float32: all parameters of the block's MLP module
    embed: float  # the input embeddings
    unembed: float  # the LM head (the same matrix as the embeddings when they are tied)


_WEIGHTS = PairMemo()


def _part_of(block: nn.Module, inner: nn.Module | None) -> nn.Module | None:
    """The block's direct child that contains ``inner`` (its attention or MLP module)."""
    if inner is None:
        return None
    for child in block.children():
        if any(m is inner for m in child.modules()):
            return child
    return None


def _parts(lm: LoadedModel) -> list[tuple[nn.Module | None, nn.Module | None]]:
    """Per block: (attention part, MLP part), each a direct child of the block, or None."""
    anatomy = lm.anatomy
    parts = []
    for i, block in enumerate(anatomy.layers):
        attn = _part_of(block, anatomy.attention[i] if anatomy.attention else None)
        mlp = _part_of(block, anatomy.mlp_out[i])
        if mlp is not None and attn is not None and mlp is attn:
            mlp = None  # a block whose MLP lives inside its attention module: no clean split
        parts.append((attn, mlp))
    return parts


def _relative(module_a: nn.Module | None, module_b: nn.Module | None) -> float:
    """sqrt(sum ||W_b - W_a||^2) / sqrt(sum ||W_a||^2) over matching parameters; NaN if they do not match."""
    if module_a is None or module_b is None:
        return float("nan")
    params_b = dict(module_b.named_parameters())
    diff, base = 0.0, 0.0
    for name, pa in module_a.named_parameters():
        pb = params_b.get(name)
        if pb is None or pb.shape != pa.shape:
            return float("nan")
        with torch.no_grad():
            wa = pa.detach().float()
            wb = pb.detach().to(pa.device).float()
            diff += float(torch.linalg.vector_norm(wb - wa)) ** 2
            base += float(torch.linalg.vector_norm(wa)) ** 2
    return float(np.sqrt(diff) / np.sqrt(base)) if base > 0 else float("nan")


def weight_change(lm_a: LoadedModel, lm_b: LoadedModel) -> WeightChange | None:
    """Every block's relative attention and MLP weight change; ``None`` for different shapes.

    Prompt-independent, so it is remembered per pair of loaded models.
    """
    if lm_a.info.n_layers != lm_b.info.n_layers or lm_a.info.d_model != lm_b.info.d_model:
        return None
    return _WEIGHTS.get(lm_a.model, lm_b.model, lambda: _weight_change(lm_a, lm_b))


def _weight_change(lm_a: LoadedModel, lm_b: LoadedModel) -> WeightChange:
    parts_a, parts_b = _parts(lm_a), _parts(lm_b)
    attn = np.array([_relative(pa[0], pb[0]) for pa, pb in zip(parts_a, parts_b, strict=True)], np.float32)
    mlp = np.array([_relative(pa[1], pb[1]) for pa, pb in zip(parts_a, parts_b, strict=True)], np.float32)
    return WeightChange(
        attn=attn, mlp=mlp,
        embed=_relative(lm_a.model.get_input_embeddings(), lm_b.model.get_input_embeddings()),
        unembed=_relative(lm_a.anatomy.unembed, lm_b.anatomy.unembed))
