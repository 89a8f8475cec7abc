"""Convolution layers over channels-last inputs ``(N, *spatial, C)``: the N-d
``conv`` (``conv1d`` / ``conv2d`` / ``conv3d`` fix the rank) and
``conv_transpose``, each with its hand-written backward rule.

Forward (a cross-correlation, as in every deep-learning library), with stride
``s``, dilation ``d`` and ``G`` groups (output channel ``o`` reads the input
channels of its group ``g(o)``)::

    y[b, *q, o] = b[o] + sum_{i, c} x_pad[b, *(q*s + i*d), g(o)*C/G + c] * w[*i, c, o]

Backward, for the cotangent ``dy`` of ``y``::

    db[o]        = sum_{b, q} dy[b, *q, o]
    dw[*i, c, o] = sum_{b, q} x_pad[b, *(q*s + i*d), g(o)*C/G + c] * dy[b, *q, o]
                   (the input correlated with dy, dy's taps spaced by the stride)
    dx           = dy dilated by the stride, correlated with w flipped in space and
                   its in / out axes swapped, then cropped by the forward's padding.

``conv_transpose`` is the input-gradient of a convolution: its forward is the
``dx`` formula above, its backward the convolution itself (for ``dx``) and
the ``dw`` formula (for ``dw``). How each product runs (XLA, im2col, a tap
sum, ...) is the business of :mod:`fnn.kernels.conv`; no rule uses autodiff.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn.checks import batch_axis_hint
from fnn.core import Layer, LayerError, check_param_shapes, check_positive_int, expect_single, layer_factory
from fnn.kernels import conv as kernels
from fnn.kernels import windows as win
from fnn.kernels.plan import CONV_IMPLEMENTATIONS

__all__ = ["conv", "conv1d", "conv2d", "conv3d", "conv_transpose"]

_LECUN_NORMAL = initializers.lecun_normal()


def _check_implementation(name: str, implementation: Any) -> str:
    if not isinstance(implementation, str) or implementation not in CONV_IMPLEMENTATIONS:
        choices = ", ".join(map(repr, CONV_IMPLEMENTATIONS))
        raise LayerError(name, f"implementation must be one of {choices}; got {implementation!r}")
    return implementation


def _single(name: str, x: Any, rank: int) -> tuple:
    return win.check_input(name, tuple(np.shape(expect_single(name, x))), rank)


def _bias_shape(rank: int, features: int) -> tuple[int, ...]:
    return (1,) * (rank + 1) + (features,)


def _conv(
    rank: int,
    features: int,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    use_bias: bool,
    w_init: initializers.Initializer,
    b_init: initializers.Initializer,
    implementation: str,
    name: str,
) -> Layer:
    """The convolution layer of ``rank`` spatial axes (see :func:`conv`)."""
    features = check_positive_int(name, "features", features)
    groups = check_positive_int(name, "groups", groups)
    implementation = _check_implementation(name, implementation)
    window = win.ints(name, "kernel_size", kernel_size, rank)
    strides = win.ints(name, "stride", stride, rank)
    dilation = win.ints(name, "dilation", dilation, rank)
    spec = win.padding_spec(name, padding, rank)
    if features % groups:
        raise LayerError(name, f"features must be divisible by groups: got features={features}, groups={groups}")
    geometry = {"strides": strides, "dilation": dilation, "groups": groups}

    def check_channels(shape: tuple) -> int:
        channels = shape[-1]
        if channels % groups:
            raise LayerError(
                name, f"the input's {channels} channels (shape {shape}) must be divisible by groups={groups}"
            )
        return channels

    def sizes(shape: tuple) -> tuple[win.Padding, tuple]:
        pads = win.resolve_padding(name, spec, shape[1:-1], window, strides, dilation)
        return pads, win.output_sizes(name, shape[1:-1], window, strides, pads, "kernel", dilation)

    def out_shape(shape):
        shape = win.check_input(name, shape, rank)
        check_channels(shape)
        return (shape[0], *sizes(shape)[1], features)

    def init(key, shape, dtype):
        out_shape(shape)
        k_w, k_b = backend.split(key)
        params = {"w": w_init(k_w, (*window, shape[-1] // groups, features), dtype)}
        if use_bias:
            params["b"] = b_init(k_b, (features,), dtype)
        return params, {}

    def fwd(params, state, x, key, train):
        x_shape = _single(name, x, rank)
        channels = check_channels(x_shape)
        w_shape = tuple(np.shape(params["w"])) if isinstance(params, dict) and "w" in params else ()
        if len(w_shape) == rank + 2 and w_shape[-2] * groups != channels:
            raise LayerError(
                name,
                f"the input has {channels} channels (shape {x_shape}) but the kernel w of shape {w_shape} "
                f"expects {w_shape[-2] * groups}; the layer was initialised for another input",
            )
        expected = {"w": (*window, channels // groups, features)}
        if use_bias:
            expected["b"] = (features,)
        check_param_shapes(name, params, expected)
        pads, _ = sizes(x_shape)
        xp = backend.namespace(x, params)
        dtype = xp.result_type(x.dtype, params["w"].dtype)  # one dtype for both (XLA needs it)
        xc, wc = xp.asarray(x, dtype=dtype), xp.asarray(params["w"], dtype=dtype)
        y, cols = kernels.conv_forward(xc, wc, padding=pads, implementation=implementation, **geometry)
        if use_bias:
            y = y + params["b"].astype(dtype).reshape(_bias_shape(rank, features))
        return y, state, {"x": x, "cols": cols}

    def bwd(params, residuals, dy, *, input_grad=True):
        x = residuals["x"]
        pads, _ = sizes(x.shape)
        xc = x if x.dtype == dy.dtype else x.astype(dy.dtype)
        dw = kernels.conv_dw(
            xc, dy, window, padding=pads, cols=residuals["cols"], implementation=implementation, **geometry
        )
        grads = {"w": dw.astype(params["w"].dtype)}
        if use_bias:
            grads["b"] = dy.sum(axis=tuple(range(rank + 1))).astype(params["b"].dtype)
        if not input_grad:  # the model's input: its cotangent (a col2im on NumPy) is not needed
            return grads, None
        w = params["w"].astype(dy.dtype)
        dx = kernels.conv_dx(dy, w, x.shape, padding=pads, implementation=implementation, **geometry)
        return grads, dx.astype(x.dtype)

    return Layer(name, init, out_shape, fwd, bwd)


@layer_factory
def conv(
    features: int,
    kernel_size: tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Any = "valid",
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    use_bias: bool = True,
    w_init: initializers.Initializer = _LECUN_NORMAL,
    b_init: initializers.Initializer = initializers.zeros,
    implementation: str = "auto",
    name: str = "conv",
) -> Layer:
    """N-d convolution: ``(N, *n, C) -> (N, *out, features)``, rank ``len(kernel_size)``.

    ``y[b, *q, o] = b[o] + sum_{i, c} x_pad[b, *(q*s + i*d), g(o)*C/G + c] * w[*i, c, o]``

    Args:
      features: output channels (divisible by ``groups``).
      kernel_size: one size per spatial axis, e.g. ``(3,)``, ``(3, 5)`` or ``(3, 3, 3)``
        (an int is refused: use :func:`conv1d`, :func:`conv2d` or :func:`conv3d`).
      stride, dilation: an int or one per axis; dilation ``d`` spreads the taps
        ``d`` apart (a window of ``(k - 1) * d + 1`` entries).
      padding: ``"valid"`` (none), ``"same"`` (output ``ceil(n / s)``, total padding
        ``max((out - 1) * s + (k - 1) * d + 1 - n, 0)``, the odd entry after, as XLA
        and TensorFlow), an int, one int per axis, or one ``(lo, hi)`` pair per axis.
        Then ``out = (n + lo + hi - (k - 1) * d - 1) // s + 1``.
      groups: ``G``; the input channels ``C`` and ``features`` are cut into ``G``
        groups, group ``g`` of the output reading group ``g`` of the input only.
        ``groups = C`` is a depthwise convolution.
      w_init, b_init: initialisers of ``w (*kernel, C // groups, features)`` and ``b (features,)``.
      implementation: ``"auto"``, ``"xla"`` or ``"im2col"``: how the JAX backend runs
        the forward and the two backward products (:func:`fnn.kernels.plan.lowering_plan`);
        the same numbers up to rounding. NumPy arrays always run im2col.

    Backward (hand-written): ``dw`` is the input correlated with ``dy``; ``dx`` is
    ``dy``, dilated by the stride, correlated with the flipped kernel.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.conv(4, (3,), stride=2, padding="same", groups=2)
    >>> params, state = layer.init(np.random.default_rng(0), (None, 7, 2))
    >>> params["w"].shape, layer.out_shape((1, 7, 2))
    ((3, 1, 4), (1, 4, 4))
    """
    if not isinstance(kernel_size, (tuple, list)) or len(kernel_size) == 0:
        raise LayerError(
            name,
            f"kernel_size must be a tuple with one size per spatial axis, e.g. (3, 3); got {kernel_size!r} "
            "(for an int size use conv1d, conv2d or conv3d)",
        )
    rank = len(kernel_size)
    args = (features, kernel_size, stride, padding, dilation, groups, use_bias, w_init, b_init, implementation, name)
    return _conv(rank, *args)


def _fixed_rank(rank: int, default_name: str):
    def layer(
        features: int,
        kernel_size: int | tuple[int, ...],
        *,
        stride: int | tuple[int, ...] = 1,
        padding: Any = "valid",
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        use_bias: bool = True,
        w_init: initializers.Initializer = _LECUN_NORMAL,
        b_init: initializers.Initializer = initializers.zeros,
        implementation: str = "auto",
        name: str = default_name,
    ) -> Layer:
        args = (features, kernel_size, stride, padding, dilation, groups, use_bias, w_init, b_init, implementation, name)
        return _conv(rank, *args)

    layer.__name__ = layer.__qualname__ = default_name
    axes = ", ".join(win.axis_names(rank))
    layer.__doc__ = (
        f"{rank}-D convolution over ``(N, {axes}, C)`` inputs: :func:`conv` with the rank fixed, so "
        f"``kernel_size``, ``stride`` and ``dilation`` may be ints. Kernel "
        f"``w ({'k, ' * rank}C // groups, features)``, bias ``b (features,)``."
    )
    return layer


conv1d = layer_factory(_fixed_rank(1, "conv1d"))
conv3d = layer_factory(_fixed_rank(3, "conv3d"))
_conv2d = layer_factory(_fixed_rank(2, "conv2d"))


def conv2d(*args: Any, lowering: str | None = None, **kwargs: Any) -> Layer:
    """2-D convolution over NHWC images: :func:`conv` with the rank fixed, so
    ``kernel_size``, ``stride`` and ``dilation`` may be ints. Kernel
    ``w (kh, kw, C // groups, features)``, bias ``b (features,)``.

    ``lowering=`` is the deprecated spelling of ``implementation=`` (it warns).

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.conv2d(4, 3, stride=2, padding="same")
    >>> params, state = layer.init(np.random.default_rng(0), (None, 7, 7, 2))
    >>> params["w"].shape, layer.out_shape((1, 7, 7, 2))
    ((3, 3, 2, 4), (1, 4, 4, 4))
    """
    if lowering is not None:
        message = f"{kwargs.get('name', 'conv2d')}: lowering= is deprecated; pass implementation={lowering!r}"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        kwargs["implementation"] = lowering
    return _conv2d(*args, **kwargs)


conv2d.__signature__ = inspect.signature(_conv2d)  # help() shows the arguments, not *args


@layer_factory
def conv_transpose(
    features: int,
    kernel_size: int | tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Any = 0,
    use_bias: bool = True,
    w_init: initializers.Initializer = _LECUN_NORMAL,
    b_init: initializers.Initializer = initializers.zeros,
    implementation: str = "auto",
    name: str = "conv_transpose",
) -> Layer:
    """Transposed convolution: the input-gradient of a convolution with stride
    ``stride`` (as PyTorch's ``ConvTranspose``), ``(N, *n, C) -> (N, *m, features)``
    with ``m = (n - 1) * s + k - lo - hi``; for an int padding ``p``,
    ``m = (n - 1) * s - 2 * p + k``.

    With ``W = w`` with its last two axes swapped (the kernel ``(*k, features, C)`` of
    the convolution ``A_W: (N, *m, features) -> (N, *n, C)`` it transposes)::

        y = A_W^T x + b          dx = A_W dy          dW = (dy correlated with x)

    i.e. the convolution's ``dx`` formula forward, the convolution itself for
    ``dx`` and its ``dw`` formula for ``dw``.

    Args:
      features: output channels.
      kernel_size: an int or one size per spatial axis; the rank is
        ``len(kernel_size)``, or the input's ``ndim - 2`` for an int.
      stride: an int or one per axis.
      padding: an int, one int per axis, or one ``(lo, hi)`` pair per axis: the
        padding of the convolution it transposes (it crops the output).
      w_init, b_init: initialisers of ``w (*kernel, C, features)`` and ``b (features,)``.
      implementation: as for :func:`conv`.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.conv_transpose(3, (4, 3), stride=2, padding=1)
    >>> params, _ = layer.init(np.random.default_rng(0), (None, 5, 6, 2))
    >>> params["w"].shape, layer.out_shape((1, 5, 6, 2))
    ((4, 3, 2, 3), (1, 10, 11, 3))
    """
    features = check_positive_int(name, "features", features)
    implementation = _check_implementation(name, implementation)
    fixed = len(kernel_size) if isinstance(kernel_size, (tuple, list)) else None
    if isinstance(padding, str) and padding.lower() != "valid":
        raise LayerError(name, f"padding must be 'valid', an int, ints or (lo, hi) pairs per axis; got {padding!r}")
    spec = win.padding_spec(name, padding, fixed)

    def geometry(shape: tuple) -> tuple:
        rank = fixed or len(shape) - 2
        if rank < 1:
            raise LayerError(name, f"expected an input (batch, *spatial, channels), got shape {shape}"
                                   f"{batch_axis_hint(shape, 3)}")
        shape = win.check_input(name, shape, rank)
        window = win.ints(name, "kernel_size", kernel_size, rank)
        strides = win.ints(name, "stride", stride, rank)
        pads = win.resolve_padding(name, spec, shape[1:-1], window, strides)
        axes = zip(shape[1:-1], strides, window, pads)
        out = tuple(None if n is None else (n - 1) * s + k - lo - hi for n, s, k, (lo, hi) in axes)
        if any(m is not None and m < 1 for m in out):
            raise LayerError(name, f"padding {pads} leaves no output for input {shape} (sizes {out}); use less padding")
        return rank, window, strides, pads, (shape[0], *out, features)

    def init(key, shape, dtype):
        _, window, *_ = geometry(shape)
        k_w, k_b = backend.split(key)
        params = {"w": w_init(k_w, (*window, shape[-1], features), dtype)}
        if use_bias:
            params["b"] = b_init(k_b, (features,), dtype)
        return params, {}

    def fwd(params, state, x, key, train):
        rank, window, strides, pads, y_shape = geometry(tuple(np.shape(expect_single(name, x))))
        expected = {"w": (*window, x.shape[-1], features), **({"b": (features,)} if use_bias else {})}
        check_param_shapes(name, params, expected)
        xp = backend.namespace(x, params)
        dtype = xp.result_type(x.dtype, params["w"].dtype)
        xc, wc = xp.asarray(x, dtype=dtype), xp.asarray(params["w"], dtype=dtype)
        w = wc.swapaxes(-1, -2)  # (*k, features, C): the kernel of the convolution this transposes
        y = kernels.conv_dx(xc, w, y_shape, strides=strides, padding=pads, implementation=implementation)
        if use_bias:
            y = y + params["b"].astype(dtype).reshape(_bias_shape(rank, features))
        return y, state, {"x": x}

    def bwd(params, residuals, dy, *, input_grad=True):
        x = residuals["x"]
        rank, window, strides, pads, _ = geometry(x.shape)
        dw = kernels.conv_dw(
            dy, x.astype(dy.dtype), window, strides=strides, padding=pads, implementation=implementation
        )
        grads = {"w": dw.swapaxes(-1, -2).astype(params["w"].dtype)}
        if use_bias:
            grads["b"] = dy.sum(axis=tuple(range(rank + 1))).astype(params["b"].dtype)
        if not input_grad:
            return grads, None
        w = params["w"].astype(dy.dtype).swapaxes(-1, -2)  # (*k, features, C)
        dx, _ = kernels.conv_forward(dy, w, strides=strides, padding=pads, implementation=implementation)
        return grads, dx.astype(x.dtype)

    return Layer(name, init, lambda shape: geometry(shape)[-1], fwd, bwd)
