"""The classic optimizers, each a :func:`~fnn.optim.base.chain` of small transforms.

Each alias names its pieces, so its state reads like its formula
(``state["scale_by_adam"].mu``) and its learning rate can be read or changed
with :func:`~fnn.optim.learning_rate.get_learning_rate` /
:func:`~fnn.optim.learning_rate.set_learning_rate`. ``learning_rate`` is a
finite number >= 0 or a schedule ``step -> value`` evaluated at the 0-based
count of updates already applied. In the formulas ``g`` is the gradient, ``t``
the number of the update counted from 1, and the returned update is added to
the parameter by :func:`~fnn.optim.base.apply_updates`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels.optim import adam_update
from fnn.optim.base import (
    GradientTransformation,
    Schedule,
    chain,
    check_chain_state,
    check_learning_rate,
    check_number,
    check_trees_match,
    described,
    safe_increment,
)
from fnn.optim.calls import call
from fnn.optim.learning_rate import advance, scale_by_learning_rate
from fnn.optim.masking import Mask
from fnn.optim.transforms import (
    ScaleByAdamState,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_rms,
    trace,
)
from fnn.optim.weight_decay import add_decayed_weights

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]

LearningRate = Any  # float | Schedule
PyTree = Any


def sgd(learning_rate: float | Schedule, momentum: float = 0.0, nesterov: bool = False) -> GradientTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Without momentum: ``update = -lr * g`` (no state but the step count and the
    learning rate). With momentum::

        v = momentum * v + g          # v starts at 0
        update = -lr * v              # nesterov: -lr * (g + momentum * v)

    The learning rate multiplies the velocity; it is not inside it.

    Args:
        learning_rate: a finite number >= 0, or a schedule.
        momentum: the momentum coefficient, in [0, 1). 0 allocates no velocity.
        nesterov: use Nesterov momentum.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.sgd(0.1, momentum=0.9)
        >>> params = {"w": np.array([1.0])}
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     updates, state = opt.update({"w": np.array([1.0])}, state, params)
        ...     params = optim.apply_updates(params, updates)
        >>> params["w"]     # 1 - 0.1 * 1 - 0.1 * 1.9
        array([0.71])
    """
    check_learning_rate("sgd", learning_rate)
    momentum = check_number("sgd", "momentum", momentum, low=0.0, high=1.0)  # >= 1: the velocity never decays
    if momentum == 0:
        opt = chain(scale_by_learning_rate(learning_rate), name="sgd")
    else:
        opt = chain(trace(momentum, nesterov), scale_by_learning_rate(learning_rate), name="sgd")
    return described(opt, "sgd", learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)


def adagrad(
    learning_rate: float | Schedule, eps: float = 1e-7, initial_accumulator_value: float = 0.0
) -> GradientTransformation:
    """AdaGrad: each parameter's step shrinks with the sum of its squared gradients.

    ::

        h = h + g * g                 # h starts at initial_accumulator_value
        update = -lr * g / (sqrt(h) + eps)

    Args:
        learning_rate: a finite number >= 0, or a schedule.
        eps: added to ``sqrt(h)`` (> 0).
        initial_accumulator_value: the starting value of ``h`` (>= 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.adagrad(0.5)
        >>> updates, _ = opt.update({"w": np.array([2.0])}, opt.init({"w": np.zeros(1)}))
        >>> np.round(updates["w"], 6)   # -0.5 * 2 / sqrt(4)
        array([-0.5])
    """
    check_learning_rate("adagrad", learning_rate)
    eps = check_number("adagrad", "eps", eps, low=0.0, low_open=True)
    initial_accumulator_value = check_number("adagrad", "initial_accumulator_value", initial_accumulator_value, low=0.0)
    opt = chain(scale_by_adagrad(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate), name="adagrad")
    return described(
        opt, "adagrad", learning_rate=learning_rate, eps=eps, initial_accumulator_value=initial_accumulator_value
    )


def rmsprop(learning_rate: float | Schedule, decay: float = 0.9, eps: float = 1e-8) -> GradientTransformation:
    """RMSProp: divide by a moving root-mean-square of recent gradients.

    ::

        v = decay * v + (1 - decay) * g * g      # v starts at 0
        update = -lr * g / (sqrt(v) + eps)

    Args:
        learning_rate: a finite number >= 0, or a schedule.
        decay: the averaging coefficient, in [0, 1).
        eps: added to ``sqrt(v)`` (> 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.rmsprop(0.01, decay=0.99)
        >>> updates, _ = opt.update({"w": np.array([5.0])}, opt.init({"w": np.zeros(1)}))
        >>> np.round(updates["w"], 6)   # -0.01 * 5 / sqrt(0.01 * 25)
        array([-0.1])
    """
    check_learning_rate("rmsprop", learning_rate)
    decay = check_number("rmsprop", "decay", decay, low=0.0, high=1.0)
    eps = check_number("rmsprop", "eps", eps, low=0.0, low_open=True)
    opt = chain(scale_by_rms(decay, eps), scale_by_learning_rate(learning_rate), name="rmsprop")
    return described(opt, "rmsprop", learning_rate=learning_rate, decay=decay, eps=eps)


