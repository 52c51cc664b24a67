"""Load a Hugging Face causal LM (bundled demo, local folder or hub id) for capturing.

Safetensors only and never remote code: a checkpoint is data, not a program. Every
failure becomes a ``ModelLoadError`` that says what went wrong and what to do.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from backend.anatomy import Anatomy, discover, text_config
from backend.errors import ModelLoadError, UnsupportedModel

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "xray-demo"
BUNDLED_TWIN = BUNDLED_MODEL.with_name("xray-demo-secret")  # the demo model fine-tuned to keep capitals secret
TWIN_ID = BUNDLED_TWIN.name  # how a page or a link names the twin: ``load_model(TWIN_ID)`` loads it
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "mps", "sharded")
HUB_PROBE_TIMEOUT_S = 1.0  # one TCP connection to the hub tells whether it can be reached
HUB_ANSWER_TIMEOUT_S = 4.0  # ... and the first byte of its answer to one HEAD request whether it answers
HUB_PROBE_MEMORY_S = 30.0  # how long that answer is trusted
FAILURE_MEMORY_S = 300.0  # how long a hub id that failed while the hub was unreachable fails at once
_hub_probe: dict[str, tuple[float, bool]] = {}  # endpoint -> (when, reachable)
_offline_failures: dict[str, tuple[float, ModelLoadError]] = {}  # hub id -> (when, the error it gave)
_memory_lock = threading.Lock()


@dataclass(frozen=True)
class ModelInfo:
    """What the app's sidebar shows about the loaded model."""

    name: str
    family: str  # the config's model_type, e.g. "llama"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_mlp: int
    vocab_size: int
    n_params: int
    context_length: int | None  # maximum positions, when the config states one
    device: str
    dtype: str


@dataclass(eq=False)
class LoadedModel:
    """A model ready for ``capture``: the transformers objects, their anatomy and a lock.

    One ``LoadedModel`` may serve many threads: ``capture`` holds ``lock`` for the whole
    forward pass, so hooks and the attention switch never mix two runs.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo
    anatomy: Anatomy
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def input_device(self) -> torch.device:
        """Where input ids go: the embedding's device (differs per layer when sharded)."""
        return self.model.get_input_embeddings().weight.device


def resolve_device(device: str) -> str:
    """``auto`` means CUDA, then Apple MPS, then CPU; anything else is checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "sharded":
        if torch.cuda.device_count() < 1:
            raise ModelLoadError("device='sharded' spreads the model over GPUs, but no GPU is visible.")
        return device
    base = device.split(":")[0]
    if base not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"Unknown device {device!r}: use one of {', '.join(DEVICES)} or 'cuda:N'.")
    if base == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"Device {device!r} was asked for, but no CUDA GPU is visible.")
    if base == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("Device 'mps' was asked for, but Apple MPS is not available here.")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """Default: float32 on the CPU (half precision is slow there), bfloat16 or float16 on GPUs."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device == "cpu":
            return torch.float32
        if device.startswith("mps"):
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")


