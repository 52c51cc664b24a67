"""The local replacement model of attribution graphs: the parts of a model held linear on one prompt.

With every norm's scale and every attention pattern held at their values on the prompt, a
transformer's residual stream is a linear function of its embeddings and of what its MLPs
write; attribution graphs (``backend.graph``) differentiate through that linear model.
Patterns are held by ``backend.hooks.FROZEN_ATTENTION``; norms by ``frozen_norm`` here.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from backend.errors import UnsupportedModel
from backend.hooks import Action
from backend.sites import Site


def frozen_norm(site: Site) -> Action:
    """The norm at ``site`` with its scale held: the same output, but linear in its input for autograd.

    A LayerNorm or RMSNorm computes ``(P x) * s(x) * w + b`` (``P`` centres for LayerNorm; ``s``
    is one over the root mean square). With ``s`` held at its value, the output is a linear
    function of ``x``: what attribution graphs differentiate. ``w``, ``b`` and whether it
    centres are read from the module by probing it (so Gemma's ``1 + w`` needs no special
    case), ``s`` is fitted to the module's own output, and the rebuilt output must equal it.
    """
    def held(value: torch.Tensor, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        weight, bias, centres = norm_parts(module, x.shape[-1])
        weight, bias = weight.to(x.device, x.dtype), bias.to(x.device, x.dtype)
        z = x - x.mean(-1, keepdim=True) if centres else x
        direction = z * weight
        scale = ((value.detach() - bias) * direction.detach()).sum(-1, keepdim=True) / \
            (direction.detach() ** 2).sum(-1, keepdim=True).clamp_min(1e-30)
        rebuilt = direction * scale + bias
        error = float((rebuilt.detach() - value.detach()).abs().max()) if value.numel() else 0.0
        if error > 1e-3 * (1.0 + float(value.detach().abs().max())):
            raise UnsupportedModel(f"The norm {type(module).__name__} is not a LayerNorm or RMSNorm that "
                                   f"Model X-ray can hold linear (off by {error:.3g}).")
        return value.detach() + (rebuilt - rebuilt.detach())  # the module's value, the held-scale gradient
    return Action(site, held, with_input=True)


_NORM_PARTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # norm module -> (w, b, centres)


def norm_parts(module: nn.Module, width: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(w, b, centres) of a norm, from its outputs on probe vectors (up to a common factor, which ``held`` fits)."""
    known = _NORM_PARTS.get(module)
    if known is not None and known[0].shape[-1] == width:
        return known
    with torch.inference_mode(False):  # kept for later passes that track gradients: no inference tensors
        return _probe_norm(module, width)


def _probe_norm(module: nn.Module, width: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    signs = torch.ones(width, dtype=torch.float64)
    signs[1::2] = -1.0
    if width % 2:
        signs[-1] = 0.0  # mean zero, so a LayerNorm leaves the probe as it is
    shifted = torch.roll(signs, 1)
    probes = torch.stack([signs, -signs, shifted, -shifted, torch.ones(width, dtype=torch.float64),
                          torch.zeros(width, dtype=torch.float64)])
    param = next(module.parameters(), None)
    with torch.no_grad():
        out = module.forward(probes.to(param.device if param is not None else "cpu",  # forward: no hooks
                               param.dtype if param is not None else torch.float32)).double().cpu()
    rms = float(signs.abs().mean()) ** 0.5
    bias = (out[0] + out[1]) / 2
    first = torch.where(signs != 0, (out[0] - out[1]) / 2 * rms / torch.where(signs != 0, signs, 1.0), 0.0)
    second = torch.where(shifted != 0, (out[2] - out[3]) / 2 * rms / torch.where(shifted != 0, shifted, 1.0), 0.0)
    weight = torch.where(signs != 0, first, second)
    centres = bool(torch.allclose(out[4], out[5], atol=1e-5 * (1 + float(out[4].abs().max()))))
    known = (weight.float(), bias.float(), centres)
    _NORM_PARTS[module] = known
    return known
