"""Plotly figure builders: arrays in, ``go.Figure`` out. No Streamlit here.

Palettes are colour-blind safe (viridis, cividis, and blue-orange for signed values);
fonts are large enough for a lecture hall. Token text is escaped: plotly reads HTML.

Margins are reserved here from the label lengths instead of measured by plotly
(``automargin``): measuring every tick label and drawing again once they fit made
drawing the page's charts about 40% slower in the browser.

Each figure is written as one plain spec and wrapped without plotly's property-by-property
validation, which took about 0.2 s of every page run (half the script) for seven charts,
and 60 ms of every lens selection; every visitor paid it, a lecture hall of them one after
the other. The tests validate every builder's spec with plotly in full instead.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale
from plotly.subplots import make_subplots

from views.display import LABEL_CHARS, cell, layer_label, position_labels, safe

FONT = {"size": 15}
TICK_FONT = {"size": 13}
GLYPH = 0.62  # a generous average glyph width, in units of the font size
LINE_PX = 1.3 * FONT["size"]  # one line of title text
SLANT = np.sin(np.radians(60))  # x labels slanted at -60 degrees rise by this much of their length
PROB_RANGE = [-0.04, 1.04]  # a probability axis with room for the markers at 0 and 1 (off the tick labels)
COLORBAR_PX = 110  # right margin holding a colour bar, its tick labels and a short title
SIGNED = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#e66101"]]  # blue-white-orange
VIRIDIS = get_colorscale("Viridis")  # as plotly's validation would spell the named scales
CIVIDIS = get_colorscale("Cividis")


def text_px(labels: Iterable[object], size: int = TICK_FONT["size"]) -> float:
    """The width in pixels of the longest label (an HTML entity is one character)."""
    return GLYPH * size * max((len(html.unescape(str(label))) for label in labels), default=0)


def _figure(data: list[dict], layout: dict) -> go.Figure:
    """The figure of a spec built here, without validating it again property by property."""
    spec = {"data": data, "layout": layout}
    try:
        return go.Figure(spec, _validate=False)
    except TypeError:  # a plotly without that switch: validate after all
        return go.Figure(spec)


def _axis(**props: object) -> dict:
    """An axis with the page's tick font and no label measuring (automargin)."""
    return {"automargin": False, "tickfont": TICK_FONT, **props}


def _layout(title: str, height: int, *, left: float, bottom: float, right: float = 10, top: float = 50,
            **more: object) -> dict:
    """Title, fonts and fixed margins; ``more`` adds the axes and anything else."""
    return {"title": {"text": title, "font": {"size": 18}}, "font": FONT, "height": height,
            "margin": {"l": round(left), "r": round(right), "t": round(top), "b": round(bottom)},
            "hoverlabel": {"font": {"size": 15}}, **more}


def _slanted(labels: Iterable[object]) -> float:
    """The height taken by x tick labels slanted at -60 degrees."""
    return SLANT * text_px(labels) + TICK_FONT["size"]


def head_grid(scores: np.ndarray, title: str, colorbar: str) -> go.Figure:
    """Layers x heads heatmap of one score; NaN cells (nothing to measure) stay blank."""
    n_layers, n_heads = scores.shape
    text = np.where(np.isnan(scores), "", np.char.mod("%.2f", np.nan_to_num(scores)))
    heat = {"type": "heatmap", "z": scores, "x": list(range(1, n_heads + 1)), "y": list(range(1, n_layers + 1)),
            "text": text, "texttemplate": "%{text}", "colorscale": VIRIDIS, "colorbar": {"title": {"text": colorbar}},
            "hovertemplate": "layer %{y}, head %{x}: %{z:.3f}<extra></extra>"}
    return _figure([heat], _layout(
        title, 120 + 45 * n_layers, left=text_px([n_layers]) + LINE_PX + 25,
        bottom=TICK_FONT["size"] + LINE_PX + 25, right=COLORBAR_PX,
        xaxis=_axis(title={"text": "head"}, dtick=1),
        yaxis=_axis(title={"text": "layer"}, dtick=1, autorange="reversed")))


