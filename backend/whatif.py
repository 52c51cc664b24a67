"""What an edit does to the answer: the next-token guesses and the answer's lens trajectory, before and after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from backend.capture import Capture, capture
from backend.edits import Edit
from backend.lens import token_trajectory, top_guesses
from backend.loading import LoadedModel
from backend.tokens import token_strings


@dataclass(frozen=True, eq=False)
class EditEffect:
    """The last position of one prompt, without and with some edits. Small: no activations."""

    edits: tuple[Edit, ...]
    answer_id: int  # the model's top guess without the edits
    answer: str
    before_ids: np.ndarray  # (k,) int64, top guesses without the edits, most likely first
    before_tokens: list[str]  # (k,)
    before_probs: np.ndarray  # (k,) float32
    after_ids: np.ndarray  # (k,) int64, top guesses with the edits
    after_tokens: list[str]  # (k,)
    after_probs: np.ndarray  # (k,) float32
    answer_before: np.ndarray  # (n_layers + 1,) float32: the answer's lens probability at each layer, before
    answer_after: np.ndarray  # (n_layers + 1,) float32: the same with the edits
    each: tuple[EachEffect, ...] = ()  # with several edits: what each one does alone
    new_before: np.ndarray | None = None  # when the top guess changes: the new one's lens probability, before
    new_after: np.ndarray | None = None  # ... and with the edits

    @property
    def new_answer(self) -> str | None:
        """The top guess with the edits, when it is not the answer (else None)."""
        return self.after_tokens[0] if int(self.after_ids[0]) != self.answer_id else None

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        extra = [a for a in (self.new_before, self.new_after) if a is not None]
        return sum(a.nbytes for a in (self.before_ids, self.before_probs, self.after_ids, self.after_probs,
                                      self.answer_before, self.answer_after, *extra)) + \
            100 * len(self.before_tokens) * 2 + 200 * len(self.each)


@dataclass(frozen=True)
class EachEffect:
    """One edit of several, alone: the answer's probability and the top guess with only it in force."""

    label: str
    answer_prob: float
    top: str
    top_prob: float


MAX_EACH = 16  # edits measured one by one (the page allows as many in force)


def edit_effect(lm: LoadedModel, plain: Capture, edits: tuple[Edit, ...], *, max_tokens: int,
                k: int = 5, should_stop: Callable[[], bool] | None = None) -> EditEffect:
    """Run ``plain.prompt`` again with ``edits`` and compare its last position with ``plain``'s.

    With several edits each also runs alone (``each``: up to ``MAX_EACH``); when the top guess
    changes, the new one's lens trajectory comes too. ``should_stop`` ends the work between runs.
    """
    edited = capture(lm, plain.prompt, max_tokens=max_tokens, edits=edits, should_stop=should_stop)
    last = plain.n_tokens - 1
    before_ids, before_tokens, before_probs = top_guesses(lm, plain.logits[last], k)
    after_ids, after_tokens, after_probs = top_guesses(lm, edited.logits[last], k)
    answer_id = int(before_ids[0])
    each = []
    if len(edits) > 1:
        for edit in edits[:MAX_EACH]:
            alone = capture(lm, plain.prompt, max_tokens=max_tokens, edits=(edit,), should_stop=should_stop)
            probs = torch.from_numpy(alone.logits[last]).float().softmax(-1)
            top = int(probs.argmax())
            each.append(EachEffect(edit.label(), float(probs[answer_id]),
                                   token_strings(lm.tokenizer, [top])[0], float(probs[top])))
    new_id = int(after_ids[0])
    changed = new_id != answer_id
    return EditEffect(
        each=tuple(each),
        new_before=token_trajectory(lm, plain, new_id, [last]).probs[:, 0] if changed else None,
        new_after=token_trajectory(lm, edited, new_id, [last]).probs[:, 0] if changed else None,
        edits=tuple(edits), answer_id=answer_id, answer=before_tokens[0],
        before_ids=before_ids, before_tokens=before_tokens, before_probs=before_probs,
        after_ids=after_ids, after_tokens=after_tokens, after_probs=after_probs,
        answer_before=token_trajectory(lm, plain, answer_id, [last]).probs[:, 0],
        answer_after=token_trajectory(lm, edited, answer_id, [last]).probs[:, 0])
