"""The cases the other gradient tests never tried, each aimed at a bug that
once passed every test (``tests/mutation`` plants them): rectangular pooling
windows and strides, concatenation on every axis, every optimizer option that
changes the first step, the weight-decay mask over every built-in layer's
parameter names, 16-bit reductions at realistic sizes, and ``manual_vjp`` in
train mode and with 16-bit params. Shapes are asymmetric (batch != channels
!= height != width) so that a swap of two axes changes the answer."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import fnn
from fnn import gradcheck, optim
from fnn import layers as L
from fnn.kernels import conv as conv_kernels

BACKENDS = ("numpy", "jax")


def _as(backend_name, tree):
    to = np.asarray if backend_name == "numpy" else jnp.asarray
    return jax.tree.map(to, tree)


def _manual_vs_autodiff(layer, x, backend_name, *, seed=0):
    """The worst per-leaf relative error of the layer's bwd against jax.grad, float64."""
    params, state = layer.init(np.random.default_rng(seed), jax.tree.map(np.shape, x) if isinstance(x, tuple)
                               else np.shape(x), dtype=np.float64)
    report = gradcheck.check_layer(layer, _as(backend_name, params), _as(backend_name, state), _as(backend_name, x),
                                   methods=("autodiff",), seed=seed)
    return report.max_error("manual", "autodiff")


# --------------------------------------------------------------------------- #
# pooling: rectangular windows and strides, ties, unequal paddings
# --------------------------------------------------------------------------- #

POOLS = [
    ("max (2, 3) tiled", lambda: L.max_pool((2, 3)), (2, 4, 9, 3)),
    ("max (3, 2) stride (1, 2) overlapping", lambda: L.max_pool((3, 2), stride=(1, 2)), (3, 6, 7, 2)),
    ("max (2, 3) padding ((1, 0), (0, 2))", lambda: L.max_pool((2, 3), padding=((1, 0), (0, 2))), (2, 5, 7, 3)),
    ("max 1-D 3 stride 2", lambda: L.max_pool((3,), stride=(2,)), (3, 9, 2)),
    ("max 3-D (1, 2, 3)", lambda: L.max_pool((1, 2, 3)), (2, 3, 4, 6, 3)),
    ("avg (2, 3) tiled", lambda: L.avg_pool((2, 3)), (2, 4, 9, 3)),
    ("avg (3, 2) same stride (2, 1)", lambda: L.avg_pool((3, 2), stride=(2, 1), padding="same"), (3, 7, 5, 2)),
    ("avg (2, 3) padding ((0, 1), (2, 1))", lambda: L.avg_pool((2, 3), stride=(1, 2), padding=((0, 1), (2, 1))),
     (2, 5, 6, 3)),
]


@pytest.mark.parametrize("name, build, shape", POOLS, ids=[p[0] for p in POOLS])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_pooling_backward_on_rectangular_windows(name, build, shape, backend_name):
    x = np.random.default_rng(3).standard_normal(shape)
    assert _manual_vs_autodiff(build(), x, backend_name) < 1e-12


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("stride", [None, (1, 2)])
def test_max_pool_ties_go_to_the_first_maximum(backend_name, stride):
    """Inputs with many ties (kinks of max): the whole cotangent goes to the first maximum, as under jax.grad."""
    x = np.random.default_rng(4).integers(0, 2, size=(2, 4, 6, 3)).astype(np.float64)
    assert _manual_vs_autodiff(L.max_pool((2, 3), stride=stride), x, backend_name) < 1e-12


def test_max_pool_backward_values_by_hand():
    """One example, one channel, a (1, 3) window over a 2 x 6 image: dy lands on each window's maximum."""
    x = np.array([[3.0, 1.0, 2.0, 0.0, 5.0, 5.0], [1.0, 4.0, 0.0, 2.0, 2.0, 1.0]]).reshape(1, 2, 6, 1)
    layer = L.max_pool((1, 3))
    for backend_name in BACKENDS:
        _, _, res = layer.fwd({}, {}, _as(backend_name, x))
        dy = np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 2, 2, 1)
        _, dx = layer.bwd({}, res, _as(backend_name, dy))
        expected = np.array([[10.0, 0, 0, 0, 20.0, 0], [0, 30.0, 0, 40.0, 0, 0]]).reshape(1, 2, 6, 1)
        np.testing.assert_array_equal(np.asarray(dx), expected)


