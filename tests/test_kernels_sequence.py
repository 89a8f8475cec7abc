"""The kernels of the sequence layers, each form held to the plain one:
``scatter_add_rows`` (embedding's backward) and ``erf`` (gelu_exact)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fnn.kernels.scatter import scatter_add_rows
from fnn.kernels.special import erf


def rows(rng, n, features, num_rows, dtype=np.float64):
    return rng.integers(0, num_rows, n), rng.standard_normal((n, features)).astype(dtype)


def loop_reference(ids, values, num_rows):
    out = np.zeros((num_rows, values.shape[1]))
    for i, r in enumerate(ids):
        out[r] += values[i]
    return out


@pytest.mark.parametrize("n, features, num_rows", [(50, 3, 7), (1, 4, 1), (300, 16, 1000), (0, 2, 3)])
def test_every_scatter_form_is_the_plain_sum_in_float64(n, features, num_rows, rng):
    ids, values = rows(rng, n, features, num_rows)
    expected = loop_reference(ids, values, num_rows)
    plain = scatter_add_rows(ids, values, num_rows, implementation="xla")  # np.add.at on NumPy
    fast = scatter_add_rows(ids, values, num_rows, implementation="numpy")  # one bincount
    auto = scatter_add_rows(ids, values, num_rows)
    on_jax = scatter_add_rows(jnp.asarray(ids), jnp.asarray(values), num_rows, implementation="xla")  # .at[].add
    np.testing.assert_array_equal(fast, plain)  # same additions in the same order: bit for bit
    np.testing.assert_array_equal(auto, fast)
    np.testing.assert_allclose(plain, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(on_jax), expected, rtol=1e-13, atol=1e-13)
    assert fast.shape == plain.shape == (num_rows, features) and fast.dtype == np.float64
    unused = np.setdiff1d(np.arange(num_rows), ids)
    assert np.all(fast[unused] == 0)


def test_scatter_forms_agree_in_float32_and_keep_the_dtype(rng):
    ids, values = rows(rng, 500, 8, 5, np.float32)  # many additions per row
    plain = scatter_add_rows(ids, values, 5, implementation="xla")
    fast = scatter_add_rows(ids, values, 5, implementation="numpy")  # summed in float64, then rounded
    assert fast.dtype == plain.dtype == np.float32
    exact = loop_reference(ids, values.astype(np.float64), 5)
    np.testing.assert_allclose(fast, exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(plain, exact, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(fast - exact)) <= np.max(np.abs(plain - exact))


def test_scatter_arguments_are_checked(rng):
    ids, values = rows(rng, 4, 2, 3)
    with pytest.raises(ValueError, match="implementation must be one of"):
        scatter_add_rows(ids, values, 3, implementation="fast")
    with pytest.raises(TypeError, match="needs NumPy arrays"):
        scatter_add_rows(jnp.asarray(ids), jnp.asarray(values), 3, implementation="numpy")
    with pytest.raises(ValueError, match=r"ids \(n,\) and values \(n, F\)"):
        scatter_add_rows(ids[:3], values, 3)


def test_erf_forms_agree_and_are_exact_to_float64():
    x = np.concatenate([np.linspace(-7, 7, 2001), [0.0, -0.0, 1e-300, 30.0, -np.inf, np.inf]])
    numpy_form = erf(x, implementation="numpy")
    xla_form = erf(x, implementation="xla")
    np.testing.assert_allclose(numpy_form, xla_form, rtol=1e-15, atol=2e-16)
    np.testing.assert_array_equal(numpy_form, [math.erf(v) for v in x])
    assert erf(np.array([1.0]))[0] == 0.8427007929497149  # erf(1) rounded to float64
    np.testing.assert_array_equal(erf(np.array([-np.inf, 0.0, np.inf])), [-1.0, 0.0, 1.0])


def test_erf_keeps_the_dtype_passes_nan_on_and_follows_the_arrays():
    x32 = np.array([0.5, np.nan, -2.0], np.float32)
    y = erf(x32)
    assert y.dtype == np.float32 and np.isnan(y[1])
    np.testing.assert_array_equal(y[[0, 2]], np.float32([math.erf(0.5), math.erf(-2.0)]))
    on_jax = erf(jnp.asarray(x32))
    assert isinstance(on_jax, jnp.ndarray) and on_jax.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(on_jax)[[0, 2]], y[[0, 2]], rtol=1e-6)
    with pytest.raises(TypeError, match="needs a NumPy array"):
        erf(jnp.asarray(x32), implementation="numpy")
