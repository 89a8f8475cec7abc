"""Shape-only layers: ``flatten`` and ``reshape``. The batch axis is never touched."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fnn.core import Layer, LayerError, expect_single, layer_factory, no_params, single_shape

__all__ = ["flatten", "reshape"]


def _single(name: str, shape) -> tuple:
    if len(single_shape(name, shape)) < 1:
        raise LayerError(name, f"expected an input with a batch axis, got shape {shape}")
    return shape


def _reshape_layer(name: str, target: "callable", doc: str = "") -> Layer:
    """A layer mapping the per-example shape with ``target(shape[1:]) -> new per-example shape``."""

    def out_shape(shape):
        shape = _single(name, shape)
        return (shape[0],) + target(shape[1:])

    def fwd(params, state, x, key, train):
        expect_single(name, x)
        shape = tuple(np.shape(x))
        new = out_shape(shape)
        return x.reshape((shape[0],) + new[1:]), state, shape

    def bwd(params, shape, dy):
        return {}, dy.reshape(shape)

    return Layer(name, no_params, out_shape, fwd, bwd, doc=doc)


def _flatten_target(rest: tuple) -> tuple:
    return (None if any(d is None for d in rest) else int(np.prod(rest, dtype=np.int64)),)


flatten = _reshape_layer("flatten", _flatten_target, "Flatten every axis but the batch axis: (N, ...) -> (N, prod(...)).")


@layer_factory
def reshape(shape: Sequence[int], *, name: str = "reshape") -> Layer:
    """Reshape each example to ``shape`` (batch axis excluded; one entry may be -1)."""
    shape = tuple(shape)
    if any(not isinstance(d, (int, np.integer)) or (d < 0 and d != -1) for d in shape) or shape.count(-1) > 1:
        raise ValueError(f"{name}: shape must be non-negative ints with at most one -1; got {shape}")

    def target(rest: tuple) -> tuple:
        if any(d is None for d in rest):
            if -1 in shape:
                raise LayerError(name, f"cannot infer -1 in {shape} from an input with unknown sizes {rest}")
            return shape
        size = int(np.prod(rest, dtype=np.int64))
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            if known == 0 or size % known:
                raise LayerError(name, f"cannot reshape examples of shape {rest} ({size} entries) to {shape}")
            return tuple(size // known if d == -1 else d for d in shape)
        if int(np.prod(shape, dtype=np.int64)) != size:
            raise LayerError(name, f"cannot reshape examples of shape {rest} ({size} entries) to {shape}")
        return shape

    return _reshape_layer(name, target)
