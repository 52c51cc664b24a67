"""The logit-lens view: the model's best guess after every layer, and one token's trajectory."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import streamlit as st

from backend.capture import Capture
from backend.lens import LensSummary
from views.content import Chart
from views.content import lens as view
from views.display import label, token_labels
from views.draw import draw, draw_text
from views.intro import intro
from views.state import per_run


class Trajectories(Protocol):
    """Where the view gets a token's trajectory that the summary does not hold (cached per run)."""

    def trajectory(self, token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Probability and rank (layers,) of ``token_id`` at ``position``."""


def track(summary: LensSummary, results: Trajectories, token_id: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """A token's probability and rank per layer at a position: from the summary when it tracks that token."""
    if token_id == int(summary.target_ids[position]):
        return summary.target_probs[:, position], summary.target_ranks[:, position]
    return results.trajectory(token_id, position)


def render(cap: Capture, summary: LensSummary, findings: list, results: Trajectories, run: str, drawn: dict) -> None:
    """Draw the whole view; widget changes rerun only the fragment below.

    ``run`` identifies this prompt's run: the selections it keys start afresh with each prompt.
    ``drawn`` receives the choices drawn, for the report.
    """
    lines, elsewhere = view.held_inside_lines(findings, cap.tokens)
    for line in lines:
        draw_text(line, "info")
    draw_text(elsewhere, "caption")
    if lines or elsewhere:
        draw_text(view.HELD_INSIDE_CAVEAT, "caption")
    intro(view.lens_sentence(summary, cap.n_tokens), view.EXPLAIN, view.CAVEAT)
    _explore(cap, summary, findings, results, run, drawn)


def _window(n: int, run: str) -> tuple[int, int]:
    if n <= view.WINDOW:
        return 0, n - 1
    start, end = st.slider("Positions shown", 0, n - 1, (n - view.WINDOW, n - 1), key=per_run("lens_window", run))
    return int(start), int(end)


@st.fragment
def _explore(cap: Capture, summary: LensSummary, findings: list, results: Trajectories, run: str,
             drawn: dict) -> None:
    start, end = _window(cap.n_tokens, run)
    grid_slot = st.container()
    pos_col, tok_col = st.columns(2)
    position = pos_col.selectbox("Position to follow", range(cap.n_tokens), index=cap.n_tokens - 1,
                                 format_func=token_labels(cap.tokens).__getitem__,
                                 key=per_run("lens_position", run))
    ids, names = view.candidates(summary, position)
    choice = tok_col.selectbox("Token to track", range(len(ids)), format_func=[label(n) for n in names].__getitem__,
                               key=per_run(f"lens_token_{position}", run),
                               help="The final top guess and every layer's top guess at this position.")
    choices = view.LensChoices(start=start, end=end, position=position, token_id=ids[choice])
    drawn[view.TITLE] = choices
    content = view.content(cap, summary, findings, choices, track(summary, results, ids[choice], position))
    draw(Chart(content.grid, "lens_map"), grid_slot)
    draw_text(content.position_sentence)
    draw(Chart(content.trajectory, "lens_trajectory"))
