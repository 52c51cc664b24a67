"""The attention view's content: every head scored, one head up close, what one token reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.capture import Capture
from backend.heads import SCORE_NAMES, HeadScores
from views import captions, coloured, figures
from views.content import Chart, Html, Section, Text, present, text

TITLE = "Attention"
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


@dataclass(frozen=True)
class AttentionChoices:
    """What the reader picked: a score to rank heads by, one head (layer and head from 0), a reading token."""

    score: str
    layer: int
    head: int
    query: int


def top_head(score: np.ndarray, name: str) -> tuple[int, int]:
    """(layer, head) that scores highest (lowest for entropy); NaN cells never win."""
    values = -np.nan_to_num(score, nan=np.inf) if name == "entropy" else np.nan_to_num(score, nan=-1.0)
    layer, head = np.unravel_index(int(np.argmax(values)), score.shape)
    return int(layer), int(head)


def content_sentence(scores: HeadScores) -> str:
    """The view's opening sentence (it does not depend on the choices)."""
    return captions.attention_sentence(scores)


def defaults(cap: Capture, scores: HeadScores, score: str | None = None) -> AttentionChoices:
    """The view's opening: the behaviour this prompt shows most clearly, its top head, the last token reading."""
    score = score or captions.clearest_behaviour(scores)
    layer, head = top_head(scores.get(score), score)
    return AttentionChoices(score=score, layer=layer, head=head, query=cap.n_tokens - 1)


@dataclass(frozen=True, eq=False)
class AttentionContent:
    """Everything the attention view shows for one choice of head and reading token."""

    sentence: str
    grid: go.Figure
    grid_note: str
    nothing_to_score: str | None
    head_map: go.Figure
    reader_sentence: str
    reader_html: str

    def section(self) -> Section:
        """The view as the report writes it."""
        return Section(TITLE, present(
            Text(self.sentence, "lead"), Chart(self.grid, "attention_grid"), text(self.nothing_to_score, "info"),
            Text(self.grid_note, "caption"), Chart(self.head_map, "attention_head_map"),
            Text(self.reader_sentence), Html(self.reader_html), Text(CAVEAT, "caveat")))


def content(cap: Capture, scores: HeadScores, choices: AttentionChoices) -> AttentionContent:
    """The view's sentences, figures and coloured text for ``choices``."""
    score = scores.get(choices.score)
    top_layer, top = top_head(score, choices.score)
    layer, head, query = choices.layer, choices.head, choices.query
    shares = cap.attention[layer, head, query, : query + 1]
    return AttentionContent(
        sentence=content_sentence(scores),
        grid=figures.head_grid(score, SCORE_NAMES[choices.score].split(":")[0], choices.score.replace("_", " ")),
        grid_note=f"Highest: head {top_layer + 1}.{top + 1}, picked below by default.",
        nothing_to_score=("This prompt has no repeated token, so there is nothing to score. Try the repeated-words "
                          "example.") if np.isnan(score).all() else None,
        head_map=figures.attention_heatmap(cap.attention[layer, head], cap.tokens,
                                           f"Head {layer + 1}.{head + 1}: who reads whom"),
        reader_sentence=captions.reader_sentence(cap.tokens, shares, layer + 1, head + 1),
        reader_html=coloured.shares_html(cap.tokens[: query + 1], shares))
