"""The sequence layers: embedding, rms_norm, group_norm, silu, gelu_exact,
sinusoidal_positions and bidirectional. Each: its formula against a direct
computation, its hand-written backward against jax.grad and finite
differences in float64 on both backends (batch != time != features), its
errors, and PyTorch's counterpart where PyTorch is installed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import functional as F
from fnn import initializers as I
from fnn import layers as L
from fnn.core import LayerError
from fnn.layers.bidirectional import _reversal
from tests.helpers import TOL, assert_gradients, init64, on_backend

# --------------------------------------------------------------------------- #
# embedding
# --------------------------------------------------------------------------- #

IDS = np.array([[1, 4, 1], [6, 0, 4]])  # batch 2, time 3; rows 1 and 4 used twice, 2, 3, 5 never


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4)])
def test_embedding_looks_up_rows_for_ids_of_any_shape(shape, backend_name, key, rng):
    layer = L.embedding(10, 4)
    params, state = layer.init(key, shape)
    assert params["w"].shape == (10, 4) and params["w"].dtype == np.float32 and state == {}
    ids = rng.integers(0, 10, shape)
    y, _ = layer.apply(params, state, on_backend(ids, backend_name))
    assert y.shape == shape + (4,) == layer.out_shape(shape)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(params["w"])[ids])


def test_embedding_default_init_is_pytorchs_standard_normal():
    w = L.embedding(400, 50).init(np.random.default_rng(0), (None, 3))[0]["w"]
    assert abs(float(w.mean())) < 0.02 and abs(float(w.std()) - 1.0) < 0.02
    assert L.embedding(4, 3).config["w_init"] == I.normal(1.0)


def test_embedding_gradient_is_a_scatter_add_manual_autodiff_numeric(backend_name, rng):
    layer = L.embedding(7, 5)
    params, state = init64(layer, backend_name, IDS.shape)
    ids = on_backend(IDS, backend_name)
    cot = rng.standard_normal((2, 3, 5))
    _, _, res = layer.fwd(params, state, ids)
    manual, dx = layer.bwd(params, res, on_backend(cot, backend_name))
    assert dx is None  # integer ids get no cotangent

    def scalar(p):
        return (layer.apply(p, state, ids)[0] * cot).sum()

    auto = jax.grad(lambda p: (layer.apply(p, state, jnp.asarray(IDS))[0] * cot).sum())(on_backend(params, "jax"))
    numeric = fnn.gradcheck.numerical_grad(scalar, params)
    expected = np.zeros((7, 5))
    for (b, t), row in np.ndenumerate(IDS):
        expected[row] += cot[b, t]
    np.testing.assert_allclose(np.asarray(manual["w"]), expected, rtol=1e-14, atol=1e-14)
    fnn.gradcheck.assert_close(manual, auto, tol=TOL)
    fnn.gradcheck.assert_close(manual, numeric, tol=TOL)
    assert np.all(np.asarray(manual["w"])[[2, 3, 5]] == 0)


def test_embedding_in_a_model_manual_equals_autodiff_under_jit_and_manual_vjp():
    model = L.serial(L.embedding(7, 5), L.gelu_exact, L.flatten, L.dense(3))
    params, state = model.init(jax.random.key(0), IDS.shape, dtype=jnp.float64)
    ids, labels = jnp.asarray(IDS), jnp.array([0, 2])
    loss = fnn.losses.softmax_cross_entropy
    (lm, _), manual = jax.jit(fnn.value_and_grad(model, loss, "manual"))(params, state, ids, labels)
    (la, _), auto = jax.jit(fnn.value_and_grad(model, loss, "autodiff"))(params, state, ids, labels)
    np.testing.assert_allclose(lm, la, rtol=1e-12)
    fnn.gradcheck.assert_close(manual, auto, tol=1e-10)
    wrapped = fnn.manual_vjp(model)
    through = jax.jit(jax.grad(lambda p: loss(wrapped.apply(p, state, ids)[0], labels)))(params)
    fnn.gradcheck.assert_close(through, auto, tol=1e-10)
    # jax.grad with respect to the ids themselves: float0 zeros, as the None of bwd says
    d_ids = jax.grad(lambda i: loss(wrapped.apply(params, state, i)[0], labels), allow_int=True)(ids)
    assert d_ids.dtype == jax.dtypes.float0 and d_ids.shape == IDS.shape


def test_embedding_refuses_float_and_out_of_range_ids(backend_name, key):
    layer = L.embedding(7, 5)
    params, state = layer.init(key, (2, 3))
    with pytest.raises(LayerError, match=r"embedding: expected an array of integer ids; got dtype float"):
        layer.apply(params, state, on_backend(IDS.astype(np.float32), backend_name))
    for bad in (7, -1):
        ids = IDS.copy()
        ids[1, 2] = bad
        with pytest.raises(LayerError, match=rf"id {bad} is out of range: ids must be in \[0, 7\)"):
            layer.apply(params, state, on_backend(ids, backend_name))
    with pytest.raises(ValueError, match="num_embeddings must be a positive int"):
        L.embedding(0, 5)
    with pytest.raises(ValueError, match="features must be a positive int"):
        L.embedding(7, 2.5)


def test_embedding_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    w, cot = rng.standard_normal((7, 5)), rng.standard_normal((2, 3, 5))
    table = torch.nn.Embedding(7, 5).double()
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(w))
    out = table(torch.from_numpy(IDS))
    (out * torch.from_numpy(cot)).sum().backward()
    layer = L.embedding(7, 5)
    y, _, res = layer.fwd({"w": w}, {}, IDS)
    np.testing.assert_array_equal(y, out.detach().numpy())
    np.testing.assert_allclose(layer.bwd({"w": w}, res, cot)[0]["w"], table.weight.grad.numpy(), rtol=1e-14, atol=1e-14)


def test_embedding_under_jit_cannot_read_its_ids_and_still_runs():
    layer = L.embedding(7, 5)
    params, state = layer.init(jax.random.key(0), (2, 3))
    y = jax.jit(lambda p, i: layer.apply(p, state, i)[0])(params, jnp.asarray(IDS))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(params["w"])[IDS])


# --------------------------------------------------------------------------- #
# rms_norm and group_norm
# --------------------------------------------------------------------------- #


def test_rms_norm_formula(backend_name, rng):
    x = rng.standard_normal((2, 3, 5)) * 3
    scale = rng.uniform(0.5, 1.5, 5)
    y, _ = L.rms_norm(eps=1e-6).apply(*on_backend(({"scale": scale}, {}, x), backend_name))
    expected = x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 5), (4, 6)])
def test_rms_norm_gradients(shape, backend_name, rng):
    layer = L.rms_norm()
    params = on_backend({"scale": rng.uniform(0.5, 1.5, shape[-1])}, backend_name)
    assert_gradients(layer, params, {}, on_backend(rng.standard_normal(shape), backend_name))


def test_rms_norm_statistics_in_float32_for_half_inputs(rng):
    x = (rng.standard_normal((3, 4)) * 300).astype(np.float16)  # x**2 overflows float16
    layer = L.rms_norm()
    params, _ = layer.init(np.random.default_rng(0), (None, 4), dtype=np.float16)
    y, _ = layer.apply(params, {}, x)
    assert y.dtype == np.float16 and np.all(np.isfinite(y))
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(y, x32 / np.sqrt((x32**2).mean(-1, keepdims=True) + 1e-6), rtol=2e-3)


def group_norm_reference(x, groups, scale, bias, eps):
    n, c = x.shape[0], x.shape[-1]
    g = x.reshape(n, -1, groups, c // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("groups", [1, 3, 6])
def test_group_norm_formula(groups, backend_name, rng):
    x = rng.standard_normal((2, 3, 4, 6)) * 2 + 1
    params = {"scale": rng.uniform(0.5, 1.5, 6), "bias": rng.standard_normal(6)}
    y, _ = L.group_norm(groups).apply(*on_backend((params, {}, x), backend_name))
    expected = group_norm_reference(x, groups, params["scale"], params["bias"], 1e-5)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, groups", [((2, 3, 4, 6), 3), ((3, 5, 4), 2), ((3, 8), 2)])
def test_group_norm_gradients(shape, groups, backend_name, rng):
    c = shape[-1]
    params = on_backend({"scale": rng.uniform(0.5, 1.5, c), "bias": rng.standard_normal(c)}, backend_name)
    assert_gradients(L.group_norm(groups), params, {}, on_backend(rng.standard_normal(shape), backend_name))


def test_group_norm_needs_channels_divisible_by_the_groups(rng):
    layer = L.group_norm(4)
    with pytest.raises(LayerError, match=r"group_norm: the channel count 6 .* is not divisible by num_groups=4"):
        layer.init(np.random.default_rng(0), (None, 3, 6))
    params = {"scale": np.ones(6), "bias": np.zeros(6)}
    with pytest.raises(LayerError, match="not divisible by num_groups=4"):
        layer.apply(params, {}, rng.standard_normal((2, 3, 6)))
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        L.group_norm(0)


def test_norms_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 4, 6))
    scale, bias = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
    gn = torch.nn.GroupNorm(3, 6, eps=1e-5).double()
    with torch.no_grad():
        gn.weight.copy_(torch.from_numpy(scale))
        gn.bias.copy_(torch.from_numpy(bias))
    expected = gn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()  # NHWC -> NCHW -> NHWC
    y, _ = L.group_norm(3).apply({"scale": scale, "bias": bias}, {}, x)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    if hasattr(torch.nn.functional, "rms_norm"):
        expected = torch.nn.functional.rms_norm(torch.from_numpy(x), (6,), torch.from_numpy(scale), eps=1e-6).numpy()
        np.testing.assert_allclose(L.rms_norm().apply({"scale": scale}, {}, x)[0], expected, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- #
# silu and gelu_exact
# --------------------------------------------------------------------------- #


def test_silu_and_gelu_exact_are_jax_nns(backend_name):
    x = np.linspace(-8, 8, 801)
    for layer, reference in [(L.silu, jax.nn.silu), (L.gelu_exact, lambda v: jax.nn.gelu(v, approximate=False))]:
        y, _ = layer.apply({}, {}, on_backend(x, backend_name))
        np.testing.assert_allclose(np.asarray(y), np.asarray(reference(jnp.asarray(x))), rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(np.asarray(layer(on_backend(x, backend_name))), np.asarray(y))
    np.testing.assert_allclose(F.gelu(x), np.asarray(jax.nn.gelu(jnp.asarray(x))), atol=1e-14)  # gelu stays tanh
    assert np.max(np.abs(F.gelu(x) - F.gelu_exact(x))) > 1e-4


@pytest.mark.parametrize("name", ["silu", "gelu_exact"])
def test_silu_and_gelu_exact_gradients(name, backend_name, rng):
    x = rng.standard_normal((2, 3, 5)) * 3
    assert_gradients(getattr(L, name), {}, {}, on_backend(x, backend_name))


def test_activations_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 5)) * 3
    t = torch.from_numpy(x)
    np.testing.assert_allclose(F.silu(x), torch.nn.functional.silu(t).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(F.gelu_exact(x), torch.nn.functional.gelu(t).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(F.gelu(x), torch.nn.functional.gelu(t, approximate="tanh").numpy(), atol=1e-12)


# --------------------------------------------------------------------------- #
# sinusoidal_positions
# --------------------------------------------------------------------------- #


def test_sinusoidal_table_formula():
    table = F.sinusoidal_table(7, 6, 100.0)
    for t in range(7):
        for i in range(3):
            angle = t / 100.0 ** (2 * i / 6)
            assert table[t, 2 * i] == pytest.approx(np.sin(angle), abs=1e-15)
            assert table[t, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-15)
    with pytest.raises(ValueError, match="features must be even"):
        F.sinusoidal_table(3, 5)


def test_sinusoidal_positions_adds_the_table_and_passes_the_gradient(backend_name, rng):
    layer = L.sinusoidal_positions(max_wavelength=50.0)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    y, _ = layer.apply({}, {}, on_backend(x, backend_name))
    assert y.dtype == np.float32 and layer.out_shape((None, 3, 6)) == (None, 3, 6)
    np.testing.assert_allclose(np.asarray(y), x + F.sinusoidal_table(3, 6, 50.0)[None], rtol=1e-6)
    assert_gradients(layer, {}, {}, on_backend(x.astype(np.float64), backend_name))


def test_sinusoidal_positions_errors():
    with pytest.raises(LayerError, match=r"sinusoidal_positions: features must be even .* got 5"):
        L.sinusoidal_positions().apply({}, {}, np.zeros((2, 3, 5)))
    with pytest.raises(LayerError, match=r"expected input of shape \(batch, time, features\)"):
        L.sinusoidal_positions().out_shape((2, 6))
    with pytest.raises(ValueError, match="max_wavelength must be a positive finite number"):
        L.sinusoidal_positions(max_wavelength=-1.0)


# --------------------------------------------------------------------------- #
# bidirectional
# --------------------------------------------------------------------------- #

MASK = np.array([[True, True, True, False, False], [True] * 5])  # batch 2, time 5: lengths 3 and 5


def test_reversal_reverses_the_real_steps_and_leaves_padding(backend_name):
    mask = on_backend(np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1]], bool), backend_name)
    order = np.asarray(_reversal(fnn.backend.namespace(mask), mask, 5))
    np.testing.assert_array_equal(order, [[2, 1, 0, 3, 4], [3, 1, 2, 0, 4], [4, 3, 2, 1, 0]])


@pytest.mark.parametrize("sequences", [True, False])
def test_bidirectional_is_the_forward_and_the_reversed_run(sequences, backend_name, rng):
    inner = L.lstm(4, return_sequences=sequences)
    layer = L.bidirectional(inner)
    params, state = init64(layer, backend_name, (None, 5, 3))
    assert sorted(params) == ["backward", "forward"] and sorted(state) == ["backward", "forward"]
    assert not np.allclose(np.asarray(params["forward"]["w_x"]), np.asarray(params["backward"]["w_x"]))
    x = on_backend(rng.standard_normal((2, 5, 3)), backend_name)
    y, _ = layer.apply(params, state, x)
    y_f = np.asarray(inner.apply(params["forward"], {}, x)[0])
    y_b = np.asarray(inner.apply(params["backward"], {}, x[:, ::-1])[0])
    expected = np.concatenate([y_f, y_b[:, ::-1] if sequences else y_b], axis=-1)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-13, atol=1e-13)
    assert y.shape == layer.out_shape((2, 5, 3)) == ((2, 5, 8) if sequences else (2, 8))


@pytest.mark.parametrize("sequences", [True, False])
def test_bidirectional_with_a_mask_is_each_sequence_without_its_padding(sequences, backend_name, rng):
    layer = L.bidirectional(L.gru(4, return_sequences=sequences))
    params, state = init64(layer, backend_name, (None, 5, 3))
    x = rng.standard_normal((2, 5, 3))
    out, _ = layer.apply(params, state, on_backend({"x": x, "mask": MASK}, backend_name))
    y = out["x"] if sequences else out
    if sequences:
        np.testing.assert_array_equal(np.asarray(out["mask"]), MASK)  # passed on for the next layer
    for b, length in enumerate(MASK.sum(axis=1)):
        alone, _ = layer.apply(params, state, on_backend(x[b : b + 1, :length], backend_name))
        if sequences:
            np.testing.assert_allclose(np.asarray(y)[b, :length], np.asarray(alone)[0], rtol=1e-12, atol=1e-12)
            assert np.all(np.asarray(y)[b, length:] == 0)
        else:
            np.testing.assert_allclose(np.asarray(y)[b], np.asarray(alone)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "inner, masked",
    [(L.lstm(4, return_sequences=True), False), (L.gru(4), False), (L.lstm(4, return_sequences=True), True),
     (L.rnn(4), True)],
    ids=["lstm-sequences", "gru-last", "lstm-sequences-mask", "rnn-last-mask"],
)
def test_bidirectional_gradients(inner, masked, backend_name, rng):
    layer = L.bidirectional(inner)
    params, state = init64(layer, backend_name, (None, 5, 3))
    x = rng.standard_normal((2, 5, 3))
    assert_gradients(layer, params, state, on_backend({"x": x, "mask": MASK} if masked else x, backend_name))


def test_stacked_bidirectional_layers_pass_the_mask_manual_equals_autodiff(rng):
    model = L.serial(L.bidirectional(L.lstm(4, return_sequences=True)), L.bidirectional(L.gru(3)), L.dense(2))
    params, state = model.init(jax.random.key(0), (None, 5, 3), dtype=jnp.float64)
    inputs = {"x": jnp.asarray(rng.standard_normal((2, 5, 3))), "mask": jnp.asarray(MASK)}
    loss = fnn.losses.softmax_cross_entropy
    labels = jnp.array([1, 0])
    (lm, _), manual = jax.jit(fnn.value_and_grad(model, loss, "manual"))(params, state, inputs, labels)
    (la, _), auto = jax.jit(fnn.value_and_grad(model, loss, "autodiff"))(params, state, inputs, labels)
    np.testing.assert_allclose(lm, la, rtol=1e-12)
    fnn.gradcheck.assert_close(manual, auto, tol=1e-10)


def test_bidirectional_lstm_matches_pytorch_on_packed_sequences(rng):
    torch = pytest.importorskip("torch")
    layer = L.bidirectional(L.lstm(4, return_sequences=True))
    params, state = init64(layer, "numpy", (None, 5, 3))
    net = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True).double()  # gates i, f, g, o as fnn's
    with torch.no_grad():
        for run, suffix in (("forward", ""), ("backward", "_reverse")):
            getattr(net, f"weight_ih_l0{suffix}").copy_(torch.from_numpy(params[run]["w_x"].T.copy()))
            getattr(net, f"weight_hh_l0{suffix}").copy_(torch.from_numpy(params[run]["w_h"].T.copy()))
            getattr(net, f"bias_ih_l0{suffix}").copy_(torch.from_numpy(params[run]["b"]))
            getattr(net, f"bias_hh_l0{suffix}").zero_()
    x = rng.standard_normal((2, 5, 3))
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(MASK.sum(axis=1)), batch_first=True, enforce_sorted=False
    )
    out, (h_n, _) = net(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=5)
    y, _ = layer.apply(params, state, {"x": x, "mask": MASK})
    np.testing.assert_allclose(y["x"], out.detach().numpy(), rtol=1e-10, atol=1e-12)
    last, _ = L.bidirectional(L.lstm(4)).apply(params, state, {"x": x, "mask": MASK})
    np.testing.assert_allclose(last, torch.cat([h_n[0], h_n[1]], -1).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_bidirectional_errors():
    layer = L.bidirectional(L.lstm(4))
    params, state = layer.init(np.random.default_rng(0), (None, 5, 3))
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(LayerError, match=r"bidirectional: the input dict has unexpected keys \['h0'\]"):
        layer.apply(params, state, {"x": x, "h0": np.zeros((2, 4))})
    with pytest.raises(LayerError, match=r"mask has shape \(2, 4\); expected \(batch, time\)"):
        layer.apply(params, state, {"x": x, "mask": np.ones((2, 4), bool)})
    with pytest.raises(LayerError, match=r"^backward: params does not match the model: missing \['w_x', 'w_h', 'b'\]"):
        layer.apply({"forward": params["forward"], "backward": {}}, state, x)  # the path of the run that failed
    model = L.serial(L.dense(3), layer)
    model_params, model_state = model.init(np.random.default_rng(0), (None, 5, 3))
    model_params["bidirectional"]["forward"]["w_h"] = np.zeros((4, 4), np.float32)
    with pytest.raises(LayerError, match=r"^bidirectional/forward: params\['w_h'\] has shape \(4, 4\)"):
        model.apply(model_params, model_state, x)
    with pytest.raises(LayerError, match=r"bidirectional: params does not match the model"):
        layer.apply({"forward": params["forward"]}, state, x)
    with pytest.raises(TypeError, match=r"must be called: lstm\(32\)"):
        L.bidirectional(L.lstm)
