"""Start the app with ``streamlit run`` and drive it in headless Chromium (Playwright).

Shared by the end-to-end tests and the page benchmark. Every request the page makes is
recorded, so a caller can check that none left the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("XRAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage"]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_app(env: dict[str, str] | None = None, timeout: float = 90) -> Iterator[str]:
    """Run ``streamlit run app.py`` on a free port; yields its base URL."""
    port = free_port()
    log = open(ROOT / "artifacts" / f"streamlit-{port}.log", "w") if (ROOT / "artifacts").is_dir() \
        else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
         f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("streamlit did not become healthy")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Requests:
    """URLs the page asked for, split by whether they stayed on this machine."""

    local: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    bytes_received: int = 0

    def record(self, url: str) -> None:
        """File one request."""
        host = urlparse(url).hostname or ""
        if url.startswith(("data:", "blob:", "about:")) or host in LOCAL_HOSTS:
            self.local.append(url)
        else:
            self.outside.append(url)


@contextmanager
def browser_page(width: int = 1500, height: int = 1100, playwright=None):
    """A fresh headless Chromium page and the record of its requests.

    Pass a running ``sync_playwright()`` to open several browsers at once.
    """
    if playwright is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as started, browser_page(width, height, started) as pair:
            yield pair
        return
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
    try:
        page = browser.new_context(viewport={"width": width, "height": height}).new_page()
        requests = Requests()
        page.on("request", lambda request: requests.record(request.url))
        yield page, requests
    finally:
        browser.close()


CIRCUITS_DRAWN = """n => [...document.querySelectorAll('iframe')]
    .filter(f => f.contentDocument && f.contentDocument.querySelector('[id^=cv-] *')).length >= n"""
"""JavaScript: at least ``n`` CircuitsVis frames have drawn (their root element has content)."""


def app_url(base: str, prompt: str, model: str = "demo") -> str:
    """The shareable link that opens the page on ``prompt``."""
    return f"{base}/?prompt={quote(prompt)}&model={quote(model)}"


def wait_for_views(page, timeout_ms: int = 90_000) -> None:
    """Until the three tabs exist and no script run is in progress."""
    page.wait_for_selector("[role=tab]", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)
    page.wait_for_selector(".js-plotly-plot", timeout=timeout_ms)


def open_tab(page, label: str) -> None:
    """Click the tab whose label contains ``label``."""
    page.get_by_role("tab", name=label).click()
    page.wait_for_timeout(300)
