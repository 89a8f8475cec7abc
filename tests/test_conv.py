"""conv2d: forward against a loop reference written here, the hand-written
backward against jax.grad and finite differences (float64), NumPy vs JAX,
"same" padding against XLA's own, and the errors for bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from tests.conv_support import check_gradients, jitted, on_backend


def same_padding(n, k, s):
    """XLA / TensorFlow "same", written out independently of fnn."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def explicit_padding(padding, hw, kernel, stride):
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return tuple(same_padding(n, k, s) for n, k, s in zip(hw, kernel, stride))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    if isinstance(padding[0], int):
        return ((padding[0],) * 2, (padding[1],) * 2)
    return padding


def conv_reference(x, w, b, stride, padding):
    """y[n, p, q, o] = b[o] + sum_{i,j,c} x_pad[n, p*sh + i, q*sw + j, c] w[i, j, c, o], by loops."""
    (top, bottom), (left, right) = padding
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, channels, features = w.shape
    sh, sw = stride
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    y = np.zeros((x.shape[0], oh, ow, features))
    for n in range(x.shape[0]):
        for p in range(oh):
            for q in range(ow):
                for o in range(features):
                    total = b[o]
                    for i in range(kh):
                        for j in range(kw):
                            for c in range(channels):
                                total += xp[n, p * sh + i, q * sw + j, c] * w[i, j, c, o]
                    y[n, p, q, o] = total
    return y


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# (id, kernel_size, stride, padding, input (H, W), channels, features)
CASES = [
    ("valid_3x3", 3, 1, "valid", (6, 5), 2, 3),
    ("valid_stride2_odd", 3, 2, "valid", (7, 6), 2, 2),
    ("same_3x3_stride2", 3, 2, "same", (7, 6), 3, 2),
    ("same_even_kernel", 2, 1, "same", (5, 5), 2, 3),
    ("same_even_kernel_stride2", 4, 2, "same", (7, 8), 2, 2),
    ("int_padding", 3, 1, 1, (5, 4), 2, 2),
    ("pair_padding_pair_stride", (3, 2), (2, 1), (1, 2), (6, 5), 2, 3),
    ("explicit_asymmetric", (2, 3), (1, 2), ((1, 0), (2, 1)), (5, 6), 2, 2),
    ("padding_wider_than_kernel", 2, 2, ((3, 0), (0, 2)), (5, 5), 2, 2),
    ("one_by_one_stride2", 1, 2, "valid", (5, 5), 3, 2),
]
IDS = [c[0] for c in CASES]


def make(case, seed=0):
    _, kernel, stride, padding, hw, channels, features = case
    layer = L.conv2d(features, kernel, stride=stride, padding=padding)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *hw, channels))
    params, state = layer.init(np.random.default_rng(seed), x.shape, dtype=np.float64)
    params = {"w": params["w"], "b": rng.standard_normal(features)}
    pads = explicit_padding(padding, hw, pair(kernel), pair(stride))
    return layer, params, state, x, pads


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_loop_reference(case, backend_name):
    layer, params, state, x, pads = make(case)
    y, new_state = layer.apply(on_backend(params, backend_name), state, on_backend(x, backend_name))
    expected = conv_reference(x, params["w"], params["b"], pair(case[2]), pads)
    assert isinstance(y, jax.Array) == (backend_name == "jax")
    assert y.shape == layer.out_shape(x.shape) == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)
    assert new_state == {}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_manual_autodiff_numeric_on_both_backends(case):
    layer, params, state, x, _ = make(case)
    check_gradients(layer, params, state, x)


def test_same_padding_arithmetic():
    # output ceil(n / s); total max((out - 1) s + k - n, 0); the odd pixel at the bottom / right
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(5, 2, 1) == (0, 1)
    assert same_padding(7, 4, 2) == (1, 2)
    assert same_padding(6, 2, 2) == (0, 0)
    assert same_padding(1, 5, 1) == (2, 2)
    for h, w, k, s in [(7, 6, 3, 2), (5, 5, 2, 1), (7, 8, 4, 2), (9, 4, 5, 3), (1, 1, 5, 1)]:
        assert L.conv2d(1, k, stride=s, padding="same").out_shape((None, h, w, 1)) == (None, -(-h // s), -(-w // s), 1)


@pytest.mark.parametrize("kernel, stride, hw", [(3, 2, (7, 6)), (2, 1, (5, 5)), (4, 2, (7, 8)), ((2, 5), (3, 1), (8, 7))])
def test_same_padding_matches_xla(kernel, stride, hw):
    layer = L.conv2d(2, kernel, stride=stride, padding="same")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *hw, 3)))
    params, state = layer.init(np.random.default_rng(0), x.shape, dtype=np.float64)
    params = on_backend(params, "jax")
    y, _ = layer.apply(params, state, x)
    expected = jax.lax.conv_general_dilated(
        x, params["w"], pair(stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ) + params["b"].reshape(1, 1, 1, -1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_init_shapes_and_fans(rng):
    layer = L.conv2d(8, (3, 5), padding="same")
    params, state = layer.init(rng, (None, 9, 9, 4))
    assert params["w"].shape == (3, 5, 4, 8) and params["b"].shape == (8,)
    assert params["w"].dtype == np.float32 and state == {}
    np.testing.assert_array_equal(params["b"], 0.0)
    # lecun normal: std 1 / sqrt(kh * kw * in)
    assert 0.8 / math.sqrt(60) < float(np.std(params["w"])) < 1.2 / math.sqrt(60)
    no_bias, _ = L.conv2d(8, 3, use_bias=False).init(rng, (1, 5, 5, 4))
    assert set(no_bias) == {"w"}
    jax_params, _ = L.conv2d(2, 3).init(jax.random.key(0), (1, 5, 5, 1))
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(jax_params))


def test_float32_stays_float32_and_matches_float64_autodiff(backend_name, rng):
    """float32 in, float32 out, with the values of jax.grad in float64 (batch 3, a 5 x 6 image, 2 channels, 4 features)."""
    plain = L.conv2d(4, (3, 2), stride=(2, 1), padding="same")
    layer = jitted(plain)
    params, state = layer.init(rng, (3, 5, 6, 2))
    x = rng.standard_normal((3, 5, 6, 2)).astype(np.float32)
    y, _, res = layer.fwd(on_backend(params, backend_name), state, on_backend(x, backend_name))
    dy = rng.standard_normal(np.shape(y)).astype(np.float32)
    grads, dx = layer.bwd(on_backend(params, backend_name), res, on_backend(dy, backend_name))
    assert y.dtype == dx.dtype == grads["w"].dtype == grads["b"].dtype == np.float32
    as64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
    want_y, vjp = jax.vjp(lambda p, a: plain.apply(p, state, a)[0], as64(params), as64(x))
    want_grads, want_dx = vjp(as64(dy))
    np.testing.assert_allclose(np.asarray(y), np.asarray(want_y), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(want_dx), rtol=1e-5, atol=1e-5)
    for k in ("w", "b"):
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(want_grads[k]), rtol=1e-5, atol=1e-4, err_msg=k)


