"""Attribution graph time and memory (``backend.graph.attribute``); figures, not tests.

1. The demo model, a 32-token prompt, its bundled transcoders, default pruning (0.8 / 0.98,
   at most 4,096 nodes): the graph's wall time, median of ``--rounds``; and the Graph tab's
   figure built from it.
2. A GPT-2-small-shaped model (random weights, the demo tokenizer), 64 tokens, the neuron
   basis with the default cap of 4,096 nodes: time and peak RSS growth, in a fresh process.

    python benchmarks/graph.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from backend import load_model  # noqa: E402
from backend.features import load_transcoders  # noqa: E402
from backend.graph import attribute  # noqa: E402
from benchmarks.capture_overhead import build, in_child, prompt_of  # noqa: E402


def demo(rounds: int) -> dict:
    lm = load_model()
    tc = load_transcoders(lm)
    prompt = prompt_of(lm.tokenizer, 32)
    attribute(lm, prompt, transcoders=tc)  # warm up
    times, figure_times = [], []
    graph = None
    from views.content.graph import graph_figure

    for _ in range(rounds):
        start = time.perf_counter()
        graph = attribute(lm, prompt, transcoders=tc)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        graph_figure(graph, {})
        figure_times.append(time.perf_counter() - start)
    return {"tokens": len(graph.tokens), "median_s": statistics.median(times), "min_s": min(times),
            "figure_s": statistics.median(figure_times), "nodes": len(graph.nodes),
            "edges": int((graph.adjacency != 0).sum()), "full_nodes": len(graph.full.nodes),
            "replacement": graph.replacement_score, "completeness": graph.completeness_score}


def gpt2_small(folder: Path) -> dict:
    """In a child process: one neuron-basis graph at 64 tokens, its time and peak RSS growth (sampled)."""
    code = f"""
import json, time
import torch
torch.set_num_threads({torch.get_num_threads()})
from backend import load_model
from backend.graph import attribute
from benchmarks.capture_overhead import PeakRss, prompt_of
lm = load_model({str(folder)!r}, device="cpu")
prompt = prompt_of(lm.tokenizer, 64)
with PeakRss(every=0.01) as peak:
    start = time.perf_counter()
    graph = attribute(lm, prompt)
    seconds = time.perf_counter() - start
print(json.dumps({{"tokens": len(graph.tokens), "seconds": seconds, "peak_rss_growth_mib": peak.growth_mib,
                  "nodes": len(graph.nodes), "full_nodes": len(graph.full.nodes),
                  "replacement": graph.replacement_score, "completeness": graph.completeness_score}}))
"""
    return in_child(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    d = demo(args.rounds)
    print(f"demo model, {d['tokens']} tokens, bundled transcoders, default pruning, CPU x{torch.get_num_threads()}:")
    print(f"  graph {d['median_s']:.2f} s median of {args.rounds} (best {d['min_s']:.2f} s; target <= 3 s); "
          f"its figure {d['figure_s'] * 1000:.0f} ms")
    print(f"  {d['full_nodes']} nodes before pruning, {d['nodes']} kept with {d['edges']} edges; replacement "
          f"{d['replacement']:.2f}, completeness {d['completeness']:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        g = gpt2_small(Path(tmp))
    print(f"GPT-2-small shape, random weights, {g['tokens']} tokens, neuron basis, at most 4,096 nodes:")
    print(f"  {g['seconds']:.1f} s, peak RSS growth {g['peak_rss_growth_mib']:.0f} MiB (target: within 2 GiB); "
          f"{g['full_nodes']} nodes before pruning, {g['nodes']} kept")


if __name__ == "__main__":
    main()
