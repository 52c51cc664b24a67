"""One self-contained HTML file of a run: the header and every view's content, in the page's order.

For slides, papers and bug reports: it opens offline and asks nothing of the network.
Plotly's JavaScript is inlined once and every chart reuses it; text is escaped. The
sections are the views' own content (``views.content``), built from the choices the page
drew, so the report says what the page said. No Streamlit here: the command line and the
page's download button both call ``report_html``.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

import plotly.io as pio
from plotly.offline import get_plotlyjs

from backend.loading import ModelInfo
from views.content import Chart, Html, Part, Section, Table, Text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ddd}.lead{font-weight:600}.caveat{color:#666}
.caption{color:#555;font-size:.92em}.info{background:#eef5fc;padding:.5em .8em;border-radius:4px}
.tokens{font-family:monospace;white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right}"""


def _chart(fig) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, include_mathjax=False,
                       config={"displaylogo": False, "responsive": True})


def part_html(part: Part) -> str:
    """One part of a view's content as HTML."""
    if isinstance(part, Chart):
        return _chart(part.figure)
    if isinstance(part, Html):
        return part.body
    if isinstance(part, Table):
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in part.header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                       for row in part.rows)
        return f"<table><tr>{head}</tr>{rows}</table>"
    if isinstance(part, Text) and part.style == "tokens":
        return f'<div class="tokens">{html.escape(part.text)}</div>'
    if isinstance(part, Text) and part.style != "plain":
        return f'<p class="{part.style}">{html.escape(part.text)}</p>'
    return f"<p>{html.escape(part.text)}</p>"


def report_html(info: ModelInfo, sections: list[Section], *, subtitle: str = "") -> str:
    """The whole report as one HTML document: a title line for the model, then each section in order."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"<h1>Model X-ray report</h1><p>{html.escape(info.name)} ({html.escape(info.family)}, "
             f"{info.n_layers} layers, {info.n_heads} heads, {info.n_params / 1e6:,.1f} M parameters) · {stamp}"
             + (f" · {html.escape(subtitle)}" if subtitle else "") + "</p>"]
    for section in sections:
        lines.append(f"<h2>{html.escape(section.title)}</h2>")
        lines += [part_html(part) for part in section.parts]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Model X-ray report</title>"
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            + "\n".join(lines) + "</body></html>")
