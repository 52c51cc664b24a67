"""Two models side by side (``backend.compare``) and what a model holds inside (``backend.suppressed``).

References are computed here independently: the lens of each model with ``lens_logits``,
KL with numpy in float64, weight changes from the state dicts, patches with hooks written
in the test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backend
from backend.compare import (
    PART_WAYS_NATS,
    TokenizerMismatch,
    _vocab_difference,
    all_components,
    compare,
    cross_patch_logits,
    part_ways,
)
from backend.lens import lens_logits, token_trajectory
from backend.loading import BUNDLED_TWIN, TWIN_ID
from backend.suppressed import RULE, Candidates, Rule, candidates, findings_from, suppressed
from tests.tiny import FAMILY_BY_NAME, build, module_at

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def pair():
    return backend.load_model(), backend.load_model(TWIN_ID)


@pytest.fixture(scope="module")
def diff(pair):
    return compare(*pair, PROMPT)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_the_twin_loads_by_name_and_shares_the_demo_tokenizer(pair):
    demo, twin = pair
    assert twin.info.name == "xray-demo-secret" and BUNDLED_TWIN.is_dir()
    assert demo.tokenizer.get_vocab() == twin.tokenizer.get_vocab()


def test_kl_matches_the_two_lenses_computed_separately(pair, diff):
    demo, twin = pair
    assert diff.kl.shape == (demo.info.n_layers + 1, diff.a.n_tokens)
    for layer in range(demo.info.n_layers + 1):
        log_a = _log_softmax(lens_logits(demo, diff.a, layer))
        log_b = _log_softmax(lens_logits(twin, diff.b, layer))
        want = (np.exp(log_a) * (log_a - log_b)).sum(-1)
        np.testing.assert_allclose(diff.kl[layer], want, atol=2e-4, rtol=1e-3)
    assert diff.kl[-1, -1] > PART_WAYS_NATS  # the twin says something else
    for position in range(diff.a.n_tokens):  # the first layer at or past half a nat, written out
        layers = [layer for layer in range(diff.kl.shape[0]) if diff.kl[layer, position] >= 0.5]
        assert diff.part_ways[position] == (layers[0] if layers else -1)
    assert diff.part_ways[-1] >= 1  # the pair agree at the embeddings
    assert part_ways(np.array([[0.1, 0.9], [0.7, 0.2], [0.4, 0.6]], np.float32)).tolist() == [1, 0]


def test_answers_and_their_tracks_in_both_models(pair, diff):
    demo, twin = pair
    paris = demo.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    refusal = demo.tokenizer(" a", add_special_tokens=False)["input_ids"][0]
    assert (diff.answer_a_id, diff.answer_b_id) == (paris, refusal)
    for answer, token_id in (("a", paris), ("b", refusal)):
        for model, lm, cap in (("a", demo, diff.a), ("b", twin, diff.b)):
            track = diff.track(answer, model)
            want = token_trajectory(lm, cap, token_id, [-1])
            np.testing.assert_allclose(track.probs, want.probs[:, 0], atol=1e-6)
            np.testing.assert_array_equal(track.ranks, want.ranks[:, 0])
    probs_b = torch.from_numpy(diff.b.logits[-1]).softmax(-1).numpy()
    assert [i for i, _, _ in diff.guesses_b] == np.argsort(-probs_b)[:5].tolist()
    assert diff.guesses_b[0][2] == pytest.approx(float(probs_b.max()), abs=1e-6)


def test_weight_change_against_a_direct_computation(pair, diff):
    demo, twin = pair
    sa, sb = demo.model.state_dict(), twin.model.state_dict()
    for i in range(demo.info.n_layers):
        for part, got in (("attn", diff.weights.attn[i]), ("mlp", diff.weights.mlp[i])):
            names = [k for k in sa if k.startswith(f"transformer.h.{i}.{part}.")]
            assert names
            num = sum(float(((sb[k] - sa[k]).double() ** 2).sum()) for k in names)
            den = sum(float((sa[k].double() ** 2).sum()) for k in names)
            assert got == pytest.approx(np.sqrt(num / den), rel=1e-4)
    wte = "transformer.wte.weight"
    assert diff.weights.embed == pytest.approx(float((sb[wte] - sa[wte]).norm() / sa[wte].norm()), rel=1e-4)


def _mlp_patch_share(demo, twin, layer: int, answer: int, foil: int) -> float:
    """Put the demo's MLP output of ``layer`` into the twin, with hooks written here."""
    ids = torch.tensor([demo.tokenizer(PROMPT)["input_ids"]])
    saved = {}
    proj_a = module_at(demo.model, f"transformer.h.{layer}.mlp.c_proj")
    proj_b = module_at(twin.model, f"transformer.h.{layer}.mlp.c_proj")
    handle = proj_a.register_forward_hook(lambda m, i, o: saved.__setitem__("out", o.detach().clone()) and None)
    try:
        with torch.no_grad():
            logits_a = demo.model(ids).logits[0, -1]
    finally:
        handle.remove()
    with torch.no_grad():
        logits_b = twin.model(ids).logits[0, -1]
    handle = proj_b.register_forward_hook(lambda m, i, o: saved["out"])
    try:
        with torch.no_grad():
            patched = twin.model(ids).logits[0, -1]
    finally:
        handle.remove()
    margin = lambda logits: float(logits[answer] - logits[foil])  # noqa: E731
    return (margin(patched) - margin(logits_b)) / (margin(logits_a) - margin(logits_b))


