"""Activation layers: each one a Layer with a hand-written backward rule, and
callable as a plain function (``relu(x)``, ``leaky_relu(k=0.1)(x)``).

The math lives in :mod:`fnn.functional`; this file wraps it in the Layer
contract. ``prelu`` is the one activation with a parameter: a learned slope
``{"alpha": ()}``; ``rrelu`` the one with randomness: a slope per element drawn
in train mode from the layer's key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import backend
from fnn import functional as F
from fnn.kernels.relu import relu_select
from fnn.core import (
    Layer,
    LayerError,
    check_no_params,
    check_param_shapes,
    expect_single,
    layer_factory,
    no_params,
    single_shape,
)

__all__ = [
    "Activation",
    "elu",
    "gelu",
    "gelu_exact",
    "identity",
    "leaky_relu",
    "log_softmax",
    "prelu",
    "relu",
    "rrelu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "step",
    "tanh",
]

Array = Any


class Activation(Layer):
    """A parameter-free elementwise (or last-axis) layer that is also a function:
    ``relu(x)`` is ``relu.apply({}, {}, x)[0]``."""

    __slots__ = ("fn",)

    def __init__(self, name: str, init, out_shape, fwd, bwd, *, fn: Callable[[Array], Array], **kwargs):
        super().__init__(name, init, out_shape, fwd, bwd, **kwargs)
        object.__setattr__(self, "fn", fn)

    def __call__(self, x: Array) -> Array:
        return self.fn(x)

    def _rebuild(self, values: dict) -> "Activation":
        return Activation(values.pop("name"), **values, fn=self.fn)


def _same_shape(name: str) -> Callable:
    return lambda shape: single_shape(name, shape)


def _check_input(name: str, params: Any, x: Any) -> None:
    check_no_params(name, params)
    expect_single(name, x)


def _activation(name: str, fn: Callable, grad: Callable | None, keep: str, vjp: Callable | None = None) -> Activation:
    """An activation whose backward is ``dx = grad(saved) * dy`` (or ``vjp(saved, dy)``
    when given, to fuse the product); ``keep`` says whether the input ``"x"``,
    the output ``"y"`` or ``"xy"`` is saved."""

    def fwd(params, state, x, key, train):
        _check_input(name, params, x)
        y = fn(x)
        saved = {"x": x, "y": y, "xy": (x, y)}[keep]
        return y, state, saved

    def bwd(params, saved, dy):
        args = saved if keep == "xy" else (saved,)
        return {}, vjp(*args, dy) if vjp is not None else grad(*args) * dy

    return Activation(name, no_params, _same_shape(name), fwd, bwd, fn=fn)


def _identity_fwd(params, state, x, key, train):
    _check_input("identity", params, x)
    return x, state, None


identity = Activation(
    "identity", no_params, _same_shape("identity"), _identity_fwd, lambda params, saved, dy: ({}, dy), fn=F.identity
)
step = _activation("step", F.step, lambda x: backend.namespace(x).zeros_like(x), "x")
sigmoid = _activation("sigmoid", F.sigmoid, F.d_sigmoid, "y")
tanh = _activation("tanh", F.tanh, F.d_tanh, "y")
relu = _activation("relu", F.relu, None, "y", vjp=relu_select)
gelu = _activation("gelu", F.gelu, F.d_gelu, "x")
softplus = _activation("softplus", F.softplus, F.sigmoid, "x")
silu = _activation("silu", F.silu, F.d_silu, "x")  # x * sigmoid(x); dx = dy * s (1 + x (1 - s))
gelu_exact = _activation("gelu_exact", F.gelu_exact, F.d_gelu_exact, "x")  # dx = dy * (Phi(x) + x phi(x))


@layer_factory
def leaky_relu(k: float = 0.01, *, name: str = "leaky_relu") -> Activation:
    """``x`` for ``x > 0``, else ``k * x``; the derivative at 0 is ``k``."""
    if not np.isfinite(k):
        raise ValueError(f"leaky_relu: k must be finite; got {k}")
    return _activation(
        name, lambda x: F.leaky_relu(x, k), None, "x", vjp=lambda x, dy: backend.namespace(x, dy).where(x > 0, dy, k * dy)
    )


@layer_factory
def elu(alpha: float = 1.0, *, name: str = "elu") -> Activation:
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``; the derivative at 0 is ``alpha``."""
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"elu: alpha must be finite and >= 0; got {alpha}")
    return _activation(name, lambda x: F.elu(x, alpha), lambda x, y: F.d_elu(x, y, alpha), "xy")


