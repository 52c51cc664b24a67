"""Sparse dictionaries (SAEs and transcoders) as one type, and the three file layouts they come in.

A ``Dictionary`` reads a vector at its input site and writes a reconstruction at its output
site (the same site for an SAE; an MLP's input and output for a transcoder):

    pre  = (norm_in(x) - subtract) @ W_enc + b_enc          (d_in,) -> (n_features,)
    acts = activation(pre)                                    relu, topk (k largest) or jumprelu
    out  = norm_out(acts @ W_dec + b_dec) + W_skip @ x         (n_features,) -> (d_out,)

Layouts read here, safetensors only (a checkpoint is data, not a program):

- **SAELens**: ``cfg.json`` (d_in, d_sae, architecture standard/topk/jumprelu, hook_name,
  apply_b_dec_to_input, normalize_activations, k) and ``sae_weights.safetensors`` (W_enc
  [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec, threshold);
- **circuit-tracer** per-layer transcoders: ``config.yaml`` (model_kind transcoder_set,
  feature_input_hook, feature_output_hook, activation relu/topk with k, or a threshold per
  layer for jumprelu) and ``layer_{i}.safetensors`` (W_enc [d_sae, d_model], W_dec [d_sae,
  d_model], b_enc, b_dec, W_skip [d_model, d_model] applied as W_skip @ x,
  activation_function.threshold);
- **EleutherAI sparsify**: one folder per hookpoint (``layers.3.mlp``) holding ``cfg.json``
  (k, activation topk, transcode, skip_connection, d_in) and ``sae.safetensors``
  (encoder.weight [n, d_in], encoder.bias, W_dec [n, d_in], b_dec, W_skip); an SAE
  subtracts b_dec before encoding, and its pre-activations pass a ReLU before the top k.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from backend.errors import XrayError
from backend.sites import Site, from_hook_name

ACTIVATIONS = ("relu", "topk", "jumprelu")


class DictionaryError(XrayError):
    """A dictionary that cannot be read, or that does not fit the model; the message says which and why."""


class DictionaryMismatch(DictionaryError):
    """A dictionary whose width (or number of layers) is not the model's; names both numbers."""


class UnknownHook(DictionaryError):
    """A dictionary whose hook name names no site this model has."""


