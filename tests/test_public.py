"""Public mode, escaping of everything a link can carry, and fast failure with no internet."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from tests import pages
from tests.pages import assert_usable, errors, unescaped

PAYLOADS = ["![x](http://127.0.0.1:9/x.png)", "[Click here to fix](http://127.0.0.1:9/phish)",
            "<img src=x onerror=alert(1)>", "**bold** :red[alert] $x$"]


def open_app(query: dict[str, str]) -> AppTest:
    return pages.open_app(None, None, query=query)


def markdown_texts(at: AppTest) -> list[str]:
    return [e.value for e in (*at.markdown, *at.error, *at.warning, *at.info, *at.caption)]


def assert_no_live_markup(at: AppTest) -> None:
    """Every [ ] ( ) ! < > reaching markdown is escaped: no image, link or tag can form."""
    for text in markdown_texts(at):
        stripped = text.replace("\\[", "").replace("\\]", "").replace("\\(", "").replace("\\)", "") \
            .replace("\\!", "").replace("\\<", "").replace("\\>", "")
        assert "](" not in stripped and "<img" not in stripped, text
        assert not re.search(r"(?i)https?\\?:", text), text  # a bare address would become a link (GFM autolink)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_links_model_and_prompt_stay_text(payload):
    at = open_app({"model": payload, "prompt": payload})
    assert_usable(at)
    assert_no_live_markup(at)
    assert any(payload in message for message in errors(at))  # the bad model is named, as text


@pytest.mark.parametrize("payload", PAYLOADS)
def test_public_mode_refuses_a_links_model(monkeypatch, payload):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    at = open_app({"model": payload, "prompt": "The capital of France is"})
    assert_usable(at)
    assert_no_live_markup(at)
    (warning,) = [unescaped(w.value) for w in at.warning]
    assert "public mode" in warning and payload[:40] in warning
    assert at.selectbox(key="model_pick").options == [  # the bundled models only
        "Bundled demo model (offline)", "Bundled twin: the demo model taught to keep capitals secret (offline)"]
    assert not [w for w in at.text_input if w.key == "model_typed"]  # no box for a path or hub id
    assert not errors(at)  # the page runs on the bundled model instead


def test_public_mode_limits_tokens_and_runs(monkeypatch):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    monkeypatch.setenv("XRAY_RUNS_PER_MINUTE", "2")
    at = open_app({"prompt": "public one"})
    box = at.number_input(key="max_tokens")
    assert box.value == 128 and box.max == 128
    assert not [s for s in at.selectbox if s.key in ("device", "dtype")]
    at.text_area(key="prompt").set_value("public two").run()
    assert not at.warning
    at.text_area(key="prompt").set_value("public three").run()  # a third new run within the minute
    (warning,) = [unescaped(w.value) for w in at.warning]
    assert "at most 2 new prompts a minute" in warning
    assert_usable(at)
    at.text_area(key="prompt").set_value("public one").run()  # already computed: free
    assert not at.warning


def test_public_mode_hides_error_details(monkeypatch):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    import backend.lens

    def broken(*args, **kwargs):
        raise RuntimeError("secret /srv/path/detail")

    monkeypatch.setattr(backend.lens, "lens_summary", broken)
    monkeypatch.setattr(backend, "lens_summary", broken)
    at = open_app({"prompt": "a prompt that fails in public"})
    assert_usable(at)
    assert errors(at) == ["The model failed while running this prompt."]


def test_offline_hub_id_fails_fast_and_is_remembered():
    """No internet and no HF_HUB_OFFLINE (a lecture hall): a probe of the hub, no online hub call, then nothing.

    Counted, not timed: the hub client's retries (about 24 s each time) are what a lecture hall
    would wait for, and here it is never called.
    """
    code = """
import socket
import huggingface_hub.file_download as download
from backend import load_model
from backend.errors import ModelLoadError
probes, hub_calls = [], []
real = socket.create_connection
socket.create_connection = lambda *a, **k: (probes.append(a[0]), real(*a, **k))[1]
for name in ("hf_hub_download", "get_hf_file_metadata"):
    original = getattr(download, name)
    setattr(download, name, lambda *a, _o=original, **k: (hub_calls.append(k.get("local_files_only")), _o(*a, **k))[1])
errors = []
for _ in range(2):
    try:
        load_model("gpt2-never-downloaded-here")
    except ModelLoadError as error:
        errors.append(error)
    print(len(probes), "cannot be reached" in str(errors[-1]))
print(errors[0] is errors[1], [flag for flag in hub_calls if not flag])
"""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a closed port: the hub client behaves as unreachable
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    lines = out.stdout.split("\n")
    first, again = lines[0].split(), lines[1].split()
    # our one probe (and huggingface_hub's once-a-process agent registry, with its own short timeout); then none
    assert first[1] == again[1] == "True" and int(first[0]) <= 2 and again[0] == first[0], out.stdout + out.stderr
    assert lines[2] == "True []", out.stdout + out.stderr  # the same error again; no call that may go online


def test_memory_is_bounded_by_the_caches(monkeypatch):
    """Many prompts in one session: only what the byte-bounded cache holds stays alive."""
    import gc

    import streamlit as st

    from backend import Capture

    monkeypatch.setenv("XRAY_CACHE_MB", "1")
    st.cache_resource.clear()  # the caches are made again with this bound
    try:
        at = open_app({"prompt": "soak 0"})
        for i in range(1, 30):
            at.text_area(key="prompt").set_value(f"soak prompt {i}: " + "one two " * (i % 5)).run()
            assert_usable(at)
        gc.collect()
        live = [o for o in gc.get_objects() if type(o) is Capture]
        assert sum(c.nbytes for c in live) <= 2**20 + max(c.nbytes for c in live)
        assert 1 <= len(live) <= 5, len(live)  # 30 prompts ran; before, every one of them stayed alive
    finally:
        st.cache_resource.clear()
