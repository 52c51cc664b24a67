"""Influence, pruning and the two scores of an attribution graph, as circuit-tracer defines them.

``adjacency[i, j]`` is node j's direct effect on node i. Influence is computed on the
row-normalised absolute adjacency ``N``: ``w N + w N^2 + ...``, with ``w`` the targets'
probabilities on the logit nodes (the graph is acyclic, so the powers vanish after a few).
"""

from __future__ import annotations

import numpy as np


def normalised(adjacency: np.ndarray) -> np.ndarray:
    """|A| with each row scaled to sum to 1 (rows of zeros stay zero)."""
    absolute = np.abs(adjacency).astype(np.float64)
    return absolute / np.maximum(absolute.sum(1, keepdims=True), 1e-10)


def influence(matrix: np.ndarray, weights: np.ndarray, max_steps: int = 1000) -> np.ndarray:
    """``w M + w M^2 + ...`` until the powers vanish (an acyclic graph: at most its depth)."""
    current = weights @ matrix
    total = current.copy()
    for _ in range(max_steps):
        if not current.any():
            return total
        current = current @ matrix
        total += current
    raise RuntimeError("The graph's influence did not vanish: it has a cycle.")


def find_threshold(values: np.ndarray, share: float) -> float:
    """The value above which the largest values hold ``share`` of their total (a share of 1 keeps everything)."""
    if share >= 1.0:
        return -np.inf  # rounding would otherwise drop the zeros that follow the last nonzero value
    ordered = np.sort(values.reshape(-1))[::-1]
    total = ordered.sum()
    if total <= 0:
        return float(ordered[-1]) if ordered.size else 0.0
    cumulative = np.cumsum(ordered) / total
    index = min(int(np.searchsorted(cumulative, share)), len(ordered) - 1)
    return float(ordered[index])


def prune_masks(adjacency: np.ndarray, weights: np.ndarray, kinds: np.ndarray, node_threshold: float,
                edge_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(node mask, edge mask) keeping ``node_threshold`` of the nodes' influence and ``edge_threshold`` of the edges'.

    Embeddings and logits always stay; a feature, neuron or error node left without an
    outgoing edge goes, and so does a feature or neuron left without an incoming one.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie between 0 and 1; got {value}")
    node_influence = influence(normalised(adjacency), weights)
    node_mask = node_influence >= find_threshold(node_influence, node_threshold)
    always = np.isin(kinds, ("embedding", "logit"))
    node_mask |= always
    pruned = np.where(node_mask[:, None] & node_mask[None, :], adjacency, 0.0)
    norm = normalised(pruned)
    edge_scores = norm * (influence(norm, weights) + weights)[:, None]
    edge_mask = edge_scores >= find_threshold(edge_scores, edge_threshold)
    middle = ~always
    computed = np.isin(kinds, ("feature", "neuron"))
    while True:
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        keep = node_mask.copy()
        keep[middle] &= edge_mask[:, middle].any(0)  # an outgoing edge
        keep[computed] &= edge_mask[computed].any(1)  # an incoming edge
        if (keep == node_mask).all():
            return node_mask, edge_mask
        node_mask = keep


def scores(adjacency: np.ndarray, weights: np.ndarray, kinds: np.ndarray) -> tuple[float, float]:
    """(replacement score, completeness score) of an unpruned graph (see ``backend.graph``)."""
    norm = normalised(adjacency)
    node_influence = influence(norm, weights)
    errors, embeddings = kinds == "error", kinds == "embedding"
    through_embeddings, through_errors = node_influence[embeddings].sum(), node_influence[errors].sum()
    replacement = through_embeddings / max(through_embeddings + through_errors, 1e-30)
    non_error = 1 - norm[:, errors].sum(1)
    output = node_influence + weights
    completeness = (non_error * output).sum() / max(output.sum(), 1e-30)
    return float(replacement), float(completeness)


def cumulative_shares(node_influence: np.ndarray) -> np.ndarray:
    """Each node's place in the influence ranking: the share of the total held by it and every stronger node."""
    order = np.argsort(-node_influence, kind="stable")
    total = max(float(node_influence.sum()), 1e-30)
    shares = np.empty_like(node_influence, dtype=np.float64)
    shares[order] = np.cumsum(node_influence[order]) / total
    return shares
