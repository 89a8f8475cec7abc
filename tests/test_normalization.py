"""batch_norm and layer_norm: the formulas, batch norm's running statistics
and eval mode, and the hand-written backward (the full batch-statistics
formula) against jax.grad and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from tests.conv_support import check_gradients, on_backend


def normalize_reference(x, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased
    return (x - mean) / np.sqrt(var + eps), mean, var


def random_params(rng, c):
    return {"scale": rng.uniform(0.5, 1.5, c), "bias": rng.standard_normal(c)}


def test_batch_norm_init(backend_name, key):
    params, state = L.batch_norm().init(key, (None, 5, 5, 3))
    assert set(params) == {"scale", "bias"} and set(state) == {"mean", "var"}
    for leaf, value in [(params["scale"], 1), (params["bias"], 0), (state["mean"], 0), (state["var"], 1)]:
        assert leaf.shape == (3,) and leaf.dtype == np.float32
        assert isinstance(leaf, jax.Array) == (backend_name == "jax")
        np.testing.assert_array_equal(np.asarray(leaf), value)
    # statistics are kept in at least float32
    _, half_state = L.batch_norm().init(np.random.default_rng(0), (None, 3), dtype=np.float16)
    assert half_state["mean"].dtype == half_state["var"].dtype == np.float32


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 2)])
def test_batch_norm_train_forward_and_running_statistics(shape, backend_name, rng):
    layer = L.batch_norm(momentum=0.9, eps=1e-5)
    x = rng.standard_normal(shape) * 3 + 2
    params = random_params(rng, shape[-1])
    state = {"mean": rng.standard_normal(shape[-1]), "var": rng.uniform(0.5, 2, shape[-1])}
    y, new_state = layer.apply(*on_backend((params, state, x), backend_name), train=True)
    axes = tuple(range(len(shape) - 1))  # every axis but the last: per channel, over batch and pixels
    x_hat, mean, var = normalize_reference(x, axes, 1e-5)
    np.testing.assert_allclose(np.asarray(y), params["scale"] * x_hat + params["bias"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(new_state["mean"]), 0.9 * state["mean"] + 0.1 * mean.ravel(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(new_state["var"]), 0.9 * state["var"] + 0.1 * var.ravel(), rtol=1e-12)


def test_batch_norm_running_statistics_converge_to_the_data(rng):
    layer = L.batch_norm()
    params, state = layer.init(np.random.default_rng(0), (None, 2))
    data = (rng.standard_normal((4000, 2)) * [2.0, 0.5] + [3.0, -1.0]).astype(np.float32)
    for batch in np.split(data, 100):
        _, state = layer.apply(params, state, batch, train=True)
    np.testing.assert_allclose(state["mean"], [3.0, -1.0], atol=0.15)
    np.testing.assert_allclose(state["var"], [4.0, 0.25], rtol=0.15)  # biased batch variance of 40 examples


def test_batch_norm_eval_uses_running_statistics_and_keeps_state(backend_name, rng):
    layer = L.batch_norm(eps=1e-3)
    x = rng.standard_normal((5, 4))
    params = random_params(rng, 4)
    state = {"mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2, 4)}
    p, s, xb = on_backend((params, state, x), backend_name)
    y, new_state = layer.apply(p, s, xb, train=False)
    expected = params["scale"] * (x - state["mean"]) / np.sqrt(state["var"] + 1e-3) + params["bias"]
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12)
    assert new_state is s
    # one example at a time gives the same answer: no batch statistics in eval mode
    np.testing.assert_allclose(np.asarray(layer.apply(p, s, xb[:1])[0]), expected[:1], rtol=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (3, 3, 2, 2)])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_gradients(shape, train, rng):
    x = rng.standard_normal(shape) * 2 + 1
    state = {"mean": rng.standard_normal(shape[-1]), "var": rng.uniform(0.5, 2, shape[-1])}
    check_gradients(L.batch_norm(), random_params(rng, shape[-1]), state, x, train=train)


def test_batch_norm_constant_channel_is_finite(rng):
    x = rng.standard_normal((4, 3))
    x[:, 1] = 2.5  # zero variance: normalised to 0, gradient through the statistics 0
    check_gradients(L.batch_norm(), random_params(rng, 3), {"mean": np.zeros(3), "var": np.ones(3)}, x, train=True)


def test_batch_norm_statistics_in_float32_for_half_inputs(backend_name, rng):
    layer = L.batch_norm()
    params, state = layer.init(np.random.default_rng(0), (None, 3), dtype=np.float16)
    x = (rng.standard_normal((64, 3)) * 0.1 + 300).astype(np.float16)  # float16 squares of 300 would overflow
    y, new_state = layer.apply(*on_backend((params, state, x), backend_name), train=True)
    assert y.dtype == np.float16 and new_state["var"].dtype == np.float32
    x32 = x.astype(np.float32)
    x_hat, mean, var = normalize_reference(x32, (0,), 1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float32), x_hat, atol=1e-2)
    np.testing.assert_allclose(np.asarray(new_state["var"]), 0.9 + 0.1 * var.ravel(), rtol=1e-3)
    assert np.all(np.isfinite(np.asarray(y, np.float32)))


def test_batch_norm_under_jit_in_a_train_step():
    model = L.serial(L.dense(3), L.batch_norm(), L.relu, L.dense(2))
    params, state = model.init(np.random.default_rng(0), (8, 4), dtype=np.float64)
    params, state = on_backend((params, state), "jax")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 4)))
    y = jnp.array([0, 1, 1, 0, 1, 0, 0, 1])
    step = {m: jax.jit(fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, m)) for m in ("manual", "autodiff")}
    (v1, s1), g1 = step["manual"](params, state, x, y)
    (v2, s2), g2 = step["autodiff"](params, state, x, y)
    fnn.gradcheck.assert_close(g1, g2)  # dense/b is truly 0 before batch norm: the floor absorbs round-off
    fnn.gradcheck.assert_close(s1, s2, tol=1e-12)
    assert not np.allclose(s1["batch_norm"]["mean"], 0.0)  # train mode updated the running mean


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4)])
def test_layer_norm_forward_and_gradients(shape, backend_name, rng):
    layer = L.layer_norm(eps=1e-5)
    x = rng.standard_normal(shape) * 2 + 1
    params = random_params(rng, shape[-1])
    for train in (False, True):  # the same in both modes; no state
        y, state = layer.apply(*on_backend((params, {}, x), backend_name), train=train)
        x_hat, _, _ = normalize_reference(x, -1, 1e-5)
        np.testing.assert_allclose(np.asarray(y), params["scale"] * x_hat + params["bias"], rtol=1e-12, atol=1e-12)
        assert state == {}
    if backend_name == "numpy":
        check_gradients(layer, params, {}, x)


def test_layer_norm_init(key):
    params, state = L.layer_norm().init(key, (None, 7, 5))
    assert params["scale"].shape == params["bias"].shape == (5,) and state == {}


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("make", [L.batch_norm, L.layer_norm])
def test_bad_input(make, rng):
    layer = make()
    name = layer.name
    with pytest.raises(fnn.LayerError, match=rf"^{name}: expected an input of rank >= 2 .* got shape \(5,\)"):
        layer.init(rng, (5,))
    params, state = layer.init(rng, (None, 3))
    with pytest.raises(fnn.LayerError, match=rf"^{name}: params\['scale'\] has shape \(3,\); expected \(4,\)"):
        layer.apply(params, state, np.ones((2, 4)))
    with pytest.raises(ValueError, match=f"{name}: eps must be a positive"):
        make(eps=0.0)


def test_batch_norm_bad_arguments_and_state(rng):
    with pytest.raises(ValueError, match="batch_norm: momentum must be in"):
        L.batch_norm(momentum=1.5)
    params, state = L.batch_norm().init(rng, (None, 3))
    with pytest.raises(fnn.LayerError, match=r"batch_norm: state does not match the model: missing \['var'\]"):
        L.batch_norm().apply(params, {"mean": state["mean"]}, np.ones((2, 3)), train=True)
