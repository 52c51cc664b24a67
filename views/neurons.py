"""The neuron view: the most active MLP neurons of a layer, per token and per neuron."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import streamlit as st

from backend.capture import Capture
from backend.edits import NeuronAblation
from backend.neurons import NeuronEffect, top_neurons
from views import captions, circuits, figures
from views.display import md_escape, quoted, token_labels
from views.intro import intro
from views.state import per_run
from views.whatif import switch_off_button

EXPLAIN = """
After attention, each layer runs an **MLP**: thousands of **neurons**, each computing one
number per token from what the model has gathered so far. A neuron with a large value
(orange) is strongly *on* for that token; a negative one (blue) pushes the other way.
When a neuron fires it adds its own fixed **output direction** to the working space;
through the model's output layer that direction raises some next-token guesses and
lowers others, shown on the right.
"""
CAVEAT = ("Single neurons are rarely clean concepts: most respond to several unrelated "
          "things, and their effect depends on everything else in the layer.")
TOP_NEURONS = 20


class Effects(Protocol):
    """Where the view gets a neuron's effect on the logits (cached per run)."""

    def effect(self, layer: int, neuron: int, position: int) -> NeuronEffect:
        """The direct effect of ``neuron`` of ``layer`` at ``position``."""


def render(cap: Capture, lab: Effects, script_url: str, run: str) -> None:
    """Draw the whole view; widget changes rerun only the fragment below.

    ``run`` identifies this prompt's run: the selections it keys start afresh with each prompt.
    """
    intro(captions.neuron_overview(cap.neurons, cap.tokens), EXPLAIN, CAVEAT)
    _explore(cap, lab, script_url, run)


@st.fragment
def _explore(cap: Capture, lab: Effects, script_url: str, run: str) -> None:
    layer = st.selectbox("Layer", range(cap.n_layers), index=cap.n_layers - 1,
                         format_func=lambda i: f"layer {i + 1}", key="neuron_layer")
    acts = cap.neurons[layer]  # (n, d_mlp)
    include_first = st.checkbox(
        "Include the first token", value=cap.n_tokens == 1, key="neuron_first",
        help="Models park huge activations on the first token (the same 'resting place' many heads "
             "attend to). They drown out everything else, so they are left out of the ranking by default.")
    start = 0 if include_first else 1
    shown = acts[start:]
    top = top_neurons(shown, TOP_NEURONS)
    token_at, neuron = np.unravel_index(int(np.abs(shown).argmax()), shown.shape)
    peak = float(shown[token_at, neuron])
    sentence = captions.neuron_sentence(layer, int(neuron), peak, cap.tokens[start + token_at])
    st.markdown(md_escape(sentence))
    st.plotly_chart(figures.neuron_heatmap(shown[:, top].T, top, cap.tokens[start:], layer, first_position=start),
                    width="stretch", config=figures.CONFIG, key="neuron_map")
    massive = captions.massive_note(shown, cap.tokens[start:])
    if massive:
        st.caption(md_escape(massive))
    token_col, neuron_col = st.columns(2)
    with token_col:  # opens where the layer's hardest-firing neuron fires, so its effect is read there
        position = st.selectbox("Token", range(cap.n_tokens), index=start + int(token_at),
                                format_func=token_labels(cap.tokens).__getitem__,
                                key=per_run("neuron_token", run))
        best = np.argsort(-np.abs(acts[position]), kind="stable")[:10]
        st.plotly_chart(figures.bars([f"#{i}" for i in best], acts[position, best],
                                     f"Top neurons on {quoted(cap.tokens[position])}", "activation"),
                        width="stretch", config=figures.CONFIG, key="neuron_token_bars")
    with neuron_col:
        chosen = int(st.number_input(f"Neuron (0 to {acts.shape[1] - 1})", 0, acts.shape[1] - 1,
                                     value=int(neuron), key=per_run(f"neuron_id_{layer}", run)))
        st.markdown(f"**Neuron {chosen} on every token** (orange: positive, blue: negative)")
        st.iframe(circuits.colored_tokens_html(cap.tokens, acts[:, chosen], script_url),
                        height=circuits.text_height(cap.tokens, chars_per_line=50))
        switch_off_button(NeuronAblation(layer, chosen), f"Switch off neuron {chosen} of layer {layer + 1}",
                          "Run the model again with this neuron at zero on every token and compare the answers "
                          "(What if tab).", key="switch_off_neuron")
        _effect(lab.effect(layer, chosen, position), cap.tokens[position])


def _effect(result: NeuronEffect, token: str) -> None:
    st.markdown(f"**What neuron {result.neuron} writes**: change in next-token scores after "
                f"{md_escape(quoted(token))} per unit of activation")
    st.plotly_chart(figures.effect_bars(result.promoted, result.promoted_values, result.suppressed,
                                        result.suppressed_values),
                    width="stretch", config=figures.CONFIG, key="neuron_effect")
