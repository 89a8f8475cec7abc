"""The error function ``erf(x) = 2 / sqrt(pi) * integral_0^x exp(-t^2) dt``, in two forms.

NumPy has no ``erf`` (and SciPy is not a dependency of fnn), JAX has ``lax.erf``:

* ``"xla"``: ``jax.lax.erf``, the plain form and the reference (NumPy inputs
  are converted to JAX and back: a reference, not a fast path);
* ``"numpy"``: Python's ``math.erf`` applied to each element in float64
  (``numpy.frompyfunc``), then cast to the input's dtype. ``math.erf`` is
  accurate to a few units in the last place of float64 (CPython uses the C
  library's ``erf``), so the float64 result is exact to float64 rounding and
  a float32 result is correctly rounded from it. It runs one Python call per
  element: about 0.1 s per million elements on a 2-core x86 CPU (``lax.erf``
  takes about 0.04 s there), slow for big activations but exact; NaN gives NaN.

``"auto"`` takes the NumPy form for NumPy arrays, else ``"xla"``
(:func:`fnn.kernels.plan.numpy_or_xla`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fnn import backend
from fnn.kernels import plan

__all__ = ["IMPLEMENTATIONS", "erf"]

IMPLEMENTATIONS = ("auto", "xla", "numpy")

Array = Any

_MATH_ERF = np.frompyfunc(math.erf, 1, 1)


def erf(x: Array, *, implementation: str = "auto") -> Array:
    """``erf(x)`` elementwise, in ``x``'s (floating) dtype.

    >>> import numpy as np
    >>> erf(np.array([0.0, 1.0, -np.inf]))
    array([ 0.        ,  0.84270079, -1.        ])
    """
    is_numpy = not backend.is_jax_array(x)
    if plan.numpy_or_xla("erf", implementation, numpy_ready=is_numpy, needs="a NumPy array") == "numpy":
        x = np.asarray(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
        return np.asarray(_MATH_ERF(x.astype(np.float64)), dtype=np.float64).astype(dtype, copy=False)
    if not backend.HAS_JAX:
        raise ImportError("erf(implementation='xla') needs JAX")
    if is_numpy:
        return np.asarray(backend.lax.erf(backend.jnp.asarray(x)))
    return backend.lax.erf(x)