def _check_local_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: it is not a Hugging Face model folder.")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{path}/config.json is not valid JSON ({error}): the file is damaged or was cut "
                             "short. Copy it again from where the model came from.") from error
    files = [p.name for p in path.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelLoadError(
            f"{path} holds only pickle weights ({', '.join(sorted(pickles))}). Model X-ray loads "
            "safetensors only, because unpickling can run arbitrary code. Convert the checkpoint "
            "with `model.save_pretrained(folder, safe_serialization=True)` on a trusted machine.")
    raise ModelLoadError(f"{path} has no weights (no *.safetensors file).")


def _explain_hub_error(source: str, error: Exception) -> ModelLoadError:
    text = str(error)
    if "safetensors" in text.lower() or "use_safetensors" in text:
        return ModelLoadError(
            f"{source!r} offers no safetensors weights. Model X-ray loads safetensors only, "
            "because pickle weights can run arbitrary code.")
    offline = ("offline" in text.lower() or "connect" in text.lower()
               or "local_files_only" in text or "cached" in text.lower())
    if offline:
        return ModelLoadError(
            f"{source!r} is not in the local Hugging Face cache and the hub cannot be reached. "
            f"On a machine with internet run `hf download {source}` (the cache is "
            "~/.cache/huggingface), then try again; or give the path of a local model folder.")
    return ModelLoadError(
        f"Could not load {source!r}: it is not a local folder and the Hugging Face hub has no "
        f"such model (check the spelling, e.g. 'gpt2' or 'EleutherAI/pythia-70m'). Detail: {text[:300]}")


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connection within a second (remembered 30 s).

    Without internet and without ``HF_HUB_OFFLINE``, the hub client retries for about 24 s
    before it gives up, on every attempt; a lecture hall's page would spin that long for
    each visitor. With no answer here, loading goes straight to the local cache.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = constants.ENDPOINT
    now = time.monotonic()
    with _memory_lock:
        known = _hub_probe.get(endpoint)
    if known and now - known[0] < HUB_PROBE_MEMORY_S:
        return known[1]
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    answer: list[bool] = []

    def connect() -> None:  # in a thread: a name lookup with no network can hang past any socket timeout
        try:
            with socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S) as raw:
                answer.append(_answers(raw, url.hostname or "", url.scheme == "https"))
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(HUB_PROBE_TIMEOUT_S + HUB_ANSWER_TIMEOUT_S + 1.0)
    reachable = bool(answer and answer[0])
    with _memory_lock:
        _hub_probe[endpoint] = (now, reachable)
    return reachable


def _answers(raw: socket.socket, host: str, tls: bool) -> bool:
    """Whether a server that took the connection answers a HEAD request at all (any status) in time.

    A server that accepts connections and never answers would otherwise hold the hub client,
    and the page, for as long as it likes: its requests have no read timeout.
    """
    import ssl

    raw.settimeout(HUB_ANSWER_TIMEOUT_S)
    stream = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if tls else raw
    stream.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii"))
    return bool(stream.recv(1))


def _remembered_failure(source: str) -> ModelLoadError | None:
    with _memory_lock:
        known = _offline_failures.get(source)
    if known and time.monotonic() - known[0] < FAILURE_MEMORY_S:
        return known[1]
    return None


def _load_config(source: str, local_only: bool):
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=local_only)
    except ValueError as error:
        if "trust_remote_code" in str(error) or "custom code" in str(error):
            raise ModelLoadError(
                f"{source!r} needs its own Python code (trust_remote_code), which Model X-ray "
                "never runs. Pick a model whose architecture transformers ships.") from error
        raise ModelLoadError(f"{source!r}: unrecognised model configuration ({error}).") from error
    except OSError as error:
        raise _explain_hub_error(source, error) from error
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(f"{source!r} is an encoder-decoder model ({config.model_type}); "
                             "Model X-ray reads decoder-only language models.")
    return config


def _can_switch_attention(model_class: type) -> bool:
    check = getattr(model_class, "_can_set_attn_implementation", None)
    return bool(check and check())


def _load_weights(source: str, config, device: str, dtype: torch.dtype, local_only: bool) -> PreTrainedModel:
    model_class = AutoModelForCausalLM._model_mapping.get(type(config), None)
    if model_class is None:
        raise ModelLoadError(f"{source!r} is a {config.model_type!r} model, which transformers "
                             "does not provide as a causal (decoder-only) language model.")
    kwargs = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False, "local_files_only": local_only}
    if not _can_switch_attention(model_class):
        # Families that cannot change attention at run time must start with weights exposed.
        kwargs["attn_implementation"] = "eager"
    if device == "sharded":
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, **kwargs)
    except OSError as error:
        raise _explain_hub_error(source, error) from error
    except (ValueError, RuntimeError, ImportError) as error:
        raise ModelLoadError(f"Could not load {source!r}: {error}") from error
    if device != "sharded":
        model = model.to(device)
    return model.eval()


