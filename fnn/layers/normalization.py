"""Normalisation layers: ``batch_norm``, ``layer_norm``, ``group_norm`` and
``rms_norm``, each with the full hand-written backward rule.

Both compute, over a set of ``M`` entries that share statistics,

    mu = mean(x),  var = mean((x - mu)^2),  x_hat = (x - mu) / sqrt(var + eps)
    y  = scale * x_hat + bias

and, when ``mu`` and ``var`` are the statistics of this very input (batch norm
in train mode, layer norm always), the backward pass through them is

    dx_hat = dy * scale
    dx     = (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)) / sqrt(var + eps)
    dscale = sum(dy * x_hat),   dbias = sum(dy)      (summed over the batch)

With fixed statistics (batch norm in eval mode) ``dx = dx_hat / sqrt(var + eps)``.
``group_norm`` is the same with ``M`` the spatial positions times the ``C/G``
channels of a group, per example. ``rms_norm`` does not centre (``mu = 0``,
``var = mean(x^2)``, no bias), so the ``mean(dx_hat)`` term drops out:
``dx = (dx_hat - x_hat * mean(dx_hat * x_hat)) / sqrt(mean(x^2) + eps)``.
The variance is the two-pass ``mean((x - mu)^2)`` clamped at 0, and all
statistics are reduced in at least float32 (half-precision inputs are upcast).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn.checks import batch_axis_hint
from fnn.core import (
    Layer,
    LayerError,
    check_keys,
    check_param_shapes,
    check_positive_int,
    expect_single,
    is_multi_shape,
    layer_factory,
)

__all__ = ["batch_norm", "group_norm", "layer_norm", "rms_norm"]

Array = Any


def _check_eps(name: str, eps: Any) -> float:
    if not (isinstance(eps, (int, float, np.floating)) and eps > 0 and np.isfinite(eps)):
        raise ValueError(f"{name}: eps must be a positive finite number; got {eps!r}")
    return float(eps)


def _check_input(name: str, shape: Any) -> tuple:
    if is_multi_shape(shape):
        raise LayerError(name, f"expected a single input, got a tuple of inputs with shapes {shape}")
    shape = tuple(shape)
    if len(shape) < 2:
        raise LayerError(name, f"expected an input of rank >= 2 (batch, ..., features), got shape {shape}"
                               f"{batch_axis_hint(shape, 2)}")
    if shape[-1] is None or shape[-1] == 0:
        raise LayerError(name, f"the feature count (last axis) must be known and positive; got shape {shape}")
    return shape


def _compute_dtype(dtype: Any) -> Any:
    """At least float32: statistics of float16 / bfloat16 inputs are reduced in float32."""
    return np.promote_types(dtype, np.float32)


def _scale_bias_init(key, shape, dtype):
    c = shape[-1]
    return {"scale": initializers.ones(key, (c,), dtype), "bias": initializers.zeros(key, (c,), dtype)}


def _as_row(v: Array, ndim: int, dtype: Any) -> Array:
    """A (C,) vector shaped to broadcast over the last axis of a rank-``ndim`` array."""
    return v.astype(dtype).reshape((1,) * (ndim - 1) + (v.shape[0],))


def _normalize(xp, x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array, Array, Array]:
    """``(x_hat, inv, mean, var)`` with the statistics of ``x`` over ``axes`` (kept as size-1 axes)."""
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = xp.maximum(xp.mean(centred * centred, axis=axes, keepdims=True), 0.0)
    inv = 1.0 / xp.sqrt(var + eps)
    return centred * inv, inv, mean, var


def _batch_stats_bwd(
    xp, x_hat: Array, inv: Array, dx_hat: Array, axes: tuple[int, ...], *, centred: bool = True
) -> Array:
    """dx through the batch statistics (see the module docstring); ``centred=False``
    for statistics without a mean (``rms_norm``)."""
    m2 = xp.mean(dx_hat * x_hat, axis=axes, keepdims=True)
    if not centred:
        return (dx_hat - x_hat * m2) * inv
    m1 = xp.mean(dx_hat, axis=axes, keepdims=True)
    return (dx_hat - m1 - x_hat * m2) * inv


@layer_factory
def batch_norm(*, momentum: float = 0.9, eps: float = 1e-5, name: str = "batch_norm") -> Layer:
    """Batch normalisation over every axis but the last (per channel for NHWC images).

    Params ``{"scale": (C,), "bias": (C,)}`` start at 1 and 0; state
    ``{"mean": (C,), "var": (C,)}`` starts at 0 and 1 (``init`` never changes it).

    * ``train=True``: normalise with the batch's mean and biased variance, and
      return the updated running statistics
      ``r = momentum * r + (1 - momentum) * batch_statistic``.
    * ``train=False``: normalise with the running statistics; the state is
      returned unchanged.

    Backward (hand-written): the full formula through the batch statistics in
    train mode, ``dx = scale * dy / sqrt(var + eps)`` in eval mode (module docstring).
    State is kept in at least float32.

    >>> import numpy as np, fnn
    >>> bn = fnn.layers.batch_norm()
    >>> params, state = bn.init(np.random.default_rng(0), (None, 3))
    >>> x = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]], np.float32)
    >>> y, new_state = bn.apply(params, state, x, train=True)
    >>> np.round(y, 3)
    array([[-1., -1., -1.],
           [ 1.,  1.,  1.]], dtype=float32)
    >>> new_state["mean"]  # 0.9 * 0 + 0.1 * [1, 2, 4]
    array([0.1, 0.2, 0.4], dtype=float32)
    """
    if not (isinstance(momentum, (int, float, np.floating)) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"{name}: momentum must be in [0, 1]; got {momentum!r}")
    momentum = float(momentum)
    eps = _check_eps(name, eps)

    def init(key, shape, dtype):
        c = _check_input(name, shape)[-1]
        xp = backend.namespace_of_key(key)
        state_dtype = _compute_dtype(dtype)
        state = {"mean": xp.zeros((c,), state_dtype), "var": xp.ones((c,), state_dtype)}
        return _scale_bias_init(key, shape, dtype), state

    def fwd(params, state, x, key, train):
        expect_single(name, x)
        shape = _check_input(name, tuple(np.shape(x)))
        c = shape[-1]
        check_param_shapes(name, params, {"scale": (c,), "bias": (c,)})
        check_keys(name, "state", state, ["mean", "var"])
        for k in ("mean", "var"):
            if tuple(np.shape(state[k])) != (c,):
                raise LayerError(name, f"state[{k!r}] has shape {tuple(np.shape(state[k]))}; expected {(c,)} for this input")
        xp = backend.namespace(x, params, state)
        ct = _compute_dtype(x.dtype)
        xc = x.astype(ct)
        axes = tuple(range(x.ndim - 1))
        if train:
            if int(np.prod(shape[:-1])) == 0:  # statistics of nothing: NaN in the running state
                raise LayerError(name, f"train mode needs at least one example to take batch statistics; got shape {shape}")
            x_hat, inv, mean, var = _normalize(xp, xc, axes, eps)
            new_state = {
                k: (momentum * state[k] + (1.0 - momentum) * v.reshape(c)).astype(state[k].dtype)
                for k, v in (("mean", mean), ("var", var))
            }
        else:
            inv = 1.0 / xp.sqrt(_as_row(state["var"], x.ndim, ct) + eps)
            x_hat = (xc - _as_row(state["mean"], x.ndim, ct)) * inv
            new_state = state
        y = _as_row(params["scale"], x.ndim, ct) * x_hat + _as_row(params["bias"], x.ndim, ct)
        # the residual's key records the mode: only arrays are stored
        return y.astype(x.dtype), new_state, {"batch" if train else "running": (x_hat, inv)}

    def bwd(params, residuals, dy):
        (mode, (x_hat, inv)), = residuals.items()
        xp = backend.namespace(x_hat, dy)
        axes = tuple(range(dy.ndim - 1))
        dyc = dy.astype(x_hat.dtype)
        dx_hat = dyc * _as_row(params["scale"], dy.ndim, x_hat.dtype)
        dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, axes) if mode == "batch" else dx_hat * inv
        return _param_grads(xp, params, dyc, x_hat, with_bias=True), dx.astype(dy.dtype)

    return Layer(name, init, lambda shape: _check_input(name, shape), fwd, bwd)


@layer_factory
def layer_norm(*, eps: float = 1e-5, name: str = "layer_norm") -> Layer:
    """Layer normalisation over the last axis: each example (and position) is
    normalised with its own mean and biased variance over its features.

    Params ``{"scale": (C,), "bias": (C,)}`` start at 1 and 0; no state; the
    same in train and eval mode. Backward: the full formula through the
    per-row statistics (module docstring), with ``M = C``.

    >>> import numpy as np, fnn
    >>> ln = fnn.layers.layer_norm()
    >>> params, state = ln.init(np.random.default_rng(0), (None, 4))
    >>> y, _ = ln.apply(params, state, np.array([[1.0, 2.0, 3.0, 4.0]]))
    >>> np.round(y, 4)
    array([[-1.3416, -0.4472,  0.4472,  1.3416]])
    """
    eps = _check_eps(name, eps)

    def init(key, shape, dtype):
        _check_input(name, shape)
        return _scale_bias_init(key, shape, dtype), {}

    def fwd(params, state, x, key, train):
        expect_single(name, x)
        c = _check_input(name, tuple(np.shape(x)))[-1]
        check_param_shapes(name, params, {"scale": (c,), "bias": (c,)})
        xp = backend.namespace(x, params)
        ct = _compute_dtype(x.dtype)
        x_hat, inv, _, _ = _normalize(xp, x.astype(ct), (x.ndim - 1,), eps)
        y = _as_row(params["scale"], x.ndim, ct) * x_hat + _as_row(params["bias"], x.ndim, ct)
        return y.astype(x.dtype), state, (x_hat, inv)

    def bwd(params, residuals, dy):
        x_hat, inv = residuals
        xp = backend.namespace(x_hat, dy)
        dyc = dy.astype(x_hat.dtype)
        dx_hat = dyc * _as_row(params["scale"], dy.ndim, x_hat.dtype)
        dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, (dy.ndim - 1,))
        return _param_grads(xp, params, dyc, x_hat, with_bias=True), dx.astype(dy.dtype)

    return Layer(name, init, lambda shape: _check_input(name, shape), fwd, bwd)


def _param_grads(xp, params: dict, dyc: Array, x_hat: Array, with_bias: bool) -> dict:
    """``dscale = sum(dy * x_hat)`` (and ``dbias = sum(dy)``) over every axis but the last."""
    axes = tuple(range(dyc.ndim - 1))
    grads = {"scale": xp.sum(dyc * x_hat, axis=axes).astype(params["scale"].dtype)}
    if with_bias:
        grads["bias"] = xp.sum(dyc, axis=axes).astype(params["bias"].dtype)
    return grads


@layer_factory
def rms_norm(*, eps: float = 1e-6, name: str = "rms_norm") -> Layer:
    """Root-mean-square normalisation over the last axis (Zhang & Sennrich, 2019)::

        y = x / sqrt(mean(x^2, -1) + eps) * scale

    No centring and no bias. Params ``{"scale": (C,)}`` start at 1; no state;
    statistics in at least float32. Backward, with ``r = 1 / sqrt(mean(x^2) + eps)``
    and ``x_hat = x * r``: ``dx_hat = dy * scale``,
    ``dx = r * (dx_hat - x_hat * mean(dx_hat * x_hat, -1))``,
    ``dscale = sum(dy * x_hat)`` over every axis but the last.

    >>> import numpy as np, fnn
    >>> norm = fnn.layers.rms_norm()
    >>> params, _ = norm.init(np.random.default_rng(0), (None, 2))
    >>> np.round(norm.apply(params, {}, np.array([[3.0, 4.0]]))[0], 4)  # [3, 4] / sqrt(12.5)
    array([[0.8485, 1.1314]])
    """
    eps = _check_eps(name, eps)

    def init(key, shape, dtype):
        c = _check_input(name, shape)[-1]
        return {"scale": initializers.ones(key, (c,), dtype)}, {}

    def fwd(params, state, x, key, train):
        expect_single(name, x)
        c = _check_input(name, tuple(np.shape(x)))[-1]
        check_param_shapes(name, params, {"scale": (c,)})
        xp = backend.namespace(x, params)
        xc = x.astype(_compute_dtype(x.dtype))
        inv = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + eps)
        x_hat = xc * inv
        y = x_hat * _as_row(params["scale"], x.ndim, xc.dtype)
        return y.astype(x.dtype), state, (x_hat, inv)

    def bwd(params, residuals, dy):
        x_hat, inv = residuals
        xp = backend.namespace(x_hat, dy)
        dyc = dy.astype(x_hat.dtype)
        dx_hat = dyc * _as_row(params["scale"], dy.ndim, x_hat.dtype)
        dx = _batch_stats_bwd(xp, x_hat, inv, dx_hat, (dy.ndim - 1,), centred=False)
        return _param_grads(xp, params, dyc, x_hat, with_bias=False), dx.astype(dy.dtype)

    return Layer(name, init, lambda shape: _check_input(name, shape), fwd, bwd)


@layer_factory
def group_norm(num_groups: int, *, eps: float = 1e-5, name: str = "group_norm") -> Layer:
    """Group normalisation (Wu & He, 2018) of channels-last inputs ``(N, *spatial, C)``.

    The ``C`` channels are split into ``num_groups`` groups of ``C / G``
    consecutive channels; each example's group is normalised with the mean and
    biased variance over its spatial positions and its ``C / G`` channels, then
    ``y = scale * x_hat + bias`` per channel. ``num_groups = 1`` normalises each
    example over everything (like ``layer_norm`` over all non-batch axes);
    ``num_groups = C`` is instance normalisation. The same in train and eval
    mode; no state. Matches ``torch.nn.GroupNorm`` on the channels-first layout.

    Params ``{"scale": (C,), "bias": (C,)}`` start at 1 and 0. Backward: the
    full formula through the per-group statistics (module docstring) with
    ``M = spatial size * C / G``; ``dscale``, ``dbias`` summed over every axis
    but the last.

    >>> import numpy as np, fnn
    >>> norm = fnn.layers.group_norm(2)
    >>> params, _ = norm.init(np.random.default_rng(0), (None, 4))
    >>> np.round(norm.apply(params, {}, np.array([[1.0, 3.0, 10.0, 20.0]]))[0], 3)
    array([[-1.,  1., -1.,  1.]])
    """
    num_groups = check_positive_int(name, "num_groups", num_groups)
    eps = _check_eps(name, eps)

    def check(shape):
        shape = _check_input(name, shape)
        if shape[-1] % num_groups:
            raise LayerError(
                name,
                f"the channel count {shape[-1]} (last axis of {shape}) is not divisible by num_groups={num_groups}",
            )
        return shape

    def init(key, shape, dtype):
        return _scale_bias_init(key, check(shape), dtype), {}

    def grouped(x: Array) -> Array:  # (N, *spatial, C) -> (N, S, G, C/G)
        return x.reshape(x.shape[0], -1, num_groups, x.shape[-1] // num_groups)

    def fwd(params, state, x, key, train):
        expect_single(name, x)
        c = check(tuple(np.shape(x)))[-1]
        check_param_shapes(name, params, {"scale": (c,), "bias": (c,)})
        xp = backend.namespace(x, params)
        ct = _compute_dtype(x.dtype)
        x_hat, inv, _, _ = _normalize(xp, grouped(x.astype(ct)), (1, 3), eps)
        x_hat = x_hat.reshape(x.shape)
        y = _as_row(params["scale"], x.ndim, ct) * x_hat + _as_row(params["bias"], x.ndim, ct)
        return y.astype(x.dtype), state, (x_hat, inv)

    def bwd(params, residuals, dy):
        x_hat, inv = residuals
        xp = backend.namespace(x_hat, dy)
        dyc = dy.astype(x_hat.dtype)
        dx_hat = dyc * _as_row(params["scale"], dy.ndim, x_hat.dtype)
        dx = _batch_stats_bwd(xp, grouped(x_hat), inv, grouped(dx_hat), (1, 3)).reshape(dy.shape)
        return _param_grads(xp, params, dyc, x_hat, with_bias=True), dx.astype(dy.dtype)

    return Layer(name, init, lambda shape: check(shape), fwd, bwd)
