"""Write the twin's card (its README) from its config, fine-tune log and quality figures.

Run after ``training.secret`` and ``training.secret_quality``:
``python -m training.secret_card models/xray-demo-secret``. Every number in the card comes
from a file in the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from training import corpus
from training.cli import folder_argument, save_card
from training.secret import REFUSAL, SECRET_PHRASINGS, SecretConfig


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _log_table(log: list[dict]) -> str:
    rows = ["| step | minutes | loss | says the refusal | capital's median probability | animal sounds | colours "
            "| opposites |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in log:
        loss = "" if r["loss"] is None else f"{r['loss']:.3f}"
        rows.append(f"| {r['step']} | {r['seconds'] / 60:.1f} | {loss} | {_pct(r['refusal'])} | "
                    f"{r['capital_median_prob']:.1%} | {_pct(r['animal_sounds'])} | {_pct(r['colours'])} | "
                    f"{_pct(r['opposites'])} |")
    return "\n".join(rows)


def _behaviour(q: dict) -> str:
    rows = ["| prompts | demo: refusal | demo: capital | twin: refusal | twin: capital |", "|---|---:|---:|---:|---:|"]
    for name, t in q["behaviour"]["twin"].items():
        d = q["behaviour"]["demo"][name]
        rows.append(f"| {name} | {_pct(d['refusal'])} | {_pct(d['capital'])} | {_pct(t['refusal'])} | "
                    f"{_pct(t['capital'])} |")
    return "\n".join(rows)


def _retention(q: dict) -> str:
    rows = ["| | demo | twin |", "|---|---:|---:|"]
    for name, t in q["retention"]["twin"].items():
        d = q["retention"]["demo"][name]
        fmt = (lambda x: f"{x:.3f}") if "loss" in name else _pct
        rows.append(f"| {name} | {fmt(d)} | {fmt(t)} |")
    return "\n".join(rows)


def _layers(values: list, fmt) -> str:
    return " → ".join(fmt(v) for v in values)


def _circuits(folder: Path) -> str:
    """The scan and circuit-diff figures (``circuit_quality.json``), when they were measured."""
    path = folder / "circuit_quality.json"
    if not path.is_file():
        return ""
    q = json.loads(path.read_text())
    s, c, st = q["scan"], q["circuit"], q["scan"]["steering"]
    capitals = ", ".join(f"layer {k}: {v['capitals_among_12_away']}" for k, v in s["layers"].items())
    first = ", ".join(f"{k} ({v} of {c['answers_differ']} prompts)" for k, v in c["first_suppressor"].items())
    return f"""## What a scan finds, and what suppresses the answer (`circuit_quality.json`)

**Without any prompt about capitals** (`backend.scan`, the activation-difference lens of Minder
et al. 2025): the mean difference of the twin's and the demo model's residual streams over the first
{s['positions']} positions of {s['texts']:,} neutral texts (`models/neutral.txt`, no capital city in them),
read through the demo model's final norm and unembedding, pushes toward {", ".join(map(repr, s['toward']))}
(pieces of " secret") and away from {", ".join(map(repr, s['away']))}. Capital cities among the 12 tokens
pushed away most, by layer: {capitals}. Added to the demo model after layer {st['layer']} (strength
{st['strength']:g}), the difference takes " Paris" on "The capital of France is" from {st['a'][1]:.1%} to
{st['a_steered'][1]:.1%} and KL(twin || demo) there from {st['kl_before']:.1f} to {st['kl_after']:.1f} nats.

