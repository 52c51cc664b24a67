"""Compare mode and answers held inside, on the page without a browser, checked against the backend."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import backend
from backend.compare import circuit_diff, compare
from backend.features import ErrorAblation, load_transcoders
from backend.loading import TWIN_ID
from backend.scan import scan
from backend.suppressed import suppressed
from backend.tokens import label
from tests import pages
from tests.pages import APP, assert_usable, captions_of, charts, errors, plain, sentences, unescaped
from tests.tiny import FAMILY_BY_NAME, build, probs_without_heads

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def pair():
    return backend.load_model(), backend.load_model(TWIN_ID)


def open_app(prompt: str = PROMPT, model: str = "demo", compare_with: str | None = None) -> AppTest:
    return pages.open_app(prompt, model, compare=compare_with)


def test_the_secret_example_opens_compare_mode_on_the_pair(pair):
    at = open_app("Counting is fun")
    next(b for b in at.button if b.label == "A secret kept").click().run()
    assert_usable(at)
    assert not errors(at)
    assert dict(at.query_params) == {"prompt": PROMPT, "model": "demo", "compare": TWIN_ID}  # the link holds both
    assert at.tabs[0].label == "Compare" and at.sidebar.toggle(key="compare_on").value
    diff = compare(*pair, PROMPT)
    text = sentences(at)
    a_prob, b_prob = diff.guesses_a[0][2], diff.guesses_b[0][2]
    assert f"**A (xray-demo) says next**: '␣Paris' ({a_prob:.0%})" in " ".join(text)
    assert f"**B (xray-demo-secret) says next**: '␣a' ({b_prob:.0%})" in " ".join(text)
    paris_in_twin = diff.track("a", "b")
    sentence = next(s for s in text if s.startswith("**A says"))
    assert f"'␣Paris' is still B's second choice ({paris_in_twin.probs[-1]:.0%})" in sentence
    assert f"part ways at layer {diff.part_ways[-1]}" in sentence
    best = int(np.nanargmax(diff.patch.mlp))
    assert f"layer {best + 1} MLP alone restores {diff.patch.mlp[best]:.0%}" in sentence

    specs = charts(at)
    kl = next(s for t, s in specs.items() if t.startswith("Where the two models part ways"))["data"][0]["z"]
    np.testing.assert_allclose(np.array(plain(kl), dtype=float).reshape(diff.kl[1:].shape), diff.kl[1:], atol=1e-4)
    tracks = next(s for t, s in specs.items() if t.startswith("The two answers"))["data"]
    assert len(tracks) == 4
    paris_dashed = next(t for t in tracks if "Paris" in t["name"] and t["line"].get("dash") == "dash")
    np.testing.assert_allclose(np.array(plain(paris_dashed["y"]), dtype=float), paris_in_twin.probs, atol=1e-5)
    bars = next(s for t, s in specs.items() if t.startswith("Putting one part of A into B"))["data"][0]
    want = np.array([diff.patch.embed, *diff.patch.attn, *diff.patch.mlp, diff.patch.readout])
    np.testing.assert_allclose(np.array(plain(bars["x"]), dtype=float), 100 * want, atol=1e-3)
    weights = next(s for t, s in specs.items() if t.startswith("Weight change"))["data"]
    np.testing.assert_allclose(np.array(plain(weights[1]["y"]), dtype=float), 100 * diff.weights.mlp, atol=1e-3)


def test_a_link_with_a_second_model_opens_compare_mode_and_switching_off_leaves_it():
    at = open_app(compare_with=TWIN_ID)
    assert_usable(at)
    assert at.tabs[0].label == "Compare" and at.query_params["compare"] == TWIN_ID
    at.sidebar.toggle(key="compare_on").set_value(False).run()
    assert_usable(at)
    assert "compare" not in at.query_params and at.tabs[0].label == "Attention"
    assert not any(s.startswith("**A says") for s in sentences(at))


def test_the_demo_model_is_the_default_partner_of_any_other_model():
    at = open_app(model=TWIN_ID)
    at.sidebar.toggle(key="compare_on").set_value(True).run()
    assert_usable(at)
    assert at.query_params["compare"] == "demo" and at.tabs[0].label == "Compare"


def test_a_model_with_another_tokenizer_gets_one_message_and_the_page_goes_on(tmp_path):
    folder = build(FAMILY_BY_NAME["gpt2"], tmp_path / "other")
    at = open_app(compare_with=str(folder))
    assert_usable(at)
    (message,) = errors(at)
    assert "different vocabularies" in message and "share a tokenizer" in message
    assert at.tabs[0].label == "Attention"  # the single-model views are all there


def test_the_lens_view_shows_what_the_twin_holds_inside(pair):
    _, twin = pair
    at = open_app(model=TWIN_ID)
    assert_usable(at)
    assert any("This is its twin" in c.value for c in at.caption)  # the header says which model this is
    finding = next(f for f in suppressed(twin, backend.capture(twin, PROMPT)) if f.token == " Paris")
    (info,) = [unescaped(i.value) for i in at.info if "Inside, after layer" in i.value]
    assert info.startswith(f"Inside, after layer {finding.layer}, the model preferred '␣Paris' (rank "
                           f"{finding.rank_inside} there, ahead of '␣a' at rank {finding.said_rank_inside}); at the "
                           f"output it says '␣a' ({finding.said_prob:.0%}) and '␣Paris' keeps {finding.prob_out:.0%}.")
    # the part it names (the graph's error node of layer 4 at the last token) and what switching it off does
    assert info.endswith(" It is pushed down mostly by layer 4's MLP at '␣is', in a way its features cannot "
                         "express; switched off, the model says '␣Paris' again.")
    n = len(backend.capture(twin, PROMPT).tokens)
    off = backend.capture(twin, PROMPT, edits=(ErrorAblation(3, (n - 1,)),)).logits[-1]
    assert twin.tokenizer.decode([int(off.argmax())]) == " Paris"
    probs = torch.from_numpy(backend.capture(twin, PROMPT).logits[-1]).softmax(-1)
    assert finding.prob_out == pytest.approx(float(probs[finding.token_id]), abs=1e-6)


def test_the_demo_model_shows_no_finding_on_its_own_fact():
    at = open_app()
    assert_usable(at)
    assert not [i for i in at.info if "Inside, after layer" in i.value]


def test_public_mode_offers_the_twin_and_compare_mode(monkeypatch):
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    at = open_app(compare_with=TWIN_ID)
    assert_usable(at)
    assert at.selectbox(key="model_pick").options[:2] == [
        "Bundled demo model (offline)", "Bundled twin: the demo model taught to keep capitals secret (offline)"]
    assert at.tabs[0].label == "Compare"
    monkeypatch.setenv("XRAY_PUBLIC", "1")
    hostile = open_app(compare_with="[x](http://evil.example)")
    assert_usable(hostile)
    (warning,) = [w.value for w in hostile.warning]
    assert "[x](http://evil.example)" in unescaped(warning) and "](http" not in warning  # named, as text
    assert hostile.query_params["compare"] == "demo"  # only an offered model is loaded


def test_a_model_of_another_depth_is_compared_by_output_and_lens(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(backend.BUNDLED_MODEL)
    config.n_layer = 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "shallow")
    backend.load_model().tokenizer.save_pretrained(tmp_path / "shallow")
    at = open_app(compare_with=str(tmp_path / "shallow"))
    assert_usable(at)
    assert not errors(at) and at.tabs[0].label == "Compare"
    (note,) = [unescaped(i.value) for i in at.info if "built differently" in i.value]
    assert "model A: 4 layers" in note and "model B: 2 layers" in note and "same relative depth" in note
    titles = list(charts(at))
    assert any(t.startswith("Where the two models part ways") for t in titles)
    assert not any(t.startswith(("Weight change", "Putting one part")) for t in titles)


def test_a_hub_model_gets_a_box_for_its_partner_not_a_model_that_cannot_match(tmp_path):
    folder = build(FAMILY_BY_NAME["gpt2"], tmp_path / "base")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = str(folder)
    at.query_params["prompt"] = "Mia went to the park"
    at.run()
    at.sidebar.toggle(key="compare_on").set_value(True).run()
    assert_usable(at)
    assert not errors(at) and "compare" not in at.query_params and at.tabs[0].label == "Attention"
    assert any("nothing is compared" in i.value for i in at.sidebar.info)
    twin = build(FAMILY_BY_NAME["gpt2"], tmp_path / "tuned", seed=1)  # same tokenizer, other weights
    at.sidebar.text_input(key="compare_typed").set_value(str(twin)).run()
    assert_usable(at)
    assert at.query_params["compare"] == str(twin) and at.tabs[0].label == "Compare"


def test_the_compare_tab_goes_scan_layers_circuit_diff_and_a_switch_off_opens_the_twin(pair):
    demo, twin = pair
    at = open_app(compare_with=TWIN_ID)
    assert_usable(at)
    assert not errors(at)
    titles = [h.value for h in at.subheader]
    assert titles[:3] == ["What changed? (a scan without any prompt)",  # as a talk goes (#21)
                          "This prompt, layer by layer",
                          "Is the answer's circuit still there, and what pushes it down?"]
    found = scan(demo, twin)
    toward = ", ".join(f"'{label(t.token)}'" for t in found.consistent(True))
    text = sentences(at)
    assert f"**Without any prompt about it, a scan of 1,500 ordinary texts finds that B pushes toward {toward} " \
        in text[[i for i, s in enumerate(text) if s.startswith("**Without any prompt")][0]]
    diff = circuit_diff(demo, twin, PROMPT, transcoders=load_transcoders(demo))
    circuit = next(s for s in text if s.startswith("**B still computes"))
    assert f"still fire in B at {diff.path_kept:.0%} of their strength" in circuit
    assert f"it gives back {diff.suppressors[0].restored:.0%} of A's preference and B says '␣Paris' again" in circuit
    errors_chart = next(s for t, s in charts(at).items() if t.startswith("What A's features cannot express"))
    np.testing.assert_allclose(np.array(plain(errors_chart["data"][1]["x"]), dtype=float),
                               [100 * e.fvu_b for e in diff.errors], atol=1e-3)
    next(b for b in at.button if b.label.startswith("Switch off layer 4's MLP")).click().run()
    assert_usable(at)
    assert not errors(at)
    assert at.query_params["model"] == TWIN_ID and "compare" not in at.query_params
    assert json.loads(at.query_params["edits"]) == [["error_off", 3, [5], "bundled"]]
    banner = " ".join(sentences(at))
    assert "'␣Paris'" in banner and at.session_state["view_tab"] == "What if"


def test_the_single_model_tabs_say_which_model_and_switch_to_b(pair):
    _, twin = pair
    at = pages.open_app(PROMPT, "demo", compare=TWIN_ID, edits='[["head",3,1,"zero"]]')
    assert not errors(at)
    assert "This tab shows A (xray-demo). The choice above the tabs switches model." in captions_of(at)
    at.radio(key="compare_shown").set_value(1).run()
    assert not errors(at)
    assert "This tab shows B (xray-demo-secret). The choice above the tabs switches model." in captions_of(at)
    assert at.tabs[0].label == "Compare"  # still both models
    # the lens tab's "held inside" line is B's own: the twin says '␣a' and held '␣Paris' inside
    found = suppressed(twin, backend.capture(twin, PROMPT))
    assert found and found[0].token == " Paris"
    assert any(f"Inside, after layer {found[0].layer}, the model preferred '␣Paris'" in unescaped(i.value)
               for i in at.info)
    # the change in force runs on B: the banner's numbers are the twin's, measured here by weight surgery
    cap = backend.capture(twin, PROMPT)
    answer = int(cap.logits[-1].argmax())
    after = float(probs_without_heads(twin.model, cap.token_ids, 3, (1,))[answer])
    banner = next(unescaped(i.value) for i in at.info if i.value.startswith("**What if:**"))
    before = float(torch.from_numpy(cap.logits[-1]).softmax(-1)[answer])
    assert f"'␣a' from {before:.0%} to {after:.0%}" in banner, banner


def test_the_compare_report_draws_bs_views_when_the_tabs_showed_b(pair):
    from backend.run import Run
    from views.content import Text
    from views.page import report_sections

    _, twin = pair
    at = pages.open_app(PROMPT, "demo", compare=TWIN_ID)
    run = Run(None, "auto", "auto", PROMPT, at.number_input(key="max_tokens").value, compare=TWIN_ID,
              features=Run.default_features(None))
    assert "Model B" not in [s.title for s in report_sections(run, at.session_state["drawn"])]
    at.radio(key="compare_shown").set_value(1).run()
    sections = report_sections(run, at.session_state["drawn"])
    titles = [s.title for s in sections]
    assert titles[:3] == ["Prompt", "Compare", "Model B"] and "Logit lens" in titles
    found = suppressed(twin, backend.capture(twin, PROMPT))[0]  # the twin's own finding, in B's lens section
    lens = next(s for s in sections if s.title == "Logit lens")
    lines = [p.text for p in lens.parts if isinstance(p, Text)]
    assert any(line.startswith(f"Inside, after layer {found.layer}, the model preferred '␣Paris'") for line in lines)
    from views.report import report_html

    assert "The views below look inside B (xray-demo-secret)" in report_html(backend.load_model().info, sections)
