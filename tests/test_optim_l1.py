"""``add_l1``: the gradient of the L1 penalty, ``strength * sign(w)``, added to the update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import backend, optim


def params_tree():
    return {
        "dense": {"w": np.array([[-2.0, 0.0, 0.5], [3.0, -0.25, 0.0]]), "b": np.array([1.0, -1.0, 0.0])},
        "batch_norm": {"scale": np.array([2.0, -2.0, 0.0])},
    }


def on(backend_name, tree):
    return backend.tree_map(jnp.asarray if backend_name == "jax" else np.asarray, tree)


@pytest.mark.parametrize("mask_kind", ["none", "predicate", "tree"])
def test_add_l1_adds_strength_times_sign(backend_name, mask_kind):
    params = params_tree()
    mask = {"none": None, "predicate": optim.decay_mask,
            "tree": backend.tree_map(lambda x: x.ndim > 1, params)}[mask_kind]
    opt = optim.add_l1(0.25, mask)
    p = on(backend_name, params)
    g = backend.tree_map(lambda x: x * 0 + 1.0, p)
    updates, state = opt.update(g, opt.init(p), p)
    assert state == optim.EmptyState()
    for (path, u), w in zip(backend.tree_leaves_with_path(updates), backend.tree_leaves(params)):
        assert type(u) is type(backend.tree_leaves(g)[0])  # the backend of the arrays given
        regularised = mask_kind == "none" or path == "dense/w"
        expected = 1.0 + 0.25 * np.sign(w) if regularised else np.ones_like(w)  # sign(0) = 0: a zero weight stays
        np.testing.assert_array_equal(np.asarray(u), expected, err_msg=path)


def test_add_l1_is_the_gradient_of_the_l1_penalty():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.asarray(rng.normal(size=(3,)))}
    penalty_grad = jax.grad(lambda p: 0.3 * sum(jnp.abs(x).sum() for x in jax.tree_util.tree_leaves(p)))(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = optim.add_l1(0.3).update(zeros, optim.add_l1(0.3).init(params), params)
    for k in params:
        np.testing.assert_allclose(np.asarray(updates[k]), np.asarray(penalty_grad[k]), rtol=1e-6)


def test_add_l1_keeps_dtypes_and_runs_under_jit():
    opt = optim.chain(optim.add_l1(0.5, mask=optim.decay_mask), optim.sgd(0.1))
    params = {"dense": {"w": jnp.array([[1.0, -1.0]], jnp.float32), "b": jnp.array([1.0, 1.0], jnp.float32)}}
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p))
    updates, _ = step(grads, opt.init(params), params)
    assert updates["dense"]["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(updates["dense"]["w"]), [[-0.05, 0.05]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(updates["dense"]["b"]), [0.0, 0.0])


def test_add_l1_errors():
    with pytest.raises(ValueError, match=r"add_l1: strength must be a finite number >= 0; got -0.1"):
        optim.add_l1(-0.1)
    opt = optim.add_l1(0.1)
    with pytest.raises(ValueError, match="add_l1: update needs the params"):
        opt.update({"w": np.ones(1)}, opt.init({"w": np.ones(1)}))
    with pytest.raises(ValueError, match="add_l1"):
        opt.update({"w": np.ones(2)}, opt.init({"w": np.ones(1)}), {"w": np.ones(1)})
    with pytest.raises(TypeError, match="bool"):
        bad = optim.add_l1(0.1, mask=lambda path, leaf: "yes")
        bad.update({"w": np.ones(1)}, bad.init({"w": np.ones(1)}), {"w": np.ones(1)})


def test_add_l1_is_a_value():
    assert repr(optim.add_l1(0.01, mask=optim.decay_mask)) == "add_l1(strength=0.01, mask=decay_mask)"
    assert optim.add_l1(0.01) == optim.add_l1(0.01) and optim.add_l1(0.01) != optim.add_l1(0.02)
    assert optim.add_l1(0.01) != optim.add_decayed_weights(0.01)
