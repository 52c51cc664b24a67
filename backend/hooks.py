"""The one module that reaches inside a model: sites become PyTorch hooks, for one run, removed in ``finally``.

Hooks are global state on a module, so a hook left behind after an error would corrupt
every later run, and two runs hooking one shared model at once would read each other's
activations. So every other module says *what* to do at which ``Site`` (an ``Action``) and
calls ``forward`` here, inside ``exclusive(lm)`` (the model's lock, autograd off unless
asked, the attention implementation a run needs); ``forward`` registers the actions' hooks,
runs the model and removes every hook however it exits.

An action's function sees the site's value as ``(rows, n, width)`` (the pattern as
``(rows, heads, n, n)``), whatever shape the family hands its modules, and returns a
replacement or ``None`` (read only). The helpers below cover what the backend does:
``read``, ``replace``, ``add``, ``freeze``, ``patch_rows`` (one patch per batch row; the
norms held linear for attribution graphs are in ``backend.replacement``), and ``forward``'s
``stop_after`` (nothing after that block runs), ``replay`` (blocks before a layer return
a saved run's outputs instead of computing them) and ``should_stop`` (a check before every
block that cancels a run nobody waits for).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from backend.errors import Cancelled, UnsupportedModel
from backend.meter import metered
from backend.sites import Site

Fn = Callable[..., torch.Tensor | None]


@dataclass(frozen=True, eq=False)
class Action:
    """What to do at one site during a forward: ``fn(value)`` returns a replacement, or ``None`` to only read.

    With ``with_input``, ``fn(value, module_input, module)`` also receives the hooked module's first
    input, shaped like the value, and the module (for output sites: a norm's input, say).
    """

    site: Site
    fn: Fn
    with_input: bool = False


# --- the actions the backend uses ------------------------------------------------------------

def read(site: Site, store: dict, key: object = None, *, keep_grad: bool = False) -> Action:
    """Keep the site's value in ``store[key or site]``: a copy, or with ``keep_grad`` the tensor itself."""
    def keep(value: torch.Tensor) -> None:
        store[site if key is None else key] = value if keep_grad else value.detach().clone()
    return Action(site, keep)


def replace(site: Site, fn: Callable[[torch.Tensor], torch.Tensor]) -> Action:
    """Replace the site's value by ``fn(value)``."""
    return Action(site, fn)


def add(site: Site, delta: torch.Tensor | np.ndarray, positions: Sequence[int] | None = None) -> Action:
    """Add ``delta`` (width,) at every position, or at ``positions``."""
    def shifted(value: torch.Tensor) -> torch.Tensor:
        step = torch.as_tensor(delta).to(value.device, value.dtype)
        if positions is None:
            return value + step
        value = value.clone()
        value[:, list(positions)] += step
        return value
    return Action(site, shifted)


def freeze(site: Site, values: torch.Tensor | np.ndarray) -> Action:
    """Hold the site at ``values`` ((n, width), the same for every row)."""
    def frozen(value: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values) if isinstance(values, np.ndarray) else values) \
            .to(value.device, value.dtype).expand_as(value).clone()
    return Action(site, frozen)


