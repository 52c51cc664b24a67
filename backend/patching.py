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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from backend import hooks
from backend.capture import DEFAULT_MAX_TOKENS, tokenize
from backend.errors import UnsupportedModel, XrayError
from backend.loading import LoadedModel
from backend.metrics import LogitDiff, Metric, share
from backend.readout import readout_tensor
from backend.sites import Site
from backend.tokens import token_strings

KINDS = ("resid", "attn", "mlp", "heads")
SITE_OF = {"resid": "resid", "attn": "attn_out", "mlp": "mlp_out", "heads": "heads"}  # a sweep kind's site
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
    clean_diff: float  # the metric at the last position, clean run (default: logit(answer) - logit(foil))
    corrupt_diff: float  # the same in the corrupt run
    resid: np.ndarray  # (n_layers + 1, n) float32: resid index x position, one position at a time
    attn: np.ndarray  # (n_layers, n) float32: one block's attention output at one position
    mlp: np.ndarray  # (n_layers, n) float32: one block's MLP output at one position
    heads: np.ndarray  # (n_layers, n_heads) float32: one head's output at every position

    def get(self, kind: str) -> np.ndarray:
        """The sweep called ``kind`` (one of ``KINDS``)."""
        return getattr(self, kind)


@dataclass(frozen=True)
class _Saved:
    """One run's activations at every site a sweep patches, (n, width) tensors, and its score."""

    values: dict[Site, torch.Tensor]
    blocks: list[object]  # per block: its output as it returned it (for replay)
    score: float


def _record(lm: LoadedModel, ids: list[int], metric: Metric, should_stop: Callable[[], bool] | None) -> _Saved:
    """A plain forward (the caller holds the model) keeping what patching puts back."""
    n_layers, store, blocks = lm.info.n_layers, {}, []
    sites = [Site("resid", i) for i in range(n_layers + 1)] + [Site("mlp_out", i) for i in range(n_layers)]
    sites += [Site(kind, i) for i in range(n_layers) if lm.anatomy.attn_out[i] is not None
              for kind in ("attn_out", "heads")]
    hooks.forward(lm, torch.tensor([ids], device=lm.input_device), [hooks.read(site, store) for site in sites],
                  should_stop=should_stop, extra_hooks=hooks.block_outputs(lm, blocks))
    if any(site not in store for site in sites[: n_layers + 1]):
        raise UnsupportedModel("The patching hooks saw no residual for some layer: the model skipped its blocks.")
    values = {site: value[0] for site, value in store.items()}
    score = float(metric(readout_tensor(lm, values[Site("resid", n_layers)][-1:]))[0])
    return _Saved(values=values, blocks=blocks, score=score)


