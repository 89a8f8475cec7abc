"""The optimizer protocol: ``init`` / ``update`` over pytrees, ``chain`` and ``apply_updates``.

An optimizer (a *gradient transformation*) is an immutable value holding two
pure functions::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params=None)
    params = apply_updates(params, updates)        # params + updates, leaf by leaf

``state`` is a pytree of arrays (small NamedTuples and dicts), so it can be
passed through ``jax.jit``, donated, checkpointed and sharded like params.
``update`` never modifies its inputs; it returns new trees. The protocol is the
one optax uses, so fnn transforms and optax transforms chain with each other.

This module also holds the small helpers the transforms share: validation of
hyper-parameters (errors raised at construction time, naming the argument and
the value), the comparison of a gradient tree with the tree the state was
built for, and the saturating step counter.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.kernels.optim import add_updates
from fnn.optim.calls import Call, call

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "Optimizer",
    "Schedule",
    "apply_updates",
    "chain",
]

Array = Any
PyTree = Any
Schedule = Callable[[Any], Array]  # step (0-based count of updates already applied) -> value


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GradientTransformation:
    """An optimizer: ``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``.

    ``name`` keys this transform's state inside a :func:`chain` (readable
    checkpoints: ``state["adam"]["scale_by_adam"].mu``). Iterating yields
    ``(init, update)``, so the value also unpacks like optax's NamedTuple.

    ``call`` is the call that built it (:mod:`fnn.optim.calls`), set by every
    fnn constructor: it is the ``repr`` (``adam(learning_rate=0.001, ...)``),
    and two optimizers with equal calls and names compare and hash equal, so a
    rebuilt optimizer is the same jit cache key. Without a call (a transform
    built by hand, as below) two values are equal only when they hold the
    same two functions.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> halve = optim.GradientTransformation(
        ...     init=lambda params: optim.EmptyState(),
        ...     update=lambda g, s, p=None: ({k: v / 2 for k, v in g.items()}, s),
        ...     name="halve")
        >>> updates, _ = halve.update({"w": np.array([2.0])}, halve.init(None))
        >>> updates["w"]
        array([1.])
    """

    init: Callable[[PyTree], PyTree]
    update: Callable[..., tuple[PyTree, PyTree]]
    name: str = "transform"
    call: Call | None = None

    def _identity(self) -> tuple:
        if self.call is None:
            return (type(self), self.name, self.init, self.update)
        return (type(self), self.name, self.call)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GradientTransformation):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        if self.call is not None:
            return repr(self.call)
        return f"GradientTransformation(init={self.init!r}, update={self.update!r}, name={self.name!r})"

    def __iter__(self) -> Iterator[Callable]:
        return iter((self.init, self.update))

    def __len__(self) -> int:
        return 2


Optimizer = GradientTransformation


class EmptyState(NamedTuple):
    """The state of a transform that keeps nothing (a pytree with no leaves)."""


# --------------------------------------------------------------------------- #
# chain and apply_updates
# --------------------------------------------------------------------------- #


def _name_of(transform: Any) -> str:
    name = getattr(transform, "name", None)
    return name if isinstance(name, str) and name else "transform"


def chain(*transforms: Any, name: str = "chain") -> GradientTransformation:
    """Apply ``transforms`` one after the other: each one's updates feed the next.

    The chain's state is a dict keyed by the transforms' names (made unique with
    ``_1``, ``_2`` suffixes), not a positional tuple: inserting a transform
    leaves the other entries where they were. Any object with ``init`` and
    ``update`` (an optax transform included) can be chained.

    Args:
        *transforms: optimizers / transforms, applied left to right.
        name: the name of the chain itself (its key when nested in another chain).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.chain(optim.clip(1.0), optim.scale_by_learning_rate(0.1))
        >>> state = opt.init({"w": np.zeros(2)})
        >>> sorted(state)
        ['clip', 'scale_by_learning_rate']
        >>> updates, state = opt.update({"w": np.array([5.0, -0.5])}, state)
        >>> updates["w"]
        array([-0.1 ,  0.05])
    """
    names: list[str] = []
    for i, t in enumerate(transforms):
        check_optimizer(name, f"argument {i}", t)
        base = _name_of(t)
        candidate, k = base, 0
        while candidate in names:
            k += 1
            candidate = f"{base}_{k}"
        names.append(candidate)
    transforms = tuple(transforms)

    def init(params: PyTree) -> dict:
        return {n: t.init(params) for n, t in zip(names, transforms)}

    def update(grads: PyTree, state: dict, params: PyTree = None) -> tuple[PyTree, dict]:
        check_chain_state(name, names, state)
        new_state = {}
        updates = grads
        for n, t in zip(names, transforms):
            updates, new_state[n] = t.update(updates, state[n], params)
        return updates, new_state

    built = call("chain", *transforms) if name == "chain" else call("chain", *transforms, name=name)
    return GradientTransformation(init, update, name, built)


def described(optimizer: GradientTransformation, function: str, **kwargs: Any) -> GradientTransformation:
    """``optimizer`` carrying the call ``function(**kwargs)`` (its repr, == and hash):
    for constructors that return another constructor's optimizer (a chain)."""
    return dataclasses.replace(optimizer, call=call(function, **kwargs))


