"""What each view shows, as plain data: built once from typed results, drawn by the page, written by the report.

A view's content is a frozen dataclass of sentences, figures and HTML, built by a pure
function of the run's results and the reader's choices (which head, which neuron). The
page draws its fields where its widgets put them; the HTML report writes ``parts()`` in
order. Both read the same object, so the report can never disagree with the page. No
Streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go


@dataclass(frozen=True)
class Text:
    """Plain text (escaped wherever it is drawn); ``style`` is lead, plain, caption, info or caveat."""

    text: str
    style: str = "plain"


@dataclass(frozen=True, eq=False)
class Chart:
    """A plotly figure and the page's widget key for it."""

    figure: go.Figure
    key: str


@dataclass(frozen=True)
class Html:
    """A fragment of HTML built from escaped text (``st.html`` on the page, inline in the report)."""

    body: str


@dataclass(frozen=True)
class Table:
    """A small table of plain-text cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Part = Text | Chart | Html | Table


@dataclass(frozen=True, eq=False)
class Section:
    """One view's content in the report's order: its title, lead sentence, parts and caveat."""

    title: str
    parts: tuple[Part, ...]


def present(*parts: Part | None) -> tuple[Part, ...]:
    """The parts that exist (a view leaves out what this run has none of)."""
    return tuple(part for part in parts if part is not None)


def text(value: str | None, style: str = "plain") -> Text | None:
    """A ``Text`` part, or nothing for an empty string."""
    return Text(value, style) if value else None
