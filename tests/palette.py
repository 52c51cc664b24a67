"""What the palette tests share: every colour a plotly figure uses, and whether a colour-blind reader can tell them.

Allowed: the Okabe-Ito palette (Wong, Nature Methods 2011), greys, the blue-orange diverging
pair of the signed views and the shades between it and its near-white middle, and the
Viridis and Cividis scales. Red against green, the pair most readers with a colour deficiency
confuse, is not among them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from plotly.colors import get_colorscale

OKABE_ITO = {"#000000", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#999999"}
BLUE, WHITE, ORANGE = "#2166ac", "#f7f7f7", "#e66101"
SCALES = [get_colorscale("Viridis"), get_colorscale("Cividis")]


def _rgb(colour: str) -> np.ndarray:
    colour = colour.strip().lower()
    if colour.startswith("#"):
        digits = colour[1:]
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        return np.array([int(digits[i:i + 2], 16) for i in (0, 2, 4)], float)
    if colour.startswith("rgb"):
        return np.array([float(v) for v in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3]])
    named = {"white": "#ffffff", "black": "#000000"}
    if colour in named:
        return _rgb(named[colour])
    raise AssertionError(f"a colour this test cannot read: {colour!r}")


def _on_segment(rgb: np.ndarray, start: str, end: str) -> bool:
    a, b = _rgb(start), _rgb(end)
    share = float(np.dot(rgb - a, b - a) / np.dot(b - a, b - a))
    return -0.01 <= share <= 1.01 and float(np.abs(a + share * (b - a) - rgb).max()) <= 2.0


def safe(colour: str) -> bool:
    """An allowed colour: Okabe-Ito, a grey, or a shade on the signed blue-white-orange ramp."""
    rgb = _rgb(colour)
    if colour.strip().lower() in OKABE_ITO or np.ptp(rgb) <= 1:
        return True
    return _on_segment(rgb, WHITE, BLUE) or _on_segment(rgb, WHITE, ORANGE)


def colours(value, key: str = "") -> Iterator[tuple[str, object]]:
    """Every (property, colour or colour scale) in a figure's dict, walked recursively."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from colours(v, k)
    elif key == "colorscale":
        yield key, value
    elif key.endswith("color") and value is not None:
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, (list, tuple, np.ndarray)):
            for v in value:
                if isinstance(v, str):
                    yield key, v
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, dict):
                yield from colours(v, key)


def problems(figure) -> list[str]:
    """The colours of ``figure`` a colour-blind reader could confuse (none: an empty list)."""
    found = []
    drawn = figure.to_dict()
    drawn["layout"] = {k: v for k, v in drawn.get("layout", {}).items() if k != "template"}  # plotly's, unused
    for key, value in colours(drawn):
        if key == "colorscale":
            stops = [[float(p), c] for p, c in value]
            if stops in [[[float(p), c] for p, c in s] for s in SCALES]:
                continue
            found += [f"colorscale stop {c}" for _, c in stops if not safe(c)]
        elif not safe(value):
            found.append(f"{key} {value}")
    return found
