"""Activation functions and their derivatives as plain array functions.

Each works on NumPy and JAX arrays alike and is written to be stable for any
finite input (``sigmoid`` and ``softplus`` never overflow, even at ``|x| = 1e4``).
Kinks follow one convention, the same in the hand-written derivatives here and
under ``jax.grad`` of the forward functions: ``relu'(0) = 0``, ``step' = 0``,
``leaky_relu'(0) = k``, ``elu'(0) = alpha``.

The layers in :mod:`fnn.layers.activations` and the losses are built on these.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fnn.backend import namespace
from fnn.kernels.relu import relu_select
from fnn.kernels.special import erf

from fnn._attention import dot_product_attention  # attention

Array = Any

__all__ = [
    "dot_product_attention",
    "elu",
    "gelu",
    "identity",
    "leaky_relu",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "prelu",
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "step",
    "tanh",
    # sequence layers' functions
    "gelu_exact",
    "silu",
    "sinusoidal_table",
]


def identity(x: Array) -> Array:
    """``f(x) = x``."""
    return x


def step(x: Array) -> Array:
    """Heaviside step: 1 where ``x > 0``, else 0 (the perceptron's activation); NaN stays NaN."""
    xp = namespace(x)
    return xp.where(x > 0, 1.0, xp.where(xp.isnan(x), x, 0.0)).astype(x.dtype)


def _neg_abs(x: Array) -> Array:
    # -|x| written with a select so that its derivative at 0 is -1 (the x >= 0 branch),
    # which keeps jax.grad of sigmoid and softplus exact at 0.
    xp = namespace(x)
    return xp.where(x >= 0, -x, x)


def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))``, computed from ``exp(-|x|)`` so it never overflows."""
    xp = namespace(x)
    e = xp.exp(_neg_abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x: Array) -> Array:
    """``log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``."""
    xp = namespace(x)
    return xp.where(x >= 0, x, 0.0) + xp.log1p(xp.exp(_neg_abs(x)))


def log_sigmoid(x: Array) -> Array:
    """``log(sigmoid(x)) = -softplus(-x)``."""
    return -softplus(-x)


def tanh(x: Array) -> Array:
    """Hyperbolic tangent."""
    return namespace(x).tanh(x)


def relu(x: Array) -> Array:
    """``max(x, 0)``, with derivative 0 at 0, NaN passed on: ``where(x <= 0, 0, x)``."""
    return relu_select(x, x)


def leaky_relu(x: Array, k: float = 0.01) -> Array:
    """``x`` for ``x > 0``, else ``k * x`` (derivative ``k`` at 0)."""
    return namespace(x).where(x > 0, x, k * x)


def prelu(x: Array, alpha: Array) -> Array:
    """Leaky ReLU with a learned slope ``alpha``."""
    return namespace(x, alpha).where(x > 0, x, alpha * x)


def elu(x: Array, alpha: float = 1.0) -> Array:
    """``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)`` (derivative ``alpha`` at 0)."""
    xp = namespace(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.where(x > 0, 0.0, x)))


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def gelu(x: Array) -> Array:
    """GELU, tanh form: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
    (the default of ``jax.nn.gelu``)."""
    xp = namespace(x)
    return 0.5 * x * (1.0 + xp.tanh(_GELU_C * (x + _GELU_A * x**3)))


# --------------------------------------------------------------------------- #
# Sequence layers' functions: silu, gelu_exact, the sinusoidal position table
# --------------------------------------------------------------------------- #

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def silu(x: Array) -> Array:
    """SiLU (swish): ``x * sigmoid(x)``."""
    return x * sigmoid(x)


def d_silu(x: Array) -> Array:
    """silu'(x) = ``s (1 + x (1 - s))`` with ``s = sigmoid(x)``."""
    s = sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def gelu_exact(x: Array) -> Array:
    """GELU, exact form: ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))`` (``jax.nn.gelu(x,
    approximate=False)``; :func:`gelu` is the tanh form). ``erf`` is
    :func:`fnn.kernels.special.erf` (exact to float64 on NumPy)."""
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))


def d_gelu_exact(x: Array) -> Array:
    """gelu_exact'(x) = ``Phi(x) + x phi(x)``, ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``."""
    xp = namespace(x)
    return 0.5 * (1.0 + erf(x * _SQRT_HALF)) + x * xp.exp(-0.5 * x * x) * _INV_SQRT_2PI


def sinusoidal_table(time: int, features: int, max_wavelength: float = 10000.0) -> np.ndarray:
    """The position encoding of "Attention is all you need" (Vaswani et al., 2017),
    a float64 NumPy array ``(time, features)`` (``features`` even)::

        table[t, 2i]     = sin(t / max_wavelength ** (2i / features))
        table[t, 2i + 1] = cos(t / max_wavelength ** (2i / features))

    >>> np.round(sinusoidal_table(2, 4), 4)
    array([[0.    , 1.    , 0.    , 1.    ],
           [0.8415, 0.5403, 0.01  , 1.    ]])
    """
    if features % 2:
        raise ValueError(f"sinusoidal_table: features must be even (sin and cos pairs); got {features}")
    rates = float(max_wavelength) ** (-np.arange(0, features, 2, dtype=np.float64) / features)
    angles = np.arange(time, dtype=np.float64)[:, None] * rates[None, :]
    table = np.empty((time, features))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


def logsumexp(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
    """``log(sum(exp(x)))`` along ``axis``, shifted by the max so it stays finite."""
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """``x - logsumexp(x)`` along ``axis``."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x: Array, axis: int = -1) -> Array:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the max."""
    xp = namespace(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def one_hot(labels: Array, num_classes: int, dtype: Any = None) -> Array:
    """``labels[..., None] == arange(num_classes)`` as floats."""
    xp = namespace(labels)
    classes = xp.arange(num_classes).reshape((1,) * labels.ndim + (num_classes,))
    out = labels[..., None] == classes
    return out.astype(dtype if dtype is not None else xp.float32)


# --------------------------------------------------------------------------- #
# Derivatives, each from the input x (and the output y where that is cheaper)
# --------------------------------------------------------------------------- #


def d_sigmoid(y: Array) -> Array:
    """sigmoid'(x) from y = sigmoid(x): ``y (1 - y)``."""
    return y * (1.0 - y)


def d_tanh(y: Array) -> Array:
    """tanh'(x) from y = tanh(x): ``1 - y^2``."""
    return 1.0 - y * y


def d_elu(x: Array, y: Array, alpha: float) -> Array:
    """elu'(x): 1 for x > 0, else ``alpha * exp(x) = y + alpha``."""
    return namespace(x).where(x > 0, 1.0, y + alpha)


def d_gelu(x: Array) -> Array:
    xp = namespace(x)
    t = xp.tanh(_GELU_C * (x + _GELU_A * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)