def test_cross_patching_one_mlp_matches_hooks_written_here(pair, diff):
    demo, twin = pair
    p = diff.patch
    assert p is not None and p.mlp.shape == (4,) and p.attn.shape == (4,)
    for layer in (0, 3):
        want = _mlp_patch_share(demo, twin, layer, diff.answer_a_id, diff.answer_b_id)
        assert p.mlp[layer] == pytest.approx(want, abs=2e-4)
    assert p.mlp[3] > 0.3  # the twin's change that matters sits mostly in its last MLP


def test_patching_every_component_gives_the_first_models_logits(pair, diff):
    from backend.hooks import hook_count

    demo, twin = pair
    assert hook_count(demo.model) == hook_count(twin.model) == 0  # compare left no hook behind
    logits = cross_patch_logits(demo, twin, PROMPT, all_components(twin))
    np.testing.assert_allclose(logits, diff.a.logits[-1], atol=1e-4)
    without = cross_patch_logits(demo, twin, PROMPT, ())
    np.testing.assert_allclose(without, diff.b.logits[-1], atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "phi"])
def test_patching_every_component_is_exact_across_families(tmp_path, family):
    fam = FAMILY_BY_NAME[family]
    lm_a = backend.load_model(build(fam, tmp_path / "a", seed=0), device="cpu")
    lm_b = backend.load_model(build(fam, tmp_path / "b", seed=1), device="cpu")
    prompt = "Mia went to the park with Max."
    d = compare(lm_a, lm_b, prompt)
    logits = cross_patch_logits(lm_a, lm_b, prompt, all_components(lm_b))
    np.testing.assert_allclose(logits, d.a.logits[-1], atol=1e-3, rtol=1e-4)
    assert d.head_change.shape == (lm_a.info.n_layers, lm_a.info.n_heads)
    assert ((d.head_change >= 0) & (d.head_change <= 1 + 1e-6)).all()
    tv = 0.5 * np.abs(d.a.attention - d.b.attention).sum(-1).mean(-1)
    np.testing.assert_allclose(d.head_change, tv, atol=1e-6)
    top = d.neurons[0]
    delta = np.abs(d.b.neurons - d.a.neurons)
    assert abs(top.b - top.a) == pytest.approx(float(delta.max()), rel=1e-5)


def test_different_tokenizers_are_refused_with_what_differs(tmp_path, pair):
    demo, _ = pair
    other = backend.load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path / "other"), device="cpu")
    with pytest.raises(TokenizerMismatch, match="1,981") as error:
        compare(demo, other, PROMPT)
    assert "share a tokenizer" in str(error.value)

    class Fake:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return dict(self.vocab)

    assert _vocab_difference(Fake({"a": 0, "b": 1}), Fake({"a": 0, "b": 1})) == ""
    swapped = _vocab_difference(Fake({"a": 0, "b": 1}), Fake({"a": 1, "b": 0}))
    assert "'a' is number 0 in model A's tokenizer and number 1 in model B's" in swapped
    assert "missing" in _vocab_difference(Fake({"a": 0, "b": 1}), Fake({"a": 0, "c": 1}))