def attention_heatmap(pattern: np.ndarray, tokens: list[str], title: str) -> go.Figure:
    """One head's pattern: rows are the reading token, columns the token read."""
    n = len(tokens)
    labels = position_labels(tokens)
    shown = np.where(np.tril(np.ones((n, n), dtype=bool)), pattern, np.nan)
    heat = {"type": "heatmap", "z": shown, "x": labels, "y": labels, "colorscale": VIRIDIS, "zmin": 0, "zmax": 1,
            "hovertemplate": "%{y} reads %{x}: %{z:.1%}<extra></extra>", "colorbar": {"title": {"text": "attention"}}}
    side = min(900, 260 + 22 * n)
    # labels carry their position, so repeated tokens stay separate categories
    return _figure([heat], _layout(
        title, side, left=text_px(labels) + LINE_PX + 25, bottom=_slanted(labels) + LINE_PX + 20, right=COLORBAR_PX,
        xaxis=_axis(title={"text": "token read (key)"}, tickangle=-60, type="category"),
        yaxis=_axis(title={"text": "reading token (query)"}, autorange="reversed", type="category")))


def lens_heatmap(top_tokens: np.ndarray, top_probs: np.ndarray, tokens: list[str],
                 positions: np.ndarray, first_layer: int = 0) -> go.Figure:
    """Layers x positions: each cell's top guess as text, coloured by its probability.

    ``top_tokens``/``top_probs`` are (layers, m, k) for the ``positions`` shown; hover
    lists all k guesses.
    """
    layers, m, k = top_probs.shape
    text = [[html.escape(cell(top_tokens[layer, i, 0]), quote=False) for i in range(m)] for layer in range(layers)]
    hover = [["<br>".join(f"{safe(top_tokens[layer, i, j])}: {top_probs[layer, i, j]:.1%}" for j in range(k))
              for i in range(m)] for layer in range(layers)]
    labels = position_labels([tokens[p] for p in positions], positions)
    names = [layer_label(first_layer + i) for i in range(layers)]
    heat = {"type": "heatmap", "z": top_probs[:, :, 0], "x": list(range(m)), "y": list(range(layers)), "text": text,
            "texttemplate": "%{text}", "textfont": {"size": 13}, "customdata": hover, "zmin": 0, "zmax": 1,
            "colorscale": CIVIDIS, "colorbar": {"title": {"text": "top-guess<br>probability"}},
            "hovertemplate": "after %{y}, reading " + "%{x}<br>%{customdata}<extra></extra>"}
    return _figure([heat], _layout(
        "Top guess for the next token, layer by layer", 170 + 48 * layers,
        left=text_px(names) + 15, bottom=_slanted(labels) + LINE_PX + 20, right=COLORBAR_PX,
        xaxis=_axis(title={"text": "position in the prompt (the model predicts what comes next)"},
                    tickmode="array", tickvals=list(range(m)), ticktext=labels, tickangle=-60),
        yaxis=_axis(title={"text": ""}, tickmode="array", tickvals=list(range(layers)), ticktext=names)))


def _line(x: list[str], y: np.ndarray, name: str, color: str, axes: tuple[str, str], dash: str | None = None) -> dict:
    """One line with markers on the given (x, y) axes."""
    line = {"color": color, "width": 3} | ({"dash": dash} if dash else {})
    return {"type": "scatter", "x": x, "y": y, "name": name, "mode": "lines+markers", "line": line,
            "xaxis": axes[0], "yaxis": axes[1]}


def _subplots(titles: tuple[str, str], **options: object) -> dict:
    """The axes and subplot titles of plotly's ``make_subplots(1, 2, ...)``, as a fresh layout dict."""
    rows, cols = options.pop("shape", (1, 2))
    layout = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **options).to_dict()["layout"]
    layout.pop("template", None)
    return layout


