"""L1 regularisation as a gradient transform: ``add_l1``.

The L1 penalty ``strength * sum(|w|)`` added to the loss contributes
``strength * sign(w)`` to the gradient: a pull of constant size towards 0,
whatever the weight's magnitude. L2 (:func:`fnn.optim.add_decayed_weights`)
pulls by ``strength * w``, which fades as the weight shrinks, so L2 makes
every weight small while L1 drives the unneeded ones to (about) exactly 0: a
sparse network. ``sign(0) = 0``, the subgradient that leaves a zero weight
where it is.
"""

from __future__ import annotations

from typing import Any

from fnn import backend
from fnn.optim.base import EmptyState, GradientTransformation, check_number, check_trees_match
from fnn.optim.calls import call
from fnn.optim.masking import Mask, resolve_mask

__all__ = ["add_l1"]

PyTree = Any


def add_l1(strength: float = 0.0, mask: Mask | None = None) -> GradientTransformation:
    """Add ``strength * sign(param)`` to the update of each selected parameter.

    ``u = g + strength * sign(param)`` where ``mask`` is True (every leaf when
    ``mask`` is None); ``u = g`` elsewhere. This is the gradient of the L1
    penalty ``strength * sum(|param|)``; chain it *before* the optimizer
    (``chain(add_l1(1e-4, mask=decay_mask), sgd(0.1))``), like
    :func:`add_decayed_weights` for L2. No state; ``update`` needs ``params``.

    Args:
        strength: the L1 coefficient (>= 0).
        mask: which leaves to regularise: a pytree of bools like the params, a
            predicate ``(path, leaf) -> bool`` such as :func:`decay_mask`, or None for all.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.add_l1(0.1, mask=optim.decay_mask)
        >>> params = {"w": np.array([[-2.0, 0.0, 3.0]]), "b": np.ones(3)}
        >>> grads = {"w": np.zeros((1, 3)), "b": np.zeros(3)}
        >>> updates, _ = opt.update(grads, opt.init(params), params)
        >>> updates["w"], updates["b"]
        (array([[-0.1,  0. ,  0.1]]), array([0., 0., 0.]))
    """
    where = "add_l1"
    strength = check_number(where, "strength", strength, low=0.0)

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree = None):
        if params is None:
            raise ValueError(f"{where}: update needs the params: call opt.update(grads, state, params)")
        check_trees_match(where, params, grads, "params", "grads", shapes=True)
        xp = backend.namespace(grads, params)
        selected = [True] * len(backend.tree_leaves(params)) if mask is None else resolve_mask(where, mask, params)
        leaves = [
            xp.asarray(g + strength * xp.sign(xp.asarray(p)).astype(g.dtype)) if s else g
            for g, p, s in zip(backend.tree_leaves(grads), backend.tree_leaves(params), selected)
        ]
        return backend.tree_unflatten(backend.tree_structure(grads), leaves), state

    return GradientTransformation(init, update, where, call(where, strength=strength, mask=mask))
