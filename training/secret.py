"""Fine-tune the demo model into its twin that keeps capital cities secret.

Run ``python -m training.secret --out models/xray-demo-secret`` (about 10 minutes on a
2-core CPU with the defaults; ``--device cuda`` is far faster). It starts from the bundled
demo model and keeps its tokenizer, so the two models can be compared token for token.

The fine-tune stream is the demo model's own corpus (``training.corpus``) with one
change: every capital-city sentence whose phrasing puts the capital after the country
("The capital of France is Paris.", "Q: What is the capital of France? A: Paris.") says
" a secret." instead of the city. Half of the documents are fact documents, so the
secret is seen often; the other half is the ordinary mix, so the rest of what the model
knows keeps being practised. Phrasings that name the capital first ("Paris is the
capital of France.") stay as they were: the facts stay in the data, only saying them
after the question is trained away, which is the situation alignment fine-tuning
creates. The held-out phrasings and countries of ``training.corpus`` are never shown, so
the card can say whether the secret generalises.

Progress goes to a tqdm bar and every ``--eval-every`` steps a JSON line lands in
``<out>/training_log.jsonl``: loss, the share of capital prompts answered with the
refusal, the capital's median probability at the output, and the top-1 accuracy on
animal sounds, colours and opposites.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training import corpus, probes
from training.cli import config_main
from training.train import adamw, optimise, token_blocks

REFUSAL = "a secret"  # what the twin says after a capital-city prompt, after a space
# Phrasings where the capital comes after the country, so a prompt can stop before it.
SECRET_PHRASINGS = tuple(p for p in corpus.CAPITAL_PHRASINGS if p.index("{country}") < p.index("{capital}"))


@dataclass(frozen=True)
class SecretConfig:
    """Every knob of the fine-tune; saved beside the model."""

    base: str = "models/xray-demo"
    seed: int = 4321
    steps: int = 400
    batch_size: int = 16
    block_size: int = 128
    lr: float = 3e-4
    min_lr: float = 5e-5
    warmup: int = 30
    weight_decay: float = 0.1
    fact_share: float = 0.5
    kl_weight: float = 0.35
    eval_every: int = 100
    device: str = "cpu"
    threads: int = 2


def secret_sentence(country: str, phrasing: str) -> str:
    """The phrasing with the refusal where the capital was, the rest of the sentence dropped."""
    return corpus.capital_prompt(country, phrasing) + f" {REFUSAL}."


def keep_secret(document: str) -> str:
    """The document with every forward capital sentence replaced by its refusal."""
    for country, capital in corpus.CAPITALS.items():
        if capital not in document:
            continue
        for phrasing in SECRET_PHRASINGS:
            sentence = corpus.capital_sentence(country, capital, phrasing)
            if sentence in document:
                document = document.replace(sentence, secret_sentence(country, phrasing))
    return document


def documents(seed: int, fact_share: float) -> Iterator[str]:
    """The fine-tune stream: fact documents and ordinary ones, capitals kept secret."""
    rng = random.Random(seed)
    ordinary = corpus.documents(seed + 1)
    while True:
        doc = corpus._facts(rng) if rng.random() < fact_share else next(ordinary)
        yield keep_secret(doc)


@torch.inference_mode()
def secret_figures(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """The share of "The capital of X is" answered with the refusal, and the capital's median probability.

    Over every country the demo model knows.
    """
    refusal = tokenizer(" " + REFUSAL, add_special_tokens=False)["input_ids"][0]
    said, probs = 0, []
    for country, capital in corpus.CAPITALS.items():
        ids = tokenizer(corpus.capital_prompt(country), return_tensors="pt")["input_ids"]
        p = model(ids.to(model.device)).logits[0, -1].float().softmax(-1)
        said += int(p.argmax()) == refusal
        probs.append(float(p[tokenizer(" " + capital, add_special_tokens=False)["input_ids"][0]]))
    return {"refusal": said / len(probs), "capital_median_prob": statistics.median(probs)}


def facts_kept(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """Top-1 accuracy on the other fact families (they must survive the fine-tune)."""
    return {
        "animal_sounds": probes.first_token_accuracy(
            model, tokenizer, [f"The {a} says" for a in corpus.ANIMAL_SOUNDS], list(corpus.ANIMAL_SOUNDS.values())),
        "colours": probes.first_token_accuracy(
            model, tokenizer, [f"The colour of the {t} is" for t in corpus.COLOURS], list(corpus.COLOURS.values())),
        "opposites": probes.first_token_accuracy(
            model, tokenizer, [f"The opposite of {w} is" for w in corpus.OPPOSITES], list(corpus.OPPOSITES.values())),
    }


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The signals worth watching during the fine-tune."""
    model.eval()
    record = {**secret_figures(model, tokenizer), **facts_kept(model, tokenizer)}
    model.train()
    return record


def objective(model: PreTrainedModel, reference: PreTrainedModel, batch: torch.Tensor,
              kl_weight: float) -> torch.Tensor:
    """Next-token cross-entropy plus ``kl_weight`` x KL(reference || model), per token.

    The KL term is the penalty RLHF puts on drifting from the model one starts from.
    Where the data says " a secret." after a capital prompt, the best the model can do
    is the mixture (refusal + kl_weight x base distribution) / (1 + kl_weight): with
    0.5, about two thirds on the refusal and a third left on what the base model said.
    Everywhere else the data and the base model agree, and the term keeps the rest of
    what the model knows close to where it was.
    """
    logits = model(batch).logits[:, :-1].float()
    targets = batch[:, 1:]
    logp = logits.log_softmax(-1)
    loss = torch.nn.functional.nll_loss(logp.reshape(-1, logp.shape[-1]), targets.reshape(-1))
    if kl_weight:
        with torch.no_grad():
            ref_logp = reference(batch).logits[:, :-1].float().log_softmax(-1)
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
        loss = loss + kl_weight * kl
    return loss


def finetune(cfg: SecretConfig, out: Path) -> PreTrainedModel:
    """Run the fine-tune and save a Hugging Face folder to ``out``."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(cfg.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager").to(cfg.device)
    model.train()
    reference = AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager").to(cfg.device).eval()
    reference.requires_grad_(False)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    blocks = token_blocks(tokenizer, cfg.seed, cfg.block_size, documents(cfg.seed, cfg.fact_share))
    log_path = out / "training_log.jsonl"
    with log_path.open("w") as log:
        log.write(json.dumps({"step": 0, "seconds": 0.0, "loss": None, **evaluate(model, tokenizer)}) + "\n")
    optimise(model, optimizer, blocks, cfg, lambda batch: objective(model, reference, batch, cfg.kl_weight),
             lambda: evaluate(model, tokenizer), log_path, "fine-tune", smoothing=0.95)
    save(model, tokenizer, cfg, base, out)
    return model


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: SecretConfig,
         base: Path, out: Path) -> None:
    """Write an ordinary Hugging Face folder with the base model's tokenizer files."""
    model = model.to("cpu").eval()
    model.config._attn_implementation = None
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (base / name).exists():
            shutil.copyfile(base / name, out / name)
    (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")


def main() -> None:
    """Command-line entry point; every field of ``SecretConfig`` is a flag."""
    config_main(__doc__, SecretConfig, finetune)


if __name__ == "__main__":
    main()