# placeholder titles (make_subplots leaves empty ones out); trajectory() writes the real ones
# the trajectory's two charts one above the other: side by side, a phone's width left them overlapping
TRAJECTORY_GRID = _subplots(("top", "bottom"), shape=(2, 1), specs=[[{"secondary_y": True}], [{"secondary_y": False}]],
                            vertical_spacing=0.2)
EFFECT_GRID = _subplots(("Promotes", "Suppresses"), horizontal_spacing=0.18)


def _grid(grid: dict, titles: tuple[str, ...] = ()) -> dict:
    """A copy of a subplot layout with its axes made page axes, and new subplot titles if given."""
    layout = copy.deepcopy(grid)
    for name, axis in layout.items():
        if name.startswith(("xaxis", "yaxis")):
            axis.update(_axis())
    for note, title in zip(layout["annotations"], titles, strict=False):
        note["text"] = title
    return layout


def trajectory(probs: np.ndarray, ranks: np.ndarray, entropy: np.ndarray, kl: np.ndarray,
               token: str) -> go.Figure:
    """A token's probability and rank across layers, with entropy and KL to the final layer."""
    # from layer 1 on, as the lens grid beside it: the embeddings' KL (20+ nats) would squash every
    # real layer to the bottom, and both charts then read the same layers
    names = [layer_label(i) for i in range(len(probs))][1:]
    probs, ranks, entropy, kl = probs[1:], ranks[1:], entropy[1:], kl[1:]
    lines = [_line(names, probs, "probability", "#0072b2", ("x", "y")),
             _line(names, ranks, "rank (1 = top)", "#e69f00", ("x", "y2"), dash="dot"),
             _line(names, entropy, "entropy (nats)", "#009e73", ("x2", "y3")),
             _line(names, kl, "KL to final (nats)", "#cc79a7", ("x2", "y3"), dash="dash")]
    grid = _grid(TRAJECTORY_GRID, (f"{safe(token)}: probability and rank",
                                   "Uncertainty and distance to the final answer"))
    grid["yaxis"].update(title={"text": "probability"}, range=PROB_RANGE)
    powers = [10 ** i for i in range(int(np.log10(max(int(ranks.max()), 1))) + 2)]
    grid["yaxis2"].update(title={"text": "rank"}, type="log", autorange="reversed", tickvals=powers,
                          ticktext=[f"{p:,}" for p in powers])
    grid["yaxis3"].update(title={"text": "nats"})
    return _figure(lines, _layout(
        "", 640, left=text_px(["0.8"]) + LINE_PX + 25, bottom=TICK_FONT["size"] + 3 * LINE_PX + 40,
        right=text_px([f"{powers[-1]:,}"]) + LINE_PX + 25,
        legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "yref": "container"}, **grid))


def neuron_heatmap(values: np.ndarray, neuron_ids: np.ndarray, tokens: list[str], layer: int,
                   first_position: int = 0) -> go.Figure:
    """Activations (neurons, m) of the chosen neurons over ``tokens``, which start at ``first_position``."""
    low, high = min(float(values.min(initial=0.0)), 0.0), max(float(values.max(initial=0.0)), 0.0)
    if high - low == 0:
        low, high = -1.0, 1.0
    labels = position_labels(tokens, range(first_position, first_position + len(tokens)))
    names = [f"#{i}" for i in neuron_ids]
    heat = {"type": "heatmap", "z": values, "x": labels, "y": names, "zmin": low, "zmax": high,
            "colorscale": signed_scale(low, high), "colorbar": {"title": {"text": "activation"}},
            "hovertemplate": "neuron %{y} on %{x}: %{z:.3f}<extra></extra>"}
    return _figure([heat], _layout(
        f"Most active neurons of layer {layer + 1}", 200 + 24 * len(neuron_ids),
        left=text_px(names) + LINE_PX + 25, bottom=_slanted(labels) + 15, right=COLORBAR_PX,
        xaxis=_axis(type="category", tickangle=-60),
        yaxis=_axis(title={"text": "neuron"}, type="category", autorange="reversed")))


