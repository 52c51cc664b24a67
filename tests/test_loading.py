"""Loading: local folders, the hub path through a local cache, and every refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import backend.loading as loading
from backend import ModelLoadError, UnsupportedModel, capture, load_model
from tests.tiny import FAMILY_BY_NAME, build, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    return build(FAMILY_BY_NAME["llama"], tmp_path_factory.mktemp("llama"))


def test_description(llama_folder):
    lm = load_model(llama_folder, device="cpu")
    info = lm.info
    assert (info.family, info.n_layers, info.n_heads, info.n_kv_heads) == ("llama", 3, 4, 2)
    assert (info.d_model, info.d_mlp, info.vocab_size) == (32, 48, 512)
    assert info.n_params == sum(p.numel() for p in lm.model.parameters())
    assert (info.device, info.dtype, info.context_length) == ("cpu", "float32", 128)
    assert info.name == llama_folder.name


def test_bfloat16_capture_is_close_to_float32(llama_folder):
    full = capture(load_model(llama_folder, device="cpu"), "one two three four")
    half = capture(load_model(llama_folder, device="cpu", dtype="bfloat16"), "one two three four")
    np.testing.assert_allclose(half.attention, full.attention, atol=0.05)
    assert half.logits.dtype == np.float32


def test_missing_bundled_model_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "BUNDLED_MODEL", tmp_path / "nothing")
    with pytest.raises(ModelLoadError, match="training.train"):
        load_model()


def test_pickle_only_folder_is_refused(tmp_path):
    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=512)
    config.save_pretrained(tmp_path)
    torch.save(AutoModelForCausalLM.from_config(config).state_dict(), tmp_path / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(tmp_path, device="cpu")


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path, device="cpu")


def test_missing_path():
    with pytest.raises(ModelLoadError, match="No model folder"):
        load_model("./no/such/folder", device="cpu")


def test_uncached_hub_id_offline_says_what_to_do():
    with pytest.raises(ModelLoadError, match="hf download") as info:
        load_model("someone/not-cached-model", device="cpu")
    assert "cache" in str(info.value)


def test_encoder_decoder_is_refused(tmp_path):
    AutoConfig.for_model("t5", d_model=16, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="encoder-decoder"):
        load_model(tmp_path, device="cpu")


def test_remote_code_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "my-secret-arch", "auto_map": {"AutoConfig": "code.MyConfig"}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"needs its own Python code \(trust_remote_code\), which Model X-ray "
                                             "never runs"):
        load_model(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my-secret-arch"}))  # unknown, no code
    with pytest.raises(ModelLoadError, match="unrecognised") as other:
        load_model(tmp_path, device="cpu")
    assert "trust_remote_code" not in str(other.value)  # the two failures say different things


def test_mixture_of_experts_names_what_is_missing(tmp_path):
    config = AutoConfig.for_model("mixtral", num_hidden_layers=2, hidden_size=32,
                                  intermediate_size=48, num_attention_heads=4,
                                  num_key_value_heads=2, num_local_experts=4, vocab_size=512)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModel, match="MLP output projection"):
        load_model(tmp_path, device="cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"device": "tpu"}, "Unknown device"), ({"dtype": "int8"}, "Unknown dtype"),
    pytest.param({"device": "cuda"}, "no CUDA", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a GPU is present")),
])
def test_bad_device_or_dtype(llama_folder, kwargs, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(llama_folder, **{"device": "cpu", **kwargs})


def test_hub_id_loads_from_local_cache(llama_folder, tmp_path):
    """The real hub code path, offline: an id resolved through a Hugging Face cache folder."""
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in llama_folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    refs = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    script = ("from backend import load_model, capture\n"
              "lm = load_model('tiny-org/tiny-llama', device='cpu')\n"
              "cap = capture(lm, 'one two three')\n"
              "print(lm.info.name, lm.info.family, cap.attention.shape)\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["tiny-org/tiny-llama", "llama"]
