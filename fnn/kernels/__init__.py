"""Kernels: the machine-specific forms of fnn's operations, apart from the maths.

A layer's file says *what* it computes (its forward and backward formulas);
a kernel says *how* one operation runs on this machine. Each kernel is a
plain function taking an explicit ``implementation`` argument:

* ``"xla"`` -- the plain form: one XLA operation (``lax.conv_general_dilated``,
  ``lax.reduce_window``, ...) on JAX arrays. It is what a GPU or TPU runs, and
  it is the reference every other form is tested against;
* other names -- forms measured to be faster somewhere (``"im2col"``,
  ``"taps"``, ``"numpy"`` in-place kernels, ...);
* ``"auto"`` (the default) -- the choice of :mod:`fnn.kernels.plan`, the one
  place where the machine, the shapes and the measured thresholds decide.

NumPy arrays always take the NumPy form of a kernel; the backend follows the
arrays, as everywhere in fnn. Layers never branch on the backend themselves:
they call a kernel.
"""

from fnn.kernels import conv, plan, pool, windows  # noqa: E402,F401  (convolution and pooling)
from fnn.kernels.optim import OPTIMIZER_IMPLEMENTATIONS, adam_update, add_updates, scale_updates  # noqa: E402,F401
