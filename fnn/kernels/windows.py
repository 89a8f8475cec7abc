"""N-d window arithmetic shared by convolution and pooling: argument checks,
padding, output sizes, and the gathering of windows (patches, im2col) with
their adjoints (which add every entry back to the pixel it came from, so
that overlapping windows add up).

Arrays are channels last, ``(N, *spatial, C)``. For one spatial axis of size
``n``, window ``k``, stride ``s``, dilation ``d`` and padding ``(lo, hi)``::

    span          K   = (k - 1) * d + 1            (the window's extent)
    padded size   p   = n + lo + hi
    output size   out = (p - K) // s + 1           (needs p >= K)
    window q reads padded entries  q*s, q*s + d, ..., q*s + (k - 1)*d

``"same"`` follows XLA / TensorFlow: ``out = ceil(n / s)``, total padding
``max((out - 1) * s + K - n, 0)``, the odd entry going after (bottom / right).

Every gatherer loops over the kernel offsets only (:func:`tap_sum` also over
the input channels), never over pixels or examples.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from fnn import backend
from fnn.core import LayerError, is_multi_shape

__all__ = [
    "Padding",
    "axis_names",
    "check_input",
    "col2im",
    "crop",
    "im2col",
    "ints",
    "output_sizes",
    "pad",
    "padding_spec",
    "patches",
    "patches_to_image",
    "resolve_padding",
    "same_padding",
    "tap_sum",
    "tiles",
    "untile",
    "xla_pad",
]

Array = Any
Ints = Sequence[int]
Padding = tuple[tuple[int, int], ...]  # one (lo, hi) per spatial axis

_LAYOUTS = {1: ("NWC", "width"), 2: ("NHWC", "height, width"), 3: ("NDHWC", "depth, height, width")}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def axis_names(rank: int) -> tuple[str, ...]:
    """``("height", "width")`` for rank 2 (``depth`` before them for 3-D); ``axis i`` beyond 3-D."""
    if rank in _LAYOUTS:
        return tuple(_LAYOUTS[rank][1].split(", "))
    return tuple(f"axis {i + 1}" for i in range(rank))


def ints(layer: str, what: str, value: Any, rank: int, *, minimum: int = 1) -> tuple[int, ...]:
    """An int, or ``rank`` ints (each ``>= minimum``), as a tuple of ``rank`` ints."""
    if _is_int(value):
        value = (value,) * rank
    if not (
        isinstance(value, (tuple, list)) and len(value) == rank and all(_is_int(v) and v >= minimum for v in value)
    ):
        many = "a pair of them" if rank == 2 else f"a tuple of {rank} of them"
        raise LayerError(layer, f"{what} must be an int >= {minimum} or {many}; got {value!r}")
    return tuple(int(v) for v in value)


def padding_spec(layer: str, padding: Any, rank: int | None) -> str | int | tuple:
    """``"valid"``, ``"same"`` or explicit ``((lo, hi), ...)`` from any accepted
    spelling: a string (any case), an int, ``rank`` ints (``p`` before and after
    on each axis) or ``rank`` ``(lo, hi)`` pairs. With ``rank=None`` (a pooling
    window whose rank comes from the input) the spelling is checked and an int
    or tuple kept for :func:`resolve_padding` to check against the rank."""
    if isinstance(padding, str) and padding.lower() in ("valid", "same"):
        return padding.lower()
    if _is_int(padding) and padding >= 0:
        return int(padding) if rank is None else ((int(padding),) * 2,) * rank
    if isinstance(padding, (tuple, list)) and (rank is None or len(padding) == rank) and len(padding) > 0:
        if all(_is_int(p) and p >= 0 for p in padding):
            return tuple((int(p), int(p)) for p in padding)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) for p in padding):
            return tuple((int(lo), int(hi)) for lo, hi in padding)
    if rank == 2:
        forms = "a pair (ph, pw) or ((top, bottom), (left, right))"
    else:
        n = "one per spatial axis" if rank is None else f"{rank}, one per spatial axis"
        forms = f"ints ({n}) or (lo, hi) pairs ({n}), e.g. ((1, 2),) for one axis"
    raise LayerError(layer, f"padding must be 'valid', 'same', an int, {forms} of non-negative ints; got {padding!r}")


def same_padding(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """XLA / TensorFlow "same": ``(lo, hi)`` giving ``ceil(n / s)`` outputs, the odd entry after."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def resolve_padding(
    layer: str,
    spec: str | int | tuple,
    in_sizes: Sequence[int | None],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> Padding:
    """Explicit ``((lo, hi), ...)`` for an input of known spatial sizes (an unknown
    size with "same" gets ``(0, 0)``: only output sizes are asked of it)."""
    rank = len(in_sizes)
    dilation = dilation or (1,) * rank
    if spec == "valid":
        return ((0, 0),) * rank
    if spec == "same":
        axes = zip(in_sizes, window, strides, dilation)
        return tuple((0, 0) if n is None else same_padding(n, k, s, d) for n, k, s, d in axes)
    if _is_int(spec):
        return ((spec, spec),) * rank
    if len(spec) != rank:
        raise LayerError(layer, f"padding {spec} has {len(spec)} axes but the input has {rank} spatial axes")
    return spec