# --------------------------------------------------------------------------- #
# fan_in_concat on every axis
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("axis", [1, 2, 3, -1, -2, -3])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_fan_in_concat_backward_on_every_axis(axis, backend_name):
    base = [2, 3, 4, 5]
    shapes = []
    for size in (1, 3, 2):
        s = list(base)
        s[axis] = size
        shapes.append(tuple(s))
    rng = np.random.default_rng(5)
    xs = tuple(rng.standard_normal(s) for s in shapes)
    layer = L.fan_in_concat(axis)
    _, _, res = layer.fwd({}, {}, _as(backend_name, xs))
    dy = rng.standard_normal(layer.out_shape(shapes))
    _, dxs = layer.bwd({}, res, _as(backend_name, dy))
    expected = np.split(dy, np.cumsum([s[axis] for s in shapes])[:-1], axis=axis)
    for got, want in zip(dxs, expected):
        np.testing.assert_array_equal(np.asarray(got), want)


# --------------------------------------------------------------------------- #
# optimizers: every option that changes the first step
# --------------------------------------------------------------------------- #

G = {"w": np.array([[0.5, -2.0, 3.0]]), "b": np.array([-0.25, 1.5])}
P = {"w": np.array([[1.0, -1.0, 2.0]]), "b": np.array([0.5, -3.0])}


def _first_two(opt, backend_name):
    """The updates of two steps from P with gradients G and then 3 G."""
    params, grads = _as(backend_name, P), _as(backend_name, G)
    state = opt.init(params)
    u1, state = opt.update(grads, state, params)
    u2, _ = opt.update(jax.tree.map(lambda g: 3 * g, grads), state, params)
    return jax.tree.map(np.asarray, u1), jax.tree.map(np.asarray, u2)


def _rms(g, p, decay=0.8, eps=1e-3, v0=0.5):
    v1 = decay * v0 + (1 - decay) * g * g
    v2 = decay * v1 + (1 - decay) * 9 * g * g
    return g / (np.sqrt(v1) + eps), 3 * g / (np.sqrt(v2) + eps)


def _adagrad(g, p, h0=0.7, eps=1e-3):
    h1 = h0 + g * g
    h2 = h1 + 9 * g * g
    return g / (np.sqrt(h1) + eps), 3 * g / (np.sqrt(h2) + eps)


def _adam(g, p, b1=0.8, b2=0.95, eps=1e-2):
    m1, v1 = (1 - b1) * g, (1 - b2) * g * g
    m2, v2 = b1 * m1 + (1 - b1) * 3 * g, b2 * v1 + (1 - b2) * 9 * g * g
    step = lambda m, v, t: (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)  # noqa: E731
    return step(m1, v1, 1), step(m2, v2, 2)


def _trace(g, p, decay=0.7, nesterov=False):
    v1 = g
    v2 = decay * v1 + 3 * g
    return (g + decay * v1, 3 * g + decay * v2) if nesterov else (v1, v2)


