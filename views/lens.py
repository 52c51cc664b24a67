"""The logit-lens view: the model's best guess after every layer, and one token's trajectory."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import streamlit as st

from backend.capture import Capture
from backend.lens import LensSummary
from views import captions, figures
from views.display import label, md_escape, token_labels
from views.intro import intro
from views.state import per_run

EXPLAIN = """
A language model builds its answer layer by layer in a shared working space (the
*residual stream*). The **logit lens** asks: if the model had to answer right after
layer *i*, what would it say? It reads each layer's working space with the model's own
final step (normalisation and output layer).

- Each **cell** shows the top guess for the *next* token after that layer, at that position; colour is its probability.
- The **trajectory** follows one token through the layers: its probability, its rank
  (1 = top guess), how uncertain the model is (entropy) and how far each layer is from
  the final answer (KL divergence).
"""
CAVEAT = ("Early layers were never trained to be read this way, so their lens readings are "
          "unreliable; trust the last few layers most.")
WINDOW = 16

class Trajectories(Protocol):
    """Where the view gets a token's trajectory that the summary does not hold (cached per run)."""

    def trajectory(self, token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Probability and rank (layers,) of ``token_id`` at ``position``."""


def render(cap: Capture, summary: LensSummary, lab: Trajectories, run: str) -> None:
    """Draw the whole view; widget changes rerun only the fragment below.

    ``run`` identifies this prompt's run: the selections it keys start afresh with each prompt.
    """
    intro(captions.lens_sentence(summary, cap.n_tokens - 1), EXPLAIN, CAVEAT)
    _explore(cap, summary, lab, run)


def _window(n: int, run: str) -> np.ndarray:
    if n <= WINDOW:
        return np.arange(n)
    start, end = st.slider("Positions shown", 0, n - 1, (n - WINDOW, n - 1), key=per_run("lens_window", run))
    return np.arange(start, end + 1)


@st.fragment
def _explore(cap: Capture, summary: LensSummary, lab: Trajectories, run: str) -> None:
    shown = _window(cap.n_tokens, run)
    # the embeddings row left out: read through the output layer, an embedding mostly "predicts" its own
    # token at about 100%, which says nothing about the next one and misleads a newcomer
    st.plotly_chart(figures.lens_heatmap(summary.top_tokens[1:, shown], summary.top_probs[1:, shown],
                                         cap.tokens, shown, first_layer=1),
                    width="stretch", config=figures.CONFIG, key="lens_map")
    pos_col, tok_col = st.columns(2)
    position = pos_col.selectbox("Position to follow", range(cap.n_tokens), index=cap.n_tokens - 1,
                                 format_func=token_labels(cap.tokens).__getitem__,
                                 key=per_run("lens_position", run))
    ids, names = _candidates(summary, position)
    choice = tok_col.selectbox("Token to track", range(len(ids)), format_func=[label(n) for n in names].__getitem__,
                               key=per_run(f"lens_token_{position}", run),
                               help="The final top guess and every layer's top guess at this position.")
    token_id = ids[choice]
    if token_id == int(summary.target_ids[position]):
        probs, ranks = summary.target_probs[:, position], summary.target_ranks[:, position]
    else:
        probs, ranks = lab.trajectory(token_id, position)
    if position != cap.n_tokens - 1:  # the view's opening sentence already tells the last position's story
        st.markdown(md_escape(captions.lens_sentence(summary, position)))
    st.plotly_chart(figures.trajectory(probs, ranks, summary.entropy[:, position],
                                       summary.kl_to_final[:, position], names[choice]),
                    width="stretch", config=figures.CONFIG, key="lens_trajectory")


def _candidates(summary: LensSummary, position: int) -> tuple[list[int], list[str]]:
    """The final top-k, then each layer's top guess, without repeats."""
    ids: list[int] = []
    names: list[str] = []
    pairs = list(zip(summary.top_ids[-1, position], summary.top_tokens[-1, position], strict=True))
    pairs += list(zip(summary.top_ids[::-1, position, 0], summary.top_tokens[::-1, position, 0], strict=True))
    for token_id, name in pairs:
        if int(token_id) not in ids:
            ids.append(int(token_id))
            names.append(str(name))
    return ids, names


HELD_INSIDE_CAVEAT = (
    "Held inside: an earlier layer's lens ranked this token above what the model says, and it keeps a real share "
    "at the output. The lens reads inner layers with the output layer, trained for the last layer only, so this "
    "is a reading of what those layers encode, not proof of what the model knows; it fires on about 2% of "
    "ordinary positions of the demo model too.")


def held_inside(findings: list, n_tokens: int) -> None:
    """``backend.suppressed`` findings: the last position's in full, the others in one line."""
    last = [f for f in findings if f.position == n_tokens - 1]
    others = [f for f in findings if f.position != n_tokens - 1]
    for finding in last:
        st.info(md_escape(captions.finding_sentence(finding)))
    if others:
        shown = "; ".join(f"position {f.position}: {label(f.token)} inside, {label(f.said)} said (after layer "
                          f"{f.layer})" for f in others[:4])
        more = f" and {len(others) - 4} more" if len(others) > 4 else ""
        st.caption(md_escape(f"Also held inside and pushed down at the output: {shown}{more}."))
    st.caption(HELD_INSIDE_CAVEAT)
