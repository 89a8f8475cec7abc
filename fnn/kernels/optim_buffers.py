"""Output arrays for the NumPy optimizer kernels, recycled once nothing references them.

Fresh multi-megabyte arrays come from the operating system as untouched pages
(the C allocator returns large blocks to it when they are freed), and the
first write of each 4 KiB page is a page fault. A training step that returns
new parameters and moments every step would fault on all of them.
:func:`empty` therefore hands out again the large arrays it gave before, once
nothing references them any more (CPython reference counts: an array still
held anywhere -- by a variable, a container, a view or a buffer export -- is
never reused). Every array it returns is one that no other code holds, so the
kernels that write into it stay pure.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np

__all__ = ["clear", "empty"]

MIN_BYTES = 1 << 16  # smaller arrays come from the allocator's free lists without faults
MAX_BYTES = 1 << 28  # at most this much memory is kept for recycling (in use or free)
MAX_PER_SHAPE = 256  # a bucket is scanned linearly; deep nets have many leaves of one shape


def _first_unreferenced(bucket: list, limit: int) -> int:
    """The index of the first array in ``bucket`` whose only references are the
    bucket's (and this scan's own), or -1."""
    for i in range(len(bucket)):
        if sys.getrefcount(bucket[i]) <= limit:
            return i
    return -1


def _calibrate() -> int:
    """The reference count :func:`_first_unreferenced` sees for an array held by
    its bucket alone (it differs between Python versions); 0 disables recycling."""
    if sys.implementation.name != "cpython" or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return 0
    probe = [np.empty(1)]
    for limit in range(1, 8):
        if _first_unreferenced(probe, limit) == 0:
            return limit
    return 0  # pragma: no cover - no CPython behaves like this


class _Recycler:
    """Large output arrays by (shape, dtype), handed out again once unreferenced."""

    def __init__(self) -> None:
        self.free_limit = _calibrate()
        self.buckets: dict[tuple, list] = {}
        self.nbytes = 0
        self.lock = threading.Lock()

    def empty(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        size = dtype.itemsize * math.prod(shape)
        if not self.free_limit or size < MIN_BYTES:
            return np.empty(shape, dtype)
        key = (shape, dtype)
        with self.lock:
            bucket = self.buckets.setdefault(key, [])
            i = _first_unreferenced(bucket, self.free_limit)
            if i >= 0:
                return bucket[i]
            if len(bucket) >= MAX_PER_SHAPE or (self.nbytes + size > MAX_BYTES and not self._evict(size)):
                return np.empty(shape, dtype)
            arr = np.empty(shape, dtype)
            bucket.append(arr)
            self.nbytes += size
            return arr

    def _evict(self, size: int) -> bool:
        """Forget unreferenced arrays of any shape until ``size`` more bytes fit."""
        for bucket in self.buckets.values():
            while self.nbytes + size > MAX_BYTES:
                i = _first_unreferenced(bucket, self.free_limit)
                if i < 0:
                    break
                self.nbytes -= bucket.pop(i).nbytes
        return self.nbytes + size <= MAX_BYTES

    def clear(self) -> None:
        with self.lock:
            self.buckets.clear()
            self.nbytes = 0


_RECYCLER = _Recycler()


def empty(shape: tuple, dtype: Any) -> np.ndarray:
    """An uninitialised array that no other code references (recycled when large)."""
    return _RECYCLER.empty(tuple(shape), np.dtype(dtype))


def clear() -> None:
    """Drop every array kept for recycling (arrays in use stay valid)."""
    _RECYCLER.clear()
