"""``dynamic_loss_scale``: the float16 training recipe of loss scaling, as an optimizer wrapper.

float16 has a 5-bit exponent: numbers below ~6e-8 become zero and above
65504 become inf. Gradients of a mean loss are small, so in float16 many
underflow to zero and training stalls. Loss scaling multiplies the loss by a
large factor ``S`` before the backward pass (every gradient is then ``S``
times larger and stays representable), and divides the gradients by ``S``
(in float32) before the optimizer sees them.

*Dynamic* loss scaling picks ``S`` automatically:

* a step whose (scaled) gradients hold inf or NaN is skipped: zero updates,
  the wrapped optimizer's state unchanged, ``skipped`` + 1, and ``S`` is
  divided by ``factor`` (never below ``min_scale``);
* after ``growth_interval`` finite steps in a row, ``S`` is multiplied by
  ``factor`` (never above ``max_scale``), to use as much range as possible.

:func:`fnn.train.train_step` multiplies the loss by the scale of an optimizer
that has a ``loss_scale(opt_state)`` method (this one does), so it must be
the *outermost* wrapper: ``dynamic_loss_scale(adam(1e-3))``, not inside a
``chain``. With a loss scale, a skipped step is normal and does not stop
:func:`fnn.train.fit`; only a non-finite *loss* does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.optim.base import GradientTransformation, check_optimizer, safe_increment, zeros_count
from fnn.optim.calls import call
from fnn.optim.wrappers import all_finite

__all__ = ["DynamicLossScaleState", "LossScaler", "dynamic_loss_scale"]

Array = Any
PyTree = Any


class DynamicLossScaleState(NamedTuple):
    """State of :func:`dynamic_loss_scale`."""

    inner_state: PyTree  # the wrapped optimizer's state, unchanged by a skipped step
    scale: Array  # float32, 0-d: the current loss scale S (a power of factor)
    good_steps: Array  # int32: finite steps since the scale last changed
    skipped: Array  # int32 (saturating): steps skipped so far because of inf / NaN gradients
    last_finite: Array  # bool, 0-d: whether the last step's gradients were finite


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LossScaler(GradientTransformation):
    """An optimizer that also tells the training step by how much to scale the loss."""

    def loss_scale(self, state: DynamicLossScaleState) -> Array:
        """The factor the loss is multiplied by before the backward pass."""
        return state.scale


def dynamic_loss_scale(
    optimizer: GradientTransformation,
    *,
    init_scale: float = 2.0**15,
    growth_interval: int = 2000,
    factor: float = 2.0,
    min_scale: float = 1.0,
    max_scale: float = 2.0**24,
) -> LossScaler:
    """Wrap ``optimizer`` for training on the gradients of ``S * loss``.

    ``update(grads, state)`` expects the gradients of the scaled loss, computes
    ``g = grads / S`` and, when every ``g`` is finite, passes it to
    ``optimizer``; otherwise the step is skipped. The scale then follows::

        not finite: S <- max(S / factor, min_scale), good_steps <- 0, skipped += 1
        finite:     good_steps += 1; if good_steps == growth_interval:
                        S <- min(S * factor, max_scale), good_steps <- 0

    Args:
        optimizer: the optimizer to feed the unscaled gradients.
        init_scale: the first ``S`` (2**15, as is usual for float16).
        growth_interval: finite steps in a row before ``S`` grows.
        factor: growth and shrink factor (> 1; a power of two keeps
            scaling and unscaling exact).
        min_scale, max_scale: bounds of ``S``.

    Example:
        >>> import numpy as np
        >>> from fnn import optim
        >>> opt = optim.dynamic_loss_scale(optim.sgd(0.1), init_scale=8.0)
        >>> state = opt.init({"w": np.zeros(2, np.float32)})
        >>> updates, state = opt.update({"w": np.array([8.0, np.inf], np.float32)}, state)
        >>> updates["w"], float(state.scale), int(state.skipped)
        (array([0., 0.], dtype=float32), 4.0, 1)
        >>> updates, state = opt.update({"w": np.array([4.0, 8.0], np.float32)}, state)
        >>> updates["w"], float(state.scale)
        (array([-0.1, -0.2], dtype=float32), 4.0)
    """
    check_optimizer("dynamic_loss_scale", "optimizer", optimizer)
    if not factor > 1:
        raise ValueError(f"dynamic_loss_scale: factor must be > 1; got {factor!r}")
    if not 0 < min_scale <= init_scale <= max_scale:
        raise ValueError(
            "dynamic_loss_scale: expected 0 < min_scale <= init_scale <= max_scale; "
            f"got min_scale={min_scale}, init_scale={init_scale}, max_scale={max_scale}"
        )
    if isinstance(growth_interval, bool) or not isinstance(growth_interval, (int, np.integer)) or growth_interval < 1:
        raise ValueError(f"dynamic_loss_scale: growth_interval must be a positive int; got {growth_interval!r}")

    def init(params: PyTree) -> DynamicLossScaleState:
        xp = backend.namespace(params)
        return DynamicLossScaleState(
            optimizer.init(params), xp.asarray(init_scale, np.float32), zeros_count(xp), zeros_count(xp), xp.asarray(True)
        )

    def update(grads: PyTree, state: DynamicLossScaleState, params: PyTree = None):
        xp = backend.namespace(grads, state.scale)
        grads = backend.tree_map(lambda g: (g / state.scale).astype(g.dtype), grads)
        ok = all_finite(grads)
        good = xp.where(ok, state.good_steps + 1, 0)
        grow = good >= growth_interval
        scale = xp.where(ok, xp.where(grow, xp.minimum(state.scale * factor, max_scale), state.scale),
                         xp.maximum(state.scale / factor, min_scale))
        good = xp.where(grow, 0, good)
        skipped = xp.where(ok, state.skipped, safe_increment(state.skipped))

        def new_state(inner):
            return DynamicLossScaleState(
                inner,
                xp.asarray(scale, np.float32),
                xp.asarray(good, np.int32),
                xp.asarray(skipped, np.int32),
                xp.asarray(ok),
            )

        if xp is np:  # concrete: a Python branch, and no inf arithmetic in the optimizer
            if bool(ok):
                updates, inner = optimizer.update(grads, state.inner_state, params)
            else:
                updates, inner = backend.tree_map(np.zeros_like, grads), state.inner_state
            return updates, new_state(inner)
        new_updates, new_inner = optimizer.update(grads, state.inner_state, params)
        updates = backend.tree_map(lambda u: xp.where(ok, u, xp.zeros_like(u)), new_updates)
        inner = backend.tree_map(lambda new, old: xp.where(ok, new, old), new_inner, state.inner_state)
        return updates, new_state(inner)

    settings = dict(init_scale=init_scale, growth_interval=growth_interval, factor=factor)
    built = call("dynamic_loss_scale", optimizer=optimizer, **settings, min_scale=min_scale, max_scale=max_scale)
    return LossScaler(init, update, "dynamic_loss_scale", built)
