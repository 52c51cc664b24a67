"""Streamlit draws a view's content parts (``views.content``): every text escaped, each chart with the page's config."""

from __future__ import annotations

import streamlit as st

from views import figures
from views.content import Chart, Html, Part, Table, Text
from views.display import md_escape


def draw(part: Part | None, where=st) -> None:
    """Draw one part in ``where`` (the page, a column or a container); ``None`` draws nothing."""
    if part is None:
        return
    if isinstance(part, Chart):
        where.plotly_chart(part.figure, width="stretch", config=figures.CONFIG, key=part.key)
    elif isinstance(part, Html):
        where.html(part.body)
    elif isinstance(part, Table):
        header = "| " + " | ".join(md_escape(c) for c in part.header) + " |"
        rule = "|" + "|".join(":---" for _ in part.header) + "|"
        rows = ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in part.rows]
        where.markdown("\n".join([header, rule, *rows]))
    elif part.style == "lead":
        where.markdown(f"**{md_escape(part.text)}**")
    elif part.style in ("caption", "caveat"):
        where.caption(md_escape(part.text))
    elif part.style == "info":
        where.info(md_escape(part.text))
    elif part.style == "tokens":
        where.text(part.text)  # plain text: no syntax highlighter to load
    else:
        where.markdown(md_escape(part.text))


def draw_text(value: str | None, style: str = "plain", where=st) -> None:
    """Draw a sentence as a ``Text`` part (nothing for ``None``)."""
    if value:
        draw(Text(value, style), where)
