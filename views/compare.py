"""The compare view: one prompt through two models, where they part ways and where the difference lives."""

from __future__ import annotations

import streamlit as st

from backend.compare import ModelDiff
from views.content import Chart, Html
from views.content import compare as view
from views.display import md_escape
from views.draw import draw, draw_text
from views.intro import intro


def header(content: view.CompareContent) -> None:
    """What each model says next, side by side."""
    side = content.header
    for col, title, lead, guesses in zip(st.columns(2), side.titles, side.leads, side.guesses, strict=True):
        col.markdown(f"**{md_escape(title)} says next**: {md_escape(lead)}")
        draw(Html(guesses), col)


def render(diff: ModelDiff, content: view.CompareContent) -> None:
    """The sentence, the four charts, what changed in heads and neurons, and the caveat."""
    intro(content.sentence, view.EXPLAIN, view.CAVEAT)
    draw(Chart(content.tracks, "compare_tracks"))
    draw(Chart(content.kl, "compare_kl"))
    if content.not_applicable:
        draw_text(content.not_applicable, "info")
        return
    left, right = st.columns(2)
    if content.weights is not None:
        draw(Chart(content.weights, "compare_weights"), left)
        draw_text(content.weights_note, "caption", left)
    if content.patch is None:
        draw_text(content.patch_note, "info", right)
    else:
        draw(Chart(content.patch, "compare_patch"), right)
        draw_text(content.patch_note, "caption", right)
    with st.expander("Heads and neurons that changed most"):
        if content.heads is not None:
            draw(Chart(content.heads, "compare_heads"))
            draw_text(view.HEADS_NOTE, "caption")
        draw(content.neurons)
