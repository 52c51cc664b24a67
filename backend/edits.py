"""Edits a capture applies during its one forward pass: switch a head or neuron off, steer, patch.

Every edit is a frozen, hashable value, so a run with edits is still one value (a cache
key, a link). Layers, heads, neurons and positions count from 0, as ``Capture`` does; a
``layer`` of ``Steering`` and ``ResidPatch`` is a resid index as in ``Capture.resid``
(0 enters block 0, ``n_layers`` leaves the last block, before the final norm).

An edit is behaviour, not a case in a ladder: each type knows how to check itself against a
model and a prompt (``check``, before any work), the ``backend.hooks`` actions that apply it
(``actions``), how the page names it (``label``) and how a link spells it (``link`` and
``kind``, read back by ``from_link``). A new kind of edit is one new class here (or in the
module that owns its machinery, as ``backend.features`` does). The actions write new
tensors; they never change the model's weights.
"""

from __future__ import annotations

import hashlib
import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar, Protocol

import numpy as np
import torch

from backend import hooks
from backend.errors import PromptTooLong, XrayError
from backend.loading import LoadedModel
from backend.sites import Site
from backend.tokens import quoted

HEAD_MODES = ("zero", "mean")
MAX_MAGNITUDE = 1e4  # a strength or value beyond this only pushes the model where its numbers mean nothing

MeanResid = Callable[[str, int], np.ndarray]  # (prompt, resid index) -> its mean residual (d_model,)


class EditError(XrayError):
    """An edit that does not fit the model or the prompt; raised before any work."""


class EditOutOfRange(EditError):
    """A layer, head, neuron or position outside what the model or prompt has."""

    def __init__(self, what: str, value: int, low: int, high: int, edit: object) -> None:
        self.what, self.value, self.low, self.high = what, value, low, high
        super().__init__(f"{type(edit).__name__}: {what} {value} is out of range; this "
                         f"{'prompt' if what == 'position' else 'model'} has {what}s {low} to {high}.")


class EditMismatch(EditError):
    """A steering vector of the wrong width, a value that is not a finite number, or a patch source from elsewhere."""