class _Sweeper:
    """Runs batches of patched corrupt forwards; each returns the batch's scores."""

    def __init__(self, lm: LoadedModel, ids: list[int], clean: _Saved, corrupt: _Saved, metric: Metric,
                 should_stop: Callable[[], bool] | None) -> None:
        self.lm, self.ids, self.clean, self.corrupt, self.metric = lm, ids, clean, corrupt, metric
        self.should_stop = should_stop
        self.replay = hooks.replayable(corrupt.blocks)

    def run(self, skip: int, patch: hooks.Action, rows: int) -> np.ndarray:
        """``rows`` corrupt runs with ``patch``; blocks before ``skip`` replay the corrupt run."""
        input_ids = torch.tensor([self.ids] * rows, device=self.lm.input_device)
        replay = hooks.Replay(skip, self.corrupt.blocks) if self.replay else None
        done = hooks.forward(self.lm, input_ids, [patch], stop_after=self.lm.info.n_layers - 1, replay=replay,
                             should_stop=self.should_stop)
        return self.metric(readout_tensor(self.lm, done.stopped[:, -1])).cpu().numpy()

    def sweep(self, kind: str) -> np.ndarray:
        """Scores for every cell of one kind of sweep (NaN where the model has no such site)."""
        lm, n = self.lm, len(self.ids)
        layers = lm.info.n_layers + 1 if kind == "resid" else lm.info.n_layers
        width = lm.info.n_heads if kind == "heads" else n
        out = np.full((layers, width), np.nan, np.float32)
        per_batch = max(1, TOKENS_PER_BATCH // n)
        for layer in range(layers):
            clean = self.clean.values.get(Site(SITE_OF[kind], layer))
            if clean is None:
                continue  # a block without an attention output projection
            for start in range(0, width, per_batch):
                cells = torch.arange(start, min(width, start + per_batch))
                out[layer, cells.numpy()] = self.run(layer, self._patch(kind, layer, clean, cells), len(cells))
        return out

    def _patch(self, kind: str, layer: int, clean: torch.Tensor, cells: torch.Tensor) -> hooks.Action:
        """The action that patches ``cells`` (positions, or heads: one per row) of ``kind`` at ``layer``."""
        site = Site(SITE_OF[kind], layer)
        if kind != "heads":
            return hooks.patch_rows(site, clean, positions=cells)
        width = clean.shape[-1] // self.lm.info.n_heads
        masks = torch.zeros(len(cells), clean.shape[-1], dtype=torch.bool)
        for row, head in enumerate(cells.tolist()):
            masks[row, head * width:(head + 1) * width] = True
        return hooks.patch_rows(site, clean, columns=masks)


def patching_sweep(lm: LoadedModel, clean_prompt: str, corrupt_prompt: str, answer_id: int, foil_id: int, *,
                   max_tokens: int = DEFAULT_MAX_TOKENS, kinds: tuple[str, ...] = KINDS, metric: Metric | None = None,
                   should_stop: Callable[[], bool] | None = None) -> PatchingSweep:
    """Patch every residual position, attention and MLP output, and head from the clean run into the corrupt one.

    ``kinds`` limits the sweeps run (others come back as NaN). ``metric`` scores the last
    position (``backend.metrics``; default the logit difference of ``answer_id`` over
    ``foil_id``); each cell is the share of the way from the corrupt score to the clean one.
    Raises ``PromptLengthMismatch`` when the prompts' token counts differ, ``BadAnswer`` for
    an id outside the vocabulary or an answer equal to its foil, and ``Cancelled`` when
    ``should_stop`` says nobody waits any more (asked before every block).
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
    metric = LogitDiff(int(answer_id), int(foil_id)) if metric is None else metric
    n, n_layers = len(clean_ids), lm.info.n_layers
    results = {"resid": np.full((n_layers + 1, n), np.nan, np.float32),
               "attn": np.full((n_layers, n), np.nan, np.float32),
               "mlp": np.full((n_layers, n), np.nan, np.float32),
               "heads": np.full((n_layers, lm.info.n_heads), np.nan, np.float32)}
    with hooks.exclusive(lm):
        clean = _record(lm, clean_ids, metric, should_stop)
        corrupt = _record(lm, corrupt_ids, metric, should_stop)
        sweeper = _Sweeper(lm, corrupt_ids, clean, corrupt, metric, should_stop)
        for kind in kinds:
            results[kind] = sweeper.sweep(kind)
    answer, foil = token_strings(lm.tokenizer, [int(answer_id), int(foil_id)])
    return PatchingSweep(
        clean_tokens=token_strings(lm.tokenizer, clean_ids), corrupt_tokens=token_strings(lm.tokenizer, corrupt_ids),
        answer_id=int(answer_id), foil_id=int(foil_id), answer=answer, foil=foil,
        clean_diff=clean.score, corrupt_diff=corrupt.score,
        **{kind: share(values, clean.score, corrupt.score).astype(np.float32) for kind, values in results.items()})


__all__ = ["KINDS", "BadAnswer", "PatchingSweep", "PromptLengthMismatch", "patching_sweep"]
