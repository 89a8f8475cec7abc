"""Helpers shared by the conv, pooling, normalisation, dropout and model tests
(this module holds no tests of its own).

:func:`check_gradients` is the one gradient check they all use: the layer's
hand-written backward on NumPy against ``jax.grad`` and central finite
differences (``fnn.gradcheck.check_layer``, float64), then the same rule on
the JAX backend, jit-compiled, against that same ``jax.grad`` -- together with
the forward output and new state of both backends. One ``jax.grad`` and one
compilation per check keep the suite fast on a small CPU.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

import fnn
from tests.helpers import TOL, on_backend  # noqa: F401  (re-exported for the conv-family tests)


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


def check_gradients(layer, params, state, x, *, key=None, train=False, max_entries=None, seed=0, tol=TOL):
    """The layer's manual backward against ``jax.grad`` and finite differences.

    On NumPy float64 arrays, ``fnn.gradcheck.check_layer`` computes the manual
    gradients and the central differences of ``sum(y * cot)``; one jit-compiled
    function then computes ``jax.grad`` of the same scalar and the manual rule
    on the JAX backend. Asserts that the forward output and new state agree on
    both backends and that every gradient agrees within ``tol``.

    Returns ``{"autodiff": e1, "numeric": e2, "jax_manual": e3}``: the worst
    relative errors of the NumPy manual gradients against ``jax.grad`` and the
    differences, and of the JAX manual gradients against ``jax.grad``.
    """
    params, state, x = (fnn.backend.tree_cast(on_backend(t, "numpy"), np.float64) for t in (params, state, x))
    y, new_state, _ = layer.fwd(params, state, x, key=key, train=train)
    cot = np.random.default_rng(seed + 1).standard_normal(np.shape(y))
    report = fnn.gradcheck.check_layer(
        layer, params, state, x, key=key, train=train, cotangent=cot, max_entries=max_entries, seed=seed, methods=("numeric",)
    )

    @jax.jit
    def on_jax(params, state, x, cot):
        y, new_state, residuals = layer.fwd(params, state, x, key=key, train=train)
        dparams, dx = layer.bwd(params, residuals, cot)

        def scalar(inputs):
            out, _ = layer.apply(inputs["params"], state, inputs["x"], key=key, train=train)
            return jnp.sum(out * cot)

        autodiff = jax.grad(scalar)({"params": params, "x": x})
        return y, new_state, {"params": dparams, "x": dx}, autodiff

    y_j, state_j, manual_j, autodiff = fnn.backend.to_numpy(on_jax(*on_backend((params, state, x, cot), "jax")))
    for a, b in zip(jax.tree.leaves((y, new_state)), jax.tree.leaves((y_j, state_j))):
        np.testing.assert_allclose(b, np.asarray(a), rtol=1e-11, atol=1e-11)
    report.grads["autodiff"] = autodiff
    errors = {
        "autodiff": report.max_error("manual", "autodiff"),
        "numeric": report.max_error("manual", "numeric"),
        "jax_manual": max(fnn.gradcheck.compare(manual_j, autodiff).values(), default=0.0),
    }
    assert all(e < tol for e in errors.values()), f"{layer.name}: {errors}\n{report}"
    return errors
