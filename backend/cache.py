"""A thread-safe least-recently-used cache bounded by bytes as well as entries.

Streamlit's own caches bound only the number of entries, and one capture of a big model
at a long prompt can take gigabytes, so eight of them are no bound at all. Here every
value reports its size (``nbytes``) and the cache drops the least recently used values
until the total fits. A value larger than the whole budget is computed, returned and not
kept. Concurrent requests for the same key compute it once; failures are not cached.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np

V = TypeVar("V")


def size_of(value: object) -> int:
    """Bytes a value holds: its ``nbytes`` if it has one, else the arrays of a tuple, else a small constant."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, (int, np.integer)):
        return int(nbytes)
    if isinstance(value, (tuple, list)):
        return sum(size_of(item) for item in value)
    return sys.getsizeof(value)


class ByteCache(Generic[V]):
    """Keeps at most ``max_bytes`` of values and at most ``max_entries`` of them."""

    def __init__(self, max_bytes: int, max_entries: int = 256) -> None:
        self.max_bytes, self.max_entries = int(max_bytes), int(max_entries)
        self._values: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value for ``key``, computing it (once, however many threads ask) when missing."""
        found = self._lookup(key)
        if found is not None:
            return found[0]
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            found = self._lookup(key)  # another thread may have computed it meanwhile
            if found is not None:
                return found[0]
            try:
                value = compute()
                self._store(key, value)
            finally:
                with self._lock:
                    self._computing.pop(key, None)
        return value

    def _lookup(self, key: Hashable) -> tuple[V] | None:
        with self._lock:
            if key not in self._values:
                return None
            self._values.move_to_end(key)
            return (self._values[key][0],)

    def _store(self, key: Hashable, value: V) -> None:
        size = size_of(value)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._values:
                self.bytes -= self._values.pop(key)[1]
            self._values[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes or len(self._values) > self.max_entries:
                _, (_, dropped) = self._values.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        """Drop every value."""
        with self._lock:
            self._values.clear()
            self.bytes = 0
