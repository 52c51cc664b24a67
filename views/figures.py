"""Plotly figure builders: arrays in, ``go.Figure`` out. No Streamlit here.

Palettes are colour-blind safe (viridis, cividis, and blue-orange for signed values);
fonts are large enough for a lecture hall. Token text is escaped: plotly reads HTML.

Margins are reserved here from the label lengths instead of measured by plotly
(``automargin``): measuring every tick label and drawing again once they fit made
drawing the page's charts about 40% slower in the browser.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from views.display import LABEL_CHARS, layer_label, position_labels, safe

FONT = {"size": 15}
TICK_FONT = {"size": 13}
GLYPH = 0.62  # a generous average glyph width, in units of the font size
LINE_PX = 1.3 * FONT["size"]  # one line of title text
SLANT = np.sin(np.radians(60))  # x labels slanted at -60 degrees rise by this much of their length
COLORBAR_PX = 110  # right margin holding a colour bar, its tick labels and a short title
SIGNED = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#e66101"]]  # blue-white-orange


def text_px(labels: Iterable[object], size: int = TICK_FONT["size"]) -> float:
    """The width in pixels of the longest label (an HTML entity is one character)."""
    return GLYPH * size * max((len(html.unescape(str(label))) for label in labels), default=0)


def _layout(fig: go.Figure, title: str, height: int, *, left: float, bottom: float, right: float = 10,
            top: float = 50) -> go.Figure:
    """Title, fonts and fixed margins; plotly's label measuring (automargin) is off."""
    fig.update_layout(title={"text": title, "font": {"size": 18}}, font=FONT, height=height,
                      margin={"l": round(left), "r": round(right), "t": round(top), "b": round(bottom)},
                      hoverlabel={"font_size": 15})
    fig.update_xaxes(automargin=False, tickfont=TICK_FONT)
    fig.update_yaxes(automargin=False, tickfont=TICK_FONT)
    return fig


def _slanted(labels: Iterable[object]) -> float:
    """The height taken by x tick labels slanted at -60 degrees."""
    return SLANT * text_px(labels) + TICK_FONT["size"]


def head_grid(scores: np.ndarray, title: str, colorbar: str) -> go.Figure:
    """Layers x heads heatmap of one score; NaN cells (nothing to measure) stay blank."""
    n_layers, n_heads = scores.shape
    text = np.where(np.isnan(scores), "", np.char.mod("%.2f", np.nan_to_num(scores)))
    fig = go.Figure(go.Heatmap(
        z=scores, x=list(range(1, n_heads + 1)), y=list(range(1, n_layers + 1)),
        text=text, texttemplate="%{text}", colorscale="Viridis", colorbar={"title": colorbar},
        hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title="head", dtick=1)
    fig.update_yaxes(title="layer", dtick=1, autorange="reversed")
    return _layout(fig, title, 120 + 45 * n_layers, left=text_px([n_layers]) + LINE_PX + 25,
                   bottom=TICK_FONT["size"] + LINE_PX + 25, right=COLORBAR_PX)


def attention_heatmap(pattern: np.ndarray, tokens: list[str], title: str) -> go.Figure:
    """One head's pattern: rows are the reading token, columns the token read."""
    n = len(tokens)
    labels = position_labels(tokens)
    shown = np.where(np.tril(np.ones((n, n), dtype=bool)), pattern, np.nan)
    fig = go.Figure(go.Heatmap(
        z=shown, x=labels, y=labels, colorscale="Viridis", zmin=0, zmax=1,
        hovertemplate="%{y} reads %{x}: %{z:.1%}<extra></extra>", colorbar={"title": "attention"}))
    # labels carry their position, so repeated tokens stay separate categories
    fig.update_xaxes(title="token read (key)", tickangle=-60, type="category")
    fig.update_yaxes(title="reading token (query)", autorange="reversed", type="category")
    side = min(900, 260 + 22 * n)
    return _layout(fig, title, side, left=text_px(labels) + LINE_PX + 25,
                   bottom=_slanted(labels) + LINE_PX + 20, right=COLORBAR_PX)


def lens_heatmap(top_tokens: np.ndarray, top_probs: np.ndarray, tokens: list[str],
                 positions: np.ndarray) -> go.Figure:
    """Layers x positions: each cell's top guess as text, coloured by its probability.

    ``top_tokens``/``top_probs`` are (layers, m, k) for the ``positions`` shown; hover
    lists all k guesses.
    """
    layers, m, k = top_probs.shape
    text = [[safe(top_tokens[layer, i, 0]) for i in range(m)] for layer in range(layers)]
    hover = [["<br>".join(f"{safe(top_tokens[layer, i, j])}: {top_probs[layer, i, j]:.1%}" for j in range(k))
              for i in range(m)] for layer in range(layers)]
    labels = position_labels([tokens[p] for p in positions], positions)
    fig = go.Figure(go.Heatmap(
        z=top_probs[:, :, 0], x=list(range(m)), y=list(range(layers)), text=text,
        texttemplate="%{text}", textfont={"size": 13}, customdata=hover, zmin=0, zmax=1,
        colorscale="Cividis", colorbar={"title": "top-guess<br>probability"},
        hovertemplate="after %{y}, reading " + "%{x}<br>%{customdata}<extra></extra>"))
    fig.update_xaxes(title="position in the prompt (the model predicts what comes next)",
                     tickmode="array", tickvals=list(range(m)), ticktext=labels, tickangle=-60)
    names = [layer_label(i) for i in range(layers)]
    fig.update_yaxes(title="", tickmode="array", tickvals=list(range(layers)), ticktext=names)
    return _layout(fig, "Top guess for the next token, layer by layer", 170 + 48 * layers,
                   left=text_px(names) + 15, bottom=_slanted(labels) + LINE_PX + 20, right=COLORBAR_PX)


def trajectory(probs: np.ndarray, ranks: np.ndarray, entropy: np.ndarray, kl: np.ndarray,
               token: str) -> go.Figure:
    """A token's probability and rank across layers, with entropy and KL to the final layer."""
    layers = list(range(len(probs)))
    names = [layer_label(i) for i in layers]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"{safe(token)}: probability and rank", "Uncertainty and distance to the final answer"),
        specs=[[{"secondary_y": True}, {"secondary_y": False}]])
    fig.add_trace(go.Scatter(x=names, y=probs, name="probability", mode="lines+markers",
                             line={"color": "#0072b2", "width": 3}), 1, 1)
    fig.add_trace(go.Scatter(x=names, y=ranks, name="rank (1 = top)", mode="lines+markers",
                             line={"color": "#e69f00", "dash": "dot", "width": 3}), 1, 1, secondary_y=True)
    fig.add_trace(go.Scatter(x=names, y=entropy, name="entropy (nats)", mode="lines+markers",
                             line={"color": "#009e73", "width": 3}), 1, 2)
    fig.add_trace(go.Scatter(x=names, y=kl, name="KL to final (nats)", mode="lines+markers",
                             line={"color": "#cc79a7", "dash": "dash", "width": 3}), 1, 2)
    fig.update_yaxes(title="probability", range=[0, 1], row=1, col=1, secondary_y=False)
    powers = [10 ** i for i in range(int(np.log10(max(int(ranks.max()), 1))) + 2)]
    fig.update_yaxes(title="rank", type="log", autorange="reversed", tickvals=powers,
                     ticktext=[f"{p:,}" for p in powers], row=1, col=1, secondary_y=True)
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "yref": "container"})
    return _layout(fig, "", 420, left=text_px(["0.8"]) + LINE_PX + 25,
                   bottom=TICK_FONT["size"] + 2 * LINE_PX + 30, right=text_px([f"{powers[-1]:,}"]) + LINE_PX + 25)


