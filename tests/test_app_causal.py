"""The what-if and patching views, without a browser, checked against the backend on the demo model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import backend
from backend.edits import HeadAblation, NeuronAblation, PromptSteering
from backend.patching import patching_sweep
from tests import pages
from tests.pages import assert_usable, errors, guesses, plain, unescaped
from tests.tiny import probs_without_heads

INDUCTION = "apple river lamp cloud seven green door apple river lamp cloud seven green"


@pytest.fixture(scope="module")
def demo():
    return backend.load_model()


def open_app(prompt: str, edits: str | None = None) -> AppTest:
    return pages.open_app(prompt, "demo", edits=edits)


def softmax_top(logits: np.ndarray, k: int = 5) -> tuple[list[int], np.ndarray]:
    probs = torch.from_numpy(logits).softmax(-1)
    values, ids = probs.topk(k)
    return ids.tolist(), values.numpy()


def test_switching_off_a_head_compares_the_answers(demo):
    at = open_app(INDUCTION)
    (button,) = [b for b in at.button if b.label.startswith("Switch off head")]
    layer, head = (int(x) for x in button.label.rsplit(" ", 1)[1].split("."))
    button.click().run()
    assert_usable(at)
    assert json.loads(at.query_params["edits"]) == [["head", layer - 1, head - 1, "zero"]]  # the link holds it
    edited = backend.capture(demo, INDUCTION, edits=[HeadAblation(layer - 1, head - 1)])
    plain = backend.capture(demo, INDUCTION)
    ids, probs = softmax_top(edited.logits[-1])
    after = guesses(at, 2)
    np.testing.assert_allclose([value for _, value in after], probs, atol=1e-5)
    answer = int(plain.logits[-1].argmax())
    p_before = float(torch.from_numpy(plain.logits[-1]).softmax(-1)[answer])
    p_after = float(torch.from_numpy(edited.logits[-1]).softmax(-1)[answer])
    banner = unescaped(at.info[0].value)
    assert f"Switching off head {layer}.{head}" in banner
    assert f"from {p_before:.0%} to {p_after:.0%}" in banner or f"({p_before:.0%} → {p_after:.0%})" in banner
    assert any(unescaped(b.label).startswith(f"✕ head {layer}.{head} off") for b in at.button)


def test_a_link_with_edits_reproduces_them_and_undo_removes_them(demo):
    edits = [HeadAblation(3, 1), NeuronAblation(2, 5)]
    at = open_app(INDUCTION, json.dumps([["head", 3, 1, "zero"], ["neuron", 2, 5, 0.0]]))
    assert_usable(at)
    edited = backend.capture(demo, INDUCTION, edits=edits)
    _, probs = softmax_top(edited.logits[-1])
    np.testing.assert_allclose([value for _, value in guesses(at, 2)], probs, atol=1e-5)
    assert "Switching off head 4.2 and neuron 5 of layer 3" in unescaped(at.info[0].value)
    next(b for b in at.button if unescaped(b.label).startswith("✕ head 4.2")).click().run()
    assert json.loads(at.query_params["edits"]) == [["neuron", 2, 5, 0.0]]
    next(b for b in at.button if unescaped(b.label).startswith("✕ neuron 5")).click().run()
    assert "edits" not in at.query_params
    assert not at.info or "What if" not in at.info[0].value


@pytest.mark.parametrize("edits,message", [
    ("not json", "could not be read"),
    ('[["head", 9, 0, "zero"]]', "layer 9 is out of range"),
    ('[["neuron", 0, 99999, 0]]', "neuron 99999 is out of range"),
    ('[["explode", 1]]', "could not be read"),
])
def test_bad_link_edits_get_one_message(edits, message):
    at = open_app("The capital of France is", edits)
    assert_usable(at)
    shown = [unescaped(w.value) for w in at.warning] + errors(at)
    assert any(message in text for text in shown), shown


def test_markdown_in_a_link_stays_text():
    payload = "![x](http://127.0.0.1:9/x.png) [Click here](http://127.0.0.1:9/phish)"
    at = open_app("The dog says", json.dumps([["steer", 0, 2.0, payload, "The dog"]]))
    assert_usable(at)
    texts = [e.value for e in (*at.markdown, *at.info, *at.caption, *at.warning, *at.error)]
    texts += [b.label for b in at.button]  # Streamlit draws button labels as markdown too
    for value in texts:
        assert "](http" not in value.replace("\\]\\(", "")  # every [ ] ( ) is escaped: no link, no image
        assert "![" not in value


def test_steering_from_the_form(demo):
    at = open_app("The dog says")
    at.text_input[-2].set_value("The cat")  # toward
    at.text_input[-1].set_value("The dog")  # away from
    next(b for b in at.button if b.label == "Steer").click().run()
    assert_usable(at)
    (edit,) = [e for e in at.session_state["edits"]]
    assert edit == PromptSteering(0, "The cat", "The dog", 2.0)
    steered = backend.capture(demo, "The dog says", edits=[edit])
    ids, probs = softmax_top(steered.logits[-1])
    after = guesses(at, 2)
    assert after[0][0] == "␣" + demo.tokenizer.decode([ids[0]]).strip() == "␣meow"
    np.testing.assert_allclose([value for _, value in after], probs, atol=1e-5)
    hint = next(c.value for c in at.caption if "Try it on the prompt" in c.value)
    assert "'␣meow'" in hint and "' meow'" not in hint  # the hint writes the token as the page does


def test_an_edit_runs_the_model_once_more_and_nothing_else(monkeypatch):
    forwards = []
    module = sys.modules["backend.capture"]
    real = module.run_forward
    monkeypatch.setattr(module, "run_forward", lambda *a, **k: forwards.append(a[2] if len(a) > 2 else ()) or
                        real(*a, **k))
    at = open_app("a prompt nobody else runs: one two three one two")
    assert len(forwards) == 1
    next(b for b in at.button if b.label.startswith("Switch off neuron")).click().run()
    assert len(forwards) == 2 and forwards[1]  # one more forward pass, the edited one
    at.selectbox(key="neuron_layer").select(0).run()  # a selection: no model run
    assert len(forwards) == 2


def test_patching_tab_shows_the_sweep(demo):
    at = open_app("The capital of France is")
    at.session_state["view_tab"] = "Patching"
    at.run()
    assert_usable(at)
    clean, corrupt = "The capital of France is", "The capital of Italy is"
    answer = int(backend.capture(demo, clean).logits[-1].argmax())
    foil = int(backend.capture(demo, corrupt).logits[-1].argmax())
    sweep = patching_sweep(demo, clean, corrupt, answer, foil)
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    resid = next(spec for spec in charts.values()
                 if "Residual stream" in spec["layout"]["title"]["text"])["data"][0]["z"]
    np.testing.assert_allclose(np.array(plain(resid), dtype=float).reshape(sweep.resid.shape), sweep.resid, atol=1e-4)
    sentence = unescaped(next(m.value for m in at.markdown if "deciding information" in m.value))
    assert f"restores {sweep.resid[0, 4]:.0%}" in sentence and "'␣France'/'␣Italy'" in sentence


def test_patching_prompts_of_different_lengths_get_one_message(demo):
    at = open_app("The capital of France is")
    at.session_state["view_tab"] = "Patching"
    at.run()
    pages.widget(at.text_input, "patch_corrupt").set_value("The capital of the country Italy is").run()
    assert_usable(at)
    (message,) = errors(at)
    counts = [len(demo.tokenizer(p)["input_ids"]) for p in ("The capital of France is",
                                                            "The capital of the country Italy is")]
    assert f"the clean prompt has {counts[0]} tokens and the corrupt one has {counts[1]}" in message


def test_the_report_draws_what_the_page_drew_in_the_pages_order():
    """The head, neuron and position chosen on the page are the report's; What if and Patching come along."""
    from backend.run import Run
    from tests.pages import widget
    from views.page import report_sections
    from views.report import report_html

    at = open_app(INDUCTION, edits='[["head",3,1,"zero"]]')
    score = widget(at.selectbox, "attention_score").value
    widget(at.selectbox, f"attention_layer_{score}").select(2).run()
    widget(at.selectbox, f"attention_head_{score}").select(3).run()
    at.selectbox(key="neuron_layer").select(1).run()
    widget(at.number_input, "neuron_id_1").set_value(17).run()
    at.session_state["view_tab"] = "Patching"  # the Patching tab runs when it is opened
    at.run()
    drawn = at.session_state["drawn"]
    run = Run(None, "auto", "auto", INDUCTION, at.number_input(key="max_tokens").value,
              features=Run.default_features(None))
    assert drawn["run"] == run.id
    sections = report_sections(run, drawn)
    titles = [s.title for s in sections]
    assert titles == ["Prompt", "Attention", "Logit lens", "Neurons", "Features", "What if", "Patching"]
    text = report_html(backend.load_model().info, sections)
    assert "Head 2.3: who reads whom" in text  # the head picked on the page, not the clearest one
    assert "Neuron 17 on every token" in text and "Most active neurons of layer 2" in text
    assert "head 4.2 off" in text  # the change in force, with its sentence
    assert "Residual stream: one position at a time" in text and "cloud seven red" in text  # the tab's own pair
    # the lens grid is the page's: the same rows (no embeddings row in one and not the other) and cells
    from views.content import Chart
    lens = next(s for s in sections if s.title == "Logit lens")
    grid = next(p.figure for p in lens.parts if isinstance(p, Chart) and p.key == "lens_map")
    page_grid = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                     if json.loads(c.proto.spec)["layout"]["title"]["text"] == grid.layout.title.text)
    assert page_grid["layout"]["yaxis"]["ticktext"] == list(grid.layout.yaxis.ticktext)
    assert page_grid["layout"]["yaxis"]["ticktext"][0] == "layer 1"
    assert page_grid["data"][0]["text"] == [list(row) for row in grid.data[0].text]


