"""Features: transcoders and SAEs for a model, their activations on a run, and edits that act through them.

``load_transcoders(lm)`` gives the bundled set of the demo model (its twin reads the same
set); ``load_transcoders(lm, folder_or_hub_id)`` and ``load_sae(lm, folder_or_hub_id)`` read
circuit-tracer's, sparsify's and SAELens's layouts (``backend.dictionaries``). A set whose
width does not fit the model, or whose hook names no site it has, is refused with a typed
error naming both numbers or the name.

``capture(lm, prompt, features=tc)`` encodes the run's own inputs in the same forward pass
(``FeatureActivations``, sparse). ``FeatureAblation`` and ``FeatureSteering`` remove or add
one feature's decoder contribution to the MLP's output, the rest (the transcoder's error
included) left as it is; ``ErrorAblation`` removes the error (the graph's error node).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from backend import hooks
from backend.dictionaries import (
    Dictionary,
    DictionaryError,
    DictionaryMismatch,
    UnknownHook,
    read_circuit_tracer,
    read_saelens,
    read_sparsify,
)
from backend.edits import Edit, EditMismatch, check_magnitude, check_positions, check_range, number
from backend.loading import BUNDLED_MODEL, TWIN_ID, LoadedModel, hub_reachable
from backend.sites import Site
from backend.sparse import FeatureActivations, SparseActs

BUNDLED_TRANSCODERS = BUNDLED_MODEL / "transcoders"
BUNDLED_FOR = ("xray-demo", TWIN_ID)  # model names read with the bundled set
BUNDLED = "bundled"  # how a link and the page name the bundled set


@dataclass(frozen=True, eq=False)
class Transcoders:
    """One transcoder per layer: each reads its MLP's input and writes (a reconstruction of) its output."""

    layers: tuple[Dictionary, ...]
    source: str
    atlas: object | None = None  # backend.atlas.Atlas, when the set ships one

    @property
    def n_layers(self) -> int:
        """Number of layers (one transcoder each)."""
        return len(self.layers)

    @property
    def n_features(self) -> int:
        """Features per layer."""
        return self.layers[0].n_features

    @property
    def d_model(self) -> int:
        """Width of what they read and write."""
        return self.layers[0].d_in

    @property
    def nbytes(self) -> int:
        """Memory held by the weights."""
        return sum(layer.nbytes for layer in self.layers)

    def encode(self, layer: int, mlp_in: np.ndarray) -> np.ndarray:
        """(n, d_model) MLP inputs, as the block's norm gives them -> (n, n_features) activations."""
        return self.layers[layer].encode(mlp_in)

    def decode(self, layer: int, acts: np.ndarray, mlp_in: np.ndarray | None = None) -> np.ndarray:
        """(n, n_features) activations [and the MLP inputs, for the skip path] -> (n, d_model) MLP output."""
        return self.layers[layer].decode(acts, mlp_in)


@dataclass(frozen=True, eq=False)
class SAE:
    """A sparse autoencoder: it reads and reconstructs the vector at one site."""

    dictionary: Dictionary
    source: str

    @property
    def site(self) -> Site:
        """Where it reads and writes."""
        return self.dictionary.input_site

    @property
    def n_features(self) -> int:
        """Number of features."""
        return self.dictionary.n_features

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d_in) -> (n, n_features)."""
        return self.dictionary.encode(x)

    def decode(self, f: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        """(n, n_features) -> (n, d_in); ``x`` only for an SAE that normalises its input."""
        return self.dictionary.decode(f, x)


# --- finding the files --------------------------------------------------------------------------

def _folder(source: str | Path) -> Path:
    """A local folder, or a hub repository (``owner/name`` plus any subfolder) fetched into the local cache."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return path
    text = str(source).strip()
    parts = text.split("/")
    if text.startswith((".", "/", "~")) or len(parts) < 2 or not all(parts):
        raise DictionaryError(f"No folder at {text[:200]!r}, and it is not a hub id (owner/name[/subfolder]).")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download

    try:
        root = snapshot_download(repo, allow_patterns=[f"{sub}/**"] if sub else None,
                                 local_files_only=not hub_reachable())
    except Exception as error:  # noqa: BLE001 - every hub failure becomes one message
        raise DictionaryError(f"{text[:200]!r} could not be fetched from the hub or the local cache ({error}). "
                              "Give a local folder, or fetch it on a machine with internet first.") from error
    folder = Path(root) / sub if sub else Path(root)
    if not folder.is_dir():
        raise DictionaryError(f"The hub repository {repo!r} has no folder {sub!r}.")
    return folder


