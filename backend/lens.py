"""The logit lens: read every layer's residual stream through the model's own unembedding.

Nothing here holds (layers x positions x vocab) at once: work goes a layer and a chunk of
positions at a time, and only small summaries are kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from backend.capture import Capture
from backend.errors import Cancelled
from backend.loading import LoadedModel
from backend.readout import readout
from backend.tokens import token_strings

CHUNK_VALUES = 2**24  # positions x vocab per chunk: 64 MiB of float32
BLOCK_VALUES = 2**21  # positions x vocab per statistics block: 8 MiB, within a server CPU's cache


@dataclass(frozen=True, eq=False)
class LensSummary:
    """What the lens says at every (layer, position); layer 0 is the embedding."""

    top_ids: np.ndarray  # (n_layers + 1, n, k) int64, most likely first
    top_probs: np.ndarray  # (n_layers + 1, n, k) float32
    top_tokens: np.ndarray  # (n_layers + 1, n, k) object: readable strings of top_ids
    entropy: np.ndarray  # (n_layers + 1, n) float32, nats
    kl_to_final: np.ndarray  # (n_layers + 1, n) float32, KL(final || layer) in nats
    target_ids: np.ndarray  # (n,) int64: the token tracked at each position
    target_probs: np.ndarray  # (n_layers + 1, n) float32: its probability at each layer
    target_ranks: np.ndarray  # (n_layers + 1, n) int64: its rank, 1 = top guess

    def __post_init__(self) -> None:
        layers, n, _ = self.top_ids.shape
        for name in ("entropy", "kl_to_final", "target_probs", "target_ranks"):
            if getattr(self, name).shape != (layers, n):
                raise ValueError(f"LensSummary.{name} has shape {getattr(self, name).shape}, "
                                 f"expected {(layers, n)}")


@dataclass(frozen=True, eq=False)
class TokenTrajectory:
    """One token's probability and rank under the lens, at every layer and chosen position."""

    token_id: int
    positions: np.ndarray  # (m,) int64
    probs: np.ndarray  # (n_layers + 1, m) float32
    ranks: np.ndarray  # (n_layers + 1, m) int64, 1 = top guess


def _positions(cap: Capture, positions: list[int] | np.ndarray | None) -> np.ndarray:
    if positions is None:
        return np.arange(cap.n_tokens)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if pos.size and (pos.min() < -cap.n_tokens or pos.max() >= cap.n_tokens):
        raise IndexError(f"positions must lie in [0, {cap.n_tokens}); got {pos.tolist()}")
    return pos % cap.n_tokens


