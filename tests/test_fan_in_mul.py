"""fan_in_mul, the multiply node: the elementwise product of a tuple of inputs,
whose backward rule hands each input the cotangent times the other inputs."""

import numpy as np
import pytest

import fnn
from fnn import layers as L
from tests.helpers import check_gradients, init64


def _inputs(n, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape) for _ in range(n))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_forward_is_the_product_and_backward_the_product_of_the_others(n):
    xs = _inputs(n)
    y, _, res = L.fan_in_mul.fwd({}, {}, xs)
    np.testing.assert_allclose(y, np.prod(np.stack(xs), axis=0), rtol=1e-12)
    dy = np.random.default_rng(9).standard_normal(y.shape)
    _, dxs = L.fan_in_mul.bwd({}, res, dy)
    for i in range(n):
        others = [x for j, x in enumerate(xs) if j != i]
        expected = dy * (np.prod(np.stack(others), axis=0) if others else 1.0)
        np.testing.assert_allclose(dxs[i], expected, rtol=1e-12)


def test_a_zero_input_gives_the_others_finite_gradients():
    xs = (np.array([[0.0, 2.0]]), np.array([[3.0, 0.0]]), np.array([[5.0, 7.0]]))
    _, dxs = L.fan_in_mul.bwd({}, L.fan_in_mul.fwd({}, {}, xs)[2], np.ones((1, 2)))
    np.testing.assert_array_equal(dxs[0], [[15.0, 0.0]])
    np.testing.assert_array_equal(dxs[1], [[0.0, 14.0]])
    np.testing.assert_array_equal(dxs[2], [[0.0, 0.0]])


def test_backward_matches_autodiff_and_finite_differences_on_both_backends():
    errors = check_gradients(L.fan_in_mul, {}, {}, _inputs(3))
    assert max(errors.values()) < 1e-9


def test_a_gated_branch_in_a_model():
    """x -> dense(x) * sigmoid(dense(x)): a gate built from fan_out, parallel and fan_in_mul."""
    model = L.serial(L.fan_out(2), L.parallel(L.dense(3), L.serial(L.dense(3), L.sigmoid)), L.fan_in_mul)
    params, state = init64(model, "numpy", (None, 4))
    x = np.random.default_rng(2).standard_normal((5, 4))
    y, _ = model.apply(params, state, x)
    p = params["parallel"]
    a = x @ p["dense"]["w"] + p["dense"]["b"]
    g = 1.0 / (1.0 + np.exp(-(x @ p["serial"]["dense"]["w"] + p["serial"]["dense"]["b"])))
    np.testing.assert_allclose(y, a * g, rtol=1e-12)
    assert model.out_shape((None, 4)) == (None, 3)
    check_gradients(model, params, state, x)


def test_inputs_of_different_shapes_are_refused():
    with pytest.raises(fnn.LayerError, match=r"fan_in_mul: all inputs must have the same shape \(no broadcasting\)"):
        L.fan_in_mul.out_shape(((None, 3), (None, 4)))
    with pytest.raises(fnn.LayerError, match=r"fan_in_mul: all inputs must have the same shape"):
        L.fan_in_mul.apply({}, {}, (np.ones((2, 3)), np.ones((2, 1))))
    with pytest.raises(fnn.LayerError, match="fan_in_mul: expected a tuple of inputs, got a single array of shape"):
        L.fan_in_mul.apply({}, {}, np.ones((2, 3)))
