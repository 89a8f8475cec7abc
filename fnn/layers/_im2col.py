"""Window arithmetic shared by conv2d and the pooling layers: argument checks,
padding, output sizes, and im2col / col2im.

For one spatial axis of size ``n``, window ``k``, stride ``s`` and padding
``(lo, hi)``::

    padded size   p   = n + lo + hi
    output size   out = (p - k) // s + 1          (needs p >= k)
    window q reads padded rows  q*s, q*s + 1, ..., q*s + k - 1

``"same"`` follows XLA / TensorFlow: ``out = ceil(n / s)``, total padding
``max((out - 1) * s + k - n, 0)``, the odd pixel going to the bottom / right.

Two ways of gathering the windows, each with its adjoint (which adds every
entry back to the pixel it came from, so overlapping windows add up):

* :func:`im2col` / :func:`col2im` (NumPy, for conv2d): the matrix
  ``(kh*kw*C, N*OH*OW)`` with one column per output pixel, so that a
  convolution is one matrix product;
* :func:`patches` / :func:`patches_to_image` (either backend, for pooling
  and for conv2d's im2col lowering on JAX): the array ``(N, OH, OW, kh, kw, C)``;
  and :func:`tiles` / :func:`untile`, a free reshape when the windows tile the
  image (stride == window).

:func:`tap_sum` is the product of the im2col matrix with a kernel written as
a sum over the kernel's taps, never building the matrix (conv2d's im2col
lowering on JAX, for few input channels).

All of them loop over the ``kh * kw`` kernel offsets only (:func:`tap_sum`
also over the input channels), never over pixels or examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fnn import backend
from fnn.core import LayerError, is_multi_shape

__all__ = [
    "Padding",
    "check_nhwc",
    "col2im",
    "crop",
    "im2col",
    "output_hw",
    "pad",
    "padding_spec",
    "pair",
    "patches",
    "patches_to_image",
    "resolve_padding",
    "tap_sum",
    "tiles",
    "untile",
]

Array = Any
Padding = tuple[tuple[int, int], tuple[int, int]]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pair(layer: str, what: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints (each ``>= minimum``) as ``(height, width)``."""
    if _is_int(value):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) and v >= minimum for v in value)):
        raise ValueError(f"{layer}: {what} must be an int >= {minimum} or a pair of them; got {value!r}")
    return int(value[0]), int(value[1])


def padding_spec(layer: str, padding: Any) -> str | Padding:
    """``"valid"``, ``"same"`` or explicit ``((top, bottom), (left, right))`` from
    any accepted spelling: a string (any case), an int, a pair ``(ph, pw)``
    (``ph`` above and below, ``pw`` left and right) or the explicit form."""
    if isinstance(padding, str):
        if padding.lower() in ("valid", "same"):
            return padding.lower()
    elif _is_int(padding) and padding >= 0:
        return ((int(padding),) * 2, (int(padding),) * 2)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(_is_int(p) and p >= 0 for p in padding):
            return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) for p in padding):
            return tuple((int(lo), int(hi)) for lo, hi in padding)  # type: ignore[return-value]
    raise ValueError(
        f"{layer}: padding must be 'valid', 'same', an int, a pair (ph, pw) or ((top, bottom), (left, right)) "
        f"of non-negative ints; got {padding!r}"
    )


