"""What an edit does to the answer: the next-token guesses and the answer's lens trajectory, before and after."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.capture import Capture, capture
from backend.edits import Edit
from backend.lens import token_trajectory, top_guesses
from backend.loading import LoadedModel


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

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(a.nbytes for a in (self.before_ids, self.before_probs, self.after_ids, self.after_probs,
                                      self.answer_before, self.answer_after)) + 100 * len(self.before_tokens) * 2


def edit_effect(lm: LoadedModel, plain: Capture, edits: tuple[Edit, ...], *, max_tokens: int,
                k: int = 5) -> EditEffect:
    """Run ``plain.prompt`` again with ``edits`` and compare its last position with ``plain``'s."""
    edited = capture(lm, plain.prompt, max_tokens=max_tokens, edits=edits)
    last = plain.n_tokens - 1
    before_ids, before_tokens, before_probs = top_guesses(lm, plain.logits[last], k)
    after_ids, after_tokens, after_probs = top_guesses(lm, edited.logits[last], k)
    answer_id = int(before_ids[0])
    return EditEffect(
        edits=tuple(edits), answer_id=answer_id, answer=before_tokens[0],
        before_ids=before_ids, before_tokens=before_tokens, before_probs=before_probs,
        after_ids=after_ids, after_tokens=after_tokens, after_probs=after_probs,
        answer_before=token_trajectory(lm, plain, answer_id, [last]).probs[:, 0],
        answer_after=token_trajectory(lm, edited, answer_id, [last]).probs[:, 0])
