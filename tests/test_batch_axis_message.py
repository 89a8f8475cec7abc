"""One example without its batch axis (e.g. ``jax.vmap(model.apply)``): the error names
the layer, the expected and the given shape, and suggests ``x[None]``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L

CASES = [  # (model, input shape with the batch axis, the layer that refuses, its expected shape in the message)
    (L.serial(L.dense(4), L.relu, L.dense(2)), (3,), "dense", r"\(batch, \.\.\., in_features\)"),
    (L.serial(L.conv2d(4, 3), L.flatten, L.dense(2)), (8, 8, 1), "conv2d", r"\(batch, height, width, channels\)"),
    (L.serial(L.lstm(4), L.dense(2)), (5, 3), "lstm", r"\(batch, time, features\)"),
    (L.serial(L.layer_norm(), L.dense(2)), (3,), "layer_norm", r"\(batch, \.\.\., features\)"),
]


@pytest.mark.parametrize("model, example_shape, layer, expected", CASES, ids=[c[2] for c in CASES])
def test_vmap_over_apply_names_the_missing_batch_axis(model, example_shape, layer, expected):
    params, state = model.init(np.random.default_rng(0), (None, *example_shape))
    shape = str(example_shape).replace("(", r"\(").replace(")", r"\)")
    message = rf"^{layer}: expected .*{expected}.*got (shape )?{shape}.*batch axis.*x\[None\]"
    with pytest.raises(fnn.LayerError, match=message):  # raised while tracing: nothing runs
        jax.vmap(lambda xi: model.apply(params, state, xi)[0])(jnp.ones((2, *example_shape)))
    with pytest.raises(fnn.LayerError, match=message):  # the same eagerly, on NumPy
        model.apply(params, state, np.ones(example_shape))


def test_the_suggested_fix_works():
    model, shape = CASES[0][:2]
    params, state = model.init(np.random.default_rng(0), (None, *shape))
    batch = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    one_at_a_time = jax.jit(jax.vmap(lambda xi: model.apply(params, state, xi[None])[0][0]))(jnp.asarray(batch))
    np.testing.assert_allclose(one_at_a_time, model.apply(params, state, batch)[0], rtol=1e-5, atol=1e-6)


def test_a_wrong_rank_that_is_not_a_missing_batch_axis_gets_no_such_hint():
    model = L.dense(2)
    params, state = model.init(np.random.default_rng(0), (None, 3))
    with pytest.raises(fnn.LayerError) as err:
        model.apply(params, state, np.ones(()))
    assert "x[None]" not in str(err.value)
