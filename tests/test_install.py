"""Installed as a package: the API and the ``model-xray`` command from any folder; export and report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import model_xray
from backend import capture, lens_summary, load_model
from backend.export import load_run, save_run
from tests.browser import CHROMIUM, browser_page

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "</script><img src=x onerror=alert(1)> apple river apple river"


def test_capture_round_trip(tmp_path):
    lm = load_model()
    cap = capture(lm, "The capital of France is")
    summary = lens_summary(lm, cap)
    npz, sidecar = save_run(tmp_path / "run.npz", cap, summary)
    back = load_run(npz)
    for name in ("token_ids", "attention", "resid", "neurons", "logits"):
        np.testing.assert_array_equal(getattr(back.capture, name), getattr(cap, name))
    for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "target_probs", "target_ranks"):
        np.testing.assert_array_equal(getattr(back.summary, name), getattr(summary, name))
    assert back.capture.tokens == cap.tokens
    assert list(back.summary.top_tokens[-1, -1]) == list(summary.top_tokens[-1, -1])
    meta = json.loads(sidecar.read_text())
    assert meta["prompt"] == cap.prompt and meta["shapes"]["capture.attention"] == list(cap.attention.shape)
    assert {"torch", "transformers", "numpy"} <= set(meta["versions"])


def test_streamlit_flags_carry_the_config():
    flags = model_xray.streamlit_flags()
    assert "--runner.postScriptGC=false" in flags and "--server.enableStaticServing=true" in flags
    assert "--server.address=localhost" in flags
    assert (ROOT / ".streamlit" / "config.toml").resolve() == model_xray.STREAMLIT_CONFIG


def test_pip_install_gives_the_api_and_the_command_anywhere(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, str(ROOT)], check=True, cwd=tmp_path, timeout=600,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import backend; from backend import load_model; print(backend.__file__); "
            "print(load_model().info.name); from backend.loading import BUNDLED_TWIN; print(BUNDLED_TWIN); "
            "print(load_model('xray-demo-secret').info.name)")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=elsewhere, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert str(venv) in out[0] and out[1] == "xray-demo"  # the installed copy, with its bundled model
    assert str(venv) in out[2] and out[3] == "xray-demo-secret"  # and the twin, shipped beside it
    subprocess.run([str(venv / "bin" / "model-xray"), "capture", "The capital of France is", "--out", "run.npz"],
                   cwd=elsewhere, env=env, check=True, capture_output=True)
    assert load_run(elsewhere / "run.npz").capture.tokens[-2:] == [" France", " is"]


@pytest.mark.browser
@pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(), reason="no chromium")
def test_report_opens_offline_and_keeps_the_prompt_as_text(tmp_path):
    out = tmp_path / "report.html"
    assert model_xray.main(["report", HOSTILE, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("Plotly=") <= 2 and len(text) < 8 * 2**20  # plotly's code inlined once, not per chart
    with browser_page() as (page, requests):
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(out.as_uri())
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 7",
                               timeout=60_000)
        assert page.locator("img").count() == 0 and not dialogs
        assert "<img src=x" in page.inner_text("body")  # shown as text
        assert page.locator("[data-view=next-token-guesses] span[data-value]").count() == 5
    assert [url for url in requests.outside if not url.startswith("file:")] == []


def test_the_room_command_sets_what_a_room_needs():
    flags = model_xray.room_flags("192.0.2.7", 8600)
    assert "--client.showErrorDetails=none" in flags  # no tracebacks to visitors
    assert "--browser.serverAddress=192.0.2.7" in flags  # also: no outside call at start-up to find the address
    assert {f for f in flags if f.startswith("--server.allowedHosts=")} == {
        "--server.allowedHosts=192.0.2.7", "--server.allowedHosts=localhost", "--server.allowedHosts=127.0.0.1"}
    assert "--server.address=0.0.0.0" in flags and "--server.port=8600" in flags
