"""The attention view: every head scored, one head up close, one token's reading, a layer in CircuitsVis."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backend.capture import Capture
from backend.edits import HeadAblation
from backend.heads import SCORE_NAMES, HeadScores
from views import captions, circuits, coloured, figures
from views.display import md_escape, token_labels
from views.intro import intro
from views.state import per_run
from views.whatif import switch_off_button

EXPLAIN = """
Each layer of the model has several **attention heads**. At every token, a head decides
which earlier tokens to read, and how much of each (the row of a pattern sums to 100%).
Heads often specialise:
- a **previous-token** head reads the token just before;
- an **induction** head finds an earlier copy of the current token and reads what came
  *after* it, so the model can continue a repeated pattern ("Mia ... Mia" → what followed Mia);
- many heads "rest" on the **first token** when they have nothing useful to do.

The grid scores every head on the behaviour you pick; choose a head to see its full pattern.
"""
CAVEAT = ("Attention shows where a head reads from, not why the model says what it says: "
          "a head can read a token and then contribute nothing. Treat it as a clue, not an explanation.")


def render(cap: Capture, scores: HeadScores, script_url: str, run: str) -> None:
    """Draw the whole view; widget changes rerun only the fragment below.

    ``run`` identifies this prompt's run: the selections it keys start afresh with each prompt.
    """
    intro(captions.attention_sentence(scores), EXPLAIN, CAVEAT)
    _explore(cap, scores, script_url, run)


def _top_head(score: np.ndarray, name: str) -> tuple[int, int]:
    values = -np.nan_to_num(score, nan=np.inf) if name == "entropy" else np.nan_to_num(score, nan=-1.0)
    layer, head = np.unravel_index(int(np.argmax(values)), score.shape)
    return int(layer), int(head)


@st.fragment
def _explore(cap: Capture, scores: HeadScores, script_url: str, run: str) -> None:
    grid_col, head_col = st.columns([2, 3])
    with grid_col:
        names = list(SCORE_NAMES)
        name = st.selectbox("Score every head by", names, index=names.index(captions.clearest_behaviour(scores)),
                            format_func=SCORE_NAMES.get, key=per_run("attention_score", run),
                            help="Starts on the behaviour this prompt shows most clearly.")
        score = scores.get(name)
        if np.isnan(score).all():
            st.info("This prompt has no repeated token, so there is nothing to score. "
                    "Try the repeated-words example.")
        st.plotly_chart(figures.head_grid(score, SCORE_NAMES[name].split(":")[0], name.replace("_", " ")),
                        width="stretch", config=figures.CONFIG, key="attention_grid")
        top_layer, top_head = _top_head(score, name)
        st.caption(f"Highest: head {top_layer + 1}.{top_head + 1}, picked below by default.")
        pick_layer, pick_head = st.columns(2)
        layer = pick_layer.selectbox("Layer", range(1, cap.n_layers + 1), index=top_layer,
                                     key=per_run(f"attention_layer_{name}", run))
        head = pick_head.selectbox("Head", range(1, cap.n_heads + 1), index=top_head,
                                   key=per_run(f"attention_head_{name}", run))
    with head_col:
        fig = figures.attention_heatmap(cap.attention[layer - 1, head - 1], cap.tokens,
                                        f"Head {layer}.{head}: who reads whom")
        st.plotly_chart(fig, width="stretch", config=figures.CONFIG, key="attention_head_map")
        switch_off_button(HeadAblation(layer - 1, head - 1), f"Switch off head {layer}.{head}",
                          "Run the model again without this head and compare the answers (What if tab).",
                          key="switch_off_head")
    _reader(cap, layer, head, run)
    all_heads = st.toggle(f"Show all {cap.n_heads} heads of layer {layer} side by side (CircuitsVis)",
                          key="attention_all_heads",
                          help="Interactive: hover a token to see what it reads, click a head to enlarge it. "
                               "Slow to draw for long prompts (seconds beyond about 100 tokens), so it is off "
                               "until you ask for it.")
    if all_heads:
        names = [f"{layer}.{h + 1}" for h in range(cap.n_heads)]
        st.iframe(circuits.attention_heads_html(cap.attention[layer - 1], cap.tokens, names, script_url),
                  height=1250)  # its zoomed pattern is as tall as the frame is wide


def _reader(cap: Capture, layer: int, head: int, run: str) -> None:
    """One reading token's attention in the chosen head, as coloured text."""
    st.markdown("##### What one token reads")
    pick, sentence = st.columns([1, 3])
    query = pick.selectbox("Reading token", range(cap.n_tokens), index=cap.n_tokens - 1,
                           format_func=token_labels(cap.tokens).__getitem__, key=per_run("attention_query", run),
                           help="The token whose attention is shown as colour below.")
    shares = cap.attention[layer - 1, head - 1, query, : query + 1]
    sentence.markdown(md_escape(captions.reader_sentence(cap.tokens, shares, layer, head)) +
                      " Darker orange means more attention; the reading token is underlined in blue. "
                      "Hover a token for its exact share.")
    st.html(coloured.shares_html(cap.tokens[: query + 1], shares))
