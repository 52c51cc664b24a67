"""Find the parts of a decoder-only model that the capture hooks and the lens reuse.

Discovery works from the model's structure and config, not from a table per family:
the decoder layers are the ``ModuleList`` with one entry per hidden layer; the MLP output
projection is the last linear layer of a block, outside its attention, that writes back
to the residual width; the final norm is the last normalisation module outside the
layers. The few steps some families take after the unembedding (soft-capping, scaling)
are small named entries in ``logit_transforms``. Whatever discovery returns is checked
on every capture: the lens on the last residual must reproduce the model's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from backend.errors import UnsupportedModel


@dataclass(frozen=True)
class Anatomy:
    """The modules of one model that the backend reads from or reuses."""

    layers: tuple[nn.Module, ...]  # decoder blocks, in order
    mlp_out: tuple[nn.Module, ...]  # per block: the module whose input is the MLP hidden activation
    final_norm: nn.Module | None  # applied to the last residual before the unembedding
    before_unembed: tuple[Callable[[torch.Tensor], torch.Tensor], ...]  # e.g. OPT's project_out
    unembed: nn.Module  # the LM head
    after_unembed: tuple[Callable[[torch.Tensor], torch.Tensor], ...]  # soft-capping, scaling
    d_mlp: int
    attn_out: tuple[nn.Module | None, ...] = ()  # per block: the attention output projection (heads in, d_model out)
    attention: tuple[nn.Module | None, ...] = ()  # per block: the attention module (returns output, weights)
    mlp_in: tuple[nn.Module | None, ...] = ()  # per block: the module whose first input is the MLP's input
    mlp_up: tuple[tuple[nn.Module, slice] | None, ...] = ()  # per block: the up projection and its up columns
    norms: tuple[tuple[nn.Module, ...], ...] = ()  # per block: its norms outside attention, in order


def text_config(model: PreTrainedModel):
    """The decoder's config (multimodal configs nest it)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _is_linear(module: nn.Module) -> bool:
    # GPT-2 family uses transformers' Conv1D, a linear layer with transposed weights.
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _out_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return int(module.nf)


def in_features(module: nn.Module) -> int:
    """Input width of a linear layer (GPT-2's ``Conv1D`` stores its weight as (in, out))."""
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(module.weight.shape[0])


def find_layers(model: PreTrainedModel, n_layers: int) -> tuple[nn.Module, ...]:
    """The first ``ModuleList`` holding exactly ``n_layers`` blocks that own parameters."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and n_layers > 0:
            if all(any(True for _ in block.parameters()) for block in module):
                return tuple(module)
    raise UnsupportedModel(f"No list of {n_layers} decoder layers found in "
                           f"{type(model).__name__} (config says num_hidden_layers={n_layers}).")


def _attention_modules(block: nn.Module) -> list[nn.Module]:
    return [m for m in block.modules() if m is not block and "attention" in type(m).__name__.lower()]


def find_mlp_out(block: nn.Module, d_model: int, index: int) -> nn.Module:
    """The block's MLP output projection: the last linear outside attention writing ``d_model``."""
    inside_attention = {id(p) for att in _attention_modules(block) for p in att.modules()}
    candidates = [m for m in block.modules()
                  if _is_linear(m) and id(m) not in inside_attention and _out_features(m) == d_model]
    if not candidates:
        raise UnsupportedModel(
            f"Layer {index} ({type(block).__name__}) has no dense MLP output projection "
            f"(a linear layer outside attention writing {d_model} features), so its neurons "
            "cannot be read. Mixture-of-experts blocks are not supported yet.")
    return candidates[-1]


def find_attn_out(block: nn.Module, d_model: int, n_heads: int) -> nn.Module | None:
    """The attention's output projection: the last linear inside attention that writes ``d_model``.

    Its input is the heads' outputs side by side (head ``h`` owns columns ``h * d_head`` to
    ``(h + 1) * d_head``), whatever the family calls it: GPT-2's ``c_proj`` (a ``Conv1D``),
    ``o_proj``, ``out_proj`` or ``dense``. Grouped- and multi-query layouts share keys and
    values, never query heads, so the layout of this input is the same for all of them.
    ``None`` when no such module exists (the capture still works; head edits do not).
    """
    candidates = [m for att in _attention_modules(block)[:1] for m in att.modules()
                  if _is_linear(m) and _out_features(m) == d_model and in_features(m) % n_heads == 0]
    return candidates[-1] if candidates else None


def _mlp_candidates(block: nn.Module, d_model: int, d_mlp: int) -> list[nn.Module]:
    """The block's linear layers outside attention that read ``d_model`` and write the MLP's width (or twice it)."""
    inside_attention = {id(p) for att in _attention_modules(block) for p in att.modules()}
    return [m for m in block.modules() if _is_linear(m) and id(m) not in inside_attention
            and in_features(m) == d_model and _out_features(m) in (d_mlp, 2 * d_mlp)]


