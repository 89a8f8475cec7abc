"""Pooling layers over NHWC images: ``max_pool``, ``avg_pool`` and
``global_avg_pool``, each with a hand-written backward rule.

Windows and padding follow :mod:`fnn.layers.conv` (``"valid"``, ``"same"``,
int, pair, or ``((top, bottom), (left, right))``); the stride defaults to the
window, so that windows tile the image.

Backward rules:

* max: each window sends its cotangent to its *first* maximum (in row-major
  window order) only; where windows overlap (stride < window) the
  contributions add up. This is exactly what ``jax.grad`` gives for the JAX
  forward (``lax.reduce_window``), ties included.
* avg: each window spreads its cotangent evenly over the inputs it averaged.

When the windows tile the image (stride == window, the common 2x2 / 2 case)
both rules are a mask or a broadcast on a free reshape of the input, with no
scatter; this is where the manual backward beats XLA's generic
select-and-scatter derivative on CPU (LeNet's 2x2 pools: 0.15-0.2x its time).
The NumPy max pool keeps each window's first argmax from the forward; on JAX
the forward stays ``lax.reduce_window`` (so that ``jax.grad`` keeps the tie
rule) and the backward finds the first maximum again.
Overlapping windows use col2im.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.core import Layer, LayerError, layer_factory
from fnn.layers import _im2col as im

__all__ = ["avg_pool", "global_avg_pool", "max_pool"]


def _no_params(key, shape, dtype):
    return {}, {}


def _tiled_argmax(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max and first argmax (row-major in the window) of NumPy tiles
    ``(N, OH, kh, OW, kw, C)``: ``y (N, OH, OW, C)`` and ``first`` of the same shape."""
    n, oh, kh, ow, kw, c = t.shape
    windows = t.transpose(0, 1, 3, 5, 2, 4).reshape(n, oh, ow, c, kh * kw)
    first = windows.argmax(axis=-1)
    return np.take_along_axis(windows, first[..., None], axis=-1)[..., 0], first


def _untiled_at(first: np.ndarray, dy: np.ndarray, win: tuple[int, int]) -> np.ndarray:
    """Tiles ``(N, OH, kh, OW, kw, C)`` holding ``dy`` at each window's ``first`` position, 0 elsewhere."""
    n, oh, ow, c = dy.shape
    kh, kw = win
    windows = np.zeros((n, oh, ow, c, kh * kw), dy.dtype)
    np.put_along_axis(windows, first[..., None], dy[..., None], axis=-1)  # a fresh array: nothing shared is written
    return windows.reshape(n, oh, ow, c, kh, kw).transpose(0, 1, 4, 2, 5, 3)


def _first_max_tiles(t: Any, y: Any, dy: Any) -> Any:
    """Tiles ``(N, OH, kh, OW, kw, C)`` holding ``dy`` at each window's first
    maximum (row-major), 0 elsewhere (JAX): the first maximum's position is a
    min-reduction over the window axes, then one select puts ``dy`` there.

    Measured in LeNet's jitted training step (W2), alternatives lost: a scan
    over the window positions (each taking ``dy`` where it equals the maximum
    and no earlier position did, stacked back into tiles) is 1.05-1.8x faster
    alone, but made the whole step 1.3-1.6x slower, because XLA fuses the
    layers around the pool's backward (relu's backward, which recomputes a
    tap-sum convolution, and the next convolution's col2im) into this loop and
    the scan's concatenation runs that loop far slower; keeping the first
    maximum's index (int8) from the forward pass changed nothing (XLA computes
    it once either way)."""
    xp = backend.namespace(t, dy)
    kh, kw = t.shape[2], t.shape[4]
    area = kh * kw
    order = np.arange(area).reshape(1, 1, kh, 1, kw, 1)  # row-major position in the window
    hit = t == y[:, :, None, :, None, :]
    first = xp.min(xp.where(hit, order, area), axis=(2, 4), keepdims=True)
    return xp.where(order == first, dy[:, :, None, :, None, :], 0).astype(dy.dtype)


