"""Token text made visible and safe: whitespace shown, invisible and HTML characters escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from backend.tokens import SPACE_MARK, WHITESPACE, label, quoted, visible  # noqa: F401 - the page's token text

SPECIAL = re.compile(r"<\|?[A-Za-z_][^<>]*?\|?>")


def cell(token: str, limit: int = 8) -> str:
    """A token in a small heatmap cell: special tokens such as <|endoftext|> shortened to fit."""
    text = label(token)
    if len(text) > limit and SPECIAL.fullmatch(text):
        return text[: limit - 2] + "…>"
    return text


def safe(token: str, limit: int | None = None) -> str:
    """``visible`` (cut to ``limit`` characters) then HTML-escaped: for plotly, which reads HTML.

    Quotes stay as they are: with ``<`` escaped no tag (and so no attribute) can open, and
    plotly would show ``&quot;`` literally, as it knows only a few named entities.
    """
    text = label(token)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False)


LOOKALIKES = str.maketrans({"<": "‹", ">": "›", "&": "＆"})


def markup_free(token: str) -> str:
    """``visible`` with ``<``, ``>`` and ``&`` swapped for look-alikes.

    For CircuitsVis, which uses one token string both as HTML (its token buttons) and as
    plain text (its chart labels): entities would show literally in the second place,
    and raw characters would be markup in the first. Look-alikes read right in both.
    """
    return visible(token).translate(LOOKALIKES)


LABEL_CHARS = 18  # axis labels cut longer tokens, so charts can reserve their margins in advance


def position_labels(tokens: list[str], positions: Iterable[int] | None = None) -> list[str]:
    """Axis labels for ``tokens`` at ``positions`` (default 0, 1, ...); the position keeps repeats apart."""
    positions = range(len(tokens)) if positions is None else positions
    return [f"{safe(t, LABEL_CHARS)} ·{p}" for t, p in zip(tokens, positions, strict=True)]


def token_labels(tokens: list[str]) -> list[str]:
    """Select-box labels "position: token": small strings a widget may keep (never a capture)."""
    return [f"{p}: {label(t)}" for p, t in enumerate(tokens)]


def layer_label(layer: int) -> str:
    """0 is the embeddings; i is the residual stream after block i."""
    return "embed" if layer == 0 else f"layer {layer}"


MARKDOWN_SPECIALS = "\\`*_{}[]()#+-.!|<>~$:"


AUTOLINK = re.compile(r"(?i)https?|ftp|www|mailto|@")  # what GitHub-flavoured markdown turns into a link by itself
WORD_JOINER = "\u2060"  # invisible; it breaks an address without changing what is read


def md_message(text: str) -> str:
    """A message for markdown: its ```command``` spans as inline code, everything else as ``md_escape`` shows it.

    Messages name commands between backticks ("run `hf download gpt2`"); escaped, those would
    show as literal backticks. Inside a code span markdown is literal, so only the span's own
    backticks are taken out; an unpaired backtick stays text.
    """
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an odd number of backticks: the last one pairs with nothing
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return "".join(md_escape(part) if i % 2 == 0 else f"`{part}`" if part.strip() else md_escape(f"`{part}`")
                   for i, part in enumerate(parts))


def md_escape(text: str) -> str:
    """Text that Streamlit's markdown shows literally: no links, emphasis, HTML or directives.

    Escaping brackets stops ``[text](url)`` and ``![](url)``; a bare address would still
    become a link on its own (GFM autolinks), so a word joiner follows every "http",
    "www" and "@".
    """
    escaped = "".join("\\" + ch if ch in MARKDOWN_SPECIALS else ch for ch in text)
    return AUTOLINK.sub(lambda match: match.group(0) + WORD_JOINER, escaped)