def neuron_heatmap(values: np.ndarray, neuron_ids: np.ndarray, tokens: list[str], layer: int,
                   first_position: int = 0) -> go.Figure:
    """Activations (neurons, m) of the chosen neurons over ``tokens``, which start at ``first_position``."""
    bound = float(np.abs(values).max()) or 1.0
    labels = position_labels(tokens, range(first_position, first_position + len(tokens)))
    names = [f"#{i}" for i in neuron_ids]
    fig = go.Figure(go.Heatmap(
        z=values, x=labels, y=names, zmid=0,
        zmin=-bound, zmax=bound, colorscale=SIGNED, colorbar={"title": "activation"},
        hovertemplate="neuron %{y} on %{x}: %{z:.3f}<extra></extra>"))
    fig.update_xaxes(type="category", tickangle=-60)
    fig.update_yaxes(title="neuron", type="category", autorange="reversed")
    return _layout(fig, f"Most active neurons of layer {layer + 1}", 200 + 24 * len(neuron_ids),
                   left=text_px(names) + LINE_PX + 25, bottom=_slanted(labels) + 15, right=COLORBAR_PX)


def bars(labels: list[str], values: np.ndarray, title: str, x_title: str) -> go.Figure:
    """Horizontal bars, largest at the top; signed values coloured blue or orange."""
    bar = _signed_bar(labels, values)
    fig = go.Figure(bar)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title=x_title)
    return _layout(fig, title, 140 + 28 * len(labels), left=text_px(bar.y) + 15,
                   bottom=TICK_FONT["size"] + LINE_PX + 25)


def _signed_bar(labels: list[str], values: np.ndarray) -> go.Bar:
    """Horizontal bars, orange for positive values and blue for negative ones."""
    return go.Bar(x=values, y=[safe(t, LABEL_CHARS) for t in labels], orientation="h", showlegend=False,
                  marker_color=[SIGNED[-1][1] if v >= 0 else SIGNED[0][1] for v in values],
                  hovertemplate="%{y}: %{x:.3f}<extra></extra>")


def effect_bars(promoted: list[str], promoted_values: np.ndarray, suppressed: list[str],
                suppressed_values: np.ndarray) -> go.Figure:
    """Two bar charts side by side in one figure: the tokens a direction raises and lowers most."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Promotes", "Suppresses"), horizontal_spacing=0.18)
    traces = [_signed_bar(promoted, promoted_values), _signed_bar(suppressed, suppressed_values)]
    for col, bar in enumerate(traces, 1):
        fig.add_trace(bar, 1, col)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
        fig.update_xaxes(title="logit change", row=1, col=col)
    # the left margin holds the first chart's labels; the second's sit in the gap between the two
    return _layout(fig, "", 120 + 28 * max(len(promoted), len(suppressed)), left=text_px(traces[0].y) + 15,
                   bottom=TICK_FONT["size"] + LINE_PX + 25)