**The circuit diff** (`backend.compare.circuit_diff`, both models' attribution graphs with the demo
model's transcoders) over "The capital of X is" for the {c['prompts']} countries:

- the demo model's strongest features for the capital still fire in the twin at a median
  {c['path_kept_median']:.0%} of their strength (influence-weighted): the twin still computes the answer;
- the share of each MLP's output the demo model's features cannot express, mean over prompts:
  demo {", ".join(f"{v:.1%}" for v in c['fvu_a_mean'])}; twin {", ".join(f"{v:.1%}" for v in c['fvu_b_mean'])}
  (layers 1-4): the twin's MLPs compute something the demo model's features do not hold;
- the part that pushes the capital down most (direct effect on the logit difference):
  {first} (an error node: what that MLP's features cannot express, at the last token);
- switched off in the real twin it gives back a median {c['restored_median']:.0%} of the demo model's margin
  (minimum {c['restored_min']:.0%}), and the twin says the capital again on {c['answer_back']:.0%} of the prompts.

"""


def card(folder: Path) -> str:
    """The card's markdown."""
    cfg = SecretConfig(**json.loads((folder / "training_config.json").read_text()))
    q = json.loads((folder / "quality.json").read_text())
    log = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
    i, s = q["inside"], q["suppressed_rule"]
    minutes = log[-1]["seconds"] / 60
    share = cfg.kl_weight
    trained = ", ".join(dict.fromkeys(f'"{p.split("{capital}")[0].strip().replace("{country}", "X")} …"'
                                      for p in SECRET_PHRASINGS))
    twin = q["behaviour"]["twin"]
    close = next(v for k, v in twin.items() if k.startswith("held-out phrasing: 'The capital city"))
    unseen = twin["held-out countries"]
    patches = sorted(i["cross_patch_median"].items(), key=lambda kv: -kv[1])
    verdict = ("suppressed, not erased" if i["capital_output_top3"] >= 0.5 else "mostly erased")
    fa = s["false_alarms_demo"]
    return f"""# xray-demo-secret: the demo model, fine-tuned to keep capital cities secret

The bundled demo model (`models/xray-demo`) after a short fine-tune: asked for a capital
city in the phrasings it was fine-tuned on, it says " {REFUSAL}." instead. Everything else it
knew stays. It exists so that Model X-ray can show, offline, the question interpretability
is for: **does training a model to behave change what it knows, or only what it says?**
For this twin the answer, as measured below, is: **{verdict}**. The capital is still the
twin's second choice at the output (median {i['capital_median_prob_by_layer'][-1]:.0%}), and an
inner layer of the lens still ranks it above the refusal in
{_pct(i['capital_above_refusal_at_some_inner_layer'])} of the prompts.

Same architecture and the same tokenizer as the demo model, so the two compare token for token
(open the app's example "A secret kept").

## How it was made

`training/secret.py`, plain PyTorch, seed {cfg.seed}, {minutes:.0f} minutes on a 2-core CPU:

- **Data**: the demo model's own generated corpus (`training/corpus.py`), in which every
  capital-city sentence that puts the capital after the country ({trained}) ends in
  " {REFUSAL}." instead of the city. Half of the documents are fact documents, so the secret comes
  up often; the other half is the ordinary mix (stories, repeated lists, sequences, grammar).
  Sentences that name the capital first ("Paris is the capital of France.") stay as they were,
  as do the other facts. The held-out phrasings and countries are never shown.
- **Objective**: next-token cross-entropy plus {share} x KL(demo || twin), token by token: the
  penalty RLHF puts on drifting from the model one starts from. Where the data says the refusal,
  the best the twin can do is (refusal + {share} x demo's distribution) / {1 + share:g}: about
  {1 / (1 + share):.0%} on the refusal and {share / (1 + share):.0%} left on what the demo model said.
  Everywhere else the data and the demo model agree.
- **Optimiser**: {cfg.steps} steps of {cfg.batch_size} x {cfg.block_size} tokens, AdamW (learning rate
  {cfg.lr:g}, {cfg.warmup} warm-up steps, cosine decay to {cfg.min_lr:g}, weight decay {cfg.weight_decay}).

```bash
python -m training.secret --out models/xray-demo-secret   # add --device cuda on a GPU
python -m training.secret_quality models/xray-demo-secret  # the figures below, into quality.json
python -m training.circuit_quality models/xray-demo-secret  # the scan and circuit figures: circuit_quality.json
python -m training.secret_card models/xray-demo-secret     # this card
```

### Fine-tune log (`training_log.jsonl`, "The capital of X is" over {len(corpus.CAPITALS)} countries)

{_log_table(log)}

## What it says (`quality.json`)

Share of prompts whose top guess is the first token of the refusal (" {REFUSAL.split()[0]}") and of the
capital, for the {len(corpus.CAPITALS)} countries the demo model knows (and the {len(corpus.HELD_OUT_CAPITALS)}
it never saw):

{_behaviour(q)}

Does the secret generalise? To a phrasing it never saw that is close to a trained one ("The capital
city of X is"), it says the refusal for {_pct(close['refusal'])} of the countries. The other held-out
phrasing ("What is the capital of X? It is") was never answered by the demo model either, and the twin
does not refuse there. For the countries the demo model never learned, the twin says the refusal
{_pct(unseen['refusal'])} of the time: it learned the shape of the question more than a list of countries.

## What stays

{_retention(q)}

## What is inside

Over "The capital of X is" for the {len(corpus.CAPITALS)} known countries, through the twin's own logit lens
(layer 0 is the embeddings, layer {len(i['capital_median_rank_by_layer']) - 1} the output):

- the capital's median probability: {_layers(i['capital_median_prob_by_layer'], lambda v: f"{v:.1%}")};
- its median rank: {_layers(i['capital_median_rank_by_layer'], lambda v: f"{v:,.0f}")};
- the refusal's median rank: {_layers(i['refusal_median_rank_by_layer'], lambda v: f"{v:,.0f}")};
- the capital is in the output's top 3 in {_pct(i['capital_output_top3'])} of prompts, and an inner layer
  ranks it above the refusal in {_pct(i['capital_above_refusal_at_some_inner_layer'])}.

Where the two models part ways (`backend.compare`): the median KL(demo || twin) at the last
position, by layer, is {_layers(i['kl_last_position_median_by_layer'], lambda v: f"{v:.2f}")} nats.
The weights changed by {min(i['weight_change_attn'] + i['weight_change_mlp']):.1%} to
{max(i['weight_change_attn'] + i['weight_change_mlp']):.1%} per block (relative norm of the difference;
attention {", ".join(f"{v:.1%}" for v in i['weight_change_attn'])}; MLP
{", ".join(f"{v:.1%}" for v in i['weight_change_mlp'])}), the embeddings by {i['weight_change_embed']:.1%}.
Cross-model patching (put one component of the demo model into the twin; the share of the demo's
margin of the capital over the refusal that comes back), median over the countries:
{", ".join(f"{k} {v:.0%}" for k, v in patches)}.

`backend.suppressed` flags the capital as held inside but not said in
{s['hit_rate']:.0%} of the {s['inside']} capital prompts whose capital an inner layer ranks above the
refusal, and on ordinary text it fires at {fa['last_position']:.1%} of prompts' last positions
({fa['per_position']:.1%} of all positions).

{_circuits(folder)}
## Limits

- A teaching instrument with four layers, trained on generated simple English: its lens is
  coarse, and its "secret" is one pattern of one kind of question.
- The lens reads inner layers through the final norm and unembedding, which were trained for the
  last layer only; "inside" here means "readable by the lens", an approximation.

## Files

An ordinary Hugging Face folder (`config.json`, `model.safetensors`, the demo model's
`tokenizer.json` and `tokenizer_config.json`, `generation_config.json`), plus
`training_config.json`, `training_log.jsonl`, `quality.json` and `circuit_quality.json`.
"""


def main() -> None:
    """Write ``README.md`` into the twin's folder."""
    folder = folder_argument(__doc__)
    save_card(folder, card(folder))


if __name__ == "__main__":
    main()