def feature_heatmap(values: np.ndarray, feature_ids: np.ndarray, labels: list[str], tokens: list[str],
                    layer: int, first_position: int = 0) -> go.Figure:
    """Activations (features, m) of the chosen features over ``tokens``; hover names each feature's label."""
    high = max(float(values.max(initial=0.0)), 1e-6)
    positions = position_labels(tokens, range(first_position, first_position + len(tokens)))
    names = [f"#{i}" for i in feature_ids]
    hover = [[safe(labels[row], 90)] * len(tokens) for row in range(len(feature_ids))]
    heat = {"type": "heatmap", "z": values, "x": positions, "y": names, "zmin": 0, "zmax": high,
            "colorscale": signed_scale(0.0, high), "colorbar": {"title": {"text": "activation"}},
            "customdata": hover, "hovertemplate": "feature %{y} on %{x}: %{z:.2f}<br>%{customdata}<extra></extra>"}
    return _figure([heat], _layout(
        f"Most active features of layer {layer + 1}", 200 + 24 * len(feature_ids),
        left=text_px(names) + LINE_PX + 25, bottom=_slanted(positions) + 15, right=COLORBAR_PX,
        xaxis=_axis(type="category", tickangle=-60),
        yaxis=_axis(title={"text": "feature"}, type="category", autorange="reversed")))


def signed_scale(low: float, high: float) -> list[list]:
    """Blue below zero, white at zero, orange above, over [low, high].

    Activations that barely go below zero get almost all of the scale's orange instead of
    wasting half of it on blue.
    """
    zero = -low / (high - low)
    reach = max(-low, high)  # each side's end colour as deep as its value: -1 beside +20 stays pale
    blue = _blend(SIGNED[1][1], SIGNED[0][1], -low / reach)
    orange = _blend(SIGNED[1][1], SIGNED[2][1], high / reach)
    scale = [[0.0, blue if zero > 0 else SIGNED[1][1]], [zero, SIGNED[1][1]], [1.0, orange]]
    return [point for i, point in enumerate(scale) if i == 0 or point[0] > scale[i - 1][0]]


