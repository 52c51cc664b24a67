"""What did a fine-tune change? A scan on neutral text, without a prompt about it.

``scan(lm_a, lm_b)`` is the activation-difference lens of Minder et al. (2025, "Narrow
finetuning leaves clearly readable traces in activation differences"): the mean difference of
the two models' residual streams over the first ``positions`` positions of ordinary text, at
every layer, read through A's own final norm (its gain, and its centring for a LayerNorm) and
unembedding. Tokens with the largest positive scores are what the fine-tune pushes toward;
the most negative, what it pushes away from. ``texts=None`` reads ``NEUTRAL_TEXT``, which the
project ships: corpus text that names no capital city (``python -m training.neutral``).

``steering_check`` asks whether adding the difference to A makes A behave like B on a prompt,
and ``suggest`` picks, from candidate prompts, the one whose answer in A the scan says the
fine-tune pushes away from: where to look next. A scan suggests; the prompt views check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend import hooks
from backend.capture import DEFAULT_MAX_TOKENS, capture
from backend.edits import Steering
from backend.errors import XrayError
from backend.loading import LoadedModel
from backend.pairs import check_same_shape, check_tokenizers
from backend.replacement import norm_parts
from backend.sites import Site
from backend.tokens import token_strings

NEUTRAL_TEXT = Path(__file__).resolve().parent.parent / "models" / "neutral.txt"
TOP = 12
FOUND = 1e-4  # a largest |score| below this (relative to the unembedding's scale) is no difference at all


class ScanError(XrayError):
    """Texts a scan cannot read (none long enough)."""


@dataclass(frozen=True)
class ScanToken:
    """One token the difference points toward (score > 0) or away from (score < 0)."""

    token: str
    token_id: int
    score: float


@dataclass(frozen=True)
class ScanLayer:
    """The difference at one resid index, read as tokens."""

    layer: int  # resid index: 1 leaves the first block
    norm: float  # ||mean difference||
    promoted: tuple[ScanToken, ...]
    suppressed: tuple[ScanToken, ...]


@dataclass(frozen=True, eq=False)
class Scan:
    """The scan of a pair: per layer, what the mean residual difference (B - A) promotes and suppresses."""

    layers: tuple[ScanLayer, ...]
    differences: np.ndarray  # (n_layers + 1, d_model): mean resid_b - resid_a; [0] the embeddings
    scores: np.ndarray  # (n_layers, vocab) float32: every token's score at resid indices 1 .. n_layers
    texts: int
    positions: int

    @property
    def found(self) -> bool:
        """Whether the two models differ on the text at all (a model against itself: no)."""
        return any(abs(t.score) > FOUND for layer in self.layers for t in (*layer.promoted, *layer.suppressed))

    def best_layer(self) -> ScanLayer:
        """The layer whose difference is read most clearly: the largest top score, the last layer left out."""
        inner = self.layers[:-1] or self.layers
        return max(inner, key=lambda layer: max((abs(t.score) for t in (*layer.promoted, *layer.suppressed)),
                                                default=0.0))

    def standing(self, token_id: int) -> float:
        """How far the scan pushes one token, in standard deviations of all tokens' scores.

        Read at the inner layer where it is pushed furthest (negative: away from it).
        """
        inner = self.scores[:-1] if len(self.scores) > 1 else self.scores
        spread = inner.std(axis=1, keepdims=True)
        z = (inner - inner.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
        column = z[:, token_id]
        return float(column[np.argmax(np.abs(column))])

    def consistent(self, toward: bool = True, count: int = 6) -> tuple[ScanToken, ...]:
        """The tokens pushed toward (or away from) at the most inner layers: in most layers' top lists, then by z.

        A token's score here is its mean z-score over the inner layers (the last layer, which
        the unembedding reads directly, left out). Byte pieces that are no text on their own
        ("<0xFF>") are left out.
        """
        inner_layers = self.layers[:-1] or self.layers
        inner = self.scores[:len(inner_layers)]
        spread = inner.std(axis=1, keepdims=True)
        z = ((inner - inner.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)).mean(axis=0)
        seen: dict[int, tuple[int, str]] = {}
        for layer in inner_layers:
            for t in layer.promoted if toward else layer.suppressed:
                if not readable(t.token):
                    continue
                times, _ = seen.get(t.token_id, (0, t.token))
                seen[t.token_id] = (times + 1, t.token)
        sign = 1.0 if toward else -1.0
        ranked = sorted(seen, key=lambda i: (-seen[i][0], -sign * z[i]))[:count]
        return tuple(ScanToken(seen[i][1], i, float(z[i])) for i in ranked)

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return self.differences.nbytes + self.scores.nbytes + 2000 * len(self.layers)


def readable(token: str) -> bool:
    """Whether a token is text on its own (a byte piece such as "<0xFF>" or "\ufffd" is not)."""
    return "\ufffd" not in token and not re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token.strip())


def neutral_texts() -> list[str]:
    """The shipped neutral text, one document per line."""
    return [line for line in NEUTRAL_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mean_resid(lm: LoadedModel, rows: torch.Tensor, should_stop) -> torch.Tensor:
    """(n_layers + 1, d) mean residual over every row and position of ``rows`` (texts cut to the same length)."""
    n_layers = lm.info.n_layers
    total = torch.zeros(n_layers + 1, lm.info.d_model, dtype=torch.float64)
    with hooks.exclusive(lm):
        for start in range(0, len(rows), 256):
            store: dict[Site, torch.Tensor] = {}
            batch = rows[start:start + 256].to(lm.input_device)
            hooks.forward(lm, batch, [hooks.read(Site("resid", i), store) for i in range(n_layers + 1)],
                          stop_after=n_layers - 1, should_stop=should_stop)
            for i in range(n_layers + 1):
                total[i] += store[Site("resid", i)].double().sum((0, 1)).cpu()
    return total / rows.numel()


def _rows(lm: LoadedModel, texts: Sequence[str], positions: int) -> torch.Tensor:
    """The first ``positions`` tokens of each text long enough (the beginning-of-text token counts)."""
    ids = [lm.tokenizer(text)["input_ids"][:positions] for text in texts]
    kept = [row for row in ids if len(row) == positions]
    if not kept:
        raise ScanError(f"None of the {len(texts)} texts has {positions} tokens; a scan reads the first {positions} "
                        "positions of each text.")
    return torch.tensor(kept)


def read_difference(lm: LoadedModel, difference: torch.Tensor) -> torch.Tensor:
    """Every token's score (vocab,) for a residual direction read through ``lm``'s final norm gain and unembedding."""
    anatomy = lm.anatomy
    direction = difference.float()
    if anatomy.final_norm is not None:
        weight, _, centres = norm_parts(anatomy.final_norm, direction.shape[-1])
        direction = (direction - direction.mean()) if centres else direction
        direction = direction * weight.float()
    for step in anatomy.before_unembed:  # OPT's project_out: linear, no bias
        direction = step(direction[None].to(step.weight.dtype))[0].float()
    return (anatomy.unembed.weight.detach().float() @ direction.to(anatomy.unembed.weight.device)).cpu()


def scan(lm_a: LoadedModel, lm_b: LoadedModel, texts: Sequence[str] | None = None, positions: int = 5,
         should_stop: Callable[[], bool] | None = None, top: int = TOP) -> Scan:
    """The activation-difference lens of the pair on ``texts`` (default: the shipped neutral text).

    Needs two models of the same shape that read text alike (``TokenizerMismatch`` otherwise).
    """
    check_tokenizers(lm_a, lm_b)
    check_same_shape(lm_a, lm_b, "A scan (it subtracts one residual stream from the other, layer by layer)")
    texts = neutral_texts() if texts is None else list(texts)
    rows = _rows(lm_a, texts, positions)
    with torch.no_grad():
        difference = _mean_resid(lm_b, rows, should_stop) - _mean_resid(lm_a, rows, should_stop)
        layers, all_scores = [], []
        for layer in range(1, lm_a.info.n_layers + 1):
            scores = read_difference(lm_a, difference[layer])
            all_scores.append(scores.numpy())
            ids = torch.cat([scores.topk(top).indices, (-scores).topk(top).indices]).tolist()
            strings = token_strings(lm_a.tokenizer, ids)
            tokens = [ScanToken(t, i, float(scores[i])) for t, i in zip(strings, ids, strict=True)]
            layers.append(ScanLayer(layer=layer, norm=float(difference[layer].norm()), promoted=tuple(tokens[:top]),
                                    suppressed=tuple(tokens[top:])))
    return Scan(layers=tuple(layers), differences=difference.float().numpy(),
                scores=np.stack(all_scores).astype(np.float32), texts=len(rows), positions=positions)


@dataclass(frozen=True)
class SteeringCheck:
    """A's next-token guess on a prompt, without and with the scan's difference added, beside B's."""

    prompt: str
    layer: int
    strength: float
    a: tuple[str, float]  # (top guess, probability)
    a_steered: tuple[str, float]
    b: tuple[str, float]
    kl_before: float  # KL(B || A) at the last position
    kl_after: float  # KL(B || A steered)