def _check(lm: LoadedModel, dictionary: Dictionary, what: str) -> None:
    """Its sites exist in ``lm`` and its widths are theirs; else ``UnknownHook`` or ``DictionaryMismatch``."""
    widths = {"resid": lm.info.d_model, "attn_out": lm.info.d_model, "mlp_in": lm.info.d_model,
              "mlp_out": lm.info.d_model, "neurons": lm.info.d_mlp, "mlp_pre": lm.info.d_mlp}
    for site, width in ((dictionary.input_site, dictionary.d_in), (dictionary.output_site, dictionary.d_out)):
        last = lm.info.n_layers if site.kind == "resid" else lm.info.n_layers - 1
        if site.kind not in widths or site.layer is None or not 0 <= site.layer <= last:
            raise UnknownHook(f"{what} reads or writes {site}, which this model ({lm.info.n_layers} layers) "
                              "does not have.")
        if width != widths[site.kind]:
            raise DictionaryMismatch(f"{what} has width {width} at {site}; this model's {site.kind} has width "
                                     f"{widths[site.kind]}.")


def _read_set(folder: Path) -> list[Dictionary]:
    """The per-layer transcoders a folder holds, in whichever layout."""
    if (folder / "config.yaml").is_file():
        return read_circuit_tracer(folder)
    hookpoints = sorted((p for p in folder.iterdir() if p.is_dir() and (p / "sae.safetensors").is_file()),
                        key=lambda p: [int(x) if x.isdigit() else x for x in p.name.split(".")])
    if hookpoints:
        return [read_sparsify(p) for p in hookpoints]
    raise DictionaryError(f"{folder} holds no transcoders: neither circuit-tracer's config.yaml with "
                          "layer_{i}.safetensors nor sparsify's hookpoint folders.")


_SETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {source: Transcoders}
_SETS_LOCK = threading.Lock()


def load_transcoders(lm: LoadedModel, source: str | Path | None = None) -> Transcoders:
    """The transcoders of ``lm``, one per layer, checked against the model; remembered per model and source.

    ``source`` None (or "bundled") is the bundled set, for the demo model and its twin; else a
    folder or hub id in circuit-tracer's or sparsify's layout.
    """
    key = BUNDLED if source in (None, BUNDLED) else str(source)
    with _SETS_LOCK:
        known = _SETS.get(lm.model, {}).get(key)
    if known is not None:
        return known
    if key == BUNDLED:
        if lm.info.name not in BUNDLED_FOR:
            raise DictionaryError(f"No transcoders ship with {lm.info.name!r}; the bundled set is the demo "
                                  "model's. Name a folder or hub id of transcoders trained on this model.")
        if not (BUNDLED_TRANSCODERS / "config.yaml").is_file():
            raise DictionaryError(f"The bundled transcoders are missing from {BUNDLED_TRANSCODERS}. Train them with "
                                  "`python -m training.transcoders --out models/xray-demo/transcoders`.")
        folder = BUNDLED_TRANSCODERS
    else:
        folder = _folder(source)
    layers = _read_set(folder)
    if len(layers) != lm.info.n_layers:
        raise DictionaryMismatch(f"The set has {len(layers)} transcoders; this model has {lm.info.n_layers} layers.")
    for layer, dictionary in enumerate(layers):
        if (dictionary.input_site.layer, dictionary.output_site.layer) != (layer, layer) \
                or dictionary.output_site.kind != "mlp_out":
            raise UnknownHook(f"Transcoder {layer} reads {dictionary.input_site} and writes "
                              f"{dictionary.output_site}; a transcoder of layer {layer} writes mlp_out.{layer}.")
        _check(lm, dictionary, f"Transcoder {layer}")
    from backend.atlas import read_atlas

    found = Transcoders(layers=tuple(layers), source=key, atlas=read_atlas(folder, len(layers)))
    with _SETS_LOCK:
        _SETS.setdefault(lm.model, {})[key] = found
    return found


def load_sae(lm: LoadedModel, source: str | Path) -> SAE:
    """An SAE checked against ``lm``, from a folder or hub id (a subfolder allowed).

    SAELens's layout (cfg.json + sae_weights.safetensors) or a sparsify hookpoint folder.
    """
    folder = _folder(source)
    if (folder / "sae_weights.safetensors").is_file():
        dictionary = read_saelens(folder)
    elif (folder / "sae.safetensors").is_file():
        dictionary = read_sparsify(folder)
    else:
        raise DictionaryError(f"{folder} holds no SAE: neither SAELens's cfg.json with sae_weights.safetensors nor "
                              "sparsify's cfg.json with sae.safetensors.")
    if dictionary.input_site != dictionary.output_site:
        raise DictionaryError(f"{folder.name} is a transcoder ({dictionary.input_site} to {dictionary.output_site}), "
                              "not an SAE: load it with load_transcoders.")
    _check(lm, dictionary, "The SAE")
    return SAE(dictionary=dictionary, source=str(source))


