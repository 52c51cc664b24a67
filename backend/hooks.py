"""Model surgery for one run at a time: each helper restores the model in ``finally``.

Hooks are global state on a module, so a hook left behind after an error would corrupt
every later run. Both context managers here undo their change however the block exits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

HookAdder = Callable[[], RemovableHandle]


@contextmanager
def registered(adders: list[HookAdder]) -> Iterator[None]:
    """Register every hook, yield, then remove every one that was registered."""
    handles: list[RemovableHandle] = []
    try:
        for add in adders:
            handles.append(add())
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Run the block with eager attention, the one implementation that returns weights.

    sdpa and flash kernels never materialise the attention pattern. Callers hold the
    model's lock, so no other run sees the temporary switch.
    """
    current = model.config._attn_implementation
    if current == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def hook_count(model: nn.Module) -> int:
    """Forward and pre-forward hooks of this package still on any submodule (should be 0).

    transformers keeps hooks of its own on some models; those are not counted.
    """
    return sum(1 for m in model.modules()
               for hook in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
               if getattr(hook, "__module__", "").startswith("backend"))
