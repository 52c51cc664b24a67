"""Write the demo model's card (its README) from its config, training log and quality figures.

Run after ``training.train`` and ``training.quality``:
``python -m training.card models/xray-demo``. Every number in the card comes from a file
in the folder, so the card cannot drift from the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig

from training import corpus
from training.cli import folder_argument, save_card
from training.train import TrainConfig


def _curve(log: list[dict]) -> str:
    rows = ["| step | minutes | loss | best induction score | copy accuracy | loss 1st copy | loss 2nd copy "
            "| capitals top-1 |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in log:
        rows.append(f"| {r['step']} | {r['seconds'] / 60:.0f} | {r['loss']:.3f} | {r['induction_score']:.2f} | "
                    f"{r['copy_accuracy']:.1%} | {r['loss_first_copy']:.2f} | {r['loss_second_copy']:.2f} | "
                    f"{r['capital_top1']:.1%} |")
    return "\n".join(rows)


def _facts(quality: dict) -> str:
    rows = ["| prompts | top-1 accuracy |", "|---|---:|"]
    rows += [f"| {name} | {value:.1%} |" for name, value in quality["facts_top1"].items()]
    return "\n".join(rows)


def card(folder: Path) -> str:
    """The card's markdown."""
    config = AutoConfig.from_pretrained(folder)
    train_cfg = TrainConfig(**json.loads((folder / "training_config.json").read_text()))
    quality = json.loads((folder / "quality.json").read_text())
    log = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
    n_params = int(json.loads((folder / "quality.json").read_text()).get("n_params", 0))
    formed = next((r for r in log if r["induction_score"] >= 0.5), None)
    formed_text = (f"Induction heads formed abruptly between steps {formed['step'] - train_cfg.eval_every} and "
                   f"{formed['step']} (about {formed['seconds'] / 60:.0f} minutes in), after a plateau."
                   if formed else "Induction heads did not reach a score of 0.5 during training.")
    minutes = log[-1]["seconds"] / 60
    mix = corpus.MixWeights()
    return f"""# xray-demo: Model X-ray's bundled demo model

A small GPT-2-style language model trained from scratch inside this project, so that Model
X-ray opens and works with no network: in a lecture hall, in the tests, anywhere. It reads
simple English and knows the capitals of {len(corpus.CAPITALS)} countries, and its attention
heads and logit lens show textbook behaviour: an induction head that copies repeated
sequences, and the answer to a fact climbing through the ranks layer by layer.

It is a teaching instrument, not a useful language model.

## Architecture

GPT-2 (`GPT2LMHeadModel`): {config.n_layer} layers, {config.n_head} heads per layer, d_model {config.n_embd},
MLP of {4 * config.n_embd} neurons per layer, context of {config.n_positions} tokens, tied input and output
embeddings, a vocabulary of {config.vocab_size:,} tokens, {n_params:,} parameters, float32 safetensors.

## How it was made

Everything is in `training/` and reproducible from seed {train_cfg.seed}:

- **Corpus** (`training/corpus.py`): an endless, seeded stream of generated documents.
  Shares of documents: stories {mix.story:.0%} (named characters who come back later in the
  story), facts {mix.facts:.0%} (capital cities in {len(corpus.CAPITAL_PHRASINGS)} phrasings, every G20 country
  among them; animal sounds; colours of things; opposites), repeated word lists {mix.repeated:.0%}
  (4 to 40 common words written two or three times), ordered sequences {mix.sequence:.0%}
  (numbers, days, months, letters) and simple grammar {mix.grammar:.0%} (agreement, plurals).
- **Tokenizer** (`training/tokenizer.py`): byte-level BPE trained with `tokenizers` on
  {train_cfg.tokenizer_documents:,} documents. Any text encodes, with no unknown token. Every
  encoding starts with `<|endoftext|>`. The generated English has a small word set, so BPE
  runs out of merges at {config.vocab_size:,} tokens, just under the 2k to 8k guidance.
- **Training** (`training/train.py`): plain PyTorch, {train_cfg.steps:,} steps of
  {train_cfg.batch_size} x {train_cfg.block_size} tokens, AdamW (learning rate {train_cfg.lr:g},
  {train_cfg.warmup} warm-up steps, cosine decay to {train_cfg.min_lr:g}, weight decay
  {train_cfg.weight_decay}), no dropout; {minutes:.0f} minutes on a 2-core CPU.
  {formed_text}

```bash
python -m training.train --out models/xray-demo   # add --device cuda on a GPU
python -m training.quality models/xray-demo        # the figures below, into quality.json
python -m training.card models/xray-demo           # this card
```

### Training curve (`training_log.jsonl`)

{_curve(log)}

## What it knows (`quality.json`, from `python -m training.quality`)

Top-1 accuracy of the first token of the answer:

{_facts(quality)}

- **Capitals**: {quality['capital_top1']:.1%} top-1 on "The capital of X is" over the
  {len(corpus.CAPITALS)} countries it was trained on (bar: 90%).
- **Induction**: on 50 random lists of 20 common words written twice, the best head
  (layer {quality['induction_head'][0] + 1}, head {quality['induction_head'][1] + 1}) gives
  {quality['induction_score']:.2f} of its attention, on average, from each repeated token to the token
  after its first occurrence (bar: 0.5), and the model predicts {quality['copy_accuracy']:.1%} of the
  second copy (bar: 60%). Loss falls from {quality['loss_first_copy']:.2f} on the first copy to
  {quality['loss_second_copy']:.2f} on the second.
- **Logit lens**: for {quality['lens_top_before_last_layer']:.0%} of the capital prompts the
  answer is already the top guess before the last layer (on average from layer
  {quality['mean_settle_layer']:.2f} of {quality['n_layers']} among those answered right). Mostly the answer takes
  the top place only at the last layer, but it climbs there steadily: its median rank from the embeddings
  to the last layer is {" → ".join(f"{r:,.0f}" for r in quality['median_answer_rank_by_layer'])}. This climb is
  what the demo shows.

## What it does not know

- Countries held out of training ({", ".join(corpus.HELD_OUT_CAPITALS)}): it cannot know their
  capitals, and the table above shows it does not.
- Phrasings held out of training: see the held-out rows above. It learned the sentence
  patterns it saw, not the idea of a capital city.
- Anything else: it has seen only the generated simple English described above, never real
  text. Prompts far from that read as noise.
- More than {config.n_positions} tokens at once.

## Files

`config.json`, `model.safetensors`, `generation_config.json`, `tokenizer.json`,
`tokenizer_config.json` (an ordinary Hugging Face folder: `AutoModelForCausalLM.from_pretrained`
loads it), plus `training_config.json`, `training_log.jsonl` and `quality.json`.
"""


def main() -> None:
    """Write ``README.md`` into the model folder."""
    folder = folder_argument(__doc__)
    save_card(folder, card(folder))


if __name__ == "__main__":
    main()
