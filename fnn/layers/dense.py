"""The fully connected (affine) layer: ``y = x @ w + b``, vectorised over the batch."""

from __future__ import annotations

import numpy as np

from fnn import backend, initializers
from fnn.core import Layer, LayerError, check_param_shapes, check_positive_int, expect_single, is_multi_shape, layer_factory
from fnn.kernels.affine import affine

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
    """Affine layer ``y = x @ w + b`` on inputs of shape ``(batch, in)``.

    Params: ``{"w": (in, features), "b": (features,)}`` (no ``"b"`` when
    ``use_bias=False``). Backward: ``dw = x.T @ dy``, ``db = sum(dy, 0)``,
    ``dx = dy @ w.T`` (skipped when the caller does not need it). Inputs of higher rank are refused (insert ``flatten``
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
        n_in = check_shape(tuple(np.shape(expect_single(name, x))))
        check_param_shapes(name, params, expected(n_in))
        return affine(x, params["w"], params["b"] if use_bias else None), state, x

    def bwd(params, x, dy, *, input_grad=True):
        if np.shape(dy) != (np.shape(x)[0], features):
            raise LayerError(name, f"dy has shape {np.shape(dy)}; expected the output's shape {(np.shape(x)[0], features)}")
        grads = {"w": x.T @ dy}
        if use_bias:
            grads["b"] = dy.sum(axis=0)
        return grads, dy @ params["w"].T if input_grad else None

    return Layer(name, init, out_shape, fwd, bwd)