def _pool(kind: str, window: Any, stride: Any, padding: Any, count_include_pad: bool, name: str) -> Layer:
    win = im.pair(name, "window", window)
    strides = win if stride is None else im.pair(name, "stride", stride)
    spec = im.padding_spec(name, padding)
    if isinstance(spec, tuple) and any(p >= k for side, k in zip(spec, win) for p in side):
        raise ValueError(
            f"{name}: each padding must be smaller than the window {win} (a window must hold at least one "
            f"real input); got padding {spec}"
        )
    tiled = strides == win
    area = win[0] * win[1]

    def out_shape(shape):
        n, h, w, c = im.check_nhwc(name, shape)
        return (n, *im.output_hw(name, (h, w), win, strides, spec, "window"), c)

    def geometry(x_shape):
        _, h, w, _ = x_shape
        out_hw = im.output_hw(name, (h, w), win, strides, spec, "window")
        pads = im.resolve_padding(spec, (h, w), win, strides)
        padded_hw = (h + pads[0][0] + pads[0][1], w + pads[1][0] + pads[1][1])
        return out_hw, pads, padded_hw

    def counts(x_shape, dtype):
        """How many real inputs each window averages: ``(1, OH, OW, 1)``, or the window area."""
        out_hw, pads, _ = geometry(x_shape)
        if count_include_pad or pads == ((0, 0), (0, 0)):
            return area
        ones = im.pad(np.ones((1, x_shape[1], x_shape[2], 1)), pads)  # static shapes: a NumPy constant
        return im.patches(ones, win, strides, out_hw).sum(axis=(3, 4)).astype(dtype)

    def fwd(params, state, x, key, train):
        if params != {}:
            raise LayerError(name, f"has no params; expected {{}}, got {params!r:.80}")
        if isinstance(x, (tuple, list)):
            raise LayerError(name, f"expected a single array, got a tuple of {len(x)} inputs")
        x_shape = im.check_nhwc(name, tuple(np.shape(x)))
        out_hw, pads, _ = geometry(x_shape)
        if backend.is_jax_array(x):  # XLA's reduce_window: jax.grad follows the same tie rule
            y = backend.xla_reduce_window(x, "max" if kind == "max" else "sum", win, strides, pads)
        else:
            x_pad = im.pad(x, pads, -np.inf if kind == "max" else 0.0)
            reduce = np.max if kind == "max" else np.sum
            if tiled and kind == "max":  # keep each window's first argmax for a scatter-free backward
                y, first = _tiled_argmax(im.tiles(x_pad, win, out_hw))
                return y, state, (x, y, first)
            if tiled:  # a free reshape: (N, OH, kh, OW, kw, C)
                y = reduce(im.tiles(x_pad, win, out_hw), axis=(2, 4))
            else:  # im2col: (N, OH, OW, kh, kw, C)
                y = reduce(im.patches(x_pad, win, strides, out_hw), axis=(3, 4))
        if kind == "avg":
            y = y / counts(x_shape, x.dtype)
            return y, state, x
        return y, state, (x, y, None)

    def max_bwd(params, residuals, dy):
        x, y, first = residuals
        xp = backend.namespace(x, dy)
        out_hw, pads, padded_hw = geometry(x.shape)
        n, c = x.shape[0], x.shape[3]
        if first is not None:  # NumPy, tiled: put dy at each window's argmax
            dx_pad = im.untile(_untiled_at(first, dy, win), padded_hw)
            return {}, im.crop(dx_pad, pads, x.shape[1:3])
        x_pad = im.pad(x, pads, -np.inf)
        if tiled:  # JAX, on a free reshape: no scatter
            dx_pad = im.untile(_first_max_tiles(im.tiles(x_pad, win, out_hw), y, dy), padded_hw)
        else:
            cols = im.patches(x_pad, win, strides, out_hw).reshape(n, *out_hw, area, c)
            first = xp.argmax(cols, axis=3)[:, :, :, None, :]
            order = np.arange(area).reshape(1, 1, 1, area, 1)
            dcols = xp.where(order == first, dy[:, :, :, None, :], 0).astype(dy.dtype)
            dx_pad = im.patches_to_image(dcols.reshape(n, *out_hw, *win, c), strides, padded_hw)
        return {}, im.crop(dx_pad, pads, x.shape[1:3])

    def avg_bwd(params, x, dy):
        xp = backend.namespace(x, dy)
        out_hw, pads, padded_hw = geometry(x.shape)
        share = dy / counts(x.shape, dy.dtype)
        n, c = x.shape[0], x.shape[3]
        if tiled:
            dt = xp.broadcast_to(share[:, :, None, :, None, :], (n, out_hw[0], win[0], out_hw[1], win[1], c))
            dx_pad = im.untile(dt, padded_hw)
        else:
            dcols = xp.broadcast_to(share[:, :, :, None, None, :], (n, *out_hw, *win, c))
            dx_pad = im.patches_to_image(dcols, strides, padded_hw)
        return {}, im.crop(dx_pad, pads, x.shape[1:3])

    return Layer(name, _no_params, out_shape, fwd, max_bwd if kind == "max" else avg_bwd)


@layer_factory
def max_pool(
    window: int | tuple[int, int], *, stride: int | tuple[int, int] | None = None, padding: Any = "valid", name: str = "max_pool"
) -> Layer:
    """Max pooling: ``y[n, p, q, c] = max_{i,j} x_pad[n, p*sh + i, q*sw + j, c]`` over ``(kh, kw)`` windows.

    ``stride`` defaults to ``window``; padding as in :func:`fnn.layers.conv2d`
    (padded cells are ``-inf``, never chosen). Backward: the whole cotangent of
    a window goes to its first maximum (row-major order in the window);
    overlapping windows add up -- the same as ``jax.grad``.

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
    window: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] | None = None,
    padding: Any = "valid",
    count_include_pad: bool = False,
    name: str = "avg_pool",
) -> Layer:
    """Average pooling: the mean of each ``(kh, kw)`` window.

    ``stride`` defaults to ``window``; padding as in :func:`fnn.layers.conv2d`.
    With padding, the mean is over the window's real inputs only (as
    TensorFlow's ``"SAME"``), unless ``count_include_pad=True`` (divide by
    ``kh * kw``, padded zeros included). Backward: each window's cotangent is
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

    def out_shape(shape):
        n, _, _, c = im.check_nhwc(name, shape)
        return (n, c)

    def fwd(params, state, x, key, train):
        if isinstance(x, (tuple, list)):
            raise LayerError(name, f"expected a single array, got a tuple of {len(x)} inputs")
        im.check_nhwc(name, tuple(np.shape(x)))
        return backend.namespace(x).mean(x, axis=(1, 2)), state, x

    def bwd(params, x, dy):
        xp = backend.namespace(x, dy)
        n, h, w, c = x.shape
        return {}, xp.broadcast_to((dy / (h * w))[:, None, None, :], (n, h, w, c))

    return Layer(
        name, _no_params, out_shape, fwd, bwd, doc="Mean over height and width: (N, H, W, C) -> (N, C); backward spreads dy / (H*W)."
    )


global_avg_pool = _global_avg_pool()
