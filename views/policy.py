"""Who may make the server do what: open for one user on their own machine, narrow in public mode. No Streamlit."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _number(name: str, default: int) -> int:
    """A positive whole number from the environment; a malformed one falls back to the default."""
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


@dataclass(frozen=True)
class Policy:
    """The page's limits, read from the environment on every run."""

    public: bool  # XRAY_PUBLIC=1: a room of visitors
    models: tuple[str, ...]  # XRAY_MODELS: hub ids or folders offered besides the bundled model (public mode)
    max_tokens: int  # XRAY_MAX_TOKENS: the sidebar's ceiling (public default 128)
    new_runs_per_minute: int  # XRAY_RUNS_PER_MINUTE: model runs one visitor may start per minute (public mode)
    features: tuple[str, ...] = ()  # XRAY_FEATURES: dictionaries offered for the listed models (public mode)
    graph_tokens: int = 64  # XRAY_GRAPH_TOKENS: the longest prompt a graph is traced for (public default 32)
    patch_tokens: int = 4096  # XRAY_PATCH_TOKENS: the longest prompt pair the patching sweep runs (public default 32)
    budget_s: int = 0  # XRAY_BUDGET_SECONDS: model seconds per visitor per minute (public default 20; 0: none)

    @classmethod
    def from_env(cls) -> Policy:
        """Read the environment; malformed numbers fall back to the defaults."""
        public = os.environ.get("XRAY_PUBLIC", "").strip().lower() not in ("", "0", "false", "no")
        models = tuple(m.strip() for m in os.environ.get("XRAY_MODELS", "").split(",") if m.strip())
        features = tuple(f.strip() for f in os.environ.get("XRAY_FEATURES", "").split(",") if f.strip())
        return cls(public=public, models=models if public else (),
                   max_tokens=_number("XRAY_MAX_TOKENS", 128 if public else 4096),
                   new_runs_per_minute=_number("XRAY_RUNS_PER_MINUTE", 12), features=features if public else (),
                   graph_tokens=_number("XRAY_GRAPH_TOKENS", 32 if public else 64),
                   patch_tokens=_number("XRAY_PATCH_TOKENS", 32 if public else 4096),
                   budget_s=_number("XRAY_BUDGET_SECONDS", 20) if public else 0)

    @property
    def model_slots(self) -> int:
        """Models kept loaded.

        Public mode keeps every offered one (a visitor never evicts the presenter's); open mode the two
        compared and one more.
        """
        return 2 + len(self.models) if self.public else 3