def lens_logits(lm: LoadedModel, cap: Capture, layer: int,
                positions: list[int] | np.ndarray | None = None) -> np.ndarray:
    """``(len(positions), vocab)`` logits the model would give if it stopped after ``layer`` blocks.

    ``layer`` runs from 0 (the embeddings) to ``n_layers`` (the model's own logits).
    """
    if not 0 <= layer <= cap.n_layers:
        raise IndexError(f"layer must lie in [0, {cap.n_layers}]; got {layer}")
    pos = _positions(cap, positions)
    return readout(lm, cap.resid[layer, pos]).cpu().numpy()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of (m, V) matrices without an (m, V) temporary (3x faster than bmm)."""
    return torch.linalg.vecdot(a, b)


class Workspace:
    """Reusable (rows, vocab) float32 buffers for a chunk of positions.

    Every layer needs (rows x vocab) logits, exponentials and comparison flags, plus the
    transposed product the matmul writes first; fresh tensors that big cost page faults
    on each allocation on the CPU (about a fifth of the vocabulary matmul), so one set
    (at most 4 x 64 MiB) is allocated per call and reused for every layer.
    """

    def __init__(self, rows: int, vocab: int) -> None:
        self.logits, self.exps, self.flags = (torch.empty(rows, vocab) for _ in range(3))
        self.transposed = torch.empty(vocab * rows)  # where the vocabulary matmul lands first

    def readout(self, lm: LoadedModel, resid: np.ndarray) -> torch.Tensor:
        """Lens logits (m, vocab) of residual rows (m, d_model), in ``self.logits`` when possible."""
        m, vocab = resid.shape[0], self.logits.shape[1]
        scratch = self.transposed[: vocab * m].view(vocab, m)
        logits = readout(lm, resid, out=self.logits[:m], scratch=scratch)
        return logits if logits.device.type == "cpu" else self.logits[:m].copy_(logits)  # from a GPU

    def rank(self, logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """``rank_of`` for one target per row (m, 1), counted in the reused flags buffer."""
        return rank_of(logits, target, self.flags[: logits.shape[0]]).numpy()


def rank_of(logits: torch.Tensor, targets: torch.Tensor, flags: torch.Tensor | None = None) -> torch.Tensor:
    """1 + how many entries of each row beat each target: logits (m, V), targets (m, r) -> (m, r) int64; 1 is the top.

    With one target per row and a (m, V) ``flags`` buffer, the comparison lands there and is
    summed as float32, exact (a count stays below 2**24) and several times faster than
    counting booleans.
    """
    if flags is not None and targets.shape[-1] == 1:
        beaten = torch.gt(logits, targets, out=flags[: logits.shape[0]])
        return beaten.sum(-1, keepdim=True).to(torch.int64) + 1
    return (logits[:, None, :] > targets[:, :, None]).sum(-1) + 1


@dataclass(frozen=True)
class LensBlock:
    """Lens logits of one layer at one block of positions; the tensor is reused for the next block."""

    layer: int  # resid index read (n_layers: the model's own logits)
    rows: slice  # which entries of the positions asked for
    logits: torch.Tensor  # (rows, vocab) float32


def chunk_size(n: int, vocab: int, per_row: int = 1) -> int:
    """Positions per chunk so that ``per_row`` (positions x vocab) values fit in ``CHUNK_VALUES``."""
    return max(1, min(n, CHUNK_VALUES // (vocab * per_row)))


def lens_blocks(lm: LoadedModel, cap: Capture, layers: list[int] | range, positions: np.ndarray | None = None, *,
                size: int | None = None, work: Workspace | None = None,
                should_stop: Callable[[], bool] | None = None) -> Iterator[LensBlock]:
    """The logit lens, a chunk of positions and then a layer at a time: the one loop every reader of the lens uses.

    ``positions`` (default all) need not be contiguous; ``layers`` are resid indices in the
    order wanted (``n_layers`` yields the model's own logits, read from the capture). Nothing
    holds (layers x positions x vocab) at once: each block's logits sit in ``work``'s buffer
    until the next one. ``should_stop``, asked before every block, raises ``Cancelled``.
    """
    pos = np.arange(cap.n_tokens) if positions is None else np.asarray(positions, dtype=np.int64)
    vocab = cap.logits.shape[1]
    size = size or chunk_size(len(pos), vocab)
    work = work or Workspace(size, vocab)
    contiguous = len(pos) == 0 or bool(np.all(np.diff(pos) == 1))
    for start in range(0, len(pos), size):
        rows = slice(start, min(len(pos), start + size))
        chosen = slice(int(pos[rows.start]), int(pos[rows.stop - 1]) + 1) if contiguous else pos[rows]
        for layer in layers:
            if should_stop is not None and should_stop():
                raise Cancelled()
            if layer == cap.n_layers:
                own = cap.logits[chosen]
                logits = _tensor(own) if contiguous else work.logits[: len(own)].copy_(torch.from_numpy(own))
            else:
                logits = work.readout(lm, cap.resid[layer, chosen])
            yield LensBlock(layer, rows, logits)


@dataclass(frozen=True)
class _Softmax:
    """One pass of exponentials over (m, V) logits, and what follows from it; nothing is normalised."""

    logits: torch.Tensor  # (m, V)
    exps: torch.Tensor  # (m, V) exp(logits - row max)
    total: torch.Tensor  # (m,) row sums of exps
    lse: torch.Tensor  # (m,) log-sum-exp of the logits

    @classmethod
    def of(cls, logits: torch.Tensor, out: torch.Tensor) -> _Softmax:
        peak = logits.amax(-1, keepdim=True)
        exps = torch.sub(logits, peak, out=out).exp_()
        total = exps.sum(-1)
        return cls(logits=logits, exps=exps, total=total, lse=peak[:, 0] + total.log())

    def entropy(self) -> torch.Tensor:
        """H = lse - sum(p * z) with p = exps / total, in nats."""
        return self.lse - _dot(self.exps, self.logits) / self.total


def lens_summary(lm: LoadedModel, cap: Capture, k: int = 5,
                 target_ids: np.ndarray | None = None, should_stop: Callable[[], bool] | None = None) -> LensSummary:
    """Top-``k`` tokens, entropy, KL to the final distribution, and a tracked token's trajectory.

    ``target_ids`` (n,) picks the token followed at each position; by default the
    model's final top guess there. ``should_stop``, asked before every layer, raises
    ``Cancelled`` when nobody waits for the summary any more.

    Positions go in chunks of ``CHUNK_VALUES`` logits (``lens_blocks``), the final layer
    first, since every layer's KL compares with it. The statistics then go through each
    chunk in blocks of ``BLOCK_VALUES``, small enough that their passes over a block stay
    in cache.
    """
    n, layers, vocab = cap.n_tokens, cap.n_layers + 1, cap.logits.shape[1]
    out = _Summary(n, layers, k)
    if target_ids is not None:
        out.targets[:] = np.asarray(target_ids, dtype=np.int64).reshape(n)
    size = chunk_size(n, vocab)
    block = max(1, BLOCK_VALUES // vocab)
    work = Workspace(size, vocab)
    final_probs = torch.empty(size, vocab)
    final_entropy = torch.empty(size)
    order = [cap.n_layers, *range(cap.n_layers)]
    for lens in lens_blocks(lm, cap, order, size=size, work=work, should_stop=should_stop):
        rows = lens.rows
        for b in range(rows.start, rows.stop, block):
            b = slice(b, min(rows.stop, b + block))
            local = slice(b.start - rows.start, b.stop - rows.start)
            if lens.layer == cap.n_layers:
                final = _Softmax.of(lens.logits[local], out=final_probs[local])
                final_entropy[local] = final.entropy()
                if target_ids is None:
                    out.targets[b] = final.logits.argmax(-1).numpy()
                out.store(cap.n_layers, b, _layer_stats(final, out.target(b), k, work))
                out.kl[cap.n_layers, b] = 0.0
                final.exps.div_(final.total[:, None])  # normalised once, read by every layer's KL
                continue
            soft = _Softmax.of(lens.logits[local], out=work.exps[local])
            out.store(lens.layer, b, _layer_stats(soft, out.target(b), k, work))
            # KL(final || layer) = sum p_f log p_f - sum p_f (z - lse) = -H_f - p_f . z + lse
            kl = soft.lse - final_entropy[local] - _dot(final_probs[local], soft.logits)
            out.kl[lens.layer, b] = kl.clamp_min(0).numpy()
    return out.finish(lm)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing a capture's array, which may be read-only: nothing here writes to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(array)


class _Summary:
    """The arrays ``lens_summary`` fills, a layer and a block of positions at a time."""

    def __init__(self, n: int, layers: int, k: int) -> None:
        self.targets = np.zeros(n, np.int64)
        self.top_ids = np.zeros((layers, n, k), np.int64)
        self.top_probs = np.zeros((layers, n, k), np.float32)
        self.entropy, self.kl, self.t_probs = (np.zeros((layers, n), np.float32) for _ in range(3))
        self.t_ranks = np.zeros((layers, n), np.int64)

    def target(self, rows: slice) -> torch.Tensor:
        return torch.from_numpy(self.targets[rows]).unsqueeze(-1)

    def store(self, layer: int, rows: slice, stats: tuple[np.ndarray, ...]) -> None:
        self.top_ids[layer, rows], self.top_probs[layer, rows], self.entropy[layer, rows], \
            self.t_probs[layer, rows], self.t_ranks[layer, rows] = stats

    def finish(self, lm: LoadedModel) -> LensSummary:
        strings = token_strings(lm.tokenizer, self.top_ids.reshape(-1).tolist())
        return LensSummary(
            top_ids=self.top_ids, top_probs=self.top_probs,
            top_tokens=np.array(strings, dtype=object).reshape(self.top_ids.shape),
            entropy=self.entropy, kl_to_final=self.kl, target_ids=self.targets,
            target_probs=self.t_probs, target_ranks=self.t_ranks)


def _layer_stats(soft: _Softmax, target: torch.Tensor, k: int,
                 work: Workspace) -> tuple[np.ndarray, ...]:
    """Top-k ids and probabilities, entropy, and the target's probability and rank, for one layer."""
    values, ids = soft.logits.topk(k, dim=-1)
    target_logit = soft.logits.gather(-1, target)
    return (ids.numpy(), (values - soft.lse[:, None]).exp().numpy(), soft.entropy().numpy(),
            (target_logit[:, 0] - soft.lse).exp().numpy(), work.rank(soft.logits, target_logit)[:, 0])


def top_guesses(lm: LoadedModel, logits: np.ndarray, k: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The ``k`` most likely next tokens of one row of logits: ids, readable strings, probabilities."""
    probs = torch.from_numpy(np.array(logits, dtype=np.float32)).softmax(-1)
    values, ids = probs.topk(min(k, probs.numel()))
    return ids.numpy(), token_strings(lm.tokenizer, ids.tolist()), values.numpy()


def settle_layer(top_ids: np.ndarray, final_id: int) -> int:
    """First layer from which ``final_id`` stays the top guess to the end; top_ids (layers,)."""
    layer = len(top_ids) - 1
    while layer > 0 and top_ids[layer - 1] == final_id:
        layer -= 1
    return layer


def token_trajectory(lm: LoadedModel, cap: Capture, token_id: int,
                     positions: list[int] | np.ndarray | None = None) -> TokenTrajectory:
    """Probability and rank of ``token_id`` at every layer, at ``positions`` (default all)."""
    vocab = cap.logits.shape[1]
    if not 0 <= token_id < vocab:
        raise IndexError(f"token_id must lie in [0, {vocab}); got {token_id}")
    pos = _positions(cap, positions)
    probs = np.zeros((cap.n_layers + 1, len(pos)), np.float32)
    ranks = np.zeros((cap.n_layers + 1, len(pos)), np.int64)
    size = chunk_size(len(pos), vocab)
    work = Workspace(size, vocab)
    for lens in lens_blocks(lm, cap, range(cap.n_layers + 1), pos, size=size, work=work):
        target = lens.logits[:, token_id:token_id + 1]
        probs[lens.layer, lens.rows] = (target[:, 0] - lens.logits.logsumexp(-1)).exp().numpy()
        ranks[lens.layer, lens.rows] = work.rank(lens.logits, target)[:, 0]
    return TokenTrajectory(token_id=token_id, positions=pos, probs=probs, ranks=ranks)
