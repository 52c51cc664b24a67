"""Scan and circuit-diff time on the bundled pair (``backend.scan.scan``, ``backend.compare.circuit_diff``).

Figures, not tests. Each is the median of ``--rounds`` after one warm-up, beside the median of
a plain capture of the same prompt in the same run (a ratio that does not depend on how busy
the machine is):

1. the scan of the demo model against its twin on the shipped neutral text (1,500 texts, first
   5 positions each): target under 5 s;
2. the circuit diff on the example prompt "The capital of France is" with the bundled
   transcoders, three suppressors checked in the real twin: target under 5 s.

    python benchmarks/circuits.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backend import capture, load_model  # noqa: E402
from backend.compare import circuit_diff  # noqa: E402
from backend.features import load_transcoders  # noqa: E402
from backend.loading import TWIN_ID  # noqa: E402
from backend.scan import scan  # noqa: E402

PROMPT = "The capital of France is"


def timed(fn, rounds: int) -> float:
    """Median wall seconds of ``fn`` over ``rounds`` calls, after one warm-up call."""
    fn()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    demo, twin = load_model(), load_model(TWIN_ID)
    tc = load_transcoders(demo)
    plain = timed(lambda: capture(demo, PROMPT), rounds)
    scan_s = timed(lambda: scan(demo, twin), rounds)
    diff_s = timed(lambda: circuit_diff(demo, twin, PROMPT, transcoders=tc), rounds)
    print(json.dumps({"capture_s": round(plain, 4), "scan_s": round(scan_s, 2), "scan_target_s": 5,
                      "circuit_diff_s": round(diff_s, 2), "circuit_diff_target_s": 5,
                      "circuit_diff_over_capture": round(diff_s / plain, 1)}, indent=2))


if __name__ == "__main__":
    main()
