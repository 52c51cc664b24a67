"""The compare view: one prompt through two models, where they part ways and where the difference lives."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backend.compare import PART_WAYS_NATS, ModelDiff
from views import captions, coloured, figures
from views.display import md_escape, quoted
from views.intro import intro

EXPLAIN = f"""
The same prompt goes through two models that read text the same way (typically a base
model **A** and a fine-tuned version of it, **B**). Each chart compares them:

- **The two answers, layer by layer**: the probability each model's logit lens gives to
  A's answer and to B's answer after every layer, solid for A and dashed for B. If B's
  line for A's answer climbs inside and falls only at the end, B still computes the
  answer and its last layers push it down: the fine-tune changed what it *says* more than
  what it *knows*.
- **Where they part ways**: KL divergence between the two models' lens distributions, at
  every layer and position (0 = identical; {PART_WAYS_NATS} nats or more counts as parted).
- **Weight change**: how much each block's attention and MLP weights moved,
  ||W_B − W_A|| / ||W_A||. It does not depend on the prompt.
- **Putting one part of A into B**: B runs the prompt with one part's output taken from A. Each
  bar is the share of A's margin of its answer over B's answer that comes back (100%:
  B now prefers A's answer as much as A does). This is *activation patching* across models.
"""
CAVEAT = ("The lens reads inner layers with the output layer, which was trained for the last layer only: "
          "'inside' means readable by the lens. Patching one part at a time shows where a difference can be "
          "undone on this prompt, not every place the fine-tune changed.")


def header(diff: ModelDiff, name_a: str, name_b: str) -> None:
    """What each model says next, side by side."""
    cols = st.columns(2)
    titles = captions.model_titles(name_a, name_b)
    for col, guesses, title in zip(cols, (diff.guesses_a, diff.guesses_b), titles, strict=True):
        tokens = [token for _, token, _ in guesses]
        probs = np.array([p for _, _, p in guesses])
        col.markdown(f"**{md_escape(title)} says next**: {md_escape(quoted(tokens[0]))} ({probs[0]:.0%}), then:")
        col.html(coloured.guesses_html(tokens, probs))


def render(diff: ModelDiff, name_a: str, name_b: str) -> None:
    """The sentence, the four charts, what changed in heads and neurons, and the caveat."""
    a_name, b_name = captions.model_titles(name_a, name_b)
    intro(captions.compare_sentence(diff, "A", "B"), EXPLAIN, CAVEAT)
    st.plotly_chart(figures.answer_tracks(diff.tracks, a_name, b_name), width="stretch", config=figures.CONFIG,
                    key="compare_tracks")
    st.plotly_chart(figures.kl_heatmap(diff.kl, diff.a.tokens, PART_WAYS_NATS, diff.layer_map), width="stretch",
                    config=figures.CONFIG, key="compare_kl")
    if diff.not_applicable:
        st.info(md_escape(diff.not_applicable))
        return
    left, right = st.columns(2)
    if diff.weights is not None:
        left.plotly_chart(figures.weight_change(diff.weights.attn, diff.weights.mlp), width="stretch",
                          config=figures.CONFIG, key="compare_weights")
        w = diff.weights
        shared = np.isclose(w.embed, w.unembed, rtol=1e-6)  # tied: one matrix
        left.caption(md_escape(f"Embeddings and output layer (one shared matrix): {w.embed:.1%} changed." if shared
                               else f"Embeddings: {w.embed:.1%} changed; output layer: {w.unembed:.1%}."))
    if diff.patch is None:
        right.info("Both models give the same next token, so there is no margin between two answers to restore.")
    else:
        p = diff.patch
        right.plotly_chart(figures.cross_patch_bars(p, diff.answer_a, diff.answer_b), width="stretch",
                           config=figures.CONFIG, key="compare_patch")
        right.caption(md_escape(f"Margin of {quoted(diff.answer_a)} over {quoted(diff.answer_b)}: "
                                f"{p.a_diff:+.2f} in A, {p.b_diff:+.2f} in B (logit differences)."))
    with st.expander("Heads and neurons that changed most"):
        if diff.head_change is not None:
            st.plotly_chart(figures.head_grid(diff.head_change, "How far each head's attention moved",
                                              "change"), width="stretch", config=figures.CONFIG,
                            key="compare_heads")
            st.caption("Mean over positions of the total-variation distance between the two models' attention "
                       "patterns: 0 is the same pattern, 1 is reading entirely different tokens.")
        if diff.neurons:
            rows = [f"| {n.layer + 1} | {n.neuron} | {md_escape(quoted(n.token))} ·{n.position} | {n.a:+.2f} | "
                    f"{n.b:+.2f} |" for n in diff.neurons]
            st.markdown("| layer | neuron | where | in A | in B |\n|---:|---:|---|---:|---:|\n" + "\n".join(rows))