def test_models_with_different_depths_compare_by_output_and_lens(tmp_path, pair):
    demo, _ = pair
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(backend.BUNDLED_MODEL)
    config.n_layer = 2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "shallow")
    demo.tokenizer.save_pretrained(tmp_path / "shallow")
    shallow = backend.load_model(tmp_path / "shallow", device="cpu")
    d = compare(demo, shallow, PROMPT)
    assert d.kl.shape == (5, d.a.n_tokens)
    assert d.layer_map.tolist() == [0, 0, 1, 2, 2]
    assert d.head_change is None and d.weights is None and d.patch is None and d.neurons == ()
    assert "4 layers" in d.not_applicable and "2 layers" in d.not_applicable
    log_a = _log_softmax(diff_logits := lens_logits(demo, d.a, 3))  # noqa: F841
    log_b = _log_softmax(lens_logits(shallow, d.b, 2))
    np.testing.assert_allclose(d.kl[3], (np.exp(log_a) * (log_a - log_b)).sum(-1), atol=2e-4, rtol=1e-3)


def test_a_model_compared_with_itself_agrees_everywhere(pair):
    demo, _ = pair
    d = compare(demo, demo, PROMPT)
    assert np.abs(d.kl).max() < 1e-5 and (d.part_ways == -1).all()
    assert d.same_answer and d.patch is None
    assert np.allclose(d.weights.attn, 0) and np.allclose(d.weights.mlp, 0)


# --- suppressed ------------------------------------------------------------------------------

def test_the_twin_holds_the_capital_inside(pair):
    _, twin = pair
    cap = backend.capture(twin, PROMPT)
    found = [f for f in suppressed(twin, cap) if f.position == cap.n_tokens - 1]
    assert [f.token for f in found] == [" Paris"] and found[0].said == " a"
    f = found[0]
    paris = token_trajectory(twin, cap, f.token_id, [-1])
    said = token_trajectory(twin, cap, f.said_id, [-1])
    assert 1 <= f.layer < cap.n_layers
    assert f.rank_inside == paris.ranks[f.layer, 0] < said.ranks[f.layer, 0] == f.said_rank_inside
    assert f.prob_inside == pytest.approx(float(paris.probs[f.layer, 0]), abs=1e-6)
    assert f.prob_out == pytest.approx(float(paris.probs[-1, 0]), abs=1e-6) and f.prob_out >= RULE.out_prob
    assert f.said_prob == pytest.approx(float(said.probs[-1, 0]), abs=1e-6) and f.said_prob >= RULE.said_prob
    assert f.rank_out == paris.ranks[-1, 0]
    # the layer reported is where it ranked best among the layers that qualify
    assert f.rank_inside == min(int(paris.ranks[layer, 0]) for layer in range(1, cap.n_layers)
                                if paris.ranks[layer, 0] < said.ranks[layer, 0])


def test_the_demo_model_says_what_it_holds(pair):
    demo, _ = pair
    cap = backend.capture(demo, PROMPT)
    assert [f for f in suppressed(demo, cap) if f.position == cap.n_tokens - 1] == []


def _cands(said_out: float, t_out: float, rank_t: int, rank_y: int) -> Candidates:
    """One position, 4 layers (0..3), two candidates: the said token y and another t."""
    lp = np.full((4, 1, 2), np.log(0.01), np.float32)
    lp[3, 0] = np.log([said_out, t_out])
    ranks = np.ones((4, 1, 2), np.int64)
    ranks[:, 0] = [[1, 2], [rank_y, rank_t], [rank_y, rank_t], [1, 2]]
    return Candidates(positions=np.array([0]), ids=np.array([[7, 9]]), logprobs=lp, ranks=ranks)


def test_each_condition_of_the_rule_is_needed():
    rule = Rule(said_prob=0.5, out_prob=0.15, in_rank=50, said_rank=5)
    assert findings_from(_cands(0.7, 0.25, rank_t=3, rank_y=20), rule) == [(0, 1, 2)]
    assert findings_from(_cands(0.45, 0.25, rank_t=3, rank_y=20), rule) == []  # said too weakly
    assert findings_from(_cands(0.7, 0.10, rank_t=3, rank_y=20), rule) == []  # gone at the output
    assert findings_from(_cands(0.7, 0.25, rank_t=60, rank_y=80), rule) == []  # never high inside
    assert findings_from(_cands(0.7, 0.25, rank_t=3, rank_y=4), rule) == []  # the said token was already there
    assert findings_from(_cands(0.7, 0.25, rank_t=30, rank_y=20), rule) == []  # never ahead of it
    assert rule.out_rank == 4


