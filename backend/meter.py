"""A meter of model time per visitor: every kind of work charged by what it costs, refused past a budget.

All work on a model runs inside ``hooks.exclusive(lm)``, which holds the model's lock, and a
model serves one run at a time; so the seconds a run holds the lock are what it cost the
room, whatever it was (a prompt, a sweep, a graph, a comparison). ``hooks.exclusive`` asks
the meter in force before it takes the lock (``check``) and charges the seconds it held it
(``charge``). Which meter and which visitor are in force is a context variable the page sets
for its script run (``visiting``); outside a page (tests, notebooks, the command line) none
is, and nothing is metered.

A visitor may spend ``budget_s`` seconds of model time in any ``window_s`` seconds. Work is
charged after it ran, so one run may take a visitor past the budget; the next is refused
with ``OverBudget``, which says how long to wait. Results already computed cost nothing
(they never reach the model).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from backend.errors import XrayError


class OverBudget(XrayError):
    """A visitor who used their share of the model's time; the message says when more is free."""

    def __init__(self, budget_s: float, window_s: float, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(f"This shared page gives each visitor {budget_s:g} seconds of the model's time every "
                         f"{window_s:g} seconds, so that everyone gets a turn, and yours is used up. Try again in "
                         f"{max(1, round(wait_s))} seconds; what is already on the page stays, and the examples are "
                         "ready at once.")


class Meter:
    """Model seconds spent per visitor over a sliding window; thread-safe, bounded in visitors kept."""

    def __init__(self, budget_s: float, window_s: float = 60.0, max_visitors: int = 10_000) -> None:
        self.budget_s, self.window_s, self.max_visitors = float(budget_s), float(window_s), max_visitors
        self._spent: dict[str, deque[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def _recent(self, visitor: str, now: float) -> deque[tuple[float, float]]:
        spent = self._spent.setdefault(visitor, deque())
        while spent and now - spent[0][0] > self.window_s:
            spent.popleft()
        return spent

    def spent(self, visitor: str) -> float:
        """Seconds this visitor's work held a model in the last window."""
        with self._lock:
            return sum(seconds for _, seconds in self._recent(visitor, time.monotonic()))

    def check(self, visitor: str) -> None:
        """Raise ``OverBudget`` when the visitor has no time left in this window."""
        now = time.monotonic()
        with self._lock:
            spent = self._recent(visitor, now)
            total = sum(seconds for _, seconds in spent)
            if total < self.budget_s:
                return
            # the wait until enough of the oldest charges leave the window
            over, wait = total - self.budget_s, 0.0
            for at, seconds in spent:
                over -= seconds
                wait = at + self.window_s - now
                if over < 0:
                    break
        raise OverBudget(self.budget_s, self.window_s, max(wait, 0.0))

    def charge(self, visitor: str, seconds: float) -> None:
        """Add what one piece of work cost."""
        now = time.monotonic()
        with self._lock:
            if visitor not in self._spent and len(self._spent) >= self.max_visitors:
                for old in [v for v, s in self._spent.items() if not s or now - s[-1][0] > self.window_s]:
                    del self._spent[old]
            self._recent(visitor, now).append((now, float(seconds)))


_CURRENT: ContextVar[tuple[Meter, str] | None] = ContextVar("xray_meter", default=None)
_DEPTH: ContextVar[int] = ContextVar("xray_meter_depth", default=0)


def in_force() -> tuple[Meter, str] | None:
    """The meter and visitor work is charged to here (None: not metered), to carry into another thread."""
    return _CURRENT.get()


@contextmanager
def visiting(meter: Meter | None, visitor: str) -> Iterator[None]:
    """Work done inside is checked against and charged to ``visitor`` on ``meter`` (None: not metered)."""
    token = _CURRENT.set((meter, visitor) if meter is not None else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)


@contextmanager
def metered(lock) -> Iterator[None]:
    """Check the visitor in force, take ``lock``, and charge the seconds it is held (``hooks.exclusive`` calls this).

    Nested uses are charged once, by the outermost; time spent waiting for the lock is not charged.
    """
    current, depth = _CURRENT.get(), _DEPTH.get()
    if current is not None and not depth:
        current[0].check(current[1])
    with lock:
        token = _DEPTH.set(depth + 1)
        start = time.perf_counter()
        try:
            yield
        finally:
            _DEPTH.reset(token)
            if current is not None and not depth:
                current[0].charge(current[1], time.perf_counter() - start)


__all__ = ["in_force", "Meter", "OverBudget", "metered", "visiting"]