def load_features(lm: LoadedModel, source: str | Path | None = None) -> Transcoders | SAE:
    """Whatever dictionaries ``source`` holds for ``lm``: a transcoder set (the bundled one for None), or an SAE."""
    if source in (None, BUNDLED):
        return load_transcoders(lm)
    key = f"sae:{source}"
    with _SETS_LOCK:
        known = _SETS.get(lm.model, {}).get(key)
    if known is not None:
        return known
    folder = _folder(source)
    if (folder / "config.yaml").is_file() or any(p.is_dir() and (p / "sae.safetensors").is_file()
                                                 and json_transcode(p) for p in folder.iterdir()):
        return load_transcoders(lm, source)
    found = load_sae(lm, folder)
    found = SAE(dictionary=found.dictionary, source=str(source))
    with _SETS_LOCK:
        _SETS.setdefault(lm.model, {})[key] = found
    return found


def json_transcode(hookpoint: Path) -> bool:
    """Whether a sparsify hookpoint folder holds a transcoder (its cfg.json says ``transcode``)."""
    try:
        return bool(json.loads((hookpoint / "cfg.json").read_text(encoding="utf-8")).get("transcode"))
    except (OSError, ValueError):
        return False


# --- a run's activations -----------------------------------------------------------------------

def feature_reads(found: Transcoders | SAE) -> tuple[list[hooks.Action], Callable[[], FeatureActivations]]:
    """Actions reading every dictionary's input during a forward, and what encodes them afterwards."""
    dictionaries = found.layers if isinstance(found, Transcoders) else (found.dictionary,)
    store: dict[Site, torch.Tensor] = {}
    actions = [hooks.read(d.input_site, store) for d in dictionaries]

    def finish() -> FeatureActivations:
        missing = [str(d.input_site) for d in dictionaries if d.input_site not in store]
        if missing:
            raise DictionaryError(f"The forward never reached {', '.join(missing)}.")
        with torch.no_grad():
            layers = tuple(SparseActs.of(d.encode_tensor(store[d.input_site][0].float())) for d in dictionaries)
        return FeatureActivations(source=found.source, sites=tuple(d.input_site for d in dictionaries), layers=layers)

    return actions, finish


# --- edits through a transcoder ------------------------------------------------------------------

def through(transcoder: Dictionary, change: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
            keep_grad: bool = False) -> list[hooks.Action]:
    """Read the transcoder's input site, then replace its output site by ``change(output, input)``.

    Both are (rows, n, width); the input is read in the same pass, before the output is written
    (with ``keep_grad`` as the pass's own tensor, gradients and all).
    """
    seen: dict[Site, torch.Tensor] = {}

    def changed(out: torch.Tensor) -> torch.Tensor:
        return change(out, seen[transcoder.input_site]).to(out.dtype)

    return [hooks.read(transcoder.input_site, seen, keep_grad=keep_grad),
            hooks.replace(transcoder.output_site, changed)]


