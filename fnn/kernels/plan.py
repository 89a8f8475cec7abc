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
