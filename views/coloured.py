"""Coloured token text and bars as plain HTML for ``st.html``: no frame, no script, no bundle.

What one token reads is a line of text with a background per token; the model's next-token
guesses are five bars. As a CircuitsVis frame the first loaded and ran a 1.3 MB bundle
(TensorFlow.js included) on every page load, and as a plotly chart the second waited for
plotly's 4.7 MB; as spans both are a few kilobytes that show as soon as they arrive.

Streamlit sanitises ``st.html`` (DOMPurify; scripts never run). On top of that every
token and tooltip is HTML-escaped here, so prompt text can only ever show as text.
"""

from __future__ import annotations

import html

import numpy as np

from views.display import label, visible

ORANGE = (230, 97, 1)  # the orange of the other views (#e66101)
BLUE = "#0072b2"  # the probability blue of the lens trajectory
READER = "#2166ac"  # the blue of the other views marks the reading token


def shares_html(tokens: list[str], shares: np.ndarray) -> str:
    """``tokens`` with backgrounds from white (0) to orange (the largest share); the last one reads.

    Each token's exact share is in its tooltip and in ``data-value`` (for tests).
    """
    top = float(shares.max()) if shares.size else 0.0
    spans = []
    for position, (token, share) in enumerate(zip(tokens, shares.tolist(), strict=True)):
        strength = share / top if top > 0 else 0.0
        style = (f"background:rgba({ORANGE[0]},{ORANGE[1]},{ORANGE[2]},{strength:.3f});border-radius:3px;"
                 f"padding:1px 0{';color:#fff' if strength > 0.55 else ''}")
        note = f"position {position}: {share:.1%}"
        if position == len(tokens) - 1:
            style += f";box-shadow:inset 0 -3px 0 {READER}"
            note += " (the reading token)"
        spans.append(f'<span title="{html.escape(note)}" data-value="{share:.6f}" style="{style}">'
                     f"{html.escape(visible(token))}</span>")
    return (f'<div data-view="token-reads" style="font-size:1.05rem;line-height:2;white-space:pre-wrap">'
            f'{"".join(spans)}</div>')


def guesses_html(tokens: list[str], probs: np.ndarray) -> str:
    """One row per guess: the token, a bar as long as its probability, and the percentage.

    Bars share one scale (100% fills the row), so prompts compare at a glance.
    """
    rows = []
    for token, prob in zip(tokens, probs.tolist(), strict=True):
        text = html.escape(label(token))
        rows.append(
            f'<span data-value="{prob:.6f}" title="{text}: {prob:.1%}" '
            'style="text-align:right;white-space:pre;overflow:hidden;max-width:12em">'
            f"{text}</span>"
            '<div style="display:flex;align-items:center;gap:0.4em">'
            f'<div style="background:{BLUE};height:1.1em;border-radius:2px;min-width:2px;'
            f'width:{prob * 85:.2f}%"></div><span>{prob:.0%}</span></div>')
    return ('<div data-view="next-token-guesses" style="display:grid;grid-template-columns:max-content 1fr;'
            'gap:0.3em 0.7em;'
            f'align-items:center;font-size:1rem">{"".join(rows)}</div>')


BLUE_RGB = (33, 102, 172)  # the blue of the other views (#2166ac), for negative values


def signed_html(tokens: list[str], values: np.ndarray) -> str:
    """``tokens`` with orange backgrounds for positive values and blue for negative, as deep as |value| / max |value|.

    Each token's exact value is in its tooltip and in ``data-value`` (for tests).
    """
    bound = float(np.abs(values).max()) if values.size else 0.0
    spans = []
    for position, (token, value) in enumerate(zip(tokens, values.tolist(), strict=True)):
        strength = abs(value) / bound if bound > 0 else 0.0
        rgb = ORANGE if value >= 0 else BLUE_RGB
        style = (f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{strength:.3f});border-radius:3px;padding:1px 0"
                 f"{';color:#fff' if strength > 0.55 else ''}")
        note = html.escape(f"position {position}: {value:+.3f}")
        spans.append(f'<span title="{note}" data-value="{value:.6f}" style="{style}">'
                     f"{html.escape(visible(token))}</span>")
    return (f'<div data-view="signed-tokens" style="font-size:1.05rem;line-height:2;white-space:pre-wrap">'
            f'{"".join(spans)}</div>')
