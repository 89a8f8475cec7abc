"""dropout: inverted dropout in train mode (mean kept, ``rate`` dropped,
survivors scaled by 1 / (1 - rate)), the identity in eval mode, a clear error
without a key, and a backward that uses the forward's mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from tests.conv_support import check_gradients, on_backend


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.8])
def test_statistics_mean_kept_rate_dropped(rate, key, backend_name):
    x = on_backend(np.ones((100, 1000), np.float32), backend_name)
    y, _ = L.dropout(rate).apply({}, {}, x, key=key, train=True)
    y = np.asarray(y)
    assert y.dtype == np.float32
    dropped = np.mean(y == 0)
    assert abs(dropped - rate) < 0.01, dropped  # 1e5 units: std of the fraction < 0.002
    assert abs(y.mean() - 1.0) < 0.03, y.mean()  # inverted dropout keeps the expectation
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - rate), rtol=1e-6)


def test_eval_mode_is_the_identity_and_needs_no_key(backend_name):
    x = on_backend(np.random.default_rng(0).standard_normal((3, 4)), backend_name)
    layer = L.dropout(0.5)
    y, state = layer.apply({}, {}, x)
    assert y is x and state == {}
    _, dx = layer.bwd({}, layer.fwd({}, {}, x)[2], x)
    assert dx is x


def test_train_mode_without_key_names_the_key():
    model = L.serial(L.dense(3), L.dropout(0.2))
    params, state = model.init(np.random.default_rng(0), (2, 4))
    with pytest.raises(fnn.LayerError, match=r"^dropout: train mode needs a random key") as err:
        model.apply(params, state, np.ones((2, 4), np.float32), train=True)
    assert "key=" in str(err.value)


def test_rate_zero_is_the_identity_even_in_train_mode():
    x = np.ones((2, 3))
    assert L.dropout(0.0).apply({}, {}, x, train=True)[0] is x


def test_the_same_key_gives_the_same_mask_and_a_generator_is_not_advanced(backend_name):
    layer = L.dropout(0.5)
    x = on_backend(np.ones((4, 50)), backend_name)
    key = fnn.key(3, backend=backend_name)
    before = key.bit_generator.state if backend_name == "numpy" else None
    y1, _ = layer.apply({}, {}, x, key=key, train=True)
    y2, _ = layer.apply({}, {}, x, key=key, train=True)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    if backend_name == "numpy":
        assert key.bit_generator.state == before
    y3, _ = layer.apply({}, {}, x, key=fnn.fold_in(key, 1), train=True)
    assert not np.array_equal(np.asarray(y1), np.asarray(y3))


def test_combinators_give_each_dropout_its_own_mask():
    model = L.serial(L.dropout(0.5), L.dropout(0.5, name="second"))
    x = np.ones((1, 200))
    _, _, residuals = model.fwd({"dropout": {}, "second": {}}, {"dropout": {}, "second": {}}, x, key=fnn.key(0, "numpy"), train=True)
    assert not np.array_equal(residuals["dropout"], residuals["second"])


@pytest.mark.parametrize("key_backend", ["numpy", "jax"])
def test_gradients_use_the_forward_mask(key_backend):
    key = fnn.key(7, backend=key_backend)
    x = np.random.default_rng(0).standard_normal((4, 6))
    check_gradients(L.dropout(0.4), {}, {}, x, key=key, train=True)
    y, _, mask = L.dropout(0.4).fwd({}, {}, x, key=key, train=True)
    _, dx = L.dropout(0.4).bwd({}, mask, np.ones_like(x))
    np.testing.assert_array_equal(np.asarray(dx) == 0, np.asarray(y) == 0)  # dropped units get no gradient


def test_under_jit_with_a_traced_key():
    layer = L.dropout(0.25)
    f = jax.jit(lambda x, k: layer.apply({}, {}, x, key=k, train=True)[0])
    x = jnp.ones((8, 8))
    a, b = f(x, jax.random.key(0)), f(x, jax.random.key(1))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(layer.apply({}, {}, x, key=jax.random.key(0), train=True)[0]))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_rate_outside_the_unit_interval(rate):
    with pytest.raises(ValueError, match=r"dropout: rate \(the probability of dropping a unit\) must be in \[0, 1\)"):
        L.dropout(rate)
