"""Typed errors the app turns into one clear message; each carries the numbers a user needs."""

from __future__ import annotations


class XrayError(Exception):
    """Base of every error the backend raises on purpose."""


class EmptyPrompt(XrayError):
    """The prompt has no visible text."""

    def __init__(self) -> None:
        super().__init__("The prompt is empty: type some text to look inside the model.")


class PromptTooLong(XrayError):
    """The prompt has more tokens than the limit in force."""

    def __init__(self, n_tokens: int, limit: int, reason: str, can_raise: bool = True) -> None:
        self.n_tokens, self.limit = n_tokens, limit
        advice = "Shorten the prompt or raise the limit." if can_raise else \
            "Shorten the prompt: the model cannot read more than this."
        super().__init__(f"The prompt is too long: {n_tokens} tokens, limit {limit} ({reason}). {advice}")


class CaptureTooLarge(XrayError):
    """The arrays a capture would return exceed the memory budget."""

    def __init__(self, n_tokens: int, needed_bytes: int, budget_bytes: int) -> None:
        self.n_tokens, self.needed_bytes, self.budget_bytes = n_tokens, needed_bytes, budget_bytes
        super().__init__(f"CaptureTooLarge: {n_tokens} tokens need {needed_bytes / 2**20:.0f} MiB "
                         f"of captured activations, budget {budget_bytes / 2**20:.0f} MiB. "
                         "Shorten the prompt or use a smaller model.")


class ModelLoadError(XrayError):
    """A model could not be loaded; the message says why and what to do."""


class UnsupportedModel(XrayError):
    """The model loaded, but the backend cannot read it correctly; names what was not found."""


class Cancelled(XrayError):
    """The caller's ``should_stop`` said nobody waits for this run any more; nothing is returned."""

    def __init__(self) -> None:
        super().__init__("The run was stopped: nobody was waiting for it any more.")