def check_input(layer: str, shape: Any, rank: int, what: str = "input") -> tuple:
    """``shape`` must be one ``(N, *spatial, C)`` shape of ``rank`` spatial axes with a known channel count."""
    if is_multi_shape(shape):
        raise LayerError(layer, f"expected a single {what}, got a tuple of inputs with shapes {shape}")
    shape = tuple(shape)
    if len(shape) != rank + 2:
        layout, axes = _LAYOUTS.get(rank, ("channels-last", ", ".join(axis_names(rank))))
        hint = ""
        if len(shape) == rank + 1:  # one example, or a batch without its channel axis
            hint = f"; add a channel axis for a batch of one-channel {what}s, x[..., None]"
            if shape[0] is not None:
                hint += (", or, for one example, the batch axis: x[None] (under jax.vmap, apply the model to "
                         "xi[None] and take [0])")
        raise LayerError(
            layer, f"expected a {rank + 2}-D {layout} {what} (batch, {axes}, channels), got shape {shape}{hint}"
        )
    if shape[-1] is None or shape[-1] == 0:
        raise LayerError(layer, f"the channel count (last axis) must be known and positive; got shape {shape}")
    return shape


def output_sizes(
    layer: str,
    in_sizes: Sequence[int | None],
    window: Sequence[int],
    strides: Sequence[int],
    padding: Padding,
    what: str,
    dilation: Sequence[int] | None = None,
) -> tuple[int | None, ...]:
    """``(out_1, ...)`` for resolved ``padding``; a LayerError when a window does not
    fit in the padded input. Unknown (None) input sizes give unknown output sizes."""
    dilation = dilation or (1,) * len(in_sizes)
    out: list[int | None] = []
    for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(in_sizes, window, strides, dilation, padding)):
        span = (k - 1) * d + 1
        if n is None:
            out.append(None)
        elif n + lo + hi < span:
            spread = f" (dilated by {d}: {span} wide)" if d > 1 else ""
            raise LayerError(
                layer,
                f"the {what} {tuple(window)}{spread} is larger than the padded input: input {tuple(in_sizes)} with "
                f"padding {tuple(padding)} gives {n + lo + hi} along {axis_names(len(in_sizes))[axis]}, fewer than "
                f"{span}; use a smaller window or more padding",
            )
        else:
            out.append((n + lo + hi - span) // s + 1)
    return tuple(out)


def pad(x: Array, padding: Padding, value: float = 0.0) -> Array:
    """``x (N, *spatial, C)`` padded spatially with ``value``."""
    if all(p == (0, 0) for p in padding):
        return x
    xp = backend.namespace(x)
    return xp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=value)


