"""Optimizers and schedules as readable values: the call that built them.

Every optimizer and schedule fnn builds remembers its call (:class:`Call`):
the function's name and the arguments it was given. The call is its
``repr`` (``adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)``), and
two values built by the same call compare and hash equal, so that a rebuilt
optimizer is the same cache key (``fit`` keeps its compiled epoch per
``(model, loss, optimizer, ...)``) and nothing recompiles.

Arguments compare by value: numbers, strings, tuples, lists and dicts
(masks), concrete arrays (by dtype, shape and bytes), and fnn's own
optimizers and schedules (by their calls). Any other function -- a schedule
written as a ``lambda``, a mask predicate -- compares by identity: two
lambdas with the same body are different arguments, the same function
object passed twice is the same.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from fnn.values import value_key

__all__ = ["Call", "call"]


def _show(value: Any) -> str:
    """``repr``, except that a named module-level function is written by its name (``decay_mask``)."""
    name = getattr(value, "__qualname__", "")
    if inspect.isfunction(value) and name.isidentifier():
        return name
    return repr(value)


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """A function's name and the arguments it was called with.

    ``repr`` writes it as the call (positional arguments first); ``==`` and
    ``hash`` compare the name and the arguments as described in the module.

    Example:
        >>> from fnn.optim.calls import call
        >>> call("clip", max_delta=1.0)
        clip(max_delta=1.0)
        >>> call("clip", max_delta=1.0) == call("clip", max_delta=1)
        True
    """

    function: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __repr__(self) -> str:
        parts = [_show(a) for a in self.args] + [f"{k}={_show(v)}" for k, v in self.kwargs]
        return f"{self.function}({', '.join(parts)})"

    def _identity(self) -> tuple:
        return (self.function, value_key(self.args), value_key(self.kwargs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Call):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


def call(function: str, *args: Any, **kwargs: Any) -> Call:
    """The :class:`Call` ``function(*args, **kwargs)`` (keyword arguments in the order given)."""
    return Call(function, tuple(args), tuple(kwargs.items()))
