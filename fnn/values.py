"""Hyper-parameters as comparable values: the key under which a layer's or an
optimizer's construction arguments compare and hash.

Arguments compare by value: numbers, strings, tuples, lists and dicts,
concrete arrays (by dtype, shape and bytes), and any hashable value by its
own equality (fnn's layers, initialisers, optimizers and schedules compare
by the calls that built them). Anything else -- an unhashable object, a
traced array -- compares by identity.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from fnn import backend

__all__ = ["value_key"]


class _Identity:
    """A key that is equal only to a key of the very same object."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def value_key(value: Any) -> Any:
    """A hashable stand-in for ``value`` that is equal where the values are the same argument."""
    if value is None or isinstance(value, (str, bytes, numbers.Number)) and not hasattr(value, "shape"):
        return value
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(value_key(v) for v in value))
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted(((repr(k), value_key(v)) for k, v in value.items()), key=lambda kv: kv[0])))
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
