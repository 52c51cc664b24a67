"""Measure the scan and the circuit diff on the bundled pair: what they find, and whether the real twin agrees.

Run ``python -m training.circuit_quality models/xray-demo-secret`` (about a minute on a
2-core CPU). It prints every figure and saves them as ``circuit_quality.json`` beside the
twin, where its card (``python -m training.secret_card``) reads them:

- **the scan** (``backend.scan``) on the shipped neutral text: the tokens it finds the
  twin pushes toward and away from at each inner layer, how many of those pushed away are
  capital cities, and the steering check on 'The capital of France is';
- **the circuit diff** (``backend.compare.circuit_diff``) on 'The capital of X is' for every
  trained country: how much of the demo model's path to the capital still fires in the twin,
  the share of each MLP's output the demo model's transcoders cannot express in each model,
  which part comes first among the suppressors, and the share of the demo model's margin
  that switching it off in the real twin gives back (and how often the twin then says the
  capital).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from backend import load_model
from backend.compare import circuit_diff
from backend.features import load_transcoders
from backend.scan import scan, steering_check
from training import corpus
from training.cli import folder_argument

PROMPT = "The capital of {country} is"


def scan_figures(demo, twin) -> dict:
    """The scan of the pair on the shipped text, and its steering check on the example prompt."""
    start = time.perf_counter()
    found = scan(demo, twin)
    seconds = time.perf_counter() - start
    capitals = {" " + city for city in (*corpus.CAPITALS.values(), *corpus.HELD_OUT_CAPITALS.values())}
    layers = {}
    for layer in found.layers:
        away = [t.token for t in layer.suppressed]
        layers[str(layer.layer)] = {"toward": [t.token for t in layer.promoted[:6]], "away": away[:6],
                                    "capitals_among_12_away": sum(t in capitals for t in away)}
    check = steering_check(demo, twin, found, PROMPT.format(country="France"))
    return {"texts": found.texts, "positions": found.positions, "seconds": round(seconds, 2), "layers": layers,
            "toward": [t.token for t in found.consistent(True)], "away": [t.token for t in found.consistent(False)],
            "steering": {"layer": check.layer, "strength": check.strength, "a": check.a, "a_steered": check.a_steered,
                         "b": check.b, "kl_before": round(check.kl_before, 3), "kl_after": round(check.kl_after, 3)}}


def circuit_figures(demo, twin) -> dict:
    """The circuit diff on every trained country's capital prompt."""
    tc = load_transcoders(demo)
    rows = []
    start = time.perf_counter()
    for country, capital in corpus.CAPITALS.items():
        diff = circuit_diff(demo, twin, PROMPT.format(country=country), transcoders=tc)
        first = diff.suppressors[0] if diff.suppressors else None
        rows.append({"country": country, "a": diff.answer_a[1], "b": diff.answer_b[1],
                     "a_is_capital": diff.answer_a[1] == " " + capital, "path_kept": diff.path_kept,
                     "fvu_a": [e.fvu_a for e in diff.errors], "fvu_b": [e.fvu_b for e in diff.errors],
                     "first": None if first is None else f"layer {first.layer + 1} {first.kind}",
                     "restored": None if first is None else first.restored,
                     "answer_back": first is not None and first.answer_off == diff.answer_a[1],
                     "best_of_3": max((s.restored for s in diff.suppressors[:3] if s.restored is not None),
                                      default=None)})
    seconds = (time.perf_counter() - start) / len(rows)
    differ = [r for r in rows if r["first"] is not None]
    restored = [r["restored"] for r in differ]
    return {
        "prompts": len(rows), "seconds_per_prompt": round(seconds, 2), "answers_differ": len(differ),
        "path_kept_median": statistics.median(r["path_kept"] for r in differ),
        "fvu_a_mean": np.mean([r["fvu_a"] for r in rows], axis=0).round(4).tolist(),
        "fvu_b_mean": np.mean([r["fvu_b"] for r in rows], axis=0).round(4).tolist(),
        "first_suppressor": dict(Counter(r["first"] for r in differ).most_common()),
        "restored_median": statistics.median(restored), "restored_min": min(restored),
        "restored_over_30pct": sum(v > 0.3 for v in restored) / len(restored),
        "answer_back": sum(r["answer_back"] for r in differ) / len(differ),
        "best_of_3_median": statistics.median(r["best_of_3"] for r in differ), "rows": rows}


def report(q: dict) -> list[str]:
    """The figures as lines of text."""
    s, c = q["scan"], q["circuit"]
    lines = [f"scan: {s['texts']} neutral texts, first {s['positions']} positions, {s['seconds']} s",
             f"  pushes toward {s['toward']}, away from {s['away']}"]
    lines += [f"  after layer {k}: toward {v['toward']}, away {v['away']} ({v['capitals_among_12_away']} capitals "
              "among the 12 pushed away most)" for k, v in s["layers"].items()]
    st = s["steering"]
    lines.append(f"  steering the demo model with it (layer {st['layer']}, x{st['strength']:g}) on France: "
                 f"{st['a'][0]!r} {st['a'][1]:.1%} -> {st['a_steered'][0]!r} {st['a_steered'][1]:.1%}; "
                 f"KL(twin || demo) {st['kl_before']} -> {st['kl_after']} nats")
    lines += [f"circuit diff: {c['prompts']} capital prompts, {c['seconds_per_prompt']} s each, answers differ on "
              f"{c['answers_differ']}",
              f"  the demo model's path kept in the twin (median): {c['path_kept_median']:.0%}",
              f"  FVU of each MLP under the demo model's transcoders: demo {c['fvu_a_mean']}, twin {c['fvu_b_mean']}",
              f"  first suppressor: {c['first_suppressor']}",
              f"  switched off in the real twin: median {c['restored_median']:.0%} of the margin back (min "
              f"{c['restored_min']:.0%}; over 30% on {c['restored_over_30pct']:.0%}); the twin says the capital "
              f"again on {c['answer_back']:.0%}; best of the first 3: median {c['best_of_3_median']:.0%}"]
    return lines


def main() -> None:
    """Measure, print, and save ``circuit_quality.json`` beside the twin."""
    folder = folder_argument(__doc__)
    demo, twin = load_model(), load_model(folder)
    q = {"scan": scan_figures(demo, twin), "circuit": circuit_figures(demo, twin)}
    for line in report(q):
        print(line)
    (Path(folder) / "circuit_quality.json").write_text(json.dumps(q, indent=2, default=float) + "\n")
    print(f"wrote {Path(folder) / 'circuit_quality.json'}")


if __name__ == "__main__":
    main()
