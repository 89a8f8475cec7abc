"""The NumPy forms of the affine map and relu's select against their plain forms,
and the one plan that chooses between them."""

import jax.numpy as jnp
import numpy as np
import pytest

from fnn.kernels import plan
from fnn.kernels.affine import affine
from fnn.kernels.relu import relu_select


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3)])
def test_affine_numpy_form_equals_the_plain_one_and_leaves_its_inputs_alone(dtype, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal((3, 6)).astype(dtype), rng.standard_normal(6).astype(dtype)
    before = [a.copy() for a in (x, w, b)]
    plain = affine(x, w, b, implementation="xla")
    for form in ("numpy", "auto"):
        np.testing.assert_array_equal(affine(x, w, b, implementation=form), plain)
    for a, copy in zip((x, w, b), before):
        np.testing.assert_array_equal(a, copy)
    np.testing.assert_allclose(plain, x @ w + b, rtol=1e-6)
    np.testing.assert_array_equal(affine(x, w, None, implementation="numpy"), x @ w)
    np.testing.assert_allclose(np.asarray(affine(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))), plain, rtol=1e-5, atol=1e-5)


def test_forced_numpy_forms_refuse_other_arrays_and_unknown_forms():
    with pytest.raises(TypeError, match=r"affine\(implementation='numpy'\) needs NumPy arrays of one dtype"):
        affine(jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.ones(2), implementation="numpy")
    with pytest.raises(TypeError, match=r"affine\(implementation='numpy'\) needs NumPy arrays of one dtype"):
        affine(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), np.ones(2), implementation="numpy")
    with pytest.raises(ValueError, match=r"relu_select: implementation must be one of \('auto', 'xla', 'numpy'\); got 'cuda'"):
        relu_select(np.ones(2), np.ones(2), implementation="cuda")


def test_the_plan_names_every_numpy_form_and_picks_by_the_arrays():
    assert set(plan.NUMPY_FORMS) == {"affine", "relu_select", "scatter_add_rows", "erf"}
    assert plan.numpy_or_xla("k", "auto", numpy_ready=True, needs="") == "numpy"
    assert plan.numpy_or_xla("k", "auto", numpy_ready=False, needs="") == "xla"
    assert plan.numpy_or_xla("k", "xla", numpy_ready=True, needs="") == "xla"
