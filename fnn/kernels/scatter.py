"""The scatter-add of rows, ``out[ids[i]] += values[i]``, in three forms.

It is the backward of a row lookup (``embedding``): every row of the table
receives the sum of the output cotangents of the positions that read it, and
the rows nobody read receive zero.

* ``"xla"``: the plain form. On JAX arrays ``zeros.at[ids].add(values)`` (one
  XLA scatter, what ``jax.jit`` compiles and what a GPU runs); on NumPy arrays
  ``numpy.add.at``, its unbuffered equivalent. The reference of the others.
* ``"numpy"``: on NumPy arrays, one ``numpy.bincount`` over the flattened
  ``(row, column)`` cells with the values as weights. It sums in float64 (then
  casts to the values' dtype), so a float64 result is bit for bit the one of
  ``numpy.add.at`` (the additions run in the same order), and a float32 result
  is at least as precise. Measured on a 2-core x86 CPU with NumPy 2.4 it is
  1.4x (200 000 rows of 64) to 3x (512 rows of 32) faster than ``add.at``.
  (A sort and ``numpy.add.reduceat`` was measured too: the sort makes it 5x
  slower than ``add.at``.)

``"auto"`` takes the NumPy form for NumPy arrays, else ``"xla"``
(:func:`fnn.kernels.plan.numpy_or_xla`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan

__all__ = ["IMPLEMENTATIONS", "scatter_add_rows"]

IMPLEMENTATIONS = ("auto", "xla", "numpy")

Array = Any


def _numpy_ready(ids: Any, values: Any) -> bool:
    return (
        type(ids) is np.ndarray
        and type(values) is np.ndarray
        and values.dtype.kind == "f"
        and values.dtype.itemsize <= 8
    )


def scatter_add_rows(ids: Array, values: Array, num_rows: int, *, implementation: str = "auto") -> Array:
    """``out (num_rows, F)`` with ``out[r] = sum(values[i] for i where ids[i] == r)``.

    Args:
      ids: ``(n,)`` integer row indices, each in ``[0, num_rows)``.
      values: ``(n, F)`` rows to add.
      num_rows: the number of rows of the result.
      implementation: ``"auto"``, ``"xla"`` or ``"numpy"`` (module docstring).

    >>> import numpy as np
    >>> scatter_add_rows(np.array([2, 0, 2]), np.array([[1.0], [2.0], [3.0]]), 4)
    array([[2.],
           [0.],
           [4.],
           [0.]])
    """
    if np.ndim(ids) != 1 or np.ndim(values) != 2 or np.shape(ids)[0] != np.shape(values)[0]:
        raise ValueError(
            f"scatter_add_rows: expected ids (n,) and values (n, F); got shapes {np.shape(ids)} and {np.shape(values)}"
        )
    needs = "NumPy arrays with float values"
    form = plan.numpy_or_xla("scatter_add_rows", implementation, numpy_ready=_numpy_ready(ids, values), needs=needs)
    features = values.shape[1]
    if form == "numpy":
        cells = (ids.astype(np.int64)[:, None] * features + np.arange(features)[None, :]).reshape(-1)
        out = np.bincount(cells, weights=values.reshape(-1), minlength=num_rows * features)
        return out.reshape(num_rows, features).astype(values.dtype, copy=False)
    xp = backend.namespace(ids, values)
    out = xp.zeros((num_rows, features), values.dtype)
    if xp is np:
        np.add.at(out, ids, values)
        return out
    return out.at[ids].add(values)