OPTIONS = [
    ("scale_by_rms initial_scale", lambda: optim.scale_by_rms(decay=0.8, eps=1e-3, initial_scale=0.5),
     lambda g, p: _rms(g, p)),
    ("scale_by_adagrad initial_accumulator_value", lambda: optim.scale_by_adagrad(initial_accumulator_value=0.7, eps=1e-3),
     lambda g, p: _adagrad(g, p)),
    ("scale_by_adam b1 b2 eps", lambda: optim.scale_by_adam(b1=0.8, b2=0.95, eps=1e-2), lambda g, p: _adam(g, p)),
    ("trace", lambda: optim.trace(0.7), lambda g, p: _trace(g, p)),
    ("trace nesterov", lambda: optim.trace(0.7, nesterov=True), lambda g, p: _trace(g, p, nesterov=True)),
    ("add_decayed_weights", lambda: optim.add_decayed_weights(0.3), lambda g, p: (g + 0.3 * p, 3 * g + 0.3 * p)),
    ("clip", lambda: optim.clip(1.0), lambda g, p: (np.clip(g, -1, 1), np.clip(3 * g, -1, 1))),
    ("sgd lr momentum", lambda: optim.sgd(0.1, momentum=0.7), lambda g, p: tuple(-0.1 * u for u in _trace(g, p))),
    ("sgd nesterov", lambda: optim.sgd(0.1, momentum=0.7, nesterov=True),
     lambda g, p: tuple(-0.1 * u for u in _trace(g, p, nesterov=True))),
    ("rmsprop", lambda: optim.rmsprop(0.1, decay=0.8, eps=1e-3),
     lambda g, p: tuple(-0.1 * u for u in _rms(g, p, v0=0.0))),
    ("adagrad", lambda: optim.adagrad(0.1, eps=1e-3, initial_accumulator_value=0.7),
     lambda g, p: tuple(-0.1 * u for u in _adagrad(g, p))),
    ("adam", lambda: optim.adam(0.1, b1=0.8, b2=0.95, eps=1e-2), lambda g, p: tuple(-0.1 * u for u in _adam(g, p))),
    ("adamw", lambda: optim.adamw(0.1, b1=0.8, b2=0.95, eps=1e-2, weight_decay=0.3),
     lambda g, p: tuple(-0.1 * (u + 0.3 * p) for u in _adam(g, p))),
]


@pytest.mark.parametrize("name, make, formula", OPTIONS, ids=[o[0] for o in OPTIONS])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_first_two_updates_follow_the_formula(name, make, formula, backend_name):
    u1, u2 = _first_two(make(), backend_name)
    e1, e2 = {k: formula(G[k], P[k])[0] for k in G}, {k: formula(G[k], P[k])[1] for k in G}
    for k in G:
        np.testing.assert_allclose(u1[k], e1[k], rtol=1e-12, err_msg=f"{name}: first update of {k}")
        np.testing.assert_allclose(u2[k], e2[k], rtol=1e-12, err_msg=f"{name}: second update of {k}")


def test_scale_by_rms_initial_scale_changes_the_first_step():
    """With v0 = 1 and a small gradient the step is ~g, far from Adam-like sign(g)."""
    opt = optim.scale_by_rms(decay=0.9, eps=1e-8, initial_scale=1.0)
    u, _ = opt.update({"w": np.array([0.01])}, opt.init({"w": np.zeros(1)}))
    np.testing.assert_allclose(u["w"], 0.01 / (np.sqrt(0.9 + 0.1 * 1e-4) + 1e-8), rtol=1e-12)


# --------------------------------------------------------------------------- #
# the weight-decay mask over every parameter of the built-in layers
# --------------------------------------------------------------------------- #

MODELS_WITH_EVERY_PARAM = [
    (L.serial(L.dense(4), L.prelu(), L.layer_norm(), L.rms_norm(), L.dense(3, use_bias=False)), (2, 5)),
    (L.serial(L.conv2d(4, (2, 3)), L.batch_norm(), L.group_norm(2), L.conv_transpose(2, 2)), (2, 6, 7, 3)),
    (L.serial(L.lstm(3, return_sequences=True), L.gru(4, return_sequences=True), L.rnn(2, return_sequences=True),
              L.bidirectional(L.gru(2, return_sequences=True))), (2, 5, 3)),
    (L.serial(L.multi_head_attention(2), L.transformer_block(2, 8)), (2, 4, 6)),
    (L.serial(L.embedding(7, 4)), (2, 3)),
]


def _every_leaf():
    for model, shape in MODELS_WITH_EVERY_PARAM:
        params, _ = model.init(np.random.default_rng(0), shape)
        yield from fnn.backend.tree_leaves_with_path(params)


