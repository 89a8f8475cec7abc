"""The optimizers' kernels (fnn.kernels.optim): every form against the plain one
and against the formula in float64, the plan's choice, the refusal of a forced
"numpy" form where it cannot run, and the purity of the in-place NumPy form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import backend, kernels, optim
from fnn.kernels import optim as K
from fnn.kernels import plan

TOL = {np.float32: 2e-6, np.float64: 1e-13}
B1, B2, EPS = 0.9, 0.999, 1e-8


def tree(rng, dtype, positive=False):
    """Leaves of several ranks and sizes: 0-d, small, one large enough to be tiled
    (more than one tile, with a remainder), and a Fortran-ordered one."""
    draw = (lambda *s: np.abs(rng.normal(size=s)) * 0.1) if positive else (lambda *s: rng.normal(size=s))
    return {
        "scalar": np.asarray(draw(), dtype),
        "bias": draw(7).astype(dtype),
        "dense": {"w": draw(301, 257).astype(dtype), "b": draw(257).astype(dtype)},
        "conv": np.asfortranarray(draw(3, 3, 4, 5).astype(dtype)),
    }


def adam_inputs(rng, dtype):
    return tree(rng, dtype), tree(rng, dtype), tree(rng, dtype, positive=True)


def leaves(t):
    return backend.tree_leaves(t)


def assert_trees_close(got, expected, rtol, dtype=None):
    assert backend.tree_structure(got) == backend.tree_structure(expected)
    for a, b in zip(leaves(got), leaves(expected)):
        assert np.shape(a) == np.shape(b)
        if dtype is not None:
            assert a.dtype == dtype
        b = np.asarray(b, np.float64)
        atol = rtol * float(np.max(np.abs(b), initial=0.0))  # cancellation in m = b1 m + (1 - b1) g
        np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol, atol=atol)


def formula_adam(g, m, v, t, scale):
    """The docstring's formula, leaf by leaf in float64."""
    g, m, v = (np.asarray(x, np.float64) for x in (g, m, v))
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    return scale * (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS), m, v


