"""Gradient clipping: by value (``clip``) and by global norm (``clip_by_global_norm``).

Clipping is the classic remedy for exploding gradients (deep or recurrent
networks): put it first in a :func:`~fnn.optim.base.chain`, e.g.
``chain(clip_by_global_norm(1.0), adam(1e-3))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.optim.base import EmptyState, GradientTransformation, check_number, float_scalar, tree_map_arrays
from fnn.optim.calls import call

__all__ = ["ClipByGlobalNormState", "clip", "clip_by_global_norm", "global_norm"]

Array = Any
PyTree = Any


class ClipByGlobalNormState(NamedTuple):
    """State of :func:`clip_by_global_norm`."""

    global_norm: Array  # default float, 0-d: the norm of the last update's input, before clipping


def global_norm(tree: PyTree) -> Array:
    """``sqrt(sum of g**2 over every entry of every leaf)``, a 0-d array of the default float type.

    Each leaf is squared and summed in at least float32 (bfloat16 / float16
    gradients do not overflow), in float64 for float64 leaves.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> float(optim.global_norm({"a": np.array([3.0]), "b": np.array([[4.0]])}))
        5.0
    """
    xp = backend.namespace(tree)
    total = float_scalar(xp, 0.0)
    for leaf in backend.tree_leaves(tree):
        leaf = xp.asarray(leaf)
        wide = leaf.astype(np.promote_types(leaf.dtype, np.float32))
        total = total + xp.sum(wide * wide).astype(total.dtype)
    return xp.asarray(xp.sqrt(total), dtype=total.dtype)


def clip(max_delta: float) -> GradientTransformation:
    """Clip every entry to ``[-max_delta, max_delta]``: ``u = clip(g, -max_delta, max_delta)``. No state.

    Args:
        max_delta: the largest magnitude allowed (> 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> updates, _ = optim.clip(1.0).update({"w": np.array([-3.0, 0.5, 2.0])}, optim.EmptyState())
        >>> updates["w"]
        array([-1. ,  0.5,  1. ])
    """
    max_delta = check_number("clip", "max_delta", max_delta, low=0.0, low_open=True)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree = None):
        xp = backend.namespace(grads)
        return tree_map_arrays(xp, lambda g: xp.clip(g, -max_delta, max_delta), grads), state

    return GradientTransformation(init, update, "clip", call("clip", max_delta=max_delta))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Rescale the whole gradient tree so that its global norm is at most ``max_norm``.

    ``n = global_norm(g)``; ``u = g * max_norm / max(n, max_norm)`` (unchanged when
    ``n <= max_norm``). The norm before clipping is kept in the state
    (``ClipByGlobalNormState.global_norm``) for logging.

    Args:
        max_norm: the largest global norm allowed (> 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.clip_by_global_norm(1.0)
        >>> updates, state = opt.update({"w": np.array([3.0, 4.0])}, opt.init({"w": np.zeros(2)}))
        >>> updates["w"], float(state.global_norm)
        (array([0.6, 0.8]), 5.0)
    """
    max_norm = check_number("clip_by_global_norm", "max_norm", max_norm, low=0.0, low_open=True)

    def init(params: PyTree) -> ClipByGlobalNormState:
        return ClipByGlobalNormState(float_scalar(backend.namespace(params), 0.0))

    def update(grads: PyTree, state: ClipByGlobalNormState, params: PyTree = None):
        xp = backend.namespace(grads, state.global_norm)
        norm = global_norm(grads)
        factor = max_norm / xp.maximum(norm, max_norm)  # never divides by zero: max_norm > 0
        updates = tree_map_arrays(xp, lambda g: g * factor.astype(g.dtype, copy=False), grads)
        return updates, ClipByGlobalNormState(xp.asarray(norm, dtype=state.global_norm.dtype))

    return GradientTransformation(init, update, "clip_by_global_norm", call("clip_by_global_norm", max_norm=max_norm))
