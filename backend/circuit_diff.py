"""The circuit diff: is A's circuit for a prompt still in B, and what in B pushes A's answer down.

One prompt, two models, one dictionary.

``circuit_diff(lm_a, lm_b, prompt, transcoders=tc)`` builds the attribution graphs
(``backend.graph``) of both models on the prompt with the same dictionary (A's transcoders,
or with ``transcoders=None`` the MLP neurons), each explaining two targets: A's answer ``a``
and B's answer ``b``. Then:

- **Nodes matched** by (kind, layer, position, index) across the two models. A feature's
  activation in each model comes from that model's own MLP input encoded by A's dictionary,
  so a node is the same feature in both. ``status``: "shared" (B's activation within a factor
  of two of A's), "weakened", "strengthened", "new" (off in A, on in B) or "gone".
- **A's path kept**: A's features (or neurons) with the most influence on ``a`` in A's graph
  (the smallest set holding ``PATH_SHARE`` of it, at most ``PATH_NODES``), and their
  influence-weighted activation in B over that in A. 1: B still computes what A computes
  for its answer; 0: none of it is left.
- **Errors per layer**: the fraction of each MLP's output variance on this prompt that A's
  dictionary cannot express (FVU), in A and in B. Where B's is much larger, B computes
  something A's features do not hold: a fine-tune's new computation shows up there.
- **Suppressors**: B's nodes ranked by their direct effect on ``logit(a) - logit(b)`` (the
  difference of the graph's two logit rows, the mean logit cancelling), most negative first;
  heads too, by direct logit attribution at the last position (a head's output read through
  B's final norm, its scale held, and unembedding). The two decompositions overlap: a head
  carries what earlier nodes wrote. The first ``check`` suppressors are then switched off in
  the real B (a feature, a neuron or an error at its position, a head everywhere) and
  ``restored`` is the share of A's margin that comes back, ``(m_off - m_b) / (m_a - m_b)``
  with ``m = logit(a) - logit(b)``, the patching sweep's metric.

When both models give the same answer there is nothing to suppress: ``suppressors`` is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from backend import hooks
from backend.capture import DEFAULT_MAX_TOKENS, Capture, capture, tokenize
from backend.edits import Edit, HeadAblation, NeuronAblation
from backend.features import ErrorAblation, FeatureAblation, Transcoders
from backend.graph import Graph, attribute
from backend.graph_model import unembed_input
from backend.graph_prune import influence, normalised
from backend.loading import LoadedModel
from backend.pairs import check_same_shape, check_tokenizers
from backend.sites import Site
from backend.tokens import token_strings

PATH_SHARE = 0.8
PATH_NODES = 20
CHANGE = 2.0  # a factor of two either way: weakened or strengthened
TOP_SUPPRESSORS = 10
CHECKED = 3


@dataclass(frozen=True)
class NodeChange:
    """One feature (or neuron) at one position, in both models."""

    kind: str  # "feature" or "neuron"
    layer: int
    position: int
    index: int
    activation_a: float
    activation_b: float
    influence_a: float  # on both targets, in A's graph (0 when the graph does not hold it)
    influence_b: float
    status: str  # "shared", "weakened", "strengthened", "new", "gone"


@dataclass(frozen=True)
class LayerError:
    """What A's dictionary cannot express of one layer's MLP output on this prompt, in each model."""

    layer: int
    fvu_a: float
    fvu_b: float


@dataclass(frozen=True)
class Suppressor:
    """A part of B that pushes A's answer down relative to B's, and what switching it off in B did."""

    kind: str  # "feature", "neuron", "error" or "head"
    layer: int
    position: int  # the last position for heads (their direct effect is read there; they are switched off everywhere)
    index: int  # feature, neuron or head; -1 for errors
    effect: float  # direct effect on logit(a) - logit(b) in B: negative pushes a down
    restored: float | None = None  # share of A's margin back with it off in the real B (None: not checked)
    answer_off: str | None = None  # B's top guess with it off

    def edit(self, source: str | None) -> Edit:
        """The edit that switches this part off in the real model (``source``: the transcoder set's name)."""
        if self.kind == "feature":
            return FeatureAblation(self.layer, self.index, (self.position,), source)
        if self.kind == "error":
            return ErrorAblation(self.layer, (self.position,), source)
        if self.kind == "neuron":
            return NeuronAblation(self.layer, self.index, 0.0, (self.position,))
        return HeadAblation(self.layer, self.index)


@dataclass(frozen=True, eq=False)
class CircuitDiff:
    """Two graphs of one prompt with one dictionary, matched; see the module's text."""

    prompt: str
    tokens: tuple[str, ...]
    basis: str  # "transcoders" or "neurons"
    source: str | None  # the transcoder set's name (None: neurons)
    answer_a: tuple[int, str]
    answer_b: tuple[int, str]
    margin_a: float  # logit(a) - logit(b) in A
    margin_b: float  # ... in B
    graph_a: Graph  # unpruned
    graph_b: Graph
    nodes: tuple[NodeChange, ...]
    path: tuple[NodeChange, ...]  # A's top nodes for its answer
    path_kept: float
    errors: tuple[LayerError, ...]
    suppressors: tuple[Suppressor, ...]

    @property
    def same_answer(self) -> bool:
        """Whether both models give the same answer (then nothing is suppressed)."""
        return self.answer_a[0] == self.answer_b[0]

    def counts(self) -> dict[str, int]:
        """How many nodes have each status."""
        out = dict.fromkeys(("shared", "weakened", "strengthened", "new", "gone"), 0)
        for node in self.nodes:
            out[node.status] += 1
        return out

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return self.graph_a.nbytes + self.graph_b.nbytes + 120 * len(self.nodes) + 4000


def status(activation_a: float, activation_b: float) -> str:
    """A node's change between the two models (activations compared by size)."""
    a, b = abs(activation_a), abs(activation_b)
    if a == 0:
        return "new" if b > 0 else "shared"
    if b == 0:
        return "gone"
    return "weakened" if b * CHANGE < a else "strengthened" if b > a * CHANGE else "shared"


def _activation(cap: Capture, kind: str, layer: int, position: int, index: int) -> float:
    if kind == "neuron":
        return float(cap.neurons[layer, position, index])
    ids, values = cap.features.layers[layer].row(position)
    hit = np.flatnonzero(ids == index)
    return float(values[hit[0]]) if hit.size else 0.0


def _unit_nodes(graph: Graph) -> dict[tuple, int]:
    return {(n.kind, n.layer, n.position, n.index): i for i, n in enumerate(graph.nodes)
            if n.kind in ("feature", "neuron")}


def _match(graph_a: Graph, graph_b: Graph, cap_a: Capture, cap_b: Capture, basis: str) -> list[NodeChange]:
    """Every feature active in either model at any position (neurons: those either graph holds)."""
    rows_a, rows_b = _unit_nodes(graph_a), _unit_nodes(graph_b)
    keys = set(rows_a) | set(rows_b)
    if basis == "transcoders":
        for cap in (cap_a, cap_b):
            for layer, acts in enumerate(cap.features.layers):
                for position in range(acts.n_tokens):
                    keys |= {("feature", layer, position, int(f)) for f in acts.row(position)[0]}
    out = []
    for key in sorted(keys, key=lambda k: k[1:]):
        act_a, act_b = _activation(cap_a, *key), _activation(cap_b, *key)
        inf_a = graph_a.nodes[rows_a[key]].influence if key in rows_a else 0.0
        inf_b = graph_b.nodes[rows_b[key]].influence if key in rows_b else 0.0
        out.append(NodeChange(*key, act_a, act_b, inf_a, inf_b, status(act_a, act_b)))
    return out


def _influence_on(graph: Graph, token_id: int) -> np.ndarray:
    """Every node's influence on one target's logit alone."""
    weights = np.zeros(len(graph.nodes))
    weights[graph.index_of("logit", graph.nodes[-1].layer, len(graph.tokens) - 1, token_id)] = 1.0
    return influence(normalised(graph.adjacency), weights)


def _path(graph_a: Graph, nodes: list[NodeChange], answer: int) -> tuple[list[NodeChange], float]:
    """A's top nodes for its answer, and the share of their influence-weighted activation left in B."""
    on_answer = _influence_on(graph_a, answer)
    units = [(float(on_answer[i]), key) for key, i in _unit_nodes(graph_a).items() if on_answer[i] > 0]
    units.sort(key=lambda item: -item[0])
    total = sum(weight for weight, _ in units)
    chosen, held = [], 0.0
    for weight, key in units[:PATH_NODES]:
        chosen.append((weight, key))
        held += weight
        if held >= PATH_SHARE * total:
            break
    by_key = {(n.kind, n.layer, n.position, n.index): n for n in nodes}
    path = [by_key[key] for _, key in chosen]
    in_a = sum(w * abs(by_key[key].activation_a) for w, key in chosen)
    in_b = sum(w * abs(by_key[key].activation_b) for w, key in chosen)
    return path, (in_b / in_a if in_a > 0 else float("nan"))


def layer_errors(lm: LoadedModel, tc: Transcoders, ids: list[int]) -> list[float]:
    """Per layer, the FVU of ``lm``'s MLP outputs on ``ids`` by ``tc`` (a beginning-of-text token left out)."""
    store: dict[Site, torch.Tensor] = {}
    n_layers = lm.info.n_layers
    reads = [hooks.read(site, store) for layer in range(n_layers)
             for site in (Site("mlp_in", layer), Site("mlp_out", layer))]
    with torch.inference_mode(), hooks.exclusive(lm):
        hooks.forward(lm, torch.tensor([ids], device=lm.input_device), reads, stop_after=n_layers - 1)
    skip = 1 if lm.tokenizer.bos_token_id is not None and ids[0] == lm.tokenizer.bos_token_id and len(ids) > 1 else 0
    out = []
    for layer, transcoder in enumerate(tc.layers):
        x = store[Site("mlp_in", layer)][0, skip:].float().cpu()
        y = store[Site("mlp_out", layer)][0, skip:].float().cpu()
        with torch.no_grad():
            recon = transcoder.decode_tensor(transcoder.encode_tensor(x), x)
        spread = float(((y - y.mean(0)) ** 2).sum())
        out.append(float(((y - recon) ** 2).sum()) / spread if spread > 0 else 0.0)
    return out


def head_effects(lm: LoadedModel, ids: list[int], direction_ids: tuple[int, int]) -> np.ndarray:
    """(n_layers, n_heads) each head's direct effect on logit(a) - logit(b) at the last position.

    A head's output is its slice of the attention output projection's input through that
    projection (its bias left out); it is read through the final norm with the norm's scale
    at this prompt held, as the graph's logit rows are.
    """
    anatomy, info = lm.anatomy, lm.info
    store: dict[Site, torch.Tensor] = {}
    reads = [hooks.read(Site("heads", layer), store) for layer in range(info.n_layers)]
    reads.append(hooks.read(Site("resid", info.n_layers), store))
    with torch.no_grad(), hooks.exclusive(lm):
        hooks.forward(lm, torch.tensor([ids], device=lm.input_device), reads, stop_after=info.n_layers - 1)
    last = store[Site("resid", info.n_layers)][:, -1].float().clone().requires_grad_(True)
    with torch.enable_grad():
        unembed_in = unembed_input(lm, last)
        weight = anatomy.unembed.weight.float()
        logit_diff = unembed_in[0].to(weight.device) @ (weight[direction_ids[0]] - weight[direction_ids[1]])
        (gradient,) = torch.autograd.grad(logit_diff, last)
    out = np.zeros((info.n_layers, info.n_heads), np.float32)
    with torch.no_grad():
        for layer in range(info.n_layers):
            module = anatomy.attn_out[layer]
            if module is None or Site("heads", layer) not in store:
                continue
            z = store[Site("heads", layer)][0, -1]
            width = z.shape[-1] // info.n_heads
            masked = torch.zeros(info.n_heads + 1, z.shape[-1], dtype=z.dtype, device=z.device)
            for head in range(info.n_heads):
                masked[head, head * width:(head + 1) * width] = z[head * width:(head + 1) * width]
            written = module(masked[:, None])[:, 0].float()
            vectors = written[:-1] - written[-1]  # the bias (the all-zero row) left out
            out[layer] = (vectors.cpu() @ gradient[0].cpu()).numpy()
    return out


def _suppressors(graph_b: Graph, heads: np.ndarray, a: int, b: int) -> list[Suppressor]:
    n = len(graph_b.tokens)
    last_layer = graph_b.nodes[-1].layer
    row_a = graph_b.index_of("logit", last_layer, n - 1, a)
    row_b = graph_b.index_of("logit", last_layer, n - 1, b)
    effect = graph_b.adjacency[row_a] - graph_b.adjacency[row_b]
    found = [Suppressor(node.kind, node.layer, node.position, node.index, float(effect[i]))
             for i, node in enumerate(graph_b.nodes) if node.kind in ("feature", "neuron", "error") and effect[i] < 0]
    found += [Suppressor("head", int(layer), n - 1, int(head), float(heads[layer, head]))
              for layer, head in zip(*np.nonzero(heads < 0), strict=True)]
    found.sort(key=lambda s: s.effect)
    return found[:TOP_SUPPRESSORS]


def _margin(logits: np.ndarray, a: int, b: int) -> float:
    return float(logits[a] - logits[b])


def circuit_diff(lm_a: LoadedModel, lm_b: LoadedModel, prompt: str, *, transcoders: Transcoders | None = None,
                 max_nodes: int | None = 4096, max_tokens: int = 64, check: int = CHECKED,
                 should_stop: Callable[[], bool] | None = None) -> CircuitDiff:
    """The circuit diff of ``prompt`` (see the module's text); ``check`` suppressors are tested in the real B.

    Needs two models of the same shape that read text alike; raises ``GraphTooLarge`` past
    ``max_tokens`` tokens and ``GraphError`` for a dictionary a graph cannot read.
    """
    check_tokenizers(lm_a, lm_b)
    check_same_shape(lm_a, lm_b, "A circuit diff (it reads both models with one dictionary)")
    ids = tokenize(lm_a, prompt, DEFAULT_MAX_TOKENS)
    basis = "transcoders" if transcoders is not None else "neurons"
    cap_a = capture(lm_a, prompt, features=transcoders, should_stop=should_stop)
    cap_b = capture(lm_b, prompt, features=transcoders, should_stop=should_stop)
    a, b = int(cap_a.logits[-1].argmax()), int(cap_b.logits[-1].argmax())
    targets = [a] if a == b else [a, b]
    graphs = [attribute(lm, prompt, transcoders=transcoders, target=targets, max_nodes=max_nodes, node_threshold=1.0,
                        edge_threshold=1.0, max_tokens=max_tokens, should_stop=should_stop) for lm in (lm_a, lm_b)]
    graph_a, graph_b = (g.full if g.full is not None else g for g in graphs)
    nodes = _match(graph_a, graph_b, cap_a, cap_b, basis)
    path, kept = _path(graph_a, nodes, a)
    if transcoders is not None:
        fvu = zip(layer_errors(lm_a, transcoders, ids), layer_errors(lm_b, transcoders, ids), strict=True)
        errors = tuple(LayerError(layer, fa, fb) for layer, (fa, fb) in enumerate(fvu))
    else:
        errors = ()
    margin_a, margin_b = _margin(cap_a.logits[-1], a, b), _margin(cap_b.logits[-1], a, b)
    suppressors: list[Suppressor] = []
    if a != b:
        suppressors = _suppressors(graph_b, head_effects(lm_b, ids, (a, b)), a, b)
        source = transcoders.source if transcoders is not None else None
        for k, found in enumerate(suppressors[:check]):
            logits = capture(lm_b, prompt, edits=(found.edit(source),), should_stop=should_stop).logits[-1]
            restored = (_margin(logits, a, b) - margin_b) / (margin_a - margin_b)
            top = token_strings(lm_b.tokenizer, [int(logits.argmax())])[0]
            suppressors[k] = Suppressor(found.kind, found.layer, found.position, found.index, found.effect,
                                        float(restored), top)
    words = token_strings(lm_a.tokenizer, [a, b])
    return CircuitDiff(prompt=prompt, tokens=tuple(token_strings(lm_a.tokenizer, ids)), basis=basis,
                       source=transcoders.source if transcoders is not None else None, answer_a=(a, words[0]),
                       answer_b=(b, words[1]), margin_a=margin_a, margin_b=margin_b, graph_a=graph_a, graph_b=graph_b,
                       nodes=tuple(nodes), path=tuple(path), path_kept=kept, errors=errors,
                       suppressors=tuple(suppressors))



def pushed_down_by(lm: LoadedModel, prompt: str, token_id: int, said_id: int, *,
                   transcoders: Transcoders | None = None, check: int = 1, max_tokens: int = 64,
                   should_stop: Callable[[], bool] | None = None) -> tuple[Suppressor, ...]:
    """One model's parts that push ``token_id`` down relative to what it says (``said_id``) at the last position.

    The suppressors of a graph with the two targets, as in ``circuit_diff``; the first
    ``check`` are switched off in the real model, and ``restored`` is the share of the gap
    closed, ``(m_off - m) / (0 - m)`` with ``m = logit(token) - logit(said)`` (1: a tie).
    """
    graph = attribute(lm, prompt, transcoders=transcoders, target=[token_id, said_id], node_threshold=1.0,
                      edge_threshold=1.0, max_tokens=max_tokens, should_stop=should_stop)
    graph = graph.full if graph.full is not None else graph
    ids = list(graph.token_ids)
    found = _suppressors(graph, head_effects(lm, ids, (token_id, said_id)), token_id, said_id)
    margin = _margin(capture(lm, prompt, should_stop=should_stop).logits[-1], token_id, said_id)
    source = transcoders.source if transcoders is not None else None
    for k, part in enumerate(found[:check]):
        logits = capture(lm, prompt, edits=(part.edit(source),), should_stop=should_stop).logits[-1]
        closed = (_margin(logits, token_id, said_id) - margin) / -margin if margin < 0 else float("nan")
        found[k] = Suppressor(part.kind, part.layer, part.position, part.index, part.effect, float(closed),
                              token_strings(lm.tokenizer, [int(logits.argmax())])[0])
    return tuple(found)

__all__ = ["CircuitDiff", "LayerError", "NodeChange", "Suppressor", "circuit_diff", "head_effects", "layer_errors",
           "pushed_down_by", "status"]