def _blend(start: str, end: str, share: float) -> str:
    """The colour ``share`` of the way from ``start`` to ``end`` (hex colours)."""
    a = [int(start[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(end[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * share):02x}" for x, y in zip(a, b, strict=True))


def bars(labels: list[str], values: np.ndarray, title: str, x_title: str) -> go.Figure:
    """Horizontal bars, largest at the top; signed values coloured blue or orange."""
    bar = _signed_bar(labels, values)
    return _figure([bar], _layout(
        title, 140 + 28 * len(labels), left=text_px(bar["y"]) + 15, bottom=TICK_FONT["size"] + LINE_PX + 25,
        xaxis=_axis(title={"text": x_title}), yaxis=_axis(autorange="reversed", type="category")))


def _signed_bar(labels: list[str], values: np.ndarray, axes: tuple[str, str] | None = None) -> dict:
    """Horizontal bars, orange for positive values and blue for negative ones."""
    bar = {"type": "bar", "x": values, "y": [safe(t, LABEL_CHARS) for t in labels], "orientation": "h",
           "showlegend": False, "marker": {"color": [SIGNED[-1][1] if v >= 0 else SIGNED[0][1] for v in values]},
           "hovertemplate": "%{y}: %{x:.3f}<extra></extra>"}
    return bar | ({"xaxis": axes[0], "yaxis": axes[1]} if axes else {})


def effect_bars(promoted: list[str], promoted_values: np.ndarray, suppressed: list[str],
                suppressed_values: np.ndarray) -> go.Figure:
    """Two bar charts side by side in one figure: the tokens a direction raises and lowers most."""
    traces = [_signed_bar(promoted, promoted_values, ("x", "y")),
              _signed_bar(suppressed, suppressed_values, ("x2", "y2"))]
    grid = _grid(EFFECT_GRID)
    for x, y in (("xaxis", "yaxis"), ("xaxis2", "yaxis2")):
        grid[x].update(title={"text": "logit change"})
        grid[y].update(autorange="reversed", type="category")
    # each chart's labels in a margin of their own, sized to them: the first's on the left, the
    # second's on the right (beside its zero line, its bars reaching left), so a long token never
    # runs under the other chart's bars
    grid["yaxis2"].update(side="right")
    grid["xaxis"].update(domain=[0.0, 0.47])
    grid["xaxis2"].update(domain=[0.53, 1.0])
    for note, centre in zip(grid["annotations"], (0.235, 0.765), strict=True):
        note["x"] = centre
    return _figure(traces, _layout(
        "", 120 + 28 * max(len(promoted), len(suppressed)), left=text_px(traces[0]["y"]) + 15,
        right=text_px(traces[1]["y"]) + 15, bottom=TICK_FONT["size"] + LINE_PX + 25, **grid))


def patching_heatmap(values: np.ndarray, row_names: list[str], column_labels: list[str], title: str,
                     x_title: str) -> go.Figure:
    """Shares of the answer margin restored (rows x columns), blue below 0, orange above; 0 is white.

    ``column_labels`` are already escaped (``position_labels`` or plain numbers).
    """
    rows, cols = values.shape
    percent = np.rint(100 * np.nan_to_num(values)).astype(int)  # whole numbers: no "-0%"
    text = np.where(np.isnan(values), "", np.char.mod("%d%%", percent))
    heat = {"type": "heatmap", "z": values, "x": list(range(cols)), "y": list(range(rows)), "zmid": 0,
            "zmin": -1, "zmax": 1, "colorscale": SIGNED, "colorbar": {"title": {"text": "restored"}},
            "customdata": [[f"{row_names[r]}, {column_labels[c]}" for c in range(cols)] for r in range(rows)],
            "hovertemplate": "%{customdata}: %{z:.1%} restored<extra></extra>"}
    if cols <= 24:
        heat |= {"text": text, "texttemplate": "%{text}", "textfont": {"size": 12}}
    slanted = text_px(column_labels) > 40
    bottom = (_slanted(column_labels) if slanted else TICK_FONT["size"]) + LINE_PX + 25
    return _figure([heat], _layout(
        title, 50 + bottom + max(36 * rows, 150), left=text_px(row_names) + 15, bottom=bottom, right=COLORBAR_PX,
        xaxis=_axis(title={"text": x_title}, tickmode="array", tickvals=list(range(cols)), ticktext=column_labels,
                    tickangle=-60 if slanted else 0),
        yaxis=_axis(tickmode="array", tickvals=list(range(rows)), ticktext=row_names, autorange="reversed")))


def before_after(before: np.ndarray, after: np.ndarray, token: str,
                 new: tuple[np.ndarray, np.ndarray, str] | None = None
                 ) -> go.Figure:
    """One token's lens probability at every layer, without and with the edits; ``new``: the new top guess's too."""
    names = [layer_label(i) for i in range(len(before))]
    lines = [_line(names, before, f"{safe(token)} as the model is", "#0072b2", ("x", "y")),
             _line(names, after, f"{safe(token)} with the edits", "#0072b2", ("x", "y"), dash="dash")]
    title = f"{safe(token)}: probability after every layer"
    if new is not None:
        lines += [_line(names, new[0], f"{safe(new[2])} as the model is", "#d55e00", ("x", "y")),
                  _line(names, new[1], f"{safe(new[2])} with the edits", "#d55e00", ("x", "y"), dash="dash")]
        title = f"{safe(token)} and the new answer {safe(new[2])}, after every layer"
    return _figure(lines, _layout(
        title, 380 if new is None else 420, left=text_px(["0.8"]) + LINE_PX + 25,
        bottom=TICK_FONT["size"] + (2 if new is None else 3) * LINE_PX + 30,
        legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "yref": "container"},
        xaxis=_axis(), yaxis=_axis(title={"text": "probability"}, range=PROB_RANGE)))


def answer_tracks(tracks, name_a: str, name_b: str) -> go.Figure:
    """Each answer's lens probability after every layer, in both models: solid in A, dashed in B.

    ``tracks`` are ``backend.compare.AnswerTrack``s (probs, ranks, token, model "a" or "b"); a colour per token.
    """
    colours = ["#0072b2", "#e69f00"]
    tokens = list(dict.fromkeys(t.token for t in tracks))
    lines = []
    for track in tracks:
        probs, ranks, token, model = track.probs, track.ranks, track.token, track.model
        names = [layer_label(i) for i in range(len(probs))]
        line = _line(names, probs, f"{safe(token)} in {safe(name_a if model == 'a' else name_b)}",
                     colours[tokens.index(token) % 2], ("x", "y"), dash=None if model == "a" else "dash")
        line["customdata"] = ranks
        line["hovertemplate"] = "%{x}: %{y:.1%} (rank %{customdata})<extra>%{fullData.name}</extra>"
        lines.append(line)
    return _figure(lines, _layout(
        "The two answers, layer by layer", 400, left=text_px(["80%"]) + LINE_PX + 25,
        bottom=TICK_FONT["size"] + 3 * LINE_PX + 30,
        legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "yref": "container"},
        xaxis=_axis(), yaxis=_axis(title={"text": "probability"}, range=PROB_RANGE, tickformat=".0%")))


def kl_heatmap(kl: np.ndarray, tokens: list[str], threshold: float, layer_map: np.ndarray) -> go.Figure:
    """KL(A || B) of the two lenses, layers (from 1) x positions; the colour saturates at 4 x ``threshold``."""
    layers, n = kl.shape
    labels = position_labels(tokens)
    names = [layer_label(i) for i in range(1, layers)]
    same_depth = bool(np.array_equal(layer_map, np.arange(layers)))
    hover = "after %{y}, reading %{x}: KL %{z:.2f} nats" + ("" if same_depth else " (B at the same relative depth)")
    text = np.char.mod("%.1f", kl[1:])
    heat = {"type": "heatmap", "z": kl[1:], "x": list(range(n)), "y": list(range(layers - 1)), "zmin": 0,
            "zmax": 4 * threshold, "colorscale": CIVIDIS, "colorbar": {"title": {"text": "KL (nats)"}},
            "hovertemplate": hover + "<extra></extra>"}
    if n <= 24:
        heat |= {"text": text, "texttemplate": "%{text}", "textfont": {"size": 12}}
    return _figure([heat], _layout(
        "Where the two models part ways: KL(A || B) of their lenses", 170 + 44 * (layers - 1),
        left=text_px(names) + 15, bottom=_slanted(labels) + LINE_PX + 20, right=COLORBAR_PX,
        xaxis=_axis(title={"text": "position in the prompt"}, tickmode="array", tickvals=list(range(n)),
                    ticktext=labels, tickangle=-60),
        yaxis=_axis(tickmode="array", tickvals=list(range(layers - 1)), ticktext=names)))


def weight_change(attn: np.ndarray, mlp: np.ndarray) -> go.Figure:
    """Relative weight change of each block's attention and MLP, as grouped bars in percent."""
    blocks = [f"layer {i + 1}" for i in range(len(attn))]
    data = [{"type": "bar", "x": blocks, "y": 100 * np.nan_to_num(values), "name": name, "marker": {"color": colour},
             "hovertemplate": "%{x}, " + name + ": %{y:.1f}% changed<extra></extra>"}
            for values, name, colour in ((attn, "attention", "#0072b2"), (mlp, "MLP", "#e69f00"))]
    return _figure(data, _layout(
        "Weight change per block", 360, left=text_px(["100%"]) + LINE_PX + 25,
        bottom=TICK_FONT["size"] + 2 * LINE_PX + 30, barmode="group",
        legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "yref": "container"},
        xaxis=_axis(), yaxis=_axis(title={"text": "||W_B - W_A|| / ||W_A|| (%)"}, rangemode="tozero")))


