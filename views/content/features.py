"""The features view's content: which dictionary features fire on each token, and one feature up close."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.atlas import FeatureCard
from backend.capture import Capture
from backend.features import FeatureActivations
from views import coloured, figures
from views.content import Chart, Html, Section, Text, present, text
from views.display import quoted

TITLE = "Features"
EXPLAIN = """
A single neuron rarely means one thing. A **sparse dictionary** rewrites what a layer
computes as a sum of a few **features** out of thousands, each a direction that tends to
mean one thing. A **transcoder** stands in for one MLP: it reads what the MLP reads and
writes (almost) what the MLP writes, with only a handful of features on at each token.

- The **heatmap** shows the features most active in this layer over the prompt; hover a
  cell for the feature's label.
- The **feature card** shows one feature: where it fires in your prompt, where it fired
  most on held-out text (its top contexts), and which next tokens it pushes up and down.
- **Switch it off** or **amplify** it: the What if tab shows whether the answer changes.
"""
CAVEAT = ("A feature's label is computed from the text it fired on most; it summarises, it does not prove what "
          "the feature means. The dictionary approximates the layer: what it misses (its error) is not shown here.")
TOP_FEATURES = 20


@dataclass(frozen=True)
class FeatureChoices:
    """A dictionary (a layer, for transcoders), a token position and a feature, all from 0."""

    layer: int
    position: int
    feature: int


def strongest(features: FeatureActivations, layer: int, position: int) -> int | None:
    """The most active feature at one position of one layer, or None when none fires there."""
    ids, values = features.layers[layer].row(position)
    return int(ids[int(np.argmax(values))]) if len(ids) else None


def defaults(cap: Capture, layer: int | None = None) -> FeatureChoices:
    """The last layer (or ``layer``), the last token, its strongest feature (else the prompt's strongest)."""
    features = cap.features
    layer = len(features.layers) - 1 if layer is None else layer
    position = cap.n_tokens - 1
    feature = strongest(features, layer, position)
    if feature is None:
        dense = features.layers[layer].dense()
        feature = int(np.unravel_index(int(dense.argmax()), dense.shape)[1])
    return FeatureChoices(layer=layer, position=position, feature=feature)


def top_features(cap: Capture, layer: int, count: int = TOP_FEATURES) -> tuple[np.ndarray, np.ndarray, int]:
    """The features with the largest activation anywhere in the prompt: ids, activations (features, m), first position.

    The first token is left out when there are others, as the neuron view does.
    """
    start = 1 if cap.n_tokens > 1 else 0
    dense = cap.features.layers[layer].dense()[start:]
    peak = dense.max(axis=0)
    ids = np.argsort(-peak, kind="stable")[:count]
    ids = ids[peak[ids] > 0]
    return ids, dense[:, ids].T, start


@dataclass(frozen=True, eq=False)
class FeatureContent:
    """Everything the features view shows for one choice of layer, token and feature."""

    sentence: str
    heatmap: go.Figure | None
    title: str
    label: str
    in_prompt: str  # HTML: the feature's activation on every token
    contexts: tuple[str, ...]  # HTML per top context from the atlas
    frequency: str | None
    effect: go.Figure

    def section(self) -> Section:
        """The view as the report writes it."""
        return Section(TITLE, present(
            Text(self.sentence, "lead"), Chart(self.heatmap, "feature_map") if self.heatmap is not None else None,
            Text(self.title), Text(self.label), text(self.frequency, "caption"), Html(self.in_prompt),
            *(Html(context) for context in self.contexts), Chart(self.effect, "feature_effect"),
            Text(CAVEAT, "caveat")))


def content(cap: Capture, choices: FeatureChoices, labels: tuple[str, ...] | None, card: FeatureCard | None,
            effect: tuple[list[str], np.ndarray, list[str], np.ndarray], where: str) -> FeatureContent:
    """The view for ``choices``.

    ``labels`` name the layer's features, ``card`` is the atlas entry (when there is an atlas),
    ``effect`` what the feature's decoder vector promotes and suppresses, ``where`` names the
    dictionary ("layer 3's transcoder").
    """
    layer, position, feature = choices.layer, choices.position, choices.feature
    features = cap.features
    ids, values, start = top_features(cap, layer)
    name = (labels[feature] if labels else "") or "no label (no atlas ships with this dictionary)"
    column = features.layers[layer].column(feature)
    top = strongest(features, layer, position)
    if top is None:
        sentence = f"No feature of {where} fires at {quoted(cap.tokens[position])} (position {position})."
    else:
        value = float(features.layers[layer].column(top)[position])
        top_name = labels[top] if labels else ""
        sentence = (f"At {quoted(cap.tokens[position])} (position {position}), the strongest feature of {where} is "
                    f"{top}" + (f": {top_name}" if top_name else "") + f" (activation {value:.2f}).")
    contexts = tuple(coloured.signed_html(list(tokens), np.array(acts, np.float32))
                     for tokens, acts in (card.contexts if card is not None else ()))
    promoted, up, suppressed, down = effect
    return FeatureContent(
        sentence=sentence,
        heatmap=figures.feature_heatmap(values, ids, [labels[i] if labels else "" for i in ids], cap.tokens[start:],
                                        layer, first_position=start) if len(ids) else None,
        title=f"Feature {feature} of {where}: on every token of the prompt, then its top contexts on held-out text",
        label=f"Label: {name}.",
        in_prompt=coloured.signed_html(cap.tokens, column),
        contexts=contexts,
        frequency=f"Fires on {card.frequency:.2%} of held-out tokens." if card is not None else None,
        effect=figures.effect_bars(promoted, up, suppressed, down))
