"""A room of visitors: a reload storm's CPU cost, and the server's memory over many prompts.

- **Reload storm**: a GPT-2-small-shaped model (random weights) and prompts of about 250
  tokens, so one run takes seconds. One tab opens six new prompts, 1.5 s apart (each a
  reload: the previous page's session closes). Prints the server's CPU-seconds from the
  first reload until it is idle again. Runs nobody waits for should stop early.
- **Memory over prompts**: one real browser tab types 100 prompts of about 60 tokens into
  the demo model's page, one after another, and the server's resident memory is read after
  each. Prints RSS at prompt 20, 50 and 100 (target: growth under 40 MiB from 20 to 100).
- **Many users at once**: public mode, twenty phone-sized browser contexts open their own
  prompts at the same moment. Prints sessions per second, the median time to a drawn page,
  whether every page shows its own prompt, errors, and the server's memory before and after.
- **Bytes to a phone**: a first visit straight from Streamlit and through ``deploy/nginx.conf``.
- **A visitor's budget**: public mode with a 4-second budget of model time, the demo model.
  One tab runs patching sweeps on new pairs until the page refuses one; then a second tab
  from the same address tries a new prompt, a what-if, steering and compare mode. Prints how
  many sweeps ran, and what each later kind of work got.
- **Closing a tab**: open mode, a GPT-2-small-shaped model. A patching sweep of two 120-token
  prompts, and a what-if with 16 changes, each with the tab closed 3 s after it began. Prints
  the server's CPU-seconds from the close until it is idle (target under 2 s).

    python benchmarks/room.py [--root CHECKOUT] [--only storm|memory|load|bytes|budget|close]

``--root`` runs another checkout's app (for before/after figures in one sitting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transformers import AutoTokenizer  # noqa: E402

from benchmarks.capture_overhead import build, prompt_of  # noqa: E402
from tests import browser  # noqa: E402
from tests.browser import browser_page, streamlit_app  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def server_pid(port: int) -> int:
    """The streamlit process listening on ``port`` (found through /proc)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in b" ".join(cmd) and f"--server.port={port}".encode() in cmd:
                return int(entry.name)
    raise RuntimeError("no streamlit process found")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def idle(pid: int, quiet_s: float = 2.0, timeout_s: float = 240) -> None:
    """Wait until the server has used no CPU for ``quiet_s`` seconds."""
    deadline = time.time() + timeout_s
    last, since = cpu_seconds(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now - last > 0.05:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            return


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def storm(root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        prompts = [prompt_of(tokenizer, 240 + i) for i in range(7)]
        browser.ROOT = root
        with streamlit_app() as base, browser_page() as (page, _):
            pid = server_pid(port_of(base))
            link = f"{base}/?model={quote(tmp)}&prompt="
            page.goto(link + quote(prompts[0]))  # loads the model and warms up
            page.wait_for_selector(".js-plotly-plot", timeout=240_000)
            idle(pid)
            start = cpu_seconds(pid)
            began = time.time()
            for prompt in prompts[1:]:
                page.goto(link + quote(prompt), wait_until="commit")
                time.sleep(1.5)
            page.wait_for_selector(".js-plotly-plot", timeout=240_000)
            idle(pid)
            used = cpu_seconds(pid) - start
        print(f"reload storm: 6 new prompts of ~245 tokens, 1.5 s apart (GPT-2-small shape): "
              f"{used:.1f} CPU-s in the server, idle again {time.time() - began:.0f} s after the first")


def memory(root: Path, count: int = 100) -> None:
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "xray-demo")
    prompts = [prompt_of(tokenizer, 50 + i % 20) + f" {i}" for i in range(count)]
    browser.ROOT = root
    readings = {}
    with streamlit_app() as base, browser_page() as (page, _):
        pid = server_pid(port_of(base))
        page.goto(f"{base}/?prompt={quote('warm up')}")
        page.wait_for_selector(".js-plotly-plot", timeout=120_000)
        box = page.get_by_role("textbox", name="Prompt")
        for i, prompt in enumerate(prompts, start=1):
            box.fill(prompt)
            box.press("Control+Enter")
            page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)
            page.wait_for_timeout(150)
            if i in (1, 20, 50, 100):
                idle(pid, quiet_s=1.0)
                readings[i] = rss_mib(pid)
    print("server RSS over 100 prompts in one tab (demo model): " +
          ", ".join(f"prompt {i}: {mib:.0f} MiB" for i, mib in readings.items()) +
          f"; growth 20 -> 100: {readings[100] - readings[20]:+.0f} MiB (target < 40)")


