"""The NumPy fast paths of the optimizers: Adam's fused kernel (tiled, with the
learning rate folded in), the scaled and applied updates, and the recycling of
their output arrays. They must give the formula's numbers, the generic path's
numbers, and never write into an array that anyone else can see."""

import gc

import jax.numpy as jnp
import numpy as np
import pytest

from fnn import backend, optim
from fnn.kernels import optim as kernels
from fnn.kernels import optim_buffers

# Large enough to be recycled (>= MIN_BYTES) and tiled (more than one TILE_BYTES tile, with a remainder).
BIG = (301, 257)


def make_tree(rng, dtype, scale=1.0):
    return {
        "dense": {"w": (rng.normal(size=BIG) * scale).astype(dtype), "b": (rng.normal(size=(257,)) * scale).astype(dtype)},
        "out": {"w": (rng.normal(size=(257, 3)) * scale).astype(dtype)},
    }


def formula_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """DESIGN.md's Adam, leaf by leaf in float64."""
    m = np.zeros_like(p, np.float64)
    v = np.zeros_like(p, np.float64)
    p = p.astype(np.float64)
    for k, g in enumerate(grads):
        t = k + 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


def run(opt, params, grads_seq):
    state = opt.init(params)
    for grads in grads_seq:
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_numpy_adam_equals_formula_and_jax(rng, dtype, rtol):
    params = make_tree(rng, dtype)
    grads_seq = [make_tree(rng, dtype, scale=3.0) for _ in range(6)]
    opt = optim.adam(0.01)
    got, state = run(opt, params, grads_seq)
    on_jax, jax_state = run(opt, backend.tree_map(jnp.asarray, params), [backend.tree_map(jnp.asarray, g) for g in grads_seq])
    for (path, p), q, j in zip(backend.tree_leaves_with_path(params), backend.tree_leaves(got), backend.tree_leaves(on_jax)):
        assert type(q) is np.ndarray and q.dtype == dtype and q.shape == p.shape, path
        expected = formula_adam(p, [dict(backend.tree_leaves_with_path(g))[path] for g in grads_seq], 0.01)
        np.testing.assert_allclose(q, expected, rtol=rtol, atol=rtol * 1e-2, err_msg=path)
        np.testing.assert_allclose(q, np.asarray(j), rtol=rtol, atol=rtol * 1e-2, err_msg=path)
    for a, b in zip(backend.tree_leaves(state), backend.tree_leaves(jax_state)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=rtol, atol=1e-12)
    assert int(state["scale_by_adam"].count) == 6 and int(state["scale_by_learning_rate"].count) == 6