def crop(x_pad: Array, padding: Padding, in_sizes: Sequence[int]) -> Array:
    """The inverse of :func:`pad`: the interior of a padded array."""
    return x_pad[(slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(padding, in_sizes)), slice(None))]


def xla_pad(x: Array, padding: Sequence[tuple[int, int, int]], value: float = 0.0) -> Array:
    """``lax.pad`` of a JAX array: per axis ``(low, high, interior)``, where
    ``interior`` inserts that many ``value`` entries between neighbours (the
    dilation of a strided window's adjoint) and a negative ``low`` / ``high`` crops."""
    return backend.lax.pad(x, np.array(value, x.dtype), tuple((int(lo), int(hi), int(mid)) for lo, hi, mid in padding))


def _offset_index(offset: Ints, strides: Ints, out_sizes: Ints, dilation: Ints) -> tuple:
    """The spatial slices that kernel offset ``offset`` reads for every output: entries
    ``offset_a * d_a + s_a * q`` along each axis ``a``."""
    return tuple(slice(i * d, i * d + s * (o - 1) + 1, s) for i, s, o, d in zip(offset, strides, out_sizes, dilation))


def _offsets(window: Sequence[int]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(k) for k in window)))


def patches(
    x_pad: Array, window: Ints, strides: Ints, out_sizes: Ints, dilation: Ints | None = None
) -> Array:
    """Every window of a padded ``(N, *spatial, C)`` array, on either backend:
    ``cols[n, *q, *i, c] = x_pad[n, *(q*s + i*d), c]``, shape ``(N, *out, *window, C)``."""
    dilation = dilation or (1,) * len(window)
    n, c = x_pad.shape[0], x_pad.shape[-1]
    xp = backend.namespace(x_pad)
    shape = (n, *out_sizes, *window, c)
    reads = [x_pad[(slice(None), *_offset_index(o, strides, out_sizes, dilation))] for o in _offsets(window)]
    if xp is np:
        cols = np.empty((n, *out_sizes, int(np.prod(window)), c), x_pad.dtype)
        for t, read in enumerate(reads):
            cols[..., t, :] = read
        return cols.reshape(shape)
    return xp.stack(reads, axis=-2).reshape(shape)


def patches_to_image(
    cols: Array, strides: Sequence[int], padded_sizes: Sequence[int], dilation: Sequence[int] | None = None
) -> Array:
    """The adjoint of :func:`patches`: ``(N, *out, *window, C) -> (N, *padded, C)``, each
    entry added back to the pixel it was read from (overlaps add up). On JAX a
    sum of ``prod(window)`` interior-padded slices, which XLA fuses into one loop."""
    rank = len(strides)
    dilation = dilation or (1,) * rank
    n, c = cols.shape[0], cols.shape[-1]
    out_sizes, window = cols.shape[1 : 1 + rank], cols.shape[1 + rank : 1 + 2 * rank]
    xp = backend.namespace(cols)
    if xp is np:
        image = np.zeros((n, *padded_sizes, c), cols.dtype)  # a fresh buffer: adding into it in place is safe
        for o in _offsets(window):
            image[(slice(None), *_offset_index(o, strides, out_sizes, dilation))] += cols[(Ellipsis, *o, slice(None))]
        return image
    total = None
    for o in _offsets(window):
        spans = [(q - 1) * s + 1 for q, s in zip(out_sizes, strides)]
        lows = [i * d for i, d in zip(o, dilation)]
        pads = [(lo, p - lo - sp, s - 1) for lo, p, sp, s in zip(lows, padded_sizes, spans, strides)]
        part = xla_pad(cols[(Ellipsis, *o, slice(None))], ((0, 0, 0), *pads, (0, 0, 0)))
        total = part if total is None else total + part
    return total


