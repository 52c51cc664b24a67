"""Activation patching: where the information that decides the answer lives.

The standard experiment (Meng et al. 2022; Wang et al. 2022; Heimersheim & Nanda 2024):
run a *corrupt* prompt, put back one activation from a *clean* prompt of the same length,
and measure how much of the clean answer comes back. The metric is the logit difference
``logit(answer) - logit(foil)`` at the last position; each cell is
``(patched - corrupt) / (clean - corrupt)``: 0 is no effect, 1 is full recovery.

Speed comes from three things, none of which changes a number:
- patched runs go in batches, one row per patched (layer, position) or head;
- a patch at layer ``l`` cannot change blocks before ``l``, so those blocks replay the
  corrupt run's saved outputs instead of computing them again;
- the forward stops after the last block, and only the last position goes through the
  model's readout (final norm, unembedding, soft-capping), exactly as the lens does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from backend.capture import DEFAULT_MAX_TOKENS, tokenize
from backend.edits import first, head_slice, hidden_of, input_hook_adder, output_hook, resid_hook_adder
from backend.errors import UnsupportedModel, XrayError
from backend.hooks import HookAdder, registered
from backend.loading import LoadedModel
from backend.readout import readout_tensor
from backend.tokens import token_strings

KINDS = ("resid", "attn", "mlp", "heads")
TOKENS_PER_BATCH = 4096  # rows x tokens in one patched forward


class PromptLengthMismatch(XrayError):
    """The clean and corrupt prompts have different numbers of tokens."""

    def __init__(self, clean: int, corrupt: int) -> None:
        self.clean, self.corrupt = clean, corrupt
        super().__init__(f"Patching needs two prompts of the same length: the clean prompt has {clean} tokens "
                         f"and the corrupt one has {corrupt}. Change a word for one of the same length.")


class BadAnswer(XrayError):
    """An answer or foil token id outside the vocabulary, or the two the same."""


@dataclass(frozen=True, eq=False)
class PatchingSweep:
    """Share of the clean answer margin restored by patching each component into the corrupt run."""

    clean_tokens: list[str]  # (n,)
    corrupt_tokens: list[str]  # (n,)
    answer_id: int
    foil_id: int
    answer: str
    foil: str
    clean_diff: float  # logit(answer) - logit(foil) at the last position, clean run
    corrupt_diff: float  # the same in the corrupt run
    resid: np.ndarray  # (n_layers + 1, n) float32: resid index x position, one position at a time
    attn: np.ndarray  # (n_layers, n) float32: one block's attention output at one position
    mlp: np.ndarray  # (n_layers, n) float32: one block's MLP output at one position
    heads: np.ndarray  # (n_layers, n_heads) float32: one head's output at every position

    def get(self, kind: str) -> np.ndarray:
        """The sweep called ``kind`` (one of ``KINDS``)."""
        return getattr(self, kind)


class _Stop(Exception):
    """Raised by the last block's hook: nothing after it is needed."""


@dataclass(frozen=True)
class _Saved:
    """One run's activations, as tensors on the devices where they were made."""

    block_out: list[object]  # per block: its output, as the block returned it (for replay)
    resid: list[torch.Tensor]  # (n_layers + 1) x (n, d_model)
    attn: list[torch.Tensor | None]  # per block: attention output projection's output (n, d_model)
    mlp: list[torch.Tensor]  # per block: MLP output projection's output (n, d_model)
    heads: list[torch.Tensor | None]  # per block: attention output projection's input (n, n_heads * d_head)
    diff: float


