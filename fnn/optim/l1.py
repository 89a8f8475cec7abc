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

from fnn.optim.base import GradientTransformation, check_number
from fnn.optim.calls import call
from fnn.optim.masking import Mask
from fnn.optim.weight_decay import penalty_gradient

__all__ = ["add_l1"]


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
    record = call(where, strength=strength, mask=mask)
    return penalty_gradient(where, strength, lambda xp, p: xp.sign(p), mask, record)