def describe(model: PreTrainedModel, name: str, anatomy: Anatomy, device: str) -> ModelInfo:
    """The sidebar's description of a loaded model."""
    config = text_config(model)
    n_heads = int(config.num_attention_heads)
    context = (getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
               or getattr(config, "seq_length", None))
    return ModelInfo(
        name=name, family=str(config.model_type), n_layers=len(anatomy.layers), n_heads=n_heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        d_model=int(config.hidden_size), d_mlp=anatomy.d_mlp,
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
        n_params=sum(p.numel() for p in model.parameters()),
        context_length=int(context) if context else None, device=device,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
    )


def load_model(source: str | Path | None = None, *, device: str = "auto",
               dtype: str | torch.dtype | None = None) -> LoadedModel:
    """Load ``source`` (``None``: the bundled demo model; a local folder; or a hub id).

    ``device``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda[:N]``, ``mps``, or
    ``sharded`` (spread over all GPUs with accelerate's ``device_map="auto"``).
    ``dtype``: ``None`` picks float32 on the CPU and half precision on GPUs.
    """
    if source is None or str(source).strip() == "":
        if not (BUNDLED_MODEL / "config.json").is_file():
            raise ModelLoadError(f"The bundled demo model is missing from {BUNDLED_MODEL}. "
                                 "Train it with `python -m training.train --out models/xray-demo`.")
        source = BUNDLED_MODEL
    if str(source).strip() == TWIN_ID and not Path(TWIN_ID).is_dir():
        if not (BUNDLED_TWIN / "config.json").is_file():
            raise ModelLoadError(f"The bundled twin is missing from {BUNDLED_TWIN}. "
                                 "Make it with `python -m training.secret --out models/xray-demo-secret`.")
        source = BUNDLED_TWIN
    path = Path(str(source)).expanduser()
    if path.is_dir():
        _check_local_folder(path)
        source = str(path.resolve())
        name = path.name
    else:
        source = str(source).strip()
        name = source
        if source.startswith((".", "/", "~")):
            raise ModelLoadError(f"No model folder at {source}.")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    local_only = path.is_dir() or not hub_reachable()
    if not path.is_dir() and local_only and (known := _remembered_failure(source)) is not None:
        raise known
    try:
        config = _load_config(source, local_only)
        if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise ModelLoadError(f"{path} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json "
                                 "with merges.txt): save the tokenizer into the folder too (save_pretrained).")
        model = _load_weights(source, config, device, torch_dtype, local_only)
    except ModelLoadError as error:
        if not path.is_dir() and local_only:
            with _memory_lock:
                _offline_failures[source] = (time.monotonic(), error)
        raise
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local_only)
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        raise ModelLoadError(f"{name}: its tokenizer could not be loaded ({error}).") from error
    _check_finite(model, name)
    anatomy = discover(model)
    if device == "sharded":
        device = "sharded: " + ", ".join(sorted({str(p.device) for p in model.parameters()}))
    return LoadedModel(model=model, tokenizer=tokenizer, info=describe(model, name, anatomy, device),
                       anatomy=anatomy)


def _check_finite(model: PreTrainedModel, name: str) -> None:
    """Refuse weights that hold NaN or infinite numbers: every number the page showed would be meaningless."""
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                raise ModelLoadError(f"{name}: its weights hold NaN or infinite numbers (first in {param_name}), so "
                                     "nothing it computes can be shown. The checkpoint is damaged.")


def from_pretrained_objects(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                            name: str = "model") -> LoadedModel:
    """Wrap an already loaded transformers model (tests, notebooks); raises ``UnsupportedModel``."""
    anatomy = discover(model)
    device = str(next(model.parameters()).device)
    return LoadedModel(model=model.eval(), tokenizer=tokenizer,
                       info=describe(model, name, anatomy, device), anatomy=anatomy)


__all__ = ["BUNDLED_MODEL", "BUNDLED_TWIN", "TWIN_ID", "LoadedModel", "ModelInfo", "UnsupportedModel", "load_model",
           "from_pretrained_objects"]
