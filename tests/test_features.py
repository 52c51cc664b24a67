"""Features: dictionaries against a numpy reference, the three layouts written here and read back, typed errors,
feature edits against hooks written here, and activations from the run's own forward pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from backend import capture, hooks, load_model
from backend.dictionaries import DictionaryError, DictionaryMismatch, UnknownHook
from backend.features import ErrorAblation, FeatureAblation, FeatureSteering, load_sae, load_transcoders
from backend.hooks import hook_count
from backend.run import edits_from_json, edits_to_json
from backend.sites import Site
from tests.tiny import FAMILY_BY_NAME, build, module_at

PROMPT = "Mia went to the park with Max and one two three"
D, F = 32, 40  # the tiny gpt2's width, and the test dictionaries' features


def weights(seed: int, d_in: int = D, d_out: int = D, n: int = F) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.normal(size=shape) * scale).astype(np.float32)

    return {"W_enc": normal(d_in, n, scale=0.25), "b_enc": normal(n, scale=0.25), "W_dec": normal(n, d_out, scale=0.25),
            "b_dec": normal(d_out), "W_skip": normal(d_out, d_in, scale=0.125),
            "threshold": np.abs(normal(n, scale=0.25))}


def reference_acts(w: dict, x: np.ndarray, kind: str, k: int = 5, subtract: bool = False,
                   relu_first: bool = False) -> np.ndarray:
    """The encoder written out in numpy, float64."""
    x = x.astype(np.float64) - (w["b_dec"] if subtract else 0)
    pre = x @ w["W_enc"] + w["b_enc"]
    if kind == "relu":
        return np.maximum(pre, 0)
    if kind == "jumprelu":
        return pre * (pre > w["threshold"])
    base = np.maximum(pre, 0) if relu_first else pre
    out = np.zeros_like(base)
    top = np.argsort(-base, axis=-1)[:, :k]
    np.put_along_axis(out, top, np.take_along_axis(base, top, -1), -1)
    return out


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return load_model(build(FAMILY_BY_NAME["gpt2"], tmp_path_factory.mktemp("features-gpt2")), device="cpu")


def write_circuit_tracer(folder, layers: int, kind: str = "topk", k: int = 5, first_release: bool = False) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    all_weights = []
    for layer in range(layers):
        w = weights(100 + layer)
        all_weights.append(w)
        stored = {"W_enc": t(w["W_enc"].T), "W_dec": t(w["W_dec"].T if first_release else w["W_dec"]),
                  "b_enc": t(w["b_enc"]), "b_dec": t(w["b_dec"]), "W_skip": t(w["W_skip"])}
        if kind == "jumprelu":
            stored["activation_function.threshold"] = t(w["threshold"])
        save_file(stored, str(folder / f"layer_{layer}.safetensors"))
    config = {"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in",
              "feature_output_hook": "mlp.hook_out"}
    if kind != "jumprelu":
        config |= {"activation": kind, "k": k}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return all_weights


@pytest.mark.parametrize("kind", ["topk", "relu", "jumprelu"])
def test_circuit_tracer_transcoders_encode_and_decode_as_written_here(gpt2, tmp_path, kind):
    written = write_circuit_tracer(tmp_path / "set", gpt2.info.n_layers, kind, first_release=kind == "relu")
    tc = load_transcoders(gpt2, str(tmp_path / "set"))
    assert (tc.n_layers, tc.n_features, tc.d_model) == (3, F, D)
    x = np.random.default_rng(0).normal(size=(7, D)).astype(np.float32)
    for layer, w in enumerate(written):
        acts = tc.encode(layer, x)
        want = reference_acts(w, x, kind)
        np.testing.assert_allclose(acts, want, atol=1e-5)
        rec = tc.decode(layer, acts, x)
        np.testing.assert_allclose(rec, want @ w["W_dec"] + w["b_dec"] + x @ w["W_skip"].T, atol=1e-4)


def test_saelens_and_sparsify_layouts_read_back_with_the_same_numbers(gpt2, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, D)).astype(np.float32)
    for architecture, extra in (("standard", {}), ("jumprelu", {}), ("topk", {"k": 4})):
        w = weights(7)
        folder = tmp_path / f"saelens-{architecture}"
        folder.mkdir()
        stored = {name: t(w[name]) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        if architecture == "jumprelu":
            stored["threshold"] = t(w["threshold"])
        save_file(stored, str(folder / "sae_weights.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": F, "architecture": architecture,
                                                     "metadata": {"hook_name": "blocks.1.hook_resid_post"},
                                                     "apply_b_dec_to_input": True, **extra}))
        sae = load_sae(gpt2, str(folder))
        assert sae.site == Site("resid", 2) and sae.n_features == F
        kind = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk"}[architecture]
        want = reference_acts(w, x, kind, k=4, subtract=True, relu_first=True)
        np.testing.assert_allclose(sae.encode(x), want, atol=1e-5)
        np.testing.assert_allclose(sae.decode(want), want @ w["W_dec"] + w["b_dec"], atol=1e-4)
    # sparsify: one folder per hookpoint; a transcoder reads the MLP's input, its pre-activations pass a ReLU first
    root = tmp_path / "sparsify"
    written = []
    for layer in range(gpt2.info.n_layers):
        w = weights(30 + layer)
        written.append(w)
        hookpoint = root / f"layers.{layer}.mlp"
        hookpoint.mkdir(parents=True)
        save_file({"encoder.weight": t(w["W_enc"].T), "encoder.bias": t(w["b_enc"]), "W_dec": t(w["W_dec"]),
                   "b_dec": t(w["b_dec"]), "W_skip": t(w["W_skip"])}, str(hookpoint / "sae.safetensors"))
        (hookpoint / "cfg.json").write_text(json.dumps({"d_in": D, "k": 4, "activation": "topk", "transcode": True,
                                                        "skip_connection": True, "num_latents": F}))
    tc = load_transcoders(gpt2, str(root))
    for layer, w in enumerate(written):
        want = reference_acts(w, x, "topk", k=4, relu_first=True)
        np.testing.assert_allclose(tc.encode(layer, x), want, atol=1e-5)
        np.testing.assert_allclose(tc.decode(layer, want, x), want @ w["W_dec"] + w["b_dec"] + x @ w["W_skip"].T,
                                   atol=1e-4)


def test_a_set_that_does_not_fit_gets_a_typed_error_naming_the_numbers(gpt2, tmp_path):
    write_circuit_tracer(tmp_path / "two", 2)
    with pytest.raises(DictionaryMismatch, match="2 transcoders; this model has 3 layers"):
        load_transcoders(gpt2, str(tmp_path / "two"))
    wide = tmp_path / "wide"
    wide.mkdir()
    w = weights(3, d_in=48, d_out=48)
    save_file({name: t(w[name]) for name in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(wide / "sae_weights.safetensors"))
    (wide / "cfg.json").write_text(json.dumps({"d_in": 48, "d_sae": F, "hook_name": "blocks.0.hook_resid_pre"}))
    with pytest.raises(DictionaryMismatch, match="width 48 .*width 32"):
        load_sae(gpt2, str(wide))
    (wide / "cfg.json").write_text(json.dumps({"d_in": 48, "d_sae": F, "hook_name": "blocks.0.hook_nonsense"}))
    with pytest.raises(UnknownHook, match="hook_nonsense"):
        load_sae(gpt2, str(wide))
    (wide / "cfg.json").write_text(json.dumps({"d_in": 48, "d_sae": F, "hook_name": "blocks.9.hook_resid_post"}))
    with pytest.raises(UnknownHook, match="resid.10"):
        load_sae(gpt2, str(wide))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "cfg.json").write_text("{}")
    (pickled / "sae_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DictionaryError, match="could not be read"):
        load_sae(gpt2, str(pickled))
    with pytest.raises(DictionaryError, match="No transcoders ship"):
        load_transcoders(gpt2)
    with pytest.raises(DictionaryError, match="not a hub id|could not be fetched"):
        load_transcoders(gpt2, "./no/such/folder")


def hooked_logits(lm, ids: torch.Tensor, mlp_out_path: str, change) -> torch.Tensor:
    """The model's logits with ``change(output, mlp input)`` on one MLP, with hooks written here."""
    block = module_at(lm.model, mlp_out_path.rsplit(".", 1)[0].rsplit(".", 1)[0])  # transformer.h.L
    seen = {}

    def keep(module, args) -> None:
        seen["x"] = args[0].detach().clone()

    handles = [block.mlp.register_forward_pre_hook(keep),
               module_at(lm.model, mlp_out_path).register_forward_hook(lambda m, a, out: change(out, seen["x"]))]
    try:
        with torch.no_grad():
            return lm.model(ids).logits[0]
    finally:
        for handle in handles:
            handle.remove()


