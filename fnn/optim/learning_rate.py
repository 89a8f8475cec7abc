"""The learning rate as optimizer state: ``scale_by_learning_rate``, ``scale_by_schedule``,
and ``get_learning_rate`` / ``set_learning_rate``.

The learning rate the next update will apply lives in the state as a 0-d
array. Because it is an array (not a Python constant baked into the compiled
step), it can be logged, and changed between steps with
:func:`set_learning_rate`, without recompiling a jitted training step. When the
learning rate is a schedule, the state's value is recomputed from the step
count after every update (a value set by hand then lasts one update).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.kernels.optim import scale_updates
from fnn.optim.base import (
    GradientTransformation,
    Schedule,
    check_learning_rate,
    check_number,
    float_scalar,
    safe_increment,
    zeros_count,
)
from fnn.optim.calls import Call, call

__all__ = [
    "LearningRateState",
    "ScaleByScheduleState",
    "get_learning_rate",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "set_learning_rate",
]

Array = Any
PyTree = Any


class LearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`."""

    count: Array  # int32, updates applied so far (saturating, see base.safe_increment)
    learning_rate: Array  # default float, 0-d: the rate the *next* update applies


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`."""

    count: Array  # int32, updates applied so far
    step_size: Array  # default float, 0-d: the factor the next update applies


def _scale_by_value(value: float | Schedule, sign: float, state_cls: type, built: Call) -> GradientTransformation:
    schedule = value if callable(value) else None

    def init(params: PyTree):
        xp = backend.namespace(params)
        count = zeros_count(xp)
        first = float_scalar(xp, schedule(count) if schedule is not None else value)
        if schedule is not None and sign < 0:
            first = _checked_rate(first, count, xp)
        return state_cls(count, first)

    def update(grads: PyTree, state, params: PyTree = None):
        count, current = state
        xp = backend.namespace(grads, count, current)
        updates = scale_updates(grads, sign * current)
        return updates, advance(state, schedule, xp, rate=sign < 0)

    return GradientTransformation(init, update, built.function, built)


def advance(
    state: LearningRateState | ScaleByScheduleState, schedule: Schedule | None, xp: Any = np, *, rate: bool = True
):
    """The state after one more update: the count plus one and, with a schedule,
    the value it gives at the new count (an ``xp`` array).

    A learning rate (``rate``) must be a finite number >= 0: a schedule giving
    NaN or a negative value (gradient ascent) is refused when its value can be
    read, and under ``jit``, where it cannot, a negative value becomes NaN, so
    that the next update is not finite and :func:`fnn.train.fit` stops before it."""
    count, current = state
    count = safe_increment(count)
    if schedule is not None:
        value = xp.asarray(schedule(count), dtype=current.dtype)
        current = _checked_rate(value, count, xp) if rate else value
    return type(state)(count, current)


def _checked_rate(value: Array, count: Array, xp: Any) -> Array:
    if not backend.is_concrete(value):
        return xp.where(value >= 0, value, xp.asarray(np.nan, dtype=value.dtype))
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(
            f"learning rate schedule: gave {float(value)} at step {int(count)}; a learning rate must be a "
            "finite number >= 0"
        )
    return value


def scale_by_learning_rate(learning_rate: float | Schedule) -> GradientTransformation:
    """Multiply updates by ``-learning_rate`` (the step of gradient *descent*).

    ``u = -lr_t * g`` with ``lr_t = learning_rate`` or ``learning_rate(t)``,
    ``t`` the 0-based count of updates already applied.

    Args:
        learning_rate: a finite number >= 0, or a schedule ``step -> value``.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.scale_by_learning_rate(0.1)
        >>> state = opt.init({"w": np.zeros(2)})
        >>> updates, state = opt.update({"w": np.array([1.0, -2.0])}, state)
        >>> updates["w"], float(state.learning_rate), int(state.count)
        (array([-0.1,  0.2]), 0.1, 1)
    """
    check_learning_rate("scale_by_learning_rate", learning_rate)
    built = call("scale_by_learning_rate", learning_rate=learning_rate)
    return _scale_by_value(learning_rate, -1.0, LearningRateState, built)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply updates by ``step_size_fn(t)`` (no sign change), ``t`` the 0-based update count.

    Use it to apply a schedule to a transform that already descends, e.g. a
    decaying multiplier after :func:`scale_by_learning_rate`.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.scale_by_schedule(optim.piecewise_constant(1.0, boundaries_and_values={1: 0.5}))
        >>> state = opt.init({"w": np.zeros(1)})
        >>> u1, state = opt.update({"w": np.ones(1)}, state)
        >>> u2, state = opt.update({"w": np.ones(1)}, state)
        >>> u1["w"], u2["w"]
        (array([1.]), array([0.5]))
    """
    if not callable(step_size_fn):
        raise TypeError(f"scale_by_schedule: step_size_fn must be a schedule (step -> value); got {step_size_fn!r}")
    built = call("scale_by_schedule", step_size_fn=step_size_fn)
    return _scale_by_value(step_size_fn, 1.0, ScaleByScheduleState, built)


# --------------------------------------------------------------------------- #
# Reading and changing the learning rate in a state
# --------------------------------------------------------------------------- #


def _children(node: Any) -> list[tuple[str, Any]] | None:
    if isinstance(node, dict):
        return [(str(k), v) for k, v in node.items()]
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return [(f, getattr(node, f)) for f in node._fields]
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node)]
    return None


def _find(state: Any, path: tuple = ()) -> Iterator[tuple[str, LearningRateState]]:
    if isinstance(state, LearningRateState):
        yield "/".join(path), state
        return
    for name, child in _children(state) or []:
        yield from _find(child, path + (name,))


def _rebuild(state: Any, fn: Callable[[str, LearningRateState], Any], path: tuple = ()) -> Any:
    if isinstance(state, LearningRateState):
        return fn("/".join(path), state)
    if isinstance(state, dict):
        return {k: _rebuild(v, fn, path + (str(k),)) for k, v in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*[_rebuild(getattr(state, f), fn, path + (f,)) for f in state._fields])
    if isinstance(state, (list, tuple)):
        return type(state)(_rebuild(v, fn, path + (str(i),)) for i, v in enumerate(state))
    return state


def _selected(where: str, state: PyTree, path: str | None) -> list[str]:
    found = [p for p, _ in _find(state)]
    if not found:
        raise ValueError(
            f"{where}: this optimizer state holds no learning rate (no scale_by_learning_rate inside; "
            "build the optimizer with optim.adam(lr), optim.sgd(lr), ... or chain scale_by_learning_rate)"
        )
    if path is None:
        if len(found) > 1:
            raise ValueError(
                f"{where}: the state holds {len(found)} learning rates, at {found}; pass path= one of them"
            )
        return found
    chosen = [p for p in found if p == path or p.startswith(path + "/")]
    if not chosen:
        raise ValueError(f"{where}: no learning rate at path {path!r}; the state has them at {found}")
    return chosen


def get_learning_rate(state: PyTree, path: str | None = None) -> Array:
    """The learning rate the next update will apply (a 0-d array), read from an optimizer state.

    Args:
        state: the state of an optimizer containing one :func:`scale_by_learning_rate`.
        path: where it is, when the state holds several (e.g. the groups of
            :func:`partition`): a prefix of its location such as ``"inner_states/decay"``.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> state = optim.adam(1e-3).init({"w": np.zeros(3)})
        >>> float(optim.get_learning_rate(state))
        0.001
    """
    where = "get_learning_rate"
    chosen = _selected(where, state, path)
    if len(chosen) > 1:
        raise ValueError(f"{where}: {len(chosen)} learning rates under path {path!r}, at {chosen}; pass one of them")
    return dict(_find(state))[chosen[0]].learning_rate


def set_learning_rate(state: PyTree, value: Any, path: str | None = None) -> PyTree:
    """A copy of ``state`` whose next update applies learning rate ``value``.

    The value is stored with the dtype and on the backend of the old one, so a
    jitted step that takes the state as an argument is not recompiled. With a
    schedule, the value lasts one update (then the schedule takes over again).

    Args:
        state: an optimizer state (not modified).
        value: a finite number >= 0 (or a 0-d array).
        path: as in :func:`get_learning_rate`; every learning rate under it is set.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.sgd(0.1)
        >>> state = optim.set_learning_rate(opt.init({"w": np.zeros(1)}), 0.01)
        >>> updates, state = opt.update({"w": np.ones(1)}, state)
        >>> updates["w"]
        array([-0.01])
    """
    where = "set_learning_rate"
    check_number(where, "value", value, low=0.0)
    chosen = set(_selected(where, state, path))

    def replace(p: str, s: LearningRateState):
        if p not in chosen:
            return s
        xp = backend.namespace(s.learning_rate, value)
        return s._replace(learning_rate=xp.asarray(value, dtype=s.learning_rate.dtype))

    return _rebuild(state, replace)