def check_chain_state(where: str, names: Any, state: Any) -> None:
    """A chain's state must be the dict its ``init`` made, keyed by ``names``."""
    if not isinstance(state, dict) or set(state) != set(names):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{where}: state must be the dict made by this optimizer's init, with keys {sorted(names)}; got {got}"
        )


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """``params + updates`` leaf by leaf, each result cast back to its param's dtype.

    A float32 parameter stays float32 even when its update was computed in a
    wider type. Neither input is modified. The arithmetic is
    :func:`fnn.kernels.add_updates`'s (one pass per leaf into a fresh array
    on NumPy).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> p = optim.apply_updates({"w": np.ones(2, np.float32)}, {"w": np.array([0.5, -0.5])})
        >>> p["w"], p["w"].dtype
        (array([1.5, 0.5], dtype=float32), dtype('float32'))
    """
    check_trees_match("apply_updates", params, updates, "params", "updates", shapes=True)
    if not all(_is_float(p) for p in backend.tree_leaves(params)):  # paths only for the message
        path, p = next((path, p) for path, p in backend.tree_leaves_with_path(params) if not _is_float(p))
        raise TypeError(
            f"apply_updates: params '{path}' is {_dtype(p).name}; optimizers update floating-point params "
            "(an integer parameter would never move: keep it in the model's state or cast it to float)"
        )
    return add_updates(params, updates)


def _dtype(leaf: Any) -> np.dtype:
    return np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)


def _is_float(leaf: Any) -> bool:
    return _dtype(leaf).kind in "fV"  # V: bfloat16 and the other ml_dtypes floats


# --------------------------------------------------------------------------- #
# Helpers shared by the transforms (not part of the public surface)
# --------------------------------------------------------------------------- #


def tree_map_arrays(xp, f: Callable, tree: PyTree, *rest: PyTree) -> PyTree:
    """``tree_map`` whose results are arrays of ``xp`` (NumPy turns 0-d results
    into scalars; this keeps them 0-d arrays with their dtype)."""
    return backend.tree_map(lambda *leaves: xp.asarray(f(*leaves)), tree, *rest)


def zeros_count(xp) -> Array:
    """A fresh step counter: a 0-d ``int32`` array.

    int32 on both backends (JAX's default integer, and the same checkpoint on
    NumPy and JAX). It is incremented with :func:`safe_increment`, which
    saturates at 2**31 - 1 instead of wrapping to a negative count.
    """
    return xp.zeros([], dtype=xp.int32)


def safe_increment(count: Array) -> Array:
    """``count + 1``, saturating at the largest value of the count's dtype.

    Written as ``count + (count < largest)``, not ``minimum(count, largest - 1) + 1``:
    under ``jit`` XLA:CPU copies a ``minimum`` increment into each of its consumers
    (Adam's two bias corrections), which leaves several independent scalar
    kernels at the start of a training step; the CPU runtime then spreads the
    first matrix products over more threads than cores and the whole step ran
    5-25% slower. This form stays one small kernel that the bias corrections
    read, and never overflows.
    """
    xp = backend.namespace(count)
    largest = np.iinfo(count.dtype).max
    return xp.asarray(count + (count < largest).astype(count.dtype), dtype=count.dtype)


