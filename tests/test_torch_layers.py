"""fnn's N-d convolution, conv_transpose and pooling layers against PyTorch's
functional ops (float64): the forward output and the hand-written backward
against torch's autograd, with dilation, groups, strides and asymmetric
padding. Layouts: fnn is channels last with kernels ``(*k, C/G, F)`` (conv)
and ``(*k, C, F)`` (conv_transpose); PyTorch is channels first with
``(F, C/G, *k)`` and ``(C, F, *k)``. Skipped when PyTorch is not installed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from fnn import layers as L  # noqa: E402

TOL = {"rtol": 1e-10, "atol": 1e-10}


def to_torch(a):
    """``(N, *spatial, C)`` -> a leaf tensor ``(N, C, *spatial)`` that keeps its gradient."""
    return torch.tensor(np.ascontiguousarray(np.moveaxis(a, -1, 1)), dtype=torch.float64, requires_grad=True)


def from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def kernel_to_torch(w, transpose=False):
    rank = w.ndim - 2
    perm = (rank, rank + 1, *range(rank)) if transpose else (rank + 1, rank, *range(rank))
    return torch.tensor(np.ascontiguousarray(w.transpose(perm)), dtype=torch.float64, requires_grad=True)


def kernel_from_torch(t, transpose=False):
    a = t.detach().numpy()
    rank = a.ndim - 2
    moved = a.transpose(*range(2, rank + 2), 0, 1)  # (*k, A, B)
    return moved if transpose else moved.swapaxes(-1, -2)


def torch_pad(pads):
    """``[(lo, hi), ...]`` over the spatial axes as F.pad's flat tuple (last axis first)."""
    return tuple(v for lo_hi in reversed(pads) for v in lo_hi)


def fnn_run(layer, shape, seed=0):
    """``(x, params, y, cot, dparams, dx)`` of the layer on NumPy float64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    params, state = layer.init(np.random.default_rng(seed), shape, dtype=np.float64)
    if "b" in params:
        params["b"] = rng.standard_normal(params["b"].shape)
    y, _, res = layer.fwd(params, state, x)
    cot = rng.standard_normal(y.shape)
    dparams, dx = layer.bwd(params, res, cot)
    return x, params, y, cot, dparams, dx


def compare(yt, xt, wt, bt, y, cot, dparams, dx, transpose=False):
    np.testing.assert_allclose(from_torch(yt), y, **TOL)
    yt.backward(torch.tensor(np.ascontiguousarray(np.moveaxis(cot, -1, 1))))
    np.testing.assert_allclose(from_torch(xt.grad), dx, **TOL)
    np.testing.assert_allclose(kernel_from_torch(wt.grad, transpose), dparams["w"], **TOL)
    np.testing.assert_allclose(bt.grad.numpy(), dparams["b"], **TOL)


CONV_CASES = [
    # (rank, features, kernel, stride, padding pairs, dilation, groups, input shape)
    (1, 4, (3,), (2,), [(1, 2)], (2,), 2, (2, 11, 6)),
    (2, 6, (3, 2), (2, 1), [(1, 0), (2, 1)], (1, 2), 3, (3, 9, 8, 3)),
    (3, 4, (2, 3, 2), (1, 2, 1), [(1, 1), (0, 1), (1, 0)], (2, 1, 1), 2, (2, 5, 6, 4, 2)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=["conv1d", "conv2d", "conv3d"])
def test_conv_matches_torch(case):
    rank, features, kernel, stride, pads, dilation, groups, shape = case
    build = {1: L.conv1d, 2: L.conv2d, 3: L.conv3d}[rank]
    layer = build(features, kernel, stride=stride, padding=tuple(pads), dilation=dilation, groups=groups)
    x, params, y, cot, dparams, dx = fnn_run(layer, shape)
    xt, wt = to_torch(x), kernel_to_torch(params["w"])
    bt = torch.tensor(params["b"], requires_grad=True)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    yt = conv(F.pad(xt, torch_pad(pads)), wt, bt, stride=stride, dilation=dilation, groups=groups)
    compare(yt, xt, wt, bt, y, cot, dparams, dx)


TRANSPOSE_CASES = [
    # (rank, features, kernel, stride, int padding per axis, input shape)
    (1, 3, (4,), (3,), (1,), (2, 5, 2)),
    (2, 3, (3, 2), (2, 3), (1, 0), (2, 4, 5, 2)),
    (3, 2, (2, 3, 2), (2, 1, 2), (0, 1, 1), (3, 3, 4, 3, 2)),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=["1d", "2d", "3d"])
def test_conv_transpose_matches_torch(case):
    rank, features, kernel, stride, padding, shape = case
    layer = L.conv_transpose(features, kernel, stride=stride, padding=padding)
    x, params, y, cot, dparams, dx = fnn_run(layer, shape)
    xt, wt = to_torch(x), kernel_to_torch(params["w"], transpose=True)
    bt = torch.tensor(params["b"], requires_grad=True)
    op = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    yt = op(xt, wt, bt, stride=stride, padding=padding)
    compare(yt, xt, wt, bt, y, cot, dparams, dx, transpose=True)


POOL_CASES = [
    # (window, stride, symmetric padding per axis, input shape)
    ((3,), (2,), (1,), (2, 9, 3)),
    ((3, 2), (2, 1), (1, 1), (3, 7, 6, 2)),
    ((2, 3, 2), (1, 2, 2), (0, 1, 1), (2, 4, 7, 5, 3)),
]


def distinct(shape, seed=0):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01).reshape(shape)


@pytest.mark.parametrize("kind", ["max", "avg", "avg_include_pad"])
@pytest.mark.parametrize("case", POOL_CASES, ids=["1d", "2d", "3d"])
def test_pools_match_torch(case, kind):
    window, stride, padding, shape = case
    rank = len(window)
    if kind == "max":
        layer = L.max_pool(window, stride=stride, padding=padding)
        op = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
        run = lambda t: op(t, window, stride, padding)  # noqa: E731
    else:
        include = kind == "avg_include_pad"
        layer = L.avg_pool(window, stride=stride, padding=padding, count_include_pad=include)
        op = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        run = lambda t: op(t, window, stride, padding, count_include_pad=include)  # noqa: E731
    x = distinct(shape)
    y, _, res = layer.fwd({}, {}, x)
    cot = np.random.default_rng(1).standard_normal(y.shape)
    _, dx = layer.bwd({}, res, cot)
    xt = to_torch(x)
    yt = run(xt)
    np.testing.assert_allclose(from_torch(yt), y, **TOL)
    yt.backward(torch.tensor(np.ascontiguousarray(np.moveaxis(cot, -1, 1))))
    np.testing.assert_allclose(from_torch(xt.grad), dx, **TOL)
