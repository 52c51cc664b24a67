"""Capture memory is reused only when no array, view or tensor can still reach it."""

from __future__ import annotations

import gc

import numpy as np
import torch

from backend.buffers import BufferPool


def shares(a: np.ndarray, b: np.ndarray) -> bool:
    return np.shares_memory(a, b)


def test_memory_is_reused_only_when_nothing_holds_it():
    pool = BufferPool(max_free_bytes=2**20)
    a = pool.empty((4, 8))
    a[:] = 1.0
    keep = {"view": a[1:], "view of view": a[1:][::2], "tensor": torch.from_numpy(a),
            "reshaped": a.reshape(-1), "memoryview": memoryview(a)}
    original = a.__array_interface__["data"][0]
    del a
    for name in list(keep):
        b = pool.empty((4, 8))
        assert b.__array_interface__["data"][0] != original, name  # still in use: fresh memory
        del b
        del keep[name]
        gc.collect()
    c = pool.empty((4, 8))
    assert c.__array_interface__["data"][0] == original  # nothing held it: reused
    d = pool.empty((4, 8))
    assert not shares(c, d)
    assert pool.empty((2, 8)).nbytes == 64  # other sizes get their own memory


def test_free_memory_is_bounded():
    pool = BufferPool(max_free_bytes=1000)
    for size in range(1, 50):
        pool.empty((size, 100), np.uint8)  # dropped at once: free
    assert pool.free_bytes <= 1000 + 49 * 100
    assert len(pool._owners) <= 12


def test_a_smaller_array_reuses_a_larger_free_owner_but_not_a_huge_one():
    pool = BufferPool(max_free_bytes=2**20)
    a = pool.empty((100,))
    start = a.__array_interface__["data"][0]
    del a
    b = pool.empty((80,))  # fits in the free 400 bytes without wasting more than its size
    assert b.__array_interface__["data"][0] == start and b.shape == (80,)
    del b
    c = pool.empty((10,))  # 40 bytes in 400 would waste too much: fresh memory
    assert c.__array_interface__["data"][0] != start
