"""Two models side by side: whether they read text alike, and results remembered per pair of models."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from backend.errors import XrayError
from backend.loading import LoadedModel


class TokenizerMismatch(XrayError):
    """The two models do not split text into the same tokens, so their numbers cannot be lined up."""


class ShapeMismatch(XrayError):
    """Two models of different shapes where a method needs to match their parts one to one."""


def check_same_shape(lm_a: LoadedModel, lm_b: LoadedModel, what: str) -> None:
    """Raise ``ShapeMismatch`` unless the two models have the same layers, heads and widths; ``what`` says why."""
    if not same_shape(lm_a, lm_b):
        a, b = lm_a.info, lm_b.info
        raise ShapeMismatch(f"{what} needs two models of the same shape; A has {a.n_layers} layers of width "
                            f"{a.d_model}, B {b.n_layers} of width {b.d_model}.")


class PairMemo:
    """Results remembered per pair of live objects (tokenizers, models), dropped when either is gone."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.items: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, object]] = {}

    def get(self, a: object, b: object, compute: Callable[[], object]) -> object:
        """The value for (a, b), computed once while both live."""
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


_VOCABS = PairMemo()


def vocab_difference(tok_a, tok_b) -> str:
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
    difference = vocab_difference(lm_a.tokenizer, lm_b.tokenizer)
    if difference:
        raise TokenizerMismatch(f"The two models use different tokenizers: {difference}. {advice}")
    if ids_a is not None and ids_b is not None and ids_a != ids_b:
        raise TokenizerMismatch(
            f"The two tokenizers split this prompt differently ({len(ids_a)} tokens in model A, "
            f"{len(ids_b)} in model B), for example in how they start a text. {advice}")


def same_shape(lm_a: LoadedModel, lm_b: LoadedModel) -> bool:
    """Whether the two models have the same layers, heads and widths (so their parts can be matched one to one)."""
    a, b = lm_a.info, lm_b.info
    return (a.n_layers, a.n_heads, a.d_model, a.d_mlp) == (b.n_layers, b.n_heads, b.d_model, b.d_mlp)