def test_decay_mask_decays_kernels_only_for_every_built_in_parameter():
    """Matrices and kernels (ndim >= 2, not named b / bias / scale) decay; biases, norms' scales,
    the GRU's b_hn, prelu's slope and every other vector or scalar do not."""
    names = set()
    for path, leaf in _every_leaf():
        name = path.rsplit("/", 1)[-1]
        names.add(name)
        expected = np.ndim(leaf) >= 2 and name not in ("b", "bias", "scale")
        assert optim.decay_mask(path, leaf) == expected, (path, np.shape(leaf))
    # the walk really met every kind of parameter the built-in layers have
    assert {"w", "b", "alpha", "scale", "bias", "w_x", "w_h", "b_hn"} <= names, names


def test_adamw_leaves_1d_params_alone_with_the_decay_mask():
    model = L.gru(3)
    params, _ = model.init(np.random.default_rng(0), (2, 4, 2), dtype=np.float64)
    zeros = jax.tree.map(np.zeros_like, params)
    opt = optim.add_decayed_weights(0.5, mask=optim.decay_mask)
    updates, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_array_equal(updates["b_hn"], 0.0)
    np.testing.assert_array_equal(updates["b"], 0.0)
    np.testing.assert_allclose(updates["w_h"], 0.5 * params["w_h"])


# --------------------------------------------------------------------------- #
# 16-bit floats: large norms and long reductions
# --------------------------------------------------------------------------- #

DTYPES16 = [np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES16, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_global_norm_of_16_bit_gradients(dtype, backend_name):
    """4096 entries of about 300 (squares over float16's largest value 65504) and a
    long reduction of unequal values: the norm is finite and float32-accurate."""
    rng = np.random.default_rng(6)
    leaves = {"big": (300 + rng.uniform(0, 10, size=(64, 64))).astype(dtype),
              "long": rng.uniform(0.5, 1.5, size=(50_000,)).astype(dtype)}
    exact = np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in leaves.values()))
    got = optim.global_norm(_as(backend_name, leaves))
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), exact, rtol=1e-5)


def _conv_case(dtype):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(3, 9, 11, 4)).astype(np.float64)
    w = rng.uniform(-1, 1, size=(3, 2, 4, 5)).astype(np.float64)
    dy = rng.uniform(-1, 1, size=(3, 7, 10, 5)).astype(np.float64)
    # inputs rounded to 16 bits first: the reference sees the same numbers, in float64
    x, w, dy = (a.astype(dtype).astype(np.float64) for a in (x, w, dy))
    return x, w, dy


