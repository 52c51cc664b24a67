"""CircuitsVis components as self-contained, offline, script-safe HTML.

circuitsvis's own HTML loads its JavaScript from a CDN (blank offline) and inserts token
strings as raw HTML. Here the bundle that ships inside the package is served once from
the app's static folder, token strings are HTML-escaped, and the props are written so
that no string can close the script they sit in.

Streamlit shows these documents in same-origin iframes that run scripts, so nothing from
the prompt may reach them unescaped: tokens lose their markup characters, and the props
JSON escapes every character that could end the script.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import circuitsvis
import numpy as np

from views.display import markup_free

BUNDLE = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
BUNDLE_NAME = f"circuitsvis-{circuitsvis.__version__}.js"
POSITIVE, NEGATIVE = "#e66101", "#2166ac"  # orange and blue: safe for colour-blind readers
SCRIPT_URL = f"/app/static/{BUNDLE_NAME}"  # where Streamlit serves ./static/


def install_bundle(static_dir: Path) -> Path:
    """Copy the bundle into Streamlit's static folder once; returns its path."""
    target = static_dir / BUNDLE_NAME
    if not target.is_file() or target.stat().st_size != BUNDLE.stat().st_size:
        static_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUNDLE, target)
    return target


def script_json(value: object) -> str:
    """JSON that is also safe inside an HTML ``<script>``: no ``<``, ``>``, ``&`` or line separators."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def component_html(component: str, props: dict, script_url: str = SCRIPT_URL) -> str:
    """A whole HTML document rendering one CircuitsVis component."""
    if not component.isidentifier():
        raise ValueError(f"not a component name: {component!r}")
    element = "cv-" + uuid.uuid4().hex[:12]
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        "<style>body{margin:0;font-family:system-ui,sans-serif;font-size:15px}</style></head><body>"
        f'<div id="{element}"></div>'
        f'<script src="{script_url}"></script>'
        f'<script>CircuitsVis.render("{element}", CircuitsVis.{component}, {script_json(props)});</script>'
        "</body></html>")


def attention_heads_html(attention: np.ndarray, tokens: list[str], head_names: list[str],
                         script_url: str = SCRIPT_URL) -> str:
    """All heads of one layer: ``attention`` (heads, n, n), rounded to keep the page light."""
    props = {"attention": np.round(attention.astype(float), 3).tolist(),
             "tokens": [markup_free(t) for t in tokens], "attentionHeadNames": head_names,
             "maskUpperTri": True}
    return component_html("AttentionHeads", props, script_url)


def colored_tokens_html(tokens: list[str], values: np.ndarray, script_url: str = SCRIPT_URL) -> str:
    """Tokens coloured by one signed value each (e.g. a neuron's activation), symmetric around 0."""
    bound = float(np.abs(values).max()) or 1.0
    props = {"tokens": [markup_free(t) for t in tokens], "values": np.round(values.astype(float), 4).tolist(),
             "minValue": -bound, "maxValue": bound, "positiveColor": POSITIVE, "negativeColor": NEGATIVE}
    return component_html("ColoredTokens", props, script_url)


def text_height(tokens: list[str], chars_per_line: int) -> int:
    """Pixel height for a frame of coloured tokens: their wrapped lines plus room for the hover box."""
    chars = sum(len(markup_free(t)) + 1 for t in tokens)
    return 70 + 30 * max(1, -(-chars // chars_per_line))
