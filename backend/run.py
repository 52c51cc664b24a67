"""A run as one value: model, prompt, token limit, edits, and the second model in compare mode.

It is the cache key of every computation on the run, the prefix of the page's per-run
widget keys (``Run.id``) and what a link holds (``Run.query``). Adding a field changes
this one place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from backend.edits import Edit, HeadAblation, NeuronAblation, PromptSteering, ResidPatch, Steering

MAX_LINK_EDITS = 16


@dataclass(frozen=True)
class Run:
    """One prompt through one model with some edits; ``source`` None is the bundled demo model.

    ``compare`` names a second model read beside the first (compare mode): a source as the
    page spells it, with "demo" for the bundled demo model.
    """

    source: str | None
    device: str
    dtype: str
    prompt: str
    max_tokens: int
    edits: tuple[Edit, ...] = ()
    compare: str | None = None

    @property
    def model_key(self) -> str:
        """What identifies the loaded model."""
        return f"{self.source or 'demo'}|{self.device}|{self.dtype}"

    @property
    def id(self) -> str:
        """A short, stable id (the prefix of per-run widget keys)."""
        parts = (self.model_key, self.prompt, self.max_tokens, tuple(_edit_key(e) for e in self.edits))
        if self.compare is not None:
            parts = (*parts, self.compare)
        return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()

    def plain(self) -> Run:
        """The same run without edits, on the first model alone."""
        return replace(self, edits=(), compare=None)

    def second(self) -> Run:
        """The plain run of the second model (compare mode), with the same device, precision and limit."""
        if self.compare is None:
            raise ValueError("This run compares no second model.")
        return replace(self, source=None if self.compare == "demo" else self.compare, edits=(), compare=None)

    def with_prompt(self, prompt: str) -> Run:
        """The same model and limit on another prompt, without edits."""
        return replace(self, prompt=prompt, edits=())

    def query(self) -> dict[str, str]:
        """What a link holds: the prompt, the model and, when there are any, the edits."""
        query = {"prompt": self.prompt, "model": self.source or "demo"}
        if self.edits:
            query["edits"] = edits_to_json(self.edits)
        if self.compare is not None:
            query["compare"] = self.compare
        return query


def _edit_key(edit: Edit) -> tuple:
    if isinstance(edit, Steering):
        digest = hashlib.blake2b(edit.vector.tobytes(), digest_size=8).hexdigest()
        return ("steering", edit.layer, digest, float(edit.strength), edit.positions)
    if isinstance(edit, ResidPatch):
        return ("patch", edit.layer, edit.position, id(edit.source))
    return (type(edit).__name__, *vars(edit).values())


def edits_to_json(edits: tuple[Edit, ...]) -> str:
    """Edits as a link carries them: head and neuron ablations and prompt steering only."""
    items: list[list] = []
    for edit in edits:
        if isinstance(edit, HeadAblation):
            items.append(["head", edit.layer, edit.head, edit.mode])
        elif isinstance(edit, NeuronAblation):
            items.append(["neuron", edit.layer, edit.neuron, edit.value])
        elif isinstance(edit, PromptSteering):
            items.append(["steer", edit.layer, edit.strength, edit.prompt_a, edit.prompt_b])
        else:
            raise ValueError(f"A link cannot carry a {type(edit).__name__} edit.")
    return json.dumps(items, ensure_ascii=False, separators=(",", ":"))


def _number(value: object, kind: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{value!r} is not a{'n integer' if kind is int else ' number'}")
    return kind(value)


def _edit_from_item(item: object) -> Edit:
    if not isinstance(item, list) or not item:
        raise ValueError(f"{item!r} is not an edit")
    kind, args = item[0], item[1:]
    if kind == "head" and len(args) == 3 and args[2] in ("zero", "mean"):
        return HeadAblation(_number(args[0], int), _number(args[1], int), args[2])
    if kind == "neuron" and len(args) == 3:
        return NeuronAblation(_number(args[0], int), _number(args[1], int), _number(args[2], float))
    if kind == "steer" and len(args) == 4 and all(isinstance(a, str) for a in args[2:]):
        return PromptSteering(_number(args[0], int), args[2], args[3], _number(args[1], float))
    raise ValueError(f"{json.dumps(item)[:80]} is not an edit this page knows")


def edits_from_json(text: str) -> tuple[Edit, ...]:
    """The edits a link holds; ``ValueError`` says what could not be read."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the edits are not valid JSON ({error.msg})") from error
    if not isinstance(items, list):
        raise ValueError("the edits must be a list")
    if len(items) > MAX_LINK_EDITS:
        raise ValueError(f"a link holds at most {MAX_LINK_EDITS} edits; this one has {len(items)}")
    return tuple(_edit_from_item(item) for item in items)
