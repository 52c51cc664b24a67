"""What the page tests share: opening the app without a browser, and reading what it shows."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.spans import token_spans
from views.state import name_of

APP = str(Path(__file__).resolve().parent.parent / "app.py")
HOSTILE = "</script><img src=x onerror=alert(1)> [click](http://evil.example) *bold* $x$ :red[hi]"


def open_app(prompt: str | None = None, model: str | None = "demo", *, edits: str | None = None,
             compare: str | None = None, max_tokens: int | None = None, query: dict[str, str] | None = None) -> AppTest:
    """The page opened on a link with these query values (None leaves one out), run once."""
    at = AppTest.from_file(APP, default_timeout=120)
    values = {"model": model, "prompt": prompt, "edits": edits, "compare": compare, **(query or {})}
    for key, value in values.items():
        if value is not None:
            at.query_params[key] = value
    at.run()
    if max_tokens is not None:
        at.number_input(key="max_tokens").set_value(max_tokens).run()
    return at


def widget(widgets, name: str):
    """The one widget called ``name``, whether its key is plain or carries the run's id."""
    (found,) = [w for w in widgets if w.key and name_of(w.key) == name]
    return found


def shown_tokens(at: AppTest) -> str:
    """The prompt as the token block shows it, separators removed."""
    return at.text[0].value.replace(" | ", "").replace("␣", " ")


def iframes(at: AppTest) -> list[str]:
    """The CircuitsVis frames (the page's one-pixel surrogate guard left out)."""
    return [e.proto.srcdoc for e in at.main if getattr(e, "type", "") == "iframe"
            and "__xraySurrogateGuard" not in e.proto.srcdoc]


def html_views(at: AppTest, view: str) -> list[str]:
    """Every ``st.html`` element marked ``data-view="<view>"``, in page order."""
    bodies = [e.proto.body for e in at.main if getattr(e, "type", "") == "html"]
    return [body for body in bodies if f'data-view="{view}"' in body]


def html_view(at: AppTest, view: str) -> str:
    """The one ``st.html`` element marked ``data-view="<view>"``."""
    (markup,) = html_views(at, view)
    return markup


def reader_spans(at: AppTest) -> list:
    """What one token reads: the coloured tokens of the attention view."""
    return token_spans(html_view(at, "token-reads"))


def guesses(at: AppTest, which: int) -> list[tuple[str, float]]:
    """The next-token bars: 0 the header's, then the what-if view's before (1) and after (2)."""
    return [(span.text, span.value) for span in token_spans(html_views(at, "next-token-guesses")[which])]


def plotly_count(at: AppTest) -> int:
    return sum(1 for e in at.main if getattr(e, "type", "") == "plotly_chart")


def charts(at: AppTest) -> dict[str, dict]:
    """Every plotly chart's spec by its title."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {spec["layout"].get("title", {}).get("text", ""): spec for spec in specs}


def unescaped(markdown: str) -> str:
    """What markdown escaped with ``md_escape`` shows: the characters without their backslashes (and joiners)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def sentences(at: AppTest) -> list[str]:
    return [unescaped(m.value) for m in at.markdown]


def captions_of(at: AppTest) -> list[str]:
    """Every caption on the page, unescaped."""
    return [unescaped(c.value) for c in at.caption]


def errors(at: AppTest) -> list[str]:
    return [unescaped(e.value) for e in at.error]


def assert_usable(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="prompt") is not None


def plain(value):
    """JSON from plotly with its packed arrays unpacked into floats, for comparing two figures."""
    if isinstance(value, dict):
        if "bdata" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            return plain(array.astype(float).tolist())
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if np.isnan(value) else float(value)
    return value