def test_numpy_adam_with_a_schedule_and_set_learning_rate(rng):
    params = make_tree(rng, np.float64)
    grads_seq = [make_tree(rng, np.float64) for _ in range(3)]
    schedule = optim.exponential_decay(0.02, transition_steps=1, decay_rate=0.5)
    fused, fused_state = run(optim.adam(schedule), params, grads_seq)
    chained = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(schedule))
    generic, generic_state = run(chained, params, grads_seq)  # the unfused chain, also on NumPy
    for a, b in zip(backend.tree_leaves((fused, fused_state)), backend.tree_leaves((generic, generic_state))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert float(optim.get_learning_rate(fused_state)) == pytest.approx(0.02 * 0.5**3)
    state = optim.set_learning_rate(fused_state, 0.0)  # a zero learning rate: no move at all
    updates, _ = optim.adam(schedule).update(grads_seq[0], state, fused)
    assert all(np.all(u == 0) for u in backend.tree_leaves(updates))


def test_scale_by_adam_alone_takes_the_kernel_too(rng):
    g = make_tree(rng, np.float32)
    opt = optim.scale_by_adam(b1=0.5, b2=0.9, eps=1e-3)
    updates, state = opt.update(g, opt.init(g))
    # first step: m_hat = g, v_hat = g * g, so the direction is g / (|g| + eps)
    for u, x in zip(backend.tree_leaves(updates), backend.tree_leaves(g)):
        np.testing.assert_allclose(u, x / (np.abs(x) + 1e-3), rtol=2e-6)
    np.testing.assert_allclose(state.mu["dense"]["w"], 0.5 * g["dense"]["w"], rtol=1e-7)
    np.testing.assert_allclose(state.nu["dense"]["w"], 0.1 * g["dense"]["w"] ** 2, rtol=1e-6)


def test_numpy_updates_are_pure_and_never_share_memory(rng):
    params = make_tree(rng, np.float32)
    grads = make_tree(rng, np.float32)
    opt = optim.adam(0.1)
    _, state = opt.update(grads, opt.init(params), params)  # non-zero moments
    inputs = (params, grads, state)
    snapshot = backend.tree_map(np.copy, inputs)
    first = opt.update(grads, state, params)
    first_params = optim.apply_updates(params, first[0])
    kept = backend.tree_map(np.copy, (first, first_params))
    for _ in range(3):  # later calls must neither reuse nor overwrite anything still held
        second = opt.update(grads, state, params)
        second_params = optim.apply_updates(params, second[0])
    held = backend.tree_leaves((inputs, first, first_params))
    for new in backend.tree_leaves((second, second_params)):
        if new.ndim:
            assert not any(np.shares_memory(new, old) for old in held)
    for a, b in zip(backend.tree_leaves(snapshot), backend.tree_leaves(inputs)):
        np.testing.assert_array_equal(a, b)  # inputs untouched
    for a, b in zip(backend.tree_leaves(kept), backend.tree_leaves((first, first_params))):
        np.testing.assert_array_equal(a, b)  # earlier results untouched
    for a, b in zip(backend.tree_leaves((first, first_params)), backend.tree_leaves((second, second_params))):
        np.testing.assert_array_equal(a, b)  # same inputs, same outputs


def test_recycled_buffers_only_once_unreferenced():
    if not optim_buffers._RECYCLER.free_limit:
        pytest.skip("recycling is off on this Python")
    shape, dtype = (128, 256), np.dtype(np.float32)
    a = optim_buffers.empty(shape, dtype)
    view = a[3:]  # a view keeps its base referenced
    del a
    gc.collect()
    b = optim_buffers.empty(shape, dtype)
    assert not np.shares_memory(b, view)
    addresses = {view.base.ctypes.data, b.ctypes.data}
    del view, b
    gc.collect()
    c = optim_buffers.empty(shape, dtype)  # nothing holds the two arrays any more: one of them comes back
    assert c.ctypes.data in addresses
    small = optim_buffers.empty((3,), dtype)  # small arrays are plain np.empty
    assert small.shape == (3,) and ((3,), dtype) not in optim_buffers._RECYCLER.buckets


def test_apply_updates_numpy_fast_path_and_mixed_dtypes(rng):
    params = make_tree(rng, np.float32)
    updates = make_tree(rng, np.float32, scale=0.1)
    snapshot = backend.tree_map(np.copy, (params, updates))
    new = optim.apply_updates(params, updates)
    for p, u, q in zip(backend.tree_leaves(params), backend.tree_leaves(updates), backend.tree_leaves(new)):
        assert q.dtype == np.float32 and not np.shares_memory(q, p) and not np.shares_memory(q, u)
        np.testing.assert_array_equal(q, p + u)
    for a, b in zip(backend.tree_leaves(snapshot), backend.tree_leaves((params, updates))):
        np.testing.assert_array_equal(a, b)
    wide = backend.tree_map(lambda u: u.astype(np.float64), updates)  # float64 updates: the generic path
    mixed = optim.apply_updates(params, wide)
    for p, u, q in zip(backend.tree_leaves(params), backend.tree_leaves(wide), backend.tree_leaves(mixed)):
        assert q.dtype == np.float32
        np.testing.assert_array_equal(q, (p + u).astype(np.float32))


def test_non_contiguous_and_mixed_inputs_fall_back_or_match(rng):
    g = {"w": np.asfortranarray(rng.normal(size=BIG)), "v": rng.normal(size=BIG)[:, ::2]}
    opt = optim.adam(0.05)
    fast, _ = opt.update(g, opt.init(g))
    generic, _ = opt.update(backend.tree_map(jnp.asarray, g), opt.init(backend.tree_map(jnp.asarray, g)))
    for a, b in zip(backend.tree_leaves(fast), backend.tree_leaves(generic)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12)
    params = {"w": np.zeros(4, np.float32)}
    state = opt.init(params)
    updates, state = opt.update({"w": np.ones(4, np.float64)}, state, params)  # float64 grads, float32 moments
    assert updates["w"].dtype == np.float64 and state["scale_by_adam"].mu["w"].dtype == np.float32


def test_kernel_factors_are_the_bias_corrections():
    t, b1, b2, eps, lr = 3.0, 0.9, 0.999, 1e-8, -0.01
    k, eps_hat = kernels.adam_factors(t, b1, b2, eps, lr)
    m, v = 0.3, 0.04
    expected = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    assert k * m / (np.sqrt(v) + eps_hat) == pytest.approx(expected, rel=1e-14)
