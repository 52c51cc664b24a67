"""The Features tab: the demo model's bundled transcoders, a hub-layout model with an SAE named in a link, and the
switch-off button."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import save_file

import backend
from backend.features import FeatureAblation, load_transcoders
from tests.pages import assert_usable, charts, errors, html_views, open_app, plain, unescaped, widget
from tests.spans import token_spans
from tests.tiny import FAMILY_BY_NAME, build

PROMPT = "The capital of France is"


def test_the_demo_models_features_tab_shows_its_transcoders_and_atlas():
    at = open_app(PROMPT)
    assert_usable(at)
    assert not errors(at)
    lm = backend.load_model()
    tc = load_transcoders(lm)
    cap = backend.capture(lm, PROMPT, features=tc)
    layer, last = 3, cap.n_tokens - 1
    ids, values = cap.features.layers[layer].row(last)
    strongest = int(ids[np.argmax(values)])
    assert widget(at.number_input, f"feature_id_{layer}_{last}").value == strongest  # the token's strongest feature
    lead = next(unescaped(m.value) for m in at.markdown if "the strongest feature of layer 4's transcoder" in m.value)
    assert f"is {strongest}: {tc.atlas.labels[layer][strongest]}" in lead
    spans = token_spans(html_views(at, "signed-tokens")[0])  # the feature on every token of the prompt
    np.testing.assert_allclose([s.value for s in spans], cap.features.layers[layer].column(strongest), atol=1e-4)
    assert "Most active features of layer 4" in charts(at)
    assert len(html_views(at, "signed-tokens")) > 1  # its top contexts from the atlas follow


def test_switching_a_feature_off_goes_to_what_if():
    at = open_app(PROMPT)
    lm = backend.load_model()
    cap = backend.capture(lm, PROMPT, features=load_transcoders(lm))
    ids, values = cap.features.layers[3].row(cap.n_tokens - 1)
    strongest = int(ids[np.argmax(values)])
    next(b for b in at.button if b.key == "switch_off_feature").click().run()
    assert_usable(at)
    assert at.session_state["edits"] == (FeatureAblation(3, strongest),)
    assert json.loads(at.query_params["edits"]) == [["feature_off", 3, strongest, None, None]]
    banner = next(unescaped(i.value) for i in at.info if "What if:" in i.value)
    assert f"Switching off feature {strongest} of layer 4 " in banner


def write_sae(folder, d: int, n: int, hook: str) -> dict:
    rng = np.random.default_rng(5)
    w = {"W_enc": rng.normal(size=(d, n)) / 4, "b_enc": rng.normal(size=n) / 4, "W_dec": rng.normal(size=(n, d)) / 4,
         "b_dec": rng.normal(size=d) / 4}
    folder.mkdir(parents=True)
    save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"d_in": d, "d_sae": n, "architecture": "standard", "hook_name": hook,
                                                 "apply_b_dec_to_input": False}))
    return w


def test_a_hub_layout_model_reads_an_sae_named_in_a_link(tmp_path):
    model = build(FAMILY_BY_NAME["llama"], tmp_path / "llama")
    w = write_sae(tmp_path / "sae", 32, 24, "blocks.1.hook_resid_post")
    at = open_app("one two three one two", str(model), query={"features": str(tmp_path / "sae")})
    assert_usable(at)
    assert not errors(at)
    assert at.text_input(key="features_typed").value == str(tmp_path / "sae")
    lead = next(text for text in map(unescaped, (m.value for m in at.markdown)) if "of the SAE at resid.2" in text)
    cap = backend.capture(backend.load_model(str(model), device="cpu"), "one two three one two")
    pre = cap.resid[2].astype(np.float64) @ w["W_enc"] + w["b_enc"]
    acts = np.maximum(pre, 0)[-1]
    assert f"is {int(acts.argmax())} " in lead and f"(activation {acts.max():.2f})" in lead
    assert not [b for b in at.button if b.key == "switch_off_feature"]  # an SAE only reads


def test_a_dictionary_that_does_not_fit_gets_one_message_and_the_page_goes_on(tmp_path):
    model = build(FAMILY_BY_NAME["llama"], tmp_path / "llama")
    write_sae(tmp_path / "wide", 48, 8, "blocks.0.hook_resid_pre")
    at = open_app("one two three", str(model), query={"features": str(tmp_path / "wide")})
    assert_usable(at)
    (message,) = errors(at)
    assert "width 48" in message and "width 32" in message
    assert "Logit lens" in [t.label for t in at.tabs]  # everything else still drawn


def test_the_graph_tab_draws_the_demo_models_graph_and_switches_a_node_off():
    from backend.graph import attribute

    at = open_app(PROMPT)
    at.session_state["view_tab"] = "Graph"
    at.run()
    assert_usable(at)
    assert not errors(at)
    lm = backend.load_model()
    graph = attribute(lm, PROMPT, transcoders=load_transcoders(lm))
    figure = charts(at)["Attribution graph: what pushed the answer"]
    drawn = sum(len(plain(trace["x"])) for trace in figure["data"] if trace.get("mode") == "markers")
    assert drawn == len(graph.nodes)  # every kept node, at the page's default pruning (80%)
    lead = next(unescaped(m.value) for m in at.markdown if "comes most through" in unescaped(m.value))
    assert lead.startswith("**'␣Paris' (100%) comes most through feature ") and "which reads the word" in lead
    assert any(f"Replacement score {graph.replacement_score:.2f}" in unescaped(c.value) for c in at.caption)
    button = next(b for b in at.button if b.label.startswith("Switch off this feature"))
    button.click().run()
    assert_usable(at)
    (edit,) = at.session_state["edits"]
    assert isinstance(edit, FeatureAblation) and edit.positions is not None
    at.slider(key="graph_threshold").set_value(0.6).run()
    fewer = sum(len(plain(t["x"])) for t in charts(at)["Attribution graph: what pushed the answer"]["data"]
                if t.get("mode") == "markers")
    assert fewer < drawn
