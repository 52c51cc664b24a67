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

Two models with different numbers of layers, heads or widths are compared by their
outputs and lenses only (layer ``i`` of ``a`` against the layer of ``b`` at the same
relative depth); the per-layer parts are ``None`` and ``not_applicable`` says why.
Models whose tokenizers differ are refused with ``TokenizerMismatch``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from backend.capture import DEFAULT_MAX_TOKENS, Capture, capture, tokenize
from backend.edits import first, hidden_of, output_hook, resid_hook_adder
from backend.errors import Cancelled, UnsupportedModel, XrayError
from backend.hooks import HookAdder, registered
from backend.lens import CHUNK_VALUES, token_trajectory, top_guesses
from backend.loading import LoadedModel
from backend.readout import readout, readout_tensor
from backend.tokens import token_strings

PART_WAYS_NATS = 0.5  # KL(a || b) from which two lens distributions count as parted
TOP_NEURONS = 10


class TokenizerMismatch(XrayError):
    """The two models do not split text into the same tokens, so their numbers cannot be lined up."""


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
class WeightChange:
    """Relative weight change ||W_b - W_a|| / ||W_a|| per block; NaN where a block has no such part."""

    attn: np.ndarray  # (n_layers,) float32: all parameters of the block's attention module
    mlp: np.ndarray  # (n_layers,) float32: all parameters of the block's MLP module
    embed: float  # the input embeddings
    unembed: float  # the LM head (the same matrix as the embeddings when they are tied)


@dataclass(frozen=True, eq=False)
class CrossPatch:
    """Share of a's answer margin over b's answer restored in b by each component of a."""

    answer_id: int  # a's answer
    foil_id: int  # b's answer
    a_diff: float  # logit(answer) - logit(foil) in model a
    b_diff: float  # the same in model b
    embed: float  # b with a's embeddings (the input of the first block)
    attn: np.ndarray  # (n_layers,) float32: b with a's attention output of that block, at every position
    mlp: np.ndarray  # (n_layers,) float32: b with a's MLP output of that block, at every position
    readout: float  # b's last residual read through a's final norm and unembedding


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


# --- tokenizers ----------------------------------------------------------------------------

class _PairMemo:
    """Results remembered per pair of live objects (tokenizers, models), dropped when either is gone."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.items: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, object]] = {}

    def get(self, a: object, b: object, compute: Callable[[], object]) -> object:
        key = (id(a), id(b))
        with self.lock:
            known = self.items.get(key)
        if known is not None and known[0]() is a and known[1]() is b:
            return known[2]
        value = compute()
        with self.lock:
            if len(self.items) >= self.size:
                self.items.clear()
            self.items[key] = (weakref.ref(a), weakref.ref(b), value)
        return value


_VOCABS = _PairMemo()
_WEIGHTS = _PairMemo()


def _vocab_difference(tok_a, tok_b) -> str:
    """'' when the two vocabularies map every token to the same id, else what differs (remembered per pair)."""
    if tok_a is tok_b:
        return ""
    return _VOCABS.get(tok_a, tok_b, lambda: _compare_vocabs(tok_a.get_vocab(), tok_b.get_vocab()))


def _compare_vocabs(vocab_a: dict[str, int], vocab_b: dict[str, int]) -> str:
    if len(vocab_a) != len(vocab_b):
        return f"model A's tokenizer has {len(vocab_a):,} tokens and model B's has {len(vocab_b):,}"
    for token, index in vocab_a.items():
        other = vocab_b.get(token)
        if other != index:
            return (f"the token {token!r} is number {index:,} in model A's tokenizer and "
                    + ("missing from model B's" if other is None else f"number {other:,} in model B's"))
    return ""


def check_tokenizers(lm_a: LoadedModel, lm_b: LoadedModel, ids_a: list[int] | None = None,
                     ids_b: list[int] | None = None) -> None:
    """Raise ``TokenizerMismatch`` unless both models read text as the same token ids."""
    advice = ("Compare two models that share a tokenizer, such as a base model and a model "
              "fine-tuned from it.")
    if lm_a.info.vocab_size != lm_b.info.vocab_size:
        raise TokenizerMismatch(
            f"The two models score different vocabularies: model A gives {lm_a.info.vocab_size:,} "
            f"token scores and model B {lm_b.info.vocab_size:,}. {advice}")
    difference = _vocab_difference(lm_a.tokenizer, lm_b.tokenizer)
    if difference:
        raise TokenizerMismatch(f"The two models use different tokenizers: {difference}. {advice}")
    if ids_a is not None and ids_b is not None and ids_a != ids_b:
        raise TokenizerMismatch(
            f"The two tokenizers split this prompt differently ({len(ids_a)} tokens in model A, "
            f"{len(ids_b)} in model B), for example in how they start a text. {advice}")


# --- weights -------------------------------------------------------------------------------

def _part_of(block: nn.Module, inner: nn.Module | None) -> nn.Module | None:
    """The block's direct child that contains ``inner`` (its attention or MLP module)."""
    if inner is None:
        return None
    for child in block.children():
        if any(m is inner for m in child.modules()):
            return child
    return None


