"""The 2-D convolution layer over NHWC images with an HWIO kernel, and its
hand-written backward rule.

Forward (a cross-correlation, as in every deep-learning library)::

    y[n, p, q, o] = b[o] + sum_{i, j, c} x_pad[n, p*sh + i, q*sw + j, c] * w[i, j, c, o]

Backward, for the cotangent ``dy`` of ``y``::

    db[o]          = sum_{n, p, q} dy[n, p, q, o]
    dw[i, j, c, o] = sum_{n, p, q} x_pad[n, p*sh + i, q*sw + j, c] * dy[n, p, q, o]
                     (the input correlated with dy, dy's taps spaced by the stride)
    dx             = dy dilated by the stride (s - 1 zeros between entries), padded
                     by k - 1, correlated with w flipped in space and with its in/out
                     axes swapped -- then cropped by the forward's padding.

The NumPy backend runs these as im2col / col2im and matrix products. On the
JAX backend each of the three (y, dw, dx) is either an XLA convolution or
written over the im2col matrix, as the layer's ``lowering`` argument says:

* ``"xla"``: XLA convolutions (``lax.conv_general_dilated``), which use cuDNN
  on a GPU;
* ``"im2col"``: slices, pads and matrix products over the im2col matrix
  ``cols (N*OH*OW, kh*kw*C)``: ``y = cols @ w`` (written as a sum over the
  kernel taps, :func:`fnn.layers._im2col.tap_sum`, when ``C`` and the kernel
  are small), ``dw = cols^T @ dy``, ``dx = col2im(dy @ w^T)``. ``jax.grad``
  of a tap sum (the ``"autodiff"`` method) is that of the XLA convolution it
  equals (:func:`fnn.backend.conv_with_xla_derivative`): differentiating the
  sum itself would give ``kh*kw*C`` slow reductions;
* ``"auto"`` (the default): XLA everywhere except on a CPU, where XLA's
  convolution is slow for few input channels, for the input gradient of a
  stride-1 convolution and for a kernel larger than its image; there the
  forward of a small kernel on few channels is a tap sum, a stride-1 ``dw``
  on few channels and many pixels one product over blocks of output columns,
  a stride-1 ``dx`` with few channels a col2im, and a kernel with more taps
  than its image has pixels im2col. See :func:`lowering_plan` for the rule and
  the timings behind it.

No hand-written rule uses autodiff.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn.core import Layer, LayerError, check_param_shapes, check_positive_int, layer_factory
from fnn.layers import _im2col as im

__all__ = ["LOWERINGS", "conv2d", "lowering_plan"]

LOWERINGS = ("auto", "xla", "im2col")

_DIMS = ("NHWC", "HWIO", "NHWC")
_LECUN_NORMAL = initializers.lecun_normal()

# "auto" on a CPU, from side-by-side timings (float32, batch 64, 8x8 to 28x28
# inputs, XLA CPU of JAX 0.10 on 2 cores; each lowering relative to the XLA
# convolution computing the same piece):
# - y: the tap sum took 0.05-0.3x for C = 1 and 0.1-0.7x for C = 2-4 when the
#   kernel has at most 800 weights (LeNet's first layer, 5x5x1x6 on 28x28:
#   0.1x); its cost grows with kh*kw*C*F and it lost (1-6x) beyond. The im2col
#   matrix product (0.3-20x) never beat both.
# - dw: XLA beat im2col's cols^T @ dy in every shape measured (1-13x). A
#   stride-1 dw on C <= 4 channels and at least 20000 output pixels ran as
#   column blocks (:func:`_blocked_dw`) in 0.45-1.0x (LeNet's first layer,
#   5x5x1x6 on 64x28x28: 0.5-0.65x); on fewer pixels XLA won (1-2.7x at 14x14).
# - dx at stride 1: col2im took 0.2-0.8x for C <= 8 and F <= 16 while its
#   matrix dy @ w^T (N*OH*OW x kh*kw*C) stays within 4M entries (LeNet's second
#   layer, valid 5x5x6x16 on 14x14: 0.5x); 1-7x with 16 channels or a larger
#   matrix, 0.9-1.6x for F = 32 with "same" padding, and about 1x (0.7-2.5x)
#   at stride 2.
# In LeNet's jitted training step (W2) the two choices together took the
# manual step from 0.8x to 0.45-0.5x the plain-JAX step.
_TAPS_MAX_CHANNELS = 4
_TAPS_MAX_WEIGHTS = 800  # kh * kw * C * F
_COL2IM_MAX_CHANNELS = 8
_COL2IM_MAX_FEATURES = 16
_COL2IM_MAX_ENTRIES = 4 * 2**20  # N*OH*OW * kh*kw*C
_BLOCKS_MAX_CHANNELS = 4
_BLOCKS_MIN_PIXELS = 20_000  # N*OH*OW
_BLOCK_MIN_COLUMNS = 24  # block * F: the width of dy's side of the product
_BLOCK_MAX_WIDTH = 4  # output columns per block


def lowering_plan(
    lowering: str,
    platform: str,
    w_shape: tuple[int, int, int, int],
    strides: tuple[int, int],
    out_pixels: int,
    *,
    in_hw: tuple[int, int] | None = None,
    out_hw: tuple[int, int] | None = None,
) -> tuple[str, str, str]:
    """How the JAX backend computes ``(y, dw, dx)`` of one convolution with
    kernel ``w_shape = (kh, kw, C, F)`` and ``out_pixels = N*OH*OW`` outputs,
    from an ``in_hw = (H, W)`` image to ``out_hw = (OH, OW)`` (when given).

    Returns ``"xla"``, ``"taps"`` or ``"matmul"`` for ``y``; ``"xla"``,
    ``"matmul"`` or ``"blocks"`` for ``dw``; ``"xla"`` or ``"col2im"`` for ``dx``.

    * ``"xla"``: XLA convolutions for all three.
    * ``"im2col"``: the im2col matrix for all three; ``y`` as a tap sum when
      ``C <= 4`` and the kernel has at most 800 weights, else one matrix product.
    * ``"auto"``: ``"xla"`` on any platform but ``"cpu"``; on a CPU, the tap sum
      for ``y`` under the same condition; column blocks for ``dw`` at stride 1
      when ``C <= 4`` and there are at least 20000 output pixels, else XLA's;
      and col2im for ``dx`` at stride 1 when ``C <= 8``, ``F <= 16`` and
      ``dy @ w^T`` has at most 4M entries (the timings behind these numbers are
      in this module's source). Whatever these say, a kernel with more taps
      than the image it slides over has pixels (``kh*kw > H*W`` for ``y``,
      ``> OH*OW`` for ``dx``, which slides it over ``dy``) runs as im2col:
      XLA swaps such a convolution's operands, and its CPU backend runs the
      swapped one as a naive loop (3x3 on 2x2 images, 64 channels: 2.4 ms
      against 0.4 ms for im2col).
    """
    kh, kw, c, f = w_shape
    taps = c <= _TAPS_MAX_CHANNELS and kh * kw * c * f <= _TAPS_MAX_WEIGHTS
    if lowering == "im2col":
        return ("taps" if taps else "matmul", "matmul", "col2im")
    if lowering == "xla" or platform != "cpu":
        return ("xla", "xla", "xla")
    col2im = (
        tuple(strides) == (1, 1)
        and c <= _COL2IM_MAX_CHANNELS
        and f <= _COL2IM_MAX_FEATURES
        and out_pixels * kh * kw * c <= _COL2IM_MAX_ENTRIES
    )
    blocks = tuple(strides) == (1, 1) and c <= _BLOCKS_MAX_CHANNELS and out_pixels >= _BLOCKS_MIN_PIXELS
    y = "taps" if taps else "matmul" if in_hw is not None and kh * kw > in_hw[0] * in_hw[1] else "xla"
    col2im = col2im or (out_hw is not None and kh * kw > out_hw[0] * out_hw[1])
    return (y, "blocks" if blocks else "xla", "col2im" if col2im else "xla")


def _compute_dtype(dtype: Any) -> Any:
    """float32 for 16-bit floats (the sums of a lowering lose too much in them;
    XLA's CPU convolution also sums them in float32 and rounds once), else ``dtype``."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize < 4 else dtype


def _rows(x_pad: Any, window: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """The im2col matrix of a padded JAX array: ``(N*OH*OW, kh*kw*C)``, laid out as ``w.reshape(kh*kw*C, F)``."""
    n, c = x_pad.shape[0], x_pad.shape[3]
    return im.patches(x_pad, window, strides, out_hw).reshape(n * out_hw[0] * out_hw[1], window[0] * window[1] * c)


def _jax_forward(how: str, x: Any, w: Any, pads: im.Padding, strides: tuple[int, int], out_hw: tuple[int, int]) -> Any:
    """``y`` without bias, lowered as ``how`` (``"xla"``, ``"taps"`` or ``"matmul"``)."""
    if how == "xla":
        return backend.xla_conv(x, w, padding=pads, strides=strides, dimension_numbers=_DIMS)
    kh, kw, c, f = w.shape
    acc = _compute_dtype(x.dtype)
    xa, wa = x.astype(acc), w.astype(acc)
    if how == "taps":  # jax.grad of the tap sum is the XLA convolution's derivative
        y = backend.conv_with_xla_derivative(
            lambda a, b: im.tap_sum(im.pad(a, pads), b, strides, out_hw), padding=pads, strides=strides
        )(xa, wa)
    else:
        y = _rows(im.pad(xa, pads), (kh, kw), strides, out_hw) @ wa.reshape(kh * kw * c, f)
    return y.reshape(x.shape[0], *out_hw, f).astype(x.dtype)


def _blocked_dw(x_pad: Any, dy: Any, window: tuple[int, int]) -> Any:
    """``dw (kh, kw, C, F)`` of a stride-1 convolution as one well-shaped matrix product.

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
    block = min(_BLOCK_MAX_WIDTH, -(-_BLOCK_MIN_COLUMNS // f))
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


def _jax_dw(how: str, x: Any, dy: Any, window: tuple[int, int], pads: im.Padding, strides: tuple[int, int]) -> Any:
    """``dw (kh, kw, C, F)``: XLA's correlation of ``x`` with ``dy``, ``cols^T @ dy``, or column blocks."""
    (kh, kw), (sh, sw) = window, strides
    n, h, w_, c = x.shape
    _, oh, ow, f = dy.shape
    (top, bottom), (left, right) = pads
    if how == "xla":
        # rows / columns of the padded input that no window reached
        rh, rw = h + top + bottom - ((oh - 1) * sh + kh), w_ + left + right - ((ow - 1) * sw + kw)
        padding = ((top, bottom - rh), (left, right - rw))
        # x read with channels as the batch and examples as the contracted features, dy as the
        # kernel (in = examples, out = F). Spelled with explicit transposes around a canonical
        # NHWC x HWIO convolution: XLA's CPU backend rewrites other dimension orders to this one
        # only outside loops, and inside a lax.scan (fit's epoch) a non-canonical convolution
        # falls back to a naive loop, several times slower
        dw = backend.xla_conv(
            x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), padding=padding, rhs_dilation=strides
        )  # (C, kh, kw, F)
        return dw.transpose(1, 2, 0, 3)
    acc = _compute_dtype(dy.dtype)
    if how == "blocks":
        return _blocked_dw(im.pad(x.astype(acc), pads), dy.astype(acc), window).astype(dy.dtype)
    rows = _rows(im.pad(x.astype(acc), pads), window, strides, (oh, ow))
    return (rows.T @ dy.astype(acc).reshape(n * oh * ow, f)).reshape(kh, kw, c, f).astype(dy.dtype)


def _jax_dx(how: str, dy: Any, w: Any, x_shape: tuple, pads: im.Padding, strides: tuple[int, int]) -> Any:
    """``dx (N, H, W, C)``: XLA's transposed convolution or ``col2im(dy @ w^T)``."""
    kh, kw, c, f = w.shape
    sh, sw = strides
    n, h, w_, _ = x_shape
    _, oh, ow, _ = dy.shape
    (top, bottom), (left, right) = pads
    hp, wp = h + top + bottom, w_ + left + right
    if how == "xla":
        rh, rw = hp - ((oh - 1) * sh + kh), wp - ((ow - 1) * sw + kw)
        # dy correlated with w flipped in space, its in / out axes swapped (canonical, as for dw)
        return backend.xla_conv(
            dy,
            w[::-1, ::-1, :, :].transpose(0, 1, 3, 2),
            padding=((kh - 1 - top, kh - 1 - bottom + rh), (kw - 1 - left, kw - 1 - right + rw)),
            lhs_dilation=strides,
        )
    acc = _compute_dtype(dy.dtype)
    dcols = dy.astype(acc).reshape(n * oh * ow, f) @ w.astype(acc).reshape(kh * kw * c, f).T
    dx_pad = im.patches_to_image(dcols.reshape(n, oh, ow, kh, kw, c), strides, (hp, wp))
    return im.crop(dx_pad, pads, (h, w_)).astype(dy.dtype)


@layer_factory
def conv2d(
    features: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: Any = "valid",
    w_init: initializers.Initializer = _LECUN_NORMAL,
    b_init: initializers.Initializer = initializers.zeros,
    use_bias: bool = True,
    lowering: str = "auto",
    name: str = "conv2d",
) -> Layer:
    """2-D convolution: ``(N, H, W, C) -> (N, OH, OW, features)``.

    ``y[n, p, q, o] = b[o] + sum_{i,j,c} x_pad[n, p*sh + i, q*sw + j, c] * w[i, j, c, o]``

    Args:
      features: output channels.
      kernel_size: ``k`` or ``(kh, kw)``.
      stride: ``s`` or ``(sh, sw)``.
      padding: ``"valid"`` (none), ``"same"`` (output ``ceil(H / sh)``; total
        padding ``max((OH - 1) * sh + kh - H, 0)``, the odd pixel at the bottom /
        right, as XLA and TensorFlow), an int, a pair ``(ph, pw)``, or
        ``((top, bottom), (left, right))``.
        Then ``OH = (H + top + bottom - kh) // sh + 1``.
      w_init, b_init: initialisers of ``w (kh, kw, C, features)`` and ``b (features,)``
        (fans: ``kh*kw*C`` in, ``kh*kw*features`` out).
      lowering: how the JAX backend computes the forward and the two backward
        products: ``"xla"`` (XLA convolutions, cuDNN on a GPU), ``"im2col"``
        (slices, pads and matrix products over the im2col matrix) or ``"auto"``
        (XLA, except on a CPU where, by measurement, a small kernel on few input
        channels, and a kernel larger than its image, run as im2col; see
        :func:`lowering_plan`). All give the same
        numbers up to float rounding. The NumPy backend always uses im2col.

    Backward (hand-written): ``dw`` is the input correlated with ``dy``; ``dx``
    is ``dy``, dilated by the stride, correlated with the spatially flipped
    kernel (see the module docstring). NumPy: im2col / col2im; JAX: as ``lowering`` says.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.conv2d(4, 3, stride=2, padding="same")
    >>> params, state = layer.init(np.random.default_rng(0), (None, 7, 7, 2))
    >>> params["w"].shape, params["b"].shape
    ((3, 3, 2, 4), (4,))
    >>> y, _ = layer.apply(params, state, np.ones((1, 7, 7, 2), np.float32))
    >>> y.shape
    (1, 4, 4, 4)
    """
    features = check_positive_int(name, "features", features)
    if lowering not in LOWERINGS:
        raise LayerError(name, f"lowering must be one of {', '.join(map(repr, LOWERINGS))}; got {lowering!r}")
    window = im.pair(name, "kernel_size", kernel_size)
    strides = im.pair(name, "stride", stride)
    spec = im.padding_spec(name, padding)
    kh, kw = window

    def expected(channels: int) -> dict:
        shapes = {"w": (kh, kw, channels, features)}
        if use_bias:
            shapes["b"] = (features,)
        return shapes

    def out_shape(shape):
        n, h, w, _ = im.check_nhwc(name, shape)
        return (n, *im.output_hw(name, (h, w), window, strides, spec, "kernel"), features)

    def init(key, shape, dtype):
        out_shape(shape)
        channels = shape[3]
        k_w, k_b = backend.split(key)
        params = {"w": w_init(k_w, (kh, kw, channels, features), dtype)}
        if use_bias:
            params["b"] = b_init(k_b, (features,), dtype)
        return params, {}

    def plan(x_shape, out_hw):
        n, h, w_, channels = x_shape
        return lowering_plan(
            lowering,
            backend.default_platform(),
            (kh, kw, channels, features),
            strides,
            n * out_hw[0] * out_hw[1],
            in_hw=(h, w_),
            out_hw=out_hw,
        )

    def fwd(params, state, x, key, train):
        if isinstance(x, (tuple, list)):
            raise LayerError(name, f"expected a single array, got a tuple of {len(x)} inputs")
        x_shape = im.check_nhwc(name, tuple(np.shape(x)))
        n, h, w_, channels = x_shape
        w_shape = tuple(np.shape(params["w"])) if isinstance(params, dict) and "w" in params else ()
        if len(w_shape) == 4 and w_shape[2] != channels:
            raise LayerError(
                name,
                f"the input has {channels} channels (shape {x_shape}) but the kernel w of shape {w_shape} "
                f"expects {w_shape[2]}; the layer was initialised for another input",
            )
        check_param_shapes(name, params, expected(channels))
        oh, ow = im.output_hw(name, (h, w_), window, strides, spec, "kernel")
        pads = im.resolve_padding(spec, (h, w_), window, strides)
        xp = backend.namespace(x, params)
        dtype = xp.result_type(x.dtype, params["w"].dtype)  # one dtype for both (XLA needs it)
        xc = x if x.dtype == dtype else x.astype(dtype)
        wc = params["w"] if params["w"].dtype == dtype else params["w"].astype(dtype)
        if xp is np:  # im2col: one column per output pixel, then one matrix product
            cols = im.im2col(im.pad(xc, pads), window, strides, (oh, ow))
            y = (cols.T @ wc.reshape(kh * kw * channels, features)).reshape(n, oh, ow, features)
            residuals = {"x": x, "cols": cols}
        else:
            y = _jax_forward(plan(x_shape, (oh, ow))[0], xp.asarray(xc), xp.asarray(wc), pads, strides, (oh, ow))
            residuals = {"x": x}
        if use_bias:
            y = y + params["b"].astype(dtype).reshape(1, 1, 1, features)
        return y, state, residuals

    def bwd(params, residuals, dy):
        x = residuals["x"]
        n, h, w_, channels = x.shape
        _, oh, ow, _ = dy.shape
        pads = im.resolve_padding(spec, (h, w_), window, strides)
        (top, bottom), (left, right) = pads
        hp, wp = h + top + bottom, w_ + left + right
        w = params["w"].astype(dy.dtype)
        grads = {}
        if "cols" in residuals:  # NumPy: dw = cols @ dy, dx = col2im(w @ dy^T)
            cols = residuals["cols"]
            dy2 = dy.reshape(n * oh * ow, features)
            w2 = w.reshape(kh * kw * channels, features)
            grads["w"] = (cols @ dy2).reshape(kh, kw, channels, features)
            dx_pad = im.col2im(w2 @ dy2.T, (n, hp, wp, channels), window, strides)
            dx = np.ascontiguousarray(im.crop(dx_pad, pads, (h, w_)))
        else:  # JAX: the same two correlations, lowered as the plan says
            _, how_dw, how_dx = plan(x.shape, (oh, ow))
            grads["w"] = _jax_dw(how_dw, x.astype(dy.dtype), dy, window, pads, strides)
            dx = _jax_dx(how_dx, dy, w, x.shape, pads, strides)
        grads["w"] = grads["w"].astype(params["w"].dtype)
        if use_bias:
            grads["b"] = dy.sum(axis=(0, 1, 2)).astype(params["b"].dtype)
        return grads, dx.astype(x.dtype)

    return Layer(name, init, out_shape, fwd, bwd)
