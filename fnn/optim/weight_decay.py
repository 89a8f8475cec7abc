"""Weight decay: ``add_decayed_weights`` and the usual mask ``decay_mask``.

Decoupled weight decay adds ``weight_decay * param`` to the update *before*
the learning rate is applied, so that ``chain(scale_by_adam(),
add_decayed_weights(wd), scale_by_learning_rate(lr))`` moves each parameter by
``-lr * (adam_direction + wd * param)`` (AdamW). Placed before an adaptive
transform instead, it is classic L2 regularisation of the gradient.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fnn import backend
from fnn.optim.base import EmptyState, GradientTransformation, check_number, check_trees_match
from fnn.optim.calls import call
from fnn.optim.masking import Mask, resolve_mask

__all__ = ["NO_DECAY_NAMES", "add_decayed_weights", "decay_mask"]

PyTree = Any

NO_DECAY_NAMES = frozenset({"b", "bias", "scale"})


def decay_mask(path: str, leaf: Any) -> bool:
    """The usual weight-decay mask, as a predicate: decay weight matrices and kernels only.

    False (no decay) for a leaf named ``b``, ``bias`` or ``scale`` (biases,
    batch-norm and layer-norm parameters) and for any leaf with ``ndim <= 1``;
    True otherwise.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> optim.decay_mask("dense_1/w", np.zeros((3, 4))), optim.decay_mask("dense_1/b", np.zeros(4))
        (True, False)
        >>> optim.decay_mask("batch_norm/scale", np.zeros((1, 4)))
        False
    """
    name = path.rsplit("/", 1)[-1]
    return name not in NO_DECAY_NAMES and np.ndim(leaf) > 1


def add_decayed_weights(weight_decay: float = 0.0, mask: Mask | None = None) -> GradientTransformation:
    """Add ``weight_decay * param`` to the update of each selected parameter.

    ``u = g + weight_decay * param`` where ``mask`` is True (every leaf when
    ``mask`` is None); ``u = g`` elsewhere. No state. ``update`` needs ``params``.

    Args:
        weight_decay: the decay coefficient (>= 0).
        mask: which leaves to decay: a pytree of bools like the params, a predicate
            ``(path, leaf) -> bool`` such as :func:`decay_mask`, or None for all.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.add_decayed_weights(0.1, mask=optim.decay_mask)
        >>> params = {"w": np.ones((1, 2)), "b": np.ones(2)}
        >>> grads = {"w": np.zeros((1, 2)), "b": np.zeros(2)}
        >>> updates, _ = opt.update(grads, opt.init(params), params)
        >>> updates["w"], updates["b"]
        (array([[0.1, 0.1]]), array([0., 0.]))
    """
    where = "add_decayed_weights"
    weight_decay = check_number(where, "weight_decay", weight_decay, low=0.0)
    record = call(where, weight_decay=weight_decay, mask=mask)
    return penalty_gradient(where, weight_decay, lambda xp, p: p, mask, record)


def penalty_gradient(where: str, coefficient: float, direction: Callable, mask: Mask | None,
                     record: Any) -> GradientTransformation:
    """A stateless transform adding a penalty's gradient to the selected leaves.

    ``u = g + coefficient * direction(xp, param)`` where ``mask`` selects the
    leaf (every leaf when None), ``u = g`` elsewhere: ``direction`` is
    ``param`` for L2 (weight decay) and ``sign(param)`` for L1. ``record`` is
    the transform's comparable call (its repr and equality).
    """

    def init(params: PyTree) -> EmptyState:
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree = None):
        if params is None:
            raise ValueError(f"{where}: update needs the params: call opt.update(grads, state, params)")
        check_trees_match(where, params, grads, "params", "grads", shapes=True)
        xp = backend.namespace(grads, params)
        selected = [True] * len(backend.tree_leaves(params)) if mask is None else resolve_mask(where, mask, params)
        leaves = [
            xp.asarray(g + coefficient * direction(xp, xp.asarray(p)).astype(g.dtype)) if s else g
            for g, p, s in zip(backend.tree_leaves(grads), backend.tree_leaves(params), selected)
        ]
        return backend.tree_unflatten(backend.tree_structure(grads), leaves), state

    return GradientTransformation(init, update, where, record)
