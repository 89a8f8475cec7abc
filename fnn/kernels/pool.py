"""Pooling kernels: max or sum over the windows of an N-d channels-last array,
and the backward of each, in several forms.

For window ``k``, stride ``s`` and padding ``(lo, hi)`` per axis::

    y[b, *q, c]  = reduce_{i} x_pad[b, *(q*s + i), c]      (max, or sum)
    sum:  dx     = each window's dy added to every entry it covers
    max:  dx     = each window's dy sent to its *first* maximum (row-major
                   order in the window); overlapping windows add up -- exactly
                   what ``jax.grad`` of ``lax.reduce_window`` gives, ties included

Forms (``implementation=``; "auto" asks :func:`fnn.kernels.plan.pool_plan`):
``"xla"`` (``lax.reduce_window``: the reference), ``"tiles"`` (a free
reshape, when stride == window) and ``"patches"`` (every window gathered).
NumPy arrays never take ``"xla"`` (asked for it, they take their ``"auto"`` form).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan
from fnn.kernels import windows as win

__all__ = ["pool_forward", "max_pool_dx", "sum_pool_dx", "xla_reduce_window"]

Array = Any
Ints = Sequence[int]


def xla_reduce_window(x: Array, reducer: str, window: Ints, strides: Ints, padding: win.Padding) -> Array:
    """Max or sum over the windows of an ``(N, *spatial, C)`` JAX array (``lax.reduce_window``).

    Padded cells hold the reduction's identity: ``-inf`` (the dtype's minimum
    for integers) for ``"max"``, 0 for ``"sum"``. Under ``jax.grad`` a max
    window sends its cotangent to the first maximum in row-major window order
    (XLA's select-and-scatter with ``>=``), and overlapping windows add up.
    """
    lax = backend.lax
    # a concrete NumPy identity, so that lax recognises the monoid (max / add)
    # and differentiates it; a traced init value would not be.
    dtype = np.dtype(x.dtype)
    if reducer == "max":
        init = np.array(-np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min, dtype)
        op = lax.max
    elif reducer == "sum":
        init, op = np.array(0, dtype), lax.add
    else:
        raise ValueError(f"xla_reduce_window: reducer must be 'max' or 'sum'; got {reducer!r}")
    dims, steps = (1, *map(int, window), 1), (1, *map(int, strides), 1)
    return lax.reduce_window(x, init, op, dims, steps, ((0, 0), *map(tuple, padding), (0, 0)))


def _geometry(x_shape, window, strides, padding):
    sizes = x_shape[1:-1]
    out = win.output_sizes("pool", sizes, window, strides, padding, "window")
    padded = [n + lo + hi for n, (lo, hi) in zip(sizes, padding)]
    return out, padded, tuple(strides) == tuple(window)


def _interleave(rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axes of tiles ``(N, o_1, k_1, ..., C)``: the output axes and the window axes."""
    return tuple(1 + 2 * a for a in range(rank)), tuple(2 + 2 * a for a in range(rank))


def _tiles_to_windows(t: Array, rank: int) -> Array:
    """Tiles ``(N, o_1, k_1, ..., C) -> (N, *out, C, K)``, the window flattened row-major last."""
    outs, ks = _interleave(rank)
    moved = t.transpose(0, *outs, 2 * rank + 1, *ks)
    return moved.reshape(*moved.shape[: rank + 2], -1)


def _windows_to_tiles(windows: Array, window: Ints) -> Array:
    """The inverse of :func:`_tiles_to_windows`."""
    rank = len(window)
    t = windows.reshape(*windows.shape[:-1], *window)  # (N, *out, C, *k)
    order = [0]
    for a in range(rank):
        order += [1 + a, rank + 2 + a]
    return t.transpose(*order, rank + 1)


def pool_forward(
    x: Array, reducer: str, window: Ints, *, strides: Ints, padding: win.Padding, implementation: str = "auto"
) -> tuple[Array, Array | None]:
    """``y (N, *out, C)``: the max or sum of every window, and what
    :func:`max_pool_dx` may reuse (NumPy tiles: each window's first argmax; else None)."""
    rank = len(window)
    out, _, tiled = _geometry(x.shape, window, strides, padding)
    is_numpy = backend.namespace(x) is np
    how = plan.pool_plan(implementation, is_numpy=is_numpy, tiled=tiled, backward=False)
    if how == "xla":
        return xla_reduce_window(x, reducer, window, strides, padding), None
    xp = backend.namespace(x)
    x_pad = win.pad(x, padding, -np.inf if reducer == "max" else 0.0)
    if how == "tiles":
        t = win.tiles(x_pad, window, out)
        if reducer == "max" and is_numpy:  # keep each window's first argmax for a scatter-free backward
            windows = _tiles_to_windows(t, rank)
            first = windows.argmax(axis=-1)
            return np.take_along_axis(windows, first[..., None], axis=-1)[..., 0], first
        axes = _interleave(rank)[1]
    else:
        t = win.patches(x_pad, window, strides, out)
        axes = tuple(range(rank + 1, 2 * rank + 1))
    return (xp.max(t, axis=axes) if reducer == "max" else xp.sum(t, axis=axes)), None


def _first_max_tiles(t: Array, y: Array, dy: Array, rank: int) -> Array:
    """Tiles ``(N, o_1, k_1, ..., C)`` holding ``dy`` at each window's first
    maximum (row-major), 0 elsewhere: the first maximum's position is a
    min-reduction over the window axes, then one select puts ``dy`` there.

    Measured in LeNet's jitted training step (W2, 2-core Xeon VM, XLA CPU of
    JAX 0.10), alternatives lost: a scan over the window positions is 1.05-1.8x
    faster alone, but made the whole step 1.3-1.6x slower, because XLA fuses
    the layers around the pool's backward into this loop and the scan's
    concatenation runs that loop far slower; keeping the first maximum's index
    from the forward pass changed nothing (XLA computes it once either way)."""
    xp = backend.namespace(t, dy)
    outs, ks = _interleave(rank)
    window = [t.shape[a] for a in ks]
    area = int(np.prod(window))
    order_shape = [1] * t.ndim
    for a, k in zip(ks, window):
        order_shape[a] = k
    order = np.arange(area).reshape(order_shape)  # row-major position in the window
    expand = lambda v: v.reshape(  # noqa: E731 - (N, *out, C) -> (N, o_1, 1, o_2, 1, ..., C)
        v.shape[0], *[d for o in v.shape[1:-1] for d in (o, 1)], v.shape[-1]
    )
    hit = t == expand(y)
    first = xp.min(xp.where(hit, order, area), axis=ks, keepdims=True)
    return xp.where(order == first, expand(dy), 0).astype(dy.dtype)


def max_pool_dx(
    x: Array,
    y: Array,
    dy: Array,
    window: Ints,
    *,
    strides: Ints,
    padding: win.Padding,
    first: Array | None = None,
    implementation: str = "auto",
) -> Array:
    """``dx``: each window's ``dy`` at its first maximum, overlapping windows adding up.
    ``first`` is what :func:`pool_forward` returned beside ``y`` (NumPy tiles' argmax)."""
    rank = len(window)
    out, padded, tiled = _geometry(x.shape, window, strides, padding)
    xp = backend.namespace(x, dy)
    how = plan.pool_plan(implementation, is_numpy=xp is np, tiled=tiled, backward=True, reducer="max")
    x_pad = win.pad(x, padding, -np.inf)
    if how == "tiles":
        if xp is np:  # put dy at each window's argmax
            if first is None:
                first = _tiles_to_windows(win.tiles(x_pad, window, out), rank).argmax(axis=-1)
            windows = np.zeros((*dy.shape, int(np.prod(window))), dy.dtype)
            np.put_along_axis(windows, first[..., None], dy[..., None], axis=-1)  # a fresh array
            dt = _windows_to_tiles(windows, window)
        else:  # on a free reshape: no scatter
            dt = _first_max_tiles(win.tiles(x_pad, window, out), y, dy, rank)
        dx_pad = win.untile(dt, padded)
    else:
        n, c, area = x.shape[0], x.shape[-1], int(np.prod(window))
        cols = win.patches(x_pad, window, strides, out).reshape(n, *out, area, c)
        at = xp.argmax(cols, axis=rank + 1)[..., None, :]
        order = np.arange(area).reshape((1,) * (rank + 1) + (area, 1))
        dcols = xp.where(order == at, dy[..., None, :], 0).astype(dy.dtype)
        dx_pad = win.patches_to_image(dcols.reshape(n, *out, *window, c), strides, padded)
    return win.crop(dx_pad, padding, x.shape[1:-1])


def sum_pool_dx(
    dy: Array,
    x_shape: Sequence[int],
    window: Ints,
    *,
    strides: Ints,
    padding: win.Padding,
    implementation: str = "auto",
) -> Array:
    """``dx (x_shape)``: each window's ``dy`` added to every input it covers."""
    rank = len(window)
    x_shape = tuple(x_shape)
    out, padded, tiled = _geometry(x_shape, window, strides, padding)
    xp = backend.namespace(dy)
    how = plan.pool_plan(implementation, is_numpy=xp is np, tiled=tiled, backward=True)
    n, c = x_shape[0], x_shape[-1]
    if how == "xla":  # dy dilated by the stride, summed over windows sliding by 1 (reduce_window's transpose)
        rest = [p - ((o - 1) * s + k) for p, o, s, k in zip(padded, out, strides, window)]
        pads = [(k - 1 - lo, k - 1 - hi + r) for k, (lo, hi), r in zip(window, padding, rest)]
        grown = [(max(-a, 0), max(-b, 0)) for a, b in pads]  # reduce_window pads by >= 0: crop after
        dx = backend.lax.reduce_window(
            dy,
            np.array(0, dy.dtype),
            backend.lax.add,
            (1, *window, 1),
            (1,) * (rank + 2),
            ((0, 0), *((max(a, 0), max(b, 0)) for a, b in pads), (0, 0)),
            base_dilation=(1, *strides, 1),
        )
        return win.crop(dx, grown, x_shape[1:-1])
    if how == "tiles":
        shape = (n, *[d for o, k in zip(out, window) for d in (o, k)], c)
        expanded = dy.reshape(n, *[d for o in out for d in (o, 1)], c)
        dx_pad = win.untile(xp.broadcast_to(expanded, shape), padded)
    else:
        dcols = xp.broadcast_to(dy.reshape(n, *out, *(1,) * rank, c), (n, *out, *window, c))
        dx_pad = win.patches_to_image(dcols, strides, padded)
    return win.crop(dx_pad, padding, x_shape[1:-1])