@pytest.mark.parametrize("form", ["taps", "matmul", "blocks", "col2im"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_cpu_convolution_forms_accumulate_16_bit_inputs_in_float32(form, dtype):
    """Each form's y, dw and dx of 16-bit inputs: the float64 result rounded once to
    16 bits (at most one rounding off), not 16-bit partial sums (dw sums 210 products per entry)."""
    x, w, dy = _conv_case(dtype)
    pads = ((0, 0), (0, 0))
    exact = {
        "y": conv_kernels.conv_forward(x, w, strides=(1, 1), padding=pads)[0],
        "dw": conv_kernels.conv_dw(x, dy, (3, 2), strides=(1, 1), padding=pads),
        "dx": conv_kernels.conv_dx(dy, w, x.shape, strides=(1, 1), padding=pads),
    }
    xj, wj, dyj = (jnp.asarray(a, dtype) for a in (x, w, dy))
    got = {
        "y": conv_kernels.conv_forward(xj, wj, strides=(1, 1), padding=pads, implementation=form)[0],
        "dw": conv_kernels.conv_dw(xj, dyj, (3, 2), strides=(1, 1), padding=pads, implementation=form),
        "dx": conv_kernels.conv_dx(dyj, wj, x.shape, strides=(1, 1), padding=pads, implementation=form),
    }
    eps = float(jnp.finfo(dtype).eps)
    for piece in exact:
        assert got[piece].dtype == dtype
        err = np.abs(np.asarray(got[piece], np.float64) - exact[piece])
        # one rounding of the exact value: within half an ulp of its magnitude (plus a hair)
        bound = 0.5 * eps * np.abs(exact[piece]) * 1.01 + 1e-12
        assert np.all(err <= np.maximum(bound, 0.5 * eps * 2.0**-14)), (piece, float(np.max(err / (eps * np.abs(exact[piece]) + 1e-30))))


# --------------------------------------------------------------------------- #
# manual_vjp: train mode, and 16-bit params
# --------------------------------------------------------------------------- #


def _train_model():
    return L.serial(L.dense(6), L.batch_norm(momentum=0.5), L.relu, L.dropout(0.4), L.dense(3))


def test_manual_vjp_in_train_mode_with_batch_norm_and_dropout():
    model = _train_model()
    wrapped = fnn.manual_vjp(model)
    key = jax.random.key(3)
    params, state = model.init(jax.random.key(0), (5, 4), dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(8).standard_normal((5, 4)))
    y_ref, state_ref = model.apply(params, state, x, key=key, train=True)
    y, new_state = wrapped.apply(params, state, x, key=key, train=True)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12), new_state, state_ref)
    assert not np.allclose(np.asarray(state_ref["batch_norm"]["mean"]), 0.0)  # train mode really moved the state

    def loss(layer):
        return lambda p, x: jnp.sum(jnp.tanh(layer.apply(p, state, x, key=key, train=True)[0]) ** 2)

    g_manual = jax.jit(jax.grad(loss(wrapped), argnums=(0, 1)))(params, x)
    g_auto = jax.jit(jax.grad(loss(model), argnums=(0, 1)))(params, x)
    # floor 1e-6: the first dense's bias feeds batch norm, so its gradient is round-off around 0
    gradcheck.assert_close(g_manual, g_auto, tol=1e-10, floor=1e-6, names=("manual_vjp", "jax.grad"))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_manual_vjp_returns_each_gradient_in_its_params_dtype(dtype):
    """16-bit params with a float32 input: the layers compute in float32, and the
    gradients come back in each parameter's own dtype, as jax.grad gives them."""
    model = L.serial(L.dense(5), L.layer_norm(), L.tanh, L.dense(2))
    params, state = model.init(jax.random.key(0), (4, 3), dtype=jnp.float32)
    params = {**params, "dense": jax.tree.map(lambda a: a.astype(dtype), params["dense"])}
    x = jnp.asarray(np.random.default_rng(9).standard_normal((4, 3)), jnp.float32)

    def loss(layer):
        return lambda p: jnp.sum(layer.apply(p, state, x)[0].astype(jnp.float32) ** 2)

    g_manual = jax.jit(jax.grad(loss(fnn.manual_vjp(model))))(params)
    g_auto = jax.jit(jax.grad(loss(model)))(params)
    for (path, g), (_, p), (_, a) in zip(*(fnn.backend.tree_leaves_with_path(t) for t in (g_manual, params, g_auto))):
        assert g.dtype == p.dtype == a.dtype, (path, g.dtype, p.dtype)
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(a, np.float32), rtol=2e-2, atol=2e-2)


def test_value_and_grad_returns_each_gradient_in_its_params_dtype():
    model = L.serial(L.dense(5), L.tanh, L.dense(2))
    params, state = model.init(np.random.default_rng(0), (4, 3), dtype=np.float32)
    params = {**params, "dense": jax.tree.map(lambda a: a.astype(np.float16), params["dense"])}
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    (_, _), grads = fnn.value_and_grad(model, fnn.losses.mse)(params, state, x, np.zeros((4, 2), np.float32))
    assert grads["dense"]["w"].dtype == np.float16 and grads["dense_1"]["w"].dtype == np.float32


