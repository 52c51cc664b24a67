"""One self-contained HTML file of a run: the header and every view's figures and sentences.

For slides, papers and bug reports: it opens offline and asks nothing of the network.
Plotly's JavaScript is inlined once and every chart reuses it; token text is escaped.
No Streamlit here: the command line and the page's download button both call ``report_html``.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

import numpy as np
import plotly.io as pio
from plotly.offline import get_plotlyjs

from backend.capture import Capture
from backend.compare import PART_WAYS_NATS
from backend.heads import SCORE_NAMES, HeadScores
from backend.lens import LensSummary
from backend.loading import ModelInfo
from backend.neurons import NeuronEffect
from views import captions, coloured, figures
from views.display import quoted, visible

LENS_WINDOW = 16
TOP_NEURONS = 20
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ddd}.lead{font-weight:600}.caveat{color:#666}
.tokens{font-family:monospace;white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px}"""


def _chart(fig) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, include_mathjax=False,
                       config={"displaylogo": False, "responsive": True})


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>"


def top_neuron(cap: Capture, layer: int) -> tuple[int, int]:
    """(position, neuron) of the largest |activation| in ``layer``, the first token left out when there are others."""
    start = 1 if cap.n_tokens > 1 else 0
    acts = cap.neurons[layer, start:]
    position, neuron = np.unravel_index(int(np.abs(acts).argmax()), acts.shape)
    return int(position) + start, int(neuron)


def compare_section(diff, name_a: str, name_b: str) -> list[str]:
    """The Compare tab as report sections: both models' guesses, the sentence, the four charts."""
    if diff is None:
        return []
    a_title, b_title = captions.model_titles(name_a, name_b)
    parts = ["<h2>Compare</h2>"]
    for title, guesses in ((a_title, diff.guesses_a), (b_title, diff.guesses_b)):
        parts += [_p(f"{title} says next:"),
                  coloured.guesses_html([t for _, t, _ in guesses], np.array([p for _, _, p in guesses]))]
    parts += [_p(captions.compare_sentence(diff, "A", "B"), "lead"),
              _chart(figures.answer_tracks(diff.tracks, a_title, b_title)),
              _chart(figures.kl_heatmap(diff.kl, diff.a.tokens, PART_WAYS_NATS, diff.layer_map))]
    if diff.weights is not None:
        parts.append(_chart(figures.weight_change(diff.weights.attn, diff.weights.mlp)))
    if diff.patch is not None:
        parts.append(_chart(figures.cross_patch_bars(diff.patch, diff.answer_a, diff.answer_b)))
    if diff.not_applicable:
        parts.append(_p(diff.not_applicable))
    parts.append(_p("The lens reads inner layers with the output layer, trained for the last layer only: 'inside' "
                    "means readable by the lens.", "caveat"))
    return parts


def report_html(info: ModelInfo, cap: Capture, summary: LensSummary, scores: HeadScores,
                effect: NeuronEffect, *, findings: tuple = (), diff=None, name_b: str = "") -> str:
    """The whole report as one HTML document. ``effect`` is the neuron view's chosen neuron.

    ``findings`` (``backend.suppressed``) go under the lens; ``diff`` (``backend.compare``, with the second
    model's name ``name_b``) adds the Compare section.
    """
    last = cap.n_tokens - 1
    behaviour = captions.clearest_behaviour(scores)
    score = np.nan_to_num(scores.get(behaviour), nan=-1.0)
    layer, head = (int(i) for i in np.unravel_index(int(score.argmax()), score.shape))
    shares = cap.attention[layer, head, last, : last + 1]
    shown = np.arange(max(0, cap.n_tokens - LENS_WINDOW), cap.n_tokens)
    acts = cap.neurons[effect.layer, 1:] if cap.n_tokens > 1 else cap.neurons[effect.layer]
    top = np.argsort(-np.abs(acts).max(axis=0), kind="stable")[:TOP_NEURONS]
    sections = [
        f"<h1>Model X-ray report</h1><p>{html.escape(info.name)} ({html.escape(info.family)}, {info.n_layers} layers, "
        f"{info.n_heads} heads, {info.n_params / 1e6:,.1f} M parameters) · "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Prompt</h2>", f'<div class="tokens">{html.escape(" | ".join(visible(t) for t in cap.tokens))}</div>',
        _p(f"{cap.n_tokens} tokens. Its guess for the next token:"),
        coloured.guesses_html(list(summary.top_tokens[-1, -1]), summary.top_probs[-1, -1]),
        *compare_section(diff, info.name, name_b),
        "<h2>Attention</h2>", _p(captions.attention_sentence(scores), "lead"),
        _chart(figures.head_grid(scores.get(behaviour), SCORE_NAMES[behaviour].split(":")[0],
                                 behaviour.replace("_", " "))),
        _chart(figures.attention_heatmap(cap.attention[layer, head], cap.tokens,
                                         f"Head {layer + 1}.{head + 1}: who reads whom")),
        _p(captions.reader_sentence(cap.tokens, shares, layer + 1, head + 1)),
        coloured.shares_html(cap.tokens[: last + 1], shares),
        _p("Attention shows where a head reads from, not why the model says what it says.", "caveat"),
        "<h2>Logit lens</h2>", _p(captions.lens_sentence(summary, last), "lead"),
        *(_p(captions.finding_sentence(f)) for f in findings if f.position == last),
        _chart(figures.lens_heatmap(summary.top_tokens[:, shown], summary.top_probs[:, shown], cap.tokens, shown)),
        _chart(figures.trajectory(summary.target_probs[:, last], summary.target_ranks[:, last],
                                  summary.entropy[:, last], summary.kl_to_final[:, last],
                                  summary.top_tokens[-1, last, 0])),
        _p("Early layers were never trained to be read this way; trust the last few layers most.", "caveat"),
        "<h2>Neurons</h2>",
        _p(captions.neuron_sentence(effect.layer, effect.neuron,
                                    float(cap.neurons[effect.layer, effect.position, effect.neuron]),
                                    cap.tokens[effect.position]), "lead"),
        _chart(figures.neuron_heatmap(acts[:, top].T, top, cap.tokens[1:] if cap.n_tokens > 1 else cap.tokens,
                                      effect.layer, first_position=1 if cap.n_tokens > 1 else 0)),
        _p(f"What neuron {effect.neuron} writes: change in next-token scores after "
           f"{quoted(cap.tokens[effect.position])} per unit of activation."),
        _chart(figures.effect_bars(effect.promoted, effect.promoted_values, effect.suppressed,
                                   effect.suppressed_values)),
        _p("Single neurons are rarely clean concepts.", "caveat"),
    ]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Model X-ray report</title>"
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            + "\n".join(sections) + "</body></html>")
