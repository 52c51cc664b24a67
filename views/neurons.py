"""The neuron view: the most active MLP neurons of a layer, per token and per neuron."""

from __future__ import annotations

from typing import Protocol

import streamlit as st

from backend.capture import Capture
from backend.edits import NeuronAblation
from backend.neurons import NeuronEffect
from views import circuits
from views.content import Chart
from views.content import neurons as view
from views.display import token_labels
from views.draw import draw, draw_text
from views.intro import intro
from views.state import per_run
from views.whatif import switch_off_button


class Effects(Protocol):
    """Where the view gets a neuron's effect on the logits (cached per run)."""

    def effect(self, layer: int, neuron: int, position: int) -> NeuronEffect:
        """The direct effect of ``neuron`` of ``layer`` at ``position``."""


def render(cap: Capture, results: Effects, script_url: str, run: str, drawn: dict) -> None:
    """Draw the whole view; widget changes rerun only the fragment below.

    ``run`` identifies this prompt's run: the selections it keys start afresh with each prompt.
    ``drawn`` receives the choices drawn, for the report.
    """
    intro(view.overview(cap), view.EXPLAIN, view.CAVEAT)
    _explore(cap, results, script_url, run, drawn)


@st.fragment
def _explore(cap: Capture, results: Effects, script_url: str, run: str, drawn: dict) -> None:
    layer = st.selectbox("Layer", range(cap.n_layers), index=cap.n_layers - 1,
                         format_func=lambda i: f"layer {i + 1}", key="neuron_layer")
    include_first = st.checkbox(
        "Include the first token", value=cap.n_tokens == 1, key="neuron_first",
        help="Models park huge activations on the first token (the same 'resting place' many heads "
             "attend to). They drown out everything else, so they are left out of the ranking by default.")
    opening = view.defaults(cap, layer, include_first)
    top_slot = st.container()
    token_col, neuron_col = st.columns(2)
    # opens where the layer's hardest-firing neuron fires, so its effect is read there
    position = token_col.selectbox("Token", range(cap.n_tokens), index=opening.position,
                                   format_func=token_labels(cap.tokens).__getitem__, key=per_run("neuron_token", run))
    d_mlp = cap.neurons.shape[2]
    chosen = int(neuron_col.number_input(f"Neuron (0 to {d_mlp - 1})", 0, d_mlp - 1, value=opening.neuron,
                                         key=per_run(f"neuron_id_{layer}", run)))
    choices = view.NeuronChoices(layer=layer, include_first=include_first, position=position, neuron=chosen)
    drawn[view.TITLE] = choices
    content = view.content(cap, choices, results.effect(layer, chosen, position))
    draw_text(content.layer_sentence, where=top_slot)
    draw(Chart(content.heatmap, "neuron_map"), top_slot)
    draw_text(content.massive, "caption", top_slot)
    draw(Chart(content.token_bars, "neuron_token_bars"), token_col)
    draw_text(content.neuron_title, "lead", neuron_col)
    neuron_col.iframe(circuits.colored_tokens_html(cap.tokens, content.neuron_values, script_url),
                      height=circuits.text_height(cap.tokens, chars_per_line=50))
    switch_off_button(NeuronAblation(layer, chosen), f"Switch off neuron {chosen} of layer {layer + 1}",
                      "Run the model again with this neuron at zero on every token and compare the answers "
                      "(What if tab).", key="switch_off_neuron", where=neuron_col)
    draw_text(content.effect_title, where=neuron_col)
    draw(Chart(content.effect, "neuron_effect"), neuron_col)
