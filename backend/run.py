"""A run as one value: model, prompt, token limit, edits, the second model in compare mode, the features read.

It is the cache key of every computation on the run, the prefix of the page's per-run
widget keys (``Run.id``) and what a link holds (``Run.query``). Adding a field changes
this one place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from backend.edits import Edit, edit_from_link
from backend.features import BUNDLED  # importing backend.features also registers the feature edits for links
from backend.loading import TWIN_ID

MAX_LINK_EDITS = 16


@dataclass(frozen=True)
class Run:
    """One prompt through one model with some edits; ``source`` None is the bundled demo model.

    ``compare`` names a second model read beside the first (compare mode): a source as the
    page spells it, with "demo" for the bundled demo model. ``features`` names the
    dictionaries read with the model (``backend.features.load_features``): "bundled" for the
    demo model's set, a folder or hub id, or None.
    """

    source: str | None
    device: str
    dtype: str
    prompt: str
    max_tokens: int
    edits: tuple[Edit, ...] = ()
    compare: str | None = None
    features: str | None = None

    @staticmethod
    def default_features(source: str | None) -> str | None:
        """The dictionaries a model is read with unless a link or the sidebar names others.

        The bundled set for the demo model and its twin; none for any other model.
        """
        return BUNDLED if source in (None, "demo", TWIN_ID) else None

    @property
    def model_key(self) -> str:
        """What identifies the loaded model."""
        return f"{self.source or 'demo'}|{self.device}|{self.dtype}"

    @property
    def id(self) -> str:
        """A short, stable id (the prefix of per-run widget keys)."""
        parts = (self.model_key, self.prompt, self.max_tokens, tuple(e.identity() for e in self.edits))
        if self.compare is not None:
            parts = (*parts, self.compare)
        if self.features is not None:
            parts = (*parts, "features", self.features)
        return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()

    def plain(self) -> Run:
        """The same run without edits, on the first model alone."""
        return replace(self, edits=(), compare=None)

    def second(self) -> Run:
        """The plain run of the second model (compare mode), with the same device, precision and limit."""
        if self.compare is None:
            raise ValueError("This run compares no second model.")
        source = None if self.compare == "demo" else self.compare
        return replace(self, source=source, edits=(), compare=None, features=self.default_features(source))

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
        if self.features != self.default_features(self.source):
            query["features"] = self.features or "none"
        return query


def edits_to_json(edits: tuple[Edit, ...]) -> str:
    """Edits as a link carries them (``Edit.link``); ``ValueError`` for one a link cannot carry."""
    return json.dumps([edit.link() for edit in edits], ensure_ascii=False, separators=(",", ":"))


def edits_from_json(text: str) -> tuple[Edit, ...]:
    """The edits a link holds; ``ValueError`` says what could not be read."""
    if _depth(text) > MAX_LINK_DEPTH:
        raise ValueError(f"the edits are nested more than {MAX_LINK_DEPTH} levels deep; an edit is a flat list")
    try:
        items = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as error:
        msg = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
        raise ValueError(f"the edits are not valid JSON ({msg})") from error
    if not isinstance(items, list):
        raise ValueError("the edits must be a list")
    if len(items) > MAX_LINK_EDITS:
        raise ValueError(f"a link holds at most {MAX_LINK_EDITS} edits; this one has {len(items)}")
    return tuple(edit_from_link(item) for item in items)


MAX_LINK_DEPTH = 4  # a list of edits, each a list, holding at most a list of positions


def _depth(text: str) -> int:
    """The deepest nesting of brackets in JSON text, strings skipped (no parsing, so no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a link may hold")
