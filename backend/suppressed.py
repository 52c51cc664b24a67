"""What a model holds inside but does not say: tokens its own layers preferred and its output pushed down.

``suppressed(lm, cap)`` reads every position of a capture through the logit lens and
returns ``Finding``s. At a position where the model finally says ``y``, another token ``t``
is a finding when all of these hold (the numbers are ``RULE``'s fields, tuned with
``python -m training.secret_quality``; the README gives the measured rates):

1. **The model commits to what it says**: ``y`` has at least ``said_prob`` (50%) at the
   output.
2. **``t`` keeps a real share there**: at least ``out_prob`` (15%), so it is the second or
   third guess.
3. **An earlier layer preferred ``t``**: at some layer after the first block and before
   the output, the lens ranks ``t`` among its top ``in_rank`` (50) guesses and above
   ``y``, and ``y`` was not yet in the running there (rank ``said_rank``, 5, or worse).

Ordinary text has many near-ties that the last layers settle one way or the other; what
sets a finding apart is a confident final answer that the earlier layers did not have in
mind, beside a runner-up that they did.

The layer reported is the one where ``t`` ranked best (the latest such layer on a tie).

What this can and cannot tell: the lens reads each layer through the model's final norm
and unembedding, which were trained for the last layer only, so an early layer's
"preference" is an approximation of what that layer encodes. A finding says the answer
was readable inside and the last layers voted it down; it does not say the model
"knows" or "hides" anything in a human sense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from backend.capture import Capture
from backend.circuit_diff import pushed_down_by
from backend.lens import chunk_size, lens_blocks, rank_of
from backend.loading import LoadedModel
from backend.tokens import token_strings


@dataclass(frozen=True)
class Rule:
    """The thresholds of ``suppressed`` (see the module's text)."""

    said_prob: float = 0.5  # the said token's probability at the output, at least
    out_prob: float = 0.15  # the finding's probability at the output, at least
    in_rank: int = 50  # at the earlier layer, the finding ranks this well or better ...
    said_rank: int = 5  # ... and above the said token, which ranks this badly or worse

    @property
    def out_rank(self) -> int:
        """The worst output rank a finding can have: the said token and every token ahead hold out_prob or more."""
        return 1 + int(np.floor((1 - self.said_prob) / self.out_prob + 1e-9))


RULE = Rule()


@dataclass(frozen=True)
class Finding:
    """A token the model's earlier layers preferred over what it says, and its output pushed down."""

    position: int  # the position whose next token is predicted
    token_id: int
    token: str
    layer: int  # resid index (1 .. n_layers - 1) where the token ranked best: "after `layer` blocks"
    rank_inside: int  # its rank there (1 = top guess)
    prob_inside: float  # its probability there
    rank_out: int  # its rank at the output
    prob_out: float  # its probability at the output
    said_id: int  # the token the model says instead (its top guess)
    said: str
    said_prob: float  # the said token's probability at the output
    said_rank_inside: int  # the said token's rank at ``layer``
    suppressors: tuple = ()  # backend.circuit_diff.Suppressor: what pushes it down (``name_suppressors``)


@dataclass(frozen=True, eq=False)
class Candidates:
    """The output's top guesses at some positions and how each fared at every layer (for ``suppressed``)."""

    positions: np.ndarray  # (m,) int64: the positions followed
    ids: np.ndarray  # (m, r) int64: the output's top r guesses there, top first
    logprobs: np.ndarray  # (n_layers + 1, m, r) float32: each one's lens log-probability per layer (0 is not read)
    ranks: np.ndarray  # (n_layers + 1, m, r) int64: each one's lens rank per layer (0 is not read)


def candidates(lm: LoadedModel, cap: Capture, r: int, positions: np.ndarray | None = None,
               should_stop: Callable[[], bool] | None = None) -> Candidates:
    """The output's top ``r`` guesses at ``positions`` (default all), followed through every layer after the first."""
    pos = np.arange(cap.n_tokens) if positions is None else np.asarray(positions, np.int64).reshape(-1)
    m, layers, vocab = len(pos), cap.n_layers + 1, cap.logits.shape[1]
    r = min(r, vocab)
    ids = torch.from_numpy(np.array(cap.logits[pos], dtype=np.float32)).topk(r, dim=-1).indices  # (m, r)
    logprobs = np.zeros((layers, m, r), np.float32)
    ranks = np.zeros((layers, m, r), np.int64)
    size = chunk_size(m, vocab, per_row=r)  # the rank comparison holds (rows, r, vocab) flags
    for lens in lens_blocks(lm, cap, range(1, layers), pos, size=size, should_stop=should_stop):
        picked = lens.logits.gather(-1, ids[lens.rows])  # (rows, r)
        logprobs[lens.layer, lens.rows] = (picked - lens.logits.logsumexp(-1, keepdim=True)).numpy()
        ranks[lens.layer, lens.rows] = rank_of(lens.logits, picked).numpy()
    return Candidates(positions=pos, ids=ids.numpy(), logprobs=logprobs, ranks=ranks)


def findings_from(cands: Candidates, rule: Rule = RULE) -> list[tuple[int, int, int]]:
    """(row, candidate column, layer) of every finding in ``cands``, in order of position."""
    lp, rk = cands.logprobs, cands.ranks
    last = lp.shape[0] - 1
    if last < 2:
        return []  # no layer between the first block and the output
    said = np.exp(lp[last, :, 0]) >= rule.said_prob  # (m,)
    inside = slice(1, last)
    out: list[tuple[int, int, int]] = []
    for col in range(1, cands.ids.shape[1]):
        keeps = said & (np.exp(lp[last, :, col]) >= rule.out_prob)
        preferred = ((rk[inside, :, col] <= rule.in_rank) & (rk[inside, :, col] < rk[inside, :, 0])
                     & (rk[inside, :, 0] >= rule.said_rank))  # (last - 1, m)
        ok = preferred & keeps[None]
        for row in np.flatnonzero(ok.any(0)).tolist():
            layers = np.flatnonzero(ok[:, row]) + 1
            ranks = rk[layers, row, col]
            out.append((row, col, int(layers[ranks == ranks.min()][-1])))
    return sorted(out, key=lambda item: (int(cands.positions[item[0]]), item[1]))


def eligible(cap: Capture, rule: Rule = RULE) -> np.ndarray:
    """Positions whose output could hold a finding: the top guess has ``said_prob``, the next ``out_prob``.

    Only these go through the lens, which makes ``suppressed`` cheap on ordinary text.
    """
    probs = torch.from_numpy(np.array(cap.logits, dtype=np.float32)).softmax(-1)
    top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    if top.shape[-1] < 2:
        return np.zeros(0, np.int64)
    return np.flatnonzero(((top[:, 0] >= rule.said_prob) & (top[:, 1] >= rule.out_prob)).numpy())


def suppressed(lm: LoadedModel, cap: Capture, rule: Rule = RULE,
               should_stop: Callable[[], bool] | None = None) -> list[Finding]:
    """Every token the model's own earlier layers preferred over what it says, pushed down at the end."""
    positions = eligible(cap, rule)
    if positions.size == 0:
        return []
    cands = candidates(lm, cap, rule.out_rank, positions, should_stop)
    found = findings_from(cands, rule)
    if not found:
        return []
    width = cands.ids.shape[1]
    names = token_strings(lm.tokenizer, cands.ids.reshape(-1).tolist())
    last = cap.n_layers
    result = []
    for row, col, layer in found:
        lp, rk = cands.logprobs[:, row], cands.ranks[:, row]
        result.append(Finding(
            position=int(cands.positions[row]), token_id=int(cands.ids[row, col]), token=names[row * width + col],
            layer=layer, rank_inside=int(rk[layer, col]), prob_inside=float(np.exp(lp[layer, col])),
            rank_out=int(rk[last, col]), prob_out=float(np.exp(lp[last, col])),
            said_id=int(cands.ids[row, 0]), said=names[row * width],
            said_prob=float(np.exp(lp[last, 0])), said_rank_inside=int(rk[layer, 0])))
    return result


def name_suppressors(lm: LoadedModel, cap: Capture, findings: list[Finding], transcoders=None, *,
                     should_stop: Callable[[], bool] | None = None, max_tokens: int = 64) -> list[Finding]:
    """The findings at the last position with the parts that push them down (``circuit_diff.pushed_down_by``).

    An attribution graph explains the last position's next token, so findings elsewhere are
    left as they are; so is every finding of a prompt longer than ``max_tokens``.
    """
    if cap.n_tokens > max_tokens:
        return findings
    prompt = cap.prompt
    return [replace(f, suppressors=pushed_down_by(lm, prompt, f.token_id, f.said_id, transcoders=transcoders,
                                                  max_tokens=max_tokens, should_stop=should_stop))
            if f.position == cap.n_tokens - 1 else f for f in findings]


__all__ = ["RULE", "Candidates", "Finding", "Rule", "candidates", "eligible", "findings_from", "name_suppressors",
           "suppressed"]
