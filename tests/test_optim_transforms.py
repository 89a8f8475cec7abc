"""Clipping, weight decay and its masks, freeze, partition, skipping non-finite
updates, and the learning rate as state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import backend, optim


def arrays(backend_name, tree):
    return backend.tree_map(jnp.asarray if backend_name == "jax" else np.asarray, tree)


def model_params():
    """A tree shaped like an fnn model's params."""
    return {
        "dense": {"w": np.full((3, 2), 2.0), "b": np.full((2,), 2.0)},
        "batch_norm": {"scale": np.full((2,), 2.0), "bias": np.full((2,), 2.0)},
        "conv2d": {"w": np.full((2, 2, 1, 2), 2.0), "b": np.full((2,), 2.0)},
    }


def leaves(tree):
    return dict(backend.tree_leaves_with_path(tree))


# --------------------------------------------------------------------------- #
# Clipping
# --------------------------------------------------------------------------- #


def test_clip_by_value(backend_name):
    g = arrays(backend_name, {"a": np.array([-3.0, -0.5, 0.0, 0.7, 9.0]), "b": np.array(-2.0)})
    updates, _ = optim.clip(1.0).update(g, optim.clip(1.0).init(g))
    np.testing.assert_array_equal(np.asarray(updates["a"]), [-1.0, -0.5, 0.0, 0.7, 1.0])
    assert float(updates["b"]) == -1.0


@pytest.mark.parametrize("scale, clipped", [(0.1, False), (10.0, True)])
def test_clip_by_global_norm(backend_name, rng, scale, clipped):
    tree = {"a": rng.normal(size=(3, 4)) * scale, "b": rng.normal(size=(5,)) * scale}
    norm = np.sqrt(sum(np.sum(x**2) for x in tree.values()))
    opt = optim.clip_by_global_norm(2.0)
    g = arrays(backend_name, tree)
    updates, state = opt.update(g, opt.init(g))
    assert float(state.global_norm) == pytest.approx(norm, rel=1e-12)  # the norm before clipping
    factor = 2.0 / norm if clipped else 1.0
    for k, value in tree.items():
        np.testing.assert_allclose(np.asarray(updates[k]), value * factor, rtol=1e-12)
    assert float(optim.global_norm(updates)) == pytest.approx(min(norm, 2.0), rel=1e-12)


def test_clip_by_global_norm_of_zero_gradients_and_mixed_dtypes(backend_name):
    opt = optim.clip_by_global_norm(1.0)
    g = arrays(backend_name, {"a": np.zeros(3, np.float32), "b": np.full(2, 3.0)})
    updates, state = opt.update(g, opt.init(g))
    assert updates["a"].dtype == np.float32 and float(state.global_norm) == pytest.approx(np.sqrt(18))
    zeros, state = opt.update(backend.tree_map(lambda x: x * 0, g), state)
    assert float(state.global_norm) == 0.0 and all(float(abs(x).max()) == 0 for x in backend.tree_leaves(zeros))


# --------------------------------------------------------------------------- #
# Weight decay and masks
# --------------------------------------------------------------------------- #


def test_decay_mask_skips_biases_and_norms():
    chosen = {path for path, leaf in leaves(model_params()).items() if optim.decay_mask(path, leaf)}
    assert chosen == {"dense/w", "conv2d/w"}


@pytest.mark.parametrize("mask_kind", ["none", "predicate", "tree"])
def test_add_decayed_weights(backend_name, mask_kind):
    params = model_params()
    mask = {
        "none": None,
        "predicate": optim.decay_mask,
        "tree": backend.tree_map(lambda x: x.ndim > 1, params),
    }[mask_kind]
    opt = optim.add_decayed_weights(0.25, mask)
    p = arrays(backend_name, params)
    g = backend.tree_map(lambda x: x * 0 + 1.0, p)
    updates, _ = opt.update(g, opt.init(p), p)
    for path, u in leaves(updates).items():
        decayed = mask_kind == "none" or path in {"dense/w", "conv2d/w"}
        np.testing.assert_array_equal(np.asarray(u), 1.5 if decayed else 1.0, err_msg=path)


