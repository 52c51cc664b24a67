"""The top of the Compare tab: what the fine-tune changed (scan), whether A's circuit is still in B, what suppresses it.

Pure builders from ``backend.scan.Scan``, ``backend.scan.SteeringCheck`` and
``backend.circuit_diff.CircuitDiff``; the page draws them first on the Compare tab and the
report writes them in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from backend.circuit_diff import CircuitDiff
from backend.edits import Edit
from backend.scan import Scan, SteeringCheck, readable
from views import captions, figures
from views.content import Chart, Part, Table, Text, present, text
from views.content.graph import graph_figure
from views.display import quoted

SCAN_TITLE = "What changed? (a scan without any prompt)"
SCAN_EXPLAIN = """
A **scan** reads both models on ordinary text that has nothing to do with any task (the
project ships 1,500 short stories and facts, none naming a capital city), and averages the
difference between B's and A's inner state over the first words of each text. Read through
A's own output layer, that difference says which words the fine-tune pushes the model
**toward** and **away from**, before anyone asks it anything. (This is the *activation
difference lens* of Minder et al., 2025.)
"""
SCAN_CAVEAT = ("A scan suggests where to look; it does not prove anything. The views below check it on one "
               "prompt: does B really behave differently there, and which of its parts do it?")
CIRCUIT_TITLE = "Is the answer's circuit still there, and what pushes it down?"
CIRCUIT_EXPLAIN = """
Both models' **attribution graphs** of this prompt are built with the same features (A's
transcoders), for A's answer and B's answer, and matched feature by feature:

- **A's path kept**: A's features that matter most for its answer, and how strongly they
  still fire in B (100%: B still computes what A computes for its answer).
