"""End to end in headless Chromium: ``streamlit run app.py``, opened through a shared link."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.browser import CHROMIUM, CIRCUITS_DRAWN, ROOT, app_url, browser_page, open_tab, streamlit_app, wait_for_views

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed")]

MODEL = os.environ.get("XRAY_BROWSER_MODEL", "demo")
SHOTS = ROOT / "artifacts" / "screenshots"
HOSTILE = "</script><img src=x onerror=alert(1)> and <b>bold</b>"


@pytest.fixture(scope="module")
def server():
    (ROOT / "artifacts").mkdir(exist_ok=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_app() as base:
        yield base


def circuits_frames(page) -> list:
    return [f for f in page.frames if f != page.main_frame and f.query_selector("[id^=cv-]")]


def wait_for_circuits(page, count: int) -> list:
    page.wait_for_function(CIRCUITS_DRAWN, arg=count, timeout=30_000)
    return circuits_frames(page)


def frame_with(page, component: str, index: int = 0):
    """The CircuitsVis frame rendering ``component`` (the ``index``-th such frame in page order)."""
    return [f for f in circuits_frames(page) if f"CircuitsVis.{component}" in f.content()][index]


def canvas_drawn(frame) -> bool:
    return frame.evaluate("() => [...document.querySelectorAll('canvas')].some(c => c.width > 0 && c.height > 0)")


def visible_plots(page) -> int:
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .filter(p => p.offsetParent !== null && p.querySelector('.main-svg')).length""")


def test_every_view_draws_offline(server):
    with browser_page(height=2600) as (page, requests):
        page.goto(app_url(server, "The capital of France is Paris. The capital of Spain is", MODEL))
        wait_for_views(page)
        wait_for_circuits(page, 1)  # the neuron's frame, drawn in its hidden tab
        reader = page.locator("[data-view=token-reads]")  # what one token reads, in the page itself
        assert "Spain" in reader.inner_text() and reader.locator("span[data-value]").count() >= 10
        assert page.locator("[data-view=next-token-guesses] span[data-value]").count() == 5
        assert visible_plots(page) >= 2
        page.screenshot(path=str(SHOTS / "attention.png"))
        page.get_by_text("Show all").click()  # the all-heads frame draws only when asked
        wait_for_circuits(page, 2)
        heads = frame_with(page, "AttentionHeads")
        heads.wait_for_function("() => document.body.innerText.includes('Head Selector')", timeout=15_000)
        assert canvas_drawn(heads)
        open_tab(page, "Logit lens")
        page.wait_for_timeout(500)
        assert visible_plots(page) >= 2
        page.screenshot(path=str(SHOTS / "lens.png"))
        open_tab(page, "Neurons")
        page.wait_for_timeout(500)
        assert visible_plots(page) >= 3
        frame_with(page, "ColoredTokens", -1).wait_for_function(  # the neuron's frame
            "() => document.body.innerText.includes('capital')", timeout=15_000)
        page.screenshot(path=str(SHOTS / "neurons.png"))
        assert requests.local, "the page made no request at all"
        assert requests.outside == [], f"requests left the machine: {requests.outside[:5]}"


def test_hostile_prompt_runs_no_script(server):
    with browser_page() as (page, requests):
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(app_url(server, HOSTILE, MODEL))
        wait_for_views(page)
        wait_for_circuits(page, 1)
        page.wait_for_timeout(1000)
        assert dialogs == []
        for frame in page.frames:
            assert frame.query_selector_all("img[src=x], b") == [] or frame == page.main_frame
        frame_with(page, "ColoredTokens").wait_for_function(
            "() => document.body.innerText.includes('›‹img')", timeout=15_000)
        assert page.main_frame.query_selector_all("img[src=x]") == []
        reader = page.inner_text("[data-view=token-reads]")  # what one token reads, in the page itself
        assert "</script><img src=x" in reader.replace("␣", " ")
        assert "</script><img src=x" in page.inner_text("[data-testid=stText]").replace(" | ", "").replace("␣", " ")
        page.screenshot(path=str(SHOTS / "hostile.png"))
        assert requests.outside == []