def float_scalar(xp, value: Any) -> Array:
    """A 0-d array of the default float type (float64 on NumPy; float32 on JAX
    unless x64 is enabled)."""
    return xp.asarray(value, dtype=float)


def check_trees_match(
    where: str,
    expected: PyTree,
    got: PyTree,
    expected_name: str = "state",
    got_name: str = "grads",
    shapes: bool = False,
) -> None:
    """Raise ``ValueError`` naming the first path where ``got`` differs from
    ``expected`` (a missing or extra leaf, or with ``shapes=True`` a leaf of
    another shape). Runs on structures only: free under ``jit``."""
    s_expected, s_got = backend.tree_structure(expected), backend.tree_structure(got)
    if s_expected != s_got:
        p_expected = [p for p, _ in backend.tree_leaves_with_path(expected)]
        p_got = [p for p, _ in backend.tree_leaves_with_path(got)]
        missing = [p for p in p_expected if p not in set(p_got)]
        extra = [p for p in p_got if p not in set(p_expected)]
        if missing:
            detail = f"{got_name} has no leaf at '{missing[0]}'"
        elif extra:
            detail = f"{got_name} has a leaf at '{extra[0]}' that {expected_name} does not"
        else:
            detail = f"{got_name} is {s_got}"
        raise ValueError(
            f"{where}: the {got_name} tree does not match the {expected_name} tree: {detail} "
            f"(expected {len(p_expected)} leaves like {s_expected})"
        )
    if shapes and any(np.shape(a) != np.shape(b) for a, b in zip(backend.tree_leaves(expected), backend.tree_leaves(got))):
        for (path, a), b in zip(backend.tree_leaves_with_path(expected), backend.tree_leaves(got)):
            if np.shape(a) != np.shape(b):
                raise ValueError(
                    f"{where}: {got_name} at '{path}' has shape {tuple(np.shape(b))}; "
                    f"{expected_name} expects {tuple(np.shape(a))}"
                )


def _as_number(where: str, name: str, value: Any, expected: str) -> float | None:
    """The float value of a number or 0-d concrete array; None for a traced value."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{where}: {name} must be {expected}; got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "shape") and np.shape(value) == () and hasattr(value, "dtype"):
        if not backend.is_concrete(value):
            return None  # built inside jit: cannot be checked here
        if np.issubdtype(np.dtype(value.dtype), np.number):
            return float(value)
    raise TypeError(f"{where}: {name} must be {expected}; got {type(value).__name__} {value!r}")


def check_number(
    where: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = True,
) -> float:
    """Validate a finite real hyper-parameter in an interval; return it as a float.

    The error names the function, the argument and the value, e.g.
    ``adam: b1 must be a finite number in [0, 1); got 1.5``.
    """
    left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    if low is not None and high is not None:
        expected = f"a finite number in {left}, {right}"
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        expected = "a finite number"
    x = _as_number(where, name, value, expected)
    if x is None:
        return value
    bad = not math.isfinite(x)
    bad |= low is not None and (x <= low if low_open else x < low)
    bad |= high is not None and (x >= high if high_open else x > high)
    if bad:
        raise ValueError(f"{where}: {name} must be {expected}; got {value!r}")
    return x


def check_int(where: str, name: str, value: Any, *, low: int = 0) -> int:
    """Validate an integer hyper-parameter ``>= low`` (a step count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an integer >= {low}; got {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be an integer >= {low}; got {value!r}")
    return int(value)


def check_learning_rate(where: str, learning_rate: Any) -> None:
    """A learning rate is a finite number >= 0 or a schedule ``step -> value``."""
    if callable(learning_rate):
        return
    expected = "a finite number >= 0 or a schedule"
    x = _as_number(where, "learning_rate", learning_rate, expected)
    if x is not None and not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{where}: learning_rate must be {expected}; got {learning_rate!r}")


def check_optimizer(where: str, name: str, value: Any) -> None:
    """``value`` must have callable ``init`` and ``update``."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(
            f"{where}: {name} must be an optimizer with init and update (e.g. optim.adam(1e-3)); "
            f"got {type(value).__name__}"
        )