def _parts(lm: LoadedModel) -> list[tuple[nn.Module | None, nn.Module | None]]:
    """Per block: (attention part, MLP part), each a direct child of the block, or None."""
    anatomy = lm.anatomy
    parts = []
    for i, block in enumerate(anatomy.layers):
        attn = _part_of(block, anatomy.attention[i] if anatomy.attention else None)
        mlp = _part_of(block, anatomy.mlp_out[i])
        if mlp is not None and attn is not None and mlp is attn:
            mlp = None  # a block whose MLP lives inside its attention module: no clean split
        parts.append((attn, mlp))
    return parts


def _relative(module_a: nn.Module | None, module_b: nn.Module | None) -> float:
    """sqrt(sum ||W_b - W_a||^2) / sqrt(sum ||W_a||^2) over matching parameters; NaN if they do not match."""
    if module_a is None or module_b is None:
        return float("nan")
    params_b = dict(module_b.named_parameters())
    diff, base = 0.0, 0.0
    for name, pa in module_a.named_parameters():
        pb = params_b.get(name)
        if pb is None or pb.shape != pa.shape:
            return float("nan")
        with torch.no_grad():
            wa = pa.detach().float()
            wb = pb.detach().to(pa.device).float()
            diff += float(torch.linalg.vector_norm(wb - wa)) ** 2
            base += float(torch.linalg.vector_norm(wa)) ** 2
    return float(np.sqrt(diff) / np.sqrt(base)) if base > 0 else float("nan")


def weight_change(lm_a: LoadedModel, lm_b: LoadedModel) -> WeightChange | None:
    """Every block's relative attention and MLP weight change; ``None`` for different shapes.

    Prompt-independent, so it is remembered per pair of loaded models.
    """
    if lm_a.info.n_layers != lm_b.info.n_layers or lm_a.info.d_model != lm_b.info.d_model:
        return None
    return _WEIGHTS.get(lm_a.model, lm_b.model, lambda: _weight_change(lm_a, lm_b))


def _weight_change(lm_a: LoadedModel, lm_b: LoadedModel) -> WeightChange:
    parts_a, parts_b = _parts(lm_a), _parts(lm_b)
    attn = np.array([_relative(pa[0], pb[0]) for pa, pb in zip(parts_a, parts_b, strict=True)], np.float32)
    mlp = np.array([_relative(pa[1], pb[1]) for pa, pb in zip(parts_a, parts_b, strict=True)], np.float32)
    return WeightChange(
        attn=attn, mlp=mlp,
        embed=_relative(lm_a.model.get_input_embeddings(), lm_b.model.get_input_embeddings()),
        unembed=_relative(lm_a.anatomy.unembed, lm_b.anatomy.unembed))


# --- cross-model patching ------------------------------------------------------------------

Component = tuple[str, int]  # ("embed", 0), ("attn", layer), ("mlp", layer), ("readout", 0)


class _Stop(Exception):
    """Raised after the last block: the rest of the model is not needed."""


@dataclass(frozen=True)
class _Outputs:
    """What cross-model patching takes from model a: each component's output, (n, width) tensors."""

    embed: torch.Tensor  # the input of the first block
    attn: list[torch.Tensor | None]  # per block: the attention output projection's output
    mlp: list[torch.Tensor]  # per block: the MLP output projection's output


