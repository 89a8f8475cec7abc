"""A decoder-style transformer over token ids, built only from fnn layers:

``embedding -> sinusoidal_positions -> transformer_block * num_layers -> layer_norm -> dense(vocab_size)``

(plus, with ``pool="last"``, :func:`last_position`, which keeps the last
position's logits). Every part has its hand-written backward rule, so the
model trains with ``fnn.value_and_grad(..., method="manual")`` as well as with
autodiff. Re-exported as :func:`fnn.models.transformer`.
"""

from __future__ import annotations

import numpy as np

from fnn import backend
from fnn.core import Layer, LayerError, check_no_params, check_positive_int, expect_single, is_multi_shape
from fnn.core import layer_factory, no_params, serial
from fnn.layers.dense import dense
from fnn.layers.embedding import embedding
from fnn.layers.normalization import layer_norm
from fnn.layers.positions import sinusoidal_positions
from fnn.layers.transformer import transformer_block

__all__ = ["transformer", "last_position"]


@layer_factory
def last_position(*, name: str = "last_position") -> Layer:
    """Keeps the last step of a sequence: ``(batch, time, features) -> (batch, features)``.

    Forward ``y = x[:, -1, :]``; backward ``dx`` is zero everywhere but the
    last step, which receives ``dy``. No params. With a causal model the last
    position is the only one that has seen the whole sequence, so its output
    is the one to classify from.

    >>> import numpy as np, fnn
    >>> layer = fnn.models.last_position()
    >>> layer.apply({}, {}, np.arange(12.0).reshape(1, 3, 4))[0]
    array([[ 8.,  9., 10., 11.]])
    """

    def out_shape(shape):
        if is_multi_shape(shape) or len(shape) != 3:
            raise LayerError(name, f"expected input of shape (batch, time, features), got {shape}")
        return (shape[0], shape[2])

    def fwd(params, state, x, key, train):
        check_no_params(name, params)
        out_shape(tuple(np.shape(expect_single(name, x))))
        return x[:, -1, :], state, tuple(np.shape(x))

    def bwd(params, shape, dy):
        xp = backend.namespace(dy)
        before = xp.zeros((shape[0], shape[1] - 1, shape[2]), dtype=dy.dtype)
        return {}, xp.concatenate([before, dy[:, None, :]], axis=1)

    return Layer(name, no_params, out_shape, fwd, bwd)


@layer_factory
def transformer(
    vocab_size: int,
    *,
    num_layers: int,
    num_heads: int,
    features: int,
    mlp_features: int,
    causal: bool = True,
    dropout_rate: float = 0.0,
    pool: str | None = None,
    name: str = "transformer",
) -> Layer:
    """A pre-norm transformer over integer token ids ``(batch, time)``, giving logits.

    ``embedding(vocab_size, features) -> sinusoidal_positions ->
    transformer_block(num_heads, mlp_features, causal=causal) * num_layers ->
    layer_norm -> dense(vocab_size)``

    Args:
      vocab_size: the number of token ids (ids in ``[0, vocab_size)``) and of logits.
      num_layers: the number of transformer blocks.
      num_heads: attention heads per block (``features`` must divide by it).
      features: the model width ``D`` (even: the sinusoidal table pairs sin and cos).
      mlp_features: the hidden width of each block's MLP (often ``4 * D``).
      causal: each position attends only to itself and earlier positions, as a
        language model needs (the default); ``False`` for an encoder.
      dropout_rate: each block's attention and residual dropout (train mode
        then needs a key).
      pool: ``None`` gives logits at every position, ``(batch, time,
        vocab_size)``: next-token prediction, with
        :data:`fnn.losses.softmax_cross_entropy` and labels ``(batch, time)``.
        ``"last"`` keeps the last position's logits, ``(batch, vocab_size)``
        (:func:`last_position`): classifying a sequence, such as the answer of
        ``[a, b, =]`` in modular arithmetic, with labels ``(batch,)``.

    The position table is fixed (no ``max_len``: any length works). Params:
    ``{"embedding", "sinusoidal_positions", "transformer_block", ...,
    "transformer_block_{num_layers-1}", "layer_norm", ("last_position",) "dense"}``.

    >>> import fnn
    >>> model = fnn.models.transformer(11, num_layers=2, num_heads=2, features=8, mlp_features=16)
    >>> model.out_shape((None, 5)), fnn.models.transformer(11, num_layers=1, num_heads=2, features=8,
    ...     mlp_features=16, pool="last").out_shape((None, 5))
    ((None, 5, 11), (None, 11))
    """
    check_positive_int(name, "vocab_size", vocab_size)
    check_positive_int(name, "num_layers", num_layers)
    check_positive_int(name, "num_heads", num_heads)
    check_positive_int(name, "features", features)
    check_positive_int(name, "mlp_features", mlp_features)
    if features % 2:
        raise ValueError(f"{name}: features must be even (the sinusoidal positions pair sin and cos); got {features}")
    if features % num_heads:
        raise ValueError(f"{name}: features ({features}) must be divisible by num_heads ({num_heads})")
    if pool not in (None, "last"):
        raise ValueError(f"{name}: pool must be None or 'last'; got {pool!r}")
    blocks = [transformer_block(num_heads, mlp_features, causal=causal, dropout_rate=dropout_rate)
              for _ in range(num_layers)]
    pooled = [last_position()] if pool == "last" else []  # before the head: one position through dense
    return serial(embedding(vocab_size, features), sinusoidal_positions(), *blocks, layer_norm(), *pooled,
                  dense(vocab_size), name=name)
