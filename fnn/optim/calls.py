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
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from fnn import backend

__all__ = ["Call", "call"]


class _Identity:
    """A key that is equal only to a key of the very same object."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def _key(value: Any) -> Any:
    """A hashable stand-in for ``value`` that is equal where the values are the same argument."""
    if value is None or isinstance(value, (str, bytes, numbers.Number)) and not hasattr(value, "shape"):
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted(((repr(k), _key(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a NumPy or JAX array, a NumPy scalar
        if not backend.is_concrete(value):
            return _Identity(value)
        host = np.asarray(value)
        return ("array", host.dtype.str, host.shape, host.tobytes())
    try:
        hash(value)
    except TypeError:
        return _Identity(value)
    return value  # an fnn value compares by its call; a plain function by identity


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
        return (self.function, _key(self.args), _key(self.kwargs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Call):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


def call(function: str, *args: Any, **kwargs: Any) -> Call:
    """The :class:`Call` ``function(*args, **kwargs)`` (keyword arguments in the order given)."""
    return Call(function, tuple(args), tuple(kwargs.items()))
