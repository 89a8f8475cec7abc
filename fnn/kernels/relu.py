"""relu's select, ``where(x <= 0, 0, values)``, in two forms.

It is both relu's forward (``values = x``) and its backward (``values = dy``,
``x`` the saved output, which is ``<= 0`` exactly where the input was). The
select is written with ``x <= 0`` so that a NaN input (for which ``x <= 0`` is
False) passes NaN on, as ``jax.nn.relu`` and PyTorch do, and the derivative
at 0 is 0.

* ``"xla"``: ``where`` on either backend (what ``jax.jit`` fuses);
* ``"numpy"``: on NumPy float arrays of one shape, the bits of ``values`` are
  masked instead of selected: ``numpy.where`` is about ten times slower on a
  mixed mask (a mispredicted branch per element). Same result, bit for bit.

``"auto"`` takes the NumPy form where it applies, else ``"xla"``
(:func:`fnn.kernels.plan.numpy_or_xla`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan

__all__ = ["IMPLEMENTATIONS", "relu_select"]

IMPLEMENTATIONS = ("auto", "xla", "numpy")

Array = Any

_INT_OF_SIZE = {2: (np.int16, np.uint16), 4: (np.int32, np.uint32), 8: (np.int64, np.uint64)}


def _numpy_ready(x: Any, values: Any) -> bool:
    return (
        type(x) is np.ndarray
        and type(values) is np.ndarray
        and x.shape == values.shape
        and values.ndim > 0
        and values.dtype.kind == "f"
        and values.dtype.itemsize in _INT_OF_SIZE
    )


def relu_select(x: Array, values: Array, *, implementation: str = "auto") -> Array:
    """``values`` where ``x`` is not ``<= 0`` (positive or NaN), exactly 0 elsewhere."""
    needs = "NumPy float arrays of one shape"
    if plan.numpy_or_xla("relu_select", implementation, numpy_ready=_numpy_ready(x, values), needs=needs) == "numpy":
        signed, unsigned = _INT_OF_SIZE[values.dtype.itemsize]
        keep = np.subtract((x <= 0).astype(signed), 1).view(unsigned)  # all ones where kept, else 0
        return np.bitwise_and(values.view(unsigned), keep, out=keep).view(values.dtype)
    return backend.namespace(x, values).where(x <= 0, 0.0, values)
