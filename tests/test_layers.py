"""Every core layer on both backends: forward values against a formula written
here, and the hand-written backward against jax.grad and finite differences."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn.kernels.relu import relu_select
from fnn import layers as L
from tests.helpers import assert_gradients, away_from_kinks, init64, on_backend


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


# (id, layer, input shape, reference forward(params, x) in NumPy, nudge away from kinks)
CASES = [
    ("dense", L.dense(3), (4, 5), lambda p, x: x @ p["w"] + p["b"], False),
    ("dense_no_bias", L.dense(2, use_bias=False), (3, 4), lambda p, x: x @ p["w"], False),
    ("identity", L.identity, (3, 4), lambda p, x: x, False),
    ("step", L.step, (3, 4), lambda p, x: (x > 0).astype(x.dtype), True),
    ("sigmoid", L.sigmoid, (3, 4), lambda p, x: 1 / (1 + np.exp(-x)), False),
    ("tanh", L.tanh, (3, 4), lambda p, x: np.tanh(x), False),
    ("relu", L.relu, (3, 4), lambda p, x: np.maximum(x, 0), True),
    ("leaky_relu", L.leaky_relu(0.1), (3, 4), lambda p, x: np.where(x > 0, x, 0.1 * x), True),
    ("elu", L.elu(0.7), (3, 4), lambda p, x: np.where(x > 0, x, 0.7 * (np.exp(np.minimum(x, 0)) - 1)), True),
    ("prelu", L.prelu(0.2), (3, 4), lambda p, x: np.where(x > 0, x, p["alpha"] * x), True),
    ("gelu", L.gelu, (3, 4), lambda p, x: _gelu(x), False),
    ("softplus", L.softplus, (3, 4), lambda p, x: np.log1p(np.exp(x)), False),
    ("softmax", L.softmax, (3, 4), lambda p, x: _softmax(x), False),
    ("log_softmax", L.log_softmax, (3, 4), lambda p, x: np.log(_softmax(x)), False),
    ("flatten", L.flatten, (2, 3, 2, 2), lambda p, x: x.reshape(2, 12), False),
    ("reshape", L.reshape((2, -1)), (2, 6), lambda p, x: x.reshape(2, 2, 3), False),
]
IDS = [c[0] for c in CASES]


def _input(shape, kinks, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    return away_from_kinks(x) if kinks else x


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_formula(case, backend_name):
    _, layer, shape, reference, kinks = case
    params, state = init64(layer, backend_name, shape)
    x = _input(shape, kinks)
    y, new_state = layer.apply(params, state, on_backend(x, backend_name))
    np.testing.assert_allclose(np.asarray(y), reference(fnn.backend.to_numpy(params), x), rtol=1e-12, atol=1e-12)
    assert new_state == state


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_autodiff_and_finite_differences(case, backend_name):
    _, layer, shape, _, kinks = case
    params, state = init64(layer, backend_name, shape)
    x = on_backend(_input(shape, kinks, seed=1), backend_name)
    assert_gradients(layer, params, state, x)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_numpy_backend_stays_numpy(case):
    _, layer, shape, _, kinks = case
    params, state = layer.init(np.random.default_rng(0), shape)
    for leaf in fnn.backend.tree_leaves(params):
        assert type(leaf) is np.ndarray and leaf.dtype == np.float32
    x = _input(shape, kinks).astype(np.float32)
    y, _, res = layer.fwd(params, state, x)
    assert type(y) is np.ndarray and y.dtype == np.float32
    dy = np.random.default_rng(2).standard_normal(y.shape)
    grads, dx = layer.bwd(params, res, dy.astype(np.float32))
    assert type(dx) is np.ndarray and dx.dtype == np.float32
    for leaf in fnn.backend.tree_leaves(grads):
        assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32
    # the values: float32 rounding of the float64 rule (proven against jax.grad above)
    p64 = fnn.backend.tree_cast(params, np.float64)
    _, _, res64 = layer.fwd(p64, state, x.astype(np.float64))
    grads64, dx64 = layer.bwd(p64, res64, dy)
    np.testing.assert_allclose(dx, dx64, rtol=1e-4, atol=1e-5)
    for got, want in zip(fnn.backend.tree_leaves(grads), fnn.backend.tree_leaves(grads64)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backends_agree_on_the_same_params(case):
    _, layer, shape, _, kinks = case
    params, state = init64(layer, "numpy", shape)
    x = _input(shape, kinks, seed=2)
    y_np, _, res_np = layer.fwd(params, state, x)
    y_jx, _, res_jx = layer.fwd(on_backend(params, "jax"), state, jnp.asarray(x))
    assert isinstance(y_jx, jax.Array)
    chex.assert_trees_all_close(np.asarray(y_jx), y_np, rtol=1e-13, atol=1e-14)
    dy = np.random.default_rng(3).standard_normal(y_np.shape)
    g_np = layer.bwd(params, res_np, dy)
    g_jx = layer.bwd(on_backend(params, "jax"), res_jx, jnp.asarray(dy))
    chex.assert_trees_all_close(fnn.backend.to_numpy(g_jx), g_np, rtol=1e-12, atol=1e-14)


def test_init_key_decides_backend():
    layer = L.dense(3)
    p_np, _ = layer.init(np.random.default_rng(0), (None, 2))
    p_jx, _ = layer.init(jax.random.key(0), (None, 2))
    assert type(p_np["w"]) is np.ndarray and isinstance(p_jx["w"], jax.Array)
    p_raw, _ = layer.init(jax.random.PRNGKey(0), (None, 2))  # legacy raw keys work too
    assert isinstance(p_raw["w"], jax.Array)


def test_dense_init_dtype_and_defaults():
    params, state = L.dense(4).init(np.random.default_rng(0), (None, 100), dtype=np.float64)
    assert params["w"].dtype == np.float64 and state == {}
    np.testing.assert_array_equal(params["b"], np.zeros(4))
    assert abs(params["w"].std() - 1 / math.sqrt(100)) < 0.03  # LeCun normal by default


# --------------------------------------------------------------------------- #
# Numerical stability and kink conventions
# --------------------------------------------------------------------------- #

EXTREME = np.array([-1e4, -800.0, -50.0, -1e-8, 0.0, 1e-8, 50.0, 800.0, 1e4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_softplus_are_stable_for_huge_inputs(dtype):
    x = EXTREME.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # overflow, 0/0 or log(0) raise (underflow to 0 is harmless)
        s = fnn.functional.sigmoid(x)
        sp = fnn.functional.softplus(x)
        ls = fnn.functional.log_sigmoid(x)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(sp)) and np.all(np.isfinite(ls))
    np.testing.assert_allclose(s[[0, -1]], [0.0, 1.0])
    np.testing.assert_allclose(sp[[0, -1]], [0.0, 1e4], rtol=1e-7)
    np.testing.assert_allclose(s[4], 0.5)
    # the JAX backend gives the same, gradients included
    sj = fnn.functional.sigmoid(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(sj), s, rtol=1e-6)
    g = jax.grad(lambda v: fnn.functional.softplus(v).sum())(jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(g)))


def test_elu_softmax_log_softmax_stable():
    x = np.array([[-1e4, 0.0, 1e4], [800.0, 800.0, -800.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.all(np.isfinite(fnn.functional.elu(x)))
        assert np.all(np.isfinite(fnn.functional.softmax(x)))
        assert np.all(np.isfinite(fnn.functional.log_softmax(x[:, :2])))


@pytest.mark.parametrize(
    "layer, expected",
    [(L.relu, 0.0), (L.step, 0.0), (L.leaky_relu(0.1), 0.1), (L.elu(0.5), 0.5), (L.prelu(0.3), 0.3), (L.sigmoid, 0.25), (L.softplus, 0.5)],
    ids=["relu", "step", "leaky_relu", "elu", "prelu", "sigmoid", "softplus"],
)
def test_derivative_at_zero_is_the_same_in_bwd_and_jax_grad(layer, expected):
    params, state = layer.init(jax.random.key(0), (1, 1), dtype=np.float64)
    x = jnp.zeros((1, 1))
    _, _, res = layer.fwd(params, state, x)
    _, dx = layer.bwd(params, res, jnp.ones((1, 1)))
    auto = jax.grad(lambda v: layer.apply(params, state, v)[0].sum())(x)
    assert float(dx[0, 0]) == pytest.approx(expected)
    assert float(auto[0, 0]) == pytest.approx(expected)


def test_activations_are_plain_functions_too():
    x = np.array([-2.0, 0.5])
    np.testing.assert_allclose(L.relu(x), [0.0, 0.5])
    np.testing.assert_allclose(L.leaky_relu(0.1)(x), [-0.2, 0.5])
    np.testing.assert_allclose(L.sigmoid(x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(fnn.functional.prelu(x, 0.5), [-1.0, 0.5])


def test_linear_layers_collapse_to_one_linear_layer():
    """Without a non-linearity, dense(dense(x)) is one affine map (the curriculum's point)."""
    model = L.serial(L.dense(5), L.dense(3))
    params, state = model.init(np.random.default_rng(0), (None, 4), dtype=np.float64)
    w = params["dense"]["w"] @ params["dense_1"]["w"]
    b = params["dense"]["b"] @ params["dense_1"]["w"] + params["dense_1"]["b"]
    x = np.random.default_rng(1).standard_normal((6, 4))
    np.testing.assert_allclose(model.apply(params, state, x)[0], x @ w + b, rtol=1e-12)


# --------------------------------------------------------------------------- #
# NumPy fast paths (the same numbers as the plain expressions, bit for bit)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype, bits", [(np.float16, np.uint16), (np.float32, np.uint32), (np.float64, np.uint64)])
def test_relu_numpy_fast_paths_equal_where_bit_for_bit(dtype, bits):
    rng = np.random.default_rng(0)
    special = [np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 1.0]
    x = np.concatenate([np.array(special, dtype), rng.standard_normal(200).astype(dtype)]).reshape(9, 23)
    dy = np.concatenate([np.array(special[::-1], dtype), rng.standard_normal(200).astype(dtype)]).reshape(9, 23)
    y = fnn.functional.relu(x)
    assert type(y) is np.ndarray and y.dtype == dtype
    np.testing.assert_array_equal(y.view(bits), np.where(x <= 0, 0.0, x).astype(dtype).view(bits))
    assert np.isnan(y[0, 0])  # NaN passes through
    dx = relu_select(x, dy, implementation="numpy")
    assert type(dx) is np.ndarray and dx.dtype == dtype
    np.testing.assert_array_equal(dx.view(bits), np.where(x <= 0, 0.0, dy).astype(dtype).view(bits))
    np.testing.assert_array_equal(dx.view(bits), relu_select(x, dy, implementation="xla").view(bits))
    for a in (x, dy[:, ::2]):  # transposed and strided inputs too
        b = rng.standard_normal(a.T.shape).astype(dtype).T
        np.testing.assert_array_equal(relu_select(a, b), np.where(a <= 0, 0.0, b))
    y_layer, _, res = L.relu.fwd({}, {}, x)
    _, dx_layer = L.relu.bwd({}, res, dy)
    np.testing.assert_array_equal(y_layer, y)
    np.testing.assert_array_equal(dx_layer, dx)
    assert x.flags.writeable and np.isnan(x[0, 0])  # the input is untouched
    assert np.asarray(fnn.functional.relu(np.array(-2.0, dtype))).shape == ()
    assert np.asarray(relu_select(np.array(2.0), np.array(3.0, dtype))) == 3.0
    with pytest.raises(TypeError, match=r"implementation='numpy'\) needs NumPy float arrays"):
        relu_select(jnp.ones(2), jnp.ones(2), implementation="numpy")


def test_dense_numpy_forward_leaves_its_inputs_alone():
    layer = L.dense(4)
    params, state = layer.init(np.random.default_rng(0), (None, 3))
    params["b"] = np.arange(4, dtype=np.float32)
    x = np.ones((2, 3), np.float32)
    before = fnn.backend.tree_map(np.copy, (params, x))
    y, _, _ = layer.fwd(params, state, x)
    np.testing.assert_allclose(y, x @ params["w"] + params["b"], rtol=1e-6)
    for a, b in zip(fnn.backend.tree_leaves(before), fnn.backend.tree_leaves((params, x))):
        np.testing.assert_array_equal(a, b)
    y64, _, _ = layer.fwd(fnn.backend.tree_cast(params, np.float64), state, x)  # mixed dtypes promote
    assert y64.dtype == np.float64


def test_input_grad_false_skips_only_the_model_inputs_cotangent():
    model = L.serial(L.dense(3), L.tanh, L.dense(2))
    params, state = model.init(np.random.default_rng(0), (None, 4), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((5, 4))
    _, _, res = model.fwd(params, state, x)
    dy = np.random.default_rng(2).standard_normal((5, 2))
    grads, dx = model.bwd(params, res, dy)
    skipped_grads, skipped = model.bwd(params, res, dy, input_grad=False)
    assert skipped is None and dx.shape == x.shape
    # every parameter gradient, the second dense's (which needs the tanh's dx) included, is unchanged
    for a, b in zip(fnn.backend.tree_leaves(grads), fnn.backend.tree_leaves(skipped_grads)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(dx, (dy @ params["dense_1"]["w"].T * (1 - np.tanh(x @ params["dense"]["w"]) ** 2))
                               @ params["dense"]["w"].T)


NAN_ACTIVATIONS = ["identity", "step", "sigmoid", "tanh", "relu", "gelu", "softplus", "softmax", "log_softmax",
                   "silu", "gelu_exact"]


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
@pytest.mark.parametrize("layer", [*NAN_ACTIVATIONS, "leaky_relu", "elu", "prelu"])
def test_nan_propagates_through_every_activation(layer, xp):
    """A NaN input is never turned into a confident number (jax.nn and PyTorch keep it)."""
    act = getattr(L, layer) if layer in NAN_ACTIVATIONS else getattr(L, layer)()
    params, state = act.init(fnn.key(0, backend="numpy" if xp is np else "jax"), (None, 3))
    x = xp.asarray(np.array([[np.nan, -1.0, 2.0], [0.5, -0.5, 0.0]]))
    y, _ = act.apply(params, state, x)
    y = np.asarray(y)
    assert np.isnan(y[0, 0]), (layer, y)
    if layer not in ("softmax", "log_softmax"):  # the row with no NaN stays finite
        assert np.all(np.isfinite(y[1])) and np.all(np.isfinite(y[0, 1:]))
    if layer in ("relu", "step", "identity", "leaky_relu", "elu", "prelu", "tanh", "sigmoid"):
        _, _, res = act.fwd(params, state, x)
        assert np.all(np.isfinite(np.asarray(act.bwd(params, res, xp.ones_like(x))[1])[1]))


def test_a_nan_input_gives_a_nan_prediction_not_a_confident_one():
    model = fnn.models.mlp((8,), num_classes=3)
    params, state = model.init(jax.random.key(0), (None, 4))
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    logits = np.asarray(fnn.train.predict(model, params, state, x))
    assert np.all(np.isnan(logits[0])) and np.all(np.isfinite(logits[1]))


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_dense_acts_on_the_last_axis_of_any_rank(backend_name):
    layer = L.dense(3)
    assert layer.out_shape((None, 5, 4)) == (None, 5, 3) and layer.out_shape((2, 6, 5, 4)) == (2, 6, 5, 3)
    params, state = init64(layer, backend_name, (None, 7, 4))
    x = on_backend(away_from_kinks(np.random.default_rng(0).standard_normal((2, 7, 4))), backend_name)
    y, _ = layer.apply(params, state, x)
    rows, _ = layer.apply(params, state, x.reshape(14, 4))
    np.testing.assert_allclose(np.asarray(y).reshape(14, 3), np.asarray(rows), rtol=1e-12)
    assert_gradients(layer, params, state, x)
