"""Two models, one prompt: where they part ways, and where the difference that matters lives.

``compare(lm_a, lm_b, prompt)`` reads the prompt through both models (typically a base
model ``a`` and its fine-tuned twin ``b``) and returns a ``ModelDiff``:

- ``kl`` (n_layers_a + 1, n): KL(a || b) between the two models' own logit-lens
  distributions at every layer and position. Each model reads its residual stream through
  its own final norm and unembedding, so the last row compares the two outputs.
- ``part_ways`` (n,): the first layer whose KL reaches ``PART_WAYS_NATS`` at each
  position, or -1 where the two never differ that much. Half a nat is where a reader
  sees the difference: it is, for example, a top guess held at 50% by one model and
  at 20% by the other, or a 30-point swing between two top guesses.
- each model's answer at the last position, and the probability and rank of both answers
  under both models' lenses at every layer (``track``);
- ``head_change`` (n_layers, n_heads): how far each head's attention moved, as the mean
  over query positions of the total-variation distance between the two patterns (0: the
  same, 1: disjoint);
- ``neurons``: the MLP neurons whose activation changed most on this prompt;
- ``weights`` (``weight_change``): the relative change of every block's attention and MLP
  weights, ||W_b - W_a|| / ||W_a||, which does not depend on the prompt and is computed
  once per pair;
- ``patch`` (``CrossPatch``): cross-model patching. Model ``b`` runs the prompt with one
  component's output replaced by model ``a``'s (the embeddings, one block's attention
  output, one block's MLP output, or the readout: final norm and unembedding). Each value
  is the share of the margin restored, the patching sweep's metric with ``a`` as the clean
  run and ``b`` as the corrupt one: with ``m = logit(a's answer) - logit(b's answer)``,
  ``(m_patched - m_b) / (m_a - m_b)``. Patching every component at once gives ``a``'s
  logits exactly in families whose blocks add their attention and MLP outputs straight
  into the residual stream (GPT-2, Llama, Qwen, Pythia, Phi, ...).

The parts live beside this module: ``backend.pairs`` (tokenizer checks), ``backend.divergence``
(lens KL), ``backend.weights`` (weight change), ``backend.crosspatch`` (cross-model
patching) and ``backend.circuit_diff`` (``circuit_diff``: the two models' attribution graphs
with one dictionary, matched, and the parts of B that push A's answer down); this module
puts them together and re-exports their names.

Two models with different numbers of layers, heads or widths are compared by their
outputs and lenses only (layer ``i`` of ``a`` against the layer of ``b`` at the same
relative depth); the per-layer parts are ``None`` and ``not_applicable`` says why.
Models whose tokenizers differ are refused with ``TokenizerMismatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.capture import DEFAULT_MAX_TOKENS, Capture, capture, tokenize
from backend.circuit_diff import CircuitDiff, Suppressor, circuit_diff
from backend.crosspatch import CrossPatch, all_components, cross_patch, cross_patch_logits, source_reads
from backend.divergence import PART_WAYS_NATS, lens_kl, part_ways
from backend.errors import Cancelled
from backend.lens import token_trajectory, top_guesses
from backend.loading import LoadedModel
from backend.pairs import TokenizerMismatch, check_tokenizers, same_shape, vocab_difference
from backend.tokens import token_strings
from backend.weights import WeightChange, weight_change

TOP_NEURONS = 10
_vocab_difference = vocab_difference  # the name the tests knew


@dataclass(frozen=True, eq=False)
class AnswerTrack:
    """One answer token under one model's lens, at every layer of that model (last position)."""

    token_id: int
    token: str
    model: str  # "a" or "b"
    probs: np.ndarray  # (n_layers + 1,) float32
    ranks: np.ndarray  # (n_layers + 1,) int64, 1 = top guess


@dataclass(frozen=True)
class NeuronChange:
    """One MLP neuron whose activation moved most between the two models on this prompt."""

    layer: int  # counts from 0
    neuron: int
    position: int  # where the change is largest
    token: str
    a: float  # activation in model a there
    b: float  # activation in model b there

    @property
    def change(self) -> float:
        """``b - a`` at ``position``."""
        return self.b - self.a