def _check_adam(where: str, learning_rate: Any, b1: float, b2: float, eps: float) -> tuple[float, float, float]:
    check_learning_rate(where, learning_rate)
    b1 = check_number(where, "b1", b1, low=0.0, high=1.0)
    b2 = check_number(where, "b2", b2, low=0.0, high=1.0)
    eps = check_number(where, "eps", eps, low=0.0, low_open=True)
    return b1, b2, eps


def adam(
    learning_rate: float | Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Adam: momentum and RMS scaling, with bias-corrected moments.

    ::

        m = b1 * m + (1 - b1) * g            # m, v start at 0
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        update = -lr * m_hat / (sqrt(v_hat) + eps)

    The state is ``chain(scale_by_adam, scale_by_learning_rate)``'s, and so
    are the numbers; but rather than run those two transforms one after the
    other, ``update`` calls Adam's kernel (:func:`fnn.kernels.adam_update`)
    once with ``scale=-lr``: on NumPy arrays the learning rate is then folded
    into the kernel's one in-place pass per leaf instead of costing a second
    pass over every update (the plain form, on JAX, multiplies by it exactly
    as ``scale_by_learning_rate`` does).

    Args:
        learning_rate: a finite number >= 0, or a schedule.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to ``sqrt(v_hat)`` (> 0).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.adam(1e-3)
        >>> opt    # a value: it prints as its call, and adam(1e-3) == adam(1e-3)
        adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)
        >>> state = opt.init({"w": np.zeros(3)})
        >>> updates, state = opt.update({"w": np.array([0.5, -2.0, 4.0])}, state)
        >>> np.round(updates["w"], 6)   # the first step is -lr * sign(g)
        array([-0.001,  0.001, -0.001])
    """
    b1, b2, eps = _check_adam("adam", learning_rate, b1, b2, eps)
    chained = chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate), name="adam")
    schedule = learning_rate if callable(learning_rate) else None

    def update(grads: PyTree, state: Any, params: PyTree = None):
        check_chain_state("adam", ("scale_by_adam", "scale_by_learning_rate"), state)
        adam_state, lr_state = state["scale_by_adam"], state["scale_by_learning_rate"]
        check_trees_match("scale_by_adam", adam_state.mu, grads, shapes=True)
        count = safe_increment(adam_state.count)
        # scale_by_adam then scale_by_learning_rate, as one call of the kernel with scale = -lr
        updates, mu, nu = adam_update(
            grads, adam_state.mu, adam_state.nu, count, b1=b1, b2=b2, eps=eps, scale=-lr_state.learning_rate
        )
        xp = np if schedule is None else backend.namespace(grads, lr_state.count, lr_state.learning_rate)
        new_state = {  # (advance reads xp only to evaluate a schedule)
            "scale_by_adam": ScaleByAdamState(count, mu, nu),
            "scale_by_learning_rate": advance(lr_state, schedule, xp),
        }
        return updates, new_state

    built = call("adam", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
    return GradientTransformation(chained.init, update, "adam", built)


def adamw(
    learning_rate: float | Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Mask | None = None,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay.

    ::

        (m, v, m_hat, v_hat as in adam)
        update = -lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * param)

    The decay term is outside Adam's scaling (decoupled) and, with a schedule,
    follows the scheduled learning rate. ``update`` needs ``params``.

    Args:
        learning_rate: a finite number >= 0, or a schedule.
        b1, b2, eps: as in :func:`adam`.
        weight_decay: the decay coefficient (>= 0).
        mask: which parameters to decay: None for all, a pytree of bools, or a
            predicate ``(path, leaf) -> bool`` such as :func:`~fnn.optim.decay_mask`
            (no decay on biases and normalisation parameters).

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.adamw(0.1, weight_decay=0.5, mask=optim.decay_mask)
        >>> params = {"w": np.full((1, 1), 2.0), "b": np.full(1, 2.0)}
        >>> grads = {"w": np.zeros((1, 1)), "b": np.zeros(1)}
        >>> updates, _ = opt.update(grads, opt.init(params), params)
        >>> float(updates["w"][0, 0]), float(updates["b"][0]) == 0   # -0.1 * 0.5 * 2 on the weight only
        (-0.1, True)
    """
    b1, b2, eps = _check_adam("adamw", learning_rate, b1, b2, eps)
    weight_decay = check_number("adamw", "weight_decay", weight_decay, low=0.0)
    opt = chain(
        scale_by_adam(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
        name="adamw",
    )
    return described(
        opt, "adamw", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask
    )
