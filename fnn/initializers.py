"""Weight initialisers: ``init(key, shape, dtype) -> array`` on the key's backend.

Fan-in and fan-out follow the kernel layouts of fnn: the last axis is the
output, the one before it the input, and any leading axes are the receptive
field (a conv kernel ``(kh, kw, in, out)`` has ``fan_in = kh*kw*in`` and
``fan_out = kh*kw*out``; a dense kernel ``(in, out)`` has ``fan_in = in``).

Variance-scaling initialisers draw with variance ``scale / n`` where ``n`` is
fan_in, fan_out or their average:

===================  =====  ==========  ===========================================
name                 scale  n           use
===================  =====  ==========  ===========================================
lecun_normal         1      fan_in      the book's "Xavier" (std 1/sqrt(n)); SELU
glorot / xavier      1      fan_avg     sigmoid / tanh (Glorot & Bengio, 2010)
he / kaiming         2      fan_in      ReLU (He et al., 2015)
===================  =====  ==========  ===========================================

``normal(0.01)`` is the "small random numbers" of the classic curriculum, and
``zeros`` the all-zero start whose symmetry no gradient step can break.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Sequence

import numpy as np

from fnn import backend

__all__ = [
    "Initializer",
    "compute_fans",
    "zeros",
    "ones",
    "constant",
    "normal",
    "uniform",
    "variance_scaling",
    "glorot_normal",
    "glorot_uniform",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "identity",
]



class Initializer:
    """An initialiser as a value: ``init(key, shape, dtype=float32) -> array``,
    printed as the call that built it (``he_normal()``), equal to any other
    built by the same call (so a layer's config compares equal too)."""

    __slots__ = ("_fn", "_call")

    def __init__(self, fn: Callable[[Any, Sequence[int], Any], Any], call: str):
        self._fn, self._call = fn, call

    def __call__(self, key: Any, shape: Sequence[int], dtype: Any = np.float32) -> Any:
        return self._fn(key, shape, dtype)

    def __repr__(self) -> str:
        return self._call

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Initializer) and other._call == self._call

    def __hash__(self) -> int:
        return hash(self._call)