def test_selection_change_redraws_only_its_view(server):
    with browser_page() as (page, _):
        frames: list[bytes] = []
        page.on("websocket", lambda ws: ws.on(
            "framereceived",
            lambda payload: frames.append(payload if isinstance(payload, bytes) else payload.encode())))
        page.goto(app_url(server, "one two three four one two three four", MODEL))
        wait_for_views(page)
        wait_for_circuits(page, 1)
        open_tab(page, "Logit lens")
        page.wait_for_timeout(1000)
        frames.clear()
        box = page.locator("[data-testid=stSelectbox]").filter(has_text="Position to follow")
        box.locator("input").click()
        page.keyboard.press("ArrowDown")  # opens the list
        page.get_by_role("option").nth(2).click()
        page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')")
        page.wait_for_timeout(1500)
        sent = b"".join(frames)
        assert b"probability and rank" in sent  # the lens trajectory was redrawn
        assert b"attention_grid" not in sent and b"attention_head_map" not in sent  # attention was not
        assert b"neuron_map" not in sent and b"Look inside" not in sent  # nor neurons, nor the page


SELECTED = """(label => [...document.querySelectorAll('[data-testid=stSelectbox]')]
    .find(box => box.querySelector('label')?.innerText.trim() === label)?.querySelector('input')?.value ?? '')"""
"""JavaScript: what the select box labelled exactly ``label`` shows ('' while there is none)."""


def selected(page, label: str) -> str:
    """What the select box labelled exactly ``label`` shows."""
    return page.evaluate(f"label => {SELECTED}(label)", label)


def test_a_new_prompt_shows_its_own_defaults(server):
    """The browser keeps a widget's old value unless its identity changes: check what it shows."""
    with browser_page() as (page, _):
        page.goto(app_url(server, "The capital of France is", MODEL))
        wait_for_views(page)
        open_tab(page, "Logit lens")
        box = page.locator("[data-testid=stSelectbox]").filter(has_text="Position to follow")
        box.locator("input").click()
        page.keyboard.press("ArrowDown")  # opens the list
        page.get_by_role("option").nth(2).click()
        page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')")
        assert selected(page, "Position to follow").startswith("2:")
        page.get_by_role("button", name="Repeated words (induction)").click()
        page.wait_for_function(f"() => {SELECTED}('Score every head by').startsWith('Induction')", timeout=60_000)
        last = f"{page.inner_text('[data-testid=stText]').count(' | ')}:"  # n tokens: n - 1 separators
        labels = ["Position to follow", "Reading token"]  # the neuron view opens where its neuron fires
        try:  # the views arrive one after another: wait for the last of them
            page.wait_for_function(f"""labels => labels.every(label => {SELECTED}(label).startsWith('{last}'))""",
                                   arg=labels, timeout=30_000)
        finally:
            shown = {label: selected(page, label) for label in labels}
        assert all(value.startswith(last) and "green" in value for value in shown.values()), shown


LONE_SURROGATE = """() => { const box = document.querySelector('textarea');
  const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
  setter.call(box, 'broken ' + String.fromCharCode(0xD800) + ' text');
  box.dispatchEvent(new Event('input', {bubbles: true})); box.focus(); }"""


def test_a_lone_surrogate_still_runs_the_prompt(server):
    """Half a surrogate pair used to break the websocket message: the run never happened."""
    with browser_page() as (page, _):
        page.goto(app_url(server, "The capital of France is", MODEL))
        wait_for_views(page)
        page.evaluate(LONE_SURROGATE)
        page.get_by_role("textbox", name="Prompt").press("Control+Enter")
        # the new run's tokens: U+FFFD, which the demo tokenizer spells as its three bytes
        page.wait_for_function("() => document.querySelector('[data-testid=stText]').innerText"
                               ".includes('<0xEF> | <0xBF> | <0xBD>')", timeout=60_000)
        assert "\ufffd" in page.get_by_role("textbox", name="Prompt").input_value()  # shown as a replacement mark


LINK_PAYLOAD = ("![x](http://127.0.0.1:9/x.png) [Click here to fix](http://127.0.0.1:9/phish) "
                "<img src=x onerror=alert(1)>")