# --------------------------------------------------------------------------- #
# Every form against the plain one and the formula
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("implementation", ["auto", *K.OPTIMIZER_IMPLEMENTATIONS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("t", [1, 2, 10])
@pytest.mark.parametrize("scale", [1.0, np.asarray(-0.003)])
def test_adam_update_every_form_equals_the_plain_one(rng, implementation, dtype, t, scale):
    g, m, v = adam_inputs(rng, dtype)
    count = np.asarray(t, np.int32)
    got = K.adam_update(g, m, v, count, b1=B1, b2=B2, eps=EPS, scale=scale, implementation=implementation)
    plain = K.adam_update(g, m, v, count, b1=B1, b2=B2, eps=EPS, scale=scale, implementation="xla")
    for a, b in zip(got, plain):
        assert_trees_close(a, b, TOL[dtype], dtype)
    expected = [formula_adam(*x, t, float(scale)) for x in zip(leaves(g), leaves(m), leaves(v))]
    for i in range(3):  # the plain form is the formula (up to the dtype's rounding)
        expected_tree = backend.tree_unflatten(backend.tree_structure(g), [e[i] for e in expected])
        assert_trees_close(plain[i], expected_tree, TOL[dtype] * 4)


@pytest.mark.parametrize("implementation", ["auto", *K.OPTIMIZER_IMPLEMENTATIONS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [-0.5, np.asarray(0.01), np.float64(-3.0)])
def test_scale_updates_every_form_equals_the_plain_one(rng, implementation, dtype, factor):
    u = tree(rng, dtype)
    got = K.scale_updates(u, factor, implementation=implementation)
    plain = K.scale_updates(u, factor, implementation="xla")
    assert_trees_close(got, plain, 0.0, dtype)  # one rounding each: bit for bit
    for a, x in zip(leaves(plain), leaves(u)):
        np.testing.assert_array_equal(a, x * dtype(factor))


@pytest.mark.parametrize("implementation", ["auto", *K.OPTIMIZER_IMPLEMENTATIONS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_updates_every_form_equals_the_plain_one(rng, implementation, dtype):
    p, u = tree(rng, dtype), tree(rng, dtype)
    got = K.add_updates(p, u, implementation=implementation)
    plain = K.add_updates(p, u, implementation="xla")
    assert_trees_close(got, plain, 0.0, dtype)
    for a, x, y in zip(leaves(plain), leaves(p), leaves(u)):
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(a, x + y)


def test_the_plain_form_is_the_same_on_jax(rng):
    g, m, v = adam_inputs(rng, np.float64)
    count, scale = np.asarray(2, np.int32), np.asarray(-0.01)
    on_numpy = K.adam_update(g, m, v, count, b1=B1, b2=B2, eps=EPS, scale=scale, implementation="xla")
    to_jax = lambda t: backend.tree_map(jnp.asarray, t)  # noqa: E731
    run = jax.jit(lambda g, m, v, c, s: K.adam_update(g, m, v, c, b1=B1, b2=B2, eps=EPS, scale=s))
    on_jax = run(to_jax(g), to_jax(m), to_jax(v), jnp.asarray(count), jnp.asarray(scale))
    for a, b in zip(on_numpy, on_jax):
        assert all(isinstance(x, jax.Array) for x in leaves(b))
        assert_trees_close(b, a, 1e-13)
    p = to_jax(g)
    assert_trees_close(jax.jit(K.add_updates)(p, p), K.add_updates(g, g, implementation="xla"), 0.0)
    assert_trees_close(jax.jit(K.scale_updates)(p, jnp.asarray(2.0)), K.scale_updates(g, 2.0), 0.0)


def test_the_kernels_are_reexported_from_the_package():
    assert kernels.adam_update is K.adam_update and kernels.add_updates is K.add_updates
    assert kernels.scale_updates is K.scale_updates and kernels.OPTIMIZER_IMPLEMENTATIONS == ("xla", "numpy")


# --------------------------------------------------------------------------- #
# The plan's choice, and where the numpy form is refused
# --------------------------------------------------------------------------- #


def test_plan_takes_numpy_whenever_the_arrays_allow_it():
    for kernel in ("adam_update", "scale_updates", "add_updates"):
        assert plan.optimizer_form(kernel, numpy_ready=True) == "numpy"
        assert plan.optimizer_form(kernel, numpy_ready=False) == "xla"


def test_auto_on_numpy_is_the_numpy_form_bit_for_bit(rng):
    g, m, v = adam_inputs(rng, np.float32)
    args = (g, m, v, np.asarray(3, np.int32))
    auto = K.adam_update(*args, b1=B1, b2=B2, eps=EPS, scale=np.asarray(-0.1))
    forced = K.adam_update(*args, b1=B1, b2=B2, eps=EPS, scale=np.asarray(-0.1), implementation="numpy")
    for a, b in zip(leaves(auto), leaves(forced)):
        np.testing.assert_array_equal(a, b)


def jax_cases(rng):
    g, m, v = adam_inputs(rng, np.float32)
    jg = backend.tree_map(jnp.asarray, g)
    count = np.asarray(1, np.int32)
    return {
        "adam_update": lambda **kw: K.adam_update(jg, m, v, count, b1=B1, b2=B2, eps=EPS, **kw),
        "adam_update scale": lambda **kw: K.adam_update(
            g, m, v, count, b1=B1, b2=B2, eps=EPS, scale=jnp.asarray(-1.0), **kw
        ),
        "scale_updates": lambda **kw: K.scale_updates(jg, 2.0, **kw),
        "add_updates": lambda **kw: K.add_updates(g, jg, **kw),
    }


@pytest.mark.parametrize("case", ["adam_update", "adam_update scale", "scale_updates", "add_updates"])
def test_a_forced_numpy_form_is_refused_on_jax_arrays(rng, case):
    call = jax_cases(rng)[case]
    refusal = r"implementation='numpy' runs only on plain NumPy arrays.*implementation='xla'"
    with pytest.raises(TypeError, match=refusal):
        call(implementation="numpy")
    out = call(implementation="auto")  # auto and xla take the plain form
    assert any(isinstance(x, jax.Array) for x in leaves(out))


def test_the_refusal_names_the_leaf_and_the_reason(rng):
    g = {"w": jnp.ones((2, 3)), "b": np.ones(3)}
    with pytest.raises(TypeError, match=r"add_updates.*updates at '.*w.*' is a jax"):
        K.add_updates({"w": np.ones((2, 3)), "b": np.ones(3)}, g, implementation="numpy")
    with pytest.raises(TypeError, match=r"updates at '.*' is float64\[3\] where params is float32\[3\]"):
        K.add_updates({"b": np.ones(3, np.float32)}, {"b": np.ones(3)}, implementation="numpy")
    with pytest.raises(TypeError, match=r"not a floating dtype"):
        K.scale_updates({"b": np.ones(3, np.int32)}, 2.0, implementation="numpy")
    traced = jax.jit(lambda p: K.scale_updates(p, 2.0, implementation="numpy"))
    with pytest.raises(TypeError, match="implementation='numpy'"):
        traced({"b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"implementation must be 'auto', 'xla' or 'numpy'; got 'cuda'"):
        K.scale_updates({"b": np.ones(3)}, 2.0, implementation="cuda")


def test_mixed_dtypes_take_the_plain_form_under_auto(rng):
    p = {"w": np.ones(4, np.float32)}
    u = {"w": np.full(4, 0.5)}  # float64 updates of a float32 parameter
    out = K.add_updates(p, u)
    assert out["w"].dtype == np.float32 and np.all(out["w"] == 1.5)


# --------------------------------------------------------------------------- #
# The numpy form never writes into its inputs
# --------------------------------------------------------------------------- #


def read_only(t):
    def freeze(x):
        x = np.array(x)  # a private copy, then locked
        x.flags.writeable = False
        return x

    return backend.tree_map(freeze, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_numpy_form_never_writes_into_its_inputs(rng, dtype):
    g, m, v = (read_only(t) for t in adam_inputs(rng, dtype))  # a write would raise
    snapshot = backend.tree_map(np.copy, (g, m, v))

    def adam():
        return K.adam_update(g, m, v, np.asarray(1, np.int32), b1=B1, b2=B2, eps=EPS, scale=-0.1, implementation="numpy")

    first = adam()
    scaled = K.scale_updates(g, 3.0, implementation="numpy")
    added = K.add_updates(m, g, implementation="numpy")
    for _ in range(2):  # later calls recycle only arrays nobody holds
        again = adam()
        K.scale_updates(g, 3.0, implementation="numpy")
        K.add_updates(m, g, implementation="numpy")
    for a, b in zip(leaves(snapshot), leaves((g, m, v))):
        np.testing.assert_array_equal(a, b)
    held = leaves((g, m, v, first, scaled, added))
    for out in leaves((first, scaled, added, again)):
        assert out.flags.writeable and out.flags.owndata
        assert sum(np.shares_memory(out, x) for x in held) == (1 if any(out is x for x in held) else 0)
    for a, b in zip(leaves(first), leaves(again)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- #
# The optimizers use the kernels
# --------------------------------------------------------------------------- #


def test_adam_folds_the_learning_rate_into_the_kernel_with_the_chains_numbers(rng):
    params = tree(rng, np.float32)
    grads = [tree(rng, np.float32) for _ in range(3)]
    schedule = optim.exponential_decay(0.01, transition_steps=1, decay_rate=0.5)
    fused = optim.adam(schedule)
    chained = optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(schedule), name="adam")
    for to in (lambda t: t, lambda t: backend.tree_map(jnp.asarray, t)):
        states = [fused.init(to(params)), chained.init(to(params))]
        for g in grads:
            (u1, states[0]), (u2, states[1]) = fused.update(to(g), states[0]), chained.update(to(g), states[1])
            assert_trees_close(u1, u2, 2e-6, np.float32)
        assert backend.tree_structure(states[0]) == backend.tree_structure(states[1])
        assert_trees_close(states[0], states[1], 2e-6)
    step = jax.jit(lambda opt_state, g: fused.update(g, opt_state))  # on JAX: the plain form, bit for bit the chain's
    chained_step = jax.jit(lambda opt_state, g: chained.update(g, opt_state))
    jg = backend.tree_map(jnp.asarray, grads[0])
    s = fused.init(backend.tree_map(jnp.asarray, params))
    for a, b in zip(leaves(step(s, jg)), leaves(chained_step(s, jg))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_adam_names_a_wrong_state(rng):
    with pytest.raises(ValueError, match=r"adam: state must be the dict made by this optimizer's init"):
        optim.adam(0.1).update({"w": np.ones(2)}, optim.sgd(0.1).init({"w": np.ones(2)}))