def _decoder_actions(lm: LoadedModel, layer: int, source: str | None, positions: tuple[int, ...] | None,
                     delta: Callable[[torch.Tensor, Dictionary], torch.Tensor]) -> list[hooks.Action]:
    """Add ``delta(mlp_in, transcoder)`` (rows, n, d_model) to the MLP's output, at ``positions`` (None: all)."""
    transcoder = load_transcoders(lm, source).layers[layer]

    def changed(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        step = delta(x.float(), transcoder).to(out.dtype)
        if positions is None:
            return out + step
        out = out.clone()
        out[:, list(positions)] += step[:, list(positions)]
        return out

    return through(transcoder, changed)


def _check_feature(edit, lm: LoadedModel, n_tokens: int) -> None:
    check_range("layer", edit.layer, lm.info.n_layers, edit, inclusive=False)
    try:
        tc = load_transcoders(lm, edit.transcoders)
    except DictionaryError as error:
        raise EditMismatch(f"{type(edit).__name__}: {error}") from error
    if hasattr(edit, "feature"):
        check_range("feature", edit.feature, tc.n_features, edit, inclusive=False)
    check_positions(edit.positions, n_tokens, edit)


def _positions(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 4096:
        raise ValueError("positions must be a list of numbers or null")
    return tuple(number(p, int) for p in value)


def _where(positions: tuple[int, ...] | None) -> str:
    return "" if positions is None else " at position" + ("s " if len(positions) > 1 else " ") + \
        ", ".join(str(p) for p in positions)


@dataclass(frozen=True)
class FeatureAblation(Edit):
    """Switch off one transcoder feature: its decoder contribution leaves the MLP's output (None: every position)."""

    kind: ClassVar[str] = "feature_off"
    layer: int
    feature: int
    positions: tuple[int, ...] | None = None
    transcoders: str | None = None  # None: the model's bundled set

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        _check_feature(self, lm, n_tokens)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        def remove(x: torch.Tensor, transcoder: Dictionary) -> torch.Tensor:
            active = transcoder.encode_tensor(x)[..., self.feature]  # (rows, n)
            return -active[..., None] * transcoder.W_dec[self.feature]
        return _decoder_actions(lm, self.layer, self.transcoders, self.positions, remove)

    def label(self) -> str:
        return f"feature {self.feature} of layer {self.layer + 1}{_where(self.positions)} off"

    def link(self) -> list:
        return [self.kind, self.layer, self.feature, None if self.positions is None else list(self.positions),
                self.transcoders]

    @classmethod
    def from_link(cls, args: list) -> FeatureAblation:
        if len(args) not in (2, 3, 4) or (len(args) == 4 and not isinstance(args[3], (str, type(None)))):
            raise ValueError('a feature_off edit is ["feature_off", layer, feature, positions or null, set or null]')
        return cls(number(args[0], int), number(args[1], int), _positions(args[2] if len(args) > 2 else None),
                   args[3] if len(args) == 4 else None)


@dataclass(frozen=True)
class FeatureSteering(Edit):
    """Add ``strength`` times one transcoder feature's decoder vector to the MLP's output (None: every position)."""

    kind: ClassVar[str] = "feature_steer"
    layer: int
    feature: int
    strength: float
    positions: tuple[int, ...] | None = None
    transcoders: str | None = None

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        _check_feature(self, lm, n_tokens)
        check_magnitude("strength", self.strength, self)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        def push(x: torch.Tensor, transcoder: Dictionary) -> torch.Tensor:
            return (self.strength * transcoder.W_dec[self.feature]).expand(*x.shape[:-1], -1)
        return _decoder_actions(lm, self.layer, self.transcoders, self.positions, push)

    def label(self) -> str:
        where = _where(self.positions)
        return f"feature {self.feature} of layer {self.layer + 1} pushed by {self.strength:g}{where}"

    def link(self) -> list:
        return [self.kind, self.layer, self.feature, self.strength,
                None if self.positions is None else list(self.positions), self.transcoders]

    @classmethod
    def from_link(cls, args: list) -> FeatureSteering:
        if len(args) not in (3, 4, 5) or (len(args) == 5 and not isinstance(args[4], (str, type(None)))):
            raise ValueError('a feature_steer edit is ["feature_steer", layer, feature, strength, positions or null, '
                             'set or null]')
        return cls(number(args[0], int), number(args[1], int), number(args[2]),
                   _positions(args[3] if len(args) > 3 else None), args[4] if len(args) == 5 else None)



@dataclass(frozen=True)
class ErrorAblation(Edit):
    """Replace a layer's MLP output by its transcoder's reconstruction: what the features miss leaves the model.

    The graph's error node, switched off: at ``positions`` (None: every position) the MLP
    writes only what the transcoder's features (and skip path) express.
    """

    kind: ClassVar[str] = "error_off"
    layer: int
    positions: tuple[int, ...] | None = None
    transcoders: str | None = None

    def check(self, lm: LoadedModel, n_tokens: int) -> None:
        _check_feature(self, lm, n_tokens)

    def actions(self, lm: LoadedModel) -> list[hooks.Action]:
        transcoder = load_transcoders(lm, self.transcoders).layers[self.layer]

        def rebuilt(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            inputs = x.float()
            recon = transcoder.decode_tensor(transcoder.encode_tensor(inputs), inputs).to(out.dtype)
            if self.positions is None:
                return recon
            out = out.clone()
            out[:, list(self.positions)] = recon[:, list(self.positions)]
            return out

        return through(transcoder, rebuilt)

    def label(self) -> str:
        return f"what layer {self.layer + 1}'s features miss{_where(self.positions)} off"

    def link(self) -> list:
        return [self.kind, self.layer, None if self.positions is None else list(self.positions), self.transcoders]

    @classmethod
    def from_link(cls, args: list) -> ErrorAblation:
        if len(args) not in (1, 2, 3) or (len(args) == 3 and not isinstance(args[2], (str, type(None)))):
            raise ValueError('an error_off edit is ["error_off", layer, positions or null, set or null]')
        return cls(number(args[0], int), _positions(args[1] if len(args) > 1 else None),
                   args[2] if len(args) == 3 else None)

__all__ = ["BUNDLED", "SAE", "DictionaryError", "DictionaryMismatch", "ErrorAblation", "FeatureAblation",
           "FeatureActivations", "FeatureSteering", "SparseActs", "Transcoders", "UnknownHook", "feature_reads",
           "load_features", "load_sae", "load_transcoders"]
