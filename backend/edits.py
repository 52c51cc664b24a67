"""Edits a capture applies during its one forward pass: switch a head or neuron off, steer, patch.

Every edit is a frozen, hashable value, so a run with edits is still one value (a cache
key, a link). Layers, heads, neurons and positions count from 0, as ``Capture`` does; a
``layer`` of ``Steering`` and ``ResidPatch`` is a resid index as in ``Capture.resid``
(0 enters block 0, ``n_layers`` leaves the last block, before the final norm).

Each edit is checked against the model and the prompt before any work
(``check_edits``), and becomes forward hooks (``edit_hooks``) that the capture registers
inside the model's lock and removes in ``finally``. The hooks write new tensors; they
never change the model's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch import nn

from backend.anatomy import in_features
from backend.errors import XrayError
from backend.hooks import HookAdder
from backend.loading import LoadedModel, ModelInfo

if TYPE_CHECKING:
    from backend.capture import Capture

HEAD_MODES = ("zero", "mean")


class EditError(XrayError):
    """An edit that does not fit the model or the prompt; raised before any work."""


class EditOutOfRange(EditError):
    """A layer, head, neuron or position outside what the model or prompt has."""

    def __init__(self, what: str, value: int, low: int, high: int, edit: object) -> None:
        self.what, self.value, self.low, self.high = what, value, low, high
        super().__init__(f"{type(edit).__name__}: {what} {value} is out of range; this "
                         f"{'prompt' if what == 'position' else 'model'} has {what}s {low} to {high}.")


class EditMismatch(EditError):
    """A steering vector of the wrong width, or a patch source from another model or prompt length."""


@dataclass(frozen=True)
class HeadAblation:
    """Switch off one query head: its slice of the attention output projection's input.

    ``mode="zero"`` writes zeros; ``mode="mean"`` writes the head's mean output over the
    prompt's positions (the head then says the same thing everywhere).
    """

    layer: int
    head: int
    mode: str = "zero"


@dataclass(frozen=True)
class NeuronAblation:
    """Set one MLP neuron (an index into ``Capture.neurons``) to ``value`` at every position."""

    layer: int
    neuron: int
    value: float = 0.0


@dataclass(frozen=True, eq=False)
class Steering:
    """Add ``strength * vector`` (d_model,) to the residual at resid index ``layer``.

    ``positions`` None steers every position. Equal (and hashed) by value, vector included.
    """

    layer: int
    vector: np.ndarray  # (d_model,) float32, read-only
    strength: float = 1.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        vector = np.array(self.vector, dtype=np.float32).reshape(-1)
        vector.flags.writeable = False
        object.__setattr__(self, "vector", vector)
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))

    def _identity(self) -> tuple:
        return (self.layer, self.vector.tobytes(), float(self.strength), self.positions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Steering) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


@dataclass(frozen=True)
class PromptSteering:
    """Steering toward what separates ``prompt_a`` from ``prompt_b`` at resid index ``layer``.

    The vector is ``steering_vector(lm, prompt_a, prompt_b, layer)``; small and hashable, so
    a link can carry it. ``capture`` turns it into a ``Steering`` before the forward pass.
    """

    layer: int
    prompt_a: str
    prompt_b: str
    strength: float = 1.0

    def resolve(self, lm: LoadedModel, max_tokens: int) -> Steering:
        """The ``Steering`` this stands for on ``lm``."""
        _check_range("layer", self.layer, lm.info.n_layers, self)
        vector = steering_vector(lm, self.prompt_a, self.prompt_b, self.layer, max_tokens=max_tokens)
        return Steering(self.layer, vector, self.strength)


@dataclass(frozen=True)
class ResidPatch:
    """Replace the residual at resid index ``layer`` and ``position`` (None: all) with ``source``'s.

    ``source`` is a ``Capture`` of another prompt with as many tokens, on the same model.
    """

    layer: int
    position: int | None
    source: Capture = field(repr=False)


Edit = Union[HeadAblation, NeuronAblation, Steering, PromptSteering, ResidPatch]  # noqa: UP007


def steering_vector(lm: LoadedModel, prompt_a: str, prompt_b: str, layer: int, *,
                    max_tokens: int = 512) -> np.ndarray:
    """Mean residual of ``prompt_a`` minus that of ``prompt_b`` at resid index ``layer``: (d_model,).

    Means are over every position of each prompt, so the two may differ in length.
    """
    from backend.capture import capture  # capture imports this module

    _check_range("layer", layer, lm.info.n_layers, PromptSteering(layer, prompt_a, prompt_b))
    a = capture(lm, prompt_a, max_tokens=max_tokens).resid[layer].mean(0)
    b = capture(lm, prompt_b, max_tokens=max_tokens).resid[layer].mean(0)
    return (a - b).astype(np.float32)


def resolve_edits(lm: LoadedModel, edits: tuple[Edit, ...], max_tokens: int) -> tuple[Edit, ...]:
    """The edits with every ``PromptSteering`` turned into the ``Steering`` it stands for."""
    return tuple(e.resolve(lm, max_tokens) if isinstance(e, PromptSteering) else e for e in edits)


def _check_range(what: str, value: int, count: int, edit: object, inclusive: bool = True) -> None:
    """``value`` must lie in 0..count (``inclusive``) or 0..count-1."""
    high = count if inclusive else count - 1
    if not isinstance(value, (int, np.integer)) or not 0 <= value <= high:
        raise EditOutOfRange(what, value, 0, high, edit)


def _check_positions(positions: tuple[int, ...] | None, n: int, edit: object) -> None:
    for p in positions or ():
        _check_range("position", p, n, edit, inclusive=False)


def check_edits(lm: LoadedModel, edits: tuple[Edit, ...], n_tokens: int) -> None:
    """Raise an ``EditError`` naming the numbers for the first edit that does not fit."""
    info: ModelInfo = lm.info
    for edit in edits:
        if isinstance(edit, HeadAblation):
            _check_range("layer", edit.layer, info.n_layers, edit, inclusive=False)
            _check_range("head", edit.head, info.n_heads, edit, inclusive=False)
            if edit.mode not in HEAD_MODES:
                raise EditMismatch(f"HeadAblation: mode {edit.mode!r} is not one of {', '.join(HEAD_MODES)}.")
            if lm.anatomy.attn_out[edit.layer] is None:
                raise EditMismatch(f"HeadAblation: layer {edit.layer} has no attention output projection "
                                   "that Model X-ray recognises, so its heads cannot be switched off.")
        elif isinstance(edit, NeuronAblation):
            _check_range("layer", edit.layer, info.n_layers, edit, inclusive=False)
            _check_range("neuron", edit.neuron, info.d_mlp, edit, inclusive=False)
        elif isinstance(edit, Steering):
            _check_range("layer", edit.layer, info.n_layers, edit)
            if edit.vector.shape != (info.d_model,):
                raise EditMismatch(f"Steering: the vector has {edit.vector.size} values; this model's "
                                   f"residual stream has {info.d_model}.")
            _check_positions(edit.positions, n_tokens, edit)
        elif isinstance(edit, ResidPatch):
            _check_range("layer", edit.layer, info.n_layers, edit)
            _check_source(info, edit.source, n_tokens)
            _check_positions(None if edit.position is None else (edit.position,), n_tokens, edit)
        elif isinstance(edit, PromptSteering):
            _check_range("layer", edit.layer, info.n_layers, edit)
        else:
            raise EditMismatch(f"{type(edit).__name__} is not an edit Model X-ray knows.")


def _check_source(info: ModelInfo, source: Capture, n_tokens: int) -> None:
    shape = (info.n_layers + 1, n_tokens, info.d_model)
    if source.model_name != info.name or source.resid.shape[0] != shape[0] or source.resid.shape[2] != shape[2]:
        raise EditMismatch(f"ResidPatch: the source was captured on {source.model_name!r} "
                           f"({source.n_layers} layers, width {source.resid.shape[2]}); this run uses "
                           f"{info.name!r} ({info.n_layers} layers, width {info.d_model}).")
    if source.n_tokens != n_tokens:
        raise EditMismatch(f"ResidPatch: the source prompt has {source.n_tokens} tokens and this one has "
                           f"{n_tokens}; patching needs prompts of the same length.")


# --- hooks -------------------------------------------------------------------------------

Transform = Callable[[torch.Tensor], torch.Tensor]


def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a decoder block receives, positionally or as ``hidden_states``."""
    return args[0] if args else kwargs["hidden_states"]


