"""The compare view's content: one prompt through two models, where they part ways and where the difference lives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.compare import PART_WAYS_NATS, ModelDiff
from backend.loading import TWIN_ID
from views import captions, coloured, figures
from views.content import Chart, Html, Section, Table, Text, present, text
from views.content.circuit_diff import CircuitContent, ScanContent
from views.display import quoted

TITLE = "Compare"
EXPLAIN = f"""
The same prompt goes through two models that read text the same way (typically a base
model **A** and a fine-tuned version of it, **B**). Each chart compares them:

- **The two answers, layer by layer**: the probability each model's logit lens gives to
  A's answer and to B's answer after every layer, solid for A and dashed for B. If B's
  line for A's answer climbs inside and falls only at the end, B still computes the
  answer and its last layers push it down: the fine-tune changed what it *says* more than
  what it *knows*.
- **Where they part ways**: KL divergence between the two models' lens distributions, at
  every layer and position (0 = identical; {PART_WAYS_NATS} nats or more counts as parted).
- **Weight change**: how much each block's attention and MLP weights moved,
  ||W_B − W_A|| / ||W_A||. It does not depend on the prompt.
- **Putting one part of A into B**: B runs the prompt with one part's output taken from A. Each
  bar is the share of A's margin of its answer over B's answer that comes back (100%:
  B now prefers A's answer as much as A does). This is *activation patching* across models.
"""
CAVEAT = ("The lens reads inner layers with the output layer, which was trained for the last layer only: "
          "'inside' means readable by the lens. Patching one part at a time shows where a difference can be "
          "undone on this prompt, not every place the fine-tune changed.")
HEADS_NOTE = ("Mean over positions of the total-variation distance between the two models' attention patterns: 0 is "
              "the same pattern, 1 is reading entirely different tokens.")


@dataclass(frozen=True, eq=False)
class SideBySide:
    """What each model says next: a title and its guesses as HTML, for A and for B; what each goes on to say."""

    titles: tuple[str, str]  # "A (name)", "B (name)"
    leads: tuple[str, str]  # what each says next: "'␣Paris' (100%), then:"
    guesses: tuple[str, str]
    goes_on: tuple[str, str] = ("", "")  # each model's greedy continuation as text ("" when not run)
    verdict: str = ""  # the plain verdict, for anyone (views.captions.plain_verdict)

    def answers(self) -> tuple[str, ...]:
        """The lines a phone shows first: what each model goes on to say."""
        return tuple(f"{title} goes on: “{text.strip()}”" for title, text in zip(self.titles, self.goes_on,
                                                                                  strict=True) if text)


def speakers(name_a: str, name_b: str) -> tuple[str, str]:
    """How a plain sentence names the two models: the bundled pair by what they are, others as A and B."""
    if (name_a, name_b) == ("xray-demo", TWIN_ID):
        return "the demo model", "the twin"
    if (name_a, name_b) == (TWIN_ID, "xray-demo"):
        return "the twin", "the demo model"
    return "A", "B"


def side_by_side(diff: ModelDiff, name_a: str, name_b: str, goes_on: tuple[str, str] = ("", "")) -> SideBySide:
    """The compare header: both models' next-token guesses, what they go on to say, and the plain verdict."""
    leads, bars = [], []
    for guesses in (diff.guesses_a, diff.guesses_b):
        tokens = [token for _, token, _ in guesses]
        probs = np.array([p for _, _, p in guesses])
        leads.append(f"{quoted(tokens[0])} ({probs[0]:.0%}), then:")
        bars.append(coloured.guesses_html(tokens, probs))
    return SideBySide(titles=captions.model_titles(name_a, name_b), leads=(leads[0], leads[1]),
                      guesses=(bars[0], bars[1]), goes_on=goes_on,
                      verdict=captions.plain_verdict(diff, *speakers(name_a, name_b)))


@dataclass(frozen=True, eq=False)
class CompareContent:
    """Everything the Compare tab shows for one pair of models on one prompt."""

    header: SideBySide
    sentence: str
    tracks: go.Figure
    kl: go.Figure
    not_applicable: str | None
    weights: go.Figure | None
    weights_note: str | None
    patch: go.Figure | None
    patch_note: str | None
    heads: go.Figure | None
    neurons: Table | None
    scan: ScanContent | None = None  # what changed, from neutral text (shown first)
    circuit: CircuitContent | None = None  # A's circuit in B, and what suppresses it (next)
    notes: tuple[str, ...] = ()  # why a scan or a circuit diff is missing

    def section(self) -> Section:
        """The view as the report writes it."""
        side = self.header
        header = [*(Text(line, "lead") for line in side.answers()), text(side.verdict, "lead")]
        header += [part for title, lead, bars in zip(side.titles, side.leads, side.guesses, strict=True)
                   for part in (Text(f"{title} says next: {lead}"), Html(bars))]
        charts = [(self.weights, "compare_weights", self.weights_note), (self.patch, "compare_patch", self.patch_note)]
        # as the tab draws it, in a talk's order: what changed (the scan), where it is inside (the
        # layers), what suppresses it (the circuit diff)
        first = self.scan.parts() if self.scan is not None else ()
        last = [*(self.circuit.parts() if self.circuit is not None else ()), *(Text(n, "info") for n in self.notes)]
        return Section(TITLE, present(
            *header, *first, Text(self.sentence, "lead"), Chart(self.tracks, "compare_tracks"),
            Chart(self.kl, "compare_kl"),
            text(self.not_applicable, "info"),
            *(part for fig, key, note in charts for part in (Chart(fig, key) if fig is not None else None,
                                                              text(note, "caption"))),
            Chart(self.heads, "compare_heads") if self.heads is not None else None,
            Text(HEADS_NOTE, "caption") if self.heads is not None else None, self.neurons,
            Text(CAVEAT, "caveat"), *last))


def content(diff: ModelDiff, name_a: str, name_b: str, scan: ScanContent | None = None,
            circuit: CircuitContent | None = None, goes_on: tuple[str, str] = ("", "")) -> CompareContent:
    """The Compare tab's content (``scan`` and ``circuit``: built by ``views.content.circuit_diff``)."""
    a_name, b_name = captions.model_titles(name_a, name_b)
    weights = weights_note = patch = patch_note = heads = neurons = None
    if not diff.not_applicable:
        if diff.weights is not None:
            w = diff.weights
            weights = figures.weight_change(w.attn, w.mlp)
            shared = np.isclose(w.embed, w.unembed, rtol=1e-6)  # tied: one matrix
            weights_note = (f"Embeddings and output layer (one shared matrix): {w.embed:.1%} changed." if shared
                            else f"Embeddings: {w.embed:.1%} changed; output layer: {w.unembed:.1%}.")
        if diff.patch is None:
            patch_note = "Both models give the same next token, so there is no margin between two answers to restore."
        else:
            p = diff.patch
            patch = figures.cross_patch_bars(p, diff.answer_a, diff.answer_b)
            patch_note = (f"Margin of {quoted(diff.answer_a)} over {quoted(diff.answer_b)}: {p.a_diff:+.2f} in A, "
                          f"{p.b_diff:+.2f} in B (logit differences).")
        if diff.head_change is not None:
            heads = figures.head_grid(diff.head_change, "How far each head's attention moved", "change")
        if diff.neurons:
            neurons = Table(("layer", "neuron", "where", "in A", "in B"), tuple(
                (str(n.layer + 1), str(n.neuron), f"{quoted(n.token)} ·{n.position}", f"{n.a:+.2f}", f"{n.b:+.2f}")
                for n in diff.neurons))
    return CompareContent(
        header=side_by_side(diff, name_a, name_b, goes_on), sentence=captions.compare_sentence(diff, "A", "B"),
        tracks=figures.answer_tracks(diff.tracks, a_name, b_name),
        kl=figures.kl_heatmap(diff.kl, diff.a.tokens, PART_WAYS_NATS, diff.layer_map),
        not_applicable=diff.not_applicable or None, weights=weights, weights_note=weights_note, patch=patch,
        patch_note=patch_note, heads=heads, neurons=neurons, scan=scan, circuit=circuit)