def test_a_links_model_and_prompt_create_no_element(server):
    """Markdown and HTML in a shared link's model and prompt show as text: no image, link or tag."""
    from urllib.parse import quote

    with browser_page() as (page, requests):
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{server}/?model={quote(LINK_PAYLOAD)}&prompt={quote(LINK_PAYLOAD)}")
        page.wait_for_selector("[data-testid=stAlertContentError]", timeout=60_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')")
        assert page.locator("a[href*='127.0.0.1:9'], img[src*='127.0.0.1:9'], img[src=x]").count() == 0
        assert "Click here to fix" in page.inner_text("[data-testid=stAlertContentError]")  # named, as text
        assert not dialogs
    assert [url for url in requests.outside if "127.0.0.1:9" in url] == [] and requests.outside == []


def test_the_secret_example_draws_the_compare_view_offline(server):
    with browser_page(height=3200) as (page, requests):
        page.goto(app_url(server, "Counting is fun", "demo"))
        wait_for_views(page)
        page.get_by_role("button", name="A secret kept").click()
        page.wait_for_function("() => document.body.innerText.includes('B suppresses the answer')", timeout=90_000)
        page.wait_for_function(
            "() => ['compare_tracks', 'compare_kl', 'compare_weights', 'compare_patch'].every("
            "k => document.querySelector('.st-key-' + k + ' .main-svg'))", timeout=60_000)
        assert "compare=xray-demo-secret" in page.url  # the link holds both models
        assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
        text = page.locator("body").inner_text()
        assert "A (xray-demo) says next" in text and "B (xray-demo-secret) says next" in text
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
        assert requests.outside == [], f"requests left the machine: {requests.outside[:5]}"


def test_the_twin_shows_what_it_holds_inside(server):
    with browser_page(height=1800) as (page, _):
        page.goto(app_url(server, "The capital of France is", "xray-demo-secret"))
        wait_for_views(page)
        open_tab(page, "Logit lens")
        page.wait_for_function("() => document.body.innerText.includes('Inside, after layer')", timeout=30_000)
        page.screenshot(path=str(SHOTS / "held-inside.png"))


PHONE = (390, 844)
FORBIDDEN = ("KL", "nats", "logit", "margin", "lens")


def test_a_tap_on_a_phone_shows_both_answers_and_the_verdict(server):
    with browser_page(*PHONE) as (page, _):
        page.goto(app_url(server, "Counting is fun", "demo"))
        wait_for_views(page)
        page.get_by_role("button", name="A secret kept").click()
        page.wait_for_function("() => document.body.innerText.includes('goes on: “a secret.”')", timeout=90_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=90_000)
        page.wait_for_timeout(2500)  # the page keeps the answers in view while the charts below draw
        shown = page.evaluate("""([w, h]) => [...document.querySelectorAll('[data-testid=stMarkdownContainer]')]
            .filter(e => { const r = e.getBoundingClientRect(); return r.bottom > 0 && r.top < h && r.height > 0; })
            .map(e => e.innerText)""", list(PHONE))
        on_screen = "\n".join(shown)
        page.screenshot(path=str(SHOTS / "phone-secret.png"))
        assert "goes on: “Paris" in on_screen and "goes on: “a secret.”" in on_screen, on_screen
        verdict = next(line for line in shown if "Training changed" in line)
        assert "still knows it" in verdict
        assert not any(word in verdict for word in FORBIDDEN), verdict


def test_charts_fit_a_phone(server):
    with browser_page(PHONE[0], 3000) as (page, _):
        page.goto(app_url(server, "When Mary and John went to the store, John gave a drink to", "demo"))
        wait_for_views(page)
        page.wait_for_function("() => document.querySelector('.st-key-attention_head_map .main-svg')", timeout=60_000)
        facts = page.evaluate("""() => ({
            modebars: [...document.querySelectorAll('.modebar-container')].filter(m => m.offsetParent !== null).length,
            tabs: [...document.querySelectorAll('[role=tab]')].map(t => t.getBoundingClientRect().right),
            width: document.documentElement.clientWidth,
            heads: document.querySelector('.st-key-attention_head_map .main-svg').getBoundingClientRect().width,
        })""")
        page.screenshot(path=str(SHOTS / "phone-attention.png"))
    assert facts["modebars"] == 0  # no toolbar sits on a chart's title
    assert max(facts["tabs"]) <= facts["width"], facts  # every tab's name in view: the tab bar wraps
    assert facts["heads"] >= 500  # the head heatmap keeps its size and scrolls sideways


def test_a_download_logs_no_missing_context_and_gives_the_views_numbers(server):
    import json

    from backend import capture, load_model
    from backend.heads import head_scores

    log = ROOT / "artifacts" / f"streamlit-{server.rsplit(':', 1)[1]}.log"
    before = log.read_text() if log.exists() else ""
    with browser_page() as (page, _):
        page.goto(app_url(server, "apple river lamp cloud apple river lamp", "demo"))
        wait_for_views(page)
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Numbers (JSON)").first.click()
        numbers = json.loads(Path(download.value.path()).read_text())
    scores = head_scores(capture(load_model(), "apple river lamp cloud apple river lamp"))
    np.testing.assert_allclose(np.array(numbers["scores"]["induction"], dtype=float), scores.induction, atol=1e-6)
    after = log.read_text()[len(before):]
    assert "missing ScriptRunContext" not in after
