"""rrelu, the randomized leaky ReLU: random slopes in train mode drawn from the
layer's key, the mean slope in eval mode, and its hand-written backward rule
on both backends."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from tests.helpers import away_from_kinks, check_gradients


def _x(shape=(64, 32), seed=0):
    return away_from_kinks(np.random.default_rng(seed).standard_normal(shape))


def test_eval_mode_is_a_leaky_relu_with_the_mean_slope(backend_name):
    x = _x((4, 5))
    layer = L.rrelu(0.1, 0.3)
    xb = jnp.asarray(x) if backend_name == "jax" else x
    y, _ = layer.apply({}, {}, xb)
    np.testing.assert_allclose(np.asarray(y), np.where(x > 0, x, 0.2 * x), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(layer(xb)), np.asarray(y))


@pytest.mark.parametrize("key_of", [lambda s: np.random.default_rng(s), jax.random.key], ids=["numpy", "jax"])
def test_train_mode_draws_a_slope_per_element_in_range_from_the_key(key_of):
    x = -np.abs(_x())  # negative: y / x is the slope
    as_input = jnp.asarray if key_of is jax.random.key else np.asarray
    layer = L.rrelu(0.1, 0.3)
    y1 = np.asarray(layer.apply({}, {}, as_input(x), key=key_of(0), train=True)[0])
    y2 = np.asarray(layer.apply({}, {}, as_input(x), key=key_of(0), train=True)[0])
    y3 = np.asarray(layer.apply({}, {}, as_input(x), key=key_of(1), train=True)[0])
    slope = y1 / x
    assert slope.min() >= 0.1 and slope.max() <= 0.3
    assert abs(slope.mean() - 0.2) < 0.01 and abs(slope.std() - 0.2 / np.sqrt(12)) < 0.01  # Uniform[0.1, 0.3]
    np.testing.assert_array_equal(y1, y2)  # the same key, the same slopes
    assert np.mean(y1 != y3) > 0.99  # another key, other slopes
    positive = np.abs(x)
    np.testing.assert_array_equal(np.asarray(layer.apply({}, {}, as_input(positive), key=key_of(0), train=True)[0]),
                                  positive)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_backward_matches_autodiff_and_finite_differences_on_both_backends(train):
    key = np.random.default_rng(3) if train else None
    errors = check_gradients(L.rrelu(0.1, 0.3), {}, {}, _x((4, 5)), key=key, train=train)
    assert max(errors.values()) < 1e-9


def test_backward_uses_the_forward_slopes_under_jit_with_a_jax_key():
    layer = L.rrelu(0.05, 0.5)
    x = jnp.asarray(_x((8, 6)))
    key = jax.random.key(4)

    @jax.jit
    def grads(x, dy):
        y, _, res = layer.fwd({}, {}, x, key=key, train=True)
        manual = layer.bwd({}, res, dy)[1]
        auto = jax.grad(lambda x: jnp.sum(layer.apply({}, {}, x, key=key, train=True)[0] * dy))(x)
        return y, manual, auto

    dy = jnp.asarray(np.random.default_rng(1).standard_normal((8, 6)))
    y, manual, auto = grads(x, dy)
    np.testing.assert_allclose(manual, auto, rtol=1e-12)
    slopes = np.asarray(y / x)
    # dx = slope * dy, the slope being 1 where x > 0
    np.testing.assert_allclose(np.asarray(manual), np.asarray(dy) * slopes, rtol=1e-12)


def test_train_mode_without_a_key_says_key():
    with pytest.raises(fnn.LayerError, match="rrelu: train mode needs a random key"):
        L.rrelu().apply({}, {}, _x((2, 3)), train=True)
    # equal bounds: nothing random, no key needed
    y, _ = L.rrelu(0.2, 0.2).apply({}, {}, -np.ones((1, 2)), train=True)
    np.testing.assert_allclose(y, [[-0.2, -0.2]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lower": 0.4, "upper": 0.2}, "expected 0 <= lower <= upper; got lower=0.4, upper=0.2"),
        ({"lower": -0.1}, "expected 0 <= lower <= upper; got lower=-0.1"),
        ({"upper": float("nan")}, "upper must be a finite number; got nan"),
        ({"lower": "0.1"}, "lower must be a finite number; got '0.1'"),
    ],
)
def test_bad_bounds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        L.rrelu(**kwargs)


def test_rrelu_is_a_value_and_trains_a_model():
    assert L.rrelu(0.1, 0.3) == L.rrelu(0.1, 0.3) != L.rrelu(0.1, 0.2)
    assert repr(L.rrelu()) == "rrelu(lower=0.125, upper=0.3333333333333333)"
    model = L.serial(L.dense(3), L.rrelu(), L.dense(2))
    params, state = model.init(fnn.key(0, backend="numpy"), (None, 4))
    loss = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy)
    (value, _), grads = loss(params, state, np.ones((5, 4)), np.zeros(5, np.int64), key=fnn.key(1, backend="numpy"))
    assert np.isfinite(value) and set(grads) == {"dense", "rrelu", "dense_1"}
