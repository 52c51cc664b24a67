"""The logit lens: read every layer's residual stream through the model's own unembedding.

Nothing here holds (layers x positions x vocab) at once: work goes a layer and a chunk of
positions at a time, and only small summaries are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from backend.capture import Capture
from backend.loading import LoadedModel
from backend.readout import readout
from backend.tokens import token_strings

CHUNK_VALUES = 2**24  # positions x vocab per chunk: 64 MiB of float32


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


def _logits(lm: LoadedModel, cap: Capture, layer: int, pos: np.ndarray) -> torch.Tensor:
    if layer == cap.n_layers:  # the last layer's lens is the model's output
        return torch.from_numpy(cap.logits[pos])
    return readout(lm, cap.resid[layer, pos]).cpu()


def _log_probs(lm: LoadedModel, cap: Capture, layer: int, pos: np.ndarray) -> torch.Tensor:
    return _logits(lm, cap, layer, pos).log_softmax(-1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of (m, V) matrices without an (m, V) temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2))[:, 0, 0]


def _rank(scores: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """1 + how many entries of each row beat ``target`` (m, 1): 1 is the top guess."""
    return ((scores > target).sum(-1, dtype=torch.int32) + 1).numpy()  # int32 sums twice as fast


@dataclass(frozen=True)
class _Softmax:
    """One pass of exponentials over (m, V) logits, and what follows from it."""

    logits: torch.Tensor  # (m, V)
    probs: torch.Tensor  # (m, V)
    lse: torch.Tensor  # (m,) log-sum-exp

    @classmethod
    def of(cls, logits: torch.Tensor) -> _Softmax:
        peak = logits.amax(-1, keepdim=True)
        probs = (logits - peak).exp_()
        total = probs.sum(-1, keepdim=True)
        probs.div_(total)
        return cls(logits=logits, probs=probs, lse=(peak + total.log())[:, 0])

    def entropy(self) -> torch.Tensor:
        """H = lse - sum(p * z), in nats."""
        return self.lse - _dot(self.probs, self.logits)


def _chunks(cap: Capture, pos: np.ndarray) -> Iterator[np.ndarray]:
    size = max(1, CHUNK_VALUES // cap.logits.shape[1])
    for start in range(0, len(pos), size):
        yield pos[start:start + size]


def lens_summary(lm: LoadedModel, cap: Capture, k: int = 5,
                 target_ids: np.ndarray | None = None) -> LensSummary:
    """Top-``k`` tokens, entropy, KL to the final distribution, and a tracked token's trajectory.

    ``target_ids`` (n,) picks the token followed at each position; by default the
    model's final top guess there.
    """
    n, layers = cap.n_tokens, cap.n_layers + 1
    targets = np.zeros(n, np.int64)
    top_ids = np.zeros((layers, n, k), np.int64)
    top_probs = np.zeros((layers, n, k), np.float32)
    entropy, kl, t_probs = (np.zeros((layers, n), np.float32) for _ in range(3))
    t_ranks = np.zeros((layers, n), np.int64)
    for pos in _chunks(cap, np.arange(n)):
        final = _Softmax.of(_logits(lm, cap, cap.n_layers, pos))
        final_entropy = final.entropy()
        targets[pos] = final.logits.argmax(-1).numpy() if target_ids is None else np.asarray(target_ids)[pos]
        target = torch.from_numpy(targets[pos]).unsqueeze(-1)
        for layer in range(layers):
            soft = final if layer == cap.n_layers else _Softmax.of(_logits(lm, cap, layer, pos))
            values, ids = soft.logits.topk(k, dim=-1)
            top_ids[layer, pos] = ids.numpy()
            top_probs[layer, pos] = (values - soft.lse[:, None]).exp().numpy()
            entropy[layer, pos] = soft.entropy().numpy()
            # KL(final || layer) = sum p_f log p_f - sum p_f (z - lse) = -H_f - p_f . z + lse
            kl[layer, pos] = (soft.lse - final_entropy - _dot(final.probs, soft.logits)).clamp_min(0).numpy()
            target_logit = soft.logits.gather(-1, target)
            t_probs[layer, pos] = (target_logit[:, 0] - soft.lse).exp().numpy()
            t_ranks[layer, pos] = _rank(soft.logits, target_logit)
    strings = token_strings(lm.tokenizer, top_ids.reshape(-1).tolist())
    return LensSummary(
        top_ids=top_ids, top_probs=top_probs,
        top_tokens=np.array(strings, dtype=object).reshape(top_ids.shape),
        entropy=entropy, kl_to_final=kl, target_ids=targets,
        target_probs=t_probs, target_ranks=t_ranks)


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
    pos_all = _positions(cap, positions)
    probs = np.zeros((cap.n_layers + 1, len(pos_all)), np.float32)
    ranks = np.zeros((cap.n_layers + 1, len(pos_all)), np.int64)
    start = 0
    for pos in _chunks(cap, pos_all):
        cols = slice(start, start + len(pos))
        for layer in range(cap.n_layers + 1):
            logp = _log_probs(lm, cap, layer, pos)
            target = logp[:, token_id:token_id + 1]
            probs[layer, cols] = target.exp()[:, 0].numpy()
            ranks[layer, cols] = _rank(logp, target)
        start += len(pos)
    return TokenTrajectory(token_id=token_id, positions=pos_all, probs=probs, ranks=ranks)
