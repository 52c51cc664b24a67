"""Read back the HTML of ``views.coloured`` as a browser would parse it."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

ALLOWED = {"div", "span"}  # anything else (a tag from the prompt) fails the reading


@dataclass
class Span:
    text: str
    value: float
    title: str
    style: str


def token_spans(markup: str) -> list[Span]:
    """Every span that carries a ``data-value``: its text (entities decoded), value, tooltip and style."""
    spans: list[Span] = []
    open_tags: list[Span | None] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in ALLOWED:
                raise AssertionError(f"unexpected <{tag}> in coloured tokens")
            values = dict(attrs)
            span = Span("", float(values["data-value"]), values.get("title", ""), values.get("style", "")) \
                if "data-value" in values else None
            if span is not None:
                spans.append(span)
            open_tags.append(span)

        def handle_endtag(self, tag):
            open_tags.pop()

        def handle_data(self, data):
            if open_tags and open_tags[-1] is not None:
                open_tags[-1].text += data

    Parser(convert_charrefs=True).feed(markup)
    assert not open_tags, "unclosed tags"
    return spans
