"""What each view lets a reader take away: its numbers as JSON and the Python that gives them.

Pure builders (no Streamlit): the app hands ``st.download_button`` a callable that looks the
run up in the cache when clicked, so no widget keeps a capture alive.
"""

from __future__ import annotations

import json

import numpy as np

from backend.capture import Capture
from backend.heads import SCORE_NAMES, HeadScores
from backend.lens import LensSummary
from backend.neurons import top_neurons
from backend.patching import PatchingSweep
from backend.whatif import EditEffect

TOP_NEURONS = 20

VIEWS = ("attention", "lens", "neurons", "whatif", "patching")


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


def lens_numbers(cap: Capture, summary: LensSummary) -> dict:
    """Top guesses, entropy and KL at every layer (0: the embeddings) and position."""
    return {"tokens": cap.tokens, "top_tokens": summary.top_tokens, "top_probs": summary.top_probs,
            "entropy_nats": summary.entropy, "kl_to_final_nats": summary.kl_to_final,
            "final_guess_probs": summary.target_probs, "final_guess_ranks": summary.target_ranks}


def neuron_numbers(cap: Capture) -> dict:
    """The most active neurons of every layer with their activation on every token."""
    layers = []
    for layer in range(cap.n_layers):
        acts = cap.neurons[layer]
        ids = top_neurons(acts[1:] if cap.n_tokens > 1 else acts, TOP_NEURONS)
        layers.append({"layer": layer, "neurons": ids, "activations": acts[:, ids].T})  # (neuron, position)
    return {"tokens": cap.tokens, "layers": layers}


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


def python_snippet(view: str, prompt: str, source: str | None, max_tokens: int, edits: tuple = ()) -> str:
    """The calls that give the view's numbers, for a notebook."""
    model = "" if source is None else repr(source)
    lines = ["from backend import load_model, capture, lens_summary",
             f"lm = load_model({model})" + ("  # the bundled demo model" if source is None else ""),
             f"cap = capture(lm, {prompt!r}, max_tokens={max_tokens})"]
    if view == "attention":
        lines += ["from backend.heads import head_scores",
                  "scores = head_scores(cap)  # .induction etc.: (layer, head)",
                  "cap.attention  # (layer, head, query, key); page head 4.2 is cap.attention[3, 1]"]
    elif view == "lens":
        lines += ["summary = lens_summary(lm, cap)  # .top_tokens, .top_probs: (layer + 1, position, 5)"]
    elif view == "neurons":
        lines += ["cap.neurons  # (layer, position, neuron)",
                  "from backend.neurons import neuron_effect",
                  "effect = neuron_effect(lm, cap, layer=3, neuron=0, position=-1)"]
    elif view == "whatif":
        lines += ["from backend.edits import HeadAblation, NeuronAblation, PromptSteering",
                  f"edits = {list(edits)!r}" if edits else "edits = [HeadAblation(3, 1)]  # page: head 4.2",
                  "from backend.whatif import edit_effect",
                  f"effect = edit_effect(lm, cap, tuple(edits), max_tokens={max_tokens})"]
    elif view == "patching":
        lines += ["from backend.patching import patching_sweep",
                  "clean, corrupt = 'The capital of France is', 'The capital of Italy is'",
                  "answer = int(capture(lm, clean).logits[-1].argmax())",
                  "foil = int(capture(lm, corrupt).logits[-1].argmax())",
                  "sweep = patching_sweep(lm, clean, corrupt, answer, foil)  # .resid .attn .mlp .heads"]
    return "\n".join(lines)