def _output_hooks(lm: LoadedModel) -> tuple[list[HookAdder], Callable[[], _Outputs]]:
    """Hooks that keep the components' outputs during a forward, and what gives them back afterwards."""
    anatomy, n_layers = lm.anatomy, lm.info.n_layers
    attn: list[torch.Tensor | None] = [None] * n_layers
    mlp: list[torch.Tensor | None] = [None] * n_layers
    embed: list[torch.Tensor | None] = [None]

    def keep(store: list, i: int):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            store[i] = first(output).detach().reshape(-1, first(output).shape[-1]).clone()
        return hook

    def keep_embed(module: nn.Module, args: tuple, kwargs: dict) -> None:
        embed[0] = hidden_of(args, kwargs).detach()[0].clone()

    adders: list[HookAdder] = [partial(anatomy.layers[0].register_forward_pre_hook, keep_embed, with_kwargs=True)]
    for i in range(n_layers):
        adders.append(partial(anatomy.mlp_out[i].register_forward_hook, keep(mlp, i)))
        if anatomy.attn_out[i] is not None:
            adders.append(partial(anatomy.attn_out[i].register_forward_hook, keep(attn, i)))

    def finish() -> _Outputs:
        if embed[0] is None or any(m is None for m in mlp):
            raise UnsupportedModel("The model skipped some of its blocks, so their outputs cannot be patched.")
        return _Outputs(embed=embed[0], attn=attn, mlp=mlp)

    return adders, finish


def _outputs(lm: LoadedModel, ids: list[int]) -> _Outputs:
    """The components' outputs in one forward of ``lm``, stopped after the last block (the caller holds the lock)."""
    adders, finish = _output_hooks(lm)

    def stop(module: nn.Module, args: tuple, output: object) -> None:
        raise _Stop

    try:
        with registered([*adders, partial(lm.anatomy.layers[-1].register_forward_hook, stop)]):
            lm.model(input_ids=torch.tensor([ids], device=lm.input_device), use_cache=False)
    except _Stop:
        pass
    return finish()


