"""Cross-model patching: put one part of model ``a`` into model ``b`` and see how much of ``a``'s answer comes back.

Model ``b`` runs the prompt with one component's output replaced by ``a``'s: the
embeddings (``resid.0``), one block's attention output (``attn_out.L``), one block's MLP
output (``mlp_out.L``), or the readout (``b``'s last residual read through ``a``'s final
norm and unembedding). Each value is the share of ``a``'s score restored, the patching
sweep's measure with ``a`` as the clean run and ``b`` as the corrupt one; by default the
score is the margin ``logit(a's answer) - logit(b's answer)`` (``backend.metrics``).
Patching every component at once gives ``a``'s logits exactly in families whose blocks add
their attention and MLP outputs straight into the residual stream (GPT-2, Llama, Qwen,
Pythia, Phi, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend import hooks
from backend.capture import DEFAULT_MAX_TOKENS, tokenize
from backend.errors import UnsupportedModel
from backend.loading import LoadedModel
from backend.metrics import LogitDiff, Metric, share
from backend.pairs import check_tokenizers
from backend.readout import readout_tensor
from backend.sites import EMBED, READOUT, Site

TOKENS_PER_BATCH = 4096


@dataclass(frozen=True, eq=False)
class CrossPatch:
    """Share of a's score (by default its answer's margin over b's answer) restored in b by each component of a."""

    answer_id: int  # a's answer
    foil_id: int  # b's answer
    a_diff: float  # the score in model a (default: logit(answer) - logit(foil))
    b_diff: float  # the same in model b
    embed: float  # b with a's embeddings (the input of the first block)
    attn: np.ndarray  # (n_layers,) float32: b with a's attention output of that block, at every position
    mlp: np.ndarray  # (n_layers,) float32: b with a's MLP output of that block, at every position
    readout: float  # b's last residual read through a's final norm and unembedding


def components(lm: LoadedModel) -> list[Site]:
    """The sites whose outputs cross-model patching takes from the other model, embeddings first."""
    sites = [EMBED]
    for i in range(lm.info.n_layers):
        if lm.anatomy.attn_out[i] is not None:
            sites.append(Site("attn_out", i))
        sites.append(Site("mlp_out", i))
    return sites


def all_components(lm: LoadedModel) -> tuple[Site, ...]:
    """Every component ``cross_patch_logits`` can take from the other model (the readout included)."""
    return (*components(lm), READOUT)


def source_reads(lm: LoadedModel) -> tuple[list[hooks.Action], Callable[[], dict[Site, torch.Tensor]]]:
    """Actions keeping a's component outputs during any forward of it, and what gives them back as (n, width)."""
    store: dict[Site, torch.Tensor] = {}
    wanted = components(lm)

    def finish() -> dict[Site, torch.Tensor]:
        if any(site not in store for site in wanted):
            raise UnsupportedModel("The model skipped some of its blocks, so their outputs cannot be patched.")
        return {site: value[0] for site, value in store.items()}

    return [hooks.read(site, store) for site in wanted], finish


def source_outputs(lm: LoadedModel, ids: list[int]) -> dict[Site, torch.Tensor]:
    """A's component outputs in one forward, stopped after the last block (the caller holds ``exclusive``)."""
    actions, finish = source_reads(lm)
    hooks.forward(lm, torch.tensor([ids], device=lm.input_device), actions, stop_after=lm.info.n_layers - 1)
    return finish()


def _patched_last(lm_b: LoadedModel, ids: list[int], rows: Sequence[frozenset[Site]],
                  source: dict[Site, torch.Tensor]) -> torch.Tensor:
    """B's last residual (rows, d_model) with each row's components taken from ``source`` (a's outputs)."""
    actions = []
    for site in components(lm_b):
        mask = torch.tensor([site in row for row in rows])
        if mask.any():
            if site not in source:
                raise UnsupportedModel(f"Model A has no {site} to put into model B.")
            actions.append(hooks.patch_rows(site, source[site], rows=mask))
    input_ids = torch.tensor([ids] * len(rows), device=lm_b.input_device)
    return hooks.forward(lm_b, input_ids, actions, stop_after=lm_b.info.n_layers - 1).stopped[:, -1]


def cross_patch_logits(lm_a: LoadedModel, lm_b: LoadedModel, prompt: str, sites: Sequence[Site], *,
                       max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
    """B's logits (vocab,) at the last position with ``sites`` of a put in, all at once.

    With every component (``all_components(lm_b)``) this is a's own logits.
    """
    ids = tokenize(lm_a, prompt, max_tokens)
    check_tokenizers(lm_a, lm_b, ids, tokenize(lm_b, prompt, max_tokens))
    with hooks.exclusive(lm_a):
        source = source_outputs(lm_a, ids)
    row = frozenset(sites)
    with hooks.exclusive(lm_b):
        last = _patched_last(lm_b, ids, [row], source)
        head = lm_a if READOUT in row else lm_b
        return readout_tensor(head, last).float().cpu().numpy()[0]


def cross_patch(lm_a: LoadedModel, lm_b: LoadedModel, ids: list[int], answer: int, foil: int,
                a_logits: np.ndarray, b_logits: np.ndarray, b_last: np.ndarray,
                source: dict[Site, torch.Tensor] | None = None, metric: Metric | None = None) -> CrossPatch:
    """One component at a time: a's embeddings, attention and MLP outputs in b (one batch), then a's readout.

    ``a_logits`` and ``b_logits`` (vocab,) are each model's own last-position logits; ``b_last``
    (1, d_model) is b's last residual there, which a's readout reads; ``source``, a's outputs
    if its capture kept them already; ``metric`` defaults to ``LogitDiff(answer, foil)``.
    """
    metric = LogitDiff(answer, foil) if metric is None else metric
    if source is None:
        with hooks.exclusive(lm_a):
            source = source_outputs(lm_a, ids)
    singles = [frozenset({site}) for site in components(lm_b)]
    per_batch = max(1, TOKENS_PER_BATCH // len(ids))
    scores: list[float] = []
    with hooks.exclusive(lm_b):
        for start in range(0, len(singles), per_batch):
            last = _patched_last(lm_b, ids, singles[start:start + per_batch], source)
            scores += metric(readout_tensor(lm_b, last)).float().cpu().tolist()
        read = readout_tensor(lm_a, torch.from_numpy(np.ascontiguousarray(b_last)))
        readout_score = float(metric(read)[0])

    def score_of(logits: np.ndarray) -> float:
        return float(metric(torch.from_numpy(np.asarray(logits, np.float32))[None])[0])

    a_score, b_score = score_of(a_logits), score_of(b_logits)
    shares = dict(zip(components(lm_b), share(np.array(scores), a_score, b_score).tolist(), strict=True))
    n_layers = lm_b.info.n_layers
    attn = np.array([shares.get(Site("attn_out", i), np.nan) for i in range(n_layers)], np.float32)
    mlp = np.array([shares[Site("mlp_out", i)] for i in range(n_layers)], np.float32)
    return CrossPatch(answer_id=answer, foil_id=foil, a_diff=a_score, b_diff=b_score, embed=float(shares[EMBED]),
                      attn=attn, mlp=mlp, readout=float(share(readout_score, a_score, b_score)))
