"""Scaled dot-product attention as a plain function (``fnn.functional.dot_product_attention``)
and the shape and mask checks that :mod:`fnn.layers.attention` shares with it."""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import attention as kernel

__all__ = ["dot_product_attention", "broadcast_mask", "to_heads_first", "from_heads_first"]

Array = Any


def to_heads_first(xp, a: Array) -> Array:
    """``(N, T, H, X) -> (N, H, T, X)``, the kernel's layout."""
    return xp.swapaxes(a, 1, 2)


def from_heads_first(xp, a: Array) -> Array:
    """``(N, H, T, X) -> (N, T, H, X)``."""
    return xp.swapaxes(a, 1, 2)


def broadcast_mask(
    mask: Array | None, full: tuple[int, int, int, int], where: str = "dot_product_attention"
) -> Array | None:
    """A boolean ``mask`` broadcastable to ``full = (N, H, Tq, Tk)`` as a 4-D array
    whose every axis is 1 or the full size (leading axes added as in NumPy)."""
    if mask is None:
        return None
    shape = tuple(np.shape(mask))
    if not hasattr(mask, "dtype") or np.dtype(mask.dtype) != np.bool_:
        kind = getattr(mask, "dtype", type(mask).__name__)
        raise TypeError(f"{where}: mask must be a boolean array (True where a query may attend); got {kind}")
    padded = (1,) * (4 - len(shape)) + shape
    if len(shape) > 4 or any(m not in (1, f) for m, f in zip(padded, full)):
        raise ValueError(f"{where}: mask of shape {shape} does not broadcast to (N, H, Tq, Tk) = {full}")
    return mask.reshape(padded)


def _check(q: Array, k: Array, v: Array) -> tuple[int, int, int, int, int]:
    shapes = [tuple(np.shape(a)) for a in (q, k, v)]
    if any(len(s) != 4 for s in shapes):
        raise ValueError(
            "dot_product_attention: expected q (N, Tq, H, K), k (N, Tk, H, K), v (N, Tk, H, V); "
            f"got shapes {shapes[0]}, {shapes[1]}, {shapes[2]}"
        )
    (n, tq, h, kq), (nk, tk, hk, kk), (nv, tv, hv, _) = shapes
    if not (n == nk == nv and h == hk == hv and kq == kk and tk == tv):
        raise ValueError(
            "dot_product_attention: q (N, Tq, H, K), k (N, Tk, H, K) and v (N, Tk, H, V) must agree on N, H, "
            f"K and Tk; got shapes {shapes[0]}, {shapes[1]}, {shapes[2]}"
        )
    return n, tq, tk, h, kq


def dot_product_attention(
    q: Array, k: Array, v: Array, *, mask: Array | None = None, causal: bool = False, implementation: str = "auto"
) -> Array:
    """Scaled dot-product attention, as ``jax.nn.dot_product_attention``.

    ``q (N, Tq, H, K)``, ``k (N, Tk, H, K)``, ``v (N, Tk, H, V)`` -> ``(N, Tq, H, V)``::

        s = q . k / sqrt(K)          (per batch and head: (Tq, Tk))
        p = softmax(s) over the keys a query may attend
        out = p @ v

    ``mask``: boolean, broadcastable to ``(N, H, Tq, Tk)``, True where a query
    may attend a key. ``causal``: query ``i`` attends keys ``j <= i`` only.
    A query with no key to attend gets a zero output (``jax.nn`` gives the
    mean of ``v`` there instead). Runs on NumPy and JAX arrays; the form
    (``implementation``) is the choice of :mod:`fnn.kernels.attention`.
    ``jax.grad`` of this function differentiates its forward; the hand-written
    backward (:func:`fnn.kernels.attention.attention_bwd`) is the one
    ``multi_head_attention``'s ``bwd`` runs.

    >>> import numpy as np, fnn
    >>> q = np.zeros((1, 2, 1, 4)); v = np.arange(6.0).reshape(1, 3, 1, 2)
    >>> fnn.functional.dot_product_attention(q, np.zeros((1, 3, 1, 4)), v)[0, :, 0]  # equal scores: the mean
    array([[2., 3.],
           [2., 3.]])
    """
    n, tq, tk, h, _ = _check(q, k, v)
    mask4 = broadcast_mask(mask, (n, h, tq, tk))
    xp = backend.namespace(q, k, v)
    q_, k_, v_ = (to_heads_first(xp, a) for a in (q, k, v))
    o, _ = kernel.attention_fwd(q_, k_, v_, mask=mask4, causal=bool(causal), implementation=implementation)
    return from_heads_first(xp, o)