def _rows_where(mask: torch.Tensor, value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replace the batch rows where ``mask`` (rows,) is set by ``value`` (n, width)."""
    def transform(x: torch.Tensor) -> torch.Tensor:
        rows = mask.shape[0]
        shaped = x.reshape(rows, -1, x.shape[-1])
        where = mask.to(x.device)[:, None, None]
        return torch.where(where, value.to(x.device, x.dtype)[None], shaped).reshape(x.shape)
    return transform


def _patched_last(lm_b: LoadedModel, ids: list[int], rows: list[frozenset[Component]],
                  source: object) -> torch.Tensor:
    """B's last residual (rows, d_model) with each row's components taken from ``source`` (a ``_Saved`` of a)."""
    anatomy, n_layers = lm_b.anatomy, lm_b.info.n_layers
    adders: list[HookAdder] = []

    def mask(component: Component) -> torch.Tensor:
        return torch.tensor([component in row for row in rows])

    if any(("embed", 0) in row for row in rows):
        adders.append(resid_hook_adder(lm_b, 0, _rows_where(mask(("embed", 0)), source.embed)))
    for layer in range(n_layers):
        if any(("attn", layer) in row for row in rows):
            module = anatomy.attn_out[layer]
            if module is None or source.attn[layer] is None:
                raise UnsupportedModel(f"Block {layer} has no attention output projection to patch.")
            adders.append(partial(module.register_forward_hook,
                                  output_hook(_rows_where(mask(("attn", layer)), source.attn[layer]))))
        if any(("mlp", layer) in row for row in rows):
            adders.append(partial(anatomy.mlp_out[layer].register_forward_hook,
                                  output_hook(_rows_where(mask(("mlp", layer)), source.mlp[layer]))))
    last: list[torch.Tensor] = []

    def stop(module: nn.Module, args: tuple, output: object) -> None:
        last.append(first(output)[:, -1])
        raise _Stop

    adders.append(partial(anatomy.layers[-1].register_forward_hook, stop))
    input_ids = torch.tensor([ids] * len(rows), device=lm_b.input_device)
    try:
        with registered(adders):
            lm_b.model(input_ids=input_ids, use_cache=False)
    except _Stop:
        pass
    if not last:
        raise UnsupportedModel("The patched forward never reached the last block.")
    return last[0]


def cross_patch_logits(lm_a: LoadedModel, lm_b: LoadedModel, prompt: str,
                       components: list[Component] | tuple[Component, ...], *,
                       max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
    """B's logits (vocab,) at the last position with ``components`` of a put in, all at once.

    With every component (``all_components(lm_b)``) this is a's own logits.
    """
    ids = tokenize(lm_a, prompt, max_tokens)
    check_tokenizers(lm_a, lm_b, ids, tokenize(lm_b, prompt, max_tokens))
    with lm_a.lock, torch.inference_mode():
        source = _outputs(lm_a, ids)
    row = frozenset(components)
    with lm_b.lock, torch.inference_mode():
        last = _patched_last(lm_b, ids, [row], source)
        head = lm_a if ("readout", 0) in row else lm_b
        return readout_tensor(head, last).float().cpu().numpy()[0]


def all_components(lm: LoadedModel) -> tuple[Component, ...]:
    """Every component ``cross_patch_logits`` can take from the other model."""
    layers = range(lm.info.n_layers)
    return (("embed", 0), *(("attn", i) for i in layers), *(("mlp", i) for i in layers), ("readout", 0))


def _cross_patch(lm_a: LoadedModel, lm_b: LoadedModel, ids: list[int], answer: int, foil: int,
                 a_diff: float, b_diff: float, b_last: np.ndarray, source: _Outputs | None = None) -> CrossPatch:
    """One component at a time: a's embeddings, attention and MLP outputs in b (one batch), then a's readout.

    ``b_last`` (1, d_model) is b's own last residual at the last position, which a's readout reads;
    ``source``, a's outputs if its capture kept them already.
    """
    n_layers = lm_b.info.n_layers
    if source is None:
        with lm_a.lock, torch.inference_mode():
            source = _outputs(lm_a, ids)
    singles: list[frozenset[Component]] = [frozenset({("embed", 0)})]
    has_attn = [lm_b.anatomy.attn_out[i] is not None and source.attn[i] is not None for i in range(n_layers)]
    singles += [frozenset({("attn", i)}) for i in range(n_layers) if has_attn[i]]
    singles += [frozenset({("mlp", i)}) for i in range(n_layers)]
    per_batch = max(1, 4096 // len(ids))
    diffs: list[float] = []
    with lm_b.lock, torch.inference_mode():
        for start in range(0, len(singles), per_batch):
            last = _patched_last(lm_b, ids, singles[start:start + per_batch], source)
            logits = readout_tensor(lm_b, last)
            diffs += (logits[:, answer] - logits[:, foil]).float().cpu().tolist()
    margin = a_diff - b_diff
    scale = margin if abs(margin) > 1e-6 else float("nan")
    shares = [(d - b_diff) / scale for d in diffs]
    attn = np.full(n_layers, np.nan, np.float32)
    attn[np.flatnonzero(has_attn)] = shares[1:1 + sum(has_attn)]
    mlp = np.asarray(shares[1 + sum(has_attn):], np.float32)
    with torch.inference_mode():
        read = readout_tensor(lm_a, torch.from_numpy(np.ascontiguousarray(b_last))).float().cpu()[0]
    readout_share = (float(read[answer] - read[foil]) - b_diff) / scale
    return CrossPatch(answer_id=answer, foil_id=foil, a_diff=a_diff, b_diff=b_diff, embed=float(shares[0]),
                      attn=attn, mlp=mlp, readout=float(readout_share))


# --- lens ----------------------------------------------------------------------------------

def _layer_map(n_a: int, n_b: int) -> np.ndarray:
    """For each resid index of a (0..n_a), the resid index of b at the same relative depth."""
    if n_a == n_b:
        return np.arange(n_a + 1, dtype=np.int64)
    return np.rint(np.arange(n_a + 1) * n_b / max(1, n_a)).astype(np.int64)


def _lens_logits(lm: LoadedModel, cap: Capture, layer: int, rows: slice) -> torch.Tensor:
    if layer == cap.n_layers:
        return torch.from_numpy(np.array(cap.logits[rows], dtype=np.float32))
    return readout(lm, cap.resid[layer, rows]).float().cpu()


def lens_kl(lm_a: LoadedModel, cap_a: Capture, lm_b: LoadedModel, cap_b: Capture, track_ids: tuple[int, ...] = (),
            should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """KL(a || b) (n_layers_a + 1, n) of the two lenses, the layer map used, and the tracked tokens.

    While the logits are at hand, the third value holds ``track_ids``' log-probability and
    rank at the last position under both lenses: {(token_id, "a" or "b"): (logprobs, ranks)},
    per layer of a.
    """
    layer_map = _layer_map(cap_a.n_layers, cap_b.n_layers)
    n, vocab = cap_a.n_tokens, cap_a.logits.shape[1]
    layers = cap_a.n_layers + 1
    kl = np.zeros((layers, n), np.float32)
    picked = torch.zeros(layers, 2, len(track_ids))  # (layer, model a/b, token): log-probabilities
    ranks = torch.zeros(layers, 2, len(track_ids), dtype=torch.long)
    ids = torch.tensor(track_ids, dtype=torch.long)
    size = max(1, min(n, CHUNK_VALUES // vocab))
    with torch.inference_mode():
        for layer in range(layers):
            if should_stop is not None and should_stop():
                raise Cancelled()
            for start in range(0, n, size):
                rows = slice(start, min(n, start + size))
                log_a = _lens_logits(lm_a, cap_a, layer, rows).log_softmax(-1)
                log_b = _lens_logits(lm_b, cap_b, int(layer_map[layer]), rows).log_softmax(-1)
                kl[layer, rows] = (log_a.exp() * (log_a - log_b)).sum(-1).clamp_min(0).numpy()
                if track_ids and rows.stop == n:
                    last = torch.stack([log_a[-1], log_b[-1]])  # (2, vocab)
                    picked[layer] = last[:, ids]
                    ranks[layer] = (last[:, None, :] > picked[layer][:, :, None]).sum(-1) + 1
    picked_np, ranks_np = picked.numpy(), ranks.numpy()
    tracks = {(token_id, model): (picked_np[:, m, k].copy(), ranks_np[:, m, k].copy())
              for k, token_id in enumerate(track_ids) for m, model in enumerate("ab")}
    return kl, layer_map, tracks


def part_ways(kl: np.ndarray, threshold: float = PART_WAYS_NATS) -> np.ndarray:
    """(n,) first layer whose KL reaches ``threshold`` at each position, -1 where none does."""
    over = kl >= threshold
    return np.where(over.any(0), over.argmax(0), -1).astype(np.int64)


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
    shape_a = (a.n_layers, a.n_heads, a.d_model, a.d_mlp)
    shape_b = (b.n_layers, b.n_heads, b.d_model, b.d_mlp)
    if shape_a == shape_b:
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
        observe, finish = _output_hooks(lm_a)
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
            a_diff = float(cap_a.logits[last, answer_a] - cap_a.logits[last, answer_b])
            b_diff = float(cap_b.logits[last, answer_a] - cap_b.logits[last, answer_b])
            patch = _cross_patch(lm_a, lm_b, ids_a, answer_a, answer_b, a_diff, b_diff, cap_b.resid[-1, [last]],
                                 source)
    names = token_strings(lm_a.tokenizer, [answer_a, answer_b])
    return ModelDiff(a=cap_a, b=cap_b, kl=kl, layer_map=layer_map, part_ways=part_ways(kl),
                     answer_a_id=answer_a, answer_b_id=answer_b, answer_a=names[0], answer_b=names[1],
                     tracks=tuple(tracks), guesses_a=_guesses(lm_a, cap_a), guesses_b=_guesses(lm_b, cap_b),
                     head_change=heads, neurons=neurons, weights=weights,
                     patch=patch, not_applicable=why)


def _guesses(lm: LoadedModel, cap: Capture) -> tuple[tuple[int, str, float], ...]:
    ids, tokens, probs = top_guesses(lm, cap.logits[-1], 5)
    return tuple((int(i), t, float(p)) for i, t, p in zip(ids, tokens, probs, strict=True))


__all__ = ["PART_WAYS_NATS", "AnswerTrack", "CrossPatch", "ModelDiff", "NeuronChange", "TokenizerMismatch",
           "WeightChange", "all_components", "check_tokenizers", "compare", "cross_patch_logits", "head_change",
           "lens_kl", "neuron_changes", "part_ways", "weight_change"]