def test_jitted_manual_step_equals_autodiff_and_manual_vjp():
    model = L.serial(L.conv2d(3, 3, stride=2, padding="same"), L.relu, L.max_pool(2), L.flatten, L.dense(4))
    params, state = model.init(np.random.default_rng(0), (3, 9, 9, 2), dtype=np.float64)
    params = on_backend(params, "jax")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 9, 9, 2)))
    y = jnp.array([0, 3, 1])
    loss = fnn.losses.softmax_cross_entropy
    (v1, _), g1 = jax.jit(fnn.value_and_grad(model, loss, "manual"))(params, state, x, y)
    (v2, _), g2 = jax.jit(fnn.value_and_grad(model, loss, "autodiff"))(params, state, x, y)
    assert abs(float(v1) - float(v2)) < 1e-12
    fnn.gradcheck.assert_close(g1, g2, tol=1e-10, names=("manual", "autodiff"))
    wrapped = fnn.manual_vjp(model)
    g3 = jax.jit(jax.grad(lambda p: loss(wrapped.apply(p, state, x)[0], y)))(params)
    fnn.gradcheck.assert_close(g1, g3, tol=1e-10, names=("manual", "manual_vjp"))


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #


def test_kernel_larger_than_padded_input(rng):
    key = rng
    layer = L.conv2d(2, 5, padding=1)
    with pytest.raises(fnn.LayerError, match=r"conv2d: the kernel \(5, 5\) is larger than the padded input: input \(2, 6\)"):
        layer.out_shape((None, 2, 6, 1))
    with pytest.raises(fnn.LayerError, match="larger than the padded input"):
        layer.init(key, (1, 2, 2, 1))
    params, state = layer.init(key, (1, 7, 7, 1))
    with pytest.raises(fnn.LayerError, match=r"gives 4 along height, fewer than 5"):
        layer.apply(params, state, np.ones((1, 2, 9, 1), np.float32))


def test_non_4d_input(rng):
    key = rng
    layer = L.conv2d(2, 3)
    with pytest.raises(fnn.LayerError, match=r"conv2d: expected a 4-D NHWC input .* got shape \(None, 8, 8\); add a channel"):
        layer.init(key, (None, 8, 8))
    params, state = layer.init(key, (1, 8, 8, 1))
    with pytest.raises(fnn.LayerError, match=r"expected a 4-D NHWC input .* got shape \(2, 64\)"):
        layer.apply(params, state, np.ones((2, 64), np.float32))


def test_channel_count_differs_from_kernel(rng):
    key = rng
    layer = L.serial(L.conv2d(4, 3, name="conv2d"), name="net")
    params, state = layer.init(key, (1, 6, 6, 3))
    with pytest.raises(fnn.LayerError, match=r"^conv2d: the input has 1 channels \(shape \(1, 6, 6, 1\)\) but the kernel w of shape \(3, 3, 3, 4\) expects 3"):
        layer.apply(params, state, np.ones((1, 6, 6, 1), np.float32))


def test_error_path_through_combinators():
    block = L.serial(L.conv2d(2, 3), L.relu, name="block")
    model = L.serial(block, L.serial(L.conv2d(2, 3), name="block"))
    with pytest.raises(fnn.LayerError, match=r"^block_1/conv2d: the kernel"):
        model.out_shape((1, 4, 4, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(features=0, kernel_size=3), "features must be a positive int"),
        (dict(features=2, kernel_size=0), "kernel_size must be an int >= 1"),
        (dict(features=2, kernel_size=(3, 3, 3)), "kernel_size must be"),
        (dict(features=2, kernel_size=3, stride=0), "stride must be an int >= 1"),
        (dict(features=2, kernel_size=3, padding="full"), "padding must be 'valid', 'same'"),
        (dict(features=2, kernel_size=3, padding=-1), "padding must be"),
        (dict(features=2, kernel_size=3, padding=((1, 2), (3,))), "padding must be"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"conv2d: {message}"):
        L.conv2d(**kwargs)