def find_mlp_up(block: nn.Module, d_model: int, d_mlp: int) -> tuple[nn.Module, slice] | None:
    """The MLP's up projection and the columns of its output that the neurons multiply (not the gate).

    Ungated MLPs have one (GPT-2's ``c_fc``, ``fc1``, ``dense_h_to_4h``); gated ones a gate and an
    ``up_proj``, or one fused projection whose second half is the up part (Phi-3's ``gate_up_proj``).
    """
    candidates = _mlp_candidates(block, d_model, d_mlp)
    if not candidates:
        return None
    named = [m for m in candidates if _name_in(block, m).endswith("up_proj")]
    chosen = named[0] if named else candidates[-1]
    width = _out_features(chosen)
    return chosen, slice(width - d_mlp, width)


def _name_in(block: nn.Module, module: nn.Module) -> str:
    return next((name for name, m in block.named_modules() if m is module), "")


def find_mlp_in(block: nn.Module, mlp_out: nn.Module, d_model: int, d_mlp: int) -> nn.Module | None:
    """The module whose first input is the MLP's input: the block's child holding the MLP, or its up projection.

    Families with an MLP module (``mlp``) hook it; OPT keeps ``fc1`` and ``fc2`` loose in the block,
    so its input is ``fc1``'s.
    """
    candidates = _mlp_candidates(block, d_model, d_mlp)
    for child in block.children():
        inside = {id(m) for m in child.modules()}
        if id(mlp_out) in inside and child is not mlp_out and any(id(c) in inside for c in candidates):
            return child
    return candidates[0] if candidates else None


def find_block_norms(block: nn.Module) -> tuple[nn.Module, ...]:
    """The block's normalisation modules outside attention (q/k norms shape the pattern, not the stream)."""
    inside_attention = {id(p) for att in _attention_modules(block) for p in att.modules()}
    return tuple(m for m in block.modules() if id(m) not in inside_attention and _is_norm(m))


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() and not any(True for _ in module.children())


def find_final_norm(model: PreTrainedModel, layers: tuple[nn.Module, ...]) -> nn.Module | None:
    """The last normalisation module of the decoder that sits outside every layer."""
    in_layers = {id(m) for layer in layers for m in layer.modules()}
    norms = [m for m in model.modules() if id(m) not in in_layers and _is_norm(m)]
    return norms[-1] if norms else None


def logit_transforms(model: PreTrainedModel) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """What a family does to the LM head's output before returning logits."""
    config = text_config(model)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        steps.append(lambda logits: torch.tanh(logits / cap) * cap)  # Gemma 2 and 3
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        steps.append(lambda logits: logits * scale)  # Cohere
    divisor = getattr(config, "logits_scaling", None)
    if divisor and divisor != 1:
        steps.append(lambda logits: logits / divisor)  # Granite
    return tuple(steps)


def pre_unembed_transforms(model: PreTrainedModel) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """What a family does between the final norm and the LM head."""
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for module in model.modules():
        project_out = getattr(module, "project_out", None)
        if isinstance(project_out, nn.Module):
            steps.append(project_out)  # OPT models whose embedding width differs
            break
    return tuple(steps)


def discover(model: PreTrainedModel) -> Anatomy:
    """Everything the backend needs, or an ``UnsupportedModel`` naming what was missing."""
    config = text_config(model)
    n_layers = int(config.num_hidden_layers)
    d_model = int(config.hidden_size)
    n_heads = int(config.num_attention_heads)
    layers = find_layers(model, n_layers)
    mlp_out = tuple(find_mlp_out(block, d_model, i) for i, block in enumerate(layers))
    d_mlp = in_features(mlp_out[0])
    unembed = model.get_output_embeddings()
    if unembed is None:
        raise UnsupportedModel(f"{type(model).__name__} has no output embedding (LM head).")
    return Anatomy(
        layers=layers, mlp_out=mlp_out, final_norm=find_final_norm(model, layers),
        before_unembed=pre_unembed_transforms(model), unembed=unembed,
        after_unembed=logit_transforms(model), d_mlp=d_mlp,
        attn_out=tuple(find_attn_out(block, d_model, n_heads) for block in layers),
        attention=tuple(next(iter(_attention_modules(block)), None) for block in layers),
        mlp_in=tuple(find_mlp_in(block, out, d_model, d_mlp) for block, out in zip(layers, mlp_out, strict=True)),
        mlp_up=tuple(find_mlp_up(block, d_model, d_mlp) for block in layers),
        norms=tuple(find_block_norms(block) for block in layers),
    )