async def _load(base: str, count: int, prompts: list[str]) -> list[tuple[float, bool, bool]]:
    """``count`` visitors at once, each in its own browser context: (seconds to drawn, own prompt shown, error)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=browser.CHROMIUM, args=browser.CHROMIUM_FLAGS)

        async def visit(prompt: str) -> tuple[float, bool, bool]:
            context = await chromium.new_context(viewport={"width": 412, "height": 915})  # a phone
            page = await context.new_page()
            start = time.perf_counter()
            await page.goto(f"{base}/?prompt={quote(prompt)}")
            await page.wait_for_selector("[data-view=next-token-guesses] span[data-value]", timeout=600_000)
            await page.wait_for_selector(".js-plotly-plot .main-svg", timeout=600_000)
            took = time.perf_counter() - start
            shown = (await page.inner_text("[data-testid=stText]")).replace(" | ", "")  # tokens, separators out
            own = prompt.split()[-1] in shown
            errors = page.locator("[data-testid=stException], [data-testid=stAlertContentError]")
            error = await errors.count() > 0
            if error:
                print("error on a page:", (await errors.first.inner_text())[:300])
            await context.close()
            return took, own, error

        try:
            return await asyncio.gather(*(visit(p) for p in prompts[:count]))
        finally:
            await chromium.close()


def load(root: Path, count: int = 20) -> None:
    """Public mode, demo model: ``count`` phones open their own prompts at the same moment."""
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "xray-demo")
    prompts = [prompt_of(tokenizer, 30) + f" visitor{i}" for i in range(count)]
    browser.ROOT = root
    with streamlit_app(env={"XRAY_PUBLIC": "1"}) as base:
        pid = server_pid(port_of(base))
        with browser_page() as (page, _):  # the presenter opens the page first: the model is loaded
            page.goto(f"{base}/?prompt={quote('The capital of France is')}")
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
        idle(pid)
        before, cpu = rss_mib(pid), cpu_seconds(pid)
        start = time.perf_counter()
        results = asyncio.run(_load(base, count, prompts))
        wall = time.perf_counter() - start
        idle(pid)
        after, cpu = rss_mib(pid), cpu_seconds(pid) - cpu
    times = sorted(t for t, _, _ in results)
    print(f"{count} phones at once (public mode, demo model, ~30-token prompts): all drawn in {wall:.1f} s "
          f"({count / wall:.2f} sessions/s); time to a drawn page median {statistics.median(times):.1f} s, "
          f"slowest {times[-1]:.1f} s; own prompt shown on {sum(o for _, o, _ in results)}/{count}; "
          f"pages with an error {sum(e for _, _, e in results)}; server RSS {before:.0f} -> {after:.0f} MiB; "
          f"server CPU {cpu:.1f} s of the {2 * wall:.0f} core-seconds (the browsers share the 2 cores)")


ALERTS = "[data-testid=stAlertContentError], [data-testid=stAlertContentWarning]"


def _settle(page, timeout_ms: int = 240_000) -> None:
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)


def _refused(page) -> bool:
    return _refusal(page) is not None


def _refusal(page) -> str | None:
    """The over-budget message's wait ("try again in N seconds"), or None when the work ran."""
    alerts = page.locator(ALERTS)
    for i in range(alerts.count()):
        text = alerts.nth(i).inner_text()
        if "seconds of the model's time" in text:
            found = re.search(r"Try again in (\d+) seconds", text)
            return f"refused (try again in {found.group(1)} s)" if found else "refused"
    return None


def budget(root: Path) -> None:
    """Public mode, a 4 s budget: sweeps until refused, then a second tab from the same address."""
    browser.ROOT = root
    env = {"XRAY_PUBLIC": "1", "XRAY_BUDGET_SECONDS": "4", "XRAY_RUNS_PER_MINUTE": "1000"}
    countries = ["France", "Italy", "Spain", "Germany", "Japan", "Egypt", "Kenya", "Peru", "Chile", "Greece",
                 "Norway", "Sweden", "Poland", "Canada", "Mexico", "Brazil", "India", "China", "Nepal", "Cuba"]
    with streamlit_app(env=env) as base:
        with browser_page(1400, 1000) as (page, _):
            page.goto(f"{base}/?prompt={quote('The capital of France is')}")
            browser.wait_for_views(page)
            browser.open_tab(page, "Patching")
            _settle(page)
            sweeps = 1
            for a, b in zip(countries[1:], countries[2:], strict=False):
                page.get_by_label("Clean prompt (gives the answer)").fill(f"In the story the capital of {a} is")
                page.get_by_label("Corrupt prompt (same length, one detail changed)").fill(
                    f"In the story the capital of {b} is")
                page.keyboard.press("Enter")
                _settle(page)
                if _refused(page):
                    break
                sweeps += 1
            refused_sweep = _refused(page)
        results = {}
        with browser_page(1400, 1000) as (second, _):
            for kind, link in (
                    ("new prompt", "?prompt=" + quote("A new prompt from a second tab")),
                    ("what if", "?prompt=" + quote("The dog says") + "&edits=" + quote('[["head",3,1,"zero"]]')),
                    ("steering", "?prompt=" + quote("The dog says") + "&edits="
                     + quote('[["steer",0,2.0,"The cat","The dog"]]')),
                    ("compare", "?prompt=" + quote("A second tab compares") + "&compare=xray-demo-secret")):
                second.goto(f"{base}/{link}")
                second.wait_for_selector(f".js-plotly-plot, {ALERTS}", timeout=240_000)  # the run began and ended
                _settle(second)
                results[kind] = _refusal(second) or "ran"
    print(f"budget 4 s of model time a minute (public mode, demo model): {sweeps} sweeps ran before one was "
          f"{'refused' if refused_sweep else 'NOT refused'}; then from a second tab of the same address "
          "(the window slides: each charge leaves it 60 s after it was made, so cheap work can fit again "
          "within seconds): " + ", ".join(f"{kind} {what}" for kind, what in results.items()))


