"""Pooling layers over channels-last inputs ``(N, *spatial, C)`` with 1, 2 or
3 spatial axes: ``max_pool``, ``avg_pool`` and ``global_avg_pool``, each with
a hand-written backward rule.

Windows and padding follow :func:`fnn.layers.conv` (``"valid"``, ``"same"``,
an int, one int or one ``(lo, hi)`` pair per axis); the stride defaults to
the window, so that windows tile the input. A tuple window fixes the rank; an
int window takes it from the input (``ndim - 2``).

Backward rules (the kernels of :mod:`fnn.kernels.pool` run them):

* max: each window sends its cotangent to its *first* maximum (in row-major
  window order) only; where windows overlap (stride < window) the
  contributions add up. This is exactly what ``jax.grad`` gives for the JAX
  forward (``lax.reduce_window``), ties included.
* avg: ``y = sum / count``; each window spreads ``dy / count`` evenly over the
  inputs it averaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.checks import batch_axis_hint
from fnn.core import Layer, LayerError, check_no_params, expect_single, layer_factory, no_params
from fnn.kernels import pool as kernels
from fnn.kernels import windows as win

__all__ = ["avg_pool", "global_avg_pool", "max_pool"]


def _pool(kind: str, window: Any, stride: Any, padding: Any, count_include_pad: bool, name: str) -> Layer:
    fixed = next((len(v) for v in (window, stride) if isinstance(v, (tuple, list))), None)
    if fixed is not None:  # check the arguments now, when the rank is known
        win.ints(name, "window", window, fixed)
        if stride is not None:
            win.ints(name, "stride", stride, fixed)
    else:
        win.ints(name, "window", window, 1)
        if stride is not None:
            win.ints(name, "stride", stride, 1)
    spec = win.padding_spec(name, padding, fixed)

    def check_padding(pads, sizes) -> None:
        if any(p >= k for side, k in zip(pads, sizes) for p in side):
            raise LayerError(
                name,
                f"each padding must be smaller than the window {tuple(sizes)} (a window must hold at least one "
                f"real input); got padding {tuple(pads)}",
            )

    if not isinstance(spec, str) and (fixed is not None or not isinstance(window, (tuple, list))):
        rank = fixed or (1 if isinstance(spec, int) else len(spec))
        sizes = win.ints(name, "window", window, rank)
        check_padding(win.resolve_padding(name, spec, (None,) * rank, sizes, sizes), sizes)

    def geometry(shape: tuple) -> tuple:
        """``(window, strides, padding, out_sizes)`` for an input of ``shape``."""
        rank = fixed or len(shape) - 2
        if not 1 <= rank <= 3 and fixed is None:
            raise LayerError(
                name, f"expected an input (batch, *spatial, channels) with 1, 2 or 3 spatial axes, got shape {shape}"
            )
        shape = win.check_input(name, shape, rank)
        window_r = win.ints(name, "window", window, rank)
        strides = window_r if stride is None else win.ints(name, "stride", stride, rank)
        pads = win.resolve_padding(name, spec, shape[1:-1], window_r, strides)
        check_padding(pads, window_r)
        return window_r, strides, pads, win.output_sizes(name, shape[1:-1], window_r, strides, pads, "window")

    def out_shape(shape):
        shape = tuple(shape)
        return (shape[0], *geometry(shape)[3], shape[-1])

    def counts(x_shape, dtype):
        """How many real inputs each window averages: ``(1, *out, 1)``, or the window's size."""
        window_r, strides, pads, _ = geometry(x_shape)
        if count_include_pad or all(p == (0, 0) for p in pads):
            return int(np.prod(window_r))
        ones = np.ones((1, *x_shape[1:-1], 1))  # static shapes: a NumPy constant
        return kernels.pool_forward(ones, "sum", window_r, strides=strides, padding=pads)[0].astype(dtype)

    def fwd(params, state, x, key, train):
        check_no_params(name, params)
        window_r, strides, pads, _ = geometry(tuple(np.shape(expect_single(name, x))))
        y, first = kernels.pool_forward(x, "max" if kind == "max" else "sum", window_r, strides=strides, padding=pads)
        if kind == "avg":
            return y / counts(x.shape, x.dtype), state, x
        return y, state, (x, y, first)

    def max_bwd(params, residuals, dy):
        x, y, first = residuals
        window_r, strides, pads, _ = geometry(x.shape)
        return {}, kernels.max_pool_dx(x, y, dy, window_r, strides=strides, padding=pads, first=first)

    def avg_bwd(params, x, dy):
        window_r, strides, pads, _ = geometry(x.shape)
        share = dy / counts(x.shape, dy.dtype)
        return {}, kernels.sum_pool_dx(share, x.shape, window_r, strides=strides, padding=pads)

    return Layer(name, no_params, out_shape, fwd, max_bwd if kind == "max" else avg_bwd)


