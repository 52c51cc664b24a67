"""Feature activations of a run, kept sparse: most features are off at most tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.sites import Site


@dataclass(frozen=True, eq=False)
class SparseActs:
    """One layer's feature activations over a prompt, row by row (CSR): only the active features are kept."""

    indptr: np.ndarray  # (n + 1,) int64
    indices: np.ndarray  # (nnz,) int32: feature ids
    values: np.ndarray  # (nnz,) float32
    n_features: int

    @classmethod
    def of(cls, dense: torch.Tensor) -> SparseActs:
        """The active entries of a dense (n, n_features) tensor."""
        rows, cols = torch.nonzero(dense, as_tuple=True)
        counts = torch.bincount(rows, minlength=dense.shape[0])
        indptr = np.concatenate([[0], np.cumsum(counts.numpy())]).astype(np.int64)
        return cls(indptr=indptr, indices=cols.numpy().astype(np.int32),
                   values=dense[rows, cols].float().numpy(), n_features=int(dense.shape[1]))

    @property
    def n_tokens(self) -> int:
        """Number of positions."""
        return len(self.indptr) - 1

    def row(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """(feature ids, activations) active at one position."""
        span = slice(self.indptr[position], self.indptr[position + 1])
        return self.indices[span], self.values[span]

    def column(self, feature: int) -> np.ndarray:
        """(n,) one feature's activation at every position (0 where it is off)."""
        out = np.zeros(self.n_tokens, np.float32)
        rows = np.repeat(np.arange(self.n_tokens), np.diff(self.indptr))
        hit = self.indices == feature
        out[rows[hit]] = self.values[hit]
        return out

    def dense(self) -> np.ndarray:
        """(n, n_features) float32."""
        out = np.zeros((self.n_tokens, self.n_features), np.float32)
        rows = np.repeat(np.arange(self.n_tokens), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes


@dataclass(frozen=True, eq=False)
class FeatureActivations:
    """A run's feature activations: one ``SparseActs`` per dictionary (per layer for transcoders)."""

    source: str
    sites: tuple[Site, ...]  # where each dictionary reads
    layers: tuple[SparseActs, ...]

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return sum(layer.nbytes for layer in self.layers)
