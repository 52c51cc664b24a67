"""The model's own path from a residual stream to logits: final norm, unembedding, and after."""

from __future__ import annotations

from collections.abc import Callable

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
    x = _run(_head_steps(lm) + [lm.anatomy.unembed], x, lm.input_device)
    for transform in lm.anatomy.after_unembed:
        x = transform(x)
    return x.float()


def readout_columns(lm: LoadedModel, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``readout_tensor(lm, x)[:, token_ids]``, reading only those rows of a linear unembedding.

    One row of logits reads the whole unembedding from memory (154 MB for GPT-2 small, about
    12 ms on a CPU); a check that needs a few hundred logits need not.
    """
    unembed = lm.anatomy.unembed
    if not isinstance(unembed, nn.Linear) or hasattr(unembed, "_hf_hook"):
        logits = readout_tensor(lm, x)
        return logits[:, token_ids.to(logits.device)]
    x = _run(_head_steps(lm), x, lm.input_device)
    ids = token_ids.to(unembed.weight.device)
    bias = unembed.bias[ids] if unembed.bias is not None else None
    x = nn.functional.linear(x.to(unembed.weight.device, unembed.weight.dtype), unembed.weight[ids], bias)
    for transform in lm.anatomy.after_unembed:  # soft-capping and scaling act value by value
        x = transform(x)
    return x.float()


def _head_steps(lm: LoadedModel) -> list[nn.Module | Callable[[torch.Tensor], torch.Tensor]]:
    """What runs between the residual stream and the unembedding: final norm, then e.g. OPT's project_out."""
    anatomy = lm.anatomy
    return ([anatomy.final_norm] if anatomy.final_norm is not None else []) + list(anatomy.before_unembed)


def _run(steps: list, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Each step on its own module's device and dtype (a step without parameters stays put)."""
    for step in steps:
        device, dtype = _placement(step, device)
        x = step(x.to(device=device, dtype=dtype or x.dtype))
    return x


def readout(lm: LoadedModel, resid: np.ndarray, out: torch.Tensor | None = None,
            scratch: torch.Tensor | None = None) -> torch.Tensor:
    """``readout_tensor`` for numpy rows, without autograd.

    With ``out`` (rows, vocab) float32 on the CPU, a plain ``nn.Linear`` unembedding with
    nothing after it writes its product there and returns it: a fresh (rows x vocab)
    tensor costs page faults on every call, as much as a fifth of the matmul. With
    ``scratch`` (vocab, rows) as well, the product is taken as weight @ rows.T, which
    MKL runs about a third faster than rows @ weight.T, and transposed into ``out``. Any
    other head (sharded, quantised, half precision, soft-capped) takes the general path
    and returns a new tensor.
    """
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(resid, dtype=np.float32))
        unembed = lm.anatomy.unembed
        if out is None or not _plain_cpu_linear(lm, unembed) or out.shape != (x.shape[0], unembed.out_features):
            return readout_tensor(lm, x)
        x = _run(_head_steps(lm), x, x.device).to(device="cpu", dtype=torch.float32)
        if scratch is not None and scratch.shape == out.shape[::-1]:
            if unembed.bias is None:
                torch.mm(unembed.weight, x.t(), out=scratch)
            else:
                torch.addmm(unembed.bias[:, None], unembed.weight, x.t(), out=scratch)
            return out.copy_(scratch.t())
        if unembed.bias is None:
            return torch.mm(x, unembed.weight.t(), out=out)
        return torch.addmm(unembed.bias, x, unembed.weight.t(), out=out)


def _plain_cpu_linear(lm: LoadedModel, unembed: nn.Module) -> bool:
    """An unembedding the fast path computes exactly as the module would."""
    return (type(unembed) is nn.Linear and not lm.anatomy.after_unembed
            and not hasattr(unembed, "_hf_hook")  # accelerate moves tensors in its hooks
            and unembed.weight.device.type == "cpu" and unembed.weight.dtype == torch.float32)