@dataclass(frozen=True, eq=False)
class ModelDiff:
    """What ``compare`` found; ``a`` and ``b`` are the two captures of the same prompt."""

    a: Capture
    b: Capture
    kl: np.ndarray  # (n_layers_a + 1, n) float32, nats
    layer_map: np.ndarray  # (n_layers_a + 1,) int64: the layer of b compared with each layer of a
    part_ways: np.ndarray  # (n,) int64: first layer of a with kl >= PART_WAYS_NATS, -1 if none
    answer_a_id: int
    answer_b_id: int
    answer_a: str
    answer_b: str
    tracks: tuple[AnswerTrack, ...]  # both answers under both models
    guesses_a: tuple[tuple[int, str, float], ...]  # a's top 5 next tokens: (id, token, probability)
    guesses_b: tuple[tuple[int, str, float], ...]  # b's
    head_change: np.ndarray | None  # (n_layers, n_heads) float32
    neurons: tuple[NeuronChange, ...]
    weights: WeightChange | None
    patch: CrossPatch | None
    not_applicable: str  # why per-layer parts are missing; "" when every part is there

    def track(self, answer: str, model: str) -> AnswerTrack:
        """``answer`` ("a": a's answer, "b": b's answer) under ``model``'s lens."""
        token_id = self.answer_a_id if answer == "a" else self.answer_b_id
        return next(t for t in self.tracks if t.token_id == token_id and t.model == model)

    @property
    def same_answer(self) -> bool:
        """Whether both models give the same top guess for the next token."""
        return self.answer_a_id == self.answer_b_id

    @property
    def nbytes(self) -> int:
        """Memory held, the two captures included."""
        small = self.kl.nbytes + sum(t.probs.nbytes + t.ranks.nbytes for t in self.tracks)
        return self.a.nbytes + self.b.nbytes + small + 8 * 1024


# --- per-layer comparisons -----------------------------------------------------------------

def head_change(cap_a: Capture, cap_b: Capture) -> np.ndarray:
    """(n_layers, n_heads): mean over query positions of the total-variation distance of the patterns.

    A layer at a time, so the temporary is one layer's patterns, not the whole capture's.
    """
    out = np.zeros(cap_a.attention.shape[:2], np.float32)
    for layer in range(cap_a.n_layers):
        out[layer] = (0.5 * np.abs(cap_a.attention[layer] - cap_b.attention[layer]).sum(-1)).mean(-1)
    return out


def neuron_changes(cap_a: Capture, cap_b: Capture, k: int = TOP_NEURONS) -> tuple[NeuronChange, ...]:
    """The ``k`` neurons whose activation moved most at any position, largest first (a layer at a time)."""
    peak = np.stack([np.abs(cap_b.neurons[layer] - cap_a.neurons[layer]).max(0)
                     for layer in range(cap_a.n_layers)])  # (L, d_mlp)
    k = min(k, peak.size)
    flat = np.argpartition(-peak.reshape(-1), k - 1)[:k]
    flat = flat[np.argsort(-peak.reshape(-1)[flat], kind="stable")]
    out = []
    for index in flat.tolist():
        layer, neuron = divmod(index, peak.shape[1])
        position = int(np.abs(cap_b.neurons[layer, :, neuron] - cap_a.neurons[layer, :, neuron]).argmax())
        out.append(NeuronChange(layer=layer, neuron=neuron, position=position, token=cap_a.tokens[position],
                                a=float(cap_a.neurons[layer, position, neuron]),
                                b=float(cap_b.neurons[layer, position, neuron])))
    return tuple(out)


def _not_applicable(lm_a: LoadedModel, lm_b: LoadedModel) -> str:
    a, b = lm_a.info, lm_b.info
    if same_shape(lm_a, lm_b):
        return ""
    return (f"The two models are built differently (model A: {a.n_layers} layers, {a.n_heads} heads, "
            f"width {a.d_model}, {a.d_mlp} neurons per MLP; model B: {b.n_layers} layers, {b.n_heads} heads, "
            f"width {b.d_model}, {b.d_mlp} neurons), so there is no layer-by-layer match: heads, neurons, "
            "weights and patching are not compared. The lens compares each layer of model A with the layer "
            "of model B at the same relative depth.")


