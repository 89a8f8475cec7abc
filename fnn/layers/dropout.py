"""Inverted dropout: in train mode each unit is dropped with probability
``rate`` and the kept ones are scaled by ``1 / (1 - rate)``, so the expected
output equals the input and eval mode is the identity (no rescaling at test
time, no key needed).

    train:  y = x * mask / (1 - rate),   mask ~ Bernoulli(1 - rate), drawn from ``key``
    eval:   y = x

Backward: ``dx = dy * mask / (1 - rate)`` in train mode, ``dx = dy`` in eval mode.
"""

from __future__ import annotations


import numpy as np

from fnn import backend
from fnn.core import Layer, LayerError, check_no_params, expect_single, layer_factory, single_shape

__all__ = ["dropout"]


@layer_factory
def dropout(rate: float, *, name: str = "dropout") -> Layer:
    """Inverted dropout with drop probability ``rate`` in ``[0, 1)``.

    In train mode ``apply`` needs a ``key`` (a JAX key or a NumPy Generator,
    which is read, never advanced); the mask is ``fnn.backend.bernoulli(key,
    1 - rate, x.shape)``. In eval mode it is the identity.

    The mask is *kept* as the residual for the backward pass (a boolean
    array: one byte per unit) rather than regenerated from the key, so that
    ``bwd(params, residuals, dy)`` needs nothing but its residuals, draws no
    random numbers, and uses exactly the forward's mask whatever the key type;
    under ``jit`` XLA keeps or fuses it as it sees fit.

    >>> import numpy as np, fnn
    >>> drop = fnn.layers.dropout(0.5)
    >>> x = np.ones((2, 4), np.float32)
    >>> y, _ = drop.apply({}, {}, x, key=np.random.default_rng(0), train=True)
    >>> sorted(set(y.ravel().tolist()))  # dropped units are 0, kept ones 1 / (1 - 0.5)
    [0.0, 2.0]
    >>> drop.apply({}, {}, x)[0] is x  # eval mode: the identity
    True
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name}: rate (the probability of dropping a unit) must be in [0, 1); got {rate!r}")
    rate = float(rate)
    keep_prob = 1.0 - rate

    def init(key, shape, dtype):
        out_shape(shape)
        return {}, {}

    def out_shape(shape):
        return single_shape(name, shape)

    def fwd(params, state, x, key, train):
        check_no_params(name, params)
        expect_single(name, x)
        if not train or rate == 0.0:
            return x, state, None
        if key is None:
            raise LayerError(
                name,
                "train mode needs a random key for the dropout mask; pass one, e.g. "
                "model.apply(params, state, x, key=jax.random.key(0), train=True) "
                "(or key=numpy.random.default_rng(0) on NumPy), or use train=False",
            )
        xp = backend.namespace(x)
        mask = xp.asarray(backend.bernoulli(key, keep_prob, np.shape(x)))
        return xp.where(mask, x / keep_prob, 0.0).astype(x.dtype), state, mask

    def bwd(params, mask, dy):
        if mask is None:
            return {}, dy
        xp = backend.namespace(dy, mask)
        return {}, xp.where(mask, dy / keep_prob, 0.0).astype(dy.dtype)

    return Layer(name, init, out_shape, fwd, bwd)
