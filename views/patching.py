"""The patching view: put one piece of a clean run into a corrupted one, and see where the answer comes back."""

from __future__ import annotations

import streamlit as st

from backend.corrupt import suggest_corrupt
from backend.patching import PatchingSweep
from backend.run import Run
from views.content import Chart
from views.content import patching as view
from views.display import label, md_escape
from views.draw import draw, draw_text
from views.intro import intro
from views.queries import model_of
from views.state import per_run

DEFAULT_PAIR = ("The capital of France is", "The capital of Italy is")  # the example pair
MAX_CHARS = 2000


def _set_pair(keys: tuple[str, str], pair: tuple[str, str]) -> None:
    for key, value in zip(keys, pair, strict=True):
        st.session_state[key] = value


def prompts(run: Run) -> tuple[str, str]:
    """The clean and corrupt prompts: at first the page's prompt and one word of it swapped; the reader may type."""
    keys = per_run("patch_clean", run.id), per_run("patch_corrupt", run.id)  # afresh with each page prompt
    suggestion = suggest_corrupt(model_of(run), run.prompt)  # the tokenizer only: cheap to derive on each run
    st.session_state.setdefault(keys[0], run.prompt[:MAX_CHARS])
    st.session_state.setdefault(keys[1], (suggestion.prompt if suggestion is not None else run.prompt)[:MAX_CHARS])
    clean_col, corrupt_col = st.columns(2)
    clean = clean_col.text_input("Clean prompt (gives the answer)", key=keys[0], max_chars=MAX_CHARS)
    corrupt = corrupt_col.text_input("Corrupt prompt (same length, one detail changed)", key=keys[1],
                                     max_chars=MAX_CHARS)
    row = st.container(horizontal=True)
    if suggestion is None:
        row.caption("No word of a kind to swap was found in the page's prompt: type a corrupt prompt with the same "
                    "number of tokens and one detail changed, or try the example.")
    elif corrupt != clean:
        row.caption(md_escape(f"Suggested from the page's prompt: {suggestion.original} → {suggestion.replacement}, "
                              "the same number of tokens. Type your own pair, or try the example."))
    row.button("Example pair: France / Italy", on_click=_set_pair, args=(keys, DEFAULT_PAIR),
               help="The capital of France is / The capital of Italy is")
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