def compare(lm_a: LoadedModel, lm_b: LoadedModel, prompt: str, *, max_tokens: int = DEFAULT_MAX_TOKENS,
            cap_a: Capture | None = None, should_stop: Callable[[], bool] | None = None) -> ModelDiff:
    """Read ``prompt`` through both models and measure how they differ (see the module's text).

    A capture of this prompt through ``lm_a`` already made (without edits) can be passed as
    ``cap_a``: the page passes its own. Raises ``TokenizerMismatch`` before any work
    when the models do not share a tokenizer, and what ``capture`` raises.
    """
    ids_a = tokenize(lm_a, prompt, max_tokens)
    ids_b = tokenize(lm_b, prompt, max_tokens)
    check_tokenizers(lm_a, lm_b, ids_a, ids_b)
    if cap_a is not None and (cap_a.prompt != prompt or cap_a.edits):
        raise ValueError("compare: a capture passed in must be of the same prompt, without edits.")
    source = None
    if cap_a is None:  # a's capture keeps what cross-model patching puts back, in the same pass
        observe, finish = source_reads(lm_a)
        cap_a = capture(lm_a, prompt, max_tokens=max_tokens, should_stop=should_stop, observe=observe)
        source = finish()
    cap_b = capture(lm_b, prompt, max_tokens=max_tokens, should_stop=should_stop)
    last = cap_a.n_tokens - 1
    answer_a, answer_b = int(cap_a.logits[last].argmax()), int(cap_b.logits[last].argmax())
    answers = tuple(dict.fromkeys((answer_a, answer_b)))
    kl, layer_map, fused = lens_kl(lm_a, cap_a, lm_b, cap_b, answers, should_stop)
    same_depth = cap_a.n_layers == cap_b.n_layers
    tracks = []
    for token_id, token in zip(answers, token_strings(lm_a.tokenizer, list(answers)), strict=True):
        for model, lm, cap in (("a", lm_a, cap_a), ("b", lm_b, cap_b)):
            if model == "a" or same_depth:
                logprobs, ranks = fused[(token_id, model)]
                probs = np.exp(logprobs).astype(np.float32)
            else:  # b's own layers, not the ones matched to a's
                trajectory = token_trajectory(lm, cap, token_id, [last])
                probs, ranks = trajectory.probs[:, 0], trajectory.ranks[:, 0]
            tracks.append(AnswerTrack(token_id=token_id, token=token, model=model, probs=probs, ranks=ranks))
    why = _not_applicable(lm_a, lm_b)
    heads, neurons, weights, patch = None, (), None, None
    if not why:
        heads = head_change(cap_a, cap_b)
        neurons = neuron_changes(cap_a, cap_b)
        weights = weight_change(lm_a, lm_b)
        if should_stop is not None and should_stop():
            raise Cancelled()
        if answer_a != answer_b:
            patch = cross_patch(lm_a, lm_b, ids_a, answer_a, answer_b, cap_a.logits[last], cap_b.logits[last],
                                cap_b.resid[-1, [last]], source)
    names = token_strings(lm_a.tokenizer, [answer_a, answer_b])
    return ModelDiff(a=cap_a, b=cap_b, kl=kl, layer_map=layer_map, part_ways=part_ways(kl),
                     answer_a_id=answer_a, answer_b_id=answer_b, answer_a=names[0], answer_b=names[1],
                     tracks=tuple(tracks), guesses_a=_guesses(lm_a, cap_a), guesses_b=_guesses(lm_b, cap_b),
                     head_change=heads, neurons=neurons, weights=weights,
                     patch=patch, not_applicable=why)


def _guesses(lm: LoadedModel, cap: Capture) -> tuple[tuple[int, str, float], ...]:
    ids, tokens, probs = top_guesses(lm, cap.logits[-1], 5)
    return tuple((int(i), t, float(p)) for i, t, p in zip(ids, tokens, probs, strict=True))


__all__ = ["PART_WAYS_NATS", "AnswerTrack", "CircuitDiff", "CrossPatch", "ModelDiff", "NeuronChange",
           "Suppressor", "TokenizerMismatch", "WeightChange", "all_components", "check_tokenizers", "circuit_diff",
           "compare", "cross_patch_logits", "head_change", "lens_kl", "neuron_changes", "part_ways", "weight_change"]
