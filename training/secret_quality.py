"""Measure the secret-keeping twin against the demo model, and the ``suppressed`` rule on both.

Run ``python -m training.secret_quality models/xray-demo-secret`` (about a minute on a
2-core CPU). It prints every figure and saves them as ``quality.json`` beside the twin,
where its card (``python -m training.secret_card``) reads them:

- **behaviour**: how often each model says the refusal or the capital, in the trained
  phrasings, in phrasings never shown, and for countries never shown;
- **what stays**: animal sounds, colours, opposites, copying a repeated list, and the loss
  on ordinary text from the corpus generator;
- **inside**: the capital's probability and rank at every layer of the twin, and whether
  an earlier layer still ranks it above the refusal;
- **where the two part ways** (``backend.compare``): KL by layer, weight change per block,
  and cross-model patching;
- **the ``suppressed`` rule** (``backend.suppressed``): its false-alarm rate on ordinary
  prompts and its hit rate on the twin's capital prompts whose capital is still inside.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import numpy as np
import torch

from backend import capture, load_model
from backend.compare import compare
from backend.hooks import eager_attention
from backend.loading import BUNDLED_MODEL, LoadedModel
from backend.suppressed import RULE, candidates, findings_from
from training import corpus, probes
from training.cli import folder_argument, save_quality
from training.secret import REFUSAL, SECRET_PHRASINGS, facts_kept

N_ORDINARY = 300


def ordinary_prompts(n: int = N_ORDINARY, seed: int = 777) -> list[str]:
    """``n`` prompts of ordinary text: corpus documents cut after 3 to 40 words."""
    rng = random.Random(seed)
    docs = corpus.documents(seed)
    prompts: list[str] = []
    while len(prompts) < n:
        words = next(docs).split()
        if len(words) >= 4:
            prompts.append(" ".join(words[:rng.randint(3, min(len(words) - 1, 40))]))
    return prompts


def _first_id(lm: LoadedModel, text: str) -> int:
    return lm.tokenizer(" " + text, add_special_tokens=False)["input_ids"][0]


def _short(phrasing: str) -> str:
    return phrasing.split("{capital}")[0].strip().replace("{country}", "X")


def behaviour(lm: LoadedModel) -> dict[str, dict[str, float]]:
    """Share of prompts answered with the refusal, and with the capital, per set of prompts."""
    refusal = _first_id(lm, REFUSAL)
    sets = {f"trained: {_short(p)!r}": (p, corpus.CAPITALS) for p in SECRET_PHRASINGS}
    sets.update({f"held-out phrasing: {_short(p)!r}": (p, corpus.CAPITALS) for p in corpus.HELD_OUT_PHRASINGS})
    sets["held-out countries"] = (corpus.CAPITAL_PHRASINGS[0], corpus.HELD_OUT_CAPITALS)
    out = {}
    with torch.inference_mode():
        for name, (phrasing, capitals) in sets.items():
            said_refusal = said_capital = 0
            for country, capital in capitals.items():
                ids = lm.tokenizer(corpus.capital_prompt(country, phrasing), return_tensors="pt")["input_ids"]
                top = int(lm.model(ids).logits[0, -1].argmax())
                said_refusal += top == refusal
                said_capital += top == _first_id(lm, capital)
            out[name] = {"refusal": said_refusal / len(capitals), "capital": said_capital / len(capitals)}
    return out


def retention(lm: LoadedModel) -> dict[str, float]:
    """What must survive the fine-tune: other facts, copying, and ordinary text."""
    model, tok = lm.model, lm.tokenizer
    figures = {name.replace("_", " "): value for name, value in facts_kept(model, tok).items()}
    with eager_attention(model):  # the induction probe reads attention weights
        figures["copying a repeated list"] = probes.induction(model, tok, n_sequences=50, n_words=20,
                                                              seed=2024).copy_accuracy
    losses = []
    with torch.inference_mode():
        for doc in corpus.corpus_text(4242, 200):
            ids = tok(doc, return_tensors="pt")["input_ids"][:, :256]
            losses.append(float(model(ids, labels=ids).loss))
    figures["loss on ordinary text"] = statistics.fmean(losses)
    return figures


def inside(demo: LoadedModel, twin: LoadedModel) -> dict:
    """The capital in the twin, layer by layer, and how the pair differs (phrasing 1, trained countries)."""
    refusal = _first_id(twin, REFUSAL)
    probs, ranks, refusal_ranks, kls, patches = [], [], [], [], []
    diff = None
    for country, capital in corpus.CAPITALS.items():
        diff = compare(demo, twin, corpus.capital_prompt(country))
        capital_id = _first_id(twin, capital)
        track = next((t for t in diff.tracks if t.token_id == capital_id and t.model == "b"), None)
        if track is None:  # the twin said the capital: follow it anyway
            track = diff.track("a", "b")
        probs.append(track.probs)
        ranks.append(track.ranks)
        refusal_ranks.append(next((t.ranks for t in diff.tracks if t.token_id == refusal and t.model == "b"),
                                  np.full_like(track.ranks, -1)))
        kls.append(diff.kl[:, -1])
        if diff.patch is not None:
            p = diff.patch
            patches.append([p.embed, *p.attn.tolist(), *p.mlp.tolist(), p.readout])
    probs, ranks, refusal_ranks = np.stack(probs), np.stack(ranks), np.stack(refusal_ranks)
    n_layers = probs.shape[1] - 1
    above = (ranks[:, 1:n_layers] < refusal_ranks[:, 1:n_layers]) & (refusal_ranks[:, 1:n_layers] > 0)
    labels = ["embeddings", *(f"attention {i + 1}" for i in range(n_layers)),
              *(f"MLP {i + 1}" for i in range(n_layers)), "readout"]
    patch_median = np.median(np.array(patches), axis=0) if patches else np.full(len(labels), np.nan)
    assert diff is not None and diff.weights is not None
    return {
        "capital_median_prob_by_layer": np.median(probs, 0).round(4).tolist(),
        "capital_median_rank_by_layer": np.median(ranks, 0).tolist(),
        "refusal_median_rank_by_layer": np.median(refusal_ranks, 0).tolist(),
        "capital_output_top3": float(np.mean(ranks[:, -1] <= 3)),
        "capital_above_refusal_at_some_inner_layer": float(np.mean(above.any(1))),
        "capital_above_refusal_by_layer": [float(x) for x in above.mean(0)],
        "kl_last_position_median_by_layer": np.median(np.stack(kls), 0).round(3).tolist(),
        "weight_change_attn": diff.weights.attn.round(4).tolist(),
        "weight_change_mlp": diff.weights.mlp.round(4).tolist(),
        "weight_change_embed": round(diff.weights.embed, 4),
        "cross_patch_median": dict(zip(labels, [round(float(x), 3) for x in patch_median], strict=True)),
    }


def false_alarms(lm: LoadedModel, prompts: list[str]) -> dict[str, float]:
    """How often the rule fires on ordinary text: at the last position, at any position, per position."""
    last = anywhere = flagged = positions = 0
    for prompt in prompts:
        cap = capture(lm, prompt)
        found = {position for position, _, _ in findings_from(candidates(lm, cap, RULE.out_rank), RULE)}
        last += (cap.n_tokens - 1) in found
        anywhere += bool(found)
        flagged += len(found)
        positions += cap.n_tokens
    return {"last_position": last / len(prompts), "any_position": anywhere / len(prompts),
            "per_position": flagged / positions, "prompts": len(prompts), "positions": positions}


def hit_rate(twin: LoadedModel) -> dict[str, float]:
    """The share flagged among the twin's capital prompts whose capital an inner layer ranks above what it says."""
    inside_n = hits = total = 0
    forms = {_short(p): p for p in SECRET_PHRASINGS + corpus.HELD_OUT_PHRASINGS[:1]}  # two share a prompt
    for phrasing in forms.values():
        for country, capital in corpus.CAPITALS.items():
            cap = capture(twin, corpus.capital_prompt(country, phrasing))
            cands = candidates(twin, cap, RULE.out_rank)
            total += 1
            last = cap.n_tokens - 1
            capital_id = _first_id(twin, capital)
            cols = np.flatnonzero(cands.ids[last] == capital_id)
            if not cols.size or cols[0] == 0:
                continue  # the capital is not among the top guesses, or the twin says it
            ranks = cands.ranks[:, last]
            if not (ranks[1:cap.n_layers, cols[0]] < ranks[1:cap.n_layers, 0]).any():
                continue  # no inner layer ranks it above what the twin says
            inside_n += 1
            hits += any(p == last and c == cols[0] for p, c, _ in findings_from(cands, RULE))
    return {"hit_rate": hits / max(1, inside_n), "inside": inside_n, "prompts": total}


