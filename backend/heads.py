"""Per-head pattern scores for the attention overview, computed from a capture's attention."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.capture import Capture

SCORE_NAMES = {
    "induction": "Induction: reads the token after an earlier copy of the current token (not the one just before)",
    "previous_token": "Previous token: reads the token just before",
    "duplicate_token": "Duplicate token: reads earlier copies of the current token",
    "first_token": "First token (sink): parks attention on the first token",
    "entropy": "Entropy: how spread out the attention is (nats)",
}


@dataclass(frozen=True, eq=False)
class HeadScores:
    """Each score is (n_layers, n_heads); NaN where the prompt offers nothing to measure."""

    induction: np.ndarray  # mean attention to (earlier copy + 1) other than q - 1, over tokens that have such a key
    previous_token: np.ndarray  # mean attention from token q to q - 1, over q >= 1
    duplicate_token: np.ndarray  # mean attention to earlier copies, over tokens with one
    first_token: np.ndarray  # mean attention to position 0, over q >= 1
    entropy: np.ndarray  # mean entropy of each query's attention row, nats

    def get(self, name: str) -> np.ndarray:
        """The score called ``name`` (a key of ``SCORE_NAMES``)."""
        return getattr(self, name)


def repeat_masks(token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (n, n) masks: [q, k] is an earlier copy of token q; [q, k] follows such a copy.

    The second leaves out the token just before the query: in an alternating list
    ("Monday, Tuesday, Wednesday,") the token after an earlier comma is also the token
    before the current comma, and reading it is what a previous-token head does.
    """
    same = token_ids[:, None] == token_ids[None, :]
    earlier = np.tril(same, k=-1)
    after = np.zeros_like(earlier)
    after[:, 1:] = earlier[:, :-1]
    after &= np.tril(np.ones_like(after), k=-2)  # before the query, and not the token just before it
    return earlier, after


def _masked_mean(attention: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = mask.any(axis=1)
    if not rows.any():
        return np.full(attention.shape[:2], np.nan, np.float32)
    per_query = (attention * mask).sum(-1)[..., rows]  # (layers, heads, queries with a match)
    return per_query.mean(-1).astype(np.float32)


def head_scores(cap: Capture) -> HeadScores:
    """Previous-token, induction, duplicate-token, first-token and entropy scores of every head."""
    att = cap.attention
    n = cap.n_tokens
    earlier, after = repeat_masks(cap.token_ids)
    nan = np.full(att.shape[:2], np.nan, np.float32)
    previous = att[:, :, np.arange(1, n), np.arange(0, n - 1)].mean(-1) if n > 1 else nan
    first = att[:, :, 1:, 0].mean(-1) if n > 1 else nan
    entropy = -(att * np.log(np.clip(att, 1e-12, None))).sum(-1).mean(-1)
    return HeadScores(induction=_masked_mean(att, after), previous_token=np.asarray(previous, np.float32),
                      duplicate_token=_masked_mean(att, earlier), first_token=np.asarray(first, np.float32),
                      entropy=entropy.astype(np.float32))
