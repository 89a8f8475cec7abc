"""The plan: which form of each kernel ``implementation="auto"`` runs.

This is the one place where the platform, the shapes and measured thresholds
choose a kernel's form; every rule names the machine its numbers come from.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- #
# Convolution
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# Pooling
# --------------------------------------------------------------------------- #


# --------------------------------------------------------------------------- #
# Optimizers
# --------------------------------------------------------------------------- #


def optimizer_form(kernel: str, *, numpy_ready: bool) -> str:
    """The form of an optimizer kernel (:mod:`fnn.kernels.optim`) that ``"auto"`` runs.

    ``"numpy"`` whenever the arrays allow it (``numpy_ready``: plain NumPy
    arrays of one floating dtype per leaf), for every kernel and every size;
    ``"xla"`` otherwise (JAX arrays and tracers, where XLA fuses the plain form
    into one loop; mixed dtypes on NumPy).

    Measured on the 2-core x86 CPU of the benchmark machine (NumPy 2, one
    ``adam_update`` with the learning rate folded in, then ``add_updates``,
    float32): W1's MLP (784-512-512-10) 1.6 ms numpy against 4.8 ms xla,
    W2's LeNet 0.23 against 0.28 ms, the tiny W3 MLP (2-16-16-1) 76 against
    85 us (Python overhead dominates both there). No size was found where the
    plain form wins on NumPy.
    """
    del kernel  # the same rule for adam_update, scale_updates and add_updates
    return "numpy" if numpy_ready else "xla"
