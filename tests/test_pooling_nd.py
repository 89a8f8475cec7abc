"""1-D and 3-D pooling (and 2-D with rectangular windows): forward against
lax.reduce_window, the hand-written backward against jax.grad and finite
differences on both backends, the tie rule (first maximum, overlaps adding
up) against a loop written here, and global_avg_pool over any rank."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnn import layers as L
from tests.conv_support import check_gradients, jitted, on_backend

# (id, window, stride, padding, input shape)
CASES = [
    ("1d_tiles_leftover", 2, None, "valid", (2, 7, 3)),
    ("1d_overlap_same", 3, 2, "same", (3, 8, 2)),
    ("1d_tuple_pairs", (3,), (1,), ((1, 2),), (2, 6, 3)),
    ("2d_rect_window_stride", (3, 2), (2, 3), ((1, 0), (1, 1)), (3, 7, 8, 2)),
    ("3d_tiles", (2, 3, 2), None, "valid", (2, 4, 6, 5, 3)),
    ("3d_overlap_rect", (2, 2, 3), (1, 2, 2), ((1, 0), (0, 1), (1, 1)), (2, 3, 5, 6, 2)),
    ("3d_int_window_same", 2, (1, 2, 3), "same", (3, 4, 3, 5, 2)),
]
IDS = [c[0] for c in CASES]
KINDS = {"max": L.max_pool, "avg": L.avg_pool}


def distinct(shape, seed=0):
    """Values at least 0.01 apart (no ties, so finite differences never cross a kink)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 + rng.uniform(0, 1e-3, size)).reshape(shape) - size * 0.005


def geometry(case):
    _, window, stride, padding, shape = case
    rank = len(shape) - 2
    window = (window,) * rank if isinstance(window, int) else tuple(window)
    stride = window if stride is None else (stride,) * rank if isinstance(stride, int) else tuple(stride)
    if padding == "same":
        pads = []
        for n, k, s in zip(shape[1:-1], window, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
    elif padding == "valid":
        pads = [(0, 0)] * rank
    else:
        pads = list(padding)
    return window, stride, pads


def reduce_window_reference(x, kind, window, stride, pads):
    """max, or the mean over each window's real inputs, by lax.reduce_window."""
    dims, steps, padding = (1, *window, 1), (1, *stride, 1), [(0, 0), *pads, (0, 0)]
    x = jnp.asarray(x)
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, steps, padding)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, steps, padding)
    return total / jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, dims, steps, padding)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reduce_window(case, kind, backend_name):
    _, window, stride, padding, shape = case
    layer = KINDS[kind](window, stride=stride, padding=padding)
    x = distinct(shape)
    y, state = layer.apply({}, {}, on_backend(x, backend_name))
    want = reduce_window_reference(x, kind, *geometry(case))
    assert isinstance(y, jax.Array) == (backend_name == "jax") and state == {}
    assert y.shape == layer.out_shape(shape) == want.shape
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_manual_autodiff_numeric_on_both_backends(case, kind):
    _, window, stride, padding, shape = case
    check_gradients(KINDS[kind](window, stride=stride, padding=padding), {}, {}, distinct(shape, seed=1))


def test_avg_pool_count_include_pad_in_1d_and_3d():
    one_d = L.avg_pool(2, padding="same", count_include_pad=True).apply({}, {}, np.ones((1, 3, 1)))[0]
    np.testing.assert_allclose(one_d[0, :, 0], [1.0, 0.5])
    three_d = L.avg_pool((2, 2, 2), padding="same", count_include_pad=True).apply({}, {}, np.ones((1, 1, 3, 3, 1)))[0]
    np.testing.assert_allclose(three_d[0, 0, :, :, 0], [[0.5, 0.25], [0.25, 0.125]])
    check_gradients(L.avg_pool((3, 2), stride=(2, 1), padding="same", count_include_pad=True), {}, {}, distinct((2, 5, 4, 3)))


def first_max_gradient(x, window, stride, pads, dy):
    """The tie convention by loops: each window's dy goes to its first maximum (row-major)."""
    dx = np.zeros_like(x)
    rank = x.ndim - 2
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[-1])):
        for q in itertools.product(*(range(o) for o in dy.shape[1:-1])):
            best, where = -np.inf, None
            for i in itertools.product(*(range(k) for k in window)):
                at = tuple(q[a] * stride[a] - pads[a][0] + i[a] for a in range(rank))
                if all(0 <= at[a] < x.shape[1 + a] for a in range(rank)) and x[(b, *at, c)] > best:
                    best, where = x[(b, *at, c)], at
            dx[(b, *where, c)] += dy[(b, *q, c)]
    return dx


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[4], CASES[5]], ids=[IDS[i] for i in (0, 1, 2, 4, 5)])
def test_ties_send_gradient_to_the_first_maximum(case):
    _, window, stride, padding, shape = case
    layer = L.max_pool(window, stride=stride, padding=padding)

    @jax.jit
    def on_jax(x, dy):
        _, _, res = layer.fwd({}, {}, x)
        autodiff = jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v)[0] * dy))(x)
        return layer.bwd({}, res, dy)[1], autodiff

    rng = np.random.default_rng(0)
    for x in (np.ones(shape), rng.integers(0, 3, shape).astype(np.float64)):
        dy = rng.standard_normal(layer.out_shape(shape))
        want = first_max_gradient(x, *geometry(case), dy)
        _, _, res = layer.fwd({}, {}, x)
        got = [layer.bwd({}, res, dy)[1], *map(np.asarray, on_jax(jnp.asarray(x), jnp.asarray(dy)))]
        for name, dx in zip(("manual numpy", "manual jax", "jax.grad"), got):
            np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape", [(2, 5, 3), (3, 4, 5, 2), (2, 3, 4, 5, 3)])
def test_global_avg_pool_over_any_rank(shape, backend_name):
    x = np.random.default_rng(0).standard_normal(shape)
    y, _ = L.global_avg_pool.apply({}, {}, on_backend(x, backend_name))
    np.testing.assert_allclose(np.asarray(y), x.mean(axis=tuple(range(1, len(shape) - 1))), rtol=1e-12)
    assert L.global_avg_pool.out_shape(shape) == (shape[0], shape[-1])
    if backend_name == "numpy":
        check_gradients(L.global_avg_pool, {}, {}, x)


def test_float32_stays_float32_in_1d_and_3d(backend_name):
    for shape, layers in [
        ((2, 7, 3), (L.max_pool(2, padding="same"), L.avg_pool(3, stride=2), L.max_pool(3, stride=1))),
        ((2, 4, 5, 3, 2), (L.max_pool((2, 2, 1)), L.avg_pool((2, 3, 2), stride=1, padding="same"), L.global_avg_pool)),
    ]:
        x = on_backend(np.ones(shape, np.float32), backend_name)
        for layer in layers:
            layer = jitted(layer)
            y, _, res = layer.fwd({}, {}, x)
            _, dx = layer.bwd({}, res, y)
            assert y.dtype == dx.dtype == np.float32, layer.name