def tap_sum(x_pad: Array, w: Array, strides: Sequence[int], out_sizes: Sequence[int]) -> Array:
    """``patches(x_pad) @ w`` without the patches: the convolution
    ``y[n, *q, :] = sum_{i, c} x_pad[n, *(q*s + i), c] * w[*i, c, :]`` as
    ``prod(window)*C`` broadcast multiply-adds of shifted input slices, which XLA
    fuses into one loop over the output. Its cost grows with ``prod(window)*C*F``;
    for a few input channels it is many times faster than a matrix product or a
    CPU convolution."""
    rank = len(strides)
    c, f = w.shape[-2:]
    y = None
    for o in _offsets(w.shape[:rank]):
        read = x_pad[(slice(None), *_offset_index(o, strides, out_sizes, (1,) * rank))]
        for ch in range(c):
            term = read[..., ch : ch + 1] * w[(*o, ch)].reshape((1,) * (rank + 1) + (f,))
            y = term if y is None else y + term
    return y


def tiles(x_pad: Array, window: Sequence[int], out_sizes: Sequence[int]) -> Array:
    """Non-overlapping windows (stride == window) as a free reshape:
    ``(N, *padded, C) -> (N, o_1, k_1, o_2, k_2, ..., C)`` after cropping what no window reaches."""
    n, c = x_pad.shape[0], x_pad.shape[-1]
    cropped = x_pad[(slice(None), *(slice(0, o * k) for o, k in zip(out_sizes, window)), slice(None))]
    return cropped.reshape(n, *itertools.chain.from_iterable(zip(out_sizes, window)), c)


def untile(t: Array, padded_sizes: Sequence[int]) -> Array:
    """The adjoint of :func:`tiles`: ``(N, o_1, k_1, ..., C) -> (N, *padded, C)``, zeros where no window reached."""
    rank = len(padded_sizes)
    n, c = t.shape[0], t.shape[-1]
    covered = [t.shape[1 + 2 * a] * t.shape[2 + 2 * a] for a in range(rank)]
    out = t.reshape(n, *covered, c)
    if list(padded_sizes) == covered:
        return out
    xp = backend.namespace(t)
    return xp.pad(out, ((0, 0), *((0, p - q) for p, q in zip(padded_sizes, covered)), (0, 0)))


def im2col(
    x_pad: np.ndarray, window: Ints, strides: Ints, out_sizes: Ints, dilation: Ints | None = None
) -> np.ndarray:
    """The im2col matrix of a padded NumPy array: one column per output pixel,

    ``cols[(*i, c), (n, *q)] = x_pad[n, *(q*s + i*d), c]``, shape ``(prod(window)*C, N*prod(out))``,

    so that a convolution is one matrix product ``y = cols.T @ w.reshape(-1, F)``.
    Built channel-major (each kernel offset copies whole image rows), which is
    several times faster than gathering pixel by pixel.
    """
    dilation = dilation or (1,) * len(window)
    n, c = x_pad.shape[0], x_pad.shape[-1]
    planes = np.ascontiguousarray(np.moveaxis(x_pad, -1, 0))  # (C, N, *padded)
    cols = np.empty((*window, c, n, *out_sizes), x_pad.dtype)
    for o in _offsets(window):
        cols[o] = planes[(slice(None), slice(None), *_offset_index(o, strides, out_sizes, dilation))]
    return cols.reshape(int(np.prod(window)) * c, n * int(np.prod(out_sizes)))


def col2im(
    cols: np.ndarray,
    padded_shape: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: ``(prod(window)*C, N*prod(out)) -> (N, *padded, C)``,
    each entry added back to the pixel it was read from (overlapping windows add up)."""
    dilation = dilation or (1,) * len(window)
    n, *padded, c = padded_shape
    out_sizes = [(p - (k - 1) * d - 1) // s + 1 for p, k, s, d in zip(padded, window, strides, dilation)]
    cols = cols.reshape(*window, c, n, *out_sizes)
    planes = np.zeros((c, n, *padded), cols.dtype)  # a fresh buffer: adding into it in place is safe
    for o in _offsets(window):
        planes[(slice(None), slice(None), *_offset_index(o, strides, out_sizes, dilation))] += cols[o]
    return np.moveaxis(planes, 0, -1)
