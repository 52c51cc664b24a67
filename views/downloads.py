"""What each view lets a reader take away: its numbers as JSON and the Python that gives them.

Pure builders (no Streamlit): the app hands ``st.download_button`` a callable that looks the
run up in the cache when clicked, so no widget keeps a capture alive.
"""

from __future__ import annotations

import json

import numpy as np

from backend.capture import Capture
from backend.compare import PART_WAYS_NATS, ModelDiff
from backend.heads import SCORE_NAMES, HeadScores
from backend.lens import LensSummary
from backend.neurons import top_neurons
from backend.patching import PatchingSweep
from backend.whatif import EditEffect

TOP_NEURONS = 20

VIEWS = ("attention", "lens", "neurons", "features", "whatif", "patching", "compare")


def _plain(value: object) -> object:
    """JSON-ready: arrays as nested lists, NaN as null."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.dtype != object else [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _plain(value.item())
    return value


def to_json(numbers: dict) -> str:
    """The numbers as indented JSON text."""
    return json.dumps(_plain(numbers), ensure_ascii=False, indent=1)


def attention_numbers(cap: Capture, scores: HeadScores) -> dict:
    """Every head's scores, and what the last token reads in every head (the full patterns are in the API)."""
    return {"tokens": cap.tokens, "layers_and_heads": "count from 1 on the page, from 0 in these arrays",
            "scores": {name: scores.get(name) for name in SCORE_NAMES},
            "last_token_reads": cap.attention[:, :, -1, :]}  # (layer, head, key)


def lens_numbers(cap: Capture, summary: LensSummary, findings: list | None = None) -> dict:
    """Top guesses, entropy and KL at every layer (0: the embeddings) and position; what is held inside."""
    numbers = {"tokens": cap.tokens, "top_tokens": summary.top_tokens, "top_probs": summary.top_probs,
               "entropy_nats": summary.entropy, "kl_to_final_nats": summary.kl_to_final,
               "final_guess_probs": summary.target_probs, "final_guess_ranks": summary.target_ranks}
    if findings is not None:
        numbers["held_inside"] = [finding_numbers(f) for f in findings]
    return numbers


def finding_numbers(finding) -> dict:
    """One ``backend.suppressed`` finding (its layer is a resid index: "after that many blocks")."""
    return dict(vars(finding))


def neuron_numbers(cap: Capture) -> dict:
    """The most active neurons of every layer with their activation on every token."""
    layers = []
    for layer in range(cap.n_layers):
        acts = cap.neurons[layer]
        ids = top_neurons(acts[1:] if cap.n_tokens > 1 else acts, TOP_NEURONS)
        layers.append({"layer": layer, "neurons": ids, "activations": acts[:, ids].T})  # (neuron, position)
    return {"tokens": cap.tokens, "layers": layers}


def feature_numbers(cap: Capture) -> dict:
    """Every dictionary's active features at every position: ids and activations."""
    if cap.features is None:
        return {"tokens": cap.tokens, "features": None}
    layers = [{"site": str(site), "positions": [dict(zip(("features", "activations"), acts.row(p), strict=True))
                                                for p in range(cap.n_tokens)]}
              for site, acts in zip(cap.features.sites, cap.features.layers, strict=True)]
    return {"tokens": cap.tokens, "source": cap.features.source, "dictionaries": layers}


def what_if_numbers(effect: EditEffect | None) -> dict:
    """The answer's guesses and lens probabilities without and with the changes."""
    if effect is None:
        return {"edits": []}
    return {"edits": [repr(e) for e in effect.edits], "answer": effect.answer,
            "before": dict(zip(effect.before_tokens, effect.before_probs.tolist(), strict=True)),
            "after": dict(zip(effect.after_tokens, effect.after_probs.tolist(), strict=True)),
            "answer_prob_by_layer_before": effect.answer_before, "answer_prob_by_layer_after": effect.answer_after}


def patching_numbers(sweep: PatchingSweep) -> dict:
    """The four sweeps: shares of the answer margin restored."""
    return {"clean_tokens": sweep.clean_tokens, "corrupt_tokens": sweep.corrupt_tokens, "answer": sweep.answer,
            "foil": sweep.foil, "clean_diff": sweep.clean_diff, "corrupt_diff": sweep.corrupt_diff,
            "resid": sweep.resid, "attn": sweep.attn, "mlp": sweep.mlp, "heads": sweep.heads}


def compare_numbers(diff: ModelDiff) -> dict:
    """Everything the compare view draws (layers from 0 = the embeddings; blocks count from 0)."""
    numbers = {"tokens": diff.a.tokens, "answer_a": diff.answer_a, "answer_b": diff.answer_b,
               "guesses_a": [[t, p] for _, t, p in diff.guesses_a], "guesses_b": [[t, p] for _, t, p in diff.guesses_b],
               "kl_nats": diff.kl, "part_ways_threshold_nats": PART_WAYS_NATS, "part_ways_layer": diff.part_ways,
               "answer_tracks": [{"token": t.token, "model": t.model, "probs": t.probs, "ranks": t.ranks}
                                 for t in diff.tracks],
               "not_applicable": diff.not_applicable}
    if diff.head_change is not None:
        numbers["head_change"] = diff.head_change
        numbers["neurons"] = [vars(n) for n in diff.neurons]
    if diff.weights is not None:
        numbers["weight_change"] = {"attn": diff.weights.attn, "mlp": diff.weights.mlp, "embed": diff.weights.embed,
                                    "unembed": diff.weights.unembed}
    if diff.patch is not None:
        p = diff.patch
        numbers["cross_patch"] = {"a_diff": p.a_diff, "b_diff": p.b_diff, "embed": p.embed, "attn": p.attn,
                                  "mlp": p.mlp, "readout": p.readout}
    return numbers
