"""Save a capture (and its lens summary) to ``.npz`` with a JSON sidecar, and load it back."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.capture import Capture
from backend.lens import LensSummary

CAPTURE_FIELDS = ("token_ids", "attention", "resid", "neurons", "logits")
SUMMARY_FIELDS = ("top_ids", "top_probs", "entropy", "kl_to_final", "target_ids", "target_probs", "target_ranks")


@dataclass(frozen=True, eq=False)
class SavedRun:
    """What ``load_run`` gives back: the capture, the lens summary if it was saved, and the sidecar."""

    capture: Capture
    summary: LensSummary | None
    meta: dict


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__}


def sidecar_path(path: Path) -> Path:
    """``run.npz`` -> ``run.json``."""
    return path.with_suffix(".json")


def save_run(path: str | Path, cap: Capture, summary: LensSummary | None = None, *,
             model_info: dict | None = None) -> tuple[Path, Path]:
    """Write ``path`` (.npz, compressed) and its JSON sidecar; returns both paths."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    arrays = {f"capture.{name}": getattr(cap, name) for name in CAPTURE_FIELDS}
    if summary is not None:
        arrays |= {f"summary.{name}": getattr(summary, name) for name in SUMMARY_FIELDS}
        arrays["summary.top_tokens"] = np.array(summary.top_tokens, dtype=str)
    arrays["capture.tokens"] = np.array(cap.tokens, dtype=str)
    np.savez_compressed(path, **arrays)
    meta = {"model": cap.model_name, "prompt": cap.prompt, "n_tokens": cap.n_tokens, "tokens": cap.tokens,
            "edits": [repr(e) for e in cap.edits], "model_info": model_info or {},
            "shapes": {name: list(array.shape) for name, array in arrays.items()}, "versions": _versions(),
            "layout": {"attention": "(layer, head, query, key)", "resid": "(layer + 1, position, d_model); "
                       "[0] enters block 0", "neurons": "(layer, position, d_mlp)", "logits": "(position, vocab)"}}
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    return path, sidecar


def load_run(path: str | Path) -> SavedRun:
    """The capture (and summary) ``save_run`` wrote, with the sidecar's metadata."""
    path = Path(path)
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    cap = Capture(prompt=meta["prompt"], model_name=meta["model"], tokens=[str(t) for t in arrays["capture.tokens"]],
                  **{name: arrays[f"capture.{name}"] for name in CAPTURE_FIELDS})
    summary = None
    if "summary.top_ids" in arrays:
        summary = LensSummary(top_tokens=arrays["summary.top_tokens"].astype(object),
                              **{name: arrays[f"summary.{name}"] for name in SUMMARY_FIELDS})
    return SavedRun(capture=cap, summary=summary, meta=meta)