def close(root: Path) -> None:
    """Open mode, GPT-2-small shape: close the tab 3 s into a sweep, and into a 16-change what-if."""
    browser.ROOT = root
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        clean = prompt_of(tokenizer, 118) + " cat"
        corrupt = prompt_of(tokenizer, 118) + " dog"
        edits = [["neuron", layer, n, 0.0] for layer in range(4) for n in range(4)]
        figures = {}
        with streamlit_app() as base:
            pid = server_pid(port_of(base))
            with browser_page(1400, 1000) as (page, _):  # the model loaded and warm
                page.goto(f"{base}/?model={quote(tmp)}&prompt={quote('warm up')}")
                browser.wait_for_views(page)
            idle(pid)
            for kind in ("patching", "what if"):
                with browser_page(1400, 1000) as (page, _):
                    if kind == "patching":
                        page.goto(f"{base}/?model={quote(tmp)}&prompt={quote(clean)}")
                        browser.wait_for_views(page, 240_000)
                        idle(pid, quiet_s=1.0)
                        browser.open_tab(page, "Patching")
                        page.get_by_label("Clean prompt (gives the answer)").fill(clean)
                        page.get_by_label("Corrupt prompt (same length, one detail changed)").fill(corrupt)
                        page.keyboard.press("Enter")
                    else:
                        page.goto(f"{base}/?model={quote(tmp)}&prompt={quote(clean + ' again')}&edits="
                                  f"{quote(json.dumps(edits))}", wait_until="commit")
                    page.wait_for_timeout(3000)
                    page.context.close()  # the tab goes: nobody waits for the work
                closed = cpu_seconds(pid)
                idle(pid, quiet_s=2.0)
                figures[kind] = cpu_seconds(pid) - closed
    print("server CPU after the tab closed (target < 2 s): "
          + ", ".join(f"{kind} {seconds:.1f} CPU-s" for kind, seconds in figures.items()))


def first_visit_bytes(url: str) -> int:
    """Bytes on the wire (bodies as sent, compressed or not) for a first visit until the page has drawn."""
    sizes = []
    with browser_page() as (page, _):
        page.on("requestfinished", lambda request: sizes.append(request.sizes()["responseBodySize"]))
        page.goto(url)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=120_000)
        page.wait_for_timeout(1000)
    return sum(sizes)


def compression(root: Path) -> None:
    """The room command straight, and behind deploy/nginx.conf (gzip), on the demo model."""
    import shutil
    import subprocess

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        print("nginx is not installed (apt-get install nginx): compression not measured")
        return
    browser.ROOT = root
    with streamlit_app(env={"XRAY_PUBLIC": "1"}) as base, tempfile.TemporaryDirectory() as tmp:
        proxy_port = browser.free_port()
        config = (root / "deploy" / "nginx.conf").read_text().replace(
            "127.0.0.1:8501", f"127.0.0.1:{port_of(base)}").replace("listen 8080", f"listen 127.0.0.1:{proxy_port}")
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(config.replace("/tmp/model-xray-nginx", f"{tmp}/nginx"))
        subprocess.run([nginx, "-c", str(conf)], check=True)
        try:
            link = f"/?prompt={quote('The capital of France is')}"
            first_visit_bytes(base + link)  # warm up: the model loads
            direct = first_visit_bytes(base + link)
            proxied = first_visit_bytes(f"http://127.0.0.1:{proxy_port}{link}")
        finally:
            subprocess.run([nginx, "-c", str(conf), "-s", "stop"], check=False)
    print(f"first visit, page code and run: {direct / 2**20:.1f} MiB straight from Streamlit, "
          f"{proxied / 2**20:.1f} MiB through deploy/nginx.conf (gzip); for 100 phones "
          f"{100 * direct / 2**20:.0f} -> {100 * proxied / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py runs")
    parser.add_argument("--only", choices=["storm", "memory", "load", "bytes", "budget", "close"])
    args = parser.parse_args()
    (args.root / "artifacts").mkdir(exist_ok=True)
    if args.only in (None, "storm"):
        storm(args.root.resolve())
    if args.only in (None, "memory"):
        memory(args.root.resolve())
    if args.only in (None, "load"):
        load(args.root.resolve())
    if args.only in (None, "bytes"):
        compression(args.root.resolve())
    if args.only in (None, "budget"):
        budget(args.root.resolve())
    if args.only in (None, "close"):
        close(args.root.resolve())


if __name__ == "__main__":
    main()