def test_feature_edits_equal_hooks_written_here(gpt2, tmp_path):
    written = write_circuit_tracer(tmp_path / "set", gpt2.info.n_layers, "relu")
    source = str(tmp_path / "set")
    ids = torch.tensor([gpt2.tokenizer(PROMPT)["input_ids"]])
    plain = capture(gpt2, PROMPT)
    w = written[1]

    def ablate(out, x, positions=None):
        pre = x.double().numpy() @ w["W_enc"] + w["b_enc"]
        act = np.maximum(pre, 0)[..., 7]  # (1, n)
        delta = torch.from_numpy(act[..., None] * w["W_dec"][7]).float()
        if positions is not None:
            mask = torch.zeros_like(delta)
            mask[:, list(positions)] = 1
            delta = delta * mask
        return out - delta

    for positions in (None, (2, 4)):
        edited = capture(gpt2, PROMPT, edits=[FeatureAblation(1, 7, positions, source)])
        want = hooked_logits(gpt2, ids, "transformer.h.1.mlp.c_proj", lambda o, x, p=positions: ablate(o, x, p))
        np.testing.assert_allclose(edited.logits, want.numpy(), atol=1e-4)
        assert float(np.abs(edited.logits - plain.logits).max()) > 1e-3  # the feature mattered
    steered = capture(gpt2, PROMPT, edits=[FeatureSteering(2, 5, 3.0, None, source)])
    want = hooked_logits(gpt2, ids, "transformer.h.2.mlp.c_proj",
                         lambda o, x: o + 3.0 * torch.from_numpy(written[2]["W_dec"][5]))
    np.testing.assert_allclose(steered.logits, want.numpy(), atol=1e-4)
    def rebuilt(out, x, positions):  # the error switched off: the MLP writes its transcoder's reconstruction
        xs = x.double().numpy()
        recon = torch.from_numpy(np.maximum(xs @ w["W_enc"] + w["b_enc"], 0) @ w["W_dec"] + w["b_dec"]
                                 + xs @ w["W_skip"].T).float()
        out = out.clone()
        out[:, list(positions)] = recon[:, list(positions)]
        return out

    no_error = capture(gpt2, PROMPT, edits=[ErrorAblation(1, (2, 4), source)])
    want = hooked_logits(gpt2, ids, "transformer.h.1.mlp.c_proj", lambda o, x: rebuilt(o, x, (2, 4)))
    np.testing.assert_allclose(no_error.logits, want.numpy(), atol=1e-4)
    assert float(np.abs(no_error.logits - plain.logits).max()) > 1e-3
    zero = capture(gpt2, PROMPT, edits=[FeatureSteering(2, 5, 0.0, None, source)])
    np.testing.assert_array_equal(zero.logits, plain.logits)
    assert hook_count(gpt2.model) == 0
    edits = (FeatureAblation(1, 7, (2, 4), source), FeatureSteering(2, 5, 3.0, None, source),
             ErrorAblation(1, (2, 4), source), ErrorAblation(0))
    assert edits_from_json(edits_to_json(edits)) == edits
    with pytest.raises(Exception, match="feature 40 is out of range"):
        capture(gpt2, PROMPT, edits=[FeatureAblation(1, F, None, source)])


