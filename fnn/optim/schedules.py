"""Learning-rate schedules: pure functions ``step -> value``.

``step`` is the 0-based count of updates already applied: the first update
uses ``schedule(0)``. A schedule accepts a Python int, a NumPy integer or a JAX
array (a tracer under ``jit`` included) and returns a 0-d array of the default
float type on the step's backend (float64 on NumPy; float32 on JAX unless x64
is enabled). Every schedule is built from ``xp`` operations only (``where``,
``minimum``, ``cos``), with no Python branch on the step, so it is jittable.

Arguments have the same names across schedules: ``init_value`` (the value at
step 0), ``peak_value``, ``end_value``, ``warmup_steps``, ``decay_steps``,
``transition_steps``. Pass a schedule wherever a ``learning_rate`` is accepted:
``optim.adam(optim.warmup_cosine_decay(0.0, peak_value=1e-3, warmup_steps=100,
decay_steps=1000))``.

The positional arguments are optax's for the schedule of the same name
(``cosine_decay(1e-3, 100)`` as ``optax.cosine_decay_schedule(1e-3, 100)``).
Where the two differ in meaning after that, fnn's argument is keyword-only:
``cosine_decay``'s ``end_value`` (optax's third argument is ``alpha``, a
fraction of ``init_value``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fnn import backend
from fnn.optim.base import Schedule, check_int, check_number
from fnn.optim.calls import Call, call

__all__ = [
    "constant_schedule",
    "cosine_decay",
    "exponential_decay",
    "join_schedules",
    "linear_schedule",
    "piecewise_constant",
    "warmup_cosine_decay",
]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ScheduleValue:
    """A schedule fnn built: callable as ``schedule(step)``, printed as the call
    that built it, and equal (and hashing equal) to a schedule built by the same call."""

    fn: Callable[[Any], Any]
    call: Call

    def __call__(self, step: Any) -> Any:
        return self.fn(step)

    def __repr__(self) -> str:
        return repr(self.call)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScheduleValue):
            return NotImplemented
        return self.call == other.call

    def __hash__(self) -> int:
        return hash(self.call)


def _float_step(step: Any):
    """(xp, step as a 0-d array of the default float type)."""
    xp = backend.namespace(step)
    return xp, xp.asarray(step, dtype=float)


def _value(where: str, name: str, value: Any) -> float:
    return check_number(where, name, value)


def constant_schedule(value: float) -> Schedule:
    """``lr(step) = value`` for every step.

    Example:
        >>> from fnn import optim
        >>> float(optim.constant_schedule(0.1)(1000))
        0.1
    """
    value = _value("constant_schedule", "value", value)

    def schedule(step):
        xp, t = _float_step(step)
        return xp.full_like(t, value)

    return ScheduleValue(schedule, call("constant_schedule", value=value))


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear from ``init_value`` to ``end_value``, then constant (a linear warmup).

    ``lr(step) = init_value + (end_value - init_value) * clip((step - transition_begin) / transition_steps, 0, 1)``

    Args:
        init_value: the value up to ``transition_begin``.
        end_value: the value from ``transition_begin + transition_steps`` on.
        transition_steps: the length of the ramp (>= 1).
        transition_begin: the step where the ramp starts (>= 0).

    Example (warmup to 1e-3 over 100 updates):
        >>> from fnn import optim
        >>> warmup = optim.linear_schedule(0.0, end_value=1e-3, transition_steps=100)
        >>> [round(float(warmup(s)), 6) for s in (0, 50, 100, 500)]
        [0.0, 0.0005, 0.001, 0.001]
    """
    where = "linear_schedule"
    init_value = _value(where, "init_value", init_value)
    end_value = _value(where, "end_value", end_value)
    transition_steps = check_int(where, "transition_steps", transition_steps, low=1)
    transition_begin = check_int(where, "transition_begin", transition_begin, low=0)

    def schedule(step):
        xp, t = _float_step(step)
        frac = xp.clip((t - transition_begin) / transition_steps, 0.0, 1.0)
        return xp.asarray(init_value + (end_value - init_value) * frac, dtype=t.dtype)

    built = call(
        where,
        init_value=init_value,
        end_value=end_value,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
    )
    return ScheduleValue(schedule, built)


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``lr(step) = init_value * decay_rate ** (max(step - transition_begin, 0) / transition_steps)``.

    With ``staircase=True`` the exponent is rounded down to an integer: the
    value drops by ``decay_rate`` every ``transition_steps`` updates.

    Args:
        init_value: the value at step 0.
        transition_steps: the number of steps over which the value is multiplied
            by ``decay_rate`` (>= 1).
        decay_rate: the factor per ``transition_steps`` (> 0; < 1 decays).
        transition_begin: the steps held at ``init_value`` before the decay starts (>= 0).
        staircase: decay in discrete jumps instead of continuously.
        end_value: optional bound the value never passes (a floor when decaying,
            a ceiling when ``decay_rate > 1``).

    Example:
        >>> from fnn import optim
        >>> lr = optim.exponential_decay(0.1, transition_steps=10, decay_rate=0.5, staircase=True)
        >>> [float(lr(s)) for s in (0, 9, 10, 25)]
        [0.1, 0.1, 0.05, 0.025]
    """
    where = "exponential_decay"
    init_value = _value(where, "init_value", init_value)
    transition_steps = check_int(where, "transition_steps", transition_steps, low=1)
    decay_rate = check_number(where, "decay_rate", decay_rate, low=0.0, low_open=True)
    transition_begin = check_int(where, "transition_begin", transition_begin, low=0)
    if end_value is not None:
        end_value = _value(where, "end_value", end_value)
    staircase = bool(staircase)

    def schedule(step):
        xp, t = _float_step(step)
        exponent = xp.maximum(t - transition_begin, 0.0) / transition_steps
        if staircase:
            exponent = xp.floor(exponent)
        value = init_value * decay_rate**exponent
        if end_value is not None:
            value = xp.maximum(value, end_value) if decay_rate < 1 else xp.minimum(value, end_value)
        return xp.asarray(value, dtype=t.dtype)

    built = call(
        where,
        init_value=init_value,
        transition_steps=transition_steps,
        decay_rate=decay_rate,
        transition_begin=transition_begin,
        staircase=staircase,
        end_value=end_value,
    )
    return ScheduleValue(schedule, built)


def piecewise_constant(init_value: float, boundaries_and_values: Mapping[int, float]) -> Schedule:
    """A constant value that changes *at* given steps.

    ``lr(step) = init_value`` for ``step < b_1``, ``v_1`` for ``b_1 <= step < b_2``, ... ,
    ``v_n`` for ``step >= b_n``, where ``boundaries_and_values = {b_1: v_1, ..., b_n: v_n}``.

    Args:
        init_value: the value before the first boundary.
        boundaries_and_values: ``{step: value from that step on}``; steps are integers >= 0.

    Example:
        >>> from fnn import optim
        >>> lr = optim.piecewise_constant(0.1, boundaries_and_values={100: 0.01, 200: 0.001})
        >>> [float(lr(s)) for s in (0, 99, 100, 199, 200, 10_000)]
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """
    where = "piecewise_constant"
    init_value = _value(where, "init_value", init_value)
    if not isinstance(boundaries_and_values, Mapping):
        raise TypeError(f"{where}: boundaries_and_values must be a dict {{step: value}}; got {boundaries_and_values!r}")
    pieces = sorted(
        (check_int(where, "a boundary", b, low=0), _value(where, f"the value at step {b}", v))
        for b, v in boundaries_and_values.items()
    )

    def schedule(step):
        xp, t = _float_step(step)
        value = xp.full_like(t, init_value)
        for boundary, v in pieces:
            value = xp.where(t >= boundary, v, value)
        return xp.asarray(value, dtype=t.dtype)

    built = call(
        where,
        init_value=init_value,
        boundaries_and_values=dict(boundaries_and_values),
    )
    return ScheduleValue(schedule, built)


def cosine_decay(init_value: float, decay_steps: int, *, end_value: float = 0.0) -> Schedule:
    """Half a cosine from ``init_value`` down to ``end_value``, then constant.

    ``cosine_decay(1e-3, 100)`` is ``optax.cosine_decay_schedule(1e-3, 100)``;
    ``end_value`` is keyword-only because optax's third argument, ``alpha``, is
    a fraction of ``init_value`` (``end_value = alpha * init_value``).

    ``lr(step) = end_value + (init_value - end_value) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2``

    Args:
        init_value: the value at step 0.
        decay_steps: the step at which ``end_value`` is reached (>= 1).
        end_value: the final value.

    Example:
        >>> from fnn import optim
        >>> lr = optim.cosine_decay(1.0, decay_steps=100, end_value=0.1)
        >>> [round(float(lr(s)), 6) for s in (0, 50, 100, 150)]
        [1.0, 0.55, 0.1, 0.1]
    """
    where = "cosine_decay"
    init_value = _value(where, "init_value", init_value)
    decay_steps = check_int(where, "decay_steps", decay_steps, low=1)
    end_value = _value(where, "end_value", end_value)

    def schedule(step):
        xp, t = _float_step(step)
        frac = xp.minimum(t, decay_steps) / decay_steps
        value = end_value + (init_value - end_value) * 0.5 * (1.0 + xp.cos(math.pi * frac))
        return xp.asarray(value, dtype=t.dtype)

    return ScheduleValue(schedule, call(where, init_value=init_value, decay_steps=decay_steps, end_value=end_value))


def warmup_cosine_decay(
    init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0
) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    ``lr(step) = init_value + (peak_value - init_value) * step / warmup_steps`` for ``step < warmup_steps``;
    then :func:`cosine_decay` from ``peak_value`` over the remaining ``decay_steps - warmup_steps``
    steps, evaluated at ``step - warmup_steps``.

    Args:
        init_value: the value at step 0.
        peak_value: the value reached at ``warmup_steps``.
        warmup_steps: the length of the warmup (>= 0).
        decay_steps: the total length of the schedule, warmup included (> warmup_steps).
        end_value: the value from ``decay_steps`` on.

    Example:
        >>> from fnn import optim
        >>> lr = optim.warmup_cosine_decay(0.0, peak_value=1.0, warmup_steps=10, decay_steps=110)
        >>> [round(float(lr(s)), 6) for s in (0, 5, 10, 60, 110, 200)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    where = "warmup_cosine_decay"
    init_value = _value(where, "init_value", init_value)
    peak_value = _value(where, "peak_value", peak_value)
    warmup_steps = check_int(where, "warmup_steps", warmup_steps, low=0)
    decay_steps = check_int(where, "decay_steps", decay_steps, low=0)
    end_value = _value(where, "end_value", end_value)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{where}: decay_steps is the total length, warmup included, so it must be > warmup_steps; "
            f"got decay_steps={decay_steps}, warmup_steps={warmup_steps}"
        )
    built = call(
        where,
        init_value=init_value,
        peak_value=peak_value,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        end_value=end_value,
    )
    cosine = cosine_decay(peak_value, decay_steps=decay_steps - warmup_steps, end_value=end_value)
    if warmup_steps == 0:
        return ScheduleValue(cosine.fn, built)
    warmup = linear_schedule(init_value, end_value=peak_value, transition_steps=warmup_steps)
    return ScheduleValue(join_schedules([warmup, cosine], boundaries=[warmup_steps]).fn, built)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]`` (restarted at 0), ...

    ``lr(step) = schedules[i](step - boundaries[i-1])`` for ``boundaries[i-1] <= step < boundaries[i]``
    (with ``boundaries[-1] = 0``). Each schedule after the first sees its own step counted from
    its start.

    Args:
        schedules: n schedules.
        boundaries: n - 1 strictly increasing steps (>= 0).

    Example (constant warmup, then exponential decay):
        >>> from fnn import optim
        >>> lr = optim.join_schedules(
        ...     [optim.constant_schedule(0.01), optim.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)],
        ...     boundaries=[5])
        >>> [float(lr(s)) for s in (0, 4, 5, 6)]
        [0.01, 0.01, 0.1, 0.05]
    """
    where = "join_schedules"
    schedules = list(schedules)
    boundaries = [check_int(where, "a boundary", b, low=0) for b in boundaries]
    if not schedules or not all(callable(s) for s in schedules):
        raise TypeError(f"{where}: schedules must be a non-empty list of schedules (step -> value); got {schedules!r}")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{where}: needs len(schedules) - 1 = {len(schedules) - 1} boundaries; got {len(boundaries)}: {boundaries}"
        )
    if any(b >= c for b, c in itertools.pairwise(boundaries)):
        raise ValueError(f"{where}: boundaries must be strictly increasing; got {boundaries}")

    def schedule(step):
        xp = backend.namespace(step)
        step = xp.asarray(step)
        value = xp.asarray(schedules[0](step), dtype=float)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = xp.where(step >= boundary, xp.asarray(later(step - boundary), dtype=float), value)
        return xp.asarray(value, dtype=float)

    return ScheduleValue(schedule, call(where, schedules=schedules, boundaries=boundaries))
