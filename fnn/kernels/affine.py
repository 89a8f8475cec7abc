"""The affine map ``y = x @ w + b`` of a dense layer, in two forms.

* ``"xla"``: the plain expression, on either backend (what ``jax.jit`` fuses);
* ``"numpy"``: on NumPy arrays, the bias is added in place into the product
  just made, so no second ``(batch, features)`` array is allocated (the
  NumPy MLP benchmark's forward pass).

``"auto"`` takes the NumPy form for NumPy arrays of one dtype, else ``"xla"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["IMPLEMENTATIONS", "affine"]

IMPLEMENTATIONS = ("auto", "xla", "numpy")

Array = Any


def _numpy_ready(y: Any, b: Any) -> bool:
    return type(y) is np.ndarray and type(b) is np.ndarray and b.dtype == y.dtype


def affine(x: Array, w: Array, b: Array | None, *, implementation: str = "auto") -> Array:
    """``x @ w + b`` (``b`` broadcast over the leading axes; ``None``: no bias)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"affine: implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
    y = x @ w
    if b is None:
        return y
    if implementation == "numpy" and not _numpy_ready(y, b):
        raise TypeError("affine(implementation='numpy') needs NumPy arrays of one dtype; use 'auto' or 'xla'")
    if implementation != "xla" and _numpy_ready(y, b):
        y += b  # y is the product just made: nobody else holds it
        return y
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)  # explicit: no implicit rank promotion