def test_capture_gives_the_feature_activations_of_its_own_pass(gpt2, tmp_path):
    write_circuit_tracer(tmp_path / "set", gpt2.info.n_layers, "topk", k=5)
    tc = load_transcoders(gpt2, str(tmp_path / "set"))
    calls = []
    real = gpt2.model.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    gpt2.model.forward = counted
    try:
        cap = capture(gpt2, PROMPT, features=tc)
    finally:
        del gpt2.model.forward
    assert len(calls) == 1  # the features come from the same forward pass
    store = {}
    with hooks.exclusive(gpt2):
        hooks.forward(gpt2, torch.from_numpy(cap.token_ids)[None], [hooks.read(Site("mlp_in", i), store)
                                                                   for i in range(3)])
    for layer in range(3):
        dense = cap.features.layers[layer].dense()
        np.testing.assert_allclose(dense, tc.encode(layer, store[Site("mlp_in", layer)][0].numpy()), atol=1e-5)
        assert (np.count_nonzero(dense, axis=1) <= 5).all()
        row_ids, row_values = cap.features.layers[layer].row(3)
        np.testing.assert_allclose(dense[3, row_ids], row_values)
        np.testing.assert_allclose(cap.features.layers[layer].column(int(row_ids[0])), dense[:, row_ids[0]])
    assert cap.nbytes > capture(gpt2, PROMPT).nbytes


def test_the_bundled_transcoders_meet_their_targets_measured_again_here():
    """Measured afresh on held-out text (8,192 tokens here; the card's 49,152), not read back from quality.json."""
    from backend.features import BUNDLED_TRANSCODERS
    from training.transcoder_quality import TARGETS, measure

    q = measure(n_tokens=8192)
    assert max(q["fvu"]) <= TARGETS["fvu"] and q["ce_increase"] <= TARGETS["ce_increase"]
    card = (BUNDLED_TRANSCODERS / "README.md").read_text()
    saved = json.loads((BUNDLED_TRANSCODERS / "quality.json").read_text())
    for layer, fvu in enumerate(q["fvu"]):
        assert fvu == pytest.approx(saved["fvu"][layer], abs=0.02)  # the card's text is the same kind of text
        assert f"| {layer + 1} | {saved['fvu'][layer]:.3f} |" in card
    assert f"+{saved['ce_increase']:.3f}" in card and max(saved["dead"]) <= TARGETS["dead"]
    lm = load_model()
    tc = load_transcoders(lm)
    assert tc.atlas is not None and len(tc.atlas.labels[3]) == tc.n_features == 2048
    twin = load_model("xray-demo-secret")
    assert load_transcoders(twin).layers[0].W_enc.data_ptr() != 0  # the twin is read with the same set
    np.testing.assert_array_equal(load_transcoders(twin).layers[2].W_dec.numpy(), tc.layers[2].W_dec.numpy())