@dataclass(frozen=True, eq=False)
class Dictionary:
    """One sparse dictionary, float32 on the CPU (see the module's text for the formula)."""

    input_site: Site
    output_site: Site
    W_enc: torch.Tensor  # (d_in, n_features)
    b_enc: torch.Tensor  # (n_features,)
    W_dec: torch.Tensor  # (n_features, d_out)
    b_dec: torch.Tensor  # (d_out,)
    activation: str = "relu"  # one of ACTIVATIONS
    k: int | None = None  # for topk
    relu_first: bool = False  # topk over ReLU'd pre-activations (SAELens, sparsify) or over raw ones (circuit-tracer)
    threshold: torch.Tensor | None = None  # (n_features,) for jumprelu
    W_skip: torch.Tensor | None = None  # (d_out, d_in): a linear skip path, ``W_skip @ x``
    subtract: torch.Tensor | None = None  # (d_in,) taken from the input before encoding
    input_norm: str = "none"  # SAELens's run-time norms: none, constant_norm_rescale, layer_norm

    def __post_init__(self) -> None:
        d_in, n = self.W_enc.shape
        if self.b_enc.shape != (n,) or self.W_dec.shape[0] != n or self.b_dec.shape != self.W_dec.shape[1:]:
            raise DictionaryError(f"The dictionary's weights do not fit together: W_enc {tuple(self.W_enc.shape)}, "
                                  f"b_enc {tuple(self.b_enc.shape)}, W_dec {tuple(self.W_dec.shape)}, "
                                  f"b_dec {tuple(self.b_dec.shape)}.")
        if self.activation not in ACTIVATIONS:
            raise DictionaryError(f"Unknown activation {self.activation!r}; Model X-ray reads "
                                  f"{', '.join(ACTIVATIONS)}.")
        if self.activation == "topk" and not self.k:
            raise DictionaryError("A top-k dictionary needs its k (the number of features active per token).")
        if self.activation == "jumprelu" and self.threshold is None:
            raise DictionaryError("A JumpReLU dictionary needs its thresholds.")

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.W_enc.shape[1])

    @property
    def d_in(self) -> int:
        """Width of what it reads."""
        return int(self.W_enc.shape[0])

    @property
    def d_out(self) -> int:
        """Width of what it writes."""
        return int(self.W_dec.shape[1])

    @property
    def nbytes(self) -> int:
        """Memory held by the weights."""
        return sum(t.numel() * t.element_size() for t in (self.W_enc, self.b_enc, self.W_dec, self.b_dec,
                                                          self.threshold, self.W_skip, self.subtract) if t is not None)

    def _normed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        if self.input_norm == "constant_norm_rescale":
            coeff = self.d_in ** 0.5 / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return x * coeff, (1 / coeff, torch.zeros_like(coeff))
        if self.input_norm == "layer_norm":
            mu = x.mean(-1, keepdim=True)
            std = (x - mu).std(-1, keepdim=True)
            return (x - mu) / (std + 1e-5), (std, mu)
        return x, None

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations (..., n_features) of inputs (..., d_in)."""
        normed, _ = self._normed(x.to(self.W_enc.dtype))
        if self.subtract is not None:
            normed = normed - self.subtract
        return normed @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The activation function on pre-activations (..., n_features)."""
        if self.activation == "relu":
            return pre.relu()
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        base = pre.relu() if self.relu_first else pre
        top = base.topk(min(self.k, base.shape[-1]), dim=-1)
        return torch.zeros_like(base).scatter_(-1, top.indices, top.values)

    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (..., n_features) of inputs (..., d_in)."""
        return self.activate(self.pre(x))

    def decode_tensor(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction (..., d_out) of activations, the skip path of inputs ``x`` included when there is one."""
        out = acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.input_norm != "none":
            if x is None:
                raise DictionaryError("This dictionary normalises its input; decoding needs the input too.")
            _, (scale, shift) = self._normed(x.to(self.W_enc.dtype))
            out = out * scale + shift
        if self.W_skip is not None:
            if x is None:
                raise DictionaryError("This dictionary has a skip path; decoding needs its input too.")
            out = out + x.to(self.W_skip.dtype) @ self.W_skip.T
        return out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``encode_tensor`` on numpy rows: (n, d_in) -> (n, n_features) float32."""
        with torch.no_grad():
            return self.encode_tensor(torch.from_numpy(np.asarray(x, np.float32))).numpy()

    def decode(self, acts: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        """``decode_tensor`` on numpy rows: (n, n_features) [and inputs (n, d_in)] -> (n, d_out) float32."""
        with torch.no_grad():
            inputs = None if x is None else torch.from_numpy(np.asarray(x, np.float32))
            return self.decode_tensor(torch.from_numpy(np.asarray(acts, np.float32)), inputs).numpy()


# --- reading files -------------------------------------------------------------------------------

def _tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix != ".safetensors":
        raise DictionaryError(f"{path.name} is not a safetensors file: Model X-ray reads dictionaries from "
                              "safetensors only, because other formats can run code when loaded.")
    if not path.is_file():
        raise DictionaryError(f"{path} is missing.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key).float() for key in f.keys()}
    except Exception as error:  # noqa: BLE001 - a damaged file: say which
        raise DictionaryError(f"{path.name} could not be read as safetensors ({error}).") from error


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DictionaryError(f"{path.name} could not be read ({error}).") from error


def _site(name: str, what: str) -> Site:
    try:
        return from_hook_name(name)
    except ValueError as error:
        raise UnknownHook(f"The dictionary's {what} hook {name!r} names no place Model X-ray can hook "
                          "(it reads blocks.L.hook_resid_pre/post, hook_mlp_out, ln2.hook_normalized, mlp.hook_in, "
                          "mlp.hook_out and module paths such as layers.L.mlp).") from error


def _need(weights: dict[str, torch.Tensor], names: tuple[str, ...], where: str) -> None:
    missing = [name for name in names if name not in weights]
    if missing:
        raise DictionaryError(f"{where} lacks {', '.join(missing)}.")


def read_saelens(folder: Path) -> Dictionary:
    """A SAELens SAE folder: cfg.json and sae_weights.safetensors."""
    cfg = _json(folder / "cfg.json")
    weights = _tensors(folder / "sae_weights.safetensors")
    _need(weights, ("W_enc", "b_enc", "W_dec", "b_dec"), "sae_weights.safetensors")
    meta = cfg.get("metadata") or {}
    hook = cfg.get("hook_name") or cfg.get("hook_point") or meta.get("hook_name")
    if not hook:
        raise DictionaryError("cfg.json names no hook_name, so it is not known where the SAE reads.")
    architecture = cfg.get("architecture") or "standard"
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if architecture == "standard" and (cfg.get("activation_fn") or cfg.get("activation_fn_str")) == "topk" and k:
        architecture = "topk"
    activations = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
    if architecture not in activations:
        raise DictionaryError(f"SAELens architecture {architecture!r} is not read here (standard, topk, jumprelu).")
    norm = cfg.get("normalize_activations") or "none"
    if norm == "expected_average_only_in":
        factor = cfg.get("norm_scaling_factor")
        norm = "none"
        if factor:  # folded in as SAELens does: the input scaled up is the encoder scaled up
            weights["W_enc"] = weights["W_enc"] * factor
            weights["W_dec"], weights["b_dec"] = weights["W_dec"] / factor, weights["b_dec"] / factor
    elif norm not in ("none", "constant_norm_rescale", "layer_norm"):
        raise DictionaryError(f"normalize_activations {norm!r} is not read here.")
    if architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        raise DictionaryError("Top-k SAEs that rescale activations by the decoder norm are not read here.")
    threshold = weights.get("threshold")
    if threshold is None and "log_threshold" in weights:
        threshold = weights["log_threshold"].exp()
    site = _site(hook, "input")
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    return Dictionary(input_site=site, output_site=site, W_enc=weights["W_enc"], b_enc=weights["b_enc"],
                      W_dec=weights["W_dec"], b_dec=weights["b_dec"], activation=activations[architecture],
                      k=int(k) if k else None, relu_first=True, threshold=threshold,
                      subtract=weights["b_dec"] if apply_b_dec else None, input_norm=norm)


def read_sparsify(folder: Path) -> Dictionary:
    """One sparsify hookpoint folder (its name is the hookpoint): cfg.json and sae.safetensors."""
    cfg = _json(folder / "cfg.json")
    weights = _tensors(folder / "sae.safetensors")
    _need(weights, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), "sae.safetensors")
    if cfg.get("activation", "topk") != "topk":
        raise DictionaryError(f"sparsify activation {cfg.get('activation')!r} is not read here (topk).")
    transcode = bool(cfg.get("transcode"))
    output = _site(folder.name, "hookpoint")
    if transcode and output.kind != "mlp_out":
        raise UnknownHook(f"The sparsify transcoder's hookpoint {folder.name!r} is not an MLP (layers.L.mlp).")
    site_in = Site("mlp_in", output.layer) if transcode else output
    return Dictionary(input_site=site_in, output_site=output, W_enc=weights["encoder.weight"].T.contiguous(),
                      b_enc=weights["encoder.bias"], W_dec=weights["W_dec"], b_dec=weights["b_dec"],
                      activation="topk", k=int(cfg.get("k", 32)), relu_first=True, W_skip=weights.get("W_skip"),
                      subtract=None if transcode else weights["b_dec"])


def circuit_tracer_config(folder: Path) -> dict:
    """A circuit-tracer transcoder set's config.yaml, checked."""
    import yaml

    try:
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise DictionaryError(f"config.yaml could not be read ({error}).") from error
    if config.get("model_kind", "transcoder_set") != "transcoder_set":
        raise DictionaryError(f"model_kind {config.get('model_kind')!r} is not read here: per-layer transcoders "
                              "(transcoder_set) only; cross-layer transcoders are not supported yet.")
    for key in ("feature_input_hook", "feature_output_hook"):
        if not config.get(key):
            raise DictionaryError(f"config.yaml names no {key}.")
    return config


