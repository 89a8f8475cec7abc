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

The NumPy backend runs these as im2col / col2im and matrix products; the JAX
backend as XLA convolutions (``lax.conv_general_dilated``), which use cuDNN on a
GPU and stay fast under ``jit``. Neither uses autodiff.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn.core import Layer, LayerError, check_param_shapes, check_positive_int
from fnn.layers import _im2col as im

__all__ = ["conv2d"]

_DIMS = ("NHWC", "HWIO", "NHWC")
# dx: dy (NHWC) correlated with w read as (H, W, O, I): its last axis (the forward's
# output features) is contracted with dy's channels.
_DIMS_DX = ("NHWC", "HWOI", "NHWC")
# dw: the input read with channels as the "batch" and examples as the contracted
# "features", correlated with dy read as a kernel (N = in, O = out); the result
# is laid out as the kernel (kh, kw, in, out).
_DIMS_DW = ("CHWN", "IHWO", "HWNC")



def conv2d(
    features: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: Any = "valid",
    w_init: initializers.Initializer = initializers.lecun_normal(),
    b_init: initializers.Initializer = initializers.zeros,
    use_bias: bool = True,
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

    Backward (hand-written): ``dw`` is the input correlated with ``dy``; ``dx``
    is ``dy``, dilated by the stride, correlated with the spatially flipped
    kernel (see the module docstring). NumPy: im2col / col2im; JAX: XLA convolutions.

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
            y = backend.xla_conv(xp.asarray(xc), xp.asarray(wc), padding=pads, strides=strides, dimension_numbers=_DIMS)
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
        else:  # JAX: the same two correlations as XLA convolutions
            sh, sw = strides
            # rows / columns of the padded input that no window reached
            rh, rw = hp - ((oh - 1) * sh + kh), wp - ((ow - 1) * sw + kw)
            xc = x.astype(dy.dtype)
            grads["w"] = backend.xla_conv(
                xc, dy, padding=((top, bottom - rh), (left, right - rw)), rhs_dilation=strides, dimension_numbers=_DIMS_DW
            )
            dx = backend.xla_conv(
                dy,
                w[::-1, ::-1, :, :],
                padding=((kh - 1 - top, kh - 1 - bottom + rh), (kw - 1 - left, kw - 1 - right + rw)),
                lhs_dilation=strides,
                dimension_numbers=_DIMS_DX,
            )
        grads["w"] = grads["w"].astype(params["w"].dtype)
        if use_bias:
            grads["b"] = dy.sum(axis=(0, 1, 2)).astype(params["b"].dtype)
        return grads, dx.astype(x.dtype)

    return Layer(name, init, out_shape, fwd, bwd)