@layer_factory
def max_pool(
    window: int | tuple[int, ...],
    *,
    stride: int | tuple[int, ...] | None = None,
    padding: Any = "valid",
    name: str = "max_pool",
) -> Layer:
    """Max pooling: ``y[b, *q, c] = max_i x_pad[b, *(q*s + i), c]`` over the windows.

    ``stride`` defaults to ``window``; padding as in :func:`fnn.layers.conv`
    (padded cells are ``-inf``, never chosen; each padding must be smaller than
    the window). Backward: the whole cotangent of a window goes to its first
    maximum (row-major order in the window); overlapping windows add up -- the
    same as ``jax.grad``.

    >>> import numpy as np, fnn
    >>> pool = fnn.layers.max_pool(2)
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> pool.apply({}, {}, x)[0][0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    return _pool("max", window, stride, padding, True, name)


@layer_factory
def avg_pool(
    window: int | tuple[int, ...],
    *,
    stride: int | tuple[int, ...] | None = None,
    padding: Any = "valid",
    count_include_pad: bool = False,
    name: str = "avg_pool",
) -> Layer:
    """Average pooling: the mean of each window.

    ``stride`` defaults to ``window``; padding as in :func:`fnn.layers.conv`.
    With padding, the mean is over the window's real inputs only (as
    TensorFlow's ``"SAME"``), unless ``count_include_pad=True`` (divide by the
    window's size, padded zeros included). Backward: each window's cotangent is
    spread evenly over the inputs it averaged.

    >>> import numpy as np, fnn
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> fnn.layers.avg_pool(2).apply({}, {}, x)[0][0, :, :, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    return _pool("avg", window, stride, padding, count_include_pad, name)


def _global_avg_pool() -> Layer:
    name = "global_avg_pool"

    def check(shape):
        if len(shape) < 3:
            raise LayerError(name, f"expected an input (batch, *spatial, channels), got shape {shape}"
                                   f"{batch_axis_hint(shape, 3)}")
        return win.check_input(name, shape, len(shape) - 2)

    def out_shape(shape):
        shape = check(tuple(shape))
        return (shape[0], shape[-1])

    def fwd(params, state, x, key, train):
        check(tuple(np.shape(expect_single(name, x))))
        return backend.namespace(x).mean(x, axis=tuple(range(1, x.ndim - 1))), state, x

    def bwd(params, x, dy):
        xp = backend.namespace(x, dy)
        area = int(np.prod(x.shape[1:-1]))
        return {}, xp.broadcast_to((dy / area).reshape(dy.shape[0], *(1,) * (x.ndim - 2), dy.shape[1]), x.shape)

    return Layer(
        name,
        no_params,
        out_shape,
        fwd,
        bwd,
        doc="Mean over the spatial axes: (N, *spatial, C) -> (N, C); backward spreads dy / (spatial entries).",
    )


global_avg_pool = _global_avg_pool()
