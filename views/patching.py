"""The patching view: put one piece of a clean run into a corrupted one, and see where the answer comes back."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backend.patching import PatchingSweep
from views import captions, figures
from views.display import label, layer_label, md_escape, position_labels, quoted
from views.intro import intro

EXPLAIN = """
Take two prompts of the same length that differ in one detail, say "The capital of
**France** is" (clean) and "The capital of **Italy** is" (corrupt). The model answers
' Paris' to one and ' Rome' to the other. Now run the corrupt prompt, but at one place
inside the model put back what the clean run had there. If the answer swings back to
' Paris', that place carries the deciding information.

Each cell is the share of the gap between the two answers that comes back: **0%** (white)
changes nothing, **100%** (orange) restores the clean answer fully, blue pushes the other way.
- **Residual stream**: the whole working space at one layer and one position.
- **Attention / MLP output**: what one layer's attention or MLP wrote at one position.
- **Heads**: what one attention head wrote, at every position.

This is *activation patching* (also called causal tracing).
"""
CAVEAT = ("Patching shows what is necessary or sufficient in this context, for this pair of prompts and "
          "this pair of answers, not a general mechanism: another pair can route the information differently.")
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


def _positions(sweep: PatchingSweep) -> list[str]:
    """Position labels; where the prompts differ, both tokens (clean/corrupt)."""
    merged = [c if c == r else f"{c}/{r}" for c, r in zip(sweep.clean_tokens, sweep.corrupt_tokens, strict=True)]
    return position_labels(merged)


def render(sweep: PatchingSweep) -> None:
    """The sentence, the four heatmaps and the caveat."""
    merged = [quoted(c) if c == r else f"{quoted(c)}/{quoted(r)}"
              for c, r in zip(sweep.clean_tokens, sweep.corrupt_tokens, strict=True)]
    intro(captions.patching_sentence(sweep.resid, sweep.attn, sweep.mlp, sweep.heads, merged), EXPLAIN, CAVEAT)
    st.caption(md_escape(f"Margin {quoted(sweep.answer)} over {quoted(sweep.foil)}: {sweep.clean_diff:+.2f} in the "
                         f"clean run, {sweep.corrupt_diff:+.2f} in the corrupt run (logit differences at the last "
                         "position)."))
    if np.isnan(sweep.resid).all():
        st.info("Both prompts give the same margin between these two answers: pick another answer or foil.")
        return
    labels = _positions(sweep)
    n_layers = sweep.attn.shape[0]
    st.plotly_chart(figures.patching_heatmap(sweep.resid, [layer_label(i) for i in range(n_layers + 1)], labels,
                                             "Residual stream: one position at a time", "position"),
                    width="stretch", config=figures.CONFIG, key="patch_resid")
    blocks = [f"layer {i + 1}" for i in range(n_layers)]
    attn_col, mlp_col = st.columns(2)
    attn_col.plotly_chart(figures.patching_heatmap(sweep.attn, blocks, labels, "Attention output", "position"),
                          width="stretch", config=figures.CONFIG, key="patch_attn")
    mlp_col.plotly_chart(figures.patching_heatmap(sweep.mlp, blocks, labels, "MLP output", "position"),
                         width="stretch", config=figures.CONFIG, key="patch_mlp")
    heads = [str(h + 1) for h in range(sweep.heads.shape[1])]
    st.plotly_chart(figures.patching_heatmap(sweep.heads, blocks, heads, "Heads: one head at every position", "head"),
                    width="stretch", config=figures.CONFIG, key="patch_heads")
