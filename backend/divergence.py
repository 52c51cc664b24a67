"""Where two models' lenses part ways: KL(a || b) at every layer and position, and the answers' tracks.

Each model reads its own residual stream through its own final norm and unembedding, so the
last row compares the two outputs. Models of different depths are matched layer for layer
by relative depth (``layer_map``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from backend.capture import Capture
from backend.lens import Workspace, chunk_size, lens_blocks, rank_of
from backend.loading import LoadedModel

PART_WAYS_NATS = 0.5  # KL(a || b) from which two lens distributions count as parted


def layer_map(n_a: int, n_b: int) -> np.ndarray:
    """For each resid index of a (0..n_a), the resid index of b at the same relative depth."""
    if n_a == n_b:
        return np.arange(n_a + 1, dtype=np.int64)
    return np.rint(np.arange(n_a + 1) * n_b / max(1, n_a)).astype(np.int64)


def lens_kl(lm_a: LoadedModel, cap_a: Capture, lm_b: LoadedModel, cap_b: Capture, track_ids: tuple[int, ...] = (),
            should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """KL(a || b) (n_layers_a + 1, n) of the two lenses, the layer map used, and the tracked tokens.

    While the logits are at hand, the third value holds ``track_ids``' log-probability and
    rank at the last position under both lenses: {(token_id, "a" or "b"): (logprobs, ranks)},
    per layer of a.
    """
    mapping = layer_map(cap_a.n_layers, cap_b.n_layers)
    n, vocab = cap_a.n_tokens, cap_a.logits.shape[1]
    layers = cap_a.n_layers + 1
    kl = np.zeros((layers, n), np.float32)
    picked = torch.zeros(layers, 2, len(track_ids))  # (layer, model a/b, token): log-probabilities
    ranks = torch.zeros(layers, 2, len(track_ids), dtype=torch.long)
    ids = torch.tensor(track_ids, dtype=torch.long)
    size = chunk_size(n, vocab)
    reads_a = lens_blocks(lm_a, cap_a, range(layers), size=size, work=Workspace(size, vocab), should_stop=should_stop)
    reads_b = lens_blocks(lm_b, cap_b, [int(mapping[layer]) for layer in range(layers)], size=size,
                          work=Workspace(size, vocab))
    with torch.inference_mode():
        for a, b in zip(reads_a, reads_b, strict=True):
            log_a, log_b = a.logits.log_softmax(-1), b.logits.log_softmax(-1)
            kl[a.layer, a.rows] = (log_a.exp() * (log_a - log_b)).sum(-1).clamp_min(0).numpy()
            if track_ids and a.rows.stop == n:
                last = torch.stack([log_a[-1], log_b[-1]])  # (2, vocab)
                picked[a.layer] = last[:, ids]
                ranks[a.layer] = rank_of(last, picked[a.layer])
    picked_np, ranks_np = picked.numpy(), ranks.numpy()
    tracks = {(token_id, model): (picked_np[:, m, k].copy(), ranks_np[:, m, k].copy())
              for k, token_id in enumerate(track_ids) for m, model in enumerate("ab")}
    return kl, mapping, tracks


def part_ways(kl: np.ndarray, threshold: float = PART_WAYS_NATS) -> np.ndarray:
    """(n,) first layer whose KL reaches ``threshold`` at each position, -1 where none does."""
    over = kl >= threshold
    return np.where(over.any(0), over.argmax(0), -1).astype(np.int64)
