"""Attention: fnn.functional.dot_product_attention against jax.nn, the kernel's
two forms against each other and jax.grad, multi_head_attention and
transformer_block gradients (manual = jax.grad = finite differences, float64,
both backends) with masks, causal, cross-attention, fully masked rows and
dropout, their errors, and PyTorch (skipped without torch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import backend, gradcheck_suite
from fnn import layers as L
from fnn.core import LayerError
from fnn.functional import dot_product_attention
from fnn.kernels import attention as kernel
from tests.helpers import TOL, on_backend

N, T, D = 2, 5, 6
MASK = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)  # the second sequence has no real step


def _valid_rows(mask4, causal, tq, tk):
    allowed = np.ones((1, 1, tq, tk), bool) if mask4 is None else mask4
    if causal:
        allowed = allowed & np.tril(np.ones((tq, tk), bool))
    return allowed.any(-1)  # (N or 1, H or 1, Tq)


# --------------------------------------------------------------------------- #
# dot_product_attention and the kernel
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_shape", [None, (2, 1, 4, 7), (2, 3, 4, 7), (7,), (1, 1, 7)])
@pytest.mark.parametrize("implementation", ["xla", "blocked"])
def test_dot_product_attention_matches_jax_nn(backend_name, causal, mask_shape, implementation):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s) for s in ((2, 4, 3, 8), (2, 7, 3, 8), (2, 7, 3, 8)))
    mask = None if mask_shape is None else rng.random(mask_shape) > 0.4
    if mask is not None and mask.ndim == 4:
        mask[0, 0, 1, :] = False  # a row with no key
    ref = np.asarray(jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal))
    args = on_backend((q, k, v), backend_name)
    m = None if mask is None else on_backend(mask, backend_name)
    out = dot_product_attention(*args, mask=m, causal=causal, implementation=implementation)
    assert type(out) is type(args[0]) and out.shape == (2, 4, 3, 8)
    out = np.asarray(out)
    mask4 = None if mask is None else mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    valid = np.broadcast_to(_valid_rows(mask4, causal, 4, 7), (2, 3, 4)).transpose(0, 2, 1)  # (N, Tq, H)
    np.testing.assert_allclose(out[valid], ref[valid], atol=1e-6)
    assert np.all(out[~valid] == 0.0)  # no key: zero output (jax.nn gives the mean of v)


def test_dot_product_attention_checks_its_arguments():
    q = np.zeros((1, 2, 1, 4))
    with pytest.raises(ValueError, match="must agree"):
        dot_product_attention(q, np.zeros((1, 3, 1, 5)), np.zeros((1, 3, 1, 4)))
    with pytest.raises(ValueError, match=r"q \(N, Tq, H, K\)"):
        dot_product_attention(q[0], q, q)
    with pytest.raises(TypeError, match="boolean"):
        dot_product_attention(q, q, q, mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="does not broadcast"):
        dot_product_attention(q, q, q, mask=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="implementation"):
        dot_product_attention(q, q, q, implementation="fast")


def _kernel_case(seed=0, tq=37, tk=70):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((2, 3, tq, 4)), rng.standard_normal((2, 3, tk, 4)), rng.standard_normal((2, 3, tk, 5))
    mask = rng.random((2, 1, tq, tk)) > 0.5
    mask[0, 0, 1, :] = False
    return q, k, v, mask, rng.standard_normal((2, 3, tq, 5))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dropout", [None, "jax", "numpy"])
def test_kernel_backward_matches_jax_grad_in_both_forms(backend_name, causal, masked, dropout):
    """Both forms (blocks of 32 keys over 70: padding included) against jax.grad
    of the plain forward, with the dropout mask regenerated from the key."""
    if backend_name == "numpy" and dropout == "jax":
        pytest.skip("a JAX key draws JAX arrays")
    q, k, v, mask, do = _kernel_case()
    key = {None: None, "jax": jax.random.key(3), "numpy": np.random.default_rng(3)}[dropout]
    opts = dict(mask=mask if masked else None, causal=causal, dropout_rate=0.3 if key is not None else 0.0,
                dropout_key=key)

    def f(q, k, v):
        o, _ = kernel.attention_fwd(q, k, v, **{**opts, "mask": None if not masked else jnp.asarray(mask)},
                                    implementation="xla")
        return jnp.sum(o * do)

    ref = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
    assert not any(np.isnan(np.asarray(g)).any() for g in ref)
    args = on_backend((q, k, v), backend_name)
    opts["mask"] = None if not masked else on_backend(mask, backend_name)
    outs = {}
    for form in ("xla", "blocked"):
        o, lse = kernel.attention_fwd(*args, implementation=form, block_size=32, **opts)
        grads = kernel.attention_bwd(*args, o, lse, on_backend(do, backend_name), implementation=form, block_size=32,
                                     **opts)
        outs[form] = np.asarray(o)
        for g, r in zip(grads, ref):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-12)
    np.testing.assert_allclose(outs["blocked"], outs["xla"], atol=1e-13)


def test_kernel_rows_without_keys_have_zero_output_and_gradient():
    q, k, v, mask, do = _kernel_case()
    o, lse = kernel.attention_fwd(q, k, v, mask=mask, causal=True)
    dq, dk, dv = kernel.attention_bwd(q, k, v, o, lse, do, mask=mask, causal=True)
    empty = ~_valid_rows(mask, True, 37, 70)  # (2, 1, 37)
    empty = np.broadcast_to(empty, (2, 3, 37))
    assert empty[0, :, 1].all() and np.isinf(lse[..., 0][empty]).all()
    assert np.all(o[empty] == 0.0) and np.all(dq[empty] == 0.0)
    assert np.isfinite(dk).all() and np.isfinite(dv).all()


def test_kernel_resolve_and_block_size():
    assert kernel.resolve("auto", kernel.BLOCKED_FROM - 1) == ("xla", kernel.BLOCK_SIZE)
    assert kernel.resolve("auto", kernel.BLOCKED_FROM) == ("blocked", kernel.BLOCK_SIZE)
    assert kernel.resolve("auto", 4096, platform="gpu") == ("xla", kernel.BLOCK_SIZE)  # measured on CPU only
    with pytest.raises(ValueError, match="multiple"):
        kernel.resolve("blocked", 10, 40)
    with pytest.raises(ValueError, match="key"):
        kernel.attention_fwd(*_kernel_case()[:3], dropout_rate=0.5)


# --------------------------------------------------------------------------- #
# multi_head_attention
# --------------------------------------------------------------------------- #


def _params64(layer, shape, backend_name, seed=1):
    """Float64 params on the backend, biases moved off zero."""
    params, state = layer.init(fnn.key(seed, backend=backend_name), shape, dtype=np.float64)
    rng = np.random.default_rng(seed)
    params = backend.tree_map(lambda a: a + 0.1 * on_backend(rng.standard_normal(a.shape), backend_name), params)
    return params, state


def _zero_leaf(path: str) -> bool:
    # the key projection's bias adds q . b_k to every score of a row, which the
    # softmax ignores: its gradient is exactly zero, and finite differences of
    # zero are round-off, so it is checked on its own below
    return path.endswith("key/b")


def assert_attention_gradients(layer, params, state, x, **kw):
    report = fnn.gradcheck.check_layer(layer, params, state, x, **kw)
    for method in ("autodiff", "numeric"):
        errors = report.errors("manual", method)
        bad = {p: e for p, e in errors.items() if not _zero_leaf(p) and e >= TOL}
        assert not bad, f"manual vs {method}: {bad}\n{report}"
    for path, g in backend.tree_leaves_with_path(report.grads["manual"]):
        if _zero_leaf(path):
            assert np.max(np.abs(g)) < 1e-12
    for path, g in backend.tree_leaves_with_path(report.grads["numeric"]):
        if _zero_leaf(path):
            assert np.max(np.abs(g)) < 1e-7
    return report


CASES = {
    "self": (dict(), (None, T, D), lambda x, c: x),
    "self mask": (dict(), (None, T, D), lambda x, c: {"x": x, "mask": MASK}),
    "causal mask sizes": (dict(causal=True, key_size=3, value_size=4, out_features=5), (None, T, D),
                          lambda x, c: {"x": x, "mask": MASK}),
    "float mask": (dict(), (None, T, D), lambda x, c: {"x": x, "mask": MASK.astype(np.float64)}),
    "cross": (dict(num_heads=3), ((None, T, D), (None, 7, 3)), lambda x, c: {"x": x, "context": c}),
    "cross mask no bias": (dict(num_heads=3, use_bias=False), ((None, T, D), (None, 7, 3)),
                           lambda x, c: {"x": x, "context": c, "mask": np.array([[1] * 4 + [0] * 3, [0] * 7], bool)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mha_gradients(backend_name, case):
    kwargs, shape, make = CASES[case]
    layer = L.multi_head_attention(**{"num_heads": 2, **kwargs})
    params, state = _params64(layer, shape, backend_name)
    rng = np.random.default_rng(2)
    x = make(rng.standard_normal((N, T, D)), rng.standard_normal((N, 7, 3)))
    x = on_backend(x, backend_name)
    assert_attention_gradients(layer, params, state, x)  # (check_layer casts a bool mask to float64)
    if isinstance(x, dict):  # the input's cotangent has the input's keys; a bool mask gets None, a float one zeros
        y, _, res = layer.fwd(params, state, x)
        _, dx = layer.bwd(params, res, y)
        assert set(dx) == set(x)
        if "mask" in x:
            assert (dx["mask"] is None) == (x["mask"].dtype == bool)


def test_mha_dropout_gradients_and_modes(backend_name):
    layer = L.multi_head_attention(2, dropout_rate=0.4)
    params, state = _params64(layer, (None, T, D), backend_name)
    x = on_backend({"x": np.random.default_rng(2).standard_normal((N, T, D)), "mask": MASK}, backend_name)
    key = np.random.default_rng(5) if backend_name == "numpy" else jax.random.key(5)
    assert_attention_gradients(layer, params, state, x, key=key, train=True)
    y_train, _ = layer.apply(params, state, x, key=key, train=True)
    y_eval, _ = layer.apply(params, state, x)
    y_plain, _ = L.multi_head_attention(2).apply(params, state, x)
    np.testing.assert_allclose(np.asarray(y_eval), np.asarray(y_plain))
    assert not np.allclose(np.asarray(y_train)[0], np.asarray(y_eval)[0])
    with pytest.raises(LayerError, match="key"):
        layer.apply(params, state, x, train=True)


def test_mha_rows_without_keys_give_the_out_bias_and_zero_gradient(backend_name):
    layer = L.multi_head_attention(2)
    params, state = _params64(layer, (None, T, D), backend_name)
    x = on_backend({"x": np.random.default_rng(2).standard_normal((N, T, D)), "mask": MASK}, backend_name)
    y, _, res = layer.fwd(params, state, x)
    np.testing.assert_allclose(np.asarray(y)[1], np.broadcast_to(np.asarray(params["out"]["b"]), (T, D)))
    dy = on_backend(np.ones((N, T, D)), backend_name)
    grads, dx = layer.bwd(params, res, dy)
    assert np.all(np.asarray(dx["x"])[1] == 0.0)  # the second sequence has no key: nothing flows back to it


def test_mha_params_layout_and_defaults():
    layer = L.multi_head_attention(2)
    params, _ = layer.init(np.random.default_rng(0), (None, T, 8))
    shapes = backend.tree_map(np.shape, params)
    assert shapes == {"query": {"w": (8, 2, 4), "b": (2, 4)}, "key": {"w": (8, 2, 4), "b": (2, 4)},
                      "value": {"w": (8, 2, 4), "b": (2, 4)}, "out": {"w": (2, 4, 8), "b": (8,)}}
    cross = L.multi_head_attention(2, key_size=3, value_size=5, out_features=7, use_bias=False)
    params, _ = cross.init(np.random.default_rng(0), ((None, T, 8), (None, 9, 6)))
    assert backend.tree_map(np.shape, params) == {"query": {"w": (8, 2, 3)}, "key": {"w": (6, 2, 3)},
                                                  "value": {"w": (6, 2, 5)}, "out": {"w": (2, 5, 7)}}
    assert cross.out_shape(((None, T, 8), (None, 9, 6))) == (None, T, 7)
    assert L.multi_head_attention(2) == layer and "num_heads=2" in repr(layer)


def test_mha_errors():
    layer = L.multi_head_attention(2)
    params, state = layer.init(np.random.default_rng(0), (None, T, D))
    x = np.zeros((N, T, D), np.float32)
    with pytest.raises(LayerError, match=r"\(batch, time, features\)"):
        layer.apply(params, state, x[0])
    with pytest.raises(LayerError, match="unexpected keys"):
        layer.apply(params, state, {"x": x, "maks": MASK})
    with pytest.raises(LayerError, match="no 'x'"):
        layer.apply(params, state, {"mask": MASK})
    with pytest.raises(LayerError, match=r"mask has shape \(2, 4\)"):
        layer.apply(params, state, {"x": x, "mask": MASK[:, :4]})
    with pytest.raises(LayerError, match=r"query: params\['w'\] has shape"):
        layer.apply(params, state, np.zeros((N, T, 4), np.float32))
    with pytest.raises(LayerError, match="context has batch"):
        layer.apply(params, state, {"x": x, "context": np.zeros((3, T, D), np.float32)})
    with pytest.raises(LayerError, match="tuple"):
        layer.apply(params, state, (x, x))
    with pytest.raises(LayerError, match="pass key_size"):
        L.multi_head_attention(8).init(np.random.default_rng(0), (None, T, 4))
    with pytest.raises(ValueError, match="num_heads"):
        L.multi_head_attention(0)
    with pytest.raises(ValueError, match="dropout_rate"):
        L.multi_head_attention(2, dropout_rate=1.0)
    with pytest.raises(ValueError, match="implementation"):
        L.multi_head_attention(2, implementation="fast")


def test_mha_blocked_form_under_jit_matches_autodiff():
    """T = 150 keys: two blocks of 128, the second padded; manual vs jax.grad under jit."""
    layer = L.multi_head_attention(2, causal=True, implementation="blocked")
    params, state = _params64(layer, (None, 150, 4), "jax")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 150, 4)))
    mask = jnp.arange(150)[None, :] < 140
    report = fnn.gradcheck.check_layer(layer, params, state, {"x": x, "mask": mask}, methods=("autodiff",))
    assert max(e for p, e in report.errors("manual", "autodiff").items() if not _zero_leaf(p)) < TOL
    model = L.serial(layer, L.dense(3))
    loss = fnn.losses.mse
    target = jnp.zeros((1, 150, 3))
    p, s = model.init(jax.random.key(0), (None, 150, 4))
    (_, _), manual = jax.jit(fnn.value_and_grad(model, loss, "manual"))(p, s, x, target)
    (_, _), auto = jax.jit(fnn.value_and_grad(model, loss, "autodiff"))(p, s, x, target)
    fnn.gradcheck.assert_close(manual, auto, tol=1e-4)


# --------------------------------------------------------------------------- #
# transformer_block
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("masked", [False, True])
def test_transformer_block_gradients(backend_name, masked):
    block = L.transformer_block(2, 8, causal=masked)
    params, state = _params64(block, (None, T, D), backend_name)
    x = np.random.default_rng(3).standard_normal((N, T, D))
    assert_attention_gradients(block, params, state, on_backend({"x": x, "mask": MASK} if masked else x, backend_name))


def test_transformer_block_dropout_and_stacking(backend_name):
    model = L.serial(L.transformer_block(2, 8, dropout_rate=0.3), L.transformer_block(2, 8))
    params, state = _params64(model, (None, T, D), backend_name)
    x = on_backend({"x": np.random.default_rng(3).standard_normal((N, T, D)), "mask": MASK}, backend_name)
    key = np.random.default_rng(5) if backend_name == "numpy" else jax.random.key(5)
    assert_attention_gradients(model, params, state, x, key=key, train=True)
    y, _ = model.apply(params, state, x)
    assert set(y) == {"x", "mask"} and y["mask"] is x["mask"]  # the dict form is kept: every block sees the mask


def test_transformer_block_is_pre_norm_composition():
    block = L.transformer_block(2, 8)
    params, state = block.init(np.random.default_rng(0), (None, T, D), dtype=np.float64)
    assert sorted(params) == ["attention", "attention_norm", "mlp", "mlp_norm"]
    assert sorted(params["mlp"]) == ["dense", "dense_1", "gelu"]
    x = np.random.default_rng(1).standard_normal((N, T, D))
    ln, mha = L.layer_norm(), L.multi_head_attention(2)
    h = x + mha.apply(params["attention"], {}, ln.apply(params["attention_norm"], {}, x)[0])[0]
    z = ln.apply(params["mlp_norm"], {}, h)[0]
    mlp = L.serial(L.dense(8), L.gelu, L.dense(D))
    expected = h + mlp.apply(params["mlp"], {"dense": {}, "gelu": {}, "dense_1": {}}, z)[0]
    np.testing.assert_allclose(block.apply(params, state, x)[0], expected, rtol=1e-12)
    with pytest.raises(LayerError, match="unexpected keys"):
        block.apply(params, state, {"x": x, "context": x})


# --------------------------------------------------------------------------- #
# The registry and PyTorch
# --------------------------------------------------------------------------- #


OURS = [c.name for c in gradcheck_suite.CASES if "attention" in c.name or "transformer" in c.name]


@pytest.mark.parametrize("name", OURS)
def test_registry_cases(name):
    result = gradcheck_suite.run_case(gradcheck_suite.find(name))
    assert result.passed, result


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    e, h, t = 8, 2, 5
    layer = L.multi_head_attention(h)
    params, state = layer.init(np.random.default_rng(0), (None, t, e), dtype=np.float64)
    x = rng.standard_normal((2, t, e))
    pad = np.array([[False] * 3 + [True] * 2, [False] * 5])  # torch: True = padding
    ref = torch.nn.MultiheadAttention(e, h, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        w_in = np.concatenate([params[p]["w"].reshape(e, e).T for p in ("query", "key", "value")])
        ref.in_proj_weight.copy_(torch.from_numpy(w_in))
        b_in = np.concatenate([params[p]["b"].reshape(e) for p in ("query", "key", "value")])
        ref.in_proj_bias.copy_(torch.from_numpy(b_in))
        ref.out_proj.weight.copy_(torch.from_numpy(params["out"]["w"].reshape(e, e).T.copy()))
        ref.out_proj.bias.copy_(torch.from_numpy(params["out"]["b"]))
        xt = torch.from_numpy(x)
        expected, _ = ref(xt, xt, xt, key_padding_mask=torch.from_numpy(pad), need_weights=False)
    y, _ = layer.apply(params, state, {"x": x, "mask": ~pad})
    np.testing.assert_allclose(y, expected.numpy(), atol=1e-10)
    q, k, v = (rng.standard_normal((2, 4, 3, 8)) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a.transpose(0, 2, 1, 3).copy()) for a in (q, k, v)), is_causal=True)
    expected = sdpa.numpy().transpose(0, 2, 1, 3)
    np.testing.assert_allclose(dot_product_attention(q, k, v, causal=True), expected, atol=1e-10)
