"""Helpers shared by the conv, pooling, normalisation, dropout and model tests
(this module holds no tests of its own).

:func:`check_gradients` (from :mod:`tests.helpers`) is the one gradient
check they all use; :func:`jitted` compiles a layer's rules for checks that
call them directly.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

import fnn
from tests.helpers import TOL, check_gradients, on_backend  # noqa: F401  (re-exported for the conv-family tests)


def is_jax(*trees) -> bool:
    return any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(trees))


def jitted(layer: fnn.Layer) -> fnn.Layer:
    """The same layer whose fwd and bwd are jax.jit-compiled when given JAX
    arrays (NumPy arrays still run the NumPy code), so that a check on the JAX
    backend compiles once instead of op by op, as in real (jitted) use."""
    def fwd_plain(params, state, x, key, train):
        return layer.fwd(params, state, x, key=key, train=train)

    def bwd_plain(params, residuals, dy):
        return layer.bwd(params, residuals, dy)

    fwd_jit, bwd_jit = jax.jit(fwd_plain, static_argnums=4), jax.jit(bwd_plain)

    def fwd(params, state, x, key, train):
        return (fwd_jit if is_jax(params, state, x) else fwd_plain)(params, state, x, key, train)

    def bwd(params, residuals, dy):
        return (bwd_jit if is_jax(params, residuals, dy) else bwd_plain)(params, residuals, dy)

    return layer.replace(fwd=fwd, bwd=bwd)