def test_the_head_example_opens_on_what_if_and_says_why_that_head():
    from views.content.whatif import HEAD_NOTE

    at = open_app("Counting is fun")
    next(b for b in at.button if b.label == "What if: a head switched off").click().run()
    assert not errors(at)
    assert at.session_state["view_tab"] == "What if"
    assert HEAD_NOTE in [unescaped(i.value) for i in at.info]
    assert at.query_params["edits"] == '[["head",3,1,"zero"]]'


def test_each_change_gets_its_own_effect_and_the_header_the_edited_guess():
    lm = backend.load_model()
    cap = backend.capture(lm, INDUCTION)
    door = int(cap.logits[-1].argmax())
    alone = [float(probs_without_heads(lm.model, cap.token_ids, 3, (head,))[door]) for head in (1, 3)]
    both = probs_without_heads(lm.model, cap.token_ids, 3, (1, 3))
    at = open_app(INDUCTION, edits='[["head",3,1,"zero"],["head",3,3,"zero"]]')
    assert not errors(at)
    lines = [unescaped(m.value) for m in at.markdown if unescaped(m.value).startswith("- Alone, ")]
    assert len(lines) == 2
    for line, prob in zip(lines, alone, strict=True):
        assert f"→ {prob:.0%}" in line
    header = next(unescaped(m.value) for m in at.markdown if "With the 2 changes in force" in unescaped(m.value))
    top = int(both.argmax())
    if top == door:
        assert f"its guess is still '␣door', now at {float(both[door]):.0%}" in header
    else:
        assert f"it guesses '{lm.tokenizer.decode([top]).replace(' ', '␣')}' ({float(both[top]):.0%}) instead" in header


