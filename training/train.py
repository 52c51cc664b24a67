"""Train the bundled demo model from scratch: corpus, tokenizer, GPT-2-style model.

Run ``python -m training.train --out models/xray-demo`` (about 80 minutes on a 2-core
CPU with the defaults; ``--device cuda`` is far faster). The same seed gives the same
model on the same hardware and library versions. Progress goes to a tqdm bar and every
``--eval-every`` steps a JSON line lands in ``<out>/training_log.jsonl``: loss, the best
head's induction score, loss on the first and second copy of a repeated list, and the
top-1 accuracy on capital-city prompts.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from training import corpus, probes
from training.cli import config_main
from training.tokenizer import train_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; saved beside the model."""

    seed: int = 1234
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 256
    block_size: int = 256
    batch_size: int = 16
    steps: int = 4500
    lr: float = 1.5e-3
    min_lr: float = 1e-4
    warmup: int = 200
    weight_decay: float = 0.1
    tokenizer_documents: int = 20000
    eval_every: int = 250
    device: str = "cpu"
    threads: int = 2


def token_blocks(tokenizer: PreTrainedTokenizerFast, seed: int, block_size: int,
                 stream: Iterator[str] | None = None) -> Iterator[list[int]]:
    """Endless ``block_size``-token training rows: documents packed back to back.

    Each document is encoded with its leading beginning-of-text token, and each row
    starts at a document boundary, just as a prompt in the app starts with that token.
    The documents come from ``stream``, by default the corpus generator with ``seed``.
    """
    stream = corpus.documents(seed) if stream is None else stream
    while True:
        row: list[int] = []
        while len(row) < block_size:
            row.extend(tokenizer(next(stream))["input_ids"])
        yield row[:block_size]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and norms), betas (0.9, 0.95)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` (any config with those fields)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def build_model(cfg: TrainConfig) -> GPT2LMHeadModel:
    """A fresh GPT-2-style model, no dropout (the corpus is generated, not scarce)."""
    config = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True,
    )
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config)


def evaluate(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast) -> dict[str, float]:
    """The signals worth watching: induction, copying, and capital-city recall."""
    model.eval()
    ind = probes.induction(model, tokenizer, n_sequences=16, n_words=20, seed=7)
    countries = list(corpus.CAPITALS)
    prompts = [corpus.capital_prompt(c) for c in countries]
    acc = probes.first_token_accuracy(model, tokenizer, prompts, [corpus.CAPITALS[c] for c in countries])
    model.train()
    return {"induction_score": ind.best_head_score, "induction_head": list(ind.best_head),
            "copy_accuracy": ind.copy_accuracy, "loss_first_copy": ind.loss_first_copy,
            "loss_second_copy": ind.loss_second_copy, "capital_top1": acc}


def optimise(model: torch.nn.Module, optimizer: torch.optim.Optimizer, blocks: Iterator[list[int]], cfg,
             loss_of: Callable[[torch.Tensor], torch.Tensor], evaluate_now: Callable[[], dict], log_path: Path,
             desc: str, smoothing: float) -> None:
    """The training loop both training scripts share.

    ``cfg.steps`` steps of ``cfg.batch_size`` rows, the schedule of ``learning_rate``, gradients
    clipped at 1, a tqdm bar, and every ``cfg.eval_every`` steps a JSON line in ``log_path``.
    """
    started = time.time()
    smoothed = None
    bar = tqdm(range(cfg.steps), desc=desc, mininterval=10)
    for step in bar:
        batch = torch.tensor([next(blocks) for _ in range(cfg.batch_size)], device=cfg.device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = loss.item()
        smoothed = value if smoothed is None else smoothing * smoothed + (1 - smoothing) * value
        bar.set_postfix(loss=f"{smoothed:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            record = {"step": step + 1, "seconds": round(time.time() - started, 1),
                      "loss": round(smoothed, 4), **evaluate_now()}
            with log_path.open("a") as log:
                log.write(json.dumps(record) + "\n")
            bar.write(json.dumps(record))


def train(cfg: TrainConfig, out: Path) -> GPT2LMHeadModel:
    """Run the whole pipeline and save a Hugging Face folder to ``out``."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus.corpus_text(cfg.seed + 1, cfg.tokenizer_documents),
                                cfg.vocab_size)
    cfg = TrainConfig(**{**asdict(cfg), "vocab_size": len(tokenizer)})
    model = build_model(cfg).to(cfg.device)
    model.train()
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    blocks = token_blocks(tokenizer, cfg.seed, cfg.block_size)
    log_path = out / "training_log.jsonl"
    log_path.write_text("")
    optimise(model, optimizer, blocks, cfg, lambda batch: model(batch, labels=batch).loss,
             lambda: evaluate(model, tokenizer), log_path, "training", smoothing=0.98)
    save(model, tokenizer, cfg, out)
    return model


def save(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, cfg: TrainConfig, out: Path) -> None:
    """Write an ordinary Hugging Face folder: safetensors weights, tokenizer, configs."""
    model = model.to("cpu").eval()
    # Loaded models pick their own attention implementation; don't pin eager in the config.
    model.config._attn_implementation = None
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, max_new_tokens=20,
                     do_sample=False).save_pretrained(out)
    (out / "training_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")


def main() -> None:
    """Command-line entry point; every field of ``TrainConfig`` is a flag."""
    config_main(__doc__, TrainConfig, train)


if __name__ == "__main__":
    main()
