"""What a patched run is scored by: a metric is an argument, not a formula written in each sweep.

A metric maps the logits at the last position, ``(rows, vocab)``, to one score per row.
Patching reports ``share(patched, clean, corrupt)``: 0 where the patch changed nothing, 1
where it gave the clean run's score back (Heimersheim and Nanda 2024 on why the logit
difference is the default). A new metric is a small frozen class with ``__call__``:
``Probability`` below is the whole of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


class Metric(Protocol):
    """Scores last-position logits: (rows, vocab) -> (rows,)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """One score per row."""


@dataclass(frozen=True)
class LogitDiff:
    """``logit(answer) - logit(foil)``: the margin between two answers (the default)."""

    answer: int
    foil: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, self.answer] - logits[:, self.foil]).float()


@dataclass(frozen=True)
class Probability:
    """The probability of one token."""

    token: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(-1)[:, self.token]


@dataclass(frozen=True, eq=False)
class NegativeKL:
    """``-KL(reference || patched)`` to a reference distribution's logits (vocab,): 0 is the reference itself."""

    reference: torch.Tensor

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        ref = self.reference.to(logits.device).float().log_softmax(-1)
        return -(ref.exp() * (ref - logits.float().log_softmax(-1))).sum(-1)


def share(patched: np.ndarray | float, clean: float, corrupt: float) -> np.ndarray | float:
    """How much of the way from the corrupt score to the clean one a patch went (NaN when they are equal)."""
    gap = clean - corrupt
    scale = gap if abs(gap) > 1e-6 else np.nan
    return (np.asarray(patched, dtype=np.float64) - corrupt) / scale
