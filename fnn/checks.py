"""Errors, shapes and the checks shared by layers: what every layer's file uses
to refuse bad input with a message naming the layer, what was expected and
what was given. Re-exported by :mod:`fnn.core`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LayerError",
    "Shape",
    "batch_axis_hint",
    "check_keys",
    "check_no_params",
    "check_param_shapes",
    "check_positive_int",
    "expect_single",
    "is_multi_shape",
    "no_params",
    "normalize_shape",
    "same_dims",
    "scope",
    "single_shape",
]

Shape = tuple  # a tuple of int | None (one input) or a tuple of such tuples (several inputs)


class LayerError(ValueError):
    """Bad input to a layer. The message starts with the layer's path in the
    model (``block_1/conv2d``), and says what was expected and what was given."""

    def __init__(self, layer: str, message: str):
        super().__init__(message)
        self.layer = layer
        self.message = message
        self.path: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = "/".join(self.path) if self.path else self.layer
        return f"{where}: {self.message}"


@contextlib.contextmanager
def scope(child: str) -> Iterator[None]:
    """Prefix the path of any LayerError raised inside with ``child``."""
    try:
        yield
    except LayerError as err:
        err.path = (child,) + err.path
        raise


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #


def is_multi_shape(shape: Any) -> bool:
    """True for a tuple of shapes (the input of ``parallel`` or ``fan_in_*``)."""
    return isinstance(shape, (tuple, list)) and len(shape) > 0 and all(isinstance(s, (tuple, list)) for s in shape)


def normalize_shape(shape: Any, layer: str = "model") -> Shape:
    """A shape as a tuple of ``int | None`` (``-1`` means unknown, like ``None``),
    or a tuple of such shapes."""
    if is_multi_shape(shape):
        return tuple(normalize_shape(s, layer) for s in shape)
    if not isinstance(shape, (tuple, list)):
        raise LayerError(layer, f"input_shape must be a tuple such as (batch, features); got {shape!r}")
    out = []
    for dim in shape:
        if dim is None or (isinstance(dim, (int, np.integer)) and int(dim) == -1):
            out.append(None)
        elif isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) >= 0:
            out.append(int(dim))
        else:
            raise LayerError(layer, f"input_shape entries must be non-negative ints, None or -1; got {tuple(shape)!r}")
    return tuple(out)


def same_dims(a: Shape, b: Shape) -> bool:
    """Shapes agree where both are known."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


# --------------------------------------------------------------------------- #
# Checks shared by layers
# --------------------------------------------------------------------------- #


def batch_axis_hint(shape: Any, rank: int) -> str:
    """A hint for an input one axis short of the ``rank`` a layer expects (batch
    axis included): most often one example without its batch axis, e.g. under
    ``jax.vmap(model.apply)``. Empty for any other shape."""
    if len(tuple(shape)) != rank - 1:
        return ""
    return ("; layers work on batches, so is the batch axis missing? For one example pass x[None] "
            "(under jax.vmap, apply the model to xi[None] and take [0], or apply it to the whole batch)")


def single_shape(layer: str, shape: Shape) -> Shape:
    """``shape`` if it is the shape of one input, else a LayerError."""
    if is_multi_shape(shape):
        raise LayerError(layer, f"expected a single input, got a tuple of {len(shape)} inputs with shapes {shape}")
    return shape


def expect_single(layer: str, x: Any) -> Any:
    """``x`` if it is one array (not a tuple or list of inputs), else a LayerError."""
    if isinstance(x, (tuple, list)):
        raise LayerError(layer, f"expected a single array, got a tuple of {len(x)} inputs")
    return x


def check_no_params(layer: str, params: Any) -> None:
    """A layer without parameters must be given ``{}``."""
    if not (isinstance(params, Mapping) and len(params) == 0):
        raise LayerError(layer, f"has no params; expected {{}}, got {params!r:.80}")


def no_params(key: Any, shape: Shape, dtype: Any) -> tuple[dict, dict]:
    """The ``init`` of a layer with neither params nor state."""
    return {}, {}


def check_keys(layer: str, what: str, tree: Any, expected: Sequence[str]) -> None:
    """``tree`` must be a dict with exactly the keys ``expected``."""
    if not isinstance(tree, Mapping):
        raise LayerError(layer, f"{what} must be a dict with keys {sorted(expected)}; got {type(tree).__name__}")
    missing = [k for k in expected if k not in tree]
    extra = [k for k in tree if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise LayerError(
            layer, f"{what} does not match the model: {', '.join(parts)}; expected keys {sorted(expected)}, got {sorted(tree)}"
        )


def check_param_shapes(layer: str, params: Any, expected: Mapping[str, tuple]) -> None:
    """``params`` must be a dict of arrays with exactly these shapes."""
    check_keys(layer, "params", params, list(expected))
    for k, shape in expected.items():
        if not hasattr(params[k], "dtype"):
            raise LayerError(layer, f"params[{k!r}] is a {type(params[k]).__name__}; expected an array of shape {tuple(shape)}")
        got = tuple(np.shape(params[k]))
        if got != tuple(shape):
            raise LayerError(layer, f"params[{k!r}] has shape {got}; expected {tuple(shape)} for this input")


def check_positive_int(layer: str, what: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming the layer and the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{layer}: {what} must be a positive int; got {value!r}")
    return int(value)
