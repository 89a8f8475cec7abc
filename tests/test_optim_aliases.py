"""The optimizers against their written formulas, on both backends, eager and jitted.

One registry drives every check: each entry is an fnn optimizer and a
reference written here, leaf by leaf in float64 NumPy, straight from the
update equations of DESIGN.md section 4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import backend, optim

STEPS = 40


# --------------------------------------------------------------------------- #
# References: one parameter array at a time, float64, from the formulas
# --------------------------------------------------------------------------- #


def ref_sgd(lr, momentum=0.0, nesterov=False):
    def run(path, p, grads):
        v = np.zeros_like(p)
        for t, g in enumerate(grads):
            v = momentum * v + g
            step = g + momentum * v if nesterov else v
            p = p - lr(t) * step
        return p

    return run


def ref_adagrad(lr, eps=1e-7, initial_accumulator_value=0.0):
    def run(path, p, grads):
        h = np.full_like(p, initial_accumulator_value)
        for t, g in enumerate(grads):
            h = h + g * g
            p = p - lr(t) * g / (np.sqrt(h) + eps)
        return p

    return run


def ref_rmsprop(lr, decay=0.9, eps=1e-8):
    def run(path, p, grads):
        v = np.zeros_like(p)
        for t, g in enumerate(grads):
            v = decay * v + (1 - decay) * g * g
            p = p - lr(t) * g / (np.sqrt(v) + eps)
        return p

    return run


def ref_adam(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decayed=lambda path: True):
    def run(path, p, grads):
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        for k, g in enumerate(grads):
            t = k + 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            wd = weight_decay * p if decayed(path) else 0.0
            p = p - lr(k) * (m_hat / (np.sqrt(v_hat) + eps) + wd)
        return p

    return run


def const(value):
    return lambda step: value


def ref_exponential(init_value, transition_steps, decay_rate):
    return lambda step: init_value * decay_rate ** (step / transition_steps)


def no_bias(path):
    return not path.endswith("b")


# name, fnn optimizer, reference
REGISTRY = [
    ("sgd", optim.sgd(0.05), ref_sgd(const(0.05))),
    ("momentum", optim.sgd(0.05, momentum=0.9), ref_sgd(const(0.05), 0.9)),
    ("nesterov", optim.sgd(0.05, momentum=0.9, nesterov=True), ref_sgd(const(0.05), 0.9, nesterov=True)),
    ("adagrad", optim.adagrad(0.3), ref_adagrad(const(0.3))),
    ("adagrad_init", optim.adagrad(0.3, eps=1e-3, initial_accumulator_value=0.1), ref_adagrad(const(0.3), 1e-3, 0.1)),
    ("rmsprop", optim.rmsprop(0.01), ref_rmsprop(const(0.01))),
    ("rmsprop_decay", optim.rmsprop(0.01, decay=0.5, eps=1e-4), ref_rmsprop(const(0.01), 0.5, 1e-4)),
    ("adam", optim.adam(0.01), ref_adam(const(0.01))),
    ("adam_betas", optim.adam(0.01, b1=0.5, b2=0.9, eps=1e-3), ref_adam(const(0.01), 0.5, 0.9, 1e-3)),
    (
        "adam_schedule",
        optim.adam(optim.exponential_decay(0.02, transition_steps=7, decay_rate=0.5)),
        ref_adam(ref_exponential(0.02, 7, 0.5)),
    ),
    ("adamw", optim.adamw(0.01, weight_decay=0.1), ref_adam(const(0.01), weight_decay=0.1)),
    (
        "adamw_masked",
        optim.adamw(0.01, weight_decay=0.1, mask=optim.decay_mask),
        ref_adam(const(0.01), weight_decay=0.1, decayed=no_bias),
    ),
]
IDS = [name for name, _, _ in REGISTRY]


def make_params(rng, dtype=np.float64):
    return {
        "dense": {"w": rng.normal(size=(3, 2)).astype(dtype), "b": rng.normal(size=(2,)).astype(dtype)},
        "dense_1": {"w": (2.0 + rng.normal(size=(2, 2))).astype(dtype), "b": rng.normal(size=(2,)).astype(dtype)},
    }


def make_grads(rng, params, steps):
    """A fixed sequence of gradient trees (the trajectory then follows the formula exactly)."""
    return [backend.tree_map(lambda p: rng.normal(size=p.shape).astype(p.dtype) * 3.0, params) for _ in range(steps)]


def on(backend_name, tree):
    return backend.tree_map(jnp.asarray if backend_name == "jax" else np.asarray, tree)


def descend(opt, params, grads_seq, update=None):
    update = update or opt.update
    state = opt.init(params)
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = optim.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name, opt, reference", REGISTRY, ids=IDS)
def test_trajectory_matches_formula(name, opt, reference, backend_name, rng):
    params = make_params(rng)
    grads_seq = make_grads(rng, params, STEPS)
    got, _ = descend(opt, on(backend_name, params), [on(backend_name, g) for g in grads_seq])
    for (path, p), g in zip(backend.tree_leaves_with_path(params), backend.tree_leaves(got)):
        expected = reference(path, p, [dict(backend.tree_leaves_with_path(gs))[path] for gs in grads_seq])
        assert isinstance(g, jax.Array if backend_name == "jax" else np.ndarray)
        assert g.dtype == np.float64
        np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-10, atol=1e-13, err_msg=f"{name} at {path}")


@pytest.mark.parametrize("name, opt, reference", REGISTRY, ids=IDS)
def test_dtypes_kept(name, opt, reference, backend_name, rng):
    params = make_params(rng, np.float32)
    params["dense_1"] = backend.tree_map(lambda p: p.astype(np.float64), params["dense_1"])  # mixed dtypes
    grads_seq = make_grads(rng, params, 3)
    params, grads_seq = on(backend_name, params), [on(backend_name, g) for g in grads_seq]
    new_params, state = descend(opt, params, grads_seq)
    xp_array = jax.Array if backend_name == "jax" else np.ndarray
    for (path, p), q in zip(backend.tree_leaves_with_path(params), backend.tree_leaves(new_params)):
        assert isinstance(q, xp_array) and q.dtype == p.dtype and q.shape == p.shape, path
    assert backend.tree_structure(new_params) == backend.tree_structure(params)
    for path, leaf in backend.tree_leaves_with_path(state):
        assert isinstance(leaf, xp_array), path
        if path.endswith("count"):
            assert leaf.dtype == np.int32
        elif "dense/" in path:  # per-parameter state follows its float32 parameter
            assert leaf.dtype == np.float32, path


@pytest.mark.parametrize("name, opt, reference", REGISTRY, ids=IDS)
def test_update_is_pure(name, opt, reference, backend_name, rng):
    params = on(backend_name, make_params(rng))
    grads = on(backend_name, make_grads(rng, params, 1)[0])
    state = opt.init(params)
    _, state = opt.update(grads, state, params)  # a state with non-zero moments
    snapshot = backend.to_numpy((params, grads, state))
    first = opt.update(grads, state, params)
    second = opt.update(grads, state, params)
    for a, b in zip(backend.tree_leaves(first), backend.tree_leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(backend.tree_leaves(snapshot), backend.tree_leaves((params, grads, state))):
        np.testing.assert_array_equal(a, np.asarray(b))  # inputs untouched


JIT_REGISTRY = [
    entry
    for entry in REGISTRY
    if entry[0] in {"sgd", "nesterov", "adagrad", "rmsprop", "adam_schedule", "adamw_masked"}
]


@pytest.mark.parametrize("name, opt, reference", JIT_REGISTRY, ids=[e[0] for e in JIT_REGISTRY])
def test_jit_equals_eager_and_compiles_once(name, opt, reference, rng):
    params = on("jax", make_params(rng))
    grads_seq = [on("jax", g) for g in make_grads(rng, params, 4)]
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    state = opt.init(params)
    eager_params, eager_state = params, state
    jit_params, jit_state = params, state
    for grads in grads_seq:
        updates, eager_state = opt.update(grads, eager_state, eager_params)
        eager_params = optim.apply_updates(eager_params, updates)
        jit_params, jit_state = step(jit_params, jit_state, grads)
    for a, b in zip(backend.tree_leaves((eager_params, eager_state)), backend.tree_leaves((jit_params, jit_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-15)
    # changing the learning rate is changing an array: no new compilation
    jit_params, jit_state = step(jit_params, optim.set_learning_rate(jit_state, 0.5), grads_seq[0])
    assert len(traces) == 1


def test_no_momentum_no_velocity(rng):
    state = optim.sgd(0.1).init(make_params(rng))
    assert list(state) == ["scale_by_learning_rate"]
    assert len(backend.tree_leaves(state)) == 2  # count and learning rate only
    state = optim.sgd(0.1, momentum=0.9).init(make_params(rng))
    assert isinstance(state["trace"], optim.TraceState)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_counter_saturates(backend_name, dtype):
    opt = optim.adam(0.1)
    params = on(backend_name, {"w": np.ones(2, dtype)})
    state = opt.init(params)
    top = np.iinfo(np.int32).max
    xp = backend.namespace(params)
    state["scale_by_adam"] = state["scale_by_adam"]._replace(count=xp.asarray(top, dtype=np.int32))
    updates, state = opt.update(on(backend_name, {"w": np.ones(2, dtype)}), state, params)
    assert int(state["scale_by_adam"].count) == top and state["scale_by_adam"].count.dtype == np.int32
    assert np.all(np.isfinite(np.asarray(updates["w"]))) and updates["w"].dtype == dtype


def test_numpy_scalar_params_stay_arrays():
    params = {"x": np.array(1.0, np.float32)}
    opt = optim.adam(0.1)
    updates, _ = opt.update({"x": np.array(2.0, np.float32)}, opt.init(params), params)
    new = optim.apply_updates(params, updates)
    assert isinstance(updates["x"], np.ndarray) and updates["x"].dtype == np.float32
    assert isinstance(new["x"], np.ndarray) and new["x"].dtype == np.float32 and new["x"].shape == ()


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_safe_increment_saturates_without_overflow_or_min(backend_name, dtype):
    from fnn.optim.base import safe_increment

    top = np.iinfo(dtype).max  # int64 on JAX too: the tests enable x64
    for value, expected in [(0, 1), (41, 42), (top - 1, top), (top, top)]:
        count = on(backend_name, np.asarray(value, dtype))
        with np.errstate(over="raise"):
            got = safe_increment(count)
        assert int(got) == expected and got.dtype == dtype and got.shape == ()
    # one small kernel under jit: XLA:CPU copies a `min` increment into every consumer
    jaxpr = str(jax.make_jaxpr(safe_increment)(jnp.asarray(3, jnp.int32)))
    assert " min " not in jaxpr and "min(" not in jaxpr


def test_bad_hyper_parameters_schedules_gradients_and_params_are_refused():
    with pytest.raises(ValueError, match=r"sgd: momentum must be a finite number in \[0, 1\); got 1.5"):
        optim.sgd(0.1, momentum=1.5)
    params = {"w": np.ones((2, 2))}
    for bad in (lambda step: np.nan, lambda step: -0.1):
        with pytest.raises(ValueError, match=r"learning rate schedule: gave (nan|-0.1) at step 0; a learning rate must"):
            optim.sgd(bad).init(params)
    late = optim.sgd(lambda step: 0.1 - 0.2 * (step >= 2))  # negative from the third update
    state = late.init(params)
    _, state = late.update({"w": np.ones((2, 2))}, state)
    with pytest.raises(ValueError, match=r"gave -0.1 at step 2"):
        late.update({"w": np.ones((2, 2))}, state)
    jitted = jax.jit(late.update)  # under jit the value cannot be read: a negative rate becomes NaN
    _, traced_state = jitted({"w": jnp.ones((2, 2))}, late.init({"w": jnp.ones((2, 2))}))
    updates, traced_state = jitted({"w": jnp.ones((2, 2))}, traced_state)
    assert np.isnan(float(traced_state.learning_rate if hasattr(traced_state, "learning_rate")
                          else optim.get_learning_rate(traced_state)))
    sgd = optim.sgd(0.1)
    updates, _ = sgd.update({"w": np.ones((1, 2))}, sgd.init(params), params)  # (1, 2) only broadcasts to (2, 2)
    with pytest.raises(ValueError, match=r"apply_updates: .*w.*\(1, 2\)"):
        optim.apply_updates(params, updates)
    ints = {"w": np.ones(3, np.int32)}
    adam = optim.adam(1e-3)
    updates, _ = adam.update({"w": np.ones(3, np.float32)}, adam.init(ints), ints)
    with pytest.raises(TypeError, match=r"apply_updates: params 'w' is int32; optimizers update floating-point params"):
        optim.apply_updates(ints, updates)
