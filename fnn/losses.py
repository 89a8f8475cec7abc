"""Losses: ``loss(pred, target) -> scalar mean over the batch``, each with a
hand-written backward rule (``fwd(pred, target) -> (value, residuals)``,
``bwd(residuals, dvalue) -> dpred``).

Every loss is a value, hyper-parameters or not: pass ``fnn.losses.huber``
itself, as you pass ``fnn.losses.mse``. A loss with hyper-parameters has
defaults (``huber.config == {"delta": 1.0}``); other values are a keyword of
the call, as in optax (``huber(pred, target, delta=0.5)``), or a loss of
their own, ``huber.replace(delta=0.5)``, to hand to ``fit``. The factory
spelling of earlier versions, ``huber()`` or ``huber(delta=0.5)``, still
works with a ``DeprecationWarning`` that names the replacement.

>>> import numpy as np
>>> from fnn import losses
>>> pred, target = np.array([0.0, 3.0]), np.array([0.0, 0.0])
>>> float(losses.huber(pred, target)), float(losses.huber(pred, target, delta=2.0))
(1.25, 2.0)
>>> losses.huber.replace(delta=2.0)
huber(delta=2.0)

Shapes must agree exactly: a target of the wrong shape is an error, never
silently broadcast.
"""

from __future__ import annotations

import dataclasses
import warnings
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


_UNSET: Any = object()


@dataclasses.dataclass(frozen=True, eq=False)
class Loss:
    """A loss function with its forward (keeping residuals) and hand-written backward.

    ``fwd_fn(pred, target, **options)`` and ``bwd_fn(residuals, dvalue,
    **options)`` receive the hyper-parameters ``options`` (empty for a loss
    without any); ``check_options(**options)`` validates new values and
    returns them as a dict. Two losses compare and hash equal when they are
    the same loss with the same hyper-parameters, so a rebuilt
    ``huber.replace(delta=0.5)`` does not recompile a training step.
    """

    name: str
    fwd_fn: Callable[..., tuple[Array, Any]]
    bwd_fn: Callable[..., Array]
    doc: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    check_options: Callable[..., dict[str, Any]] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The hyper-parameters in effect (``{}`` for a loss without any)."""
        return dict(self.options)

    def replace(self, **changes: Any) -> "Loss":
        """The same loss with other hyper-parameters: ``huber.replace(delta=0.5)``."""
        unknown = sorted(set(changes) - set(self.config))
        if unknown:
            takes = f"its hyper-parameters are {sorted(self.config)}" if self.options else "it has no hyper-parameters"
            raise TypeError(f"{self.name}: unknown hyper-parameter(s) {unknown}; {takes}")
        merged = {**self.config, **changes}
        if self.check_options is not None:
            merged = self.check_options(**merged)
        return dataclasses.replace(self, options=tuple(merged.items()))

    def __call__(self, pred: Array = _UNSET, target: Array = _UNSET, **options: Any) -> Array:
        """The loss value (a scalar); keywords override hyper-parameters for this call."""
        if target is _UNSET:
            return self._factory_call(pred, options)
        loss = self.replace(**options) if options else self
        return loss.fwd_fn(pred, target, **loss.config)[0]

    def _factory_call(self, pred: Any, options: dict[str, Any]) -> "Loss":
        """``huber()`` / ``huber(delta=0.5)``, the factory spelling of earlier versions."""
        example = ", ".join(f"{k}={v!r}" for k, v in (options or self.config).items())
        if pred is not _UNSET or not self.options:
            other = f"; for other hyper-parameters, fnn.losses.{self.name}.replace({example})" if self.options else ""
            raise TypeError(f"{self.name} is a loss value: call it as {self.name}(pred, target), or pass "
                            f"fnn.losses.{self.name} itself (no parentheses) to fit or value_and_grad{other}")
        fix = f"fnn.losses.{self.name}.replace({example})" if options else f"fnn.losses.{self.name}"
        warnings.warn(f"fnn.losses.{self.name} is a loss value with defaults {self.config}, no longer a factory: "
                      f"use {fix}", DeprecationWarning, stacklevel=3)
        return self.replace(**options)

    def fwd(self, pred: Array, target: Array) -> tuple[Array, Any]:
        """``(value, residuals)``."""
        return self.fwd_fn(pred, target, **self.config)

    def bwd(self, residuals: Any, dvalue: Array = 1.0) -> Array:
        """The cotangent of ``pred`` for a cotangent ``dvalue`` of the value."""
        return self.bwd_fn(residuals, dvalue, **self.config)

    def _identity(self) -> tuple:
        return (self.name, self.fwd_fn, self.bwd_fn, self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loss) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        if not self.options:
            return f"<fnn loss {self.name!r}>"
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.options)})"


def _with_defaults(name: str, fwd_fn: Callable, bwd_fn: Callable, check: Callable, doc: str) -> Loss:
    """A loss with hyper-parameters, at ``check``'s defaults."""
    return Loss(name, fwd_fn, bwd_fn, doc=doc, options=tuple(check().items()), check_options=check)


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