def _factory(build: Callable[..., Any]) -> Callable[..., Initializer]:
    """An initialiser factory whose results print and compare as its call."""
    signature = inspect.signature(build)

    @functools.wraps(build)
    def make(*args: Any, **kwargs: Any) -> Initializer:
        made = build(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        call = f"{build.__name__}({', '.join(f'{k}={v!r}' for k, v in bound.arguments.items())})"
        return Initializer(made._fn if isinstance(made, Initializer) else made, call)

    return make


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel: last axis out, second-to-last in, the rest receptive field."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    if any((not isinstance(d, (int, np.integer))) or d < 0 for d in shape):
        raise ValueError(f"initializer: shape must be non-negative ints; got {shape}")
    return tuple(int(d) for d in shape)


@_factory
def constant(value: float) -> Initializer:
    """Every entry equal to ``value``."""

    def init(key, shape, dtype=np.float32):
        xp = backend.namespace_of_key(key)
        return xp.full(_check_shape(shape), value, dtype=dtype)

    return init


zeros = Initializer(constant(0.0), "zeros")
"""All zeros (biases; never all weights: every unit would stay identical)."""
ones = Initializer(constant(1.0), "ones")
"""All ones (e.g. a normalisation scale)."""


@_factory
def normal(stddev: float = 0.01, mean: float = 0.0) -> Initializer:
    """Gaussian ``mean + stddev * N(0, 1)``; the default 0.01 is the curriculum's small random start."""
    if not stddev >= 0:
        raise ValueError(f"normal: stddev must be >= 0; got {stddev}")

    def init(key, shape, dtype=np.float32):
        return mean + stddev * backend.normal(key, _check_shape(shape), dtype)

    return init


@_factory
def uniform(low: float = -0.05, high: float = 0.05) -> Initializer:
    """Uniform in ``[low, high)``."""
    if not high > low:
        raise ValueError(f"uniform: high must exceed low; got low={low}, high={high}")

    def init(key, shape, dtype=np.float32):
        return backend.uniform(key, _check_shape(shape), dtype, low, high)

    return init


@_factory
def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """Entries with variance ``scale / n``, ``n`` the fan_in, fan_out or fan_avg.

    ``distribution`` is ``"normal"`` (std ``sqrt(scale/n)``) or ``"uniform"``
    (on ``[-limit, limit]``, ``limit = sqrt(3 scale / n)``)."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling: mode must be 'fan_in', 'fan_out' or 'fan_avg'; got {mode!r}")
    if distribution not in ("normal", "uniform"):
        raise ValueError(f"variance_scaling: distribution must be 'normal' or 'uniform'; got {distribution!r}")
    if not scale > 0:
        raise ValueError(f"variance_scaling: scale must be > 0; got {scale}")

    def init(key, shape, dtype=np.float32):
        shape = _check_shape(shape)
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, n)
        if distribution == "normal":
            return math.sqrt(variance) * backend.normal(key, shape, dtype)
        limit = math.sqrt(3.0 * variance)
        return backend.uniform(key, shape, dtype, -limit, limit)

    return init


@_factory
def glorot_normal() -> Initializer:
    """Glorot / Xavier normal: std ``sqrt(2 / (fan_in + fan_out))``."""
    return variance_scaling(1.0, "fan_avg", "normal")


@_factory
def glorot_uniform() -> Initializer:
    """Glorot / Xavier uniform: limit ``sqrt(6 / (fan_in + fan_out))``."""
    return variance_scaling(1.0, "fan_avg", "uniform")


@_factory
def he_normal() -> Initializer:
    """He / Kaiming normal for ReLU: std ``sqrt(2 / fan_in)``."""
    return variance_scaling(2.0, "fan_in", "normal")


@_factory
def he_uniform() -> Initializer:
    """He / Kaiming uniform for ReLU: limit ``sqrt(6 / fan_in)``."""
    return variance_scaling(2.0, "fan_in", "uniform")


@_factory
def lecun_normal() -> Initializer:
    """LeCun normal: std ``1 / sqrt(fan_in)`` (what the classic notes call Xavier)."""
    return variance_scaling(1.0, "fan_in", "normal")


@_factory
def lecun_uniform() -> Initializer:
    """LeCun uniform: limit ``sqrt(3 / fan_in)``."""
    return variance_scaling(1.0, "fan_in", "uniform")


xavier_normal, xavier_uniform = glorot_normal, glorot_uniform
kaiming_normal, kaiming_uniform = he_normal, he_uniform


@_factory
def orthogonal(scale: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times ``scale``, over the kernel reshaped to
    ``(prod(shape[:-1]), shape[-1])`` (Saxe et al., 2014)."""

    def init(key, shape, dtype=np.float32):
        shape = _check_shape(shape)
        if len(shape) < 2:
            raise ValueError(f"orthogonal: needs a kernel of rank >= 2; got shape {shape}")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        xp = backend.namespace_of_key(key)
        a = backend.normal(key, (max(rows, cols), min(rows, cols)), np.float32 if dtype is None else dtype)
        q, r = xp.linalg.qr(a)
        q = q * xp.sign(xp.diagonal(r))[None, :]  # unique decomposition: a uniformly random orthogonal matrix
        if rows < cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


@_factory
def identity(scale: float = 1.0) -> Initializer:
    """``scale`` times the identity matrix, for a square ``(n, n)`` kernel: the
    recurrent weights of an IRNN, a ReLU RNN that starts by copying its state
    from step to step, so that its gradient through time neither vanishes nor
    explodes at the start (Le, Jaitly & Hinton, 2015).

    >>> import numpy as np
    >>> identity(0.5)(np.random.default_rng(0), (2, 2))
    array([[0.5, 0. ],
           [0. , 0.5]], dtype=float32)
    """

    def init(key, shape, dtype=np.float32):
        shape = _check_shape(shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"identity: needs a square (n, n) kernel; got shape {shape}")
        xp = backend.namespace_of_key(key)
        return xp.asarray(scale * xp.eye(shape[0]), dtype=dtype)

    return init
