"""The attention view: every head scored, one head up close, one token's reading, a layer in CircuitsVis."""

from __future__ import annotations

import streamlit as st

from backend.capture import Capture
from backend.edits import HeadAblation
from backend.heads import SCORE_NAMES, HeadScores
from views import circuits
from views.content import Chart, Html
from views.content import attention as view
from views.display import token_labels
from views.draw import draw, draw_text
from views.intro import intro
from views.state import per_run
from views.whatif import switch_off_button


def render(cap: Capture, scores: HeadScores, script_url: str, run: str, drawn: dict) -> None:
    """Draw the whole view; widget changes rerun only the fragment below.

    ``run`` identifies this prompt's run: the selections it keys start afresh with each prompt.
    ``drawn`` receives the choices drawn, for the report.
    """
    intro(view.content_sentence(scores), view.EXPLAIN, view.CAVEAT)
    _explore(cap, scores, script_url, run, drawn)


@st.fragment
def _explore(cap: Capture, scores: HeadScores, script_url: str, run: str, drawn: dict) -> None:
    grid_col, head_col = st.columns([2, 3])
    names = list(SCORE_NAMES)
    name = grid_col.selectbox("Score every head by", names, index=names.index(view.defaults(cap, scores).score),
                              format_func=SCORE_NAMES.get, key=per_run("attention_score", run),
                              help="Starts on the behaviour this prompt shows most clearly.")
    opening = view.defaults(cap, scores, name)
    grid_slot = grid_col.container()
    pick_layer, pick_head = grid_col.columns(2)
    layer = pick_layer.selectbox("Layer", range(1, cap.n_layers + 1), index=opening.layer,
                                 key=per_run(f"attention_layer_{name}", run))
    head = pick_head.selectbox("Head", range(1, cap.n_heads + 1), index=opening.head,
                               key=per_run(f"attention_head_{name}", run))
    head_slot = head_col.container()
    switch_off_button(HeadAblation(layer - 1, head - 1), f"Switch off head {layer}.{head}",
                      "Run the model again without this head and compare the answers (What if tab).",
                      key="switch_off_head", where=head_col)
    st.markdown("##### What one token reads")
    pick, sentence = st.columns([1, 3])
    query = pick.selectbox("Reading token", range(cap.n_tokens), index=cap.n_tokens - 1,
                           format_func=token_labels(cap.tokens).__getitem__, key=per_run("attention_query", run),
                           help="The token whose attention is shown as colour below.")
    choices = view.AttentionChoices(score=name, layer=layer - 1, head=head - 1, query=query)
    drawn[view.TITLE] = choices
    content = view.content(cap, scores, choices)
    with grid_slot:
        draw(Chart(content.grid, "attention_grid"))
        draw_text(content.nothing_to_score, "info")
        draw_text(content.grid_note, "caption")
    draw(Chart(content.head_map, "attention_head_map"), head_slot)
    draw_text(content.reader_sentence + " Darker orange means more attention; the reading token is underlined in "
              "blue. Hover a token for its exact share.", where=sentence)
    draw(Html(content.reader_html))
    all_heads = st.toggle(f"Show all {cap.n_heads} heads of layer {layer} side by side (CircuitsVis)",
                          key="attention_all_heads",
                          help="Interactive: hover a token to see what it reads, click a head to enlarge it. "
                               "Slow to draw for long prompts (seconds beyond about 100 tokens), so it is off "
                               "until you ask for it.")
    if all_heads:
        names = [f"{layer}.{h + 1}" for h in range(cap.n_heads)]
        st.iframe(circuits.attention_heads_html(cap.attention[layer - 1], cap.tokens, names, script_url),
                  height=1250)  # its zoomed pattern is as tall as the frame is wide
