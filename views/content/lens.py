"""The logit-lens view's content: the top guess after every layer, what is held inside, one token's trajectory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.capture import Capture
from backend.lens import LensSummary
from views import captions, figures
from views.content import Chart, Section, Text, present, text
from views.display import label

TITLE = "Logit lens"
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
HELD_INSIDE_CAVEAT = (
    "Held inside: an earlier layer's lens ranked this token above what the model says, and it keeps a real share "
    "at the output. The lens reads inner layers with the output layer, trained for the last layer only, so this "
    "is a reading of what those layers encode, not proof of what the model knows; it fires on about 2% of "
    "ordinary positions of the demo model too.")
WINDOW = 16


@dataclass(frozen=True)
class LensChoices:
    """The positions shown in the grid (first and last), the position followed and the token tracked there."""

    start: int
    end: int
    position: int
    token_id: int


def candidates(summary: LensSummary, position: int) -> tuple[list[int], list[str]]:
    """The tokens worth tracking at a position: the final top-k, then each layer's top guess, without repeats."""
    ids: list[int] = []
    names: list[str] = []
    pairs = list(zip(summary.top_ids[-1, position], summary.top_tokens[-1, position], strict=True))
    pairs += list(zip(summary.top_ids[::-1, position, 0], summary.top_tokens[::-1, position, 0], strict=True))
    for token_id, name in pairs:
        if int(token_id) not in ids:
            ids.append(int(token_id))
            names.append(str(name))
    return ids, names


def defaults(cap: Capture, summary: LensSummary) -> LensChoices:
    """The last ``WINDOW`` positions, the last one followed, its final top guess tracked."""
    last = cap.n_tokens - 1
    return LensChoices(start=max(0, cap.n_tokens - WINDOW), end=last, position=last,
                       token_id=int(summary.target_ids[last]))


def held_inside_lines(findings: list, tokens: tuple[str, ...]) -> tuple[list[str], str | None]:
    """``backend.suppressed`` findings as sentences: the last position's in full, the others in one line."""
    n_tokens = len(tokens)
    last = [captions.finding_sentence(f, tokens) for f in findings if f.position == n_tokens - 1]
    others = [f for f in findings if f.position != n_tokens - 1]
    if not others:
        return last, None
    shown = "; ".join(f"position {f.position}: {label(f.token)} inside, {label(f.said)} said (after layer "
                      f"{f.layer})" for f in others[:4])
    more = f" and {len(others) - 4} more" if len(others) > 4 else ""
    return last, f"Also held inside and pushed down at the output: {shown}{more}."


def lens_sentence(summary: LensSummary, n_tokens: int) -> str:
    """The view's opening sentence: the last position's story."""
    return captions.lens_sentence(summary, n_tokens - 1)


@dataclass(frozen=True, eq=False)
class LensContent:
    """Everything the lens view shows for one choice of positions and token."""

    sentence: str
    held_inside: tuple[str, ...]
    held_elsewhere: str | None
    grid: go.Figure
    position_sentence: str | None  # only for a position other than the last, whose story the lead tells
    trajectory: go.Figure

    def section(self) -> Section:
        """The view as the report writes it."""
        held = [Text(line, "info") for line in self.held_inside]
        caveat = [Text(HELD_INSIDE_CAVEAT, "caption")] if self.held_inside or self.held_elsewhere else []
        return Section(TITLE, present(
            *held, text(self.held_elsewhere, "caption"), *caveat, Text(self.sentence, "lead"),
            Chart(self.grid, "lens_map"), text(self.position_sentence), Chart(self.trajectory, "lens_trajectory"),
            Text(CAVEAT, "caveat")))


def content(cap: Capture, summary: LensSummary, findings: list, choices: LensChoices,
            track: tuple[np.ndarray, np.ndarray]) -> LensContent:
    """The view for ``choices``; ``track`` is the tracked token's (probs, ranks) per layer at the position."""
    shown = np.arange(choices.start, choices.end + 1)
    position = choices.position
    names = dict(zip(*candidates(summary, position), strict=True))
    lines, elsewhere = held_inside_lines(findings, cap.tokens)
    probs, ranks = track
    # the embeddings row left out: read through the output layer, an embedding mostly "predicts" its own
    # token at about 100%, which says nothing about the next one and misleads a newcomer
    return LensContent(
        sentence=lens_sentence(summary, cap.n_tokens), held_inside=tuple(lines),
        held_elsewhere=elsewhere,
        grid=figures.lens_heatmap(summary.top_tokens[1:, shown], summary.top_probs[1:, shown], cap.tokens, shown,
                                  first_layer=1),
        position_sentence=captions.lens_sentence(summary, position) if position != cap.n_tokens - 1 else None,
        trajectory=figures.trajectory(probs, ranks, summary.entropy[:, position], summary.kl_to_final[:, position],
                                      names.get(choices.token_id, "")))