def test_the_header_says_the_guess_stays_when_it_only_weakens():
    at = open_app(INDUCTION, edits='[["head",3,1,"zero"]]')  # '␣door' falls from 100% to 4% and stays on top
    header = next(unescaped(m.value) for m in at.markdown if "in force" in unescaped(m.value))
    assert "With the change in force its guess is still '␣door', now at 4%" in header


def test_patching_starts_from_the_pages_prompt_with_one_word_swapped(demo):
    prompt = "I have 3 apples and"
    at = open_app(prompt)
    at.session_state["view_tab"] = "Patching"
    at.run()
    assert not errors(at)
    clean, corrupt = (pages.widget(at.text_input, name).value for name in ("patch_clean", "patch_corrupt"))
    assert (clean, corrupt) == (prompt, "I have 4 apples and")
    assert len(demo.tokenizer(clean)["input_ids"]) == len(demo.tokenizer(corrupt)["input_ids"])
    assert any("Suggested from the page's prompt: 3 → 4" in unescaped(c.value) for c in at.caption)
    answer = int(backend.capture(demo, clean).logits[-1].argmax())
    corrupt_top = backend.capture(demo, corrupt).logits[-1].argsort()[::-1]
    foil = int(next(t for t in corrupt_top if t != answer))
    sweep = patching_sweep(demo, clean, corrupt, answer, foil)
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    resid = next(spec for spec in charts.values()
                 if "Residual stream" in spec["layout"]["title"]["text"])["data"][0]["z"]
    np.testing.assert_allclose(np.array(plain(resid), dtype=float).reshape(sweep.resid.shape), sweep.resid, atol=1e-4)
    next(b for b in at.button if b.label == "Example pair: France / Italy").click().run()
    assert [pages.widget(at.text_input, n).value for n in ("patch_clean", "patch_corrupt")] == [
        "The capital of France is", "The capital of Italy is"]
    assert any("deciding information" in m.value for m in at.markdown)


def test_the_before_after_chart_follows_the_new_answer_too(demo):
    from backend.lens import token_trajectory

    edit = PromptSteering(0, "The cat", "The dog", 2.0)
    at = open_app("The dog says", edits='[["steer",0,2.0,"The cat","The dog"]]')
    assert not errors(at)
    plain_cap = backend.capture(demo, "The dog says")
    steered = backend.capture(demo, "The dog says", edits=[edit])
    meow = int(steered.logits[-1].argmax())
    assert meow != int(plain_cap.logits[-1].argmax())  # the answer changes: there is a new one to follow
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if "the new answer" in json.loads(c.proto.spec)["layout"]["title"]["text"])
    lines = {trace["name"]: np.array(plain(trace["y"]), dtype=float) for trace in chart["data"]}
    assert len(lines) == 4
    last = steered.n_tokens - 1
    np.testing.assert_allclose(lines["␣meow with the edits"],
                               token_trajectory(demo, steered, meow, [last]).probs[:, 0], atol=1e-4)
    np.testing.assert_allclose(lines["␣meow as the model is"],
                               token_trajectory(demo, plain_cap, meow, [last]).probs[:, 0], atol=1e-4)
