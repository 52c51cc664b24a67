"""The page, without a browser: every view, every bad input, and no model rerun on selection."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import AutoConfig, AutoModelForCausalLM

import backend
from tests.pages import (
    APP,
    HOSTILE,
    assert_usable,
    errors,
    html_view,
    iframes,
    open_app,
    plotly_count,
    reader_spans,
    shown_tokens,
    widget,
)
from tests.spans import token_spans
from tests.tiny import FAMILY_BY_NAME, build, tiny_tokenizer
from views.display import label


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(build(FAMILY_BY_NAME["llama"], tmp_path_factory.mktemp("app-llama")))


def run_app(prompt: str | None, model: str, max_tokens: int | None = None) -> AppTest:
    return open_app(prompt, model, max_tokens=max_tokens)


def test_every_view_renders(model_dir):
    at = run_app("one two three one two three", model_dir)
    assert_usable(at)
    assert not errors(at)
    assert [t.label for t in at.tabs] == ["Attention", "Logit lens", "Neurons", "Features", "Graph", "What if",
                                         "Patching"]
    assert any("read without features" in i.value for i in at.info)  # a hub model without a dictionary
    assert plotly_count(at) == 7  # head grid, head map, lens map, trajectory, neuron map, token bars, effect
    assert not [w for w in at.text_input if w.key and w.key.startswith("patch_clean")]  # patching: only when opened
    frames = iframes(at)
    assert len(frames) == 1  # one neuron on every token
    assert all("CircuitsVis.ColoredTokens" in html for html in frames)
    reader = reader_spans(at)  # the last token reads, by default: every token is shown
    assert "".join(span.text for span in reader).replace("␣", " ") == shown_tokens(at)
    assert sum(span.value for span in reader) == pytest.approx(1.0, abs=1e-4)
    assert at.toggle(key="attention_all_heads").value is False  # the heavy all-heads frame waits to be asked
    for html in frames:
        assert '<script src="/app/static/circuitsvis-' in html
        assert "http" not in html  # nothing loads from outside the machine
    captions = " ".join(m.value for m in at.markdown)
    assert "top guess" in captions and "fires hardest" in captions


def test_prompt_and_model_come_from_the_url(model_dir):
    at = run_app("The capital of France is", model_dir)
    assert at.text_area(key="prompt").value == "The capital of France is"
    assert at.query_params["prompt"] == "The capital of France is"
    assert at.query_params["model"] == model_dir
    assert at.text_input(key="model_typed").value == model_dir


def test_example_button_sets_the_prompt(model_dir):
    at = run_app("one", model_dir)
    at.button[1].click().run()
    assert at.text_area(key="prompt").value.startswith("apple river lamp")
    assert "apple river lamp" in shown_tokens(at)


def test_model_description_in_sidebar(model_dir):
    at = run_app("one two", model_dir)
    text = " ".join(m.value for m in at.sidebar.markdown)
    assert "layers: **3**" in text and "4 \\(2 key/value\\)" in text and "MLP neurons per layer: **48**" in text


@pytest.mark.parametrize("prompt", ["", "   \n  "])
def test_empty_prompt_gets_one_message(model_dir, prompt):
    at = run_app(prompt, model_dir)
    assert_usable(at)
    assert errors(at) == ["The prompt is empty: type some text to look inside the model."]


def test_too_long_prompt_says_numbers(model_dir):
    at = run_app("one two three four five six seven eight nine ten", model_dir, max_tokens=8)
    assert_usable(at)
    (message,) = errors(at)
    assert "tokens, limit 8" in message


def test_prompt_past_context_length(model_dir):
    at = run_app("word " * 200, model_dir)
    assert at.number_input(key="max_tokens").max == 128  # the model's context: the box cannot go past it
    (message,) = errors(at)
    assert "limit 128" in message and "context" in message
    assert "raise the limit" not in message and "PromptTooLong" not in message


def test_missing_model_folder(model_dir):
    at = run_app("hello", "./no/such/model")
    assert_usable(at)
    (message,) = errors(at)
    assert "No model folder" in message


def test_unknown_hub_id_offline(model_dir):
    at = run_app("hello", "nobody/nothing-here")
    assert_usable(at)
    assert "hf download" in errors(at)[0]
    assert "`hf download nobody/nothing-here`" in at.error[0].value  # a code span, not escaped backticks


def test_pickle_only_model(tmp_path):
    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=512)
    config.save_pretrained(tmp_path)
    torch.save(AutoModelForCausalLM.from_config(config).state_dict(), tmp_path / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(tmp_path)
    at = run_app("hello", str(tmp_path))
    assert_usable(at)
    assert "pickle" in errors(at)[0]


def test_unsupported_family(tmp_path):
    config = AutoConfig.for_model("mixtral", num_hidden_layers=1, hidden_size=32, intermediate_size=48,
                                  num_attention_heads=4, num_key_value_heads=2, num_local_experts=2,
                                  vocab_size=512)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = run_app("hello", str(tmp_path))
    assert_usable(at)
    assert "MLP output projection" in errors(at)[0]


def test_out_of_memory_is_explained(model_dir, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(backend, "capture", no_memory)
    at = run_app("a prompt that was never cached before 41", model_dir)
    assert_usable(at)
    assert "Out of memory" in errors(at)[0]


def test_hostile_prompt_is_only_text(model_dir):
    at = run_app(HOSTILE, model_dir)
    assert_usable(at)
    assert not errors(at)
    for html in iframes(at):
        body = html.split("<script>CircuitsVis.render", 1)[1]
        assert "<img" not in body and "</script><img" not in body
        assert body.count("</script>") == 1  # only the template's own closing tag
    for markdown in at.markdown:
        assert "<img" not in markdown.value and "](http" not in markdown.value
    token_spans(html_view(at, "next-token-guesses"))  # fails on any tag but its own divs and spans
    reader = html_view(at, "token-reads")
    assert "<img" not in reader and "<script" not in reader and "</script" not in reader and "&lt;" in reader
    assert "".join(span.text for span in reader_spans(at)).replace("␣", " ") == shown_tokens(at)
    assert "</script><img src=x" in shown_tokens(at)  # shown as plain text


def test_selection_changes_never_rerun_the_model(model_dir, monkeypatch):
    calls = []
    real = backend.capture

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "capture", counted)
    at = run_app("a fresh prompt for counting runs one two one two", model_dir)
    assert len(calls) == 1
    lens_sentences = lambda: sum("top guess" in m.value and "%" in m.value for m in at.markdown)  # noqa: E731
    assert lens_sentences() == 1  # the last position's story is told once, at the top of the view
    widget(at.selectbox, "lens_position").select(3).run()
    assert lens_sentences() == 2  # another position gets its own sentence above its trajectory
    widget(at.selectbox, "attention_score").select("previous_token").run()
    at.selectbox(key="neuron_layer").select(0).run()
    widget(at.number_input, "neuron_id_0").set_value(7).run()
    assert not at.exception
    assert len(calls) == 1


def test_a_new_prompt_opens_the_views_on_its_own_defaults():
    """Selections made for one prompt do not follow the reader to the next; preferences do."""
    at = run_app("The capital of France is", "demo")
    widget(at.selectbox, "lens_position").select(2).run()
    at.selectbox(key="neuron_layer").select(1).run()
    at.toggle(key="attention_all_heads").set_value(True).run()
    assert widget(at.selectbox, "attention_score").value != "induction"
    repeated = "apple river lamp cloud seven green door apple river lamp cloud seven green"
    at.text_area(key="prompt").set_value(repeated).run()
    cap = backend.capture(backend.load_model(), repeated)
    last = cap.n_tokens - 1
    assert widget(at.selectbox, "lens_position").value == last  # the new prompt's final prediction
    assert widget(at.selectbox, "attention_query").value == last
    token_at, _ = np.unravel_index(int(np.abs(cap.neurons[1][1:]).argmax()), cap.neurons[1][1:].shape)
    assert widget(at.selectbox, "neuron_token").value == 1 + token_at  # where the layer's top neuron fires
    assert widget(at.selectbox, "attention_score").value == "induction"  # what this prompt shows
    _, neuron = np.unravel_index(int(np.abs(cap.neurons[1][1:]).argmax()), cap.neurons[1][1:].shape)
    assert widget(at.number_input, "neuron_id_1").value == neuron  # the new prompt's hardest-firing one
    assert at.selectbox(key="neuron_layer").value == 1 and at.toggle(key="attention_all_heads").value
    widget(at.selectbox, "lens_position").select(3).run()
    next(b for b in at.button if b.label.startswith("Look inside")).click().run()  # the same run again
    assert widget(at.selectbox, "lens_position").value == 3  # keeps its selections


def test_opens_on_the_bundled_model_with_an_example():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert_usable(at)
    assert not errors(at)
    assert at.text_area(key="prompt").value == "The capital of France is"
    assert at.selectbox(key="model_pick").value.startswith("Bundled demo model")
    assert "xray\\-demo" in at.sidebar.markdown[0].value
    guess = next(m.value for m in at.markdown if "guess for the next token" in m.value)
    assert "'␣Paris'" in guess  # ␣ marks the space that starts the word
    # the header's bars are the model's own top five, checked against transformers directly
    from backend import BUNDLED_MODEL
    model = AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL)
    tokenizer = backend.load_model().tokenizer
    ids = torch.from_numpy(backend.capture(backend.load_model(), "The capital of France is").token_ids)[None]
    with torch.no_grad():
        want = model(ids).logits[0, -1].softmax(-1).topk(5)
    bars = token_spans(html_view(at, "next-token-guesses"))
    np.testing.assert_allclose([bar.value for bar in bars], want.values.numpy(), atol=1e-5)
    assert [bar.text for bar in bars] == [label(tokenizer.decode([int(i)])) for i in want.indices]
    widths = [float(re.search(r"width:([0-9.]+)%", bar).group(1)) for bar in
              html_view(at, "next-token-guesses").split("<span data-value")[1:]]
    np.testing.assert_allclose(widths, want.values.numpy() * 85, atol=0.01)  # bars drawn to one scale
    lens_caption = next(m.value for m in at.markdown if "becomes the top guess" in m.value).replace("\\", "")
    assert lens_caption.startswith("**'␣Paris' becomes the top guess") and "climbs from rank" in lens_caption


def circuits_props(html: str, component: str) -> dict:
    return json.loads(html.split(f"CircuitsVis.{component}, ", 1)[1].rsplit(");</script>", 1)[0])


def test_reading_token_and_all_heads_show_the_models_attention(model_dir):
    prompt = "one two three one two three"
    at = run_app(prompt, model_dir)
    widget(at.selectbox, "attention_query").select(4).run()
    score = widget(at.selectbox, "attention_score").value
    layer = widget(at.selectbox, f"attention_layer_{score}").value
    head = widget(at.selectbox, f"attention_head_{score}").value
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    ids = torch.from_numpy(backend.capture(backend.load_model(model_dir, device="cpu"), prompt).token_ids)[None]
    with torch.no_grad():
        reference = model(ids, output_attentions=True).attentions[layer - 1][0].numpy()  # (heads, n, n)
    reader = reader_spans(at)
    assert len(reader) == 5  # the reading token and what precedes it
    np.testing.assert_allclose([span.value for span in reader], reference[head - 1, 4, :5], atol=1e-5)

    at.toggle(key="attention_all_heads").set_value(True).run()
    heads = [html for html in iframes(at) if "CircuitsVis.AttentionHeads" in html]
    assert len(heads) == 1
    props = circuits_props(heads[0], "AttentionHeads")
    np.testing.assert_allclose(props["attention"], reference, atol=1e-3)
    assert props["attentionHeadNames"] == [f"{layer}.{h + 1}" for h in range(reference.shape[0])]


def test_attention_opens_on_the_behaviour_the_prompt_shows():
    at = run_app("apple river lamp cloud seven green door apple river lamp cloud seven green", "demo")
    assert widget(at.selectbox, "attention_score").value == "induction"  # the demo model's induction head
    assert widget(at.selectbox, "attention_layer_induction").value == 4
    reader = reader_spans(at)
    assert reader[int(np.argmax([span.value for span in reader]))].text == " door"  # ' green' reads what
    # followed the first ' green'


def test_the_demo_model_says_what_it_knows(model_dir):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["prompt"] = "Quantum chromodynamics describes"  # it answers this with 94% confidence
    at.run()
    assert any("knows only the simple English" in c.value for c in at.caption)
    other = run_app("Quantum chromodynamics describes", model_dir)
    assert not any("knows only the simple English" in c.value for c in other.caption)


def test_other_with_an_empty_box_says_what_it_shows():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.selectbox(key="model_pick").select("Other: type a hub id or a local folder").run()
    assert any("until then the page shows the bundled demo model" in i.value for i in at.sidebar.info)
    assert_usable(at)


def test_large_type_for_a_projector_is_one_switch():
    from views.style import LARGE_TYPE, PHONE_CSS

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    bodies = [e.proto.body for e in at.get("html")]  # style-only html may sit outside the main block
    assert PHONE_CSS in bodies and LARGE_TYPE not in bodies
    at.sidebar.toggle(key="large_type").set_value(True).run()
    bodies = [e.proto.body for e in at.get("html")]
    assert LARGE_TYPE in bodies and "font-size: 22px" in LARGE_TYPE