def cross_patch_bars(patch, answer_a: str, answer_b: str) -> go.Figure:
    """Share of A's margin (``answer_a`` over ``answer_b``) restored in B by each of A's parts, as bars.

    ``patch`` is a ``backend.compare.CrossPatch``: embeddings, every block's attention and MLP, the readout.
    """
    names = ["embeddings", *(f"attention {i + 1}" for i in range(len(patch.attn))),
             *(f"MLP {i + 1}" for i in range(len(patch.mlp))), "output layer"]
    shown = 100 * np.nan_to_num(np.array([patch.embed, *patch.attn, *patch.mlp, patch.readout], np.float32))
    low, high = min(0.0, float(shown.min())), max(0.0, float(shown.max()))
    pad = 0.18 * max(high - low, 10.0)  # room for the percentages beside the bars
    bar = {"type": "bar", "x": shown, "y": names, "orientation": "h", "showlegend": False,
           "marker": {"color": [SIGNED[-1][1] if v >= 0 else SIGNED[0][1] for v in shown]},
           "text": [f"{v:.0f}%" for v in shown], "textposition": "outside", "cliponaxis": False,
           "hovertemplate": "%{y} from A: %{x:.1f}% of A's margin restored<extra></extra>"}
    return _figure([bar], _layout(
        "Putting one part of A into B", 140 + 28 * len(names), left=text_px(names) + 15, right=20,
        bottom=TICK_FONT["size"] + 2 * LINE_PX + 25,
        xaxis=_axis(title={"text": f"share of A's margin restored (%):<br>{safe(answer_a)} over {safe(answer_b)}"},
                    range=[low - pad, high + pad], zeroline=True),
        yaxis=_axis(autorange="reversed", type="category")))