def _flat(x: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows, n, width) view of an activation that may come flattened as (rows * n, width)."""
    return x.reshape(rows, -1, x.shape[-1])


def _readout_diff(lm: LoadedModel, last: torch.Tensor, answer_id: int, foil_id: int) -> torch.Tensor:
    """logit(answer) - logit(foil) for residual rows (rows, d_model) of the last position."""
    logits = readout_tensor(lm, last)
    return (logits[:, answer_id] - logits[:, foil_id]).float().cpu()


def _record(lm: LoadedModel, ids: list[int], answer_id: int, foil_id: int) -> _Saved:
    """A plain forward (the caller holds the lock) that saves what patching reads."""
    anatomy, n_layers = lm.anatomy, lm.info.n_layers
    saved: dict[str, list] = {name: [None] * n_layers for name in ("block_out", "attn", "mlp", "heads")}
    resid: list[torch.Tensor | None] = [None] * (n_layers + 1)

    def keep_input(name: str, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            saved[name][i] = args[0].detach().reshape(-1, args[0].shape[-1]).clone()
        return hook

    def keep_output(name: str, i: int):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            saved[name][i] = first(output).detach().reshape(-1, first(output).shape[-1]).clone()
        return hook

    def keep_block(i: int):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            hidden = first(output).detach().clone()  # later ops of some families work in place
            saved["block_out"][i] = (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden
            resid[i + 1] = hidden[0]
        return hook

    def keep_embed(module: nn.Module, args: tuple, kwargs: dict) -> None:
        resid[0] = hidden_of(args, kwargs).detach()[0]

    adders: list[HookAdder] = [partial(anatomy.layers[0].register_forward_pre_hook, keep_embed, with_kwargs=True)]
    for i, block in enumerate(anatomy.layers):
        adders.append(partial(block.register_forward_hook, keep_block(i)))
        adders.append(partial(anatomy.mlp_out[i].register_forward_hook, keep_output("mlp", i)))
        if anatomy.attn_out[i] is not None:
            adders.append(partial(anatomy.attn_out[i].register_forward_hook, keep_output("attn", i)))
            adders.append(partial(anatomy.attn_out[i].register_forward_pre_hook, keep_input("heads", i)))
    with registered(adders):
        lm.model(input_ids=torch.tensor([ids], device=lm.input_device), use_cache=False)
    if any(r is None for r in resid):
        raise UnsupportedModel("The patching hooks saw no residual for some layer: the model skipped its blocks.")
    diff = float(_readout_diff(lm, resid[-1][-1:], answer_id, foil_id)[0])
    return _Saved(block_out=saved["block_out"], resid=resid, attn=saved["attn"], mlp=saved["mlp"],
                  heads=saved["heads"], diff=diff)


@contextmanager
def _replayed(blocks: tuple[nn.Module, ...], outputs: list[object], rows: int) -> Iterator[None]:
    """Blocks that return the corrupt run's saved output (for ``rows`` rows) instead of computing it.

    A patch at layer l cannot change what blocks before l compute, so they need not run.
    Their hooks still fire (``__call__`` runs them around ``forward``).
    """
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


def _replayable(outputs: list[object]) -> bool:
    """Saved block outputs can stand in for the blocks when they hold nothing but the hidden state."""
    return all(not isinstance(o, (tuple, list)) or all(extra is None for extra in o[1:]) for o in outputs)


Transform = Callable[[torch.Tensor], torch.Tensor]


def _positions_patch(clean: torch.Tensor, positions: torch.Tensor) -> Transform:
    """Row r of the batch gets ``clean`` (n, width) at position ``positions[r]``."""
    def transform(x: torch.Tensor) -> torch.Tensor:
        rows = positions.shape[0]
        patched = _flat(x, rows).clone()
        pos = positions.to(x.device)
        patched[torch.arange(rows, device=x.device), pos] = clean.to(x.device, x.dtype)[pos]
        return patched.reshape(x.shape)
    return transform


def _heads_patch(clean: torch.Tensor, masks: torch.Tensor) -> Transform:
    """Row r of the batch gets ``clean`` (n, width) in the columns where ``masks[r]`` is set."""
    def transform(x: torch.Tensor) -> torch.Tensor:
        rows = masks.shape[0]
        mask = masks.to(x.device)[:, None, :]
        return torch.where(mask, clean.to(x.device, x.dtype)[None], _flat(x, rows)).reshape(x.shape)
    return transform


class _Sweeper:
    """Runs batches of patched corrupt forwards; each returns the batch's logit differences."""

    def __init__(self, lm: LoadedModel, ids: list[int], clean: _Saved, corrupt: _Saved,
                 answer_id: int, foil_id: int) -> None:
        self.lm, self.ids, self.clean, self.corrupt = lm, ids, clean, corrupt
        self.answer_id, self.foil_id = answer_id, foil_id
        self.replay = _replayable(corrupt.block_out)

    def run(self, skip: int, patch: HookAdder, rows: int) -> np.ndarray:
        """``rows`` corrupt runs with ``patch``; blocks before ``skip`` replay the corrupt run."""
        blocks = self.lm.anatomy.layers
        last: list[torch.Tensor] = []

        def stop(module: nn.Module, args: tuple, output: object) -> None:
            last.append(first(output)[:, -1])
            raise _Stop

        input_ids = torch.tensor([self.ids] * rows, device=self.lm.input_device)
        replay = blocks[:skip] if self.replay else ()
        try:
            with _replayed(replay, self.corrupt.block_out, rows), \
                    registered([patch, partial(blocks[-1].register_forward_hook, stop)]):
                self.lm.model(input_ids=input_ids, use_cache=False)
        except _Stop:
            pass
        if not last:
            raise UnsupportedModel("The patched forward never reached the last block.")
        return _readout_diff(self.lm, last[0], self.answer_id, self.foil_id).numpy()

    def sweep(self, kind: str) -> np.ndarray:
        """Logit differences for every cell of one kind of sweep."""
        lm, n = self.lm, len(self.ids)
        n_layers = lm.info.n_layers
        layers = n_layers + 1 if kind == "resid" else n_layers
        width = lm.info.n_heads if kind == "heads" else n
        out = np.full((layers, width), np.nan, np.float32)
        per_batch = max(1, TOKENS_PER_BATCH // n)
        for layer in range(layers):
            for start in range(0, width, per_batch):
                cells = torch.arange(start, min(width, start + per_batch))
                adder, skip = self._patch(kind, layer, cells)
                if adder is not None:
                    out[layer, cells.numpy()] = self.run(skip, adder, len(cells))
        return out

    def _patch(self, kind: str, layer: int, cells: torch.Tensor) -> tuple[HookAdder | None, int]:
        """The hook that patches ``cells`` (positions, or heads) of ``kind`` at ``layer``; blocks to replay."""
        anatomy, clean = self.lm.anatomy, self.clean
        if kind == "resid":
            return resid_hook_adder(self.lm, layer, _positions_patch(clean.resid[layer], cells)), layer
        if kind == "mlp":
            adder = partial(anatomy.mlp_out[layer].register_forward_hook, output_hook(
                _positions_patch(clean.mlp[layer], cells)))
            return adder, layer
        module = anatomy.attn_out[layer]
        if module is None:
            return None, layer
        if kind == "attn":
            patch = output_hook(_positions_patch(clean.attn[layer], cells))
            return partial(module.register_forward_hook, patch), layer
        masks = torch.zeros(len(cells), clean.heads[layer].shape[-1], dtype=torch.bool)
        for row, head in enumerate(cells.tolist()):
            masks[row, head_slice(self.lm, layer, head)] = True
        return input_hook_adder(module, _heads_patch(clean.heads[layer], masks)), layer


def patching_sweep(lm: LoadedModel, clean_prompt: str, corrupt_prompt: str, answer_id: int, foil_id: int, *,
                   max_tokens: int = DEFAULT_MAX_TOKENS, kinds: tuple[str, ...] = KINDS) -> PatchingSweep:
    """Patch every residual position, attention and MLP output, and head from the clean run into the corrupt one.

    ``kinds`` limits the sweeps run (others come back as NaN). Raises
    ``PromptLengthMismatch`` when the prompts' token counts differ and ``BadAnswer`` for
    an id outside the vocabulary or an answer equal to its foil.
    """
    clean_ids = tokenize(lm, clean_prompt, max_tokens)
    corrupt_ids = tokenize(lm, corrupt_prompt, max_tokens)
    if len(clean_ids) != len(corrupt_ids):
        raise PromptLengthMismatch(len(clean_ids), len(corrupt_ids))
    vocab = lm.info.vocab_size
    for name, token_id in (("answer", answer_id), ("foil", foil_id)):
        if not 0 <= int(token_id) < vocab:
            raise BadAnswer(f"The {name} token id {token_id} is outside the vocabulary (0 to {vocab - 1}).")
    if int(answer_id) == int(foil_id):
        raise BadAnswer("The answer and the foil are the same token: patching measures the margin between two.")
    n, n_layers = len(clean_ids), lm.info.n_layers
    results = {"resid": np.full((n_layers + 1, n), np.nan, np.float32),
               "attn": np.full((n_layers, n), np.nan, np.float32),
               "mlp": np.full((n_layers, n), np.nan, np.float32),
               "heads": np.full((n_layers, lm.info.n_heads), np.nan, np.float32)}
    with lm.lock, torch.inference_mode():
        clean = _record(lm, clean_ids, int(answer_id), int(foil_id))
        corrupt = _record(lm, corrupt_ids, int(answer_id), int(foil_id))
        sweeper = _Sweeper(lm, corrupt_ids, clean, corrupt, int(answer_id), int(foil_id))
        for kind in kinds:
            results[kind] = sweeper.sweep(kind)
    margin = clean.diff - corrupt.diff
    scale = margin if abs(margin) > 1e-6 else np.nan
    answer, foil = token_strings(lm.tokenizer, [int(answer_id), int(foil_id)])
    return PatchingSweep(
        clean_tokens=token_strings(lm.tokenizer, clean_ids), corrupt_tokens=token_strings(lm.tokenizer, corrupt_ids),
        answer_id=int(answer_id), foil_id=int(foil_id), answer=answer, foil=foil,
        clean_diff=clean.diff, corrupt_diff=corrupt.diff,
        **{kind: ((values - corrupt.diff) / scale).astype(np.float32) for kind, values in results.items()})


__all__ = ["KINDS", "BadAnswer", "PatchingSweep", "PromptLengthMismatch", "patching_sweep"]
