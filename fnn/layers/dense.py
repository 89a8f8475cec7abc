"""The fully connected (affine) layer: ``y = x @ w + b``, vectorised over the batch."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn.core import Layer, LayerError, check_param_shapes, check_positive_int, is_multi_shape

__all__ = ["dense", "input_cotangent_unused"]

_LECUN_NORMAL = initializers.lecun_normal()

# The arrays whose cotangent the caller of a backward sweep throws away (the model input in
# value_and_grad): a dense layer fed directly by one of them skips dy @ w.T.
_UNUSED_COTANGENTS: contextvars.ContextVar[tuple] = contextvars.ContextVar("fnn_unused_cotangents", default=())


@contextlib.contextmanager
def input_cotangent_unused(*arrays: Any) -> Iterator[None]:
    """Within this block, a dense layer whose input is one of ``arrays`` (the
    very objects) returns zeros for its input cotangent instead of computing
    ``dy @ w.T``.

    For callers that discard the cotangent of the model input, as
    :func:`fnn.value_and_grad` does: on NumPy the first layer's input
    gradient is the largest product of the backward pass of an MLP and is
    never used. A cotangent of an array that *is* the model input can only
    flow back to the model input, so nothing else changes.
    """
    token = _UNUSED_COTANGENTS.set(arrays)
    try:
        yield
    finally:
        _UNUSED_COTANGENTS.reset(token)


def _cotangent_unused(x: Any) -> bool:
    return any(x is a for a in _UNUSED_COTANGENTS.get())



def dense(
    features: int,
    *,
    w_init: initializers.Initializer = _LECUN_NORMAL,
    b_init: initializers.Initializer = initializers.zeros,
    use_bias: bool = True,
    name: str = "dense",
) -> Layer:
    """Affine layer ``y = x @ w + b`` on inputs of shape ``(batch, in)``.

    Params: ``{"w": (in, features), "b": (features,)}`` (no ``"b"`` when
    ``use_bias=False``). Backward: ``dw = x.T @ dy``, ``db = sum(dy, 0)``,
    ``dx = dy @ w.T``. Inputs of higher rank are refused (insert ``flatten``
    first) so that a forgotten flatten is never silently applied per pixel.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.dense(3)
    >>> params, state = layer.init(np.random.default_rng(0), (None, 4))
    >>> y, _ = layer.apply(params, state, np.ones((2, 4), np.float32))
    >>> y.shape
    (2, 3)
    """
    features = check_positive_int(name, "features", features)

    def expected(in_features: int) -> dict:
        shapes = {"w": (in_features, features)}
        if use_bias:
            shapes["b"] = (features,)
        return shapes

    def check_shape(shape) -> int:
        if is_multi_shape(shape) or len(shape) != 2:
            raise LayerError(
                name,
                f"expected input of shape (batch, in_features), got {shape}"
                + ("; insert flatten before dense" if not is_multi_shape(shape) and len(shape) > 2 else ""),
            )
        if shape[1] is None or shape[1] == 0:
            raise LayerError(name, f"the input feature size must be known and positive; got shape {shape}")
        return shape[1]

    def init(key, shape, dtype):
        n_in = check_shape(shape)
        k_w, k_b = backend.split(key)
        params = {"w": w_init(k_w, (n_in, features), dtype)}
        if use_bias:
            params["b"] = b_init(k_b, (features,), dtype)
        return params, {}

    def out_shape(shape):
        check_shape(shape)
        return (shape[0], features)

    def fwd(params, state, x, key, train):
        if isinstance(x, (tuple, list)):
            raise LayerError(name, f"expected a single array, got a tuple of {len(x)} inputs")
        n_in = check_shape(tuple(np.shape(x)))
        check_param_shapes(name, params, expected(n_in))
        y = x @ params["w"]
        if use_bias:
            b = params["b"]
            if type(y) is np.ndarray and type(b) is np.ndarray and b.dtype == y.dtype:
                y += b  # y is the product just made: no second (batch, features) array
            else:
                y = y + b[None, :]
        return y, state, x

    def bwd(params, x, dy):
        w = params["w"]
        grads = {"w": x.T @ dy}
        if use_bias:
            grads["b"] = dy.sum(axis=0)
        if _cotangent_unused(x):
            xp = backend.namespace(dy, w)
            return grads, xp.broadcast_to(xp.zeros((), xp.result_type(dy.dtype, w.dtype)), np.shape(x))
        return grads, dy @ w.T

    return Layer(name, init, out_shape, fwd, bwd)