def test_add_decayed_weights_needs_params():
    opt = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="needs the params"):
        opt.update({"w": np.ones(1)}, opt.init({"w": np.ones(1)}))


def test_bad_masks():
    params = model_params()
    with pytest.raises(ValueError, match="mask"):
        opt = optim.add_decayed_weights(0.1, mask={"dense": {"w": True}})
        opt.update(params, opt.init(params), params)
    with pytest.raises(TypeError, match="bool"):
        opt = optim.add_decayed_weights(0.1, mask=lambda path, leaf: "yes")
        opt.update(params, opt.init(params), params)


def test_adamw_with_ready_mask_leaves_norms_alone(backend_name):
    params = arrays(backend_name, model_params())
    opt = optim.adamw(0.1, weight_decay=0.5, mask=optim.decay_mask)
    zero = backend.tree_map(lambda x: x * 0, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    for path, u in leaves(updates).items():
        expected = -0.1 * 0.5 * 2.0 if path.endswith("/w") else 0.0
        np.testing.assert_allclose(np.asarray(u), expected, err_msg=path)


# --------------------------------------------------------------------------- #
# masked, freeze, partition
# --------------------------------------------------------------------------- #


def frozen_conv(path, leaf):
    return path.startswith("conv2d/")


def test_freeze_with_optimizer_zero_updates_and_no_state(backend_name):
    params = arrays(backend_name, model_params())
    opt = optim.freeze(frozen_conv, optim.adam(0.1))
    state = opt.init(params)
    state_paths = list(leaves(state))
    assert not any("conv2d" in p for p in state_paths)  # no moments for frozen leaves
    assert any(p.endswith("mu/dense/w") for p in state_paths)
    grads = backend.tree_map(lambda x: x * 0 + 1.0, params)
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
    for path, u in leaves(updates).items():
        if path.startswith("conv2d/"):
            assert float(abs(u).max()) == 0.0, path
        else:
            assert float(u.max()) < 0, path
    assert backend.tree_structure(updates) == backend.tree_structure(params)


def test_freeze_alone_is_stateless(backend_name):
    params = arrays(backend_name, model_params())
    mask = backend.tree_map(lambda x: x.ndim == 1, model_params())
    opt = optim.chain(optim.sgd(0.1), optim.freeze(mask))
    state = opt.init(params)
    assert state["freeze"] == optim.EmptyState()
    updates, _ = opt.update(params, state, params)
    for path, u in leaves(updates).items():
        assert float(abs(u).max()) == (0.0 if u.ndim == 1 else 0.2), path


def test_masked_passes_the_rest_through():
    params = model_params()
    opt = optim.masked(optim.scale(-1.0), optim.decay_mask)
    updates, _ = opt.update(params, opt.init(params), params)
    for path, u in leaves(updates).items():
        assert float(u.max()) == (-2.0 if path.endswith("/w") else 2.0)


def test_partition_equals_separate_optimizers(backend_name, rng):
    params = arrays(backend_name, backend.tree_map(lambda x: x + rng.normal(size=x.shape), model_params()))
    labels = lambda path, leaf: "decay" if optim.decay_mask(path, leaf) else "no_decay"
    groups = {"decay": optim.adamw(0.1, weight_decay=0.1), "no_decay": optim.sgd(0.01, momentum=0.9)}
    opt = optim.partition(groups, labels)
    state = opt.init(params)
    grads_seq = [backend.tree_map(lambda x: x * 0 + rng.normal(size=x.shape), params) for _ in range(3)]
    p = params
    for g in grads_seq:
        updates, state = opt.update(g, state, p)
        p = optim.apply_updates(p, updates)
    for path, leaf in leaves(params).items():
        label = labels(path, leaf)
        sub_opt = groups[label]
        q = {"x": leaf}
        s = sub_opt.init(q)
        for g in grads_seq:
            u, s = sub_opt.update({"x": leaves(g)[path]}, s, q)
            q = optim.apply_updates(q, u)
        np.testing.assert_allclose(np.asarray(leaves(p)[path]), np.asarray(q["x"]), rtol=1e-13, err_msg=path)
    with pytest.raises(ValueError, match="learning rates"):
        optim.get_learning_rate(state)
    assert float(optim.get_learning_rate(state, path="inner_states/no_decay")) == 0.01


def test_partition_with_label_tree_and_unknown_label():
    params = {"a": np.ones(2), "b": np.ones(2)}
    opt = optim.partition({"x": optim.sgd(1.0), "y": optim.sgd(2.0)}, {"a": "x", "b": "y"})
    updates, _ = opt.update(params, opt.init(params), params)
    assert updates["a"].tolist() == [-1.0, -1.0] and updates["b"].tolist() == [-2.0, -2.0]
    with pytest.raises(ValueError, match="no optimizer for label 'z'.*'b'"):
        optim.partition({"x": optim.sgd(1.0)}, {"a": "x", "b": "z"}).init(params)


# --------------------------------------------------------------------------- #
# skip_not_finite
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("backend_name, jit", [("numpy", False), ("jax", False), ("jax", True)])
def test_skip_not_finite(backend_name, jit):
    opt = optim.skip_not_finite(optim.adam(0.1))
    update = jax.jit(opt.update) if jit else opt.update
    params = arrays(backend_name, {"w": np.ones(3), "b": np.ones(1)})
    good = arrays(backend_name, {"w": np.ones(3), "b": np.ones(1)})
    bad = arrays(backend_name, {"w": np.array([1.0, np.nan, 1.0]), "b": np.array([np.inf])})
    state = opt.init(params)
    updates, state = update(good, state, params)
    before = backend.to_numpy(state.inner_state)
    updates, state = update(bad, state, params)
    assert all(float(abs(u).max()) == 0.0 for u in backend.tree_leaves(updates))
    assert int(state.notfinite_count) == 1 and not bool(state.last_finite)
    for a, b in zip(backend.tree_leaves(before), backend.tree_leaves(state.inner_state)):
        np.testing.assert_array_equal(a, np.asarray(b))  # the inner state did not move
    updates, state = update(good, state, params)
    assert int(state.notfinite_count) == 1 and bool(state.last_finite)
    assert int(state.inner_state["scale_by_adam"].count) == 2


# --------------------------------------------------------------------------- #
# The learning rate as state
# --------------------------------------------------------------------------- #


def test_get_and_set_learning_rate(backend_name):
    opt = optim.chain(optim.clip_by_global_norm(10.0), optim.adam(0.1))
    params = arrays(backend_name, {"w": np.ones(2)})
    state = opt.init(params)
    lr = optim.get_learning_rate(state)
    assert float(lr) == 0.1 and lr.shape == () and isinstance(lr, jax.Array if backend_name == "jax" else np.ndarray)
    new_state = optim.set_learning_rate(state, 0.0)
    assert float(optim.get_learning_rate(state)) == 0.1  # the old state is untouched
    updates, new_state = opt.update(params, new_state, params)
    assert float(abs(updates["w"]).max()) == 0.0
    assert optim.get_learning_rate(new_state).dtype == lr.dtype


def test_learning_rate_errors():
    with pytest.raises(ValueError, match="no learning rate"):
        optim.get_learning_rate(optim.scale_by_adam().init({"w": np.ones(1)}))
    with pytest.raises(ValueError, match="value must be a finite number >= 0"):
        optim.set_learning_rate(optim.sgd(0.1).init({"w": np.ones(1)}), -1.0)
    with pytest.raises(ValueError, match="no learning rate at path 'nope'"):
        optim.get_learning_rate(optim.sgd(0.1).init({"w": np.ones(1)}), path="nope")