def first(output: object) -> torch.Tensor:
    """The hidden state in a module's output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def output_hook(transform: Transform):
    """A forward hook that replaces a module's hidden-state output by ``transform(output)``."""
    def hook(module: nn.Module, args: tuple, output: object) -> object:
        if isinstance(output, (tuple, list)):
            return (transform(output[0]), *output[1:])
        return transform(output)
    return hook


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def resid_hook_adder(lm: LoadedModel, layer: int, transform: Transform) -> HookAdder:
    """A hook that replaces the residual at resid index ``layer`` by ``transform(residual)``.

    Index 0 is the input of block 0 (a pre-hook); index i >= 1 is the output of block
    i - 1 (a forward hook), which is also what block i reads.
    """
    blocks = lm.anatomy.layers
    if layer == 0:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return _with_hidden(args, kwargs, transform(hidden_of(args, kwargs)))
        return partial(blocks[0].register_forward_pre_hook, pre, with_kwargs=True)
    return partial(blocks[layer - 1].register_forward_hook, output_hook(transform))


def input_hook_adder(module: nn.Module, transform: Transform) -> HookAdder:
    """A pre-hook that replaces a module's first input by ``transform(input)``."""
    def pre(mod: nn.Module, args: tuple) -> tuple:
        return (transform(args[0]), *args[1:])
    return partial(module.register_forward_pre_hook, pre)