def _same(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def resolve_padding(spec: str | Padding, in_hw: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> Padding:
    """Explicit ``((top, bottom), (left, right))`` for an input of known ``(H, W)``."""
    if spec == "valid":
        return ((0, 0), (0, 0))
    if spec == "same":
        return tuple(_same(n, k, s) for n, k, s in zip(in_hw, window, stride))  # type: ignore[return-value]
    return spec  # type: ignore[return-value]


def check_nhwc(layer: str, shape: Any, what: str = "input") -> tuple:
    """``shape`` must be one rank-4 NHWC shape with a known channel count."""
    if is_multi_shape(shape):
        raise LayerError(layer, f"expected a single NHWC input, got a tuple of inputs with shapes {shape}")
    shape = tuple(shape)
    if len(shape) != 4:
        hint = "; add a channel axis, e.g. x[..., None]" if len(shape) == 3 else ""
        raise LayerError(layer, f"expected a 4-D NHWC {what} (batch, height, width, channels), got shape {shape}{hint}")
    if shape[3] is None or shape[3] == 0:
        raise LayerError(layer, f"the channel count (last axis) must be known and positive; got shape {shape}")
    return shape


def output_hw(
    layer: str, in_hw: Sequence[int | None], window: Sequence[int], stride: Sequence[int], spec: str | Padding, what: str
) -> tuple[int | None, int | None]:
    """``(OH, OW)``; a LayerError when the window does not fit in the padded input.
    Unknown (None) input sizes give unknown output sizes."""
    out = []
    for axis, (n, k, s) in enumerate(zip(in_hw, window, stride)):
        if n is None:
            out.append(None)
            continue
        lo, hi = _same(n, k, s) if spec == "same" else (0, 0) if spec == "valid" else spec[axis]
        if n + lo + hi < k:
            raise LayerError(
                layer,
                f"the {what} {tuple(window)} is larger than the padded input: input {tuple(in_hw)} with padding "
                f"{spec!r} gives {n + lo + hi} along {('height', 'width')[axis]}, fewer than {k}; "
                "use a smaller window or more padding",
            )
        out.append((n + lo + hi - k) // s + 1)
    return tuple(out)  # type: ignore[return-value]


def pad(x: Array, padding: Padding, value: float = 0.0) -> Array:
    """``x`` (N, H, W, C) padded spatially with ``value``."""
    if padding == ((0, 0), (0, 0)):
        return x
    xp = backend.namespace(x)
    return xp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)), constant_values=value)


def crop(x_pad: Array, padding: Padding, in_hw: Sequence[int]) -> Array:
    """The inverse of :func:`pad`: the ``(H, W)`` interior of a padded array."""
    (top, _), (left, _) = padding
    return x_pad[:, top : top + in_hw[0], left : left + in_hw[1], :]


def _offset(x_pad: Array, i: int, j: int, stride: Sequence[int], out_hw: Sequence[int]) -> Array:
    """The pixels that kernel offset ``(i, j)`` reads for every output pixel:
    ``x_pad[:, i + sh*p, j + sw*q, :]``, shape (N, OH, OW, C) (a strided slice)."""
    (sh, sw), (oh, ow) = stride, out_hw
    return x_pad[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]


def patches(x_pad: Array, window: Sequence[int], stride: Sequence[int], out_hw: Sequence[int]) -> Array:
    """Every window of an NHWC array: ``cols[n, p, q, i, j, c] = x_pad[n, p*sh + i, q*sw + j, c]``,
    shape (N, OH, OW, kh, kw, C), on either backend (the pooling layers use it)."""
    (kh, kw), (oh, ow) = window, out_hw
    n, c = x_pad.shape[0], x_pad.shape[3]
    xp = backend.namespace(x_pad)
    if xp is np:
        cols = np.empty((n, oh, ow, kh, kw, c), x_pad.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, i, j, :] = _offset(x_pad, i, j, stride, out_hw)
        return cols
    offsets = [_offset(x_pad, i, j, stride, out_hw) for i in range(kh) for j in range(kw)]
    return xp.stack(offsets, axis=3).reshape(n, oh, ow, kh, kw, c)


def tap_sum(x_pad: Array, w: Array, stride: Sequence[int], out_hw: Sequence[int]) -> Array:
    """``patches(x_pad) @ w`` without the patches: the convolution
    ``y[n, p, q, :] = sum_{i, j, c} x_pad[n, p*sh + i, q*sw + j, c] * w[i, j, c, :]``
    as ``kh*kw*C`` broadcast multiply-adds of shifted input slices, which XLA
    fuses into one loop over the output. Its cost grows with ``kh*kw*C*F``; for
    a few input channels it is many times faster than a matrix product with
    ``kh*kw*C`` rows or a CPU convolution."""
    kh, kw, c, f = w.shape
    y = None
    for i in range(kh):
        for j in range(kw):
            x_ij = _offset(x_pad, i, j, stride, out_hw)
            for ch in range(c):
                term = x_ij[:, :, :, ch : ch + 1] * w[i, j, ch].reshape(1, 1, 1, f)
                y = term if y is None else y + term
    return y


