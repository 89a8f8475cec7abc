"""max_pool, avg_pool, global_avg_pool: forward against loops written here,
backward against jax.grad and finite differences, and the tie convention
(a max window's gradient goes to its first maximum; overlapping windows add
up) asserted on all-equal inputs for both the manual rule and jax.grad."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import layers as L
from tests.conv_support import check_gradients, jitted, on_backend


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def same_padding(n, k, s):
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def explicit_padding(padding, hw, window, stride):
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return tuple(same_padding(n, k, s) for n, k, s in zip(hw, window, stride))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return padding


def pool_reference(x, kind, window, stride, padding, count_include_pad=False):
    """Loops over output pixels; padded cells are skipped (max) or counted as 0 (avg with include_pad)."""
    (top, bottom), (left, right) = padding
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = window, stride
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    y = np.zeros((n, oh, ow, c))
    for p in range(oh):
        for q in range(ow):
            rows = [r for r in range(p * sh - top, p * sh - top + kh) if 0 <= r < h]
            cols = [s for s in range(q * sw - left, q * sw - left + kw) if 0 <= s < w]
            block = x[:, rows][:, :, cols]
            if kind == "max":
                y[:, p, q] = block.max(axis=(1, 2))
            else:
                y[:, p, q] = block.sum(axis=(1, 2)) / (kh * kw if count_include_pad else len(rows) * len(cols))
    return y


def first_max_gradient(x, window, stride, padding, dy):
    """The tie convention by loops: each window's dy goes to its first maximum (row-major)."""
    (top, _), (left, _) = padding
    (kh, kw), (sh, sw) = window, stride
    dx = np.zeros_like(x)
    n, h, w, c = x.shape
    for b in range(n):
        for p in range(dy.shape[1]):
            for q in range(dy.shape[2]):
                for ch in range(c):
                    best, where = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            r, s = p * sh - top + i, q * sw - left + j
                            if 0 <= r < h and 0 <= s < w and x[b, r, s, ch] > best:
                                best, where = x[b, r, s, ch], (r, s)
                    dx[b, where[0], where[1], ch] += dy[b, p, q, ch]
    return dx


# (id, window, stride, padding, (H, W))
CASES = [
    ("tiles_odd_leftover", 2, None, "valid", (5, 7)),
    ("int_padding", 3, 2, 1, (5, 5)),
    ("tiles_same_odd", 2, None, "same", (5, 5)),
    ("overlap_3x3_stride2_same", 3, 2, "same", (7, 6)),
    ("overlap_stride1", 3, 1, "valid", (5, 6)),
    ("stride_larger_than_window", 2, 3, "valid", (8, 7)),
    ("rect_explicit", (3, 2), (2, 1), ((1, 0), (1, 1)), (6, 5)),
]
IDS = [c[0] for c in CASES]
KINDS = {"max": L.max_pool, "avg": L.avg_pool}


def distinct_input(hw, seed=0, channels=2):
    """Values at least 0.01 apart (no ties, so finite differences never cross a kink)."""
    rng = np.random.default_rng(seed)
    size = 2 * hw[0] * hw[1] * channels
    return (rng.permutation(size) * 0.01 + rng.uniform(0, 1e-3, size)).reshape(2, *hw, channels) - size * 0.005


def geometry(case):
    _, window, stride, padding, hw = case
    window = pair(window)
    stride = window if stride is None else pair(stride)
    return window, stride, explicit_padding(padding, hw, window, stride)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_loop_reference(case, kind, backend_name):
    _, window, stride, padding, hw = case
    layer = KINDS[kind](window, stride=stride, padding=padding)
    x = distinct_input(hw)
    y, state = layer.apply({}, {}, on_backend(x, backend_name))
    expected = pool_reference(x, kind, *geometry(case))
    assert y.shape == layer.out_shape(x.shape) == expected.shape and state == {}
    assert isinstance(y, jax.Array) == (backend_name == "jax")
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_manual_autodiff_numeric_on_both_backends(case, kind):
    _, window, stride, padding, hw = case
    layer = KINDS[kind](window, stride=stride, padding=padding)
    check_gradients(layer, {}, {}, distinct_input(hw, seed=1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("window, stride, hw", [(3, 2, (7, 6)), (2, 2, (5, 5)), (2, 1, (4, 5)), ((3, 2), (1, 2), (6, 7))])
def test_same_padding_matches_xla(kind, window, stride, hw):
    layer = KINDS[kind](window, stride=stride, padding="same")
    x = jnp.asarray(distinct_input(hw))
    y, _ = layer.apply({}, {}, x)
    dims, strides = (1, *pair(window), 1), (1, *pair(stride), 1)
    if kind == "max":
        expected = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, "SAME")
    else:  # TensorFlow's "SAME" average: over the real inputs of each window
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, "SAME")
        expected = total / jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, dims, strides, "SAME")
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_avg_pool_count_include_pad():
    x = np.ones((1, 3, 3, 1))
    excluded, _ = L.avg_pool(2, padding="same").apply({}, {}, x)
    included, _ = L.avg_pool(2, padding="same", count_include_pad=True).apply({}, {}, x)
    np.testing.assert_allclose(excluded[0, :, :, 0], np.ones((2, 2)))
    np.testing.assert_allclose(included[0, :, :, 0], [[1.0, 0.5], [0.5, 0.25]])
    check_gradients(L.avg_pool(3, stride=2, padding="same", count_include_pad=True), {}, {}, distinct_input((5, 6)))


# --------------------------------------------------------------------------- #
# Ties: the first maximum of each window, overlapping windows adding up
# --------------------------------------------------------------------------- #


