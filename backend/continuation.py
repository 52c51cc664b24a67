"""What the model goes on to say: a few greedy tokens after the prompt, as text.

One next token is what the views explain, but a reader hears a sentence: the twin's '␣a'
is "a secret." ``continuation(lm, prompt)`` takes the most likely token again and again,
up to ``max_new`` tokens, stopping after the first one that ends a sentence or a line. One
forward per token, each reusing the previous one's keys and values; under the model's lock
(``hooks.exclusive``), so it is metered like every other piece of work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from backend import hooks
from backend.capture import DEFAULT_MAX_TOKENS, tokenize
from backend.errors import Cancelled
from backend.loading import LoadedModel

MAX_NEW = 8
ENDS = (".", "!", "?", "\n")


@dataclass(frozen=True)
class Continuation:
    """The greedy continuation of a prompt: its tokens and the text they make."""

    prompt: str
    token_ids: tuple[int, ...]
    text: str  # decoded as the tokenizer joins them (a leading space kept)
    finished: bool  # ended a sentence or a line within ``max_new`` tokens

    @property
    def nbytes(self) -> int:
        """Memory held (the caches' measure)."""
        return 64 + 8 * len(self.token_ids) + len(self.text)


def continuation(lm: LoadedModel, prompt: str, *, max_new: int = MAX_NEW, max_tokens: int = DEFAULT_MAX_TOKENS,
                 should_stop: Callable[[], bool] | None = None) -> Continuation:
    """The greedy continuation of ``prompt``: at most ``max_new`` tokens, ending after a sentence's end."""
    ids = tokenize(lm, prompt, max_tokens)
    new: list[int] = []
    finished = False
    with hooks.exclusive(lm):
        inputs = torch.tensor([ids], device=lm.input_device)
        past = None
        for _ in range(max_new):
            if should_stop is not None and should_stop():
                raise Cancelled()
            out = lm.model(input_ids=inputs, use_cache=True, **({} if past is None else {"cache": past}))
            past = out.cache
            token = int(out.logits[0, -1].argmax())
            new.append(token)
            piece = lm.tokenizer.decode([token])
            if token == lm.tokenizer.eos_token_id or any(end in piece for end in ENDS):
                finished = True
                break
            inputs = torch.tensor([[token]], device=lm.input_device)
    text = lm.tokenizer.decode(new, skip_special_tokens=True)
    return Continuation(prompt=prompt, token_ids=tuple(new), text=text, finished=finished)


__all__ = ["Continuation", "continuation"]
