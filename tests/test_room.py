"""A room no visitor can take over: model time metered per visitor, work stopped when nobody waits, faults told."""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from backend import Cancelled, capture, load_model
from backend.compare import compare
from backend.edits import EditError, HeadAblation, NeuronAblation, PromptSteering, Steering
from backend.errors import ModelLoadError
from backend.graph import attribute
from backend.loading import BUNDLED_MODEL, TWIN_ID
from backend.meter import Meter, OverBudget, metered, visiting
from backend.patching import patching_sweep
from backend.run import MAX_LINK_EDITS
from backend.whatif import edit_effect
from tests import pages
from tests.browser import streamlit_app
from tests.pages import assert_usable, errors, unescaped

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def demo():
    return load_model()


# --- the meter --------------------------------------------------------------------------------


def test_the_meter_charges_what_work_held_the_lock_and_refuses_past_the_budget(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    meter = Meter(budget_s=2.0, window_s=60.0)
    meter.charge("a", 1.5)
    meter.check("a")  # 1.5 of 2 spent: still allowed
    meter.charge("a", 1.0)
    with pytest.raises(OverBudget, match="2 seconds of the model's time every 60 seconds") as over:
        meter.check("a")
    assert over.value.wait_s == pytest.approx(60.0)  # the first charge must leave the window first
    meter.check("b")  # another visitor is not affected
    clock[0] += 61.0
    meter.check("a")  # both charges left the window
    assert meter.spent("a") == 0.0


def test_nested_metered_work_is_charged_once_and_waiting_for_the_lock_is_free():
    meter = Meter(budget_s=100.0)
    lock = threading.RLock()
    with visiting(meter, "v"):
        with metered(lock):
            time.sleep(0.05)
            with metered(lock):
                time.sleep(0.05)
    assert 0.09 < meter.spent("v") < 0.5
    held = threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            time.sleep(0.3)

    other = threading.Thread(target=hold)
    other.start()
    held.wait()
    before = meter.spent("v")
    with visiting(meter, "v"), metered(lock):  # waits about 0.3 s for the lock: not charged
        pass
    other.join()
    assert meter.spent("v") - before < 0.05


def test_every_kind_of_work_on_a_model_is_charged_and_refused_past_the_budget(demo):
    twin = load_model(TWIN_ID)
    answer, foil = (demo.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("Paris", "Rome"))
    plain = capture(demo, PROMPT)
    kinds = {
        "prompt": lambda: capture(demo, PROMPT),
        "what if": lambda: edit_effect(demo, plain, (HeadAblation(3, 1), PromptSteering(0, "The cat", "The dog")),
                                       max_tokens=64),
        "patching": lambda: patching_sweep(demo, PROMPT, "The capital of Italy is", answer, foil),
        "compare": lambda: compare(demo, twin, PROMPT),
        "graph": lambda: attribute(demo, PROMPT),
    }
    for name, work in kinds.items():
        meter = Meter(budget_s=1e6)
        with visiting(meter, "visitor"):
            work()  # the work runs ...
            assert meter.spent("visitor") > 0, name  # ... and is charged
            meter.budget_s = meter.spent("visitor")  # the visitor's share is used up now
            with pytest.raises(OverBudget):
                work()  # the next piece is refused before it reaches the model
    assert capture(demo, PROMPT).n_tokens == plain.n_tokens  # outside a page, nothing is metered


def test_long_work_stops_between_its_blocks_when_nobody_waits(demo):
    answer, foil = (demo.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("Paris", "Rome"))
    plain = capture(demo, PROMPT)

    def stop_after(k: int):
        calls = []

        def stop() -> bool:
            calls.append(1)
            return len(calls) > k
        return stop

    with pytest.raises(Cancelled):
        patching_sweep(demo, PROMPT, "The capital of Italy is", answer, foil, should_stop=stop_after(2))
    with pytest.raises(Cancelled):
        edit_effect(demo, plain, (HeadAblation(3, 1), NeuronAblation(2, 5)), max_tokens=64,
                    should_stop=stop_after(1))
    with pytest.raises(Cancelled):
        attribute(demo, PROMPT, should_stop=stop_after(3))


# --- the page in public mode --------------------------------------------------------------------


def test_a_visitor_over_budget_gets_one_message_in_every_session_from_the_same_address(monkeypatch):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    monkeypatch.setenv("XRAY_BUDGET_SECONDS", "1")
    monkeypatch.setenv("XRAY_RUNS_PER_MINUTE", "100")
    first = pages.open_app("one two three four five six seven eight nine ten " * 4)
    assert_usable(first)
    for k in range(60):  # new prompts until the visitor's second of model time is used
        first.text_area(key="prompt").set_value(f"word {k} and more " * 12).run()
        if errors(first):
            break
    (message,) = errors(first)
    assert "1 seconds of the model's time every 60 seconds" in unescaped(message)
    assert_usable(first)
    second = pages.open_app("a fresh prompt in a new session " * 3)  # a reload or another tab: the same visitor
    assert any("1 seconds of the model's time" in unescaped(m) for m in errors(second))
    assert_usable(second)


def test_a_prompt_over_the_public_cap_is_not_told_to_raise_a_limit_it_cannot(monkeypatch):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    at = pages.open_app("word " * 300)
    (message,) = errors(at)
    assert "this shared page reads at most 128. Shorten the prompt." in unescaped(message)
    assert "raise" not in message


def test_public_mode_hides_error_details_however_it_is_started(monkeypatch):
    import streamlit as st

    monkeypatch.setenv("XRAY_PUBLIC", "1")
    st.set_option("client.showErrorDetails", "full")
    at = pages.open_app(PROMPT)
    assert_usable(at)
    assert st.get_option("client.showErrorDetails") == "none"
    st.set_option("client.showErrorDetails", "full")


def test_the_steering_form_holds_at_most_as_many_changes_as_a_link(monkeypatch):
    at = pages.open_app("The dog says")
    at.session_state["view_tab"] = "What if"
    at.run()
    for k in range(MAX_LINK_EDITS + 3):
        at.text_input[0].set_value(f"The cat {k}")
        next(b for b in at.button if b.label == "Steer").click().run()
    assert len(at.session_state["edits"]) == MAX_LINK_EDITS
    assert any(f"{MAX_LINK_EDITS} changes are in force" in w.value for w in at.warning)
    assert_usable(at)


# --- bad input: one message, no traceback, no path ---------------------------------------------


@pytest.mark.parametrize("public", [False, True])
def test_a_deeply_nested_link_gets_one_message(monkeypatch, public):
    if public:
        monkeypatch.setenv("XRAY_PUBLIC", "1")
    at = pages.open_app(PROMPT, edits="[" * 985 + "]" * 985)
    assert_usable(at)
    assert not at.exception
    (warning,) = [unescaped(w.value) for w in at.warning]
    assert "nested more than 4 levels deep" in warning and "/" not in warning.split(":", 1)[1]
    assert not errors(at)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e308"])
def test_a_strength_or_value_that_is_not_a_finite_size_gets_one_message(demo, value):
    with pytest.raises(EditError, match="must be a finite number between -10000 and 10000"):
        Steering(0, np.ones(demo.info.d_model, np.float32), float(value)).check(demo, 5)
    with pytest.raises(EditError, match="must be a finite number"):
        capture(demo, PROMPT, edits=(NeuronAblation(2, 5, float(value)),))
    at = pages.open_app(PROMPT, edits=f'[["neuron", 2, 5, {value}]]')
    assert_usable(at)
    assert not at.exception
    messages = [unescaped(m.value) for m in (*at.warning, *at.error)]
    assert len(messages) == 1
    assert ("is not a number a link may hold" if value != "1e308" else "must be a finite number") in messages[0]
    page_text = " ".join(m.value for m in (*at.markdown, *at.caption, *at.info))
    assert "nan%" not in page_text.lower() and "inf%" not in page_text.lower()


def test_a_steering_prompt_over_the_limit_names_its_box_and_no_limit_to_raise(monkeypatch, demo):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    long = "word " * 400
    with pytest.raises(EditError, match="steering prompt to push away from .* too long: .* limit 128. Shorten it."):
        capture(demo, "The dog says", max_tokens=128, edits=(PromptSteering(0, "The cat", long),))
    at = pages.open_app("The dog says", edits=json.dumps([["steer", 0, 2.0, long, "The dog"]]))
    assert_usable(at)
    text = " ".join(unescaped(e) for e in errors(at))
    assert "steering prompt to push toward" in text and "raise" not in text


def _damaged(tmp_path, what: str):
    folder = tmp_path / what
    folder.mkdir()
    for path in BUNDLED_MODEL.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    if what == "truncated":
        (folder / "config.json").write_text((BUNDLED_MODEL / "config.json").read_text()[:200])
    elif what == "no-tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
    else:
        weights = load_file(str(folder / "model.safetensors"))
        name = next(k for k in weights if k.endswith("h.1.mlp.c_fc.weight"))
        weights[name][0, 0] = math.nan
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize(("what", "cause"), [
    ("truncated", "config.json is not valid JSON"),
    ("no-tokenizer", "has no tokenizer files"),
    ("nan-weights", "weights hold NaN or infinite numbers (first in transformer.h.1.mlp.c_fc.weight)"),
])
def test_a_damaged_model_folder_gets_a_message_naming_the_real_cause(tmp_path, what, cause):
    folder = _damaged(tmp_path, what)
    with pytest.raises(ModelLoadError) as error:
        load_model(folder)
    assert cause in str(error.value)
    at = pages.open_app(PROMPT, str(folder))
    assert_usable(at)
    assert not at.exception
    (message,) = errors(at)
    assert cause in unescaped(message)


def test_a_hub_that_accepts_connections_and_never_answers_gets_a_message_in_seconds(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(16)], daemon=True).start()
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="the hub cannot be reached"):
        load_model("someone/never-answers")
    assert time.monotonic() - start < 30  # measured about 12 s: two bounded probes, then the local cache
    server.close()


# --- serving ------------------------------------------------------------------------------------


def _websocket_status(base: str, host: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Origin: http://{host}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(200).split(b" ")[1])


def test_the_open_mode_config_refuses_a_websocket_for_a_foreign_host():
    with streamlit_app() as base:
        assert _websocket_status(base, "evil.example") == 403
        assert _websocket_status(base, f"127.0.0.1:{base.rsplit(':', 1)[1]}") == 101
