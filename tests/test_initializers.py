"""Initialisers: fans, the variance each one promises, backends and dtypes."""

import jax
import math

import numpy as np
import pytest

import fnn
from fnn import initializers as I


@pytest.mark.parametrize(
    "shape, fans",
    [((5, 7), (5, 7)), ((3, 3, 4, 8), (36, 72)), ((6,), (6, 6)), ((2, 5, 4), (10, 8)), ((), (1, 1))],
)
def test_compute_fans(shape, fans):
    assert I.compute_fans(shape) == fans


# (initializer, shape, expected std)
CASES = [
    (I.normal(0.01), (400, 300), 0.01),
    (I.lecun_normal(), (400, 300), 1 / math.sqrt(400)),
    (I.lecun_uniform(), (400, 300), 1 / math.sqrt(400)),
    (I.glorot_normal(), (400, 300), math.sqrt(2 / 700)),
    (I.xavier_uniform(), (400, 300), math.sqrt(2 / 700)),
    (I.he_normal(), (400, 300), math.sqrt(2 / 400)),
    (I.kaiming_uniform(), (3, 3, 16, 32), math.sqrt(2 / 144)),
    (I.uniform(-0.5, 0.5), (200, 200), 1 / math.sqrt(12)),
]


@pytest.mark.parametrize("init, shape, std", CASES)
def test_standard_deviation(init, shape, std, backend_name):
    w = init(fnn.key(0, backend=backend_name), shape, np.float32)
    assert w.shape == shape and w.dtype == np.float32
    assert float(np.std(np.asarray(w))) == pytest.approx(std, rel=0.03)
    assert abs(float(np.mean(np.asarray(w)))) < 0.05 * std
    assert isinstance(w, jax.Array) == (backend_name == "jax")


def test_uniform_bounds_and_constants():
    w = I.he_uniform()(np.random.default_rng(0), (50, 40))
    assert np.abs(w).max() <= math.sqrt(6 / 50)
    np.testing.assert_array_equal(I.zeros(np.random.default_rng(0), (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.ones(np.random.default_rng(0), (2,)), np.ones(2))
    np.testing.assert_array_equal(I.constant(0.5)(fnn.key(0), (2,), np.float64), [0.5, 0.5])


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 3, 2, 5)])
def test_orthogonal(shape, backend_name):
    w = np.asarray(I.orthogonal(2.0)(fnn.key(1, backend=backend_name), shape, np.float64))
    m = w.reshape(-1, shape[-1])
    small = min(m.shape)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be 'fan_in', 'fan_out' or 'fan_avg'; got 'fan'"):
        I.variance_scaling(1.0, "fan", "normal")
    with pytest.raises(ValueError, match="stddev must be >= 0; got -1"):
        I.normal(-1)
    with pytest.raises(ValueError, match=r"shape must be non-negative ints; got \(2, -3\)"):
        I.zeros(np.random.default_rng(0), (2, -3))
    with pytest.raises(ValueError, match=r"orthogonal: needs a kernel of rank >= 2"):
        I.orthogonal()(np.random.default_rng(0), (4,))


def test_all_zero_start_keeps_hidden_units_identical():
    """The symmetry problem: with all-zero weights every hidden unit gets the same gradient."""
    model = fnn.layers.serial(
        fnn.layers.dense(4, w_init=I.zeros), fnn.layers.sigmoid, fnn.layers.dense(2, w_init=I.zeros)
    )
    params, state = model.init(np.random.default_rng(0), (None, 3), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((8, 3))
    y = np.random.default_rng(2).integers(0, 2, 8)
    step = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy)
    for _ in range(20):
        (_, _), g = step(params, state, x, y)
        params = fnn.backend.tree_map(lambda p, d: p - 0.5 * d, params, g)
    w = params["dense"]["w"]
    np.testing.assert_allclose(w, np.repeat(w[:, :1], 4, axis=1), atol=1e-12)  # all columns equal