def read_circuit_tracer(folder: Path) -> list[Dictionary]:
    """A circuit-tracer transcoder set: config.yaml and layer_{i}.safetensors for layers 0, 1, ..."""
    config = circuit_tracer_config(folder)
    files = config.get("transcoders") or sorted((p.name for p in folder.glob("layer_*.safetensors")),
                                               key=lambda name: int(name[6:-12]) if name[6:-12].isdigit() else -1)
    if not files:
        raise DictionaryError(f"{folder} holds no layer_0.safetensors.")
    activation = config.get("activation")
    out = []
    for layer, name in enumerate(files):
        path = Path(name) if Path(name).is_absolute() else folder / Path(str(name).removeprefix("./")).name
        weights = _oriented(_tensors(path), path.name)
        threshold = weights.get("activation_function.threshold")
        kind = activation or ("jumprelu" if threshold is not None else "relu")
        out.append(Dictionary(
            input_site=_layer_site(config["feature_input_hook"], layer), output_site=_layer_site(
                config["feature_output_hook"], layer), W_enc=weights["W_enc"], b_enc=weights["b_enc"],
            W_dec=weights["W_dec"], b_dec=weights["b_dec"], activation=kind,
            k=int(config["k"]) if kind == "topk" and config.get("k") else None, threshold=threshold,
            W_skip=weights.get("W_skip")))
    return out


def _oriented(weights: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """circuit-tracer's weights as (d_in, n) and (n, d_out), however the file stores them.

    Its files store W_enc as (n, d_in), and W_dec as (n, d_out) in current releases and
    (d_out, n) in the first ones; b_enc's length tells them apart.
    """
    _need(weights, ("W_enc", "W_dec", "b_enc", "b_dec"), where)
    n = weights["b_enc"].shape[0]
    enc, dec = weights["W_enc"], weights["W_dec"]
    weights["W_enc"] = enc.T.contiguous() if enc.shape[0] == n and enc.shape[1] != n else enc
    weights["W_dec"] = dec.T.contiguous() if dec.shape[0] != n and dec.shape[1] == n else dec
    return weights


def _layer_site(hook: str, layer: int) -> Site:
    """A circuit-tracer hook (named within a block, as "mlp.hook_in") at one layer."""
    name = hook if hook.startswith("blocks.") else f"blocks.{layer}.{hook}"
    return _site(name.replace("{layer}", str(layer)), "input or output")


def with_dtype(dictionary: Dictionary, dtype: torch.dtype) -> Dictionary:
    """The same dictionary with every weight cast (float16 on disk, float32 to compute)."""
    cast = {name: getattr(dictionary, name).to(dtype) for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold",
                                                                   "W_skip", "subtract")
            if getattr(dictionary, name) is not None}
    return replace(dictionary, **cast)
