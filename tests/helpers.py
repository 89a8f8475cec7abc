"""Helpers shared by the tests: inputs away from kinks, float64 params, and the
one gradient check that compares manual, autodiff and finite differences on both backends."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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


def check_gradients(layer, params, state, x, *, key=None, train=False, max_entries=None, seed=0, tol=TOL):
    """The one gradient check of the suite: the layer's hand-written backward on
    NumPy against ``jax.grad`` and central finite differences (float64), then the
    same rule on the JAX backend, jit-compiled, against that same ``jax.grad``,
    with the forward output and new state of both backends compared.

    Inputs and outputs may be pytrees (a recurrent layer's ``{"x", "mask", "h0"}``).
    The finite differences run on NumPy; ``jax.grad`` and the JAX rule run in one
    compiled function, so a check costs one compilation, not an op-by-op trace.
    Returns ``{"autodiff": e1, "numeric": e2, "jax_manual": e3}``: the worst
    relative errors of the NumPy manual gradients against ``jax.grad`` and the
    differences, and of the JAX manual gradients against ``jax.grad``.
    """
    import jax
    import jax.numpy as jnp

    # every leaf of params and input in float64 (a boolean mask too), as check_layer does
    params, x = (backend.tree_map(lambda a: np.asarray(a, np.float64), on_backend(t, "numpy")) for t in (params, x))
    state = backend.tree_cast(on_backend(state, "numpy"), np.float64)
    y, new_state, _ = layer.fwd(params, state, x, key=key, train=train)
    rng = np.random.default_rng(seed + 1)
    cot = backend.tree_map(lambda a: rng.standard_normal(np.shape(a)), y)
    report = fnn.gradcheck.check_layer(
        layer, params, state, x, key=key, train=train, cotangent=cot, max_entries=max_entries, seed=seed,
        methods=("numeric",),
    )

    def dot(out, c):
        return sum(jnp.sum(o * ci) for o, ci in zip(jax.tree.leaves(out), jax.tree.leaves(c)))

    @jax.jit
    def on_jax(params, state, x, cot):
        y, new_state, residuals = layer.fwd(params, state, x, key=key, train=train)
        dparams, dx = layer.bwd(params, residuals, cot)
        autodiff = jax.grad(lambda inp: dot(layer.apply(inp["params"], state, inp["x"], key=key, train=train)[0], cot))(
            {"params": params, "x": x}
        )
        return y, new_state, {"params": dparams, "x": dx}, autodiff

    y_j, state_j, manual_j, autodiff = backend.to_numpy(on_jax(*on_backend((params, state, x, cot), "jax")))
    for a, b in zip(jax.tree.leaves((y, new_state)), jax.tree.leaves((y_j, state_j))):
        np.testing.assert_allclose(b, np.asarray(a), rtol=1e-11, atol=1e-11)
    report.grads["autodiff"] = autodiff
    errors = {
        "autodiff": report.max_error("manual", "autodiff"),
        "numeric": report.max_error("manual", "numeric"),
        "jax_manual": max(fnn.gradcheck.compare(manual_j, autodiff).values(), default=0.0),
    }
    assert all(e < tol for e in errors.values()), f"{layer.name}: {errors}\n{report}"
    return GradErrors(errors, report)


class GradErrors(dict):
    """The worst errors of a check (a dict), with its full :class:`fnn.gradcheck.GradCheck` as ``report``."""

    def __init__(self, errors: dict, report):
        super().__init__(errors)
        self.report = report


def assert_gradients(layer, params, state, x, *, key=None, train=False, max_entries=None):
    """:func:`check_gradients` on the arrays' own backend; returns the worst errors
    against ``jax.grad`` and the finite differences."""
    errors = check_gradients(layer, params, state, x, key=key, train=train, max_entries=max_entries)
    return errors["autodiff"], errors["numeric"]


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (the examples are scripts, not a
    package), so a test runs its ``run``/``main`` in-process and shares the jit caches."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