STRENGTHS = (4.0, 8.0)
SEARCHED_LAYERS = 3  # the inner layers steering tries, those whose differences read most clearly


def _clearest(result: Scan, count: int) -> list[int]:
    """The ``count`` inner resid indices whose top scores are largest (all of them in a small model)."""
    inner = result.layers[:-1] or result.layers
    ranked = sorted(inner, key=lambda layer: -max((abs(t.score) for t in (*layer.promoted, *layer.suppressed)),
                                                   default=0.0))
    return sorted(layer.layer for layer in ranked[:count])


def steering_check(lm_a: LoadedModel, lm_b: LoadedModel, result: Scan, prompt: str, layer: int | None = None,
                   strength: float | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> SteeringCheck:
    """Add the scan's difference to A at every position: does A move toward B on ``prompt``.

    ``layer`` and ``strength`` default to the inner layer and the strength (of ``STRENGTHS``)
    that bring A closest to B there.
    """
    if layer is None or strength is None:
        layers = [layer] if layer is not None else _clearest(result, SEARCHED_LAYERS)
        options = [steering_check(lm_a, lm_b, result, prompt, each, power, max_tokens)
                   for each in layers for power in ([strength] if strength is not None else STRENGTHS)]
        return min(options, key=lambda check: check.kl_after)
    steer = Steering(layer, result.differences[layer], strength)
    logs = [torch.from_numpy(capture(lm, prompt, max_tokens=max_tokens, edits=edits).logits[-1]).log_softmax(-1)
            for lm, edits in ((lm_a, ()), (lm_a, (steer,)), (lm_b, ()))]

    def top(logp: torch.Tensor) -> tuple[str, float]:
        index = int(logp.argmax())
        return token_strings(lm_a.tokenizer, [index])[0], float(logp[index].exp())

    def kl(p: torch.Tensor, q: torch.Tensor) -> float:
        return float((p.exp() * (p - q)).sum())

    return SteeringCheck(prompt=prompt, layer=layer, strength=strength, a=top(logs[0]), a_steered=top(logs[1]),
                         b=top(logs[2]), kl_before=kl(logs[2], logs[0]), kl_after=kl(logs[2], logs[1]))


SUGGEST_TOP = 20  # A's likeliest next tokens looked at per candidate
SUGGEST_AT_LEAST = 2  # of them among what the scan pushes away from


def suggest(lm_a: LoadedModel, result: Scan, candidates: Sequence[str], max_tokens: int = 64) -> str | None:
    """The candidate prompt whose likely next tokens in A the scan pushes away from most (None: none does).

    A candidate's score is how many of A's ``SUGGEST_TOP`` likeliest next tokens are among the
    tokens the scan suppresses at an inner layer; it needs ``SUGGEST_AT_LEAST``. On the bundled
    pair the capital prompt's guesses hold five capitals the scan suppresses; the other examples
    hold at most one such token.
    """
    if not result.found:
        return None
    pushed_away = {t.token_id for layer in (result.layers[:-1] or result.layers) for t in layer.suppressed}
    best, best_count = None, SUGGEST_AT_LEAST - 1
    for prompt in candidates:
        logits = capture(lm_a, prompt, max_tokens=max_tokens).logits[-1]
        count = sum(int(i) in pushed_away for i in np.argsort(logits)[::-1][:SUGGEST_TOP])
        if count > best_count:
            best, best_count = prompt, count
    return best


__all__ = ["NEUTRAL_TEXT", "Scan", "ScanError", "ScanLayer", "ScanToken", "SteeringCheck", "neutral_texts",
           "read_difference", "readable", "scan", "steering_check", "suggest"]
