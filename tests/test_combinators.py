"""Combinators: naming, key derivation, shapes, summary, and hand-written
backward rules against jax.grad and finite differences (plus property tests)."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import layers as L
from tests.helpers import assert_gradients, init64, on_backend


def _mlp():
    return L.serial(L.dense(4), L.relu, L.dense(4), L.tanh, L.dense(2))


def test_serial_names_children_by_unique_readable_names():
    params, state = _mlp().init(np.random.default_rng(0), (None, 3))
    assert list(params) == ["dense", "relu", "dense_1", "tanh", "dense_2"]
    assert params["relu"] == {} and state == {k: {} for k in params}
    named = L.serial(L.dense(2, name="encoder"), L.serial(L.dense(2), L.relu, name="block"), L.serial(L.dense(2), name="block"))
    params, _ = named.init(np.random.default_rng(0), (None, 3))
    assert list(params) == ["encoder", "block", "block_1"]
    assert list(params["block"]) == ["dense", "relu"]


def test_child_keys_come_from_names_so_adding_a_layer_keeps_others():
    key = jax.random.key(7)
    small = L.serial(L.dense(4, name="a"), L.dense(3, name="b"))
    big = L.serial(L.dense(4, name="a"), L.relu, L.dense(5, name="extra"), L.dense(3, name="b"))
    p_small, _ = small.init(key, (None, 2))
    p_big, _ = big.init(key, (None, 2))
    np.testing.assert_array_equal(p_small["a"]["w"], p_big["a"]["w"])
    # b sees a different input width, so compare the leading rows drawn from the same key
    p_b_alone, _ = L.dense(3, name="b").init(fnn.backend.fold_in_name(key, "b"), (None, 4))
    np.testing.assert_array_equal(p_small["b"]["w"], p_b_alone["w"])
    # on NumPy too: the generator passed in is never advanced
    rng = np.random.default_rng(3)
    before = rng.bit_generator.state
    p1, _ = small.init(rng, (None, 2))
    p2, _ = small.init(rng, (None, 2))
    assert rng.bit_generator.state == before
    np.testing.assert_array_equal(p1["a"]["w"], p2["a"]["w"])
    assert not np.allclose(p1["a"]["w"][:, :3], p1["b"]["w"][:2, :3])


def test_out_shape_and_unknown_batch():
    model = L.serial(L.reshape((2, 3)), L.flatten, L.dense(5))
    assert model.out_shape((None, 6)) == (None, 5)
    assert model.out_shape((-1, 6)) == (None, 5)
    assert L.fan_out(3).out_shape((None, 4)) == ((None, 4),) * 3
    assert L.fan_in_concat().out_shape(((None, 2), (None, 3))) == (None, 5)
    assert L.parallel(L.dense(2), L.dense(3)).out_shape(((None, 4), (None, 5))) == ((None, 2), (None, 3))


COMBINATOR_CASES = [
    ("serial", _mlp(), (3, 3)),
    ("parallel", L.serial(L.fan_out(2), L.parallel(L.dense(3), L.serial(L.dense(3), L.tanh)), L.fan_in_sum), (2, 4)),
    ("fan_in_concat", L.serial(L.fan_out(3), L.parallel(L.dense(2), L.sigmoid, L.dense(1)), L.fan_in_concat()), (3, 2)),
    ("residual", L.serial(L.dense(4), L.residual(L.serial(L.dense(4), L.tanh, L.dense(4)))), (2, 3)),
    ("residual_projection", L.residual(L.serial(L.dense(5), L.gelu), shortcut=L.dense(5)), (2, 3)),
    ("nested", L.serial(L.serial(L.dense(3), L.softplus, name="block"), L.serial(L.dense(3), L.elu(), name="block")), (2, 2)),
]


@pytest.mark.parametrize("case", COMBINATOR_CASES, ids=[c[0] for c in COMBINATOR_CASES])
def test_combinator_backward(case, backend_name):
    _, model, shape = case
    params, state = init64(model, backend_name, shape)
    x = on_backend(np.random.default_rng(5).standard_normal(shape), backend_name)
    assert_gradients(model, params, state, x)


def test_parallel_takes_tuple_inputs_with_tuple_cotangents():
    model = L.parallel(L.dense(2), L.relu)
    params, state = init64(model, "jax", ((None, 3), (None, 4)))
    xs = (jnp.ones((2, 3)), jnp.asarray(np.random.default_rng(0).standard_normal((2, 4)) + 0.1))
    report = fnn.gradcheck.check_layer(model, params, state, xs, methods=("autodiff",))
    assert report.max_error("manual", "autodiff") < 1e-12


def test_residual_identity_adds_input():
    model = L.residual(L.dense(3))
    params, state = model.init(np.random.default_rng(0), (None, 3), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 3))
    y, _ = model.apply(params, state, x)
    np.testing.assert_allclose(y, x + x @ params["dense"]["w"] + params["dense"]["b"])
    with pytest.raises(fnn.LayerError, match=r"residual: the main branch gives shape \(None, 4\).*shortcut="):
        L.residual(L.dense(4)).init(np.random.default_rng(0), (None, 3))
    projected = L.residual(L.dense(4), shortcut=L.dense(4))
    params, _ = projected.init(np.random.default_rng(0), (None, 3))
    assert sorted(params) == ["dense", "shortcut"]


def test_summary_returns_rows_and_prints_them_when_asked(capsys):
    model = L.serial(L.serial(L.dense(8), L.relu, name="block"), L.dense(2))
    rows = fnn.summary(model, (None, 3))
    assert capsys.readouterr().out == ""
    assert [tuple(r) for r in rows] == [
        ("serial", "serial", (None, 2), 50), ("block", "block", (None, 8), 32),
        ("block/dense", "dense", (None, 8), 32), ("block/relu", "relu", (None, 8), 0), ("dense", "dense", (None, 2), 18),
    ]
    assert rows.total == 50
    stream = io.StringIO()
    assert fnn.summary(model, (None, 3), file=stream) == rows
    assert stream.getvalue() == str(rows) + "\n"
    fnn.summary(model, (None, 3), print_=True)
    out = capsys.readouterr().out
    assert "block/dense" in out and "(None, 8)" in out
    assert "32" in out  # 3*8 + 8
    assert "total params: 50" in out  # 32 + 8*2 + 2


# --------------------------------------------------------------------------- #
# Property tests over shapes
# --------------------------------------------------------------------------- #

dims = st.integers(min_value=1, max_value=5)


@settings(max_examples=15, deadline=None)
@given(batch=dims, n_in=dims, widths=st.lists(dims, min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_dense_stacks_shapes_and_gradients(batch, n_in, widths, seed):
    model = L.serial(*[L.serial(L.dense(w), L.tanh) for w in widths])
    params, state = model.init(np.random.default_rng(seed), (None, n_in), dtype=np.float64)
    x = np.random.default_rng(seed + 1).standard_normal((batch, n_in))
    y, _, res = model.fwd(params, state, x)
    assert y.shape == (batch, widths[-1]) == tuple(d or batch for d in model.out_shape((None, n_in)))
    dy = np.random.default_rng(seed + 2).standard_normal(y.shape)
    grads, dx = model.bwd(params, res, dy)
    assert dx.shape == x.shape
    auto = jax.grad(lambda p, v: jnp.sum(model.apply(p, state, v)[0] * dy), argnums=(0, 1))(
        on_backend(params, "jax"), jnp.asarray(x)
    )
    fnn.gradcheck.assert_close({"p": grads, "x": dx}, {"p": auto[0], "x": auto[1]}, tol=1e-10)


@settings(max_examples=15, deadline=None)
@given(batch=dims, sizes=st.lists(dims, min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_fan_combinators_shapes_and_gradients(batch, sizes, seed):
    n = len(sizes)
    model = L.serial(L.fan_out(n), L.parallel(*[L.dense(s) for s in sizes]), L.fan_in_concat())
    params, state = model.init(np.random.default_rng(seed), (None, 3), dtype=np.float64)
    x = np.random.default_rng(seed).standard_normal((batch, 3))
    y, _, res = model.fwd(params, state, x)
    assert y.shape == (batch, sum(sizes))
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    grads, dx = model.bwd(params, res, dy)
    auto = jax.grad(lambda p, v: jnp.sum(model.apply(p, state, v)[0] * dy), argnums=(0, 1))(
        on_backend(params, "jax"), jnp.asarray(x)
    )
    fnn.gradcheck.assert_close({"p": grads, "x": dx}, {"p": auto[0], "x": auto[1]}, tol=1e-10)
