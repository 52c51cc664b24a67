"""Measures of what the demo model has learned, shared by training logs and the quality script.

They use only the transformers model itself (eager attention, ``output_attentions``), so
they are an independent check on the app's backend rather than a use of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.corpus import COMMON_WORDS


@dataclass(frozen=True)
class InductionResult:
    """How well the model copies a random word list it has just read once."""

    best_head_score: float  # mean attention from a repeated token to the token after its first copy
    best_head: tuple[int, int]  # (layer, head)
    copy_accuracy: float  # share of second-copy tokens predicted top-1 (first token excluded)
    loss_first_copy: float
    loss_second_copy: float


def repeated_token_batch(tokenizer: PreTrainedTokenizerBase, n_sequences: int,
                         n_words: int, seed: int, max_positions: int = 10**9) -> tuple[torch.Tensor, int]:
    """``(n_sequences, 1 + 2L)`` ids: BOS, then L word tokens, then the same L tokens again.

    Words are drawn without replacement, so each token of the second copy has exactly one
    earlier occurrence. Each sequence is cut to the shortest one's length ``L``, and ``L``
    to what fits in ``max_positions``.
    """
    rng = random.Random(seed)
    copies = []
    for _ in range(n_sequences):
        words = rng.sample(COMMON_WORDS, n_words)
        copies.append(tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"])
    length = min(min(len(c) for c in copies), (max_positions - 1) // 2)
    bos = tokenizer.bos_token_id
    rows = [[bos] + c[:length] + c[:length] for c in copies]
    return torch.tensor(rows), length


@torch.inference_mode()
def induction(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              n_sequences: int = 32, n_words: int = 20, seed: int = 0) -> InductionResult:
    """Induction score of every head and copying accuracy on repeated random word lists."""
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    ids, length = repeated_token_batch(tokenizer, n_sequences, n_words, seed, context)
    out = model(ids, output_attentions=True)
    second = torch.arange(1 + length, 1 + 2 * length)  # query positions in the second copy
    target = second - length + 1  # the token after each one's first occurrence
    scores = torch.stack([a[:, :, second, target].mean(dim=(0, 2)) for a in out.attentions])
    best = int(scores.argmax())
    n_heads = scores.shape[1]
    logprobs = out.logits[:, :-1].log_softmax(-1)
    token_lp = logprobs.gather(-1, ids[:, 1:, None])[..., 0]  # (batch, seq-1): log p(ids[t+1])
    first_copy = token_lp[:, 1:length]  # predictions of tokens 2..L of the first copy
    second_copy = token_lp[:, length + 1:2 * length]  # tokens 2..L of the second copy
    predicted = out.logits[:, length + 1:2 * length].argmax(-1) == ids[:, length + 2:]
    return InductionResult(
        best_head_score=float(scores.max()),
        best_head=(best // n_heads, best % n_heads),
        copy_accuracy=float(predicted.float().mean()),
        loss_first_copy=float(-first_copy.mean()),
        loss_second_copy=float(-second_copy.mean()),
    )


@torch.inference_mode()
def first_token_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                         prompts: list[str], answers: list[str]) -> float:
    """Share of prompts whose top-1 next token is the first token of ``" " + answer``."""
    hits = 0
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        want = tokenizer(" " + answer, add_special_tokens=False)["input_ids"][0]
        hits += int(model(ids).logits[0, -1].argmax()) == want
    return hits / len(prompts)
