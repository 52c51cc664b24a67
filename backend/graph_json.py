"""An attribution graph as the JSON that Neuronpedia's and circuit-tracer's graph viewers read.

The schema, written down (circuit-tracer's ``frontend/graph_models.py`` defines it; its issues
#77 and #78 ask for exactly this):

- ``metadata``: ``slug``, ``scan`` (which dictionaries), ``transcoder_list`` (empty),
  ``prompt_tokens`` (each token's text), ``prompt``, ``node_threshold``, ``schema_version`` 1,
  and ours: ``info`` (``basis``, ``replacement_score``, ``completeness_score``,
  ``edge_threshold``, ``generator``).
- ``qParams``: the viewer's state: ``pinnedIds``, ``supernodes``, ``linkType`` "both",
  ``clickedId``, ``sg_pos``.
- ``nodes``: one per kept node: ``node_id`` (``backend.graph.Node.node_id``; unique), ``jsNodeId``,
  ``feature`` (a feature's id as circuit-tracer's Cantor pairing of layer and index; the
  position for embeddings; the token id for logits; -1 for errors), ``layer`` (a string: the
  block, "E" for embeddings, n_layers + 1 for logits), ``ctx_idx`` (the position),
  ``feature_type`` ("cross layer transcoder" for features, as the viewers expect; "mlp neuron"
  for neurons; "mlp reconstruction error"; "embedding"; "logit"), ``token_prob`` and
  ``is_target_logit`` (logits), ``clerp`` (a label: the atlas's for features,
  ``Output "token" (p=0.123)`` for logits, which the viewer parses), ``influence`` (the node's
  cumulative share of influence, which the viewer's pruning slider compares), ``activation``.
- ``links``: ``source`` and ``target`` node ids, ``weight``: the direct effect of the source on
  the target (``adjacency[target, source]``), nonzero kept edges only.
"""

from __future__ import annotations

import numpy as np

from backend.graph_prune import cumulative_shares

FEATURE_TYPES = {"feature": "cross layer transcoder", "neuron": "mlp neuron", "error": "mlp reconstruction error",
                 "embedding": "embedding", "logit": "logit"}


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def graph_json(graph, *, slug: str, scan: str, labels: dict | None = None) -> dict:
    """The viewers' JSON of a (pruned) ``backend.graph.Graph``; ``labels`` maps (layer, index) to a feature label."""
    full = graph.full if graph.full is not None else graph
    shares = dict(zip((n.node_id for n in full.nodes), cumulative_shares(np.array([n.influence for n in full.nodes])),
                      strict=True))
    n_layers = max([n.layer for n in graph.nodes if n.kind == "logit"], default=0)
    nodes = []
    for node in graph.nodes:
        item = {"node_id": node.node_id, "jsNodeId": node.node_id, "feature_type": FEATURE_TYPES[node.kind],
                "ctx_idx": node.position, "run_idx": 0, "reverse_ctx_idx": 0,
                "influence": float(shares.get(node.node_id, 1.0)), "activation": float(node.activation),
                "token_prob": 0.0, "is_target_logit": False, "clerp": ""}
        if node.kind in ("feature", "neuron"):
            item |= {"feature": _cantor(node.layer, node.index), "layer": str(node.layer),
                     "clerp": (labels or {}).get((node.layer, node.index), f"{node.kind} {node.index}")}
        elif node.kind == "error":
            item |= {"feature": -1, "layer": str(node.layer)}
        elif node.kind == "embedding":
            item |= {"feature": node.position, "layer": "E"}
        else:
            token = graph.target_tokens[graph.target_ids.index(node.index)]
            item |= {"feature": node.index, "layer": str(n_layers + 1), "token_prob": float(node.activation),
                     "is_target_logit": node.index == graph.target_ids[0],
                     "clerp": f'Output "{token}" (p={node.activation:.3f})'}
        nodes.append(item)
    targets, sources = np.nonzero(graph.adjacency)
    links = [{"source": graph.nodes[j].node_id, "target": graph.nodes[i].node_id,
              "weight": float(graph.adjacency[i, j])} for i, j in zip(targets.tolist(), sources.tolist(), strict=True)]
    return {
        "metadata": {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": list(graph.tokens),
                     "prompt": graph.prompt, "node_threshold": graph.node_threshold, "schema_version": 1,
                     "info": {"basis": graph.basis, "replacement_score": graph.replacement_score,
                              "completeness_score": graph.completeness_score, "edge_threshold": graph.edge_threshold,
                              "generator": "Model X-ray"}},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes, "links": links}
