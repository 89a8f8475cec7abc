"""The affine map ``y = x @ w + b`` of a dense layer, in two forms.

* ``"xla"``: the plain expression, on either backend (what ``jax.jit`` fuses);
* ``"numpy"``: on NumPy arrays, the bias is added in place into the product
  just made, so no second ``(batch, features)`` array is allocated (the
  NumPy MLP benchmark's forward pass).

``"auto"`` takes the NumPy form for NumPy arrays of one dtype, else ``"xla"``
(:func:`fnn.kernels.plan.numpy_or_xla`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn.kernels import plan

__all__ = ["IMPLEMENTATIONS", "affine"]

IMPLEMENTATIONS = ("auto", "xla", "numpy")

Array = Any


def _numpy_ready(y: Any, b: Any) -> bool:
    return type(y) is np.ndarray and type(b) is np.ndarray and b.dtype == y.dtype


def affine(x: Array, w: Array, b: Array | None, *, implementation: str = "auto") -> Array:
    """``x @ w + b`` (``b`` broadcast over the leading axes; ``None``: no bias)."""
    y = x @ w
    form = plan.numpy_or_xla(
        "affine", implementation, numpy_ready=b is None or _numpy_ready(y, b), needs="NumPy arrays of one dtype"
    )
    if b is None:
        return y
    if form == "numpy":
        y += b  # y is the product just made: nobody else holds it
        return y
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)  # explicit: no implicit rank promotion
