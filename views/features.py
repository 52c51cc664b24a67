"""The features view: which dictionary features fire on each token, and a card for one of them."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import streamlit as st

from backend.atlas import FeatureCard
from backend.capture import Capture
from backend.features import BUNDLED, FeatureAblation, FeatureSteering
from views.content import Chart, Html
from views.content import features as view
from views.display import md_escape, md_message, token_labels
from views.draw import draw, draw_text
from views.intro import intro
from views.state import per_run
from views.whatif import switch_off_button

NEEDS = ("This model is read without features. Name a sparse dictionary for it in the sidebar: a local folder or a "
         "hub id of an SAE (SAELens layout: cfg.json and sae_weights.safetensors) or of transcoders (circuit-tracer's "
         "config.yaml with layer_0.safetensors ..., or sparsify's per-layer folders). The bundled demo model and its "
         "twin come with transcoders.")


class FeatureResults(Protocol):
    """Where the view gets a feature's labels, atlas card and effect (cached per run)."""

    def feature_labels(self, layer: int) -> tuple[str, ...] | None:
        """The layer's feature labels, when an atlas ships."""

    def feature_card(self, layer: int, feature: int) -> FeatureCard | None:
        """One feature's atlas entry."""

    def feature_effect(self, layer: int, feature: int, position: int) -> tuple:
        """What the feature's decoder vector promotes and suppresses."""


def where(cap: Capture, layer: int) -> str:
    """How the page names one dictionary of the run: a layer's transcoder, or an SAE's site."""
    site = cap.features.sites[layer]
    return f"layer {layer + 1}'s transcoder" if site.kind == "mlp_in" else f"the SAE at {site}"


def render(cap: Capture, results: FeatureResults, run: str, drawn: dict, error: str | None, source: str | None) -> None:
    """Draw the view, or say what it needs; widget changes rerun only the fragment below."""
    if cap.features is None:
        if error:
            st.error(md_message(f"The features could not be loaded: {error}"))
        st.info(md_escape(NEEDS))
        return
    opening = view.defaults(cap)
    labels = results.feature_labels(opening.layer)
    first = view.content(cap, opening, labels, None, ([], np.zeros(0), [], np.zeros(0)), where(cap, opening.layer))
    intro(first.sentence, view.EXPLAIN, view.CAVEAT)
    _explore(cap, results, run, drawn, source)


@st.fragment
def _explore(cap: Capture, results: FeatureResults, run: str, drawn: dict, source: str | None) -> None:
    n_dictionaries = len(cap.features.layers)
    pick_layer, pick_token = st.columns(2)
    layer = pick_layer.selectbox("Dictionary", range(n_dictionaries), index=n_dictionaries - 1,
                                 format_func=lambda i: where(cap, i), key="feature_layer")
    position = pick_token.selectbox("Token", range(cap.n_tokens), index=cap.n_tokens - 1,
                                    format_func=token_labels(cap.tokens).__getitem__, key=per_run("feature_token", run))
    map_slot = st.container()
    opening = view.defaults(cap, layer)
    strongest = view.strongest(cap.features, layer, position)
    n_features = cap.features.layers[layer].n_features
    feature = int(st.number_input(f"Feature (0 to {n_features - 1})", 0, n_features - 1,
                                  value=strongest if strongest is not None else opening.feature,
                                  key=per_run(f"feature_id_{layer}_{position}", run),
                                  help="Starts on the token's strongest feature."))
    choices = view.FeatureChoices(layer=layer, position=position, feature=feature)
    drawn[view.TITLE] = choices
    content = view.content(cap, choices, results.feature_labels(layer), results.feature_card(layer, feature),
                           results.feature_effect(layer, feature, position), where(cap, layer))
    if content.heatmap is not None:
        draw(Chart(content.heatmap, "feature_map"), map_slot)
    draw_text(content.title, "lead")
    draw_text(content.label)
    draw_text(content.frequency, "caption")
    draw(Html(content.in_prompt))
    if content.contexts:
        st.caption("Where it fired most on held-out text (orange: its activation on each token):")
        for context in content.contexts:
            draw(Html(context))
    _buttons(cap, layer, feature, source)
    draw(Chart(content.effect, "feature_effect"))


def _buttons(cap: Capture, layer: int, feature: int, source: str | None) -> None:
    """Switch the feature off, or push it harder (transcoders only: they write the MLP's output)."""
    if cap.features.sites[layer].kind != "mlp_in":
        st.caption("Switching a feature off needs transcoders (they stand in for the MLP); an SAE only reads.")
        return
    transcoders = None if source == BUNDLED else source
    peak = float(cap.features.layers[layer].column(feature).max())
    strength = round(2 * peak, 2) if peak > 0 else 4.0
    off, amplify = st.columns(2)
    with off:
        switch_off_button(FeatureAblation(layer, feature, None, transcoders), f"Switch off feature {feature}",
                          "Run the model again without this feature and compare the answers (What if tab).",
                          key="switch_off_feature")
    with amplify:
        switch_off_button(FeatureSteering(layer, feature, strength, None, transcoders),
                          f"Amplify feature {feature} (+{strength:g})",
                          "Add this feature's direction to the MLP's output at every token, twice as strong as it "
                          "fires here, and compare the answers (What if tab).", key="amplify_feature")