def patch_rows(site: Site, source: torch.Tensor, *, positions: torch.Tensor | None = None,
               rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> Action:
    """One patch per batch row from ``source`` (n, width), the batched forward of patching sweeps.

    ``positions`` (rows,): row r gets ``source`` at position ``positions[r]``; ``rows`` (rows,) bool:
    the rows that get ``source`` at every position; ``columns`` (rows, width) bool: row r gets
    ``source`` in those columns at every position.
    """
    def patched(value: torch.Tensor) -> torch.Tensor:
        clean = source.to(value.device, value.dtype)
        if positions is not None:
            out = value.clone()
            pos = positions.to(value.device)
            out[torch.arange(len(pos), device=value.device), pos] = clean[pos]
            return out
        mask = (rows[:, None, None] if rows is not None else columns[:, None, :]).to(value.device)
        return torch.where(mask, clean[None], value)
    return Action(site, patched)


# --- where each site lives -------------------------------------------------------------------

def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a module receives, positionally or as ``hidden_states``."""
    return args[0] if args else kwargs["hidden_states"]


def first(output: object) -> torch.Tensor:
    """The hidden state in a module's output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass(frozen=True)
class _Point:
    """Where a site is hooked: the module, which side, and the columns of the value that are the site."""

    module: nn.Module
    side: str  # "in": the module's first input (kwargs too); "out": its output; "pattern": output[1]
    columns: slice | None = None


def _point(lm, site: Site) -> _Point:
    anatomy, kind, layer = lm.anatomy, site.kind, site.layer
    n_layers = len(anatomy.layers)
    if kind == "resid":
        if not 0 <= layer <= n_layers:
            raise UnsupportedModel(f"resid.{layer} is outside this model (resid 0 to {n_layers}).")
        return _Point(anatomy.layers[0], "in") if layer == 0 else _Point(anatomy.layers[layer - 1], "out")
    if kind == "norm":
        norms = (anatomy.final_norm,) if layer is None else anatomy.norms[layer]
        if norms[0] is None or site.index >= len(norms):
            raise UnsupportedModel(f"{site} names no norm this model has.")
        return _Point(norms[site.index], "out")
    if kind == "readout":
        raise UnsupportedModel("The readout is not hooked: backend.readout computes it from a residual.")
    if not 0 <= layer < n_layers:
        raise UnsupportedModel(f"{site} is outside this model (blocks 0 to {n_layers - 1}).")
    if kind in ("attn_out", "heads", "head"):
        module = anatomy.attn_out[layer]
        if module is None:
            raise UnsupportedModel(f"Block {layer} has no attention output projection that Model X-ray recognises.")
        if kind == "attn_out":
            return _Point(module, "out")
        if kind == "heads":
            return _Point(module, "in")
        width = _in_width(module) // lm.info.n_heads
        if not 0 <= site.index < lm.info.n_heads:
            raise UnsupportedModel(f"{site}: this model has heads 0 to {lm.info.n_heads - 1}.")
        return _Point(module, "in", slice(site.index * width, (site.index + 1) * width))
    if kind == "pattern":
        return _Point(anatomy.attention[layer], "pattern")
    if kind == "neurons":
        return _Point(anatomy.mlp_out[layer], "in")
    if kind == "mlp_out":
        return _Point(anatomy.mlp_out[layer], "out")
    if kind == "mlp_in":
        if anatomy.mlp_in[layer] is None:
            raise UnsupportedModel(f"Block {layer}'s MLP input was not found (no up projection reads the stream).")
        return _Point(anatomy.mlp_in[layer], "in")
    if anatomy.mlp_up[layer] is None:  # mlp_pre
        raise UnsupportedModel(f"Block {layer}'s MLP up projection was not found.")
    module, columns = anatomy.mlp_up[layer]
    return _Point(module, "out", columns)


def _in_width(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else int(module.weight.shape[0])


def _apply(action: Action, value: torch.Tensor, rows: int, columns: slice | None,
           module_input: torch.Tensor | None = None, module: nn.Module | None = None) -> torch.Tensor | None:
    """Run one action on a value as the module holds it; the new value in the module's own shape, or None."""
    part = value[..., columns] if columns is not None else value
    shaped = part.reshape(rows, -1, part.shape[-1]) if action.site.kind != "pattern" else part
    if action.with_input:
        result = action.fn(shaped, module_input.reshape(shaped.shape[:-1] + module_input.shape[-1:]), module)
    else:
        result = action.fn(shaped)
    if result is None:
        return None
    result = result.reshape(part.shape)
    if columns is None:
        return result
    whole = value.clone()
    whole[..., columns] = result
    return whole


def _adder(lm, action: Action, rows: int) -> Callable[[], RemovableHandle]:
    point = _point(lm, action.site)
    if point.side == "in":
        def pre(module: nn.Module, args: tuple, kwargs: dict):
            value = hidden_of(args, kwargs)
            new = _apply(action, value, rows, point.columns)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
        return partial(point.module.register_forward_pre_hook, pre, with_kwargs=True)

    def post(module: nn.Module, args: tuple, kwargs: dict, output: object):
        if point.side == "pattern":
            weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if isinstance(weights, torch.Tensor):
                _apply(action, weights, rows, None)
            return None
        module_input = hidden_of(args, kwargs) if action.with_input else None
        new = _apply(action, first(output), rows, point.columns, module_input, module)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, (tuple, list)) else new
    return partial(point.module.register_forward_hook, post, with_kwargs=True)


# --- one forward -------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised after the last block a run needs; carries that block's hidden output."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__("stopped")
        self.hidden = hidden


@dataclass
class Pass:
    """What one forward gave: the model's outputs, or (stopped early) the hidden state leaving the stop block."""

    outputs: object | None
    stopped: torch.Tensor | None = None  # (rows, n, d_model)


@dataclass
class Replay:
    """Blocks before ``until`` return ``outputs`` (a saved run's block outputs, rows expanded) instead of computing."""

    until: int
    outputs: list[object] = field(default_factory=list)


def block_outputs(lm, store: list) -> list[Callable[[], RemovableHandle]]:
    """Hooks keeping every block's output as it returned it, in ``store`` (for a later ``Replay``)."""
    store[:] = [None] * len(lm.anatomy.layers)

    def keep(i: int):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            hidden = first(output).detach().clone()  # later ops of some families work in place
            store[i] = (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden
        return hook
    return [partial(block.register_forward_hook, keep(i)) for i, block in enumerate(lm.anatomy.layers)]


def replayable(outputs: list[object]) -> bool:
    """Saved block outputs can stand in for the blocks when they hold nothing but the hidden state."""
    return all(o is not None and (not isinstance(o, (tuple, list)) or all(extra is None for extra in o[1:]))
               for o in outputs)


@contextmanager
def _replayed(blocks: Sequence[nn.Module], outputs: list[object], rows: int) -> Iterator[None]:
    """Blocks that return saved outputs (expanded to ``rows``) instead of computing; their hooks still fire."""
    replaced: list[tuple[nn.Module, object]] = []

    def replay(output: object, *args: object, **kwargs: object) -> object:
        if isinstance(output, (tuple, list)):
            return (first(output).expand(rows, *first(output).shape[1:]), *output[1:])
        return output.expand(rows, *output.shape[1:])

    try:
        for block, output in zip(blocks, outputs, strict=False):
            replaced.append((block, block.__dict__.get("forward")))
            block.forward = partial(replay, output)
        yield
    finally:
        for block, previous in replaced:
            if previous is None:
                del block.forward
            else:
                block.forward = previous


@contextmanager
def registered(adders: list[Callable[[], RemovableHandle]]) -> Iterator[None]:
    """Register every hook, yield, then remove every one that was registered."""
    handles: list[RemovableHandle] = []
    try:
        for adder in adders:
            handles.append(adder())
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward(lm, input_ids: torch.Tensor, actions: Sequence[Action] = (), *, stop_after: int | None = None,
            should_stop: Callable[[], bool] | None = None, replay: Replay | None = None,
            extra_hooks: Sequence[Callable[[], RemovableHandle]] = (), **model_kwargs) -> Pass:
    """One forward of ``input_ids`` (rows, n) with ``actions`` in force; the caller holds ``exclusive(lm)``.

    Actions at one site run in the order given. ``stop_after`` ends the pass after that block
    (``Pass.stopped`` is its hidden output); ``should_stop``, asked before every block, raises
    ``Cancelled``; ``replay`` skips the blocks before a layer.
    """
    rows = int(input_ids.shape[0])
    blocks = lm.anatomy.layers
    adders = list(extra_hooks)
    if should_stop is not None:
        def check(module: nn.Module, args: tuple) -> None:
            if should_stop():
                raise Cancelled()
        adders += [partial(block.register_forward_pre_hook, check) for block in blocks]
    adders += [_adder(lm, action, rows) for action in actions]
    if stop_after is not None:
        def stop(module: nn.Module, args: tuple, output: object) -> None:
            raise _Stop(first(output))
        adders.append(partial(blocks[stop_after].register_forward_hook, stop))
    replayed = blocks[:replay.until] if replay is not None else ()
    try:
        with _replayed(replayed, replay.outputs if replay else [], rows), registered(adders):
            outputs = lm.model(input_ids=input_ids, use_cache=False, **model_kwargs)
    except _Stop as stopped:
        return Pass(None, stopped.hidden)
    if stop_after is not None:
        raise UnsupportedModel(f"The forward never reached block {stop_after}: the model skipped it.")
    return Pass(outputs)


# --- the model for one run ---------------------------------------------------------------------

FROZEN_ATTENTION = "xray_frozen"


def _frozen_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      *args: object, **kwargs: object):
    """The family's own eager attention with queries and keys detached: the pattern is held for autograd."""
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise UnsupportedModel(f"{type(module).__name__} has no eager attention function to hold its pattern with.")
    return eager(module, query.detach(), key.detach(), value, *args, **kwargs)


AttentionInterface.register(FROZEN_ATTENTION, _frozen_attention)
AttentionMaskInterface.register(FROZEN_ATTENTION, eager_mask)


@contextmanager
def attention_implementation(model: PreTrainedModel, name: str) -> Iterator[None]:
    """Run the block with attention ``name`` ("eager": returns weights; FROZEN_ATTENTION: patterns held)."""
    current = model.config._attn_implementation
    if current == name:
        yield
        return
    try:
        model.set_attn_implementation(name)
    except (ValueError, KeyError) as error:
        raise UnsupportedModel(f"{type(model).__name__} cannot switch its attention to {name!r}: {error}") from error
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def eager_attention(model: PreTrainedModel):
    """Eager attention, the one implementation that returns weights (sdpa and flash never form them)."""
    return attention_implementation(model, "eager")


@contextmanager
def exclusive(lm, *, grad: bool = False, attention: str | None = None) -> Iterator[None]:
    """The model for one run: its lock held, autograd off unless ``grad``, its attention switched if asked.

    The visitor in force (``backend.meter``) is checked first and charged the seconds the lock is held.
    """
    with ExitStack() as stack:
        stack.enter_context(metered(lm.lock))
        stack.enter_context(torch.enable_grad() if grad else torch.inference_mode())
        if attention is not None:
            stack.enter_context(attention_implementation(lm.model, attention))
        yield


def hook_count(model: nn.Module) -> int:
    """Forward and pre-forward hooks of this package still on any submodule (should be 0).

    transformers keeps hooks of its own on some models; those are not counted.
    """
    return sum(1 for m in model.modules()
               for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
               if getattr(hook, "__module__", "").startswith("backend"))


def norm_sites(lm) -> list[Site]:
    """Every norm on the residual stream's path: each block's, then the final one."""
    sites = [Site("norm", layer, index) for layer, norms in enumerate(lm.anatomy.norms) for index in range(len(norms))]
    return sites + ([Site("norm", None, 0)] if lm.anatomy.final_norm is not None else [])
