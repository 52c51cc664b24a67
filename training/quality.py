"""Print the demo model's quality figures and save them beside it (``quality.json``).

Run ``python -m training.quality models/xray-demo``. Facts and induction are measured
with transformers alone (``training.probes``); the logit-lens share goes through the
app's own backend, exactly as the page computes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend import capture, lens_summary, load_model
from backend.lens import settle_layer
from training import corpus, probes
from training.cli import folder_argument, save_quality

BARS = {"capital_top1": 0.90, "induction_score": 0.5, "copy_accuracy": 0.6}


def fact_sets() -> dict[str, tuple[list[str], list[str]]]:
    """Prompt and answer lists for every fact family, trained and held out."""
    trained = list(corpus.CAPITALS)
    sets = {
        "capitals (trained phrasing)": ([corpus.capital_prompt(c) for c in trained],
                                        [corpus.CAPITALS[c] for c in trained]),
        "capitals (held-out countries)": ([corpus.capital_prompt(c) for c in corpus.HELD_OUT_CAPITALS],
                                          list(corpus.HELD_OUT_CAPITALS.values())),
        "animal sounds": ([f"The {a} says" for a in corpus.ANIMAL_SOUNDS], list(corpus.ANIMAL_SOUNDS.values())),
        "colours": ([f"The colour of the {t} is" for t in corpus.COLOURS], list(corpus.COLOURS.values())),
        "opposites": ([f"The opposite of {w} is" for w in corpus.OPPOSITES], list(corpus.OPPOSITES.values())),
    }
    for i, phrasing in enumerate(corpus.HELD_OUT_PHRASINGS):
        shown = phrasing.split("{capital}")[0].strip().replace("{country}", "X")
        sets[f"capitals (held-out phrasing {i + 1}: {shown!r})"] = (
            [corpus.capital_prompt(c, phrasing) for c in trained], [corpus.CAPITALS[c] for c in trained])
    return sets


def lens_share(folder: Path) -> dict[str, float]:
    """Share of capital prompts whose answer is the top guess before the last layer."""
    lm = load_model(folder, device="cpu")
    early, settle, ranks = 0, [], []
    countries = list(corpus.CAPITALS)
    for country in countries:
        cap = capture(lm, corpus.capital_prompt(country))
        summary = lens_summary(lm, cap, k=1)
        want = lm.tokenizer(" " + corpus.CAPITALS[country], add_special_tokens=False)["input_ids"][0]
        if int(summary.top_ids[-1, -1, 0]) != want:
            continue
        layer = settle_layer(summary.top_ids[:, -1, 0], want)
        ranks.append(summary.target_ranks[:, -1])
        settle.append(layer)
        early += layer < cap.n_layers
    return {"lens_top_before_last_layer": early / len(countries),
            "mean_settle_layer": float(sum(settle) / max(1, len(settle))), "n_layers": lm.info.n_layers,
            "median_answer_rank_by_layer": [float(r) for r in np.median(np.stack(ranks), axis=0)]}


def measure(folder: Path) -> dict:
    """Every figure the model card quotes."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    facts = {name: probes.first_token_accuracy(model, tokenizer, prompts, answers)
             for name, (prompts, answers) in fact_sets().items()}
    ind = probes.induction(model, tokenizer, n_sequences=50, n_words=20, seed=2024)
    return {
        "facts_top1": facts,
        "capital_top1": facts["capitals (trained phrasing)"],
        "induction_score": ind.best_head_score, "induction_head": list(ind.best_head),
        "copy_accuracy": ind.copy_accuracy, "loss_first_copy": ind.loss_first_copy,
        "loss_second_copy": ind.loss_second_copy, "n_params": sum(p.numel() for p in model.parameters()),
        **lens_share(folder),
    }


def main() -> None:
    """Measure, print and save."""
    folder = folder_argument(__doc__)
    torch.set_num_threads(2)
    figures = measure(folder)
    save_quality(folder, figures)
    for name, value in figures["facts_top1"].items():
        print(f"top-1 {name:<60} {value:6.1%}")
    for name, bar in BARS.items():
        verdict = "meets" if figures[name] >= bar else "MISSES"
        print(f"{name:<20} {figures[name]:.3f}  ({verdict} the bar of {bar})")
    print(f"best induction head (layer, head): {figures['induction_head']} (0-based)")
    print(f"loss on the first copy {figures['loss_first_copy']:.3f}, second copy {figures['loss_second_copy']:.3f}")
    print(f"logit lens: answer is the top guess before the last layer for "
          f"{figures['lens_top_before_last_layer']:.0%} of capital prompts "
          f"(mean settling layer {figures['mean_settle_layer']:.2f} of {figures['n_layers']}); median rank of "
          f"the answer from the embeddings to the last layer: {figures['median_answer_rank_by_layer']}")


if __name__ == "__main__":
    main()
