"""The embedding layer: a learned table of vectors, one row per token id.

Forward, for integer ids of any shape ``(...)``::

    y[..., :] = w[ids[...], :]                     # (..., features)

Backward: each row of the table receives the sum of the cotangents of the
positions that read it (a scatter-add, :func:`fnn.kernels.scatter.scatter_add_rows`);
rows that were not read receive zero::

    dw[r] = sum(dy[p] for every position p with ids[p] == r)

The ids are integers and get no gradient: ``bwd`` returns ``None`` as the
input's cotangent, which ``jax.custom_vjp`` (so :func:`fnn.manual_vjp`) reads
as the zero cotangent of an integer input; ``jax.grad(..., allow_int=True)``
with respect to the ids gives the matching ``float0`` zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend, initializers
from fnn.core import (
    Layer,
    LayerError,
    check_param_shapes,
    check_positive_int,
    expect_single,
    is_multi_shape,
    layer_factory,
)
from fnn.kernels.scatter import scatter_add_rows

__all__ = ["embedding"]

_NORMAL_1 = initializers.normal(1.0)


@layer_factory
def embedding(
    num_embeddings: int,
    features: int,
    *,
    w_init: initializers.Initializer = _NORMAL_1,
    name: str = "embedding",
) -> Layer:
    """A lookup table ``w (num_embeddings, features)``: ids ``(...)`` -> ``w[ids]`` ``(..., features)``.

    Args:
      num_embeddings: the number of rows (the vocabulary size); ids are in
        ``[0, num_embeddings)``.
      features: the size of each vector.
      w_init: the table's initialiser; ``normal(1.0)``, the standard normal of
        PyTorch's ``nn.Embedding`` (Flax's ``nn.Embed`` draws with standard
        deviation ``1 / sqrt(features)`` instead: pass
        ``initializers.normal(features ** -0.5)`` for that).

    Ids must have an integer dtype (float ids are refused, as by PyTorch and
    Flax). When their values can be read (NumPy arrays, JAX arrays outside
    ``jit``), an id outside ``[0, num_embeddings)`` is refused with an error
    naming it; under ``jit`` they cannot be read: ``jax.numpy.take`` then gives
    NaN rows for ids ``>= num_embeddings`` and counts negative ids from the end
    (as NumPy indexing does); the backward matches it (a negative id's
    cotangent goes to the row it read, that of an id ``>= num_embeddings`` is dropped).

    Backward: ``dw`` is the scatter-add of ``dy`` into the rows used (module
    docstring); the ids' cotangent is ``None``.

    >>> import numpy as np, fnn
    >>> layer = fnn.layers.embedding(10, 3)
    >>> params, _ = layer.init(np.random.default_rng(0), (2, 4))
    >>> y, _ = layer.apply(params, {}, np.array([[1, 2, 3, 1], [0, 0, 9, 4]]))
    >>> y.shape, bool(np.all(y[0, 0] == y[0, 3]))
    ((2, 4, 3), True)
    """
    num_embeddings = check_positive_int(name, "num_embeddings", num_embeddings)
    features = check_positive_int(name, "features", features)

    def out_shape(shape):
        if is_multi_shape(shape):
            raise LayerError(name, f"expected one array of integer ids, got several shapes {shape}")
        return tuple(shape) + (features,)

    def init(key, shape, dtype):
        out_shape(shape)
        return {"w": w_init(key, (num_embeddings, features), dtype)}, {}

    def check_ids(ids: Any) -> None:
        dtype = getattr(ids, "dtype", None)
        if dtype is None or np.dtype(dtype).kind not in "iu":
            what = f"dtype {np.dtype(dtype)}" if dtype is not None else f"a {type(ids).__name__}"
            raise LayerError(name, f"expected an array of integer ids; got {what} (convert with ids.astype(int))")
        if backend.is_concrete(ids) and np.size(ids) > 0:
            values = np.asarray(ids)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= num_embeddings:
                bad = low if low < 0 else high
                raise LayerError(name, f"id {bad} is out of range: ids must be in [0, {num_embeddings})")

    def fwd(params, state, ids, key, train):
        expect_single(name, ids)
        check_ids(ids)
        check_param_shapes(name, params, {"w": (num_embeddings, features)})
        xp = backend.namespace(ids, params)
        y = xp.take(params["w"], xp.reshape(ids, (-1,)), axis=0)
        return y.reshape(tuple(np.shape(ids)) + (features,)), state, ids

    def bwd(params, ids, dy, *, input_grad=True):
        rows = dy.reshape(-1, features)
        return {"w": scatter_add_rows(ids.reshape(-1), rows, num_embeddings).astype(params["w"].dtype)}, None

    return Layer(name, init, out_shape, fwd, bwd)
