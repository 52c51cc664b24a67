"""Build the feature atlas of a transcoder set on held-out text (``backend.atlas``).

Run ``python -m training.atlas models/xray-demo/transcoders`` (about a minute). On
``TOKENS`` tokens of the corpus generator (its own seed, held out from every training run),
for every feature of every layer: its ``CONTEXTS`` strongest activations, each with
``BEFORE`` tokens before and ``AFTER`` after (and the feature's activation on each), the share
of tokens it fires on, the ``PROMOTED`` tokens its decoder vector raises and lowers most
through the model's own final norm and unembedding (the exact first-order change at the
mean final residual of that text), and a label computed from those numbers
(``backend.atlas.label_of``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm import tqdm

from backend import hooks, load_model
from backend.atlas import label_of
from backend.features import load_transcoders
from backend.loading import BUNDLED_MODEL
from backend.readout import readout_tensor
from backend.sites import Site
from backend.tokens import token_strings
from training.cli import folder_argument
from training.transcoder_quality import heldout_rows

SEED = 13579
TOKENS = 65_536
CONTEXTS, BEFORE, AFTER, PROMOTED = 8, 8, 3, 5


def activations(lm, tc, rows: torch.Tensor) -> tuple[list[tuple[np.ndarray, np.ndarray]], torch.Tensor]:
    """Per layer: (token index, feature) (2, nnz) and activations (nnz,) of the active entries; the mean final resid."""
    n_layers = lm.info.n_layers
    where: list[list[np.ndarray]] = [[] for _ in range(n_layers)]
    values: list[list[np.ndarray]] = [[] for _ in range(n_layers)]
    final = torch.zeros(lm.info.d_model, dtype=torch.float64)
    offset = 0
    for start in tqdm(range(0, len(rows), 32), desc="atlas", mininterval=10):
        batch = rows[start:start + 32]
        store: dict[Site, torch.Tensor] = {}
        reads = [hooks.read(Site("mlp_in", layer), store) for layer in range(n_layers)]
        reads.append(hooks.read(Site("resid", n_layers), store))
        with hooks.exclusive(lm):
            hooks.forward(lm, batch, reads, stop_after=n_layers - 1)
        final += store[Site("resid", n_layers)].reshape(-1, lm.info.d_model).double().sum(0)
        for layer in range(n_layers):
            acts = tc.layers[layer].encode_tensor(store[Site("mlp_in", layer)].reshape(-1, lm.info.d_model))
            token, feature = torch.nonzero(acts, as_tuple=True)
            where[layer].append(np.stack([token.numpy() + offset, feature.numpy()]))
            values[layer].append(acts[token, feature].numpy())
        offset += batch.numel()
    return [(np.concatenate(w, axis=1), np.concatenate(v)) for w, v in zip(where, values, strict=True)], \
        (final / offset).float()


def contexts_of(ids: np.ndarray, row_length: int, where: np.ndarray, values: np.ndarray, activations: dict,
                n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's strongest ``CONTEXTS`` tokens as windows of ids and of the feature's activations."""
    width = BEFORE + 1 + AFTER
    contexts = np.full((n_features, CONTEXTS, width), -1, np.int16 if ids.max() < 2**15 else np.int32)
    acts = np.zeros((n_features, CONTEXTS, width), np.float16)
    order = np.lexsort((-values, where[1]))  # by feature, strongest first
    tokens, features = where[0][order], where[1][order]
    starts = np.searchsorted(features, np.arange(n_features))
    ends = np.searchsorted(features, np.arange(n_features), side="right")
    for feature in range(n_features):
        for slot, token in enumerate(tokens[starts[feature]:min(ends[feature], starts[feature] + CONTEXTS)]):
            row, col = divmod(int(token), row_length)
            lo, hi = max(0, col - BEFORE), min(row_length, col + AFTER + 1)
            span = slice(BEFORE - (col - lo), BEFORE + (hi - col))
            contexts[feature, slot, span] = ids[row, lo:hi]
            acts[feature, slot, span] = [activations.get((row * row_length + c, feature), 0.0) for c in range(lo, hi)]
    return contexts, acts


def effects(lm, tc, layer: int, base: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Each feature's decoder vector pushed through the readout at ``base``: top promoted and suppressed tokens."""
    decoder = tc.layers[layer].W_dec.float()  # (n_features, d)
    out = []
    for start in range(0, decoder.shape[0], 256):
        chunk = decoder[start:start + 256]
        _, change = torch.func.jvp(lambda r: readout_tensor(lm, r), (base.expand(len(chunk), -1).clone(),), (chunk,))
        out.append(change.detach())
    change = torch.cat(out)
    up, down = change.topk(PROMOTED, dim=-1), (-change).topk(PROMOTED, dim=-1)
    return (up.indices.numpy().astype(np.int32), up.values.numpy(), down.indices.numpy().astype(np.int32),
            -down.values.numpy())


def build(folder: Path) -> dict:
    """Compute and save the atlas beside the transcoders; returns a few figures."""
    lm = load_model(BUNDLED_MODEL, device="cpu")
    bundled = folder.resolve() == (BUNDLED_MODEL / "transcoders").resolve()
    tc = load_transcoders(lm, None if bundled else str(folder))
    rows = heldout_rows(lm.tokenizer, TOKENS, SEED)
    ids = rows.numpy()
    active, base = activations(lm, tc, rows)
    n_layers, n_features = lm.info.n_layers, tc.n_features
    arrays = {name: [] for name in ("frequency", "contexts", "context_acts", "promoted", "promoted_values",
                                    "suppressed", "suppressed_values")}
    labels = []
    for layer, (where, values) in enumerate(active):
        lookup = {(int(t), int(f)): float(v) for (t, f), v in zip(where.T, values, strict=True)}
        contexts, acts = contexts_of(ids, rows.shape[1], where, values, lookup, n_features)
        frequency = np.bincount(where[1], minlength=n_features) / ids.size
        promoted, promoted_values, suppressed, suppressed_values = effects(lm, tc, layer, base)
        for name, value in zip(arrays, (frequency.astype(np.float32), contexts, acts, promoted, promoted_values,
                                        suppressed, suppressed_values), strict=True):
            arrays[name].append(value)
        layer_labels = []
        for feature in range(n_features):
            texts = [token_strings(lm.tokenizer, [max(0, i) for i in ctx]) if (ctx >= 0).any() else []
                     for ctx in contexts[feature] if (ctx >= 0).any()]
            layer_labels.append(label_of(texts, BEFORE, token_strings(lm.tokenizer, promoted[feature].tolist()),
                                         float(frequency[feature])))
        labels.append(layer_labels)
    save_file({name: np.stack(values) for name, values in arrays.items()}, str(folder / "atlas.safetensors"))
    (folder / "atlas.json").write_text(json.dumps({"labels": labels, "center": BEFORE, "tokens_read": int(ids.size),
                                                   "seed": SEED}, ensure_ascii=False))
    return {"tokens": int(ids.size), "never_fire": [float((np.stack(arrays["frequency"])[i] == 0).mean())
                                                    for i in range(n_layers)]}


def main() -> None:
    """Build and report."""
    folder = folder_argument(__doc__)
    torch.set_num_threads(2)
    figures = build(folder)
    print(f"atlas of {figures['tokens']:,} held-out tokens; features that never fired per layer: "
          + ", ".join(f"{share:.1%}" for share in figures["never_fire"]))


if __name__ == "__main__":
    main()
