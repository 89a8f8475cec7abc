"""The building blocks that rescale gradients: scale, trace (momentum), AdaGrad, RMS, Adam.

Each is a :class:`~fnn.optim.base.GradientTransformation` with its own small
named state. None of them applies a learning rate or a sign: chain them with
:func:`~fnn.optim.learning_rate.scale_by_learning_rate`, as the aliases do::

    adam = chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))

Per-leaf state (momenta, accumulators) has the dtype of its parameter and
keeps it: a float32 parameter gets float32 moments, whatever the gradient's
dtype. Updates come out in the dtype of the incoming updates.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fnn import backend
from fnn.kernels.optim import adam_update, scale_updates
from fnn.optim.base import (
    EmptyState,
    GradientTransformation,
    check_number,
    check_trees_match,
    safe_increment,
    tree_map_arrays,
    zeros_count,
)
from fnn.optim.calls import call

__all__ = [
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "TraceState",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_rms",
    "trace",
]

Array = Any
PyTree = Any


class TraceState(NamedTuple):
    """State of :func:`trace`: the velocity ``v``, one array per parameter."""

    trace: PyTree


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`: ``h``, the running sum of squared gradients."""

    sum_of_squares: PyTree


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: ``v``, the moving average of squared gradients."""

    nu: PyTree


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""

    count: Array  # int32, updates applied so far (saturating at 2**31 - 1; see base.safe_increment)
    mu: PyTree  # first moment m, one array per parameter
    nu: PyTree  # second moment v, one array per parameter


def _full_like(params: PyTree, value: float) -> PyTree:
    xp = backend.namespace(params)
    return backend.tree_map(lambda p: xp.full_like(xp.asarray(p), value), params)


def scale(step_size: float) -> GradientTransformation:
    """Multiply every update by a constant: ``u = step_size * g``. No state.

    Args:
        step_size: a finite number (negative to descend).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> updates, _ = optim.scale(-0.5).update({"w": np.array([2.0])}, optim.EmptyState())
        >>> updates["w"]
        array([-1.])
    """
    step_size = check_number("scale", "step_size", step_size)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree = None):
        return scale_updates(grads, step_size), state

    return GradientTransformation(init, update, "scale", call("scale", step_size=step_size))


def trace(decay: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum: accumulate a velocity and use it as the update.

    ``v = decay * v + g``; update ``v``, or with Nesterov ``g + decay * v`` (the new ``v``).
    ``v`` starts at zero. The learning rate is *not* inside the velocity.

    Args:
        decay: the momentum coefficient (>= 0).
        nesterov: use Nesterov's look-ahead form.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.trace(0.9)
        >>> state = opt.init({"w": np.zeros(1)})
        >>> u1, state = opt.update({"w": np.ones(1)}, state)
        >>> u2, state = opt.update({"w": np.ones(1)}, state)
        >>> u1["w"], u2["w"]
        (array([1.]), array([1.9]))
    """
    where = "trace"
    decay = check_number(where, "decay", decay, low=0.0)
    nesterov = bool(nesterov)

    def init(params: PyTree) -> TraceState:
        return TraceState(_full_like(params, 0.0))

    def update(grads: PyTree, state: TraceState, params: PyTree = None):
        check_trees_match(where, state.trace, grads, shapes=True)
        xp = backend.namespace(grads, state.trace)
        velocity = tree_map_arrays(xp, lambda g, v: (decay * v + g).astype(v.dtype, copy=False), grads, state.trace)
        if nesterov:
            updates = tree_map_arrays(xp, lambda g, v: (g + decay * v).astype(g.dtype, copy=False), grads, velocity)
        else:
            updates = tree_map_arrays(xp, lambda g, v: v.astype(g.dtype), grads, velocity)
        return updates, TraceState(velocity)

    return GradientTransformation(init, update, where, call(where, decay=decay, nesterov=nesterov))


