"""The weight-gradient kernel ``x.T @ dy``: its transposed-first form equals the plain one,
the plan picks it for narrow outputs on a CPU only, and a dense layer's gradient goes through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn.kernels import plan, weight_grad
from fnn.kernels.weight_grad import weight_gradient


@pytest.mark.parametrize("shape", [(7, 130, 10), (5, 3, 4)])
def test_the_transposed_form_is_the_plain_product(shape):
    rows, inputs, outputs = shape
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((rows, inputs)), rng.standard_normal((rows, outputs))
    expected = x.T @ dy
    for form in ("xla", "transposed", "auto"):  # float64 (tests/conftest.py)
        got = jax.jit(lambda a, b, form=form: weight_gradient(a, b, implementation=form))(jnp.asarray(x), jnp.asarray(dy))
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(weight_gradient(x, dy), expected)  # NumPy: the expression itself


def test_the_plan_takes_the_transposed_form_for_narrow_outputs_on_a_cpu_only():
    assert plan.weight_gradient_form(128, 512, 10, "cpu") == "transposed"
    assert plan.weight_gradient_form(64, 128, 16, "cpu") == "transposed"
    assert plan.weight_gradient_form(128, 512, 17, "cpu") == "xla"  # wider outputs
    assert plan.weight_gradient_form(128, 127, 10, "cpu") == "xla"  # fewer inputs
    assert plan.weight_gradient_form(128, 512, 10, "gpu") == "xla"


def test_a_dense_layers_gradient_takes_the_planned_form(monkeypatch):
    taken = []
    real = weight_grad.plan.weight_gradient_form
    monkeypatch.setattr(weight_grad.plan, "weight_gradient_form", lambda *a: taken.append(a) or real(*a))
    layer = fnn.layers.dense(3)
    x = jnp.ones((4, 130), jnp.float32)
    params, _ = layer.init(jax.random.key(0), x.shape)
    _, _, res = layer.fwd(params, {}, x)
    grads, _ = layer.bwd(params, res, jnp.ones((4, 3), jnp.float32))
    assert taken == [(4, 130, 3, jax.default_backend())]
    np.testing.assert_allclose(np.asarray(grads["w"]), np.full((130, 3), 4.0))


def test_bad_arguments_name_the_kernel():
    with pytest.raises(ValueError, match=r"weight_gradient: implementation must be one of \('auto', 'xla', 'transposed'\); got 'cuda'"):
        weight_gradient(np.ones((2, 3)), np.ones((2, 1)), implementation="cuda")
    with pytest.raises(ValueError, match=r"the same rows; got shapes \(2, 3\) and \(3, 1\)"):
        weight_gradient(np.ones((2, 3)), np.ones((3, 1)))
    with pytest.raises(TypeError, match=r"weight_gradient\(implementation='transposed'\) needs JAX arrays"):
        weight_gradient(np.ones((2, 3)), np.ones((2, 1)), implementation="transposed")