def test_only_positions_that_could_hold_a_finding_are_read_and_nothing_is_missed(pair):
    from training.secret_quality import ordinary_prompts

    demo, twin = pair
    for lm in (demo, twin):
        for prompt in [PROMPT, "Q: What is the capital of Peru? A:"] + ordinary_prompts(12):
            cap = backend.capture(lm, prompt)
            every = candidates(lm, cap, RULE.out_rank)
            want = [(row, int(every.ids[row, col]), layer) for row, col, layer in findings_from(every)]
            got = [(f.position, f.token_id, f.layer) for f in suppressed(lm, cap)]
            assert got == want


def test_candidates_follow_the_outputs_top_guesses_through_the_lens(pair):
    _, twin = pair
    cap = backend.capture(twin, "The dog says woof. The capital of Italy is")
    cands = candidates(twin, cap, 3)
    for layer in (1, cap.n_layers):
        logits = lens_logits(twin, cap, layer) if layer < cap.n_layers else cap.logits
        lp = _log_softmax(logits)
        picked = np.take_along_axis(lp, cands.ids, -1)
        np.testing.assert_allclose(cands.logprobs[layer], picked, atol=1e-4)
        chosen = np.take_along_axis(logits, cands.ids, -1)
        ranks = (logits[:, None, :] > chosen[:, :, None]).sum(-1) + 1
        np.testing.assert_array_equal(cands.ranks[layer], ranks)


def test_the_command_line_writes_the_comparison_as_json(tmp_path, pair, diff):
    import json

    import model_xray

    out = tmp_path / "compare.json"
    assert model_xray.main(["compare", PROMPT, "--out", str(out), "--device", "cpu"]) == 0
    numbers = json.loads(out.read_text())
    assert (numbers["model_a"], numbers["model_b"]) == ("xray-demo", "xray-demo-secret")
    np.testing.assert_allclose(np.array(numbers["kl_nats"]), diff.kl, atol=1e-6)
    np.testing.assert_allclose(numbers["cross_patch"]["mlp"], diff.patch.mlp, atol=1e-6)
    assert numbers["part_ways_layer"][-1] == diff.part_ways[-1]
    (finding,) = [f for f in numbers["held_inside_b"] if f["position"] == diff.b.n_tokens - 1]
    assert finding["token"] == " Paris" and finding["said"] == " a"
    other = tmp_path / "other"
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(backend.BUNDLED_MODEL)
    config.vocab_size = 2000
    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    pair[0].tokenizer.save_pretrained(other)
    assert model_xray.main(["compare", PROMPT, "--second", str(other), "--out", str(out)]) == 2  # one message


def test_the_report_carries_the_comparison_and_what_is_held_inside(tmp_path):
    import html

    import model_xray

    plain, both, twin = tmp_path / "plain.html", tmp_path / "both.html", tmp_path / "twin.html"
    assert model_xray.main(["report", PROMPT, "--out", str(plain), "--device", "cpu"]) == 0
    assert model_xray.main(["report", PROMPT, "--compare", TWIN_ID, "--out", str(both), "--device", "cpu"]) == 0
    assert model_xray.main(["report", PROMPT, "--model", TWIN_ID, "--out", str(twin), "--device", "cpu"]) == 0
    plain_text, both_text, twin_text = (html.unescape(p.read_text()) for p in (plain, both, twin))
    # the Compare tab's five charts: tracks, KL, weight change, cross patching, head change
    assert both_text.count("plotly-graph-div") == plain_text.count("plotly-graph-div") + 5
    assert "B suppresses the answer, it has not erased it" in both_text and "<h2>Compare</h2>" in both_text
    assert "<h2>Compare</h2>" not in plain_text and "Inside, after layer" not in plain_text
    assert "Inside, after layer 3, the model preferred '␣Paris'" in twin_text