def head_slice(lm: LoadedModel, layer: int, head: int) -> slice:
    """Head ``head``'s columns in the input of layer ``layer``'s attention output projection."""
    width = in_features(lm.anatomy.attn_out[layer]) // lm.info.n_heads
    return slice(head * width, (head + 1) * width)


def _ablate_heads(slices: list[tuple[slice, str]]) -> Transform:
    def transform(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for cols, mode in slices:
            x[..., cols] = 0.0 if mode == "zero" else x[..., cols].mean(dim=-2, keepdim=True)
        return x
    return transform


def _set_neurons(values: list[tuple[int, float]]) -> Transform:
    def transform(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for neuron, value in values:
            x[..., neuron] = value
        return x
    return transform


def _steer(edit: Steering) -> Transform:
    def transform(x: torch.Tensor) -> torch.Tensor:
        delta = torch.tensor(edit.vector, device=x.device, dtype=x.dtype) * edit.strength
        if edit.positions is None:
            return x + delta
        x = x.clone()
        x[..., list(edit.positions), :] += delta
        return x
    return transform


def _patch(edit: ResidPatch) -> Transform:
    def transform(x: torch.Tensor) -> torch.Tensor:
        source = torch.from_numpy(np.asarray(edit.source.resid[edit.layer])).to(device=x.device, dtype=x.dtype)
        if edit.position is None:
            return source.expand_as(x).clone()
        x = x.clone()
        x[..., edit.position, :] = source[edit.position]
        return x
    return transform


def edit_hooks(lm: LoadedModel, edits: tuple[Edit, ...]) -> list[HookAdder]:
    """The hooks that apply ``edits`` (already checked and resolved), in the order given."""
    heads: dict[int, list[tuple[slice, str]]] = {}
    neurons: dict[int, list[tuple[int, float]]] = {}
    adders: list[HookAdder] = []
    for edit in edits:
        if isinstance(edit, HeadAblation):
            heads.setdefault(edit.layer, []).append((head_slice(lm, edit.layer, edit.head), edit.mode))
        elif isinstance(edit, NeuronAblation):
            neurons.setdefault(edit.layer, []).append((edit.neuron, float(edit.value)))
        elif isinstance(edit, Steering):
            adders.append(resid_hook_adder(lm, edit.layer, _steer(edit)))
        elif isinstance(edit, ResidPatch):
            adders.append(resid_hook_adder(lm, edit.layer, _patch(edit)))
        else:
            raise EditMismatch(f"{type(edit).__name__} must be resolved before hooks are made.")
    for layer, slices in heads.items():
        adders.append(input_hook_adder(lm.anatomy.attn_out[layer], _ablate_heads(slices)))
    for layer, values in neurons.items():
        adders.append(input_hook_adder(lm.anatomy.mlp_out[layer], _set_neurons(values)))
    return adders


__all__ = ["Edit", "EditError", "EditMismatch", "EditOutOfRange", "HeadAblation", "NeuronAblation",
           "PromptSteering", "ResidPatch", "Steering", "check_edits", "edit_hooks", "head_slice",
           "resolve_edits", "steering_vector"]