def _place(v: Array, offset: tuple[int, int], stride: Sequence[int], padded_hw: Sequence[int]) -> Array:
    """``v`` (N, OH, OW, C) put on a zero grid (N, Hp, Wp, C) at rows ``i + sh*p``, cols ``j + sw*q``
    (one pad with interior zeros between the entries, for JAX)."""
    (i, j), (sh, sw), (hp, wp) = offset, stride, padded_hw
    _, oh, ow, _ = v.shape
    rows, cols = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    return backend.xla_pad(v, ((0, 0, 0), (i, hp - i - rows, sh - 1), (j, wp - j - cols, sw - 1), (0, 0, 0)))


def patches_to_image(cols: Array, stride: Sequence[int], padded_hw: Sequence[int]) -> Array:
    """The adjoint of :func:`patches`: ``(N, OH, OW, kh, kw, C) -> (N, Hp, Wp, C)``,
    each entry added back to the pixel it was read from (overlaps add up).
    On JAX: a sum of ``kh*kw`` padded slices, which XLA fuses into one loop."""
    n, oh, ow, kh, kw, c = cols.shape
    (sh, sw), (hp, wp) = stride, padded_hw
    xp = backend.namespace(cols)
    if xp is np:
        out = np.zeros((n, hp, wp, c), cols.dtype)  # a fresh buffer: adding into it in place is safe
        for i in range(kh):
            for j in range(kw):
                out[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :] += cols[:, :, :, i, j, :]
        return out
    total = None
    for i in range(kh):
        for j in range(kw):
            part = _place(cols[:, :, :, i, j, :], (i, j), stride, padded_hw)
            total = part if total is None else total + part
    return total


def tiles(x_pad: Array, window: Sequence[int], out_hw: Sequence[int]) -> Array:
    """Non-overlapping windows (stride == window) as a free reshape:
    ``(N, OH*kh, OW*kw, C) -> (N, OH, kh, OW, kw, C)`` after cropping the rows
    and columns no window reaches."""
    (kh, kw), (oh, ow) = window, out_hw
    n, c = x_pad.shape[0], x_pad.shape[3]
    return x_pad[:, : oh * kh, : ow * kw, :].reshape(n, oh, kh, ow, kw, c)


def untile(t: Array, padded_hw: Sequence[int]) -> Array:
    """The adjoint of :func:`tiles`: ``(N, OH, kh, OW, kw, C) -> (N, Hp, Wp, C)``,
    zeros where no window reached."""
    n, oh, kh, ow, kw, c = t.shape
    xp = backend.namespace(t)
    out = t.reshape(n, oh * kh, ow * kw, c)
    hp, wp = padded_hw
    if (hp, wp) == (oh * kh, ow * kw):
        return out
    return xp.pad(out, ((0, 0), (0, hp - oh * kh), (0, wp - ow * kw), (0, 0)))


def im2col(x_pad: np.ndarray, window: Sequence[int], stride: Sequence[int], out_hw: Sequence[int]) -> np.ndarray:
    """The im2col matrix of a padded NHWC NumPy array: one column per output pixel,

    ``cols[(i, j, c), (n, p, q)] = x_pad[n, p*sh + i, q*sw + j, c]``, shape ``(kh*kw*C, N*OH*OW)``,

    so that a convolution is one matrix product ``y = cols.T @ w.reshape(kh*kw*C, F)``.
    Built channel-major (each kernel offset copies whole image rows), which is
    several times faster than gathering pixel by pixel.
    """
    (kh, kw), (sh, sw), (oh, ow) = window, stride, out_hw
    n, _, _, c = x_pad.shape
    planes = np.ascontiguousarray(np.moveaxis(x_pad, 3, 0))  # (C, N, Hp, Wp)
    cols = np.empty((kh, kw, c, n, oh, ow), x_pad.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[i, j] = planes[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
    return cols.reshape(kh * kw * c, n * oh * ow)


def col2im(cols: np.ndarray, padded_shape: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> np.ndarray:
    """The adjoint of :func:`im2col`: ``(kh*kw*C, N*OH*OW) -> (N, Hp, Wp, C)``, each
    entry added back to the pixel it was read from (overlapping windows add up)."""
    (kh, kw), (sh, sw) = window, stride
    n, hp, wp, c = padded_shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = cols.reshape(kh, kw, c, n, oh, ow)
    planes = np.zeros((c, n, hp, wp), cols.dtype)  # a fresh buffer: adding into it in place is safe
    for i in range(kh):
        for j in range(kw):
            planes[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += cols[i, j]
    return np.moveaxis(planes, 0, 3)
