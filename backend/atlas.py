"""A feature atlas: what each transcoder feature fires on, how often, what it promotes, and a short label.

Built once for a transcoder set (``python -m training.atlas``) from held-out corpus text and
shipped beside it as ``atlas.safetensors`` (arrays) and ``atlas.json`` (labels): for every
feature, its top activating contexts (a few tokens either side, with the feature's
activation on each), the share of tokens it fires on, and the tokens its decoder vector
promotes and suppresses through the model's own final norm and unembedding. The label is
computed from those numbers alone, no language model involved (``label_of``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from backend.tokens import quoted, token_strings

ARRAYS = ("frequency", "contexts", "context_acts", "promoted", "promoted_values", "suppressed", "suppressed_values")


@dataclass(frozen=True, eq=False)
class Atlas:
    """Per layer and feature; C contexts of W tokens each, P promoted and suppressed tokens."""

    frequency: np.ndarray  # (L, F) float32: share of held-out tokens where the feature fires
    contexts: np.ndarray  # (L, F, C, W) int32 token ids, -1 where a context is shorter
    context_acts: np.ndarray  # (L, F, C, W) float16: the feature's activation on each context token
    promoted: np.ndarray  # (L, F, P) int32: tokens whose logits its decoder vector raises most
    promoted_values: np.ndarray  # (L, F, P) float32: logit change per unit of activation
    suppressed: np.ndarray  # (L, F, P) int32
    suppressed_values: np.ndarray  # (L, F, P) float32, negative
    labels: tuple[tuple[str, ...], ...]  # (L, F)
    center: int  # the position of the activating token in each context window
    tokens_read: int  # held-out tokens the atlas was built from

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(getattr(self, name).nbytes for name in ARRAYS)


def read_atlas(folder: Path, n_layers: int) -> Atlas | None:
    """The atlas shipped in a transcoder folder, or None when there is none (or it does not fit the set)."""
    arrays_path, meta_path = folder / "atlas.safetensors", folder / "atlas.json"
    if not arrays_path.is_file() or not meta_path.is_file():
        return None
    arrays = load_file(str(arrays_path))
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if any(name not in arrays for name in ARRAYS) or arrays["frequency"].shape[0] != n_layers:
        return None
    arrays["contexts"] = arrays["contexts"].astype(np.int32)  # int16 on disk for a small vocabulary
    return Atlas(**{name: arrays[name] for name in ARRAYS}, labels=tuple(tuple(row) for row in meta["labels"]),
                 center=int(meta["center"]), tokens_read=int(meta["tokens_read"]))


@dataclass(frozen=True)
class FeatureCard:
    """One feature as a reader meets it: label, how often it fires, top contexts, what it promotes and suppresses."""

    layer: int
    feature: int
    label: str
    frequency: float
    contexts: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...]  # (tokens, activations) per context
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]


def feature_card(atlas: Atlas, tokenizer, layer: int, feature: int) -> FeatureCard:
    """The atlas's entry for one feature, token ids turned into readable strings."""
    contexts = []
    for ids, acts in zip(atlas.contexts[layer, feature], atlas.context_acts[layer, feature], strict=True):
        keep = ids >= 0
        if keep.any():
            contexts.append((tuple(token_strings(tokenizer, ids[keep].tolist())),
                             tuple(float(a) for a in acts[keep])))

    def pairs(ids: np.ndarray, values: np.ndarray) -> tuple[tuple[str, float], ...]:
        return tuple(zip(token_strings(tokenizer, ids.tolist()), (float(v) for v in values), strict=True))

    return FeatureCard(layer=layer, feature=feature, label=atlas.labels[layer][feature],
                       frequency=float(atlas.frequency[layer, feature]), contexts=tuple(contexts),
                       promoted=pairs(atlas.promoted[layer, feature], atlas.promoted_values[layer, feature]),
                       suppressed=pairs(atlas.suppressed[layer, feature], atlas.suppressed_values[layer, feature]))


def label_of(contexts: list[list[str]], center: int, promoted: list[str], frequency: float) -> str:
    """A short label from the numbers: the tokens it fires on, what precedes them when that is shared, what it promotes.

    ``contexts`` are the top contexts' tokens (strongest first), the activating token at
    ``center``. E.g. "fires on '␣Paris', '␣Rome' after '␣of'; promotes '␣is'".
    """
    if frequency == 0 or not contexts:
        return "never fires on held-out text"
    on = Counter(ctx[center] for ctx in contexts if len(ctx) > center)
    named = [quoted(token) for token, _ in on.most_common(3)]
    text = "fires on " + ", ".join(named)
    before = Counter(ctx[center - 1] for ctx in contexts if center >= 1 and len(ctx) > center)
    if before:
        token, count = before.most_common(1)[0]
        if count >= 0.6 * len(contexts) and token not in on:
            text += f" after {quoted(token)}"
    if frequency > 0.2:
        text += f" (often: {frequency:.0%} of tokens)"
    if promoted:
        text += "; promotes " + ", ".join(quoted(token) for token in promoted[:2])
    return text