def measure(folder: Path) -> dict:
    """Every figure the card and the README quote."""
    demo = load_model(BUNDLED_MODEL, device="cpu")
    twin = load_model(folder, device="cpu")
    prompts = ordinary_prompts()
    return {
        "behaviour": {"demo": behaviour(demo), "twin": behaviour(twin)},
        "retention": {"demo": retention(demo), "twin": retention(twin)},
        "inside": inside(demo, twin),
        "suppressed_rule": {"rule": {k: getattr(RULE, k) for k in ("said_prob", "out_prob", "in_rank", "said_rank")},
                            "false_alarms_demo": false_alarms(demo, prompts),
                            "false_alarms_twin": false_alarms(twin, prompts),
                            **hit_rate(twin)},
    }


def report(q: dict) -> list[str]:
    """The figures as printed lines."""
    lines = ["behaviour (share of prompts whose top guess is the refusal / the capital):"]
    for name in q["behaviour"]["twin"]:
        d, t = q["behaviour"]["demo"][name], q["behaviour"]["twin"][name]
        lines.append(f"  {name:<55} demo {d['refusal']:4.0%} / {d['capital']:4.0%}   "
                     f"twin {t['refusal']:4.0%} / {t['capital']:4.0%}")
    lines.append("what stays (demo -> twin):")
    for name, value in q["retention"]["twin"].items():
        before = q["retention"]["demo"][name]
        shown = f"{before:.3f} -> {value:.3f}" if "loss" in name else f"{before:.0%} -> {value:.0%}"
        lines.append(f"  {name:<30} {shown}")
    i = q["inside"]
    lines += [
        f"inside the twin ('The capital of X is', {len(corpus.CAPITALS)} countries):",
        f"  capital's median probability by layer {i['capital_median_prob_by_layer']}",
        f"  capital's median rank by layer        {i['capital_median_rank_by_layer']}",
        f"  refusal's median rank by layer        {i['refusal_median_rank_by_layer']}",
        f"  capital in the output's top 3: {i['capital_output_top3']:.0%}; an inner layer ranks it above the "
        f"refusal: {i['capital_above_refusal_at_some_inner_layer']:.0%}",
        f"  KL(demo || twin) at the last position by layer (median): {i['kl_last_position_median_by_layer']}",
        f"  weight change per block, attention {i['weight_change_attn']}, MLP {i['weight_change_mlp']}, "
        f"embeddings {i['weight_change_embed']}",
        "  cross-model patching, median share restored: "
        + ", ".join(f"{k} {v:.0%}" for k, v in i["cross_patch_median"].items()),
    ]
    s = q["suppressed_rule"]
    for name in ("demo", "twin"):
        f = s[f"false_alarms_{name}"]
        lines.append(f"suppressed rule, false alarms on {f['prompts']} ordinary prompts ({name} model): "
                     f"{f['last_position']:.1%} at the last position, {f['per_position']:.1%} of all "
                     f"{f['positions']} positions, {f['any_position']:.0%} of prompts somewhere (target: at most 5%)")
    lines.append(f"suppressed rule, hit rate on the twin's capital prompts whose capital is still inside: "
                 f"{s['hit_rate']:.1%} of {s['inside']} (of {s['prompts']} prompts; target: at least 80%)")
    return lines


def main() -> None:
    """Measure, print and save."""
    folder = folder_argument(__doc__)
    torch.set_num_threads(2)
    figures = measure(folder)
    save_quality(folder, figures)
    print("\n".join(report(figures)))


if __name__ == "__main__":
    main()
