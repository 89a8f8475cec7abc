"""A from-scratch NumPy network in the classic textbook style, the yardstick
for fnn's NumPy backend on W1 (MLP) and W2 (LeNet).

Each layer is a small class with ``forward`` (which keeps its cache on the
object) and ``backward`` (which returns the input gradient and stores the
parameter gradients); the convolution is im2col + one matrix product, its
backward col2im; max pooling is an argmax over im2col'd windows. An Adam
(or a Momentum) object updates the parameter dict in place. All NHWC, float32.

The network reads and writes the same nested parameter dicts as fnn
(``{"conv2d": {"w", "b"}, ...}``) so that both start from the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.workloads import LEARNING_RATE, MOMENTUM, MOMENTUM_LEARNING_RATE

Params = dict[str, dict[str, np.ndarray]]


class Affine:
    """``y = x @ w + b``; remembers ``x``."""

    def __init__(self, name: str):
        self.name = name

    def forward(self, p: Params, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ p[self.name]["w"] + p[self.name]["b"]

    def backward(self, p: Params, grads: Params, dy: np.ndarray) -> np.ndarray:
        grads[self.name] = {"w": self.x.T @ dy, "b": dy.sum(axis=0)}
        return dy @ p[self.name]["w"].T


class Relu:
    """``max(x, 0)``; remembers where ``x <= 0``."""

    def forward(self, p: Params, x: np.ndarray) -> np.ndarray:
        self.off = x <= 0
        out = x.copy()
        out[self.off] = 0
        return out

    def backward(self, p: Params, grads: Params, dy: np.ndarray) -> np.ndarray:
        dx = dy.copy()
        dx[self.off] = 0
        return dx


class Flatten:
    """``(N, ...) -> (N, -1)``; remembers the shape."""

    def forward(self, p: Params, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, p: Params, grads: Params, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.shape)


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """``(N, H, W, C)`` -> rows ``(N*OH*OW, kh*kw*C)``, one row per output pixel,
    columns ordered (kernel row, kernel column, channel) like an HWIO kernel."""
    n, h, w, c = x.shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    cols = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    for i in range(kh):  # one strided copy per kernel offset
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
    return cols.reshape(n * oh * ow, kh * kw * c), oh, ow


def col2im(cols: np.ndarray, shape: tuple[int, ...], kh: int, kw: int, stride: int, pad: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: every row's entries added back onto the pixels they came from."""
    n, h, w, c = shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    cols = cols.reshape(n, oh, ow, kh, kw, c)
    xp = np.zeros((n, h + 2 * pad, w + 2 * pad, c), cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :] += cols[:, :, :, i, j, :]
    return xp[:, pad : pad + h, pad : pad + w, :]


class Conv:
    """Stride-1 convolution with ``pad`` zero pixels on every side (HWIO kernel)."""

    def __init__(self, name: str, pad: int):
        self.name, self.pad = name, pad

    def forward(self, p: Params, x: np.ndarray) -> np.ndarray:
        w = p[self.name]["w"]
        kh, kw, _, f = w.shape
        self.x_shape = x.shape
        self.cols, oh, ow = im2col(x, kh, kw, 1, self.pad)
        out = self.cols @ w.reshape(-1, f) + p[self.name]["b"]
        return out.reshape(x.shape[0], oh, ow, f)

    def backward(self, p: Params, grads: Params, dy: np.ndarray) -> np.ndarray:
        w = p[self.name]["w"]
        kh, kw, _, f = w.shape
        dy = dy.reshape(-1, f)
        grads[self.name] = {"w": (self.cols.T @ dy).reshape(w.shape), "b": dy.sum(axis=0)}
        return col2im(dy @ w.reshape(-1, f).T, self.x_shape, kh, kw, 1, self.pad)