def _last_axis(name: str, fn: Callable, bwd_rule: Callable) -> Activation:
    def fwd(params, state, x, key, train):
        _check_input(name, params, x)
        y = fn(x)
        return y, state, y

    return Activation(name, no_params, _same_shape(name), fwd, lambda p, y, dy: ({}, bwd_rule(y, dy)), fn=fn)


def _softmax_bwd(y, dy):
    xp = backend.namespace(y, dy)
    return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


def _log_softmax_bwd(y, dy):
    xp = backend.namespace(y, dy)
    return dy - xp.exp(y) * xp.sum(dy, axis=-1, keepdims=True)


softmax = _last_axis("softmax", F.softmax, _softmax_bwd)
log_softmax = _last_axis("log_softmax", F.log_softmax, _log_softmax_bwd)


@layer_factory
def prelu(init: float = 0.25, *, name: str = "prelu") -> Layer:
    """Leaky ReLU whose slope is learned: params ``{"alpha": ()}`` starting at ``init``."""
    if not np.isfinite(init):
        raise ValueError(f"prelu: init must be finite; got {init}")

    def init_fn(key, shape, dtype):
        xp = backend.namespace_of_key(key)
        return {"alpha": xp.asarray(init, dtype=dtype)}, {}

    def fwd(params, state, x, key, train):
        expect_single(name, x)
        check_param_shapes(name, params, {"alpha": ()})
        return F.prelu(x, params["alpha"]), state, x

    def bwd(params, x, dy):
        xp = backend.namespace(x, dy)
        positive = x > 0
        dalpha = xp.asarray(xp.sum(xp.where(positive, 0.0, x) * dy), dtype=params["alpha"].dtype)
        dx = xp.where(positive, dy, params["alpha"] * dy)
        return {"alpha": dalpha}, dx

    return Layer(name, init_fn, _same_shape(name), fwd, bwd)


@layer_factory
def rrelu(lower: float = 1.0 / 8.0, upper: float = 1.0 / 3.0, *, name: str = "rrelu") -> Activation:
    """Randomized leaky ReLU (Xu et al., 2015): a leaky ReLU whose negative slope
    is random while training.

        train:  y = x if x > 0 else a * x,   a ~ Uniform[lower, upper] per element, drawn from ``key``
        eval:   y = x if x > 0 else ((lower + upper) / 2) * x

    Backward: ``dx = dy`` where ``x > 0``, else ``a * dy`` with the forward's
    slopes (kept as the residual, so ``bwd`` draws nothing); the derivative at 0
    is the slope, as for :func:`leaky_relu`. Train mode needs a ``key`` (a JAX
    key or a NumPy Generator, read and never advanced) unless ``lower ==
    upper``; the same key gives the same slopes. Called as a function,
    ``rrelu()(x)`` is the eval form.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.rrelu(0.1, 0.3)
    >>> x = -np.ones((2, 3))
    >>> layer(x)  # eval: the mean slope 0.2
    array([[-0.2, -0.2, -0.2],
           [-0.2, -0.2, -0.2]])
    >>> y, _ = layer.apply({}, {}, x, key=np.random.default_rng(0), train=True)
    >>> bool(np.all((-y >= 0.1) & (-y <= 0.3))), len(set(y.ravel().tolist()))  # a slope per element
    (True, 6)
    """
    for arg, value in (("lower", lower), ("upper", upper)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value):
            raise ValueError(f"{name}: {arg} must be a finite number; got {value!r}")
    if not 0.0 <= lower <= upper:
        raise ValueError(f"{name}: expected 0 <= lower <= upper; got lower={lower!r}, upper={upper!r}")
    lower, upper = float(lower), float(upper)
    mean = (lower + upper) / 2.0

    def eval_fn(x):
        return F.leaky_relu(x, mean)

    def fwd(params, state, x, key, train):
        _check_input(name, params, x)
        xp = backend.namespace(x)
        if not train or lower == upper:
            return eval_fn(x), state, (x, mean)
        if key is None:
            raise LayerError(
                name,
                "train mode needs a random key for the slopes; pass one, e.g. "
                "model.apply(params, state, x, key=jax.random.key(0), train=True) "
                "(or key=numpy.random.default_rng(0) on NumPy), or use train=False",
            )
        slope = xp.asarray(backend.uniform(key, np.shape(x), dtype=x.dtype, low=lower, high=upper))
        return xp.where(x > 0, x, slope * x), state, (x, slope)

    def bwd(params, saved, dy):
        x, slope = saved
        return {}, backend.namespace(x, dy).where(x > 0, dy, slope * dy)

    return Activation(name, no_params, _same_shape(name), fwd, bwd, fn=eval_fn)