def _huber_options(delta: float = 1.0) -> dict[str, float]:
    return {"delta": _check_delta("huber", delta, positive=True)}


def _huber_fwd(pred, target, delta):
    _same_shape("huber", pred, target)
    xp = backend.namespace(pred, target)
    r = pred - _as_float_target(pred, target)
    inside = xp.abs(r) <= delta
    r_out = xp.where(inside, delta, r)  # keeps autodiff of |r| away from 0
    per = xp.where(inside, 0.5 * r * r, delta * (xp.abs(r_out) - 0.5 * delta))
    return xp.mean(per), (r,)


def _huber_bwd(res, dvalue, delta):
    (r,) = res
    xp = backend.namespace(r)
    return dvalue * xp.clip(r, -delta, delta) / r.size


huber = _with_defaults(
    "huber", _huber_fwd, _huber_bwd, _huber_options,
    doc="""Huber loss, mean over all elements: r^2/2 for |r| <= delta, else delta (|r| - delta/2),
    with r = pred - target; its gradient is clip(r, -delta, delta) / size. delta defaults to 1.0
    (huber.replace(delta=0.5), or huber(pred, target, delta=0.5)).""",
)
"""Huber loss, mean over all elements: ``r^2/2`` for ``|r| <= delta``, else
``delta (|r| - delta/2)``, with ``r = pred - target``; its gradient is
``clip(r, -delta, delta) / size``. A value: ``delta`` defaults to 1.0;
``huber.replace(delta=0.5)`` is the loss with another, as is the call
keyword ``huber(pred, target, delta=0.5)``."""


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


def _cross_entropy_options(delta: float = 1e-7) -> dict[str, float]:
    return {"delta": _check_delta("cross_entropy", delta, positive=False)}


def _cross_entropy_fwd(probs, target, delta):
    t = _class_targets("cross_entropy", probs, target)
    xp = backend.namespace(probs, t)
    return -xp.sum(t * xp.log(probs + delta)) / _batch_count(probs), (probs, t)


def _cross_entropy_bwd(res, dvalue, delta):
    probs, t = res
    return -dvalue * t / (probs + delta) / _batch_count(probs)


cross_entropy = _with_defaults(
    "cross_entropy", _cross_entropy_fwd, _cross_entropy_bwd, _cross_entropy_options,
    doc="""Cross-entropy of probabilities p (e.g. a softmax output): -sum(t log(p + delta)) / N.
    delta (default 1e-7) keeps log(0) finite. Prefer softmax_cross_entropy on logits, which
    needs no delta.""",
)
"""Cross-entropy of probabilities ``p`` (e.g. a softmax output):
``-sum(t log(p + delta)) / N``, ``delta`` (default 1e-7) keeping ``log(0)``
finite; targets as for :data:`softmax_cross_entropy`. Prefer
:data:`softmax_cross_entropy` on logits, which needs no delta."""


def _binary_cross_entropy_options(delta: float = 1e-7) -> dict[str, float]:
    return {"delta": _check_delta("binary_cross_entropy", delta, positive=False)}


def _binary_cross_entropy_fwd(probs, target, delta):
    _same_shape("binary_cross_entropy", probs, target)
    _check_unit_interval("binary_cross_entropy", target)
    xp = backend.namespace(probs, target)
    t = _as_float_target(probs, target)
    per = t * xp.log(probs + delta) + (1.0 - t) * xp.log(1.0 - probs + delta)
    return -xp.mean(per), (probs, t)


def _binary_cross_entropy_bwd(res, dvalue, delta):
    probs, t = res
    return -dvalue * (t / (probs + delta) - (1.0 - t) / (1.0 - probs + delta)) / probs.size


binary_cross_entropy = _with_defaults(
    "binary_cross_entropy", _binary_cross_entropy_fwd, _binary_cross_entropy_bwd, _binary_cross_entropy_options,
    doc="""Binary cross-entropy of probabilities, mean over all elements:
    -[t log(p + delta) + (1 - t) log(1 - p + delta)], delta defaulting to 1e-7.""",
)
"""Binary cross-entropy of probabilities, mean over all elements:
``-[t log(p + delta) + (1 - t) log(1 - p + delta)]``, ``delta`` defaulting to 1e-7."""


#: The losses with hyper-parameters (each a value at its defaults; ``.replace(...)`` changes them).
FACTORIES = (huber, cross_entropy, binary_cross_entropy)


def check_loss(loss: Any, where: str) -> None:
    """Refuse what is not a loss function (a loss's name, a class): a clear message naming ``where``."""
    if not callable(loss) or isinstance(loss, type):
        raise TypeError(f"{where}: loss must be a loss such as fnn.losses.softmax_cross_entropy "
                        f"(or a function pred, target -> scalar); got {loss!r}")