def scale_by_adagrad(initial_accumulator_value: float = 0.0, eps: float = 1e-7) -> GradientTransformation:
    """AdaGrad's per-parameter scaling.

    ``h = h + g * g``; update ``g / (sqrt(h) + eps)``, with ``h`` starting at
    ``initial_accumulator_value``.

    Args:
        initial_accumulator_value: the starting value of ``h`` (>= 0).
        eps: added to ``sqrt(h)`` (> 0), so the first step is finite even from ``h = 0``.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.scale_by_adagrad(eps=1e-12)
        >>> updates, _ = opt.update({"w": np.array([3.0])}, opt.init({"w": np.zeros(1)}))
        >>> updates["w"]
        array([1.])
    """
    where = "scale_by_adagrad"
    initial_accumulator_value = check_number(where, "initial_accumulator_value", initial_accumulator_value, low=0.0)
    eps = check_number(where, "eps", eps, low=0.0, low_open=True)

    def init(params: PyTree) -> ScaleByAdagradState:
        return ScaleByAdagradState(_full_like(params, initial_accumulator_value))

    def update(grads: PyTree, state: ScaleByAdagradState, params: PyTree = None):
        check_trees_match(where, state.sum_of_squares, grads, shapes=True)
        xp = backend.namespace(grads, state.sum_of_squares)
        h = tree_map_arrays(xp, lambda g, h: (h + g * g).astype(h.dtype, copy=False), grads, state.sum_of_squares)
        updates = tree_map_arrays(xp, lambda g, h: (g / (xp.sqrt(h) + eps)).astype(g.dtype, copy=False), grads, h)
        return updates, ScaleByAdagradState(h)

    described = call(where, initial_accumulator_value=initial_accumulator_value, eps=eps)
    return GradientTransformation(init, update, where, described)


def scale_by_rms(decay: float = 0.9, eps: float = 1e-8, initial_scale: float = 0.0) -> GradientTransformation:
    """RMSProp's per-parameter scaling.

    ``v = decay * v + (1 - decay) * g * g``; update ``g / (sqrt(v) + eps)``, with
    ``v`` starting at ``initial_scale``.

    Args:
        decay: the averaging coefficient, in [0, 1).
        eps: added to ``sqrt(v)`` (> 0).
        initial_scale: the starting value of ``v`` (>= 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.scale_by_rms(decay=0.75, eps=1e-12)
        >>> updates, _ = opt.update({"w": np.array([3.0])}, opt.init({"w": np.zeros(1)}))
        >>> updates["w"]   # 3 / sqrt(0.25 * 9)
        array([2.])
    """
    where = "scale_by_rms"
    decay = check_number(where, "decay", decay, low=0.0, high=1.0)
    eps = check_number(where, "eps", eps, low=0.0, low_open=True)
    initial_scale = check_number(where, "initial_scale", initial_scale, low=0.0)

    def init(params: PyTree) -> ScaleByRmsState:
        return ScaleByRmsState(_full_like(params, initial_scale))

    def update(grads: PyTree, state: ScaleByRmsState, params: PyTree = None):
        check_trees_match(where, state.nu, grads, shapes=True)
        xp = backend.namespace(grads, state.nu)
        nu = tree_map_arrays(xp, lambda g, v: (decay * v + (1 - decay) * g * g).astype(v.dtype, copy=False), grads, state.nu)
        updates = tree_map_arrays(xp, lambda g, v: (g / (xp.sqrt(v) + eps)).astype(g.dtype, copy=False), grads, nu)
        return updates, ScaleByRmsState(nu)

    return GradientTransformation(init, update, where, call(where, decay=decay, eps=eps, initial_scale=initial_scale))


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's scaling: bias-corrected first and second moments.

    With ``t`` the number of this update counted from 1::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        update = m_hat / (sqrt(v_hat) + eps)

    The arithmetic is :func:`fnn.kernels.adam_update`'s (one fused in-place
    pass per leaf on NumPy arrays, the plain tree expression on JAX).

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to ``sqrt(v_hat)`` (> 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.scale_by_adam()
        >>> updates, state = opt.update({"w": np.array([-4.0])}, opt.init({"w": np.zeros(1)}))
        >>> np.round(updates["w"], 6), int(state.count)   # the first step is sign(g) (up to eps)
        (array([-1.]), 1)
    """
    where = "scale_by_adam"
    b1 = check_number(where, "b1", b1, low=0.0, high=1.0)
    b2 = check_number(where, "b2", b2, low=0.0, high=1.0)
    eps = check_number(where, "eps", eps, low=0.0, low_open=True)

    def init(params: PyTree) -> ScaleByAdamState:
        xp = backend.namespace(params)
        return ScaleByAdamState(zeros_count(xp), _full_like(params, 0.0), _full_like(params, 0.0))

    def update(grads: PyTree, state: ScaleByAdamState, params: PyTree = None):
        check_trees_match(where, state.mu, grads, shapes=True)
        count = safe_increment(state.count)
        updates, mu, nu = adam_update(grads, state.mu, state.nu, count, b1=b1, b2=b2, eps=eps)
        return updates, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update, where, call(where, b1=b1, b2=b2, eps=eps))