def test_value_and_grad_runs_the_model_in_train_mode():
    """Both methods: batch statistics (the running state moves) and dropout with the key, the same values."""
    model = _train_model()
    params, state = model.init(jax.random.key(0), (6, 4), dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(10).standard_normal((6, 4)))
    target = jnp.asarray(np.random.default_rng(11).standard_normal((6, 3)))
    key = jax.random.key(5)
    results = {m: jax.jit(fnn.value_and_grad(model, fnn.losses.mse, m))(params, state, x, target, key=key)
               for m in ("manual", "autodiff")}
    (loss, new_state), grads = results["manual"]
    (loss_a, new_state_a), grads_a = results["autodiff"]
    eval_loss = fnn.losses.mse(model.apply(params, state, x)[0], target)
    assert not np.isclose(float(loss), float(eval_loss))
    np.testing.assert_allclose(float(loss), float(loss_a), rtol=1e-12)
    assert not np.allclose(np.asarray(new_state["batch_norm"]["mean"]), 0.0)
    gradcheck.assert_close(new_state, new_state_a, tol=1e-12, names=("manual state", "autodiff state"))
    gradcheck.assert_close(grads, grads_a, tol=1e-8, floor=1e-6, names=("manual", "autodiff"))  # dense/b: round-off


SUM_POOL_FORMS = [  # (form, window, strides, padding, input)
    ("xla", (2, 3), (1, 2), ((1, 0), (0, 2)), (2, 5, 7, 3)),
    ("xla", (3, 2), (2, 1), ((0, 2), (1, 0)), (3, 6, 5, 2)),
    ("patches", (2, 3), (1, 2), ((1, 0), (0, 2)), (2, 5, 7, 3)),
    ("tiles", (2, 3), (2, 3), ((1, 1), (0, 2)), (2, 4, 7, 3)),
]


@pytest.mark.parametrize("form, window, strides, padding, shape", SUM_POOL_FORMS)
def test_sum_pool_backward_forms_with_unequal_paddings(form, window, strides, padding, shape):
    """Every form of a sum window's backward on JAX arrays is the transpose of reduce_window's sum."""
    from fnn.kernels import pool as pool_kernels

    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.standard_normal(shape))
    y, vjp = jax.vjp(lambda a: pool_kernels.xla_reduce_window(a, "sum", window, strides, padding), x)
    dy = jnp.asarray(rng.standard_normal(y.shape))
    got = pool_kernels.sum_pool_dx(dy, shape, window, strides=strides, padding=padding, implementation=form)
    np.testing.assert_allclose(np.asarray(got), np.asarray(vjp(dy)[0]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("implementation, backend_name",
                         [("auto", "numpy"), ("xla", "numpy"), ("numpy", "numpy"), ("auto", "jax"), ("xla", "jax")])
def test_scatter_add_rows_adds_repeated_ids_in_every_form(implementation, backend_name):
    """Embedding's backward: rows used several times get the sum of their cotangents, in every form."""
    from fnn.kernels.scatter import scatter_add_rows

    ids = np.array([3, 0, 3, 3, 1, 0])
    values = np.random.default_rng(13).standard_normal((6, 2))
    want = np.zeros((5, 2))
    for i, v in zip(ids, values):
        want[i] += v
    got = scatter_add_rows(*_as(backend_name, (ids, values)), 5, implementation=implementation)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("implementation", ["im2col", "xla"])
@pytest.mark.parametrize("groups, dilation", [(2, (1, 1)), (3, (2, 1))])
def test_grouped_convolution_in_every_implementation_on_jax(implementation, groups, dilation):
    """Grouped (and dilated) convolutions on JAX arrays in each form the layer can be asked for:
    the matrix forms regroup their columns, which a single group never exercises."""
    layer = L.conv2d(2 * groups, (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), dilation=dilation, groups=groups,
                     implementation=implementation)
    x = np.random.default_rng(14).standard_normal((2, 7, 6, 2 * groups))
    assert _manual_vs_autodiff(layer, x, "jax") < 1e-12


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_rrelu_in_train_mode_uses_its_drawn_slopes_backward(backend_name):
    layer = L.rrelu(0.1, 0.4)
    x = np.random.default_rng(15).standard_normal((3, 5))
    key = fnn.key(2, backend=backend_name)
    report = gradcheck.check_layer(layer, {}, {}, _as(backend_name, x), key=key, train=True, methods=("autodiff",))
    assert report.max_error("manual", "autodiff") < 1e-12
