"""Installed as a package: the API and the ``model-xray`` command from any folder; export and report."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
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


def run_ok(command: list[str], **options) -> subprocess.CompletedProcess:
    """Run a child; on failure, the assertion shows its output and its stderr."""
    done = subprocess.run(command, capture_output=True, text=True, **options)
    assert done.returncode == 0, (f"{command[:3]} exited {done.returncode}\nstdout:\n{done.stdout}\n"
                                  f"stderr:\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict]:
    """``pip install .`` into a fresh venv that sees this interpreter's packages (torch and the rest), not the checkout.

    The venv is made without ``--system-site-packages``: from inside a venv that flag exposes the
    base interpreter's packages, not this one's. A ``.pth`` file puts this interpreter's
    site-packages after the venv's own instead.
    """
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    run_ok([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    purelib = run_ok([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = [p for p in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                                      *site.getsitepackages()]) if Path(p).is_dir() and str(ROOT) not in p]
    (Path(purelib) / "parent_packages.pth").write_text("\n".join(ours) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run_ok([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(ROOT)], cwd=root,
           timeout=600, env=env)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return python, elsewhere, env


def test_pip_install_gives_the_api_and_the_command_anywhere(installed):
    python, elsewhere, env = installed
    venv = python.parent.parent
    code = ("import backend; from backend import load_model; print(backend.__file__); "
            "print(load_model().info.name); from backend.loading import BUNDLED_TWIN; print(BUNDLED_TWIN); "
            "print(load_model('xray-demo-secret').info.name)")
    out = run_ok([str(python), "-c", code], cwd=elsewhere, env=env).stdout.split()
    assert str(venv) in out[0] and out[1] == "xray-demo"  # the installed copy, with its bundled model
    assert str(venv) in out[2] and out[3] == "xray-demo-secret"  # and the twin, shipped beside it
    run_ok([str(venv / "bin" / "model-xray"), "capture", "The capital of France is", "--out", "run.npz"],
           cwd=elsewhere, env=env)
    assert load_run(elsewhere / "run.npz").capture.tokens[-2:] == [" France", " is"]


def test_a_failing_child_shows_its_stderr():
    with pytest.raises(AssertionError, match="(?s)stderr:.*ZeroDivisionError"):
        run_ok([sys.executable, "-c", "1 / 0"])


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?\d+\.\d+", line)]


def test_each_pages_snippet_runs_from_another_folder_and_prints_the_views_numbers(installed):
    """The scripts under "Reproduce in Python", as the page shows them, against the views' own numbers (JSON)."""
    from tests.pages import open_app
    from views.page import view_json

    python, elsewhere, env = installed
    prompt = "apple river lamp cloud seven green door apple river lamp cloud seven green"
    at = open_app(prompt, edits='[["head",3,1,"zero"]]')
    at.session_state["view_tab"] = "Patching"
    at.run()
    scripts = {re.match(r"# Model X-ray, the (\w+) view", t.value).group(1): t.value for t in at.text
               if t.value.startswith("# Model X-ray, the ")}
    assert {"attention", "lens", "neurons", "features", "whatif", "patching"} <= set(scripts)
    printed = {}
    for view in ("attention", "lens", "neurons", "whatif", "patching"):
        (elsewhere / f"model-xray-{view}.py").write_text(scripts[view])
        printed[view] = run_ok([str(python), f"model-xray-{view}.py"], cwd=elsewhere, env=env,
                               timeout=300).stdout.splitlines()
    drawn = at.session_state["drawn"]
    from backend.run import Run, edits_from_json
    run = Run(None, "auto", "auto", prompt, at.number_input(key="max_tokens").value, features="bundled")
    page = {view: json.loads(view_json(run, view, None, drawn)) for view in ("attention", "lens")}
    attention = drawn["Attention"]
    score = page["attention"]["scores"][attention.score][attention.layer][attention.head]
    assert printed["attention"][0].endswith(f"score: {score:.4f}")
    lens = drawn["Logit lens"]
    tops = [row[lens.position][0] for row in page["lens"]["top_probs"]]
    np.testing.assert_allclose([_numbers(line)[-1] for line in printed["lens"][1:-1]], tops, atol=1e-4)
    neurons = drawn["Neurons"]
    activation = capture(load_model(), prompt).neurons[neurons.layer, neurons.position, neurons.neuron]
    assert _numbers(printed["neurons"][0])[-1] == pytest.approx(float(activation), abs=1e-4)
    edited = json.loads(view_json(Run(None, "auto", "auto", prompt, run.max_tokens, edits_from_json(
        '[["head",3,1,"zero"]]'), features="bundled"), "whatif"))
    np.testing.assert_allclose(_numbers(printed["whatif"][1]), list(edited["after"].values()), atol=1e-4)
    pair = drawn["Patching"]
    sweep = json.loads(view_json(run, "patching", (run.with_prompt(pair.clean), run.with_prompt(pair.corrupt),
                                                   pair.answer_id, pair.foil_id)))
    np.testing.assert_allclose([_numbers(line) for line in printed["patching"][2:]], sweep["resid"], atol=1e-4)


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


def test_stopping_the_command_stops_streamlit_and_nothing_is_watched():
    """SIGTERM to ``model-xray app`` reaches Streamlit: the port closes and both processes end."""
    import signal
    import time
    import urllib.request

    from tests.browser import free_port

    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys, model_xray; sys.exit(model_xray.main(sys.argv[1:]))", "app",
         "--server.headless=true", f"--server.port={port}", "--browser.gatherUsageStats=false"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://localhost:{port}/_stcore/health"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert parent.poll() is None and time.time() < deadline, "the app did not start"
            time.sleep(0.5)
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        assert len(children) == 1
        command = Path(f"/proc/{children[0]}/cmdline").read_bytes().split(b"\0")
        assert b"--server.fileWatcherType=none" in command
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) is not None
        assert not Path(f"/proc/{children[0]}").exists() or b"zombie" in Path(
            f"/proc/{children[0]}/status").read_bytes().lower()
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)
    finally:
        if parent.poll() is None:
            parent.kill()
