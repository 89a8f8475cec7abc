"""``summary(model, input_shape)``: every layer's path, output shape and parameter count.

It returns the rows, as data to read or test (``rows[0]`` is the whole
model, so ``rows.total`` is its parameter count), and prints them as a table
when asked (``print_=True``, or ``file=`` a text stream); ``str(rows)`` is
that table.

>>> import fnn
>>> from fnn import layers as L
>>> rows = fnn.summary(L.serial(L.dense(8), L.relu, L.dense(2)), (None, 3))
>>> rows.total, [(r.path, r.output_shape, r.params) for r in rows[1:]]
(50, [('dense', (None, 8), 32), ('relu', (None, 8), 0), ('dense_1', (None, 2), 18)])
>>> _ = fnn.summary(L.dense(2), (None, 3), print_=True)
path   layer  output shape  params
-----  -----  ------------  ------
dense  dense  (None, 2)          8
total params: 8
"""

from __future__ import annotations

import sys
from typing import IO, Any, NamedTuple

from fnn import backend
from fnn.core import Layer, Shape, is_multi_shape, normalize_shape

__all__ = ["summary", "Summary", "SummaryRow"]

PyTree = Any


class SummaryRow(NamedTuple):
    """One layer of a model: its path (``block_1/conv2d``), its name, its
    output shape (batch axis included) and its number of parameters (its
    children's included)."""

    path: str
    layer: str
    output_shape: Shape
    params: int


class Summary(list):
    """The rows of :func:`summary`, the whole model first; ``str()`` is the table."""

    @property
    def total(self) -> int:
        """The model's parameter count."""
        return self[0].params if self else 0

    def __str__(self) -> str:
        headers = ("path", "layer", "output shape", "params")
        cells = [tuple(str(c) for c in r) for r in self]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

        def line(row) -> str:
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

        lines = [line(headers), "  ".join("-" * w for w in widths), *(line(c) for c in cells)]
        return "\n".join(lines + [f"total params: {self.total:,}"])


def _param_shapes(model: Layer, input_shape: Shape) -> PyTree:
    """Param shapes without allocating (``jax.eval_shape``) when JAX is present."""

    def concrete(shape):
        return tuple(1 if d is None else d for d in shape)

    shape = tuple(concrete(s) for s in input_shape) if is_multi_shape(input_shape) else concrete(input_shape)
    return backend.eval_init_shapes(lambda key: model.init(key, shape)[0])


def summary(model: Layer, input_shape: Shape, *, print_: bool = False, file: IO[str] | None = None) -> Summary:
    """Every layer's path, name, output shape and parameter count, the whole model first.

    Args:
        model: any layer.
        input_shape: with the batch axis (``None`` allowed), e.g. ``(None, 784)``.
        print_: also print the table (to ``file``, default standard output).
        file: a text stream to print the table to (implies ``print_``).

    Returns:
        a :class:`Summary`: a list of :class:`SummaryRow` with ``.total`` and a
        table as its ``str``. Nothing is allocated when JAX is present.
    """
    input_shape = normalize_shape(input_shape, model.name)
    params = _param_shapes(model, input_shape)
    rows = Summary()

    def visit(layer: Layer, path: str, shape: Shape, p: PyTree) -> None:
        rows.append(SummaryRow(path or layer.name, layer.name, layer.out_shape(shape), backend.tree_size(p)))
        for key, child, child_shape in layer.sublayers(shape):
            visit(child, f"{path}/{key}" if path else key, child_shape, p[key])

    visit(model, "", input_shape, params)
    if print_ or file is not None:
        print(rows, file=sys.stdout if file is None else file)
    return rows
