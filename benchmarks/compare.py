"""Compare mode: ``backend.compare`` against one analysis, and the compare view's draw time.

1. Backend, on the bundled pair (the demo model and its twin), at three prompt lengths,
   interleaved round by round in one process:
   - one analysis as the page makes it for one model: capture, lens summary, head scores;
   - ``compare(demo, twin, prompt)`` from nothing (both captures, the two lenses' KL,
     the answers' tracks, head and neuron changes, weight change, cross-model patching);
   - the same given the page's own capture of the first model (what compare mode adds to
     a page that has already analysed the prompt).
   Target: compare at most 2.5x one analysis.
2. The page in headless Chromium: open a link in compare mode on a prompt the server has
   not seen, until the compare view's four charts have drawn.

    python benchmarks/compare.py [--rounds 7] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from backend import capture, lens_summary, load_model  # noqa: E402
from backend.compare import compare  # noqa: E402
from backend.heads import head_scores  # noqa: E402
from backend.loading import TWIN_ID  # noqa: E402
from benchmarks.capture_overhead import prompt_of  # noqa: E402

COMPARE_PLOTS = ["compare_tracks", "compare_kl", "compare_weights", "compare_patch"]


def analysis(lm, prompt: str) -> None:
    cap = capture(lm, prompt)
    lens_summary(lm, cap)
    head_scores(cap)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def backend_figures(rounds: int) -> None:
    demo, twin = load_model(), load_model(TWIN_ID)
    print(f"backend, demo model and its twin, {torch.get_num_threads()} threads, {rounds} interleaved rounds "
          "(median):")
    for n in (6, 64, 200):
        prompt = "The capital of France is" if n == 6 else prompt_of(demo.tokenizer, n)
        for _ in range(2):  # warm up
            analysis(demo, prompt)
            compare(demo, twin, prompt)
        one, full, added = [], [], []
        for _ in range(rounds):
            one.append(timed(partial(analysis, demo, prompt)))
            full.append(timed(partial(compare, demo, twin, prompt)))
            added.append(timed(partial(compare, demo, twin, prompt, cap_a=capture(demo, prompt))))
        base = statistics.median(one)
        print(f"  {len(demo.tokenizer(prompt)['input_ids']):>3} tokens: one analysis {1000 * base:6.1f} ms; "
              f"compare {1000 * statistics.median(full):6.1f} ms = {statistics.median(full) / base:.2f}x "
              f"(target <= 2.5x); given the page's capture {1000 * statistics.median(added):6.1f} ms = "
              f"{statistics.median(added) / base:.2f}x")


def draw_figures(rounds: int) -> None:
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright

    from benchmarks.page import IDLE
    from tests.browser import browser_page, streamlit_app

    drawn = f"([plots]) => plots.every(k => document.querySelector('.st-key-' + k + ' .main-svg')) && {IDLE}"
    times = []
    with streamlit_app() as base, sync_playwright() as playwright:
        def link(prompt: str) -> str:
            return f"{base}/?prompt={quote(prompt)}&model=demo&compare={TWIN_ID}"

        with browser_page(height=3200, playwright=playwright) as (page, _):  # every chart in view: drawn at once
            page.goto(link("The capital of Italy is"))  # loads both models
            page.wait_for_function(drawn, arg=[COMPARE_PLOTS], timeout=180_000, polling=20)
        countries = ["Japan", "Brazil", "Kenya", "Canada", "Spain", "Peru", "Egypt", "Nepal", "Chile", "Cuba"]
        for i in range(rounds):
            with browser_page(height=3200, playwright=playwright) as (page, _):  # every chart in view: drawn at once
                start = time.perf_counter()
                page.goto(link(f"The capital of {countries[i % len(countries)]} is"))
                page.wait_for_function(drawn, arg=[COMPARE_PLOTS], timeout=120_000, polling=20)
                times.append(time.perf_counter() - start)
    print(f"page, headless Chromium, {rounds} rounds: a compare-mode link on a new prompt to the compare view's "
          f"four charts drawn: {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    backend_figures(args.rounds)
    if not args.no_browser:
        draw_figures(args.rounds)


if __name__ == "__main__":
    main()
