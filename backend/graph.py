"""Attribution graphs: which parts of the model caused this output, and by how much.

``attribute(lm, prompt, transcoders=tc)`` builds the *local replacement model* of one prompt
(as in circuit-tracer, Ameisen et al. 2025): every attention pattern and every norm's scale
held at its value on this prompt (``backend.replacement``), each MLP replaced by its
transcoder's active features plus an *error node* (what the features do not express, held
fixed), the transcoder's skip path kept linear. The residual stream is then a linear function
of the nodes: embeddings, features and errors. With ``transcoders=None`` the nodes are the
MLP's neurons themselves, each neuron's activation written ``a = g * u`` with ``u`` its up
projection's output and the gate ``g = a / u`` held (``act(u) / u`` for GELU MLPs, ``act(gate)``
for gated ones): exact, so the error nodes are zero unless ``max_nodes`` leaves neurons out
(an error node then holds what the left-out neurons of that layer and position write).

**Edges** are direct effects along linear paths: ``adjacency[i, j]`` is source ``j``'s activation
times the derivative of target ``i``'s pre-activation with respect to ``j``'s output, every
other node held. A target's pre-activation is a feature's encoder input (``x . W_enc[:, f] +
b_enc``), a neuron's ``g * u``, a logit node's logit minus the mean logit over the vocabulary.
Rows come from backward passes that inject the targets' vectors, many targets per batch.

**Node order** (documented, as the circuit-tracer Graph is): features (or neurons) by layer,
position and index; then error nodes by layer and position; then embeddings by position; then
the logit targets, most probable first.

**Pruning** (``Graph.prune``) follows circuit-tracer's definitions: influence on the targets is
the sum of the powers of the row-normalised |adjacency|, weighted by the targets'
probabilities; nodes are kept up to ``node_threshold`` of cumulative influence and edges up to
``edge_threshold`` (embeddings and logits always stay), then nodes left without incoming or
outgoing edges go. ``replacement_score`` is the share of the embeddings' influence among the
embeddings' and errors'; ``completeness_score`` the influence-weighted share of every node's
incoming edges that do not come from errors.

The replacement model is not the model: it is exact on this prompt only, attention is frozen
(the graph does not show why a head attended where it did), and a feature's effect through a
path is linearised around this prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from backend import hooks
from backend.buffers import release_free_memory
from backend.capture import DEFAULT_MAX_TOKENS, tokenize
from backend.errors import XrayError
from backend.features import Transcoders
from backend.graph_model import Kept, ReplacementPass, logit_vectors, replacement_pass
from backend.graph_prune import influence, normalised, prune_masks, scores
from backend.loading import LoadedModel
from backend.sites import Site
from backend.tokens import token_strings

KINDS = ("feature", "neuron", "error", "embedding", "logit")
MAX_TARGETS = 10
TARGET_PROBABILITY = 0.95


class GraphTooLarge(XrayError):
    """A prompt too long for a graph under the limit in force; names both numbers."""

    def __init__(self, n_tokens: int, limit: int) -> None:
        self.n_tokens, self.limit = n_tokens, limit
        super().__init__(f"An attribution graph of {n_tokens} tokens is over this page's limit of {limit} tokens "
                         "(a graph costs about a backward pass per node). Shorten the prompt.")


@dataclass(frozen=True)
class Node:
    """One node of a graph (see the module's text for the order)."""

    kind: str  # one of KINDS
    layer: int  # block (features, neurons, errors); -1 for embeddings; n_layers for logits
    position: int
    index: int  # feature or neuron id; the token id for embeddings and logits; -1 for errors
    activation: float  # a feature's or neuron's activation; a logit node's probability; a vector's norm otherwise
    influence: float = 0.0  # its influence on the targets in the full graph

    @property
    def node_id(self) -> str:
        """A unique id, as circuit-tracer spells ids where that cannot collide.

        "L_index_position" for features and neurons; "err_L_position" for errors (circuit-tracer's
        "0_L_position" collides with layer 0's features); "E_token_position" for embeddings;
        "{n_layers + 1}_token_position" for logits.
        """
        if self.kind in ("feature", "neuron"):
            return f"{self.layer}_{self.index}_{self.position}"
        if self.kind == "error":
            return f"err_{self.layer}_{self.position}"
        if self.kind == "embedding":
            return f"E_{self.index}_{self.position}"
        return f"{self.layer + 1}_{self.index}_{self.position}"


@dataclass(frozen=True, eq=False)
class Graph:
    """An attribution graph of one prompt, pruned; ``full`` keeps the unpruned one for ``prune``."""

    prompt: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    basis: str  # "transcoders" or "neurons"
    source: str  # the transcoder set, or "neurons"
    nodes: tuple[Node, ...]
    adjacency: np.ndarray  # (n_nodes, n_nodes) float32: [i, j] = direct effect of node j on node i
    target_ids: tuple[int, ...]
    target_tokens: tuple[str, ...]
    target_probs: tuple[float, ...]
    replacement_score: float
    completeness_score: float
    node_threshold: float
    edge_threshold: float
    full: Graph | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        """Memory held, the unpruned graph included."""
        return self.adjacency.nbytes + 200 * len(self.nodes) + (self.full.nbytes if self.full is not None else 0)

    def prune(self, node_threshold: float, edge_threshold: float) -> Graph:
        """The unpruned graph pruned again at other thresholds (both 1: everything is kept)."""
        base = self.full if self.full is not None else self
        return _pruned(base, node_threshold, edge_threshold)

    def index_of(self, kind: str, layer: int, position: int, index: int) -> int | None:
        """The row of one node, or None when the graph does not hold it."""
        return next((i for i, node in enumerate(self.nodes) if (node.kind, node.layer, node.position, node.index)
                     == (kind, layer, position, index)), None)

    def to_json(self, slug: str = "model-xray", scan: str = "", labels: dict | None = None) -> dict:
        """The graph as the JSON that Neuronpedia's and circuit-tracer's viewers read (``backend.graph_json``).

        ``labels`` maps (layer, feature) to a feature's label (the atlas's), written as its ``clerp``.
        """
        from backend.graph_json import graph_json

        return graph_json(self, slug=slug, scan=scan or self.source, labels=labels)


def _pruned(full: Graph, node_threshold: float, edge_threshold: float) -> Graph:
    kinds = np.array([n.kind for n in full.nodes])
    weights = _target_weights(full)
    node_mask, edge_mask = prune_masks(full.adjacency, weights, kinds, node_threshold, edge_threshold)
    keep = np.flatnonzero(node_mask)
    adjacency = np.where(edge_mask, full.adjacency, 0.0)[np.ix_(keep, keep)].astype(np.float32)
    return Graph(prompt=full.prompt, tokens=full.tokens, token_ids=full.token_ids, basis=full.basis,
                 source=full.source, nodes=tuple(full.nodes[i] for i in keep), adjacency=adjacency,
                 target_ids=full.target_ids, target_tokens=full.target_tokens, target_probs=full.target_probs,
                 replacement_score=full.replacement_score, completeness_score=full.completeness_score,
                 node_threshold=node_threshold, edge_threshold=edge_threshold, full=full)


def _target_weights(graph: Graph) -> np.ndarray:
    weights = np.zeros(len(graph.nodes))
    logits = [i for i, n in enumerate(graph.nodes) if n.kind == "logit"]
    weights[logits] = [graph.nodes[i].activation for i in logits]
    return weights


# --- building the graph ---------------------------------------------------------------------------

ROW_TOKEN_BUDGET_BYTES = 2**29  # what one batched backward's temporaries may take, about


def _rows_per_batch(lm: LoadedModel, n: int, batch_size: int | None) -> int:
    """Targets per backward pass: as many as the batched backward's memory allows, at most 256."""
    if batch_size:
        return batch_size
    per_row_token = 4 * lm.info.n_layers * (6 * lm.info.d_model + 3 * lm.info.d_mlp)
    return int(max(1, min(256, ROW_TOKEN_BUDGET_BYTES // (per_row_token * n))))


def _targets(lm: LoadedModel, logits: torch.Tensor, target: int | Sequence[int] | None) -> list[int]:
    """The logits to explain: those given, else the top ones holding TARGET_PROBABILITY (at most MAX_TARGETS)."""
    vocab = logits.shape[-1]
    if target is not None:
        ids = [int(target)] if isinstance(target, (int, np.integer)) else [int(t) for t in target]
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad or not ids:
            raise GraphError(f"Target token ids must lie in 0 to {vocab - 1}; got {bad or 'none'}.")
        return list(dict.fromkeys(ids))
    probs = logits.softmax(-1)
    order = probs.argsort(descending=True)[:MAX_TARGETS]
    cumulative = probs[order].cumsum(0)
    count = int((cumulative < TARGET_PROBABILITY).sum()) + 1
    return order[:min(count, MAX_TARGETS)].tolist()


class GraphError(XrayError):
    """A graph that cannot be made for this model, dictionary or target; the message says why."""


def _check(lm: LoadedModel, tc: Transcoders | None) -> None:
    if tc is None:
        if any(up is None for up in lm.anatomy.mlp_up):
            raise GraphError("This family's MLP up projection was not found, so its neurons cannot be graph nodes.")
        return
    if tc.n_layers != lm.info.n_layers:
        raise GraphError(f"The transcoders cover {tc.n_layers} layers; the model has {lm.info.n_layers}.")
    for layer, t in enumerate(tc.layers):
        if (t.input_site, t.output_site) != (Site("mlp_in", layer), Site("mlp_out", layer)) or t.input_norm != "none":
            raise GraphError(f"Transcoder {layer} reads {t.input_site} and writes {t.output_site}; a graph needs "
                             f"transcoders from mlp_in.{layer} to mlp_out.{layer} that do not normalise their input.")


def _select(lm: LoadedModel, ids: list[int], tc: Transcoders | None, targets: list[int], probs: torch.Tensor,
            max_nodes: int, should_stop) -> Kept:
    """The ``max_nodes`` active nodes of largest estimated influence.

    The estimate is each node's *total* effect on the targets' logits (weighted by their
    probabilities) through the replacement model, from one backward pass: |value x gradient|.
    """
    state, found = replacement_pass(lm, ids, 1, tc, None, should_stop, through_nodes=True)
    weights = probs[:, None] * logit_vectors(lm, targets)  # (t, d)
    state.unembed_in.backward(weights.sum(0)[None].to(state.unembed_in.dtype))
    scores = [(v.grad[0] * v[0]).abs().detach() * r for v, r in zip(state.values, found.real, strict=True)]
    flat = torch.cat([s.reshape(-1) for s in scores])
    cut = flat.topk(max_nodes).values[-1]
    kept = Kept(index=[], real=[])
    for score, index in zip(scores, found.index, strict=True):
        chosen = score >= cut
        m = max(1, int(chosen.sum(-1).max()))
        order = torch.argsort(chosen.float() * (1 + score), dim=-1, descending=True)[:, :m]
        kept.index.append(index.gather(1, order))
        kept.real.append(chosen.gather(1, order))
    return kept


def _node_table(lm: LoadedModel, kept: Kept, state: ReplacementPass, basis: str, n: int,
                targets: list[int], probs: torch.Tensor, ids: list[int]) -> tuple[list[Node], dict]:
    """The nodes in the documented order, and where each kind's rows start."""
    nodes: list[Node] = []
    slots = {}  # (layer, position, slot) -> row
    for layer, (index, real) in enumerate(zip(kept.index, kept.real, strict=True)):
        values = state.values[layer][0].detach()
        for position, slot in torch.nonzero(real).tolist():
            slots[(layer, position, slot)] = len(nodes)
            nodes.append(Node(basis, layer, position, int(index[position, slot]), float(values[position, slot])))
    order = sorted(range(len(nodes)), key=lambda i: (nodes[i].layer, nodes[i].position, nodes[i].index))
    remap = {old: new for new, old in enumerate(order)}
    nodes = [nodes[i] for i in order]
    slots = {key: remap[row] for key, row in slots.items()}
    error_start = len(nodes)
    for layer in range(lm.info.n_layers):
        norms = state.errors[layer][0].detach().norm(dim=-1)
        nodes += [Node("error", layer, p, -1, float(norms[p])) for p in range(n)]
    embed_start = len(nodes)
    norms = state.embed[0].detach().norm(dim=-1)
    nodes += [Node("embedding", -1, p, ids[p], float(norms[p])) for p in range(n)]
    logit_start = len(nodes)
    nodes += [Node("logit", lm.info.n_layers, n - 1, t, float(probs[i])) for i, t in enumerate(targets)]
    return nodes, {"slots": slots, "errors": error_start, "embeddings": embed_start, "logits": logit_start}


def _rows(lm: LoadedModel, ids: list[int], tc: Transcoders | None, kept: Kept, targets: list[int],
          nodes: list[Node], where: dict, batch: int, should_stop) -> np.ndarray:
    """Every target row of the adjacency (logits and kept nodes).

    One forward of a single row, then one backward per batch of targets, the batch vectorised
    over the injected gradients (``is_grads_batched``): the forward's activations are kept once,
    not once per target.
    """
    n, n_layers = len(ids), lm.info.n_layers
    adjacency = np.zeros((len(nodes), len(nodes)), np.float32)
    columns = _columns(where["slots"], n_layers)
    rows = [i for i, node in enumerate(nodes) if node.kind in ("feature", "neuron", "logit")]
    logit_vecs = logit_vectors(lm, targets)
    state, _ = replacement_pass(lm, ids, 1, tc, kept, should_stop)
    leaves = [state.embed, *state.values, *state.errors]
    for start in range(0, len(rows), batch):
        if should_stop is not None and should_stop():
            from backend.errors import Cancelled

            raise Cancelled()
        chunk = rows[start:start + batch]
        outputs, grads = zip(*_injections(state, tc, chunk, nodes, logit_vecs, targets), strict=True)
        found = torch.autograd.grad(list(outputs), leaves, grad_outputs=list(grads), allow_unused=True,
                                    retain_graph=True, is_grads_batched=True)
        g_embed, g_values, g_errors = found[0], found[1:1 + n_layers], found[1 + n_layers:]
        if g_embed is not None:
            embeds = where["embeddings"]
            adjacency[chunk, embeds:embeds + n] = (g_embed[:, 0] * state.embed[0].detach()).sum(-1).numpy()
        for layer in range(n_layers):
            if g_errors[layer] is not None:
                base = where["errors"] + layer * n
                edges = (g_errors[layer][:, 0] * state.errors[layer][0].detach()).sum(-1)
                adjacency[chunk, base:base + n] = edges.numpy()
            if g_values[layer] is not None and len(columns[layer][0]):
                positions, slots, cols = columns[layer]
                edges = (g_values[layer][:, 0] * state.values[layer][0].detach())[:, positions, slots]
                adjacency[np.ix_(chunk, cols)] = edges.numpy()
    return adjacency


def _columns(slots: dict, n_layers: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer: the (position, slot) of each of its nodes in the pass's value tensors, and the node's column."""
    out = []
    for layer in range(n_layers):
        mine = [(p, s, col) for (l2, p, s), col in slots.items() if l2 == layer]
        positions, kept, cols = (np.array(v, dtype=np.int64) for v in zip(*mine, strict=True)) if mine else \
            (np.zeros(0, np.int64),) * 3
        out.append((positions, kept, cols))
    return out


def _injections(state: ReplacementPass, tc: Transcoders | None, chunk: list[int], nodes: list[Node],
                logit_vecs: torch.Tensor, targets: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tensor, its injected gradients) pairs: gradient r of the batch carries target ``chunk[r]``'s vector."""
    b = len(chunk)
    final = torch.zeros(b, *state.unembed_in.shape)
    at_inputs: dict[int, torch.Tensor] = {}
    for r, row in enumerate(chunk):
        node = nodes[row]
        if node.kind == "logit":
            final[r, 0] = logit_vecs[targets.index(node.index)]
            continue
        target = state.inputs[node.layer] if tc is not None else state.gates[node.layer]
        grad = at_inputs.setdefault(node.layer, torch.zeros(b, *target.shape, dtype=target.dtype))
        if tc is not None:  # a feature's pre-activation: its encoder column at its MLP input
            grad[r, 0, node.position] = tc.layers[node.layer].W_enc[:, node.index].to(grad.dtype)
        else:  # a neuron's g * u: its held gate at its up projection's output
            grad[r, 0, node.position, node.index] = state.inputs[node.layer][node.position, node.index]
    pairs = [(state.unembed_in, final.to(state.unembed_in.dtype))] if final.any() else []
    for layer, grad in at_inputs.items():
        pairs.append((state.inputs[layer] if tc is not None else state.gates[layer], grad))
    return pairs


def attribute(lm: LoadedModel, prompt: str, *, transcoders: Transcoders | None = None,
              target: int | Sequence[int] | None = None, max_nodes: int | None = 4096, node_threshold: float = 0.8,
              edge_threshold: float = 0.98, max_tokens: int = 64, batch_size: int | None = None,
              should_stop: Callable[[], bool] | None = None) -> Graph:
    """The attribution graph of ``prompt``'s next token (see the module's text), pruned at the thresholds given.

    ``transcoders`` (``backend.features.load_transcoders``) gives feature nodes; None, the MLP
    neurons. ``target``: a token id or ids to explain; None, the top logits holding 95% of the
    probability (at most 10). ``max_nodes`` caps the feature or neuron nodes by their estimated
    influence (None: every active one). Raises ``GraphTooLarge`` past ``max_tokens`` tokens,
    ``GraphError`` for a model or dictionary a graph cannot read, and ``Cancelled`` when
    ``should_stop`` says nobody waits any more.
    """
    ids = tokenize(lm, prompt, DEFAULT_MAX_TOKENS)
    if len(ids) > max_tokens:
        raise GraphTooLarge(len(ids), max_tokens)
    _check(lm, transcoders)
    basis = "feature" if transcoders is not None else "neuron"
    with hooks.exclusive(lm, grad=True, attention=hooks.FROZEN_ATTENTION):
        with torch.no_grad():  # the guesses and every active node: no graph to keep
            state, kept = replacement_pass(lm, ids, 1, transcoders, None, should_stop)
        logits = state.logits[0]
        targets = _targets(lm, logits, target)
        probs = logits.softmax(-1)[targets]
        if max_nodes is not None and sum(int(r.sum()) for r in kept.real) > max_nodes:
            kept = _select(lm, ids, transcoders, targets, probs, max_nodes, should_stop)
            with torch.no_grad():
                state, kept = replacement_pass(lm, ids, 1, transcoders, kept, should_stop)
        nodes, where = _node_table(lm, kept, state, basis, len(ids), targets, probs, ids)
        del state
        adjacency = _rows(lm, ids, transcoders, kept, targets, nodes, where,
                          _rows_per_batch(lm, len(ids), batch_size), should_stop)
    release_free_memory()
    kinds = np.array([node.kind for node in nodes])
    weights = np.zeros(len(nodes))
    weights[where["logits"]:] = probs.numpy()
    node_influence = influence(normalised(adjacency), weights)
    nodes = [Node(n.kind, n.layer, n.position, n.index, n.activation, float(v))
             for n, v in zip(nodes, node_influence, strict=True)]
    replacement, completeness = scores(adjacency, weights, kinds)
    full = Graph(prompt=prompt, tokens=tuple(token_strings(lm.tokenizer, ids)), token_ids=tuple(ids),
                 basis="transcoders" if transcoders is not None else "neurons",
                 source=transcoders.source if transcoders is not None else "neurons", nodes=tuple(nodes),
                 adjacency=adjacency, target_ids=tuple(targets), target_tokens=tuple(token_strings(lm.tokenizer,
                                                                                                   targets)),
                 target_probs=tuple(float(p) for p in probs), replacement_score=replacement,
                 completeness_score=completeness, node_threshold=1.0, edge_threshold=1.0)
    return full.prune(node_threshold, edge_threshold)


__all__ = ["KINDS", "Graph", "GraphError", "GraphTooLarge", "Node", "attribute"]
