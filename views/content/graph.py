"""The graph view's content: which parts of the model caused this output, as a drawn attribution graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.graph import Graph, Node
from views import figures
from views.content import Chart, Section, Table, Text, present, text
from views.display import quoted, safe

TITLE = "Graph"
EXPLAIN = """
An **attribution graph** answers "why did the model say this?" for one prompt. Its nodes are
the words of the prompt (bottom row), the **features** (or neurons) that fired in each layer,
and the model's top guesses (top row). An edge says how much one node directly pushed a
later one: **orange** pushes up, **blue** pushes down, thicker is stronger. Bigger nodes
matter more for the answer (their *influence*).

To make this possible the model is replaced, for this prompt only, by a simpler stand-in:
attention is frozen as it was, and each MLP is replaced by its transcoder's features plus an
**error** node (grey diamonds) for what the features do not capture. Click a node for its
card; "Switch it off" runs the real model without it, to check the graph's story.
"""
CAVEAT = ("The graph describes a stand-in for the model, exact on this prompt only; attention is frozen, so it "
          "does not show why a head attended where it did. A strong path is a hypothesis: switch its nodes off to "
          "test it in the real model.")
COLOURS = {"feature": "#e69f00", "neuron": "#cc79a7", "error": "#999999", "embedding": "#56b4e9", "logit": "#0072b2"}
SYMBOLS = {"feature": "circle", "neuron": "circle", "error": "diamond", "embedding": "square", "logit": "square"}
EDGES_DRAWN = 300  # the strongest edges drawn; the JSON holds every kept edge


def node_label(node: Node, graph: Graph, labels: dict) -> str:
    """A node in the page's words: a feature's atlas label, a token's text, a guess."""
    if node.kind == "embedding":
        return f"the word {quoted(graph.tokens[node.position])} (position {node.position})"
    if node.kind == "logit":
        return f"the guess {quoted(graph.target_tokens[graph.target_ids.index(node.index)])} ({node.activation:.0%})"
    if node.kind == "error":
        return f"what layer {node.layer + 1}'s features miss at {quoted(graph.tokens[node.position])}"
    name = labels.get((node.layer, node.index), "")
    what = "feature" if node.kind == "feature" else "neuron"
    return f"{what} {node.index} of layer {node.layer + 1}" + (f" ({name})" if name else "")


def _row(node: Node, n_layers: int) -> int:
    return 0 if node.kind == "embedding" else n_layers + 1 if node.kind == "logit" else node.layer + 1


def layout(graph: Graph) -> np.ndarray:
    """(n_nodes, 2) x (position, nodes of a cell side by side) and y (row: embeddings, layers, guesses)."""
    n_layers = max((n.layer for n in graph.nodes if n.kind == "logit"), default=0)
    cells: dict[tuple[int, int], list[int]] = {}
    for i, node in enumerate(graph.nodes):
        cells.setdefault((_row(node, n_layers), node.position), []).append(i)
    xy = np.zeros((len(graph.nodes), 2))
    for (row, position), members in cells.items():
        members.sort(key=lambda i: -graph.nodes[i].influence)
        spread = np.linspace(-0.42, 0.42, len(members)) if len(members) > 1 else np.zeros(1)
        for offset, i in zip(spread, members, strict=True):
            xy[i] = (position + offset, row)
    return xy


def graph_figure(graph: Graph, labels: dict, marked: set[int] | frozenset = frozenset(),
                 mark_colour: str = "#000000") -> go.Figure:
    """Nodes by row (layer) and column (position), sized by influence and coloured by kind; the strongest edges.

    ``marked`` nodes (rows of ``graph.nodes``) get a thick outline of ``mark_colour``.
    """
    xy = layout(graph)
    n_layers = max((n.layer for n in graph.nodes if n.kind == "logit"), default=0)
    targets, sources = np.nonzero(graph.adjacency)
    weights = graph.adjacency[targets, sources]
    order = np.argsort(-np.abs(weights))[:EDGES_DRAWN]
    top = float(np.abs(weights).max()) if weights.size else 1.0
    traces = []
    for sign, colour, name in ((1, figures.SIGNED[-1][1], "pushes up"), (-1, figures.SIGNED[0][1], "pushes down")):
        picked = [k for k in order if np.sign(weights[k]) == sign]
        for k in picked:  # one trace per edge: plotly draws one width per trace
            i, j = targets[k], sources[k]
            traces.append({"type": "scatter", "mode": "lines", "x": [xy[j, 0], xy[i, 0]], "y": [xy[j, 1], xy[i, 1]],
                           "line": {"color": colour, "width": 0.5 + 4 * abs(weights[k]) / top},
                           "opacity": 0.25 + 0.5 * abs(weights[k]) / top, "hoverinfo": "skip", "showlegend": False,
                           "legendgroup": name})
    influence = np.array([n.influence for n in graph.nodes])
    size = 8 + 26 * np.sqrt(influence / max(float(influence.max()), 1e-12))
    for kind in ("embedding", "feature", "neuron", "error", "logit"):
        members = [i for i, n in enumerate(graph.nodes) if n.kind == kind]
        if not members:
            continue
        hover = [safe(node_label(graph.nodes[i], graph, labels), 120)
                 + f"<br>activation {graph.nodes[i].activation:.3g}, influence {graph.nodes[i].influence:.3g}"
                 for i in members]
        traces.append({"type": "scatter", "mode": "markers", "x": xy[members, 0], "y": xy[members, 1], "name": kind,
                       "customdata": members, "text": hover, "hovertemplate": "%{text}<extra></extra>",
                       "marker": {"size": size[members], "color": COLOURS[kind], "symbol": SYMBOLS[kind],
                                  "line": {"width": [3.5 if i in marked else 1 for i in members],
                                           "color": [mark_colour if i in marked else "#ffffff" for i in members]}}})
    n = len(graph.tokens)
    columns = figures.position_labels(list(graph.tokens))
    rows = ["words", *(f"layer {i + 1}" for i in range(n_layers)), "guesses"]
    return figures._figure(traces, figures._layout(
        "Attribution graph: what pushed the answer", 160 + 70 * (n_layers + 2),
        left=figures.text_px(rows) + 15, bottom=figures._slanted(columns) + 20, right=120,
        legend={"x": 1.01, "y": 1, "yanchor": "top", "font": {"size": 13}}, clickmode="event+select",
        xaxis=figures._axis(tickmode="array", tickvals=list(range(n)), ticktext=columns, tickangle=-60,
                            range=[-0.6, n - 0.4], showgrid=False, zeroline=False),
        yaxis=figures._axis(tickmode="array", tickvals=list(range(n_layers + 2)), ticktext=rows, showgrid=False,
                            zeroline=False, range=[-0.5, n_layers + 1.5])))


