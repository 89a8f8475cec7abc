"""rnn, lstm and gru: forward values against loops written here in NumPy, and
the hand-written backprop through time against jax.grad and finite
differences (float64), with and without return_sequences, masks, initial
states and stacking; NumPy and JAX agree; long sequences stay finite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import backend
from fnn import layers as L
from tests.helpers import check_gradients, on_backend

B, T, F, H = 2, 4, 3, 3
CELLS = ("rnn", "lstm", "gru")
MASK = np.array([[1, 1, 0, 1], [1, 1, 1, 0]], bool)  # a hole in the middle and padding at the end


def make(kind, hidden=H, **kw):
    return {"rnn": L.rnn, "lstm": L.lstm, "gru": L.gru}[kind](hidden, **kw)


def params64(layer, input_shape, seed=0, backend_name="numpy"):
    """Float64 params: the layer's init plus noise, so no bias sits at exactly zero.
    (Initialised with a NumPy key: see test_init_on_jax for the JAX key.)"""
    params, state = layer.init(fnn.key(seed, backend="numpy"), input_shape)
    noise = np.random.default_rng(seed + 100)
    params = backend.tree_map(lambda p: np.asarray(p, np.float64) + 0.3 * noise.standard_normal(p.shape), params)
    return on_backend(params, backend_name), state


def inputs(kind, seed=0, t=T, mask=True, initial=True):
    """x alone, or a dict with a (float 0/1) mask and random initial states."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, t, F))
    if not (mask or initial):
        return x
    out = {"x": x}
    if mask:
        out["mask"] = MASK[:, :t].astype(np.float64)
    if initial:
        out["h0"] = rng.standard_normal((B, H))
        if kind == "lstm":
            out["c0"] = rng.standard_normal((B, H))
    return out


def gradcheck(layer, params, state, inp):
    """The suite's gradient check (manual vs jax.grad vs finite differences, both backends)."""
    return check_gradients(layer, params, state, inp)


# --------------------------------------------------------------------------- #
# Reference forward: one explicit loop per cell, written from DESIGN.md
# --------------------------------------------------------------------------- #


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference(kind, p, inp, return_sequences):
    p = backend.to_numpy(p)
    inp = inp if isinstance(inp, dict) else {"x": inp}
    x = inp["x"]
    h = inp.get("h0", np.zeros((x.shape[0], H)))
    c = inp.get("c0", np.zeros((x.shape[0], H)))
    mask = inp.get("mask", np.ones(x.shape[:2]))
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        c_new = c
        if kind == "rnn":
            h_new = np.tanh(xt @ p["w_x"] + h @ p["w_h"] + p["b"])
        elif kind == "lstm":
            i, f, g, o = np.split(xt @ p["w_x"] + h @ p["w_h"] + p["b"], 4, axis=1)
            c_new = _sig(f) * c + _sig(i) * np.tanh(g)
            h_new = _sig(o) * np.tanh(c_new)
        else:
            xr, xz, xn = np.split(xt @ p["w_x"] + p["b"], 3, axis=1)
            hr, hz, hn = np.split(h @ p["w_h"], 3, axis=1)
            r, z = _sig(xr + hr), _sig(xz + hz)
            n = np.tanh(xn + r * (hn + p["b_hn"]))
            h_new = (1 - z) * n + z * h
        keep = mask[:, t : t + 1] > 0.5
        h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
        outs.append(np.where(keep, h_new, 0.0))
    return np.stack(outs, axis=1) if return_sequences else h


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_reference(kind, return_sequences, masked):
    layer = make(kind, return_sequences=return_sequences)
    params, state = params64(layer, (B, T, F))
    inp = inputs(kind, mask=masked, initial=masked)
    y, new_state = layer.apply(params, state, inp)
    if return_sequences and masked:
        assert set(y) == {"x", "mask"} and y["mask"] is inp["mask"]
        y = y["x"]
    np.testing.assert_allclose(y, reference(kind, params, inp, return_sequences), rtol=1e-12, atol=1e-12)
    assert new_state == state == {}