def unexplained_bars(fvu_a: np.ndarray, fvu_b: np.ndarray, name_a: str, name_b: str) -> go.Figure:
    """Per MLP layer, the share of its output one dictionary cannot express, in model A and model B, side by side."""
    names = [f"MLP {i + 1}" for i in range(len(fvu_a))]
    traces = [{"type": "bar", "x": 100 * values, "y": names, "orientation": "h", "name": name,
               "marker": {"color": colour}, "text": [f"{v:.1%}" for v in values], "textposition": "outside",
               "cliponaxis": False, "hovertemplate": f"{safe(name)}, %{{y}}: %{{x:.1f}}% not expressed<extra></extra>"}
              for values, name, colour in ((fvu_a, name_a, "#0072b2"), (fvu_b, name_b, "#e69f00"))]
    top = 100 * float(max(fvu_a.max(initial=0), fvu_b.max(initial=0)))
    return _figure(traces, _layout(
        "What A's features cannot express, layer by layer", 150 + 44 * len(names), left=text_px(names) + 15,
        right=20, bottom=TICK_FONT["size"] + LINE_PX + 60, barmode="group",
        legend={"orientation": "h", "y": -0.35, "x": 0},
        xaxis=_axis(title={"text": "share of the MLP's output not expressed (%)"}, range=[0, 1.25 * max(top, 1.0)]),
        yaxis=_axis(autorange="reversed", type="category")))


CONFIG = {"displayModeBar": True, "displaylogo": False,  # the toolbar always shows; it saves a chart as a PNG
          "toImageButtonOptions": {"format": "png", "scale": 2}, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