- **What A's features cannot express**: for each layer's MLP, the share of its output that
  A's features miss, in A and in B. Where B's share is much larger, B computes something new
  there (the graph's grey *error* nodes).
- **What pushes A's answer down in B**: B's parts ranked by how much they directly push A's
  answer down against B's. The first few are then **switched off in the real B**, and the
  table says how much of A's preference comes back.
"""
CIRCUIT_CAVEAT = ("The graphs describe stand-ins for the models, exact on this prompt only, with attention frozen. "
                  "A head's push is read at the last position and overlaps the features' (a head carries what "
                  "earlier parts wrote). Only the switched-off rows are checked in the real model.")
MARK = "#000000"  # B's new features, outlined (black: safe for colour-blind readers, unlike red)


@dataclass(frozen=True, eq=False)
class ScanContent:
    """The scan's sentence, table and check, and the prompt it suggests."""

    sentence: str
    table: Table | None
    steering: str | None
    suggestion: str | None  # a prompt to run (None: nothing to suggest)
    suggestion_note: str

    def parts(self) -> tuple[Part, ...]:
        """The scan as the report writes it."""
        return present(Text(SCAN_TITLE, "lead"), Text(self.sentence, "lead"), self.table,
                       text(self.steering), Text(self.suggestion_note, "caption"), Text(SCAN_CAVEAT, "caveat"))


def _tokens(found) -> str:
    return ", ".join(quoted(t.token) for t in found)


def scan_content(result: Scan, check: SteeringCheck | None, suggestion: str | None, prompt: str,
                 name_a: str, name_b: str) -> ScanContent:
    """The "What changed?" section."""
    if not result.found:
        return ScanContent(
            sentence=f"On {result.texts:,} ordinary texts the two models' inner states do not differ: the scan finds "
                     "nothing the fine-tune changed.", table=None, steering=None, suggestion=None,
            suggestion_note="With nothing found, the scan has no prompt to suggest.")
    toward, away = result.consistent(True), result.consistent(False)
    sentence = (f"Without any prompt about it, a scan of {result.texts:,} ordinary texts finds that B "
                f"pushes toward {_tokens(toward)} and away from {_tokens(away)}.")
    rows = tuple((f"after layer {layer.layer}", _tokens([t for t in layer.promoted if readable(t.token)][:5]),
                  _tokens([t for t in layer.suppressed if readable(t.token)][:5])) for layer in result.layers)
    steering = None
    if check is not None:
        a_word, steered_word, b_word = (quoted(t) for t in (check.a[0], check.a_steered[0], check.b[0]))
        closer = 1 - check.kl_after / check.kl_before if check.kl_before > 0 else 0.0
        steering = (f"Check on this prompt: adding the difference to A after layer {check.layer} (strength "
                    f"{check.strength:g}) changes A's next word from {a_word} ({check.a[1]:.0%}) to {steered_word} "
                    f"({check.a_steered[1]:.0%}); B says {b_word} ({check.b[1]:.0%}). " +
                    (f"The gap between the two models shrinks by {closer:.0%}." if closer > 0 else
                     "That does not bring A closer to B here."))
    if suggestion is None:
        note = "None of the example prompts asks about what the scan found, so it suggests none."
    elif suggestion == prompt:
        note = "This page's prompt is the example the scan points to: its likely answers are among what B avoids."
    else:
        note = f"The scan points to an example whose likely answers are among what B avoids: {suggestion!r}."
    return ScanContent(sentence=sentence, table=Table(("where", "B pushes toward", "B pushes away from"), rows),
                       steering=steering, suggestion=suggestion if suggestion != prompt else None,
                       suggestion_note=note)


@dataclass(frozen=True, eq=False)
class CircuitContent:
    """The circuit diff's sentences, charts, suppressor table and the switch-offs the page offers."""

    sentence: str
    path: str
    errors: go.Figure | None
    errors_note: str | None
    graph: go.Figure
    graph_note: str
    suppressors: Table | None
    switches: tuple[tuple[str, Edit], ...]  # (button label, the edit that switches that part off in B)

    def parts(self) -> tuple[Part, ...]:
        """The circuit diff as the report writes it."""
        return present(Text(CIRCUIT_TITLE, "lead"), Text(self.sentence, "lead"), Text(self.path),
                       Chart(self.errors, "circuit_errors") if self.errors is not None else None,
                       text(self.errors_note, "caption"), Chart(self.graph, "circuit_graph"),
                       Text(self.graph_note, "caption"), self.suppressors, Text(CIRCUIT_CAVEAT, "caveat"))


def _circuit_sentence(diff: CircuitDiff, labels: dict) -> str:
    a, b = quoted(diff.answer_a[1]), quoted(diff.answer_b[1])
    if diff.same_answer:
        return f"Both models say {a}, so nothing in B pushes A's answer down on this prompt."
    kept = diff.path_kept
    if np.isnan(kept):
        first = f"A's graph holds no feature that pushes {a} up, so there is no path of A's to look for in B."
    elif kept >= 0.5:
        first = (f"B still computes {a}: the features A uses for it still fire in B at {kept:.0%} of their "
                 "strength.")
    else:
        first = f"B mostly no longer computes {a}: the features A uses for it fire in B at only {kept:.0%}."
    parts = [first]
    if diff.errors:
        worst = max(diff.errors, key=lambda e: e.fvu_b - e.fvu_a)
        if worst.fvu_b > 2 * worst.fvu_a and worst.fvu_b - worst.fvu_a > 0.01:
            parts.append(f"What is most new sits in layer {worst.layer + 1}'s MLP: A's features miss {worst.fvu_b:.0%} "
                         f"of its output in B, against {worst.fvu_a:.0%} in A.")
    if diff.suppressors:
        top = diff.suppressors[0]
        part = captions.part_words(top, diff.tokens, labels)
        parts.append(f"What pushes {a} down against {b} most is {part}.")
        if top.restored is not None:
            again = (f"B says {quoted(top.answer_off)} again" if top.answer_off == diff.answer_a[1]
                     else f"B still says {quoted(top.answer_off)}")
            parts.append(f"Switched off in the real B, it gives back {top.restored:.0%} of A's preference and "
                         f"{again}.")
    return " ".join(parts)


def _path_sentence(diff: CircuitDiff, labels: dict) -> str:
    if not diff.path:
        return "A's answer comes through no feature of A's graph (only through attention and the embeddings)."
    shown = "; ".join(f"{captions.part_words(n, diff.tokens, labels)}: {n.activation_a:.2f} in A, "
                      f"{n.activation_b:.2f} in B" for n in diff.path[:3])
    counts = diff.counts()
    return (f"A's strongest features for {quoted(diff.answer_a[1])}: {shown}. Over the whole prompt, "
            f"{counts['shared']:,} features fire in both models, {counts['new']:,} only in B and {counts['gone']:,} "
            f"only in A.")


def _suppressor_table(diff: CircuitDiff, labels: dict) -> Table | None:
    if not diff.suppressors:
        return None
    rows = []
    for k, s in enumerate(diff.suppressors, 1):
        checked = "not switched off" if s.restored is None else \
            f"{s.restored:.0%} of A's preference back; B says {quoted(s.answer_off)}"
        rows.append((str(k), captions.part_words(s, diff.tokens, labels), f"{s.effect:+.2f}", checked))
    return Table(("rank", "part of B", "push on A's answer over B's (logits)", "switched off in the real B"),
                 tuple(rows))


def circuit_content(diff: CircuitDiff, labels: dict, name_a: str, name_b: str) -> CircuitContent:
    """The circuit diff section."""
    errors = errors_note = None
    if diff.errors:
        errors = figures.unexplained_bars(np.array([e.fvu_a for e in diff.errors]),
                                          np.array([e.fvu_b for e in diff.errors]), *captions.model_titles(name_a,
                                                                                                            name_b))
        errors_note = ("Share of each MLP's output on this prompt that A's features cannot express (its fraction of "
                       "variance unexplained), the first token left out.")
    graph = diff.graph_b.prune(0.8, 0.98)
    new = {i for i, node in enumerate(graph.nodes) if node.kind == "feature" and
           any((c.layer, c.position, c.index) == (node.layer, node.position, node.index) and c.status == "new"
               for c in diff.nodes)}
    figure = graph_figure(graph, labels, marked=new, mark_colour=MARK)
    figure.update_layout(title={"text": "B's attribution graph, with A's features"})
    source = diff.source
    switches = tuple((f"Switch off {captions.part_words(s, diff.tokens, labels)} in B", s.edit(source))
                     for s in diff.suppressors[:3])
    return CircuitContent(sentence=_circuit_sentence(diff, labels), path=_path_sentence(diff, labels), errors=errors,
                          errors_note=errors_note, graph=figure,
                          graph_note=f"B's graph for its answer and A's (nodes outlined in black: features that fire "
                                     f"in B but not in A here, {len(new)} drawn).",
                          suppressors=_suppressor_table(diff, labels), switches=switches)
