"""The page in headless Chromium: time to every view drawn, selection redraw, bytes per run.

Starts ``streamlit run app.py`` on the bundled demo model, opens it once to load the
model, then measures:

- opening ``/?prompt=...`` (about 64 tokens) until every view is drawn (the next-token
  guesses, all seven plotly charts, the coloured text of what one token reads, and the
  neuron's CircuitsVis frame),
  in a browser that never saw the page and in a new tab of one that opened the app before
  (its HTTP cache holds the page code);
- a new prompt typed into an open page (Ctrl+Enter) until every view has drawn again: the
  loop of "change a word, see again";
- a selection change in the logit-lens view until its fragment has redrawn;
- a new pair of prompts entered in the patching view until its four heatmaps have drawn;
- bytes received by the browser for one run at about 128 tokens: the app's websocket
  messages (the run's data) and HTTP responses (the page's code, cached after the first
  visit), counted separately.

    python benchmarks/page.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from benchmarks.capture_overhead import prompt_of  # noqa: E402
from tests.browser import CIRCUITS_DRAWN, app_url, browser_page, open_tab, streamlit_app  # noqa: E402
from training import corpus  # noqa: E402
from views.patching import DEFAULT_PAIR  # noqa: E402

PLOTS = ["attention_grid", "attention_head_map", "lens_map", "lens_trajectory", "neuron_map",
         "neuron_token_bars", "neuron_effect"]  # every plotly chart on the page, by key
FRAMES = 1  # CircuitsVis: one neuron on every token
ALL_DRAWN = f"""([plots, frames]) =>
  plots.every(key => document.querySelector('.st-key-' + key + ' .main-svg'))
  && document.querySelector('[data-view=next-token-guesses] span[data-value]')
  && document.querySelector('[data-view=token-reads] span[data-value]')
  && ({CIRCUITS_DRAWN})(frames)
  && !document.querySelector('[data-testid=stStatusWidget]')"""


def open_and_draw(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_function(ALL_DRAWN, arg=[PLOTS, FRAMES], timeout=120_000, polling=20)
    return time.perf_counter() - start


MARK_STALE = """() => {
  document.querySelectorAll('.js-plotly-plot').forEach(gd => {
    gd.__fresh = false; gd.on('plotly_afterplot', () => { gd.__fresh = true; }); });
  document.querySelectorAll('[data-view]').forEach(view => { view.__stale = true; });
  document.querySelectorAll('iframe').forEach(frame => { frame.contentDocument.__stale = true; }); }"""
"""JavaScript: mark what is drawn now, so that only a later drawing counts."""
PLOT_REDRAWN = """key => { const gd = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  return !!gd && gd.__fresh !== false && !!gd.querySelector('.main-svg'); }"""
"""JavaScript: the chart ``key`` has drawn since MARK_STALE (in place, or as a new element)."""
IDLE = "!document.querySelector('[data-testid=stStatusWidget]')"
ALL_REDRAWN = f"""([plots]) => {{
  const views = [...document.querySelectorAll('[data-view]')];
  return plots.every({PLOT_REDRAWN})
    && views.length >= 2 && views.every(view => !view.__stale && view.querySelector('span[data-value]'))
    && [...document.querySelectorAll('iframe')].some(frame => frame.contentDocument
        && !frame.contentDocument.__stale && frame.contentDocument.querySelector('[id^=cv-] *'))
    && {IDLE}; }}"""


def new_prompt(page, prompt: str) -> float:
    """Type another prompt into an open page; time until every view has drawn it.

    The charts' old drawings, the HTML views and the CircuitsVis document are marked
    first, so only a drawing of the new run counts (a chart redrawn in place fires
    plotly's ``plotly_afterplot``; a replaced one is a new element).
    """
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(prompt)
    page.evaluate(MARK_STALE)
    start = time.perf_counter()
    box.press("Control+Enter")
    page.wait_for_function(ALL_REDRAWN, arg=[PLOTS], timeout=120_000, polling=20)
    return time.perf_counter() - start


def selection_redraw(page, option: int) -> float:
    """Pick another position to follow; time until the trajectory chart has drawn again.

    Plotly's ``plotly_afterplot`` event marks the redraw (a title check would wait forever
    when two positions share their top guess).
    """
    box = page.locator("[data-testid=stSelectbox]").filter(has_text="Position to follow")
    box.locator("input").click()
    page.keyboard.press("ArrowDown")
    page.evaluate(MARK_STALE)
    start = time.perf_counter()
    page.get_by_role("option").nth(option).click()
    page.wait_for_function(f"() => ({PLOT_REDRAWN})('lens_trajectory') && {IDLE}", timeout=60_000, polling=20)
    return time.perf_counter() - start


PATCH_PLOTS = ["patch_resid", "patch_attn", "patch_mlp", "patch_heads"]


def country_pairs(tokenizer, count: int) -> list[tuple[str, str]]:
    """Distinct (clean, corrupt) capital prompts whose token counts match."""
    pairs = []
    countries = list(corpus.CAPITALS)
    for a in countries:
        for b in countries:
            clean, corrupt = f"The capital of {a} is", f"The capital of {b} is"
            if a != b and len(tokenizer(clean)["input_ids"]) == len(tokenizer(corrupt)["input_ids"]) \
                    and (clean, corrupt) != DEFAULT_PAIR:  # each round a pair the page has not run
                pairs.append((clean, corrupt))
    return pairs[::3][:count]


def patching_draw(page, clean: str, corrupt: str) -> float:
    """Type a new pair into the patching view; time until its four heatmaps have drawn."""
    page.get_by_role("textbox", name="Clean prompt").fill(clean)
    corrupt_box = page.get_by_role("textbox", name="Corrupt prompt")
    corrupt_box.fill(corrupt)
    page.evaluate(MARK_STALE)
    start = time.perf_counter()
    corrupt_box.press("Enter")
    page.wait_for_function(f"([plots]) => plots.every({PLOT_REDRAWN}) && {IDLE}", arg=[PATCH_PLOTS],
                           timeout=120_000, polling=20)
    return time.perf_counter() - start


def bytes_per_run(base: str, prompt: str, playwright) -> tuple[int, int]:
    with browser_page(playwright=playwright) as (page, _):
        ws_bytes = [0]
        http_bytes = [0]
        page.on("websocket", lambda ws: ws.on("framereceived", lambda p: ws_bytes.__setitem__(0, ws_bytes[0] + len(p))))
        page.on("response",  # the declared length: counts a response even if its finish event comes late
                lambda r: http_bytes.__setitem__(0, http_bytes[0] + int(r.headers.get("content-length", 0))))
        open_and_draw(page, app_url(base, prompt))
        page.wait_for_timeout(1000)
        return ws_bytes[0], http_bytes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "xray-demo")
    # distinct from their first word: no cache hit, and no view whose numbers (a causal model's,
    # over a shared prefix) would be the same, which Streamlit would not draw again
    prompts = [prompt_of(tokenizer, 64 + i % 3, seed=100 + i) for i in range(3 * args.rounds)]
    pairs = country_pairs(tokenizer, args.rounds)
    cold, warm, typed, redraws, patch = [], [], [], [], []
    with streamlit_app() as base, sync_playwright() as playwright, \
            browser_page(playwright=playwright) as (returning, _):
        open_and_draw(returning, app_url(base, "warm up: load the model"))  # and fill this browser's cache
        context = returning.context
        returning.close()  # an open Streamlit tab keeps working in the background
        for i in range(args.rounds):
            with browser_page(playwright=playwright) as (page, _):  # a browser that never saw the page
                cold.append(open_and_draw(page, app_url(base, prompts[3 * i])))
                typed.append(new_prompt(page, prompts[3 * i + 2]))
                open_tab(page, "Logit lens")
                redraws.append(selection_redraw(page, 1 + i % 6))  # the list shows about 8 options
                open_tab(page, "Patching")  # it opens on the page's prompt: start from the example pair
                page.get_by_role("button", name="Example pair: France / Italy").click()
                page.wait_for_function(f"() => ({PLOT_REDRAWN})('patch_resid') && {IDLE}", timeout=120_000)
                patch.append(patching_draw(page, *pairs[i]))
            page = context.new_page()  # a new tab in a browser that opened the app before
            warm.append(open_and_draw(page, app_url(base, prompts[3 * i + 1])))
            page.close()
        ws, http = bytes_per_run(base, prompt_of(tokenizer, 128), playwright)
    print(f"demo model, headless Chromium, {args.rounds} rounds (median, min-max):")
    for label, times, target in (
            ("open /?prompt=... (64 tokens) to every view drawn, browser's first visit", cold, "<= 5 s"),
            ("the same in a new tab of a browser that opened the app before", warm, "<= 5 s"),
            ("a new prompt (64 tokens) typed into the open page to every view drawn again", typed, None),
            ("selection change to its view redrawn", redraws, "<= 1 s"),
            ("patching view: a new pair of prompts entered to its four heatmaps drawn", patch, "<= 2 s")):
        aim = f"  (target {target})" if target else ""
        print(f"  {label}: {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}){aim}")
    print(f"  one run at 128 tokens: websocket {ws / 2**10:,.0f} KiB; "
          f"HTTP (page code, first visit) {http / 2**10:,.0f} KiB")

if __name__ == "__main__":
    main()