class Edit:
    """What every edit type provides; subclasses are frozen dataclasses."""

    kind: ClassVar[str] = ""  # its name in a link; "" for edits a link cannot carry
    registry: ClassVar[dict[str, type[Edit]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Edit.registry[cls.kind] = cls

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        """Raise an ``EditError`` naming the numbers when this edit does not fit ``lm`` and the prompt."""
        raise NotImplementedError

    def resolved(self, mean_resid: MeanResid) -> Edit:
        """The edit as its hooks need it (prompt steering becomes a vector); most edits are that already."""
        return self

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        """The ``backend.hooks`` actions that apply this (checked, resolved) edit."""
        raise NotImplementedError

    def label(self) -> str:
        """The edit in the page's words: layers and heads count from 1 there."""
        raise NotImplementedError

    def link(self) -> list:
        """The edit as a link's JSON item, ``[kind, ...arguments]``."""
        raise ValueError(f"A link cannot carry a {type(self).__name__} edit.")

    def identity(self) -> tuple:
        """A small value that tells this edit from every other (a run's id hashes it)."""
        return (type(self).__name__, *(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def from_link(cls, args: list) -> Edit:
        """The edit a link item's arguments spell; ``ValueError`` when they do not."""
        raise ValueError(f"{cls.__name__} cannot be read from a link")


def number(value: object, kind: type = float) -> int | float:
    """A link's number: an int for ``int``, any finite number for ``float``; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{value!r} is not a{'n integer' if kind is int else ' number'}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return kind(value)


def check_range(what: str, value: int, count: int, edit: object, inclusive: bool = True) -> None:
    """``value`` must lie in 0..count (``inclusive``) or 0..count-1."""
    high = count if inclusive else count - 1
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value <= high:
        raise EditOutOfRange(what, value, 0, high, edit)


def check_positions(positions: tuple[int, ...] | None, n: int, edit: object) -> None:
    """Every position must lie in the prompt."""
    for p in positions or ():
        check_range("position", p, n, edit, inclusive=False)


def check_magnitude(what: str, value: float, edit: object) -> None:
    """A strength or value must be a finite number no larger than ``MAX_MAGNITUDE``."""
    if not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise EditMismatch(f"{type(edit).__name__}: the {what} {value!r} must be a finite number between "
                           f"-{MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}.")


@dataclass(frozen=True)
class HeadAblation(Edit):
    """Switch off one query head: its slice of the attention output projection's input.

    ``mode="zero"`` writes zeros; ``mode="mean"`` writes the head's mean output over the
    prompt's positions (the head then says the same thing everywhere).
    """

    kind: ClassVar[str] = "head"
    layer: int
    head: int
    mode: str = "zero"

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        check_range("layer", self.layer, lm.info.n_layers, self, inclusive=False)
        check_range("head", self.head, lm.info.n_heads, self, inclusive=False)
        if self.mode not in HEAD_MODES:
            raise EditMismatch(f"HeadAblation: mode {self.mode!r} is not one of {', '.join(HEAD_MODES)}.")
        if lm.anatomy.attn_out[self.layer] is None:
            raise EditMismatch(f"HeadAblation: layer {self.layer} has no attention output projection "
                               "that Model X-ray recognises, so its heads cannot be switched off.")

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        def off(x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x) if self.mode == "zero" else x.mean(dim=1, keepdim=True).expand_as(x)
        return [hooks.replace(Site("head", self.layer, self.head), off)]

    def label(self) -> str:
        return f"head {self.layer + 1}.{self.head + 1} off" + (" (set to its mean)" if self.mode == "mean" else "")

    def link(self) -> list:
        return [self.kind, self.layer, self.head, self.mode]

    @classmethod
    def from_link(cls, args: list) -> HeadAblation:
        if len(args) != 3 or args[2] not in HEAD_MODES:
            raise ValueError("a head edit is [\"head\", layer, head, \"zero\" or \"mean\"]")
        return cls(number(args[0], int), number(args[1], int), args[2])


@dataclass(frozen=True)
class NeuronAblation(Edit):
    """Set one MLP neuron (an index into ``Capture.neurons``) to ``value`` at every position, or at ``positions``."""

    kind: ClassVar[str] = "neuron"
    layer: int
    neuron: int
    value: float = 0.0
    positions: tuple[int, ...] | None = None

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        check_range("layer", self.layer, lm.info.n_layers, self, inclusive=False)
        check_range("neuron", self.neuron, lm.info.d_mlp, self, inclusive=False)
        check_magnitude("value", self.value, self)
        check_positions(self.positions, n_tokens, self)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        def set_neuron(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            where = slice(None) if self.positions is None else list(self.positions)
            x[:, where, self.neuron] = float(self.value)
            return x
        return [hooks.replace(Site("neurons", self.layer), set_neuron)]

    def label(self) -> str:
        state = "off" if self.value == 0 else f"set to {self.value:g}"
        where = "" if self.positions is None else " at position " + ", ".join(str(p) for p in self.positions)
        return f"neuron {self.neuron} of layer {self.layer + 1}{where} {state}"

    def link(self) -> list:
        item = [self.kind, self.layer, self.neuron, self.value]
        return item if self.positions is None else [*item, list(self.positions)]

    @classmethod
    def from_link(cls, args: list) -> NeuronAblation:
        if len(args) not in (3, 4) or (len(args) == 4 and not isinstance(args[3], list)):
            raise ValueError("a neuron edit is [\"neuron\", layer, neuron, value] or [..., [positions]]")
        positions = tuple(number(p, int) for p in args[3][:4096]) if len(args) == 4 else None
        return cls(number(args[0], int), number(args[1], int), number(args[2]), positions)


@dataclass(frozen=True, eq=False)
class Steering(Edit):
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

    def identity(self) -> tuple:
        digest = hashlib.blake2b(self.vector.tobytes(), digest_size=8).hexdigest()
        return ("steering", self.layer, digest, float(self.strength), self.positions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Steering) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        check_range("layer", self.layer, lm.info.n_layers, self)
        if self.vector.shape != (lm.info.d_model,):
            raise EditMismatch(f"Steering: the vector has {self.vector.size} values; this model's "
                               f"residual stream has {lm.info.d_model}.")
        if not np.isfinite(self.vector).all():
            raise EditMismatch("Steering: the vector holds values that are not finite numbers.")
        check_magnitude("strength", self.strength, self)
        check_positions(self.positions, n_tokens, self)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        delta = torch.from_numpy(self.vector * np.float32(self.strength))
        return [hooks.add(Site("resid", self.layer), delta, self.positions)]

    def label(self) -> str:
        where = "at the embeddings" if self.layer == 0 else f"after layer {self.layer}"
        return f"steering {where}, strength {self.strength:g}"


@dataclass(frozen=True)
class PromptSteering(Edit):
    """Steering toward what separates ``prompt_a`` from ``prompt_b`` at resid index ``layer``.

    The vector is the mean residual of ``prompt_a`` minus that of ``prompt_b`` there
    (``backend.capture.steering_vector``); small and hashable, so a link can carry it.
    ``capture`` resolves it into a ``Steering`` before the forward pass.
    """

    kind: ClassVar[str] = "steer"
    layer: int
    prompt_a: str
    prompt_b: str
    strength: float = 1.0

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        check_range("layer", self.layer, lm.info.n_layers, self)
        check_magnitude("strength", self.strength, self)

    def resolved(self, mean_resid: MeanResid) -> Steering:
        means = []
        for which, text in (("toward", self.prompt_a), ("away from", self.prompt_b)):
            try:
                means.append(mean_resid(text, self.layer))
            except PromptTooLong as error:
                raise EditMismatch(f"The steering prompt to push {which} ({quoted(text[:40])}) is too long: "
                                   f"{error.n_tokens} tokens, limit {error.limit}. Shorten it.") from error
        return Steering(self.layer, (means[0] - means[1]).astype(np.float32), self.strength)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        raise EditMismatch("PromptSteering must be resolved into a Steering before hooks are made.")

    def label(self) -> str:
        where = "at the embeddings" if self.layer == 0 else f"after layer {self.layer}"
        return (f"steering {where} toward {quoted(self.prompt_a)} and away from {quoted(self.prompt_b)}, "
                f"strength {self.strength:g}")

    def link(self) -> list:
        return [self.kind, self.layer, self.strength, self.prompt_a, self.prompt_b]

    @classmethod
    def from_link(cls, args: list) -> PromptSteering:
        if len(args) != 4 or not all(isinstance(a, str) for a in args[2:]):
            raise ValueError("a steer edit is [\"steer\", layer, strength, \"toward\", \"away from\"]")
        return cls(number(args[0], int), args[2], args[3], number(args[1]))


class ResidSource(Protocol):
    """What a patch reads from another run: a ``backend.capture.Capture`` has all of it."""

    model_name: str
    resid: np.ndarray  # (n_layers + 1, n, d_model)
    n_tokens: int
    n_layers: int


@dataclass(frozen=True)
class ResidPatch(Edit):
    """Replace the residual at resid index ``layer`` and ``position`` (None: all) with ``source``'s.

    ``source`` is a ``Capture`` of another prompt with as many tokens, on the same model.
    """

    layer: int
    position: int | None
    source: ResidSource = field(repr=False)

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        info = lm.info
        check_range("layer", self.layer, info.n_layers, self)
        source = self.source
        if source.model_name != info.name or source.resid.shape[0] != info.n_layers + 1 \
                or source.resid.shape[2] != info.d_model:
            raise EditMismatch(f"ResidPatch: the source was captured on {source.model_name!r} "
                               f"({source.n_layers} layers, width {source.resid.shape[2]}); this run uses "
                               f"{info.name!r} ({info.n_layers} layers, width {info.d_model}).")
        if source.n_tokens != n_tokens:
            raise EditMismatch(f"ResidPatch: the source prompt has {source.n_tokens} tokens and this one has "
                               f"{n_tokens}; patching needs prompts of the same length.")
        check_positions(None if self.position is None else (self.position,), n_tokens, self)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        source = torch.from_numpy(np.array(self.source.resid[self.layer]))

        def patched(x: torch.Tensor) -> torch.Tensor:
            clean = source.to(x.device, x.dtype)
            if self.position is None:
                return clean.expand_as(x).clone()
            x = x.clone()
            x[:, self.position] = clean[self.position]
            return x
        return [hooks.replace(Site("resid", self.layer), patched)]

    def identity(self) -> tuple:
        return ("patch", self.layer, self.position, id(self.source))

    def label(self) -> str:
        where = "all positions" if self.position is None else f"position {self.position}"
        return f"residual {'at the embeddings' if self.layer == 0 else f'after layer {self.layer}'} patched at {where}"


def edit_from_link(item: object) -> Edit:
    """One edit of a link's JSON list; ``ValueError`` says what could not be read."""
    if not isinstance(item, list) or not item or not isinstance(item[0], str) or item[0] not in Edit.registry:
        raise ValueError(f"{reprlib.repr(item)[:80]} is not an edit this page knows")
    return Edit.registry[item[0]].from_link(item[1:])


def check_edits(lm: LoadedModel, edits: tuple[Edit, ...], n_tokens: int) -> None:
    """Raise an ``EditError`` naming the numbers for the first edit that does not fit."""
    for edit in edits:
        if not isinstance(edit, Edit):
            raise EditMismatch(f"{type(edit).__name__} is not an edit Model X-ray knows.")
        edit.check(lm, n_tokens)


def edit_actions(lm: LoadedModel, edits: tuple[Edit, ...]) -> list[hooks.Action]:
    """The actions that apply ``edits`` (already checked and resolved), in the order given."""
    return [action for edit in edits for action in edit.actions(lm)]


__all__ = ["Edit", "EditError", "EditMismatch", "EditOutOfRange", "HeadAblation", "NeuronAblation",
           "PromptSteering", "ResidPatch", "Steering", "check_edits", "edit_actions", "edit_from_link"]
