"""Shared test configuration: float64 available on JAX, warnings are errors
(pyproject), rank promotion raises, one key fixture per backend."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

BACKENDS = ("numpy", "jax")


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    """Runs a test once on each backend."""
    return request.param


@pytest.fixture
def key(backend_name):
    """A fresh random key on the test's backend."""
    import fnn

    return fnn.key(0, backend=backend_name)


@pytest.fixture
def rng():
    """A NumPy generator for test data (independent of the model keys)."""
    return np.random.default_rng(1234)
