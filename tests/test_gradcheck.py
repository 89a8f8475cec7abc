"""fnn.gradcheck itself: finite differences on known functions, the error
metric with its floor, sampling, reports and assertion messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import gradcheck as gc


def test_numerical_grad_of_a_known_function():
    params = {"a": np.array([0.3, -1.2]), "b": np.array([[2.0]])}

    def f(p):
        return np.sum(np.sin(p["a"])) * p["b"][0, 0] ** 2

    numeric = gc.numerical_grad(f, params)
    np.testing.assert_allclose(numeric["a"], np.cos(params["a"]) * 4.0, rtol=1e-9)
    np.testing.assert_allclose(numeric["b"], [[np.sum(np.sin(params["a"])) * 4.0]], rtol=1e-9)


def test_numerical_grad_on_jax_arrays_is_float64():
    numeric = gc.numerical_grad(lambda p: jnp.sum(p**3), jnp.array([1.0, 2.0], jnp.float32))
    np.testing.assert_allclose(numeric, [3.0, 12.0], rtol=1e-9)


def test_sampling_large_leaves_leaves_nan_that_compare_ignores():
    x = np.linspace(-1, 1, 50)
    numeric = gc.numerical_grad(lambda v: np.sum(v**2), x, max_entries=7)
    assert np.sum(~np.isnan(numeric)) == 7
    assert gc.relative_error(2 * x, numeric) < 1e-9
    assert gc.relative_error(3 * x, numeric) > 0.3


def test_error_metric_and_floor():
    assert gc.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(0.2 / 2.2)
    # a truly zero gradient against round-off: the floor keeps the error small
    assert gc.relative_error(np.zeros(3), np.full(3, 1e-17)) == pytest.approx(1e-9)
    assert gc.relative_error(np.zeros(3), np.full(3, 1e-17), floor=1e-30) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"shapes differ: \(2,\) vs \(3,\)"):
        gc.relative_error(np.zeros(2), np.zeros(3))


def test_compare_and_assert_close_name_the_leaves():
    a = {"dense": {"w": np.ones((2, 2)), "b": np.ones(2)}}
    b = {"dense": {"w": np.ones((2, 2)), "b": np.array([1.0, 1.5])}}
    errors = gc.compare(a, b)
    assert errors["dense/w"] == 0.0 and errors["dense/b"] == pytest.approx(1 / 3)
    with pytest.raises(AssertionError, match=r"manual vs numeric: relative error above 1e-07 in\n  dense/b: 3.333e-01"):
        gc.assert_close(a, b, names=("manual", "numeric"))
    with pytest.raises(ValueError, match="trees differ"):
        gc.compare(a, {"dense": {"w": np.ones((2, 2))}})


def test_check_layer_catches_a_wrong_rule():
    import dataclasses

    layer = fnn.layers.dense(3)
    params, state = layer.init(np.random.default_rng(0), (None, 2), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((4, 2))
    good = gc.check_layer(layer, params, state, x)
    assert good.max_error("manual", "numeric") < 1e-8 and good.max_error("manual", "autodiff") < 1e-12
    assert "params/w" in str(good) and "manual vs numeric" in str(good)

    def wrong_bwd(p, res, dy):
        grads, dx = layer.bwd(p, res, dy)
        return {"w": grads["w"], "b": grads["b"] * 1.001}, dx

    bad = gc.check_layer(layer.replace(bwd=wrong_bwd), params, state, x)
    assert bad.errors("manual", "numeric")["params/b"] > 1e-4
    assert bad.errors("manual", "autodiff")["params/w"] < 1e-12


def test_directional_check():
    x = np.random.default_rng(0).standard_normal(30)
    f = lambda v: np.sum(np.tanh(v) ** 2)  # noqa: E731
    grad = 2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    assert gc.directional_check(f, x, grad) < 1e-8
    assert gc.directional_check(f, x, 1.1 * grad) > 1e-3


def test_float64_required_on_jax():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="jax_enable_x64"):
            gc.numerical_grad(lambda p: jnp.sum(p), jnp.ones(2))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_check_layer_on_numpy_arrays_refuses_a_float32_autodiff_comparison():
    layer = fnn.layers.tanh
    x = np.random.default_rng(0).standard_normal((3, 4))
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match=r"comparison with jax.grad .* needs JAX.s float64: call jax.config.update\(.jax_enable_x64"):
            gc.check_layer(layer, {}, {}, x)
        numeric_only = gc.check_layer(layer, {}, {}, x, methods=("numeric",))  # NumPy alone: float64 throughout
        assert numeric_only.max_error("manual", "numeric") < 1e-8
    finally:
        jax.config.update("jax_enable_x64", True)
