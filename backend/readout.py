"""The model's own path from a residual stream to logits: final norm, unembedding, and after."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from backend.loading import LoadedModel


def _placement(module: nn.Module, fallback: torch.device) -> tuple[torch.device, torch.dtype | None]:
    param = next(module.parameters(), None)
    if param is None:
        return fallback, None
    return param.device, param.dtype


def readout_tensor(lm: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Logits ``(m, vocab)`` float32 for residual rows ``(m, d_model)``, as the model makes them.

    Each step runs on its module's device and dtype, so a sharded model works and a
    half-precision model reproduces its own logits exactly. Sets no grad mode, so
    ``torch.func`` transforms can differentiate through it.
    """
    anatomy = lm.anatomy
    device = lm.input_device
    steps = ([anatomy.final_norm] if anatomy.final_norm is not None else []) \
        + list(anatomy.before_unembed) + [anatomy.unembed]
    for step in steps:
        device, dtype = _placement(step, device)
        x = step(x.to(device=device, dtype=dtype or x.dtype))
    for transform in anatomy.after_unembed:
        x = transform(x)
    return x.float()


def readout(lm: LoadedModel, resid: np.ndarray) -> torch.Tensor:
    """``readout_tensor`` for numpy rows, without autograd."""
    with torch.inference_mode():
        return readout_tensor(lm, torch.from_numpy(np.ascontiguousarray(resid, dtype=np.float32)))
