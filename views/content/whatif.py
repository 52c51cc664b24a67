"""The what-if view's content: the answer without and with the changes in force."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from backend.edits import HeadAblation
from backend.whatif import EditEffect
from views import captions, coloured, figures
from views.content import Chart, Html, Section, Text, present, text
from views.display import quoted

TITLE = "What if"
EXPLAIN = """
The other views show what happens inside; they cannot say whether it *matters*. Here you
change the model and watch the answer:
- **Switch off** a head (on the Attention tab) or a neuron (on the Neurons tab): its
  output becomes zero, as if it were not there.
- **Steer**: add a direction to the model's working space (the residual stream) at one
  layer. The direction is what separates two short prompts, e.g. "The cat" minus "The dog";
  pushing along it makes the model behave more like the first.

If the answer collapses when a part is switched off, the model needs that part for this
prompt. If nothing changes, it does not (or another part does the same job).
"""
CAVEAT = ("Switching a part off tests this prompt, not the part's role in general: the model never saw "
          "a zero there during training, and other parts can take over. Steering far (large strengths) "
          "pushes the model where it has never been, and its guesses then mean little.")


INDUCTION_PROMPT = "apple river lamp cloud seven green door apple river lamp cloud seven green"
HEAD_NOTE = ("Why head 4.2? On this prompt it is the head the answer needs most: of the demo model's 16 heads, "
             "switching off 4.2 drops '␣door' from 100% to 4%, more than any other. The Attention tab names 4.4 "
             "the clearest induction head (it looks at the word after the earlier copy, score 0.55), yet with 4.4 "
             "off '␣door' keeps 83%, while 4.2 looks like no induction head at all (score 0.00). Looking like a "
             "pattern and being needed are different questions: that is what switching parts off tests. Try 4.4 "
             "from the Attention tab.")
NOTES = {(INDUCTION_PROMPT, (HeadAblation(3, 1),)): HEAD_NOTE}  # an example's changes, explained (demo model)


@dataclass(frozen=True, eq=False)
class WhatIfContent:
    """What the changes in force do to the next-token guesses and to the answer's lens trajectory."""

    sentence: str
    changes: tuple[str, ...]
    before: str  # guesses as HTML
    after: str
    trajectory: go.Figure
    each: tuple[str, ...] = ()  # with several changes: what each one does alone
    note: str | None = None  # an example's changes, explained

    def section(self) -> Section:
        """The view as the report writes it."""
        return Section(TITLE, (
            Text(self.sentence, "lead"), *present(text(self.note, "info")),
            Text("Changes in force: " + "; ".join(self.changes) + "."), *(Text(line) for line in self.each),
            Text("Next-token guesses, the model as it is:"), Html(self.before), Text("With the changes:"),
            Html(self.after), Chart(self.trajectory, "whatif_trajectory"), Text(CAVEAT, "caveat")))


def content(effect: EditEffect, prompt: str | None = None, bundled: bool = False) -> WhatIfContent:
    """The view of ``effect`` (``backend.whatif.edit_effect``); an example's note on ``prompt`` (bundled model)."""
    labels = [edit.label() for edit in effect.edits]
    answer = quoted(effect.answer)
    each = tuple(f"Alone, {e.label}: {answer} {effect.before_probs[0]:.0%} → {e.answer_prob:.0%}"
                 + (f"; the model says {quoted(e.top)} ({e.top_prob:.0%})" if e.top != effect.answer else "") + "."
                 for e in effect.each)
    new = (effect.new_before, effect.new_after, effect.new_answer) if effect.new_answer is not None else None
    return WhatIfContent(
        each=each, note=NOTES.get((prompt, tuple(effect.edits))) if bundled else None,
        sentence=captions.edit_effect_sentence(labels, effect), changes=tuple(labels),
        before=coloured.guesses_html(effect.before_tokens, effect.before_probs),
        after=coloured.guesses_html(effect.after_tokens, effect.after_probs),
        trajectory=figures.before_after(effect.answer_before, effect.answer_after, effect.answer, new))