@pytest.mark.parametrize("kind", CELLS)
def test_masked_equals_truncated(kind):
    """A sequence padded at the end gives the state of the same sequence cut short."""
    layer = make(kind)
    params, state = params64(layer, (B, 5, F))
    x = np.random.default_rng(3).standard_normal((B, 5, F))
    lengths = [2, 5]
    mask = np.arange(5)[None, :] < np.array(lengths)[:, None]
    h, _ = layer.apply(params, state, {"x": x, "mask": mask})
    for b, n in enumerate(lengths):
        alone, _ = layer.apply(params, state, x[b : b + 1, :n])
        np.testing.assert_allclose(h[b], alone[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# Gradients: manual vs jax.grad vs finite differences
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask_h0"])
def test_gradients(kind, return_sequences, masked):
    """NumPy backend: manual bwd against jax.grad and central differences; with
    a mask, the gradient also covers h0 (and c0) and is zero for the mask."""
    layer = make(kind, return_sequences=return_sequences)
    params, state = params64(layer, (B, T, F))
    inp = inputs(kind, mask=masked, initial=masked)
    manual = gradcheck(layer, params, state, inp).report.grads["manual"]
    if masked:
        assert sorted(manual["x"]) == sorted(inp)
        if not return_sequences:  # (a sequence output passes the mask on, and its cotangent back)
            np.testing.assert_array_equal(manual["x"]["mask"], 0.0)
        padded = MASK == 0
        np.testing.assert_array_equal(manual["x"]["x"][padded], 0.0)  # padded steps get no gradient
        assert np.all(np.abs(manual["x"]["x"][~padded]) > 0)


@pytest.mark.parametrize("kind", CELLS)
def test_backends_agree(kind):
    """The same forward and manual backward on NumPy and on JAX under jit
    (test_gradients compares the NumPy one with jax.grad)."""
    layer = make(kind, return_sequences=True)

    def forward_backward(params, inp, dy):
        y, _, res = layer.fwd(params, {}, inp)
        return (y,) + layer.bwd(params, res, dy)

    run = {"numpy": forward_backward, "jax": jax.jit(forward_backward)}
    results = {}
    for name in ("numpy", "jax"):
        params, _ = params64(layer, (B, T, F), backend_name=name)
        inp = on_backend(inputs(kind), name)
        dy = on_backend({"x": np.linspace(-1, 1, B * T * H).reshape(B, T, H), "mask": np.zeros((B, T))}, name)
        out = run[name](params, inp, dy)
        assert all(isinstance(leaf, np.ndarray) == (name == "numpy") for leaf in backend.tree_leaves(out))
        results[name] = backend.to_numpy(out)
    flat_np, flat_jax = (backend.tree_leaves(results[n]) for n in ("numpy", "jax"))
    for a, b in zip(flat_np, flat_jax):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_stacked_with_mask():
    """serial passes the mask from layer to layer: every layer of the stack is
    masked, and the whole stack's backward matches jax.grad and differences."""
    model = L.serial(L.lstm(H, return_sequences=True), L.gru(H, return_sequences=True), L.rnn(2), L.dense(2))
    params, state = params64(model, (B, T, F))
    x = np.random.default_rng(5).standard_normal((B, T, F))
    inp = {"x": x, "mask": MASK.astype(np.float64)}
    gradcheck(model, params, state, inp)
    # every layer really is masked: the padded step at t=2 of example 0 changes nothing
    changed = inp | {"x": x.copy()}
    changed["x"][0, 2] += 10.0
    np.testing.assert_array_equal(model.apply(params, state, changed)[0], model.apply(params, state, inp)[0])


def test_long_sequences_give_finite_gradients():
    """T = 200 in float32 through a stack of all three cells, ending in the
    issue's serial(lstm(.., return_sequences=True), lstm(..)), trained through
    fnn.value_and_grad under jit: finite, and the hand-written BPTT matches
    jax.grad (one jit compilation per method)."""
    seq = dict(return_sequences=True)
    model = L.serial(L.rnn(4, **seq), L.gru(4, **seq), L.lstm(4, **seq), L.lstm(4), L.dense(1))
    params, state = model.init(fnn.key(0, backend="numpy"), (B, 200, F))
    params = on_backend(params, "jax")
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((B, 200, F)), jnp.float32)
    mask = jnp.asarray(np.arange(200)[None, :] < np.array([[150], [200]]))  # a bool mask
    target = jnp.ones((B, 1), jnp.float32)
    grads = {}
    for method in ("manual", "autodiff"):
        step = jax.jit(fnn.value_and_grad(model, fnn.losses.mse, method=method))
        (loss, _), grads[method] = step(params, state, {"x": x, "mask": mask}, target)
        assert np.isfinite(float(loss))
        assert all(np.all(np.isfinite(g)) for g in backend.tree_leaves(grads[method]))
        assert all(g.dtype == jnp.float32 for g in backend.tree_leaves(grads[method]))
    fnn.gradcheck.assert_close(grads["manual"], grads["autodiff"], tol=1e-4, names=("manual", "autodiff"))
