"""rnn, lstm and gru as public API: parameter layout and initialisation, shapes,
one compiled loop whatever T, the manual rule inside jax.grad (bool masks
included), and errors that name the layer and the shapes."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from fnn.core import LayerError
from fnn.layers import recurrent
from tests.helpers import on_backend
from tests.test_recurrent import gradcheck


def test_module_doctest():
    result = doctest.testmod(recurrent, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "layer, shapes",
    [
        (L.rnn(5), {"w_x": (3, 5), "w_h": (5, 5), "b": (5,)}),
        (L.lstm(5), {"w_x": (3, 20), "w_h": (5, 20), "b": (20,)}),
        (L.gru(5), {"w_x": (3, 15), "w_h": (5, 15), "b": (15,), "b_hn": (5,)}),
    ],
    ids=["rnn", "lstm", "gru"],
)
def test_param_layout_and_init(layer, shapes):
    params, state = layer.init(np.random.default_rng(0), (None, 7, 3))
    assert {k: v.shape for k, v in params.items()} == shapes and state == {}
    assert all(v.dtype == np.float32 for v in params.values())
    h = 5
    for k in range(shapes["w_h"][1] // h):  # each gate's recurrent block is orthogonal
        block = params["w_h"][:, k * h : (k + 1) * h]
        np.testing.assert_allclose(block.T @ block, np.eye(h), atol=1e-5)
    expected_b = np.zeros(shapes["b"])
    if layer.name == "lstm":  # gates i, f, g, o: the forget block starts at 1
        expected_b[h : 2 * h] = 1.0
    np.testing.assert_array_equal(params["b"], expected_b)
    assert layer.out_shape((None, 7, 3)) == (None, 5)


def test_init_on_jax_and_options():
    layer = L.lstm(4, forget_bias=0.0, return_sequences=True, name="enc")
    # initializers.orthogonal broadcasts (n, n) * (n,); allow rank promotion for it here
    with jax.numpy_rank_promotion("allow"):
        params, _ = layer.init(jax.random.key(0), (2, 6, 3), dtype=jnp.float64)
    assert isinstance(params["w_h"], jax.Array) and params["w_h"].dtype == jnp.float64
    np.testing.assert_array_equal(params["b"], 0.0)
    assert layer.name == "enc" and layer.out_shape((2, 6, 3)) == (2, 6, 4)
    relu_rnn = L.rnn(3, L.relu, return_sequences=True)
    p, s = relu_rnn.init(np.random.default_rng(1), (2, 4, 2), dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((2, 4, 2)) + 0.5
    gradcheck(relu_rnn, p, s, x)


def _jaxpr_summary(model, t):
    params, state = model.init(np.random.default_rng(0), (2, t, 3))
    params = on_backend(params, "jax")
    x = jnp.zeros((2, t, 3), jnp.float32)
    target = jnp.zeros((2, 1), jnp.float32)
    step = fnn.value_and_grad(model, fnn.losses.mse, method="manual")
    eqns = jax.make_jaxpr(step)(params, state, x, target).eqns
    return len(eqns), [e.primitive.name for e in eqns].count("scan")


@pytest.mark.parametrize("make", [L.rnn, L.lstm, L.gru], ids=["rnn", "lstm", "gru"])
def test_one_compiled_loop_each_way(make):
    """Forward and backward are one lax.scan each, not a loop unrolled T times."""
    model = L.serial(make(4), L.dense(1))
    short, long = _jaxpr_summary(model, 5), _jaxpr_summary(model, 60)
    assert short == long and short[1] == 2


def test_manual_rule_inside_jax_grad_with_bool_mask():
    """fnn.manual_vjp runs the hand-written BPTT inside jax.grad under jit; a
    bool mask gets a None cotangent, which jax accepts."""
    model = L.serial(L.gru(3, return_sequences=True), L.lstm(3))
    params, state = model.init(np.random.default_rng(0), (2, 5, 2), dtype=np.float64)
    params = on_backend(params, "jax")
    rng = np.random.default_rng(1)
    x, h0 = jnp.asarray(rng.standard_normal((2, 5, 2))), jnp.asarray(rng.standard_normal((2, 3)))
    mask = jnp.asarray([[True, True, True, False, False], [True] * 5])

    def loss(m):
        def f(p, x, h0):
            y, _ = m.apply(p, state, {"x": x, "mask": mask, "h0": h0})
            return jnp.sum(jnp.sin(y))

        return f

    manual = jax.jit(jax.grad(loss(fnn.manual_vjp(model)), argnums=(0, 1, 2)))(params, x, h0)
    auto = jax.jit(jax.grad(loss(model), argnums=(0, 1, 2)))(params, x, h0)
    fnn.gradcheck.assert_close(manual, auto, tol=1e-12, names=("manual_vjp", "jax.grad"))
    np.testing.assert_array_equal(manual[1][0, 3:], 0.0)  # padded steps: zero gradient
    # the same model called directly (NumPy here): bwd gives None for the bool mask
    numpy_inputs = {"x": np.asarray(x), "mask": np.asarray(mask), "h0": np.asarray(h0)}
    y, _, res = model.fwd(fnn.backend.to_numpy(params), state, numpy_inputs)
    _, dinp = model.bwd(fnn.backend.to_numpy(params), res, np.ones_like(y))
    assert dinp["mask"] is None and dinp["h0"].shape == (2, 3) and sorted(dinp) == ["h0", "mask", "x"]


# --------------------------------------------------------------------------- #
# Bad input: the layer's name, what was expected and what was given
# --------------------------------------------------------------------------- #


def _lstm_params(features=3, hidden=4):
    layer = L.lstm(hidden)
    return layer, layer.init(np.random.default_rng(0), (2, 5, features))


@pytest.mark.parametrize(
    "inp, fragments",
    [
        (np.zeros((2, 3)), ["lstm", "(batch, time, features)", "(2, 3)"]),
        (np.zeros((2, 5, 3, 1)), ["lstm", "(batch, time, features)", "(2, 5, 3, 1)"]),
        (np.zeros((2, 5, 6)), ["lstm", "6 features", "(3, 16)", "(2, 5, 6)"]),
        (np.zeros((2, 0, 3)), ["lstm", "no time steps"]),
        ({"x": np.zeros((2, 5, 3)), "mask": np.ones((2, 4), bool)}, ["lstm", "mask", "(2, 4)", "(2, 5)"]),
        ({"x": np.zeros((2, 5, 3)), "mask": np.ones((5, 2), bool)}, ["mask", "(5, 2)", "(batch, time)"]),
        ({"x": np.zeros((2, 5, 3)), "c0": np.zeros((2, 3))}, ["lstm", "c0", "(2, 3)", "(2, 4)"]),
        ({"x": np.zeros((2, 5, 3)), "state": np.zeros((2, 4))}, ["lstm", "unexpected keys ['state']", "'h0'"]),
        ({"mask": np.ones((2, 5))}, ["lstm", "no 'x'"]),
        ((np.zeros((2, 5, 3)), np.ones((2, 5))), ["lstm", "tuple of 2 inputs", '{"x": x, "mask": mask}']),
    ],
    ids=["rank2", "rank4", "features", "empty", "mask_time", "mask_transposed", "c0", "unknown_key", "no_x", "tuple"],
)
def test_bad_input(inp, fragments):
    layer, (params, state) = _lstm_params()
    with pytest.raises(LayerError) as err:
        layer.apply(params, state, inp)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_bad_construction_and_shapes():
    with pytest.raises(ValueError, match="gru: hidden must be a positive int; got 0"):
        L.gru(0)
    with pytest.raises(TypeError, match="rnn: activation must be an fnn activation layer"):
        L.rnn(3, activation=np.tanh)
    with pytest.raises(LayerError, match=r"rnn: expected input of shape \(batch, time, features\), got \(None, 4\)"):
        L.rnn(3).init(np.random.default_rng(0), (None, 4))
    with pytest.raises(LayerError, match="the mask and initial state need no params"):
        L.rnn(3).out_shape(((2, 5, 3), (2, 5)))
    gru = L.gru(4)
    params, state = gru.init(np.random.default_rng(0), (2, 5, 3))
    with pytest.raises(LayerError, match=r"gru: the input dict has unexpected keys \['c0'\]"):
        gru.apply(params, state, {"x": np.zeros((2, 5, 3)), "c0": np.zeros((2, 4))})


def test_error_inside_a_stack_names_the_path():
    model = L.serial(L.lstm(4, return_sequences=True), L.lstm(4))
    params, state = model.init(np.random.default_rng(0), (2, 5, 3))
    params["lstm_1"]["w_h"] = np.zeros((4, 4))
    with pytest.raises(LayerError, match=r"^lstm_1: params\['w_h'\] has shape \(4, 4\); expected \(4, 16\)"):
        model.apply(params, state, np.zeros((2, 5, 3)))
