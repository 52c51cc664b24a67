"""The patching view: put one piece of a clean run into a corrupted one, and see where the answer comes back."""

from __future__ import annotations

import streamlit as st

from backend.patching import PatchingSweep
from views.content import Chart
from views.content import patching as view
from views.display import label
from views.draw import draw, draw_text
from views.intro import intro

DEFAULT_PAIR = ("The capital of France is", "The capital of Italy is")


def prompts() -> tuple[str, str]:
    """The clean and corrupt prompts the reader typed (defaults: a built-in pair)."""
    clean_col, corrupt_col = st.columns(2)
    clean = clean_col.text_input("Clean prompt (gives the answer)", DEFAULT_PAIR[0], key="patch_clean",
                                 max_chars=2000)
    corrupt = corrupt_col.text_input("Corrupt prompt (same length, one detail changed)", DEFAULT_PAIR[1],
                                     key="patch_corrupt", max_chars=2000)
    return clean, corrupt


def answers(clean_top: list[tuple[int, str, float]], corrupt_top: list[tuple[int, str, float]],
            run: str) -> tuple[int, int]:
    """The answer (from the clean prompt's guesses) and the foil (from the corrupt prompt's); token ids."""
    answer_col, foil_col = st.columns(2)
    labels = [f"{label(token)}  ({prob:.0%})" for _, token, prob in clean_top]
    answer = answer_col.selectbox("Answer (the clean prompt's guesses)", range(len(clean_top)),
                                  format_func=labels.__getitem__, key=f"patch_answer@{run}")
    answer_id = clean_top[answer][0]
    foils = [item for item in corrupt_top if item[0] != answer_id]
    foil_labels = [f"{label(token)}  ({prob:.0%})" for _, token, prob in foils]
    foil = foil_col.selectbox("Foil (the corrupt prompt's guesses)", range(len(foils)),
                              format_func=foil_labels.__getitem__, key=f"patch_foil@{run}",
                              help="Its own top guess unless that is the answer too.")
    return answer_id, foils[foil][0]


def render(sweep: PatchingSweep) -> None:
    """The sentence, the four heatmaps and the caveat."""
    content = view.content(sweep)
    intro(content.sentence, view.EXPLAIN, view.CAVEAT)
    draw_text(content.margin, "caption")
    if content.nothing:
        draw_text(content.nothing, "info")
        return
    draw(Chart(content.resid, "patch_resid"))
    attn_col, mlp_col = st.columns(2)
    draw(Chart(content.attn, "patch_attn"), attn_col)
    draw(Chart(content.mlp, "patch_mlp"), mlp_col)
    draw(Chart(content.heads, "patch_heads"))