class MaxPool:
    """2x2 max pooling, stride 2 (even sizes): argmax over each window, the
    gradient to the first maximum."""

    def forward(self, p: Params, x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        self.x_shape = x.shape
        windows = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4)
        self.arg = windows.argmax(axis=1)
        return windows[np.arange(len(windows)), self.arg].reshape(n, h // 2, w // 2, c)

    def backward(self, p: Params, grads: Params, dy: np.ndarray) -> np.ndarray:
        n, h, w, c = self.x_shape
        dwin = np.zeros((self.arg.size, 4), dy.dtype)
        dwin[np.arange(self.arg.size), self.arg] = dy.ravel()
        return dwin.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(self.x_shape)


class SoftmaxWithLoss:
    """Mean softmax cross-entropy of integer labels; backward ``(softmax - onehot) / N``."""

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        shifted = logits - logits.max(axis=1, keepdims=True)
        self.probs = np.exp(shifted)
        self.probs /= self.probs.sum(axis=1, keepdims=True)
        self.labels = labels
        rows = np.arange(len(labels))
        return float(-np.mean(np.log(self.probs[rows, labels] + 1e-30)))

    def backward(self) -> np.ndarray:
        d = self.probs.copy()
        d[np.arange(len(self.labels)), self.labels] -= 1
        return d / len(self.labels)


class Adam:
    """Adam with bias-corrected moments, updating the parameter arrays in place."""

    def __init__(self, lr: float = LEARNING_RATE, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.t, self.m, self.v = 0, {}, {}

    def update(self, params: Params, grads: Params) -> None:
        self.t += 1
        lr_m = self.lr / (1 - self.b1**self.t)
        scale_v = 1 / (1 - self.b2**self.t)
        for layer, g in grads.items():
            for name, grad in g.items():
                key = (layer, name)
                if key not in self.m:
                    self.m[key], self.v[key] = np.zeros_like(grad), np.zeros_like(grad)
                m, v = self.m[key], self.v[key]
                m += (1 - self.b1) * (grad - m)
                v += (1 - self.b2) * (grad * grad - v)
                params[layer][name] -= lr_m * m / (np.sqrt(v * scale_v) + self.eps)


class Momentum:
    """SGD + momentum (no Nesterov), updating the parameter arrays in place:
    ``v = momentum * v + g`` (``v`` starts at 0), ``p -= lr * v``."""

    def __init__(self, lr: float = MOMENTUM_LEARNING_RATE, momentum: float = MOMENTUM):
        self.lr, self.momentum = lr, momentum
        self.v: dict[tuple[str, str], np.ndarray] = {}

    def update(self, params: Params, grads: Params) -> None:
        for layer, g in grads.items():
            for name, grad in g.items():
                key = (layer, name)
                if key not in self.v:
                    self.v[key] = np.zeros_like(grad)
                v = self.v[key]
                v *= self.momentum
                v += grad
                params[layer][name] -= self.lr * v


class Network:
    """A list of layers, a softmax-with-loss head and an optimizer (Adam unless
    given); :meth:`train_step` runs forward, backward and the update."""

    def __init__(self, layers: list[Any], params: Params, optimizer: Adam | Momentum | None = None):
        self.layers, self.params = layers, params
        self.head, self.optimizer = SoftmaxWithLoss(), Adam() if optimizer is None else optimizer

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> float:
        for layer in self.layers:
            x = layer.forward(self.params, x)
        loss = self.head.forward(x, labels)
        d, grads = self.head.backward(), {}
        for layer in reversed(self.layers):
            d = layer.backward(self.params, grads, d)
        self.optimizer.update(self.params, grads)
        return loss


def mlp(params: Params, depth: int, optimizer: Adam | Momentum | None = None) -> Network:
    """W1: ``depth`` hidden affine + relu layers and an affine output (Adam unless ``optimizer``)."""
    names = ["dense"] + [f"dense_{i}" for i in range(1, depth + 1)]
    layers: list[Any] = [layer for name in names[:-1] for layer in (Affine(name), Relu())]
    return Network(layers + [Affine(names[-1])], params, optimizer)


def lenet(params: Params, optimizer: Adam | Momentum | None = None) -> Network:
    """W2: conv(pad 2) relu pool conv relu pool flatten 120 relu 84 relu 10 (Adam unless ``optimizer``)."""
    layers = [
        Conv("conv2d", 2),
        Relu(),
        MaxPool(),
        Conv("conv2d_1", 0),
        Relu(),
        MaxPool(),
        Flatten(),
        Affine("dense"),
        Relu(),
        Affine("dense_1"),
        Relu(),
        Affine("dense_2"),
    ]
    return Network(layers, params, optimizer)
