"""The train state: everything a training run needs to continue, as one pytree.

``TrainState(params, state, opt_state, step, key)`` is a NamedTuple of
arrays (and a key), so it passes through ``jax.jit`` (and is donated there),
is checkpointed by :mod:`fnn.checkpoint` and is compared leaf by leaf.
Every step derives its randomness from ``key`` and ``step`` alone, so a run
restarted from a saved state repeats the uninterrupted run exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fnn import backend
from fnn.core import Layer

__all__ = ["TrainState", "init_state"]

PyTree = Any


class TrainState(NamedTuple):
    """The pytree a training step maps to its successor.

    Attributes:
        params: the model's trained parameters.
        state: the model's non-trained variables (batch-norm running statistics).
        opt_state: the optimizer's state.
        step: int32 0-d array, the number of updates applied so far.
        key: the source of the training randomness: step ``t`` draws from
            ``fold_in(key, t)`` (dropout); :func:`~fnn.train.fit` shuffles each
            epoch with it and advances it at the end of the epoch (a new key
            in the new state), so repeated fit calls continue the shuffle
            sequence. A JAX key, or a NumPy Generator on NumPy (never drawn
            from in place: fnn treats it as a value).
    """

    params: PyTree
    state: PyTree
    opt_state: PyTree
    step: Any
    key: Any


def init_state(model: Layer, optimizer: Any, key: Any, input_shape: tuple, *, dtype: Any = np.float32) -> TrainState:
    """A fresh :class:`TrainState`: the model initialised from one half of
    ``split(key)``, the other half kept for training.

    ``input_shape`` includes the batch axis (``None`` is fine). The key's kind
    decides the backend: ``fnn.key(0)`` trains on JAX, ``fnn.key(0,
    backend="numpy")`` on NumPy.

    >>> import fnn
    >>> model = fnn.layers.serial(fnn.layers.dense(3))
    >>> ts = fnn.train.init_state(model, fnn.optim.sgd(0.1), fnn.key(0, backend="numpy"), (None, 2))
    >>> sorted(ts.params["dense"]), int(ts.step)
    (['b', 'w'], 0)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"init_state: model must be an fnn Layer; got {type(model).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"init_state: optimizer must have init and update (e.g. fnn.optim.adam(1e-3)); got {optimizer!r}"
        )
    init_key, train_key = backend.split(key)
    params, state = model.init(init_key, input_shape, dtype=dtype)
    xp = backend.namespace_of_key(key)
    return TrainState(params, state, optimizer.init(params), xp.zeros((), np.int32), train_key)
