"""Losses: ``loss(pred, target) -> scalar mean over the batch``, each with a
hand-written backward rule (``fwd(pred, target) -> (value, residuals)``,
``bwd(residuals, dvalue) -> dpred``).

Shapes must agree exactly: a target of the wrong shape is an error, never
silently broadcast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import backend
from fnn import functional as F
from fnn.core import LayerError

__all__ = [
    "FACTORIES",
    "Loss",
    "check_loss",
    "binary_cross_entropy",
    "cross_entropy",
    "huber",
    "mse",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]

Array = Any


@dataclasses.dataclass(frozen=True, eq=False)
class Loss:
    """A loss function with its forward (keeping residuals) and hand-written backward."""

    name: str
    fwd_fn: Callable[[Array, Array], tuple[Array, Any]]
    bwd_fn: Callable[[Any, Array], Array]
    doc: str = ""

    def __call__(self, pred: Array, target: Array) -> Array:
        """The loss value (a scalar)."""
        return self.fwd_fn(pred, target)[0]

    def fwd(self, pred: Array, target: Array) -> tuple[Array, Any]:
        """``(value, residuals)``."""
        return self.fwd_fn(pred, target)

    def bwd(self, residuals: Any, dvalue: Array = 1.0) -> Array:
        """The cotangent of ``pred`` for a cotangent ``dvalue`` of the value."""
        return self.bwd_fn(residuals, dvalue)

    def __repr__(self) -> str:
        return f"<fnn loss {self.name!r}>"


def _same_shape(name: str, pred: Array, target: Array) -> None:
    if np.shape(pred) != np.shape(target):
        raise LayerError(name, f"pred has shape {np.shape(pred)} but target has shape {np.shape(target)}; they must match")


def _as_float_target(pred: Array, target: Array) -> Array:
    xp = backend.namespace(pred, target)
    return xp.asarray(target).astype(pred.dtype)


def _check_unit_interval(name: str, target: Array) -> None:
    """Binary targets are probabilities: values in [0, 1] (checked when they can be read)."""
    if backend.is_concrete(target) and np.size(target):
        t = np.asarray(target)
        lo, hi = t.min(), t.max()
        if not (lo >= 0 and hi <= 1):  # NaN fails too
            raise LayerError(name, f"targets must be probabilities or labels in [0, 1]; got values from {lo} to {hi}")


def _check_delta(name: str, delta: Any, *, positive: bool) -> float:
    bad = isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)) or not np.isfinite(delta)
    if bad or (delta <= 0 if positive else delta < 0):
        raise ValueError(f"{name}: delta must be a finite number {'> 0' if positive else '>= 0'}; got {delta!r}")
    return float(delta)


# --------------------------------------------------------------------------- #
# Regression
# --------------------------------------------------------------------------- #


def _mse_fwd(pred, target):
    _same_shape("mse", pred, target)
    xp = backend.namespace(pred, target)
    r = pred - _as_float_target(pred, target)
    return xp.mean(r * r), (r,)


def _mse_bwd(res, dvalue):
    (r,) = res
    return (2.0 / r.size) * dvalue * r


mse = Loss("mse", _mse_fwd, _mse_bwd, doc="Mean squared error over all elements: mean((pred - target)^2).")


def huber(delta: float = 1.0) -> Loss:
    """Huber loss, mean over all elements: ``r^2/2`` for ``|r| <= delta``, else
    ``delta (|r| - delta/2)``; its gradient is ``clip(r, -delta, delta)``."""
    delta = _check_delta("huber", delta, positive=True)

    def fwd(pred, target):
        _same_shape("huber", pred, target)
        xp = backend.namespace(pred, target)
        r = pred - _as_float_target(pred, target)
        inside = xp.abs(r) <= delta
        r_out = xp.where(inside, delta, r)  # keeps autodiff of |r| away from 0
        per = xp.where(inside, 0.5 * r * r, delta * (xp.abs(r_out) - 0.5 * delta))
        return xp.mean(per), (r,)

    def bwd(res, dvalue):
        (r,) = res
        xp = backend.namespace(r)
        return dvalue * xp.clip(r, -delta, delta) / r.size

    return Loss("huber", fwd, bwd)


# --------------------------------------------------------------------------- #
# Classification from logits
# --------------------------------------------------------------------------- #


def _class_targets(name: str, logits: Array, target: Array) -> Array:
    """Integer labels (shape ``logits.shape[:-1]``) or one-hot / soft targets
    (shape ``logits.shape``) as float probabilities."""
    xp = backend.namespace(logits, target)
    if np.ndim(logits) < 1:
        raise LayerError(name, f"logits must have a class axis; got shape {np.shape(logits)}")
    num_classes = np.shape(logits)[-1]
    target_dtype = target.dtype if hasattr(target, "dtype") else np.asarray(target).dtype
    if np.issubdtype(target_dtype, np.integer):
        if np.shape(target) != np.shape(logits)[:-1]:
            raise LayerError(
                name,
                f"integer labels must have shape {np.shape(logits)[:-1]} (logits {np.shape(logits)} without the "
                f"class axis); got {np.shape(target)}",
            )
        if backend.is_concrete(target) and np.size(target):
            lo, hi = int(np.min(np.asarray(target))), int(np.max(np.asarray(target)))
            if lo < 0 or hi >= num_classes:
                raise LayerError(name, f"labels must be in [0, {num_classes}); got values from {lo} to {hi}")
        return F.one_hot(xp.asarray(target), num_classes, dtype=logits.dtype)
    if np.shape(target) != np.shape(logits):
        raise LayerError(
            name,
            f"targets must be integer labels of shape {np.shape(logits)[:-1]} or probabilities of shape "
            f"{np.shape(logits)}; got {target_dtype} of shape {np.shape(target)}",
        )
    return _as_float_target(logits, target)


def _batch_count(logits: Array) -> int:
    return int(np.prod(np.shape(logits)[:-1], dtype=np.int64))


def _softmax_ce_fwd(logits, target):
    t = _class_targets("softmax_cross_entropy", logits, target)
    xp = backend.namespace(logits, t)
    log_p = F.log_softmax(logits)
    value = -xp.sum(t * log_p) / _batch_count(logits)
    return value, (log_p, t)


def _softmax_ce_bwd(res, dvalue):
    log_p, t = res
    xp = backend.namespace(log_p, t)
    # d/dz of -sum(t log_softmax(z)) is softmax(z) sum(t) - t: soft targets need not sum to 1
    mass = xp.sum(t, axis=-1, keepdims=True)
    return dvalue * (xp.exp(log_p) * mass - t) / _batch_count(log_p)


softmax_cross_entropy = Loss(
    "softmax_cross_entropy",
    _softmax_ce_fwd,
    _softmax_ce_bwd,
    doc="""Cross-entropy of softmax(logits), mean over the batch, computed with log-sum-exp
    (finite for any finite logits). Targets: integer labels of shape logits.shape[:-1],
    or one-hot / soft probabilities of shape logits.shape. Backward: (softmax(logits) sum(t) - t) / N,
    which is (softmax(logits) - t) / N when each row of t sums to 1.""",
)


def _sigmoid_bce_fwd(logits, target):
    _same_shape("sigmoid_binary_cross_entropy", logits, target)
    _check_unit_interval("sigmoid_binary_cross_entropy", target)
    xp = backend.namespace(logits, target)
    t = _as_float_target(logits, target)
    # -[t log s(x) + (1 - t) log(1 - s(x))] = softplus(x) - t x
    return xp.mean(F.softplus(logits) - t * logits), (logits, t)


def _sigmoid_bce_bwd(res, dvalue):
    logits, t = res
    return dvalue * (F.sigmoid(logits) - t) / logits.size


sigmoid_binary_cross_entropy = Loss(
    "sigmoid_binary_cross_entropy",
    _sigmoid_bce_fwd,
    _sigmoid_bce_bwd,
    doc="""Binary cross-entropy from logits, mean over all elements: softplus(x) - t x.
    Backward: (sigmoid(x) - t) / size.""",
)


# --------------------------------------------------------------------------- #
# From probabilities (the classic textbook form, guarded by a small delta)
# --------------------------------------------------------------------------- #


def cross_entropy(delta: float = 1e-7) -> Loss:
    """Cross-entropy of probabilities ``p`` (e.g. a softmax output):
    ``-sum(t log(p + delta)) / N``. ``delta`` keeps ``log(0)`` finite. Prefer
    :data:`softmax_cross_entropy` on logits, which needs no delta."""
    delta = _check_delta("cross_entropy", delta, positive=False)

    def fwd(probs, target):
        t = _class_targets("cross_entropy", probs, target)
        xp = backend.namespace(probs, t)
        return -xp.sum(t * xp.log(probs + delta)) / _batch_count(probs), (probs, t)

    def bwd(res, dvalue):
        probs, t = res
        return -dvalue * t / (probs + delta) / _batch_count(probs)

    return Loss("cross_entropy", fwd, bwd)


def binary_cross_entropy(delta: float = 1e-7) -> Loss:
    """Binary cross-entropy of probabilities, mean over all elements:
    ``-[t log(p + delta) + (1 - t) log(1 - p + delta)]``."""
    delta = _check_delta("binary_cross_entropy", delta, positive=False)

    def fwd(probs, target):
        _same_shape("binary_cross_entropy", probs, target)
        _check_unit_interval("binary_cross_entropy", target)
        xp = backend.namespace(probs, target)
        t = _as_float_target(probs, target)
        per = t * xp.log(probs + delta) + (1.0 - t) * xp.log(1.0 - probs + delta)
        return -xp.mean(per), (probs, t)

    def bwd(res, dvalue):
        probs, t = res
        return -dvalue * (t / (probs + delta) - (1.0 - t) / (1.0 - probs + delta)) / probs.size

    return Loss("binary_cross_entropy", fwd, bwd)


#: The losses that take hyper-parameters: each must be called (``huber()``) to give a Loss.
FACTORIES = (huber, cross_entropy, binary_cross_entropy)


def check_loss(loss: Any, where: str) -> None:
    """Refuse a loss factory passed uncalled (``losses.huber`` for ``losses.huber()``)."""
    if any(loss is f for f in FACTORIES):
        raise TypeError(
            f"{where}: fnn.losses.{loss.__name__} makes a loss from its hyper-parameters; pass "
            f"fnn.losses.{loss.__name__}() (e.g. {loss.__name__}(delta=1.0)), not the function itself"
        )
