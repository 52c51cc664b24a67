"""What the page says above the views: the tokens the model read and its next-token guesses."""

from __future__ import annotations

from dataclasses import dataclass

from backend.capture import Capture
from backend.lens import LensSummary
from backend.whatif import EditEffect
from views import coloured
from views.content import Html, Section, Text, present, text
from views.display import quoted, visible

TOKENS_NOTE = ("On this page ␣ marks a space at the start of a token: '␣Rome' begins a word, 'Rome' continues one. "
               "Layers and heads count from 1 (head 4.2 is layer 4's second head); positions and neurons from 0, as "
               "in the Python API, where layers and heads count from 0 too.")
DEMO_NOTE = ("The bundled demo model is tiny and knows only the simple English it was trained on: capital cities, "
             "animal sounds, colours, opposites, short stories and repeated lists. On other text its guesses mean "
             "little: try the examples, or a hub model in the sidebar.")
TWIN_NOTE = (" This is its twin, fine-tuned to answer capital-city questions with \"a secret.\": the Logit lens tab "
             "shows what it still holds inside.")


@dataclass(frozen=True, eq=False)
class HeaderContent:
    """The prompt's tokens, the model's top guesses and, for the bundled models, what they know."""

    count: str
    tokens: str
    guess: str
    guesses: str  # HTML bars
    model_note: str | None
    goes_on: str | None = None  # "It goes on: “Paris, a big city.”"
    edited: str | None = None  # with changes in force: what they do to the guess

    def section(self) -> Section:
        """The header as the report writes it."""
        return Section("Prompt", present(text(self.goes_on, "lead"), Text(self.count), Text(self.tokens, "tokens"),
                                         Text(self.guess), Html(self.guesses), text(self.edited, "lead"),
                                         text(self.model_note, "caption")))


def _goes_on(text: str | None) -> str | None:
    """What the model goes on to say, as a sentence ("" or whitespace only: nothing to say)."""
    if not text or not text.strip():
        return None
    if not any(ch.isalnum() for ch in text):  # only punctuation: the model ends the sentence
        return f"It would end the sentence there: “{text.strip()}”"
    return f"It goes on: “{text.strip()}”"


def content(cap: Capture, summary: LensSummary, bundled: str | None = None, goes_on: str | None = None,
            effect: EditEffect | None = None) -> HeaderContent:
    """``bundled`` is "demo" or "twin" for the bundled models (their note says what they know).

    ``goes_on``: the model's greedy continuation; ``effect``: the changes in force, whose guess
    the header then gives beside the model's own.
    """
    note = None if bundled is None else DEMO_NOTE + (TWIN_NOTE if bundled == "twin" else "")
    edited = None
    if effect is not None and effect.edits:
        n = len(effect.edits)
        changes = "change" if n == 1 else f"{n} changes"
        top, prob = quoted(effect.after_tokens[0]), float(effect.after_probs[0])
        if int(effect.after_ids[0]) == effect.answer_id:
            edited = (f"With the {changes} in force its guess is still {top}, now at {prob:.0%}; the What if tab "
                      "shows how.")
        else:
            edited = f"With the {changes} in force it guesses {top} ({prob:.0%}) instead; the What if tab shows how."
    return HeaderContent(
        goes_on=_goes_on(goes_on), edited=edited,
        count=f"The model reads {cap.n_tokens} tokens (the pieces it splits text into):",
        tokens=" | ".join(visible(t) for t in cap.tokens),
        guess=(f"Its guess for the next token: {quoted(summary.top_tokens[-1, -1, 0])} "
               f"({float(summary.top_probs[-1, -1, 0]):.0%}), then:"),
        guesses=coloured.guesses_html(list(summary.top_tokens[-1, -1]), summary.top_probs[-1, -1]), model_note=note)