def tie_gradients(layer):
    """``f(x, dy) -> dx`` three ways: the manual rule on NumPy, and the manual
    rule and jax.grad on JAX (one compiled function, reused for every input)."""

    @jax.jit
    def on_jax(x, dy):
        _, _, res = layer.fwd({}, {}, x)
        autodiff = jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v)[0] * dy))(x)
        return layer.bwd({}, res, dy)[1], autodiff

    def gradients(x, dy):
        _, _, res = layer.fwd({}, {}, x)
        return (layer.bwd({}, res, dy)[1], *map(np.asarray, on_jax(jnp.asarray(x), jnp.asarray(dy))))

    return gradients


TIE_CASES = [
    (2, None, "valid", (4, 6)),
    (2, None, "same", (5, 5)),
    (3, 1, "valid", (5, 5)),
    (3, 2, "same", (7, 6)),
    (2, 1, "same", (4, 4)),
    ((2, 3), (1, 2), "same", (7, 6)),
]


@pytest.mark.parametrize("window, stride, padding, hw", TIE_CASES)
def test_ties_send_gradient_to_the_first_maximum(window, stride, padding, hw):
    layer = L.max_pool(window, stride=stride, padding=padding)
    geo = geometry(("", window, stride, padding, hw))
    rng = np.random.default_rng(0)
    all_equal = np.ones((2, *hw, 2))
    few_values = rng.integers(0, 3, (2, *hw, 2)).astype(np.float64)  # many ties, not all
    gradients = tie_gradients(layer)
    for x in (all_equal, few_values):
        dy = rng.standard_normal(layer.out_shape(x.shape))
        expected = first_max_gradient(x, *geo, dy)
        for name, dx in zip(("manual numpy", "manual jax", "jax.grad"), gradients(x, dy)):
            np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12, err_msg=name)
    if stride == 1 and padding == "valid":
        # overlapping windows add up: each window's first pixel (its top-left) gets one unit
        _, _, autodiff = gradients(all_equal, np.ones(layer.out_shape(all_equal.shape)))
        counts = np.zeros(hw)
        counts[: hw[0] - 2, : hw[1] - 2] = 1
        np.testing.assert_array_equal(autodiff[0, :, :, 0], counts)


def test_float32_stays_float32_and_matches_float64_autodiff(backend_name):
    """float32 in, float32 out, with the values of jax.grad in float64 (batch 2, 7 x 6 images, 3 channels)."""
    rng = np.random.default_rng(11)
    x64 = rng.standard_normal((2, 7, 6, 3))
    for plain in (L.max_pool((2, 3), padding="same"), L.avg_pool((3, 2), stride=(2, 1), padding="same"),
                  L.max_pool(3, stride=1), L.global_avg_pool):
        layer = jitted(plain)
        y, _, res = layer.fwd({}, {}, on_backend(x64.astype(np.float32), backend_name))
        dy = rng.standard_normal(np.shape(y))
        _, dx = layer.bwd({}, res, on_backend(dy.astype(np.float32), backend_name))
        assert y.dtype == dx.dtype == np.float32, layer.name
        want_y, vjp = jax.vjp(lambda a: plain.apply({}, {}, a)[0], jnp.asarray(x64))
        np.testing.assert_allclose(np.asarray(y), np.asarray(want_y), rtol=1e-6, atol=1e-6, err_msg=layer.name)
        np.testing.assert_allclose(np.asarray(dx), np.asarray(vjp(jnp.asarray(dy))[0]), rtol=1e-5, atol=1e-6,
                                   err_msg=layer.name)


def test_global_avg_pool(backend_name):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    y, _ = L.global_avg_pool.apply({}, {}, on_backend(x, backend_name))
    np.testing.assert_allclose(np.asarray(y), x.mean(axis=(1, 2)), rtol=1e-12)
    assert L.global_avg_pool.out_shape((None, 3, 5, 4)) == (None, 4)
    if backend_name == "numpy":
        check_gradients(L.global_avg_pool, {}, {}, x)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input(kind):
    layer = KINDS[kind](3, stride=2)
    name = f"{kind}_pool"
    # a tuple window fixes the rank; an int window takes it from the input (a 3-D input is 1-D pooling)
    with pytest.raises(fnn.LayerError, match=rf"^{name}: expected a 4-D NHWC input .* got shape \(2, 8, 8\); add a channel"):
        KINDS[kind]((3, 3), stride=2).apply({}, {}, np.ones((2, 8, 8)))
    assert layer.out_shape((2, 8, 8)) == (2, 3, 8)
    with pytest.raises(fnn.LayerError, match=rf"^{name}: expected an input \(batch, \*spatial, channels\) with 1, 2 or 3 spatial axes, got shape \(2, 64\)"):
        layer.apply({}, {}, np.ones((2, 64)))
    with pytest.raises(fnn.LayerError, match=rf"^{name}: the window \(3, 3\) is larger than the padded input: input \(2, 5\)"):
        layer.out_shape((None, 2, 5, 1))
    with pytest.raises(fnn.LayerError, match=rf"^net/{name}: the window"):
        L.serial(L.serial(layer, name="net")).apply({"net": {name: {}}}, {"net": {name: {}}}, np.ones((1, 2, 2, 1)))
    with pytest.raises(ValueError, match=rf"{name}: each padding must be smaller than the window"):
        KINDS[kind](2, padding=2)
    with pytest.raises(ValueError, match=rf"{name}: window must be an int >= 1"):
        KINDS[kind](0)
    with pytest.raises(ValueError, match=rf"{name}: stride must be"):
        KINDS[kind](2, stride=(1, 0))