def _strongest_into(graph: Graph, row: int, kinds: tuple[str, ...]) -> int | None:
    """The node of one of ``kinds`` that pushes node ``row`` up the most, or None."""
    weights = graph.adjacency[row]
    allowed = np.array([n.kind in kinds for n in graph.nodes])
    masked = np.where(allowed & (weights > 0), weights, 0.0)
    return int(np.argmax(masked)) if masked.any() else None


def story(graph: Graph, labels: dict) -> str:
    """One sentence: the strongest path of features into the top guess, back to a word of the prompt."""
    logits = [i for i, n in enumerate(graph.nodes) if n.kind == "logit"]
    if not logits:
        return "The graph holds no guess to explain."
    answer, guess = logits[0], quoted(graph.target_tokens[0])
    total = max(float(np.abs(graph.adjacency[answer]).sum()), 1e-12)
    first = _strongest_into(graph, answer, ("feature", "neuron"))
    if first is None:
        return f"No feature in the kept graph pushes {guess} up; it comes from the words and the error nodes."
    path = [first]
    while len(path) < 4:
        step = _strongest_into(graph, path[-1], ("feature", "neuron", "embedding"))
        if step is None or step in path:
            break
        path.append(step)
        if graph.nodes[step].kind == "embedding":
            break
    words = [node_label(graph.nodes[i], graph, labels) for i in path]
    sentence = f"{guess} ({graph.target_probs[0]:.0%}) comes most through {words[0]}"
    sentence += f" ({graph.adjacency[answer, first] / total:.0%} of its direct inputs)"
    for word, node in zip(words[1:], path[1:], strict=True):
        verb = "which reads" if graph.nodes[node].kind == "embedding" else "which builds on"
        sentence += f", {verb} {word}"
    errors = [i for i, n in enumerate(graph.nodes) if n.kind == "error"]
    missed = float(np.abs(graph.adjacency[answer, errors]).sum()) / total if errors else 0.0
    if missed >= 0.25:
        sentence += f". What the features miss carries {missed:.0%} of its direct inputs"
    return sentence + "."


def top_nodes(graph: Graph, labels: dict, count: int = 8) -> Table:
    """The nodes with the most influence on the guesses, the guesses and words left out."""
    middle = [i for i, n in enumerate(graph.nodes) if n.kind in ("feature", "neuron", "error")]
    middle.sort(key=lambda i: -graph.nodes[i].influence)
    return Table(("node", "at", "activation", "influence"), tuple(
        (node_label(graph.nodes[i], graph, labels), quoted(graph.tokens[graph.nodes[i].position]),
         f"{graph.nodes[i].activation:.2f}", f"{graph.nodes[i].influence:.3f}") for i in middle[:count]))


@dataclass(frozen=True, eq=False)
class GraphContent:
    """The view of one pruned graph."""

    sentence: str
    figure: go.Figure
    scores: str
    table: Table
    note: str | None

    def section(self) -> Section:
        """The view as the report writes it."""
        return Section(TITLE, present(Text(self.sentence, "lead"), Chart(self.figure, "graph_figure"),
                                      Text(self.scores, "caption"), text(self.note, "caption"), self.table,
                                      Text(CAVEAT, "caveat")))


def content(graph: Graph, labels: dict) -> GraphContent:
    """The graph view's content; ``labels`` maps (layer, feature) to an atlas label."""
    kept_edges = int((graph.adjacency != 0).sum())
    drawn = min(kept_edges, EDGES_DRAWN)
    basis = "transcoder features" if graph.basis == "transcoders" else "MLP neurons"
    return GraphContent(
        sentence=story(graph, labels), figure=graph_figure(graph, labels),
        scores=(f"{len(graph.nodes)} of {len(graph.full.nodes if graph.full else graph.nodes)} nodes kept "
                f"({graph.node_threshold:.0%} of the influence), {drawn} of {kept_edges} edges drawn; nodes are "
                f"{basis}. Replacement score {graph.replacement_score:.2f}, completeness "
                f"{graph.completeness_score:.2f} (1 is a graph with no error nodes)."),
        table=top_nodes(graph, labels),
        note=None if graph.basis == "transcoders" else
        "Without transcoders the nodes are the MLP's neurons: exact, but most neurons mean many things.")
