"""fnn: a functional neural-network library for JAX, with hand-written backward
rules proven against autodiff, that also runs on NumPy alone.

A model is a :class:`Layer`: ``init(key, input_shape) -> (params, state)`` and
``apply(params, state, x, *, key, train) -> (y, state)``, plus ``fwd``/``bwd``
for manual backpropagation.
"""

from fnn import (
    backend,
    checkpoint,
    data,
    functional,
    gradcheck,
    initializers,
    layers,
    losses,
    metrics,
    models,
    optim,
    parallel,
    precision,
    train,
)
from fnn.backend import fold_in, key, split
from fnn.core import Layer, LayerError, layer_factory, summary
from fnn.grad import manual_vjp, value_and_grad

__version__ = "0.1.0"

__all__ = [
    "Layer",
    "LayerError",
    "backend",
    "checkpoint",
    "data",
    "fold_in",
    "functional",
    "gradcheck",
    "initializers",
    "key",
    "layer_factory",
    "layers",
    "losses",
    "manual_vjp",
    "metrics",
    "models",
    "optim",
    "parallel",
    "precision",
    "split",
    "summary",
    "train",
    "value_and_grad",
]
