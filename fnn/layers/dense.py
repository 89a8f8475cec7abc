"""The fully connected (affine) layer: ``y = x @ w + b`` on the last axis,
vectorised over the batch (and over any axes between, e.g. time)."""

from __future__ import annotations

import numpy as np

from fnn import backend, initializers
from fnn.checks import batch_axis_hint
from fnn.core import Layer, LayerError, check_param_shapes, check_positive_int, expect_single, is_multi_shape, layer_factory
from fnn.kernels.affine import affine
from fnn.kernels.weight_grad import weight_gradient

__all__ = ["dense"]

_LECUN_NORMAL = initializers.lecun_normal()


@layer_factory
def dense(
    features: int,
    *,
    w_init: initializers.Initializer = _LECUN_NORMAL,
    b_init: initializers.Initializer = initializers.zeros,
    use_bias: bool = True,
    name: str = "dense",
) -> Layer:
    """Affine layer ``y = x @ w + b`` on the last axis: ``(batch, ..., in) -> (batch, ..., features)``.

    Params: ``{"w": (in, features), "b": (features,)}`` (no ``"b"`` when
    ``use_bias=False``). Backward, with ``X`` and ``dY`` the input and the
    output's cotangent flattened to rows ``(batch * ..., in)`` and
    ``(batch * ..., features)``: ``dw = X.T @ dY``, ``db = sum(dY, 0)``,
    ``dx = dy @ w.T`` (skipped when the caller does not need it). For images,
    flatten first (``flatten`` then ``dense``) unless a per-pixel map (a 1x1
    convolution) is what you mean.

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
        if is_multi_shape(shape) or len(shape) < 2:
            hint = "" if is_multi_shape(shape) else batch_axis_hint(shape, 2)
            raise LayerError(name, f"expected input of shape (batch, ..., in_features), got {shape}{hint}")
        if shape[-1] is None or shape[-1] == 0:
            raise LayerError(name, f"the input feature size must be known and positive; got shape {shape}")
        return shape[-1]

    def init(key, shape, dtype):
        n_in = check_shape(shape)
        k_w, k_b = backend.split(key)
        params = {"w": w_init(k_w, (n_in, features), dtype)}
        if use_bias:
            params["b"] = b_init(k_b, (features,), dtype)
        return params, {}

    def out_shape(shape):
        check_shape(shape)
        return tuple(shape[:-1]) + (features,)

    def fwd(params, state, x, key, train):
        n_in = check_shape(tuple(np.shape(expect_single(name, x))))
        check_param_shapes(name, params, expected(n_in))
        return affine(x, params["w"], params["b"] if use_bias else None), state, x

    def bwd(params, x, dy, *, input_grad=True):
        expected_dy = tuple(np.shape(x)[:-1]) + (features,)
        if np.shape(dy) != expected_dy:
            raise LayerError(name, f"dy has shape {np.shape(dy)}; expected the output's shape {expected_dy}")
        rows, drows = (x, dy) if x.ndim == 2 else (x.reshape(-1, x.shape[-1]), dy.reshape(-1, features))
        grads = {"w": weight_gradient(rows, drows)}
        if use_bias:
            grads["b"] = drows.sum(axis=0)
        return grads, dy @ params["w"].T if input_grad else None

    return Layer(name, init, out_shape, fwd, bwd)
