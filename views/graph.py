"""The graph view: an attribution graph of the next token, a pruning slider, and a card for the clicked node."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import streamlit as st

from backend.edits import NeuronAblation
from backend.features import BUNDLED, FeatureAblation
from backend.graph import Graph
from views import figures
from views.content import graph as view
from views.display import md_escape
from views.draw import draw, draw_text
from views.intro import intro
from views.state import per_run
from views.whatif import switch_off_button

FEATURES_TAB = "Features"


class GraphResults(Protocol):
    """Where the view gets its graph (cached per run and pruning)."""

    def graph(self, node_threshold: float) -> Graph:
        """The run's graph pruned at ``node_threshold``."""

    def graph_labels(self) -> dict:
        """(layer, feature) -> atlas label, for the run's transcoders."""


def render(results: GraphResults, run: str, drawn: dict, source: str | None, explained,
           max_tokens: int = 64) -> Graph | None:
    """Draw the view; returns the graph drawn (for its take-aways), or None after a message."""
    threshold = st.slider("Keep the nodes that carry this share of the influence", 0.5, 0.95, 0.8, step=0.05,
                          key="graph_threshold", help="Lower keeps fewer, stronger nodes; the graph is not recomputed.")
    with st.spinner("Tracing the graph (a backward pass per node)…"):
        graph = explained(lambda: results.graph(threshold), "tracing the attribution graph")
    if graph is None:
        return None
    labels = results.graph_labels()
    content = view.content(graph, labels)
    drawn[view.TITLE] = (threshold, max_tokens)
    intro(content.sentence, view.EXPLAIN, view.CAVEAT)
    picked = st.plotly_chart(content.figure, width="stretch", config=figures.CONFIG, key="graph_figure",
                             on_select="rerun", selection_mode="points")
    draw_text(content.scores, "caption")
    draw_text(content.note, "caption")
    chosen = _clicked(picked, graph)
    _card(graph, chosen, labels, source, run)
    with st.expander("The most influential nodes"):
        draw(content.table)
    return graph


def _clicked(picked, graph: Graph) -> int:
    """The node clicked in the figure, else the most influential feature or neuron."""
    points = (picked or {}).get("selection", {}).get("points", []) if isinstance(picked, dict) else \
        getattr(getattr(picked, "selection", None), "points", []) or []
    for point in points:
        index = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(index, list):
            index = index[0]
        if isinstance(index, (int, float)) and 0 <= int(index) < len(graph.nodes):
            return int(index)
    middle = [i for i, n in enumerate(graph.nodes) if n.kind in ("feature", "neuron")]
    return max(middle, key=lambda i: graph.nodes[i].influence) if middle else 0


def _card(graph: Graph, index: int, labels: dict, source: str | None, run: str) -> None:
    """One node: what it is, what pushes it and what it pushes, and a switch to test it in the real model."""
    node = graph.nodes[index]
    st.markdown("##### " + md_escape(view.node_label(node, graph, labels)[:1].upper()
                                     + view.node_label(node, graph, labels)[1:]))
    draw_text(f"Activation {node.activation:.3g}, influence on the guesses {node.influence:.3g}. Click another "
              "node in the graph to see its card.", "caption")
    incoming, outgoing = graph.adjacency[index], graph.adjacency[:, index]
    for title, weights in (("Pushed most by", incoming), ("Pushes most", outgoing)):
        order = [int(i) for i in np.argsort(-np.abs(weights))[:4] if weights[i] != 0]
        if order:
            parts = [f"{view.node_label(graph.nodes[i], graph, labels)} ({weights[i]:+.2f})" for i in order]
            draw_text(f"{title}: " + "; ".join(parts) + ".")
    if node.kind == "feature":
        edit = FeatureAblation(node.layer, node.index, (node.position,), None if source == BUNDLED else source)
    elif node.kind == "neuron":
        edit = NeuronAblation(node.layer, node.index, 0.0, (node.position,))
    else:
        return
    off, card = st.columns(2)
    with off:
        switch_off_button(edit, f"Switch off this {node.kind} at position {node.position}",
                          "Run the real model without it and compare the answers (What if tab): does the output "
                          "change as the graph says?", key=per_run("graph_switch_off", run))
    if node.kind == "feature" and card.button("Open its feature card", key="graph_feature_card"):
        st.session_state["feature_layer"] = node.layer
        st.session_state[per_run("feature_token", run)] = node.position
        st.session_state[per_run(f"feature_id_{node.layer}_{node.position}", run)] = node.index
        st.session_state.view_tab = FEATURES_TAB
        st.rerun()
