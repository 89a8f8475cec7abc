"""Convolution kernels: the forward ``y``, and the two backward products ``dw``
and ``dx``, of an N-d channels-last convolution with stride, padding, dilation
and groups, each in several forms.

With ``x (N, *n, C)``, ``w (*k, C/G, F)``, padded input ``x_pad``, stride
``s``, dilation ``d`` and ``G`` groups (group ``g`` reads input channels
``g*C/G ...`` and writes output channels ``g*F/G ...``)::

    y[b, *q, o]    = sum_{i, c} x_pad[b, *(q*s + i*d), g(o)*C/G + c] * w[*i, c, o]
    dw[*i, c, o]   = sum_{b, q} x_pad[b, *(q*s + i*d), g(o)*C/G + c] * dy[b, *q, o]
    dx             = the adjoint of y in x: dy dilated by s, correlated with w
                     flipped in space and its in / out axes swapped, cropped.

Forms (``implementation=``; "auto" asks :func:`fnn.kernels.plan.lowering_plan`):

* ``"xla"``: ``lax.conv_general_dilated`` with canonical channels-last
  dimension numbers (cuDNN on a GPU) -- the reference of every other form;
* ``"matmul"`` (y, dw) and ``"col2im"`` (dx): the im2col matrix of
  :func:`fnn.kernels.windows.patches` and matrix products, any case;
* ``"taps"`` (y): a sum over the kernel's taps, whose ``jax.grad`` is the XLA
  convolution's; ``"blocks"`` (dw): one product over blocks of output columns
  -- 2-D, stride 1 (blocks), dilation 1, one group;
* NumPy arrays always take the NumPy im2col form (:func:`fnn.kernels.windows.im2col`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan
from fnn.kernels import windows as win

__all__ = [
    "conv_forward",
    "conv_dw",
    "conv_dx",
    "conv_with_xla_derivative",
    "channels_last_dims",
    "xla_conv",
]

Array = Any
Ints = Sequence[int]


def channels_last_dims(rank: int) -> tuple[str, str, str]:
    """Canonical channels-last dimension numbers: ``("NHWC", "HWIO", "NHWC")`` for rank 2."""
    spatial = "DHW"[-rank:] if rank <= 3 else "".join(chr(ord("a") + i) for i in range(rank))
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def xla_conv(
    lhs: Array,
    rhs: Array,
    *,
    padding: Sequence[tuple[int, int]],
    strides: Ints | None = None,
    lhs_dilation: Ints | None = None,
    rhs_dilation: Ints | None = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    dimension_numbers: tuple[str, str, str] | None = None,
) -> Array:
    """N-d cross-correlation ``lax.conv_general_dilated`` of JAX arrays of one dtype.

    ``padding`` is one ``(lo, hi)`` per spatial axis; a negative entry crops.
    ``lhs_dilation`` inserts ``d - 1`` zeros between input entries (the
    transposed convolution of a strided one); ``rhs_dilation`` does the same
    between kernel taps. The dimension numbers default to canonical channels last.
    """
    rank = len(padding)
    ones = (1,) * rank
    return backend.lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides=tuple(int(s) for s in strides or ones),
        padding=tuple((int(lo), int(hi)) for lo, hi in padding),
        lhs_dilation=tuple(int(d) for d in lhs_dilation or ones),
        rhs_dilation=tuple(int(d) for d in rhs_dilation or ones),
        dimension_numbers=dimension_numbers or channels_last_dims(rank),
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
    )


def conv_with_xla_derivative(
    fast: Callable[[Array, Array], Array], *, padding: Sequence[tuple[int, int]], strides: Ints
) -> Callable[[Array, Array], Array]:
    """``fast(x, w)``, another form of ``xla_conv(x, w, padding=..., strides=...)``
    (the same values), whose JAX derivative is the XLA convolution's.

    A convolution is bilinear, so its JVP is ``conv(dx, w) + conv(x, dw)``;
    ``jax.grad`` transposes that into XLA's own ``dx`` and ``dw`` convolutions,
    exactly as for ``xla_conv``, whatever ``fast`` is made of (the derivative of
    a sum of shifted slices, say, would be many slow reductions). Zero
    tangents (inputs that are not differentiated) cost nothing.
    """
    from jax.custom_derivatives import SymbolicZero

    def conv(x, w):
        return xla_conv(x, w, padding=padding, strides=strides)

    @backend.jax.custom_jvp
    def lowered(x, w):
        return fast(x, w)

    def jvp(primals, tangents):
        (x, w), (dx, dw) = primals, tangents
        y, dy = lowered(x, w), None
        if not isinstance(dx, SymbolicZero):
            dy = conv(dx, w)
        if not isinstance(dw, SymbolicZero):
            dy = conv(x, dw) if dy is None else dy + conv(x, dw)
        return y, backend.jnp.zeros_like(y) if dy is None else dy

    lowered.defjvp(jvp, symbolic_zeros=True)
    return lowered


# --------------------------------------------------------------------------- #
# Shared pieces
# --------------------------------------------------------------------------- #


def _compute_dtype(dtype: Any) -> Any:
    """float32 for 16-bit floats (the sums of a matrix form lose too much in them;
    XLA's CPU convolution also sums them in float32 and rounds once), else ``dtype``."""
    dtype = np.dtype(dtype)
    is_float = dtype.kind == "f" or dtype.name == "bfloat16"  # bfloat16's kind is "V" (an ml_dtypes type)
    return np.dtype(np.float32) if is_float and dtype.itemsize < 4 else dtype


def _ones(rank: int, v: Ints | None) -> tuple[int, ...]:
    return tuple(v) if v is not None else (1,) * rank


def _form(
    kernel: str, implementation: str, x_shape: tuple, w_shape: tuple, strides, out_sizes, dilation, groups
) -> str:
    """The form ``implementation`` resolves to for one of ``"y"``, ``"dw"``, ``"dx"``."""
    rank = len(out_sizes)
    forms = plan.lowering_plan(
        implementation,
        backend.default_platform(),
        w_shape,
        strides,
        x_shape[0] * int(np.prod(out_sizes)),
        in_hw=x_shape[1 : 1 + rank],
        out_hw=tuple(out_sizes),
        dilation=dilation,
        groups=groups,
    )
    return forms[("y", "dw", "dx").index(kernel)]


def _split_groups(cols: Array, groups: int, k_size: int) -> Array:
    """Rows ``(M, K*C)`` laid out ``(tap, channel)`` -> per group ``(G, M, K*C/G)``."""
    m = cols.shape[0]
    return cols.reshape(m, k_size, groups, -1).transpose(2, 0, 1, 3).reshape(groups, m, -1)


def _group_w(w: Array, groups: int) -> Array:
    """``w (*k, C/G, F) -> (G, K*C/G, F/G)``: each group's kernel as a matrix."""
    k_size = int(np.prod(w.shape[:-2]))
    cg, f = w.shape[-2:]
    return w.reshape(k_size * cg, groups, f // groups).transpose(1, 0, 2)


def _ungroup_w(wg: Array, w_shape: tuple) -> Array:
    """The inverse of :func:`_group_w`."""
    return wg.transpose(1, 0, 2).reshape(w_shape)


def _matmul(a: Array, b: Array) -> Array:
    """Per-group products ``(G, m, k) @ (G, k, n)``; one plain matrix product for one group."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return backend.namespace(a, b).matmul(a, b)


def _rows(x_pad: Array, window, strides, out_sizes, dilation) -> Array:
    """The im2col rows of a padded array: ``(N*prod(out), K*C)``, laid out as ``w.reshape(K*C, F)``."""
    n = x_pad.shape[0]
    return win.patches(x_pad, window, strides, out_sizes, dilation).reshape(n * int(np.prod(out_sizes)), -1)


def _numpy_cols(x_pad: np.ndarray, window, strides, out_sizes, dilation, groups: int) -> np.ndarray:
    """NumPy's channel-major im2col matrix, per group: ``(G, K*C/G, M)``."""
    cols = win.im2col(x_pad, window, strides, out_sizes, dilation)
    if groups == 1:
        return cols[None]
    k_size = int(np.prod(window))
    return cols.reshape(k_size, groups, -1, cols.shape[1]).transpose(1, 0, 2, 3).reshape(groups, -1, cols.shape[1])


# --------------------------------------------------------------------------- #
# Forward
# --------------------------------------------------------------------------- #


def conv_forward(
    x: Array,
    w: Array,
    *,
    strides: Ints,
    padding: win.Padding,
    dilation: Ints | None = None,
    groups: int = 1,
    implementation: str = "auto",
) -> tuple[Array, Array | None]:
    """``y (N, *out, F)`` without bias, and what :func:`conv_dw` may reuse (NumPy's
    im2col matrix; None for the other forms). ``x`` and ``w`` share one dtype."""
    rank = w.ndim - 2
    window, dilation = w.shape[:rank], _ones(rank, dilation)
    out_sizes = win.output_sizes("conv", x.shape[1:-1], window, strides, padding, "kernel", dilation)
    n, f = x.shape[0], w.shape[-1]
    if backend.namespace(x, w) is np:  # im2col: one column per output pixel, then one product per group
        cols = _numpy_cols(win.pad(x, padding), window, strides, out_sizes, dilation, groups)
        y = _matmul(cols.transpose(0, 2, 1), _group_w(w, groups))  # (G, M, F/G)
        y = y[0] if groups == 1 else y.transpose(1, 0, 2).reshape(-1, f)
        return y.reshape(n, *out_sizes, f), cols
    how = _form("y", implementation, x.shape, w.shape, strides, out_sizes, dilation, groups)
    if how == "xla":
        return xla_conv(x, w, padding=padding, strides=strides, rhs_dilation=dilation, feature_group_count=groups), None
    acc = _compute_dtype(x.dtype)
    xa, wa = x.astype(acc), w.astype(acc)
    if how == "taps":  # jax.grad of the tap sum is the XLA convolution's derivative
        taps = lambda a, b: win.tap_sum(win.pad(a, padding), b, strides, out_sizes)  # noqa: E731
        y = conv_with_xla_derivative(taps, padding=padding, strides=strides)(xa, wa)
    else:
        rows = _rows(win.pad(xa, padding), window, strides, out_sizes, dilation)
        if groups == 1:
            y = rows @ wa.reshape(-1, f)
        else:
            y = _matmul(_split_groups(rows, groups, int(np.prod(window))), _group_w(wa, groups))
            y = y.transpose(1, 0, 2).reshape(-1, f)
    return y.reshape(n, *out_sizes, f).astype(x.dtype), None


# --------------------------------------------------------------------------- #
# dw
# --------------------------------------------------------------------------- #


def _blocked_dw(x_pad: Array, dy: Array, window: tuple[int, int]) -> Array:
    """``dw (kh, kw, C, F)`` of a 2-D stride-1 convolution as one well-shaped matrix product.

    The output columns are cut into blocks of ``B`` (padded with zero columns
    of ``dy`` to a multiple of ``B``); a block reads ``B + kw - 1`` input
    columns. With one row per (example, output row, block), the product
    ``dy_blocks^T @ x_blocks`` is ``(B*F, kh*(B+kw-1)*C)`` and ``dw[i, j]`` sums
    its entries where an input column sits ``j`` after an output column:
    ``(B+kw-1)/kw`` times the arithmetic of ``cols^T @ dy`` on a matrix about
    ``B`` times smaller, whose two sides (``B*F`` and ``kh*(B+kw-1)*C``) are
    wider than im2col's ``F`` and ``kh*kw*C`` when ``B > 1``. ``B`` is the
    smallest width with ``B*F >= 24``, at most 4.
    """
    kh, kw = window
    n, _, wp, c = x_pad.shape
    _, oh, ow, f = dy.shape
    xp = backend.namespace(dy)
    block = min(plan.BLOCK_MAX_WIDTH, -(-plan.BLOCK_MIN_COLUMNS // f))
    blocks = -(-ow // block)
    span = block + kw - 1
    if blocks * block > ow:
        dy = xp.pad(dy, ((0, 0), (0, 0), (0, blocks * block - ow), (0, 0)))
    if blocks * block + kw - 1 > wp:
        x_pad = xp.pad(x_pad, ((0, 0), (0, 0), (0, blocks * block + kw - 1 - wp), (0, 0)))
    rows = xp.stack([x_pad[:, i : i + oh] for i in range(kh)], axis=2)  # (N, OH, kh, W', C)
    x_blocks = xp.stack([rows[:, :, :, b * block : b * block + span] for b in range(blocks)], axis=2)
    x_blocks = x_blocks.reshape(n * oh * blocks, kh * span * c)
    m = (dy.reshape(n * oh * blocks, block * f).T @ x_blocks).reshape(block, f, kh, span, c)
    dw = sum(m[q, :, :, q : q + kw] for q in range(block))  # (F, kh, kw, C)
    return dw.transpose(1, 2, 3, 0)


def _unreached(x_sizes, padding, dy_sizes, window, strides, dilation) -> list[int]:
    """Per axis, the padded entries after the last window (that no window reached)."""
    return [
        n + lo + hi - ((o - 1) * s + (k - 1) * d + 1)
        for n, (lo, hi), o, k, s, d in zip(x_sizes, padding, dy_sizes, window, strides, dilation)
    ]


def conv_dw(
    x: Array,
    dy: Array,
    window: Ints,
    *,
    strides: Ints,
    padding: win.Padding,
    dilation: Ints | None = None,
    groups: int = 1,
    cols: Array | None = None,
    implementation: str = "auto",
) -> Array:
    """``dw (*window, C/G, F)``: the input correlated with ``dy``. ``cols`` is what
    :func:`conv_forward` returned beside ``y`` (NumPy: its im2col matrix)."""
    rank, window = len(window), tuple(window)
    dilation = _ones(rank, dilation)
    c, f = x.shape[-1], dy.shape[-1]
    w_shape = (*window, c // groups, f)
    dy_sizes = dy.shape[1:-1]
    if backend.namespace(x, dy) is np:
        if cols is None:
            cols = _numpy_cols(win.pad(x, padding), window, strides, dy_sizes, dilation, groups)
        dyg = dy.reshape(-1, groups, f // groups).transpose(1, 0, 2)  # (G, M, F/G)
        return _ungroup_w(_matmul(cols, dyg), w_shape)
    how = _form("dw", implementation, x.shape, w_shape, strides, dy_sizes, dilation, groups)
    if how == "xla":
        rest = _unreached(x.shape[1:-1], padding, dy_sizes, window, strides, dilation)
        # x read with channels as the batch and examples as the contracted features, dy as the
        # kernel (in = examples, out = F), the groups split over x's channels. Spelled with
        # explicit transposes around a canonical channels-last convolution: XLA's CPU backend
        # rewrites other dimension orders to this one only outside loops, and inside a lax.scan
        # (fit's epoch) a non-canonical convolution falls back to a naive loop, several times slower
        perm = (rank + 1, *range(1, rank + 1), 0)
        dw = xla_conv(
            x.transpose(perm),
            dy.transpose(*range(1, rank + 1), 0, rank + 1),
            padding=[(lo, hi - r) for (lo, hi), r in zip(padding, rest)],
            strides=dilation,
            rhs_dilation=strides,
            batch_group_count=groups,
        )  # (C/G, *window, F)
        return dw.transpose(*range(1, rank + 1), 0, rank + 1)
    acc = _compute_dtype(dy.dtype)
    if how == "blocks":
        return _blocked_dw(win.pad(x.astype(acc), padding), dy.astype(acc), window).astype(dy.dtype)
    rows = _rows(win.pad(x.astype(acc), padding), window, strides, dy_sizes, dilation)
    if groups == 1:
        return (rows.T @ dy.astype(acc).reshape(-1, f)).reshape(w_shape).astype(dy.dtype)
    dyg = dy.astype(acc).reshape(-1, groups, f // groups).transpose(1, 0, 2)
    dwg = _matmul(_split_groups(rows, groups, int(np.prod(window))).transpose(0, 2, 1), dyg)
    return _ungroup_w(dwg, w_shape).astype(dy.dtype)


# --------------------------------------------------------------------------- #
# dx
# --------------------------------------------------------------------------- #


def _dx_kernel(w: Array, groups: int) -> Array:
    """``w (*k, C/G, F)`` flipped in space, in / out swapped per group: ``(*k, F/G, C)``."""
    rank = w.ndim - 2
    cg, f = w.shape[-2:]
    flipped = w[(slice(None, None, -1),) * rank]
    if groups == 1:
        return flipped.swapaxes(-1, -2)
    per_group = flipped.reshape(*w.shape[:rank], cg, groups, f // groups)
    swapped = per_group.transpose(*range(rank), rank + 2, rank + 1, rank)  # (*k, F/G, G, C/G)
    return swapped.reshape(*w.shape[:rank], f // groups, groups * cg)


def conv_dx(
    dy: Array,
    w: Array,
    x_shape: Sequence[int],
    *,
    strides: Ints,
    padding: win.Padding,
    dilation: Ints | None = None,
    groups: int = 1,
    implementation: str = "auto",
) -> Array:
    """``dx`` of shape ``x_shape``: ``dy`` dilated by the stride, correlated with
    the flipped kernel (XLA), or ``col2im(dy @ w^T)`` (the matrix forms)."""
    rank = w.ndim - 2
    window, dilation = w.shape[:rank], _ones(rank, dilation)
    x_shape = tuple(x_shape)
    n, c, f = x_shape[0], x_shape[-1], w.shape[-1]
    x_sizes, dy_sizes = x_shape[1:-1], dy.shape[1:-1]
    padded = [s + lo + hi for s, (lo, hi) in zip(x_sizes, padding)]
    k_size = int(np.prod(window))
    if backend.namespace(dy, w) is np:
        dyg = dy.reshape(-1, groups, f // groups).transpose(1, 2, 0)  # (G, F/G, M)
        dcols = _matmul(_group_w(w, groups), dyg)  # (G, K*C/G, M)
        if groups > 1:
            dcols = dcols.reshape(groups, k_size, c // groups, -1).transpose(1, 0, 2, 3)
        dx_pad = win.col2im(dcols.reshape(k_size * c, -1), (n, *padded, c), window, strides, dilation)
        return np.ascontiguousarray(win.crop(dx_pad, padding, x_sizes))
    how = _form("dx", implementation, x_shape, w.shape, strides, dy_sizes, dilation, groups)
    if how == "xla":
        rest = _unreached(x_sizes, padding, dy_sizes, window, strides, dilation)
        spans = [(k - 1) * d for k, d in zip(window, dilation)]
        # dy correlated with w flipped in space, its in / out axes swapped (canonical, as for dw)
        return xla_conv(
            dy,
            _dx_kernel(w, groups),
            padding=[(sp - lo, sp - hi + r) for sp, (lo, hi), r in zip(spans, padding, rest)],
            lhs_dilation=strides,
            rhs_dilation=dilation,
            feature_group_count=groups,
        )
    acc = _compute_dtype(dy.dtype)
    if groups == 1:
        dcols = dy.astype(acc).reshape(-1, f) @ w.astype(acc).reshape(k_size * c, f).T  # (M, K*C)
    else:
        dyg = dy.astype(acc).reshape(-1, groups, f // groups).transpose(1, 0, 2)  # (G, M, F/G)
        dcols = _matmul(dyg, _group_w(w.astype(acc), groups).transpose(0, 2, 1))  # (G, M, K*C/G)
        dcols = dcols.reshape(groups, -1, k_size, c // groups).transpose(1, 2, 0, 3)  # (M, K, G, C/G)
    dx_pad = win.patches_to_image(dcols.reshape(n, *dy_sizes, *window, c), strides, padded, dilation)
    return win.crop(dx_pad, padding, x_sizes).astype(dy.dtype)
