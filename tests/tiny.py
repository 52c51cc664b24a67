"""Tiny random-weight models of many families, built from configs (nothing is downloaded).

Each entry gives the config and where the family keeps its decoder layers and its MLP
output projection. Those names are written out here on purpose: they are the tests'
independent knowledge, never the backend's discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from training.tokenizer import train_tokenizer

VOCAB = 512
SENTENCES = [
    "The capital of France is Paris.", "Mia went to the park with Max.",
    "One, two, three, four, five.", "The quick brown fox jumps over the lazy dog.",
    "Emoji 😀 and CJK 北京 and Arabic مرحبا pass through.", "</script><b>bold</b> & \"quotes\"",
]


@lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE small enough for every tiny model's vocabulary."""
    return train_tokenizer(SENTENCES * 20, vocab_size=400)


@dataclass(frozen=True)
class Family:
    """A family's tiny config and where its layers and MLP output projections live."""

    name: str
    config: dict
    layers_path: str  # attribute path of the decoder layers' ModuleList
    mlp_out: str  # path of the MLP output projection inside one layer
    final_norm: str  # path of the norm applied after the last layer
    after_norm: str | None = None  # a projection the family applies after that norm


COMMON = {"vocab_size": VOCAB, "tie_word_embeddings": False}
LLAMA_LIKE = {"num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 48,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}

FAMILIES = [
    Family("gpt2", {"model_type": "gpt2", "n_layer": 3, "n_embd": 32, "n_head": 4,
                    "n_positions": 128}, "transformer.h", "mlp.c_proj", "transformer.ln_f"),
    Family("gptj", {"model_type": "gptj", "n_layer": 3, "n_embd": 32, "n_head": 4,
                    "rotary_dim": 4, "n_positions": 128}, "transformer.h", "mlp.fc_out", "transformer.ln_f"),
    Family("gpt_neox", {"model_type": "gpt_neox", "num_hidden_layers": 3, "hidden_size": 32,
                        "num_attention_heads": 4, "intermediate_size": 64, "rotary_pct": 0.25,
                        "use_parallel_residual": True, "max_position_embeddings": 128},
           "gpt_neox.layers", "mlp.dense_4h_to_h", "gpt_neox.final_layer_norm"),
    Family("opt", {"model_type": "opt", "num_hidden_layers": 3, "hidden_size": 32,
                   "num_attention_heads": 4, "ffn_dim": 64, "word_embed_proj_dim": 16,
                   "max_position_embeddings": 128}, "model.decoder.layers", "fc2", "model.decoder.final_layer_norm",
           "model.decoder.project_out"),
    Family("llama", {"model_type": "llama", **LLAMA_LIKE}, "model.layers", "mlp.down_proj", "model.norm"),
    Family("mistral", {"model_type": "mistral", **LLAMA_LIKE, "sliding_window": 4},
           "model.layers", "mlp.down_proj", "model.norm"),
    Family("qwen2", {"model_type": "qwen2", **LLAMA_LIKE}, "model.layers", "mlp.down_proj", "model.norm"),
    Family("qwen3", {"model_type": "qwen3", **LLAMA_LIKE, "head_dim": 8}, "model.layers",
           "mlp.down_proj", "model.norm"),
    Family("gemma", {"model_type": "gemma", **LLAMA_LIKE, "head_dim": 8}, "model.layers",
           "mlp.down_proj", "model.norm"),
    Family("gemma2", {"model_type": "gemma2", **LLAMA_LIKE, "head_dim": 8, "sliding_window": 4,
                      "final_logit_softcapping": 3.0, "attn_logit_softcapping": 5.0,
                      "query_pre_attn_scalar": 8}, "model.layers", "mlp.down_proj", "model.norm"),
    Family("phi", {"model_type": "phi", "num_hidden_layers": 3, "hidden_size": 32,
                   "intermediate_size": 64, "num_attention_heads": 4,
                   "partial_rotary_factor": 0.5, "max_position_embeddings": 128},
           "model.layers", "mlp.fc2", "model.final_layernorm"),
    Family("phi3", {"model_type": "phi3", **LLAMA_LIKE, "pad_token_id": 0}, "model.layers",
           "mlp.down_proj", "model.norm"),
    Family("bloom", {"model_type": "bloom", "n_layer": 3, "hidden_size": 32, "n_head": 4},
           "transformer.h", "mlp.dense_4h_to_h", "transformer.ln_f"),
    Family("falcon", {"model_type": "falcon", "num_hidden_layers": 3, "hidden_size": 32,
                      "num_attention_heads": 4, "new_decoder_architecture": False,
                      "parallel_attn": True, "alibi": True, "bias": True},
           "transformer.h", "mlp.dense_4h_to_h", "transformer.ln_f"),
    Family("cohere", {"model_type": "cohere", **LLAMA_LIKE, "logit_scale": 0.5},
           "model.layers", "mlp.down_proj", "model.norm"),
    Family("granite", {"model_type": "granite", **LLAMA_LIKE, "embedding_multiplier": 3.0,
                       "residual_multiplier": 0.5, "logits_scaling": 4.0,
                       "attention_multiplier": 0.2}, "model.layers", "mlp.down_proj", "model.norm"),
    Family("gpt_bigcode", {"model_type": "gpt_bigcode", "n_layer": 3, "n_embd": 32, "n_head": 4,
                           "multi_query": True, "n_positions": 128}, "transformer.h",
           "mlp.c_proj", "transformer.ln_f"),
    Family("stablelm", {"model_type": "stablelm", **LLAMA_LIKE, "partial_rotary_factor": 0.5},
           "model.layers", "mlp.down_proj", "model.norm"),
    Family("olmo2", {"model_type": "olmo2", **LLAMA_LIKE}, "model.layers", "mlp.down_proj", "model.norm"),
]
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def module_at(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """``root.a.b.c`` for ``path`` "a.b.c"."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def probs_without_heads(model, token_ids, layer: int, heads) -> torch.Tensor:
    """A GPT-2-shaped model's next-token distribution with ``heads`` of ``layer`` switched off, by weight surgery.

    The reference for head edits: a head's output is its slice of rows of the attention's
    ``c_proj`` (Conv1D, ``(in, out)``), zeroed here and restored afterwards.
    """
    proj = model.transformer.h[layer].attn.c_proj
    d = model.config.n_embd // model.config.n_head
    kept = proj.weight.data.clone()
    for head in heads:
        proj.weight.data[head * d:(head + 1) * d] = 0
    try:
        with torch.no_grad():
            return model(torch.as_tensor(token_ids)[None]).logits[0, -1].softmax(-1)
    finally:
        proj.weight.data = kept


def build(family: Family, folder: Path, seed: int = 0) -> Path:
    """Save a random-weight model of ``family`` (weights spread wide) and the tokenizer."""
    config = AutoConfig.for_model(**{**COMMON, **family.config})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for param in model.parameters():  # wider than the default init: patterns not uniform
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
            else:
                param.normal_(1.0, 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer().save_pretrained(folder)
    return folder
