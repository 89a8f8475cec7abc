"""``summary(model, input_shape)``: every layer's path, output shape and parameter count."""

from __future__ import annotations

from typing import Any

from fnn import backend
from fnn.core import Layer, Shape, is_multi_shape, normalize_shape

__all__ = ["summary"]

PyTree = Any


def _param_shapes(model: Layer, input_shape: Shape) -> PyTree:
    """Param shapes without allocating (``jax.eval_shape``) when JAX is present."""

    def concrete(shape):
        return tuple(1 if d is None else d for d in shape)

    shape = tuple(concrete(s) for s in input_shape) if is_multi_shape(input_shape) else concrete(input_shape)
    return backend.eval_init_shapes(lambda key: model.init(key, shape)[0])


def summary(model: Layer, input_shape: Shape) -> None:
    """Print every layer's path, output shape and parameter count."""
    input_shape = normalize_shape(input_shape, model.name)
    params = _param_shapes(model, input_shape)
    rows: list[tuple[str, str, str, int]] = []

    def visit(layer: Layer, path: str, shape: Shape, p: PyTree) -> None:
        count = backend.tree_size(p)
        rows.append((path or layer.name, layer.name, str(layer.out_shape(shape)), count))
        for key, child, child_shape in layer.sublayers(shape):
            visit(child, f"{path}/{key}" if path else key, child_shape, p[key])

    visit(model, "", input_shape, params)
    headers = ("path", "layer", "output shape", "params")
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    print(f"total params: {rows[0][3]:,}")
