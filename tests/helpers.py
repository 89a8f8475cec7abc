"""Helpers shared by the tests: inputs away from kinks, float64 params, and one
gradient check that compares manual, autodiff and finite differences."""

from __future__ import annotations

import numpy as np

import fnn
from fnn import backend

TOL = 1e-7  # relative error bound for every gradient check (float64)


def away_from_kinks(x: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Push entries at least ``margin`` away from 0 (the kink of relu & co)."""
    return np.where(x >= 0, x + margin, x - margin)


def on_backend(tree, backend_name: str):
    """The same tree as NumPy or JAX arrays."""
    if backend_name == "jax":
        return backend.tree_map(backend.jnp.asarray, tree)
    return backend.to_numpy(tree)


def init64(layer, backend_name: str, input_shape, seed: int = 0):
    """``(params, state)`` initialised on the backend, cast to float64."""
    params, state = layer.init(fnn.key(seed, backend=backend_name), input_shape)
    return backend.tree_cast(params, np.float64), backend.tree_cast(state, np.float64)


def assert_gradients(layer, params, state, x, *, key=None, train=False, max_entries=None):
    """Manual bwd vs jax.grad vs finite differences, all below TOL; returns the two worst errors."""
    report = fnn.gradcheck.check_layer(layer, params, state, x, key=key, train=train, max_entries=max_entries)
    auto = report.max_error("manual", "autodiff")
    num = report.max_error("manual", "numeric")
    assert auto < TOL and num < TOL, f"{layer.name}: gradient mismatch\n{report}"
    return auto, num
