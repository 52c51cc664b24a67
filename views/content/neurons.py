"""The neuron view's content: a layer's most active MLP neurons, per token and per neuron, and what one writes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.capture import Capture
from backend.neurons import NeuronEffect, top_neurons
from views import captions, coloured, figures
from views.content import Chart, Html, Section, Text, present, text
from views.display import quoted

TITLE = "Neurons"
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


@dataclass(frozen=True)
class NeuronChoices:
    """A layer (from 0), whether the first token counts in the ranking, a token position and a neuron."""

    layer: int
    include_first: bool
    position: int
    neuron: int


def overview(cap: Capture) -> str:
    """The view's opening sentence: the hardest-firing neuron of the whole prompt."""
    return captions.neuron_overview(cap.neurons, cap.tokens)


def hardest(cap: Capture, layer: int, include_first: bool) -> tuple[int, int]:
    """(position, neuron) of the layer's largest |activation|, the first token left out unless included."""
    start = 0 if include_first else 1
    shown = cap.neurons[layer, start:]
    token_at, neuron = np.unravel_index(int(np.abs(shown).argmax()), shown.shape)
    return start + int(token_at), int(neuron)


def defaults(cap: Capture, layer: int | None = None, include_first: bool | None = None) -> NeuronChoices:
    """The last layer (or ``layer``), opened where its hardest-firing neuron fires."""
    layer = cap.n_layers - 1 if layer is None else layer
    include_first = cap.n_tokens == 1 if include_first is None else include_first
    position, neuron = hardest(cap, layer, include_first)
    return NeuronChoices(layer=layer, include_first=include_first, position=position, neuron=neuron)


@dataclass(frozen=True, eq=False)
class NeuronContent:
    """Everything the neuron view shows for one choice of layer, token and neuron."""

    overview: str
    layer_sentence: str
    heatmap: go.Figure
    massive: str | None
    token_bars: go.Figure
    neuron_title: str
    neuron_tokens: list[str]
    neuron_values: np.ndarray  # (n,) the chosen neuron on every token
    effect_title: str
    effect: go.Figure

    def section(self) -> Section:
        """The view as the report writes it."""
        return Section(TITLE, present(
            Text(self.overview, "lead"), Text(self.layer_sentence), Chart(self.heatmap, "neuron_map"),
            text(self.massive, "caption"), Chart(self.token_bars, "neuron_token_bars"), Text(self.neuron_title),
            Html(coloured.signed_html(self.neuron_tokens, self.neuron_values)), Text(self.effect_title),
            Chart(self.effect, "neuron_effect"), Text(CAVEAT, "caveat")))


def content(cap: Capture, choices: NeuronChoices, effect: NeuronEffect) -> NeuronContent:
    """The view for ``choices``; ``effect`` is the chosen neuron's effect at the chosen token."""
    layer, position, neuron = choices.layer, choices.position, choices.neuron
    start = 0 if choices.include_first else 1
    acts = cap.neurons[layer]  # (n, d_mlp)
    shown = acts[start:]
    top = top_neurons(shown, TOP_NEURONS)
    peak_at, peak_neuron = hardest(cap, layer, choices.include_first)
    best = np.argsort(-np.abs(acts[position]), kind="stable")[:10]
    return NeuronContent(
        overview=overview(cap),
        layer_sentence=captions.neuron_sentence(layer, peak_neuron, float(acts[peak_at, peak_neuron]),
                                                cap.tokens[peak_at]),
        heatmap=figures.neuron_heatmap(shown[:, top].T, top, cap.tokens[start:], layer, first_position=start),
        massive=captions.massive_note(shown, cap.tokens[start:]),
        token_bars=figures.bars([f"#{i}" for i in best], acts[position, best],
                                f"Top neurons on {quoted(cap.tokens[position])}", "activation"),
        neuron_title=f"Neuron {neuron} on every token (orange: positive, blue: negative)",
        neuron_tokens=cap.tokens, neuron_values=acts[:, neuron].copy(),
        effect_title=(f"What neuron {neuron} writes: change in next-token scores after "
                      f"{quoted(cap.tokens[position])} per unit of activation"),
        effect=figures.effect_bars(effect.promoted, effect.promoted_values, effect.suppressed,
                                   effect.suppressed_values))
