"""``skip_not_finite``: an optimizer wrapper that ignores updates whose gradients hold NaN or inf."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.optim.base import GradientTransformation, check_optimizer, safe_increment, zeros_count
from fnn.optim.calls import call

__all__ = ["SkipNotFiniteState", "all_finite", "skip_not_finite"]

Array = Any
PyTree = Any


class SkipNotFiniteState(NamedTuple):
    """State of :func:`skip_not_finite`."""

    inner_state: PyTree  # the wrapped optimizer's state, unchanged by a skipped update
    notfinite_count: Array  # int32 (saturating): how many updates were skipped so far
    last_finite: Array  # bool, 0-d: whether the last update's gradients were all finite


def all_finite(tree: PyTree) -> Array:
    """A 0-d bool array: True when every entry of every leaf is finite."""
    xp = backend.namespace(tree)
    ok = xp.asarray(True)
    for leaf in backend.tree_leaves(tree):
        ok = xp.logical_and(ok, xp.all(xp.isfinite(leaf)))
    return xp.asarray(ok)


def skip_not_finite(optimizer: GradientTransformation) -> GradientTransformation:
    """Apply ``optimizer`` only when all gradients are finite; otherwise skip the update.

    A skipped update returns zero updates and leaves the wrapped optimizer's
    state untouched (its step count included), and adds one to
    ``notfinite_count``. On JAX the choice is made with ``where`` (jittable: both
    branches are computed, the finite one is kept); on NumPy the wrapped update
    is not run at all.

    Args:
        optimizer: the optimizer to protect.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.skip_not_finite(optim.sgd(0.1))
        >>> state = opt.init({"w": np.zeros(2)})
        >>> updates, state = opt.update({"w": np.array([1.0, np.nan])}, state)
        >>> updates["w"], int(state.notfinite_count), bool(state.last_finite)
        (array([0., 0.]), 1, False)
    """
    check_optimizer("skip_not_finite", "optimizer", optimizer)

    def init(params: PyTree) -> SkipNotFiniteState:
        xp = backend.namespace(params)
        return SkipNotFiniteState(optimizer.init(params), zeros_count(xp), xp.asarray(True))

    def update(grads: PyTree, state: SkipNotFiniteState, params: PyTree = None):
        xp = backend.namespace(grads, state.notfinite_count)
        ok = all_finite(grads)
        skipped = xp.where(ok, state.notfinite_count, safe_increment(state.notfinite_count))
        skipped = xp.asarray(skipped, dtype=state.notfinite_count.dtype)
        if xp is np:  # concrete: a Python branch, and no NaN arithmetic at all
            if bool(ok):
                updates, inner = optimizer.update(grads, state.inner_state, params)
            else:
                updates = backend.tree_map(np.zeros_like, grads)
                inner = state.inner_state
            return updates, SkipNotFiniteState(inner, skipped, np.asarray(ok))
        new_updates, new_inner = optimizer.update(grads, state.inner_state, params)
        updates = backend.tree_map(lambda u: xp.where(ok, u, xp.zeros_like(u)), new_updates)
        inner = backend.tree_map(lambda new, old: xp.where(ok, new, old), new_inner, state.inner_state)
        return updates, SkipNotFiniteState(inner, skipped, ok)

    return GradientTransformation(init, update, "skip_not_finite", call("skip_not_finite", optimizer=optimizer))
