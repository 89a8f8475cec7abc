"""The weight gradient ``x.T @ dy`` of a product ``x @ w`` over rows, in two forms.

Every layer that multiplies its rows by a weight matrix (dense, the
attention projections, the recurrent layers' ``w_x`` and ``w_h``) gets the
weight's gradient as ``x.T @ dy``: ``x`` ``(rows, inputs)``, ``dy``
``(rows, outputs)``, the sum running over the rows.

* ``"xla"``: the expression as written. XLA folds the transpose into the
  product, whose contracted axis is then the *first* axis of both operands.
* ``"transposed"``: ``x.T`` is made first, as an array of its own (an
  ``optimization_barrier`` keeps XLA from folding it back), and the product
  is then an ordinary ``(inputs, rows) @ (rows, outputs)``. On XLA's CPU
  backend that product runs fast enough to pay for the transpose and more
  (see :func:`fnn.kernels.plan.weight_gradient_form` for the timings).

``"auto"`` takes :func:`fnn.kernels.plan.weight_gradient_form`'s choice on JAX
arrays; NumPy arrays always take the expression (NumPy's BLAS reads a
transposed operand directly).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan

__all__ = ["IMPLEMENTATIONS", "weight_gradient"]

IMPLEMENTATIONS = ("auto", "xla", "transposed")

Array = Any


def weight_gradient(x: Array, dy: Array, *, implementation: str = "auto") -> Array:
    """``x.T @ dy`` for ``x`` ``(rows, inputs)`` and ``dy`` ``(rows, outputs)``: ``(inputs, outputs)``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"weight_gradient: implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
    if np.ndim(x) != 2 or np.ndim(dy) != 2 or np.shape(x)[0] != np.shape(dy)[0]:
        raise ValueError(
            f"weight_gradient: x and dy must be (rows, inputs) and (rows, outputs) with the same rows; "
            f"got shapes {np.shape(x)} and {np.shape(dy)}"
        )
    is_numpy = backend.namespace(x, dy) is np
    if implementation == "transposed" and is_numpy:
        raise TypeError("weight_gradient(implementation='transposed') needs JAX arrays; use 'auto' or 'xla'")
    if implementation == "auto":
        rows, inputs = np.shape(x)
        form = "xla" if is_numpy else plan.weight_gradient_form(rows, inputs, np.shape(dy)[1], backend.default_platform())
    else:
        form = implementation
    if form == "transposed":
        return backend.lax.optimization_barrier(x.T) @ dy
    return x.T @ dy
