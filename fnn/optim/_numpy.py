"""NumPy fast paths of the optimizers: each update in a few in-place passes
over output arrays that the update allocates itself.

The transforms stay pure: an input is never written, and every array they
return is one that no other code holds. Two things make the plain expressions
(``b1 * m + (1 - b1) * g`` ...) slow on NumPy, and both are avoided here:

* every operator allocates a temporary and makes one more pass over memory;
  the kernels below write each result with ``out=`` into the array that is
  returned anyway, and fold scalar factors (bias corrections, learning rate)
  into one multiplier;
* fresh multi-megabyte arrays come from the operating system as untouched
  pages (the C allocator returns large blocks to it when they are freed), and
  the first write of each 4 KiB page is a page fault. A training step that
  returns new parameters and moments every step would fault on all of them.
  :func:`empty` therefore recycles the large output arrays it handed out
  before, once nothing references them any more (CPython reference counts:
  an array still held anywhere -- by a variable, a container, a view or a
  buffer export -- is never reused).

Everything here is used only when every leaf is a plain ``numpy.ndarray`` of
one floating dtype; other inputs (JAX arrays, tracers, mixed dtypes) take the
generic code path of the transform.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np

from fnn import backend

Array = Any
PyTree = Any

MIN_BYTES = 1 << 16  # smaller arrays come from the allocator's free lists without faults
MAX_BYTES = 1 << 28  # at most this much memory is kept for recycling (in use or free)
MAX_PER_SHAPE = 256  # a bucket is scanned linearly; deep nets have many leaves of one shape
TILE_BYTES = 1 << 17  # per array and tile: six arrays of a tile stay within a core's L2 cache


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


# --------------------------------------------------------------------------- #
# Which inputs take the fast path
# --------------------------------------------------------------------------- #


def float_leaves(*trees: PyTree) -> list[list[np.ndarray]] | None:
    """The leaves of each tree, when all trees hold plain NumPy arrays of one
    floating dtype per position (the same structure is checked by the caller); else None."""
    columns = [backend.tree_leaves(t) for t in trees]
    if any(len(c) != len(columns[0]) for c in columns):
        return None
    for leaves in zip(*columns):
        first = leaves[0]
        if type(first) is not np.ndarray or first.dtype.kind != "f":
            return None
        for leaf in leaves[1:]:
            if type(leaf) is not np.ndarray or leaf.dtype != first.dtype or leaf.shape != first.shape:
                return None
    return columns


# --------------------------------------------------------------------------- #
# Kernels (one leaf each)
# --------------------------------------------------------------------------- #


def adam_leaf(
    g: np.ndarray, m: np.ndarray, v: np.ndarray, b1: float, b2: float, scale: float, eps_hat: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New ``m``, ``v`` and ``scale * m / (sqrt(v) + eps_hat)``, each written once.

    ``m = b1 m + (1 - b1) g`` and ``v = b2 v + (1 - b2) g g`` in the same order
    of operations as the generic path; the update's buffer doubles as scratch,
    so there are no temporaries. Large contiguous leaves are done tile by tile
    (:data:`TILE_BYTES` per array), so that the eleven passes of each tile run
    in the core's cache instead of streaming whole arrays eleven times.
    """
    f = g.dtype.type
    u = _RECYCLER.empty(g.shape, g.dtype)
    m_new = _RECYCLER.empty(g.shape, g.dtype)
    v_new = _RECYCLER.empty(g.shape, g.dtype)
    factors = (f(1 - b1), f(b1), f(1 - b2), f(b2), f(eps_hat), f(scale))
    tile = max(1, TILE_BYTES // g.dtype.itemsize)
    if g.size <= tile or not (g.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        _adam_passes(g, m, v, m_new, v_new, u, *factors)
        return m_new, v_new, u
    flat = [a.reshape(-1) for a in (g, m, v, m_new, v_new, u)]
    for start in range(0, g.size, tile):
        _adam_passes(*[a[start : start + tile] for a in flat], *factors)
    return m_new, v_new, u


def _adam_passes(g, m, v, m_new, v_new, u, one_minus_b1, b1, one_minus_b2, b2, eps_hat, scale) -> None:
    """The eleven in-place passes of :func:`adam_leaf` over one block."""
    np.multiply(g, one_minus_b1, out=u)
    np.multiply(m, b1, out=m_new)
    np.add(m_new, u, out=m_new)
    np.multiply(g, one_minus_b2, out=u)
    np.multiply(u, g, out=u)
    np.multiply(v, b2, out=v_new)
    np.add(v_new, u, out=v_new)
    np.sqrt(v_new, out=u)
    np.add(u, eps_hat, out=u)
    np.divide(m_new, u, out=u)
    np.multiply(u, scale, out=u)


def adam_factors(t: float, b1: float, b2: float, eps: float, scale: float) -> tuple[float, float]:
    """``(multiplier, eps_hat)`` with ``scale * m_hat / (sqrt(v_hat) + eps) ==
    multiplier * m / (sqrt(v) + eps_hat)``: the bias corrections folded into
    one scalar (``sqrt(v / c2) = sqrt(v) / sqrt(c2)``)."""
    correction1 = 1.0 - b1**t
    root2 = float(np.sqrt(1.0 - b2**t))
    return scale * root2 / correction1, eps * root2


def scale_leaf(g: np.ndarray, factor: Any) -> np.ndarray:
    """``g * factor`` (factor cast to g's dtype first, as the generic path does)."""
    return np.multiply(g, g.dtype.type(factor), out=_RECYCLER.empty(g.shape, g.dtype))


def add_leaf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``p + u`` in p's dtype."""
    return np.add(p, u, out=_RECYCLER.empty(p.shape, p.dtype))
