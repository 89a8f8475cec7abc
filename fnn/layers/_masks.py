"""Masks over time steps, shared by the layers that take ``{"x": x, "mask": mask}``
(recurrent layers, bidirectional, attention, transformer blocks)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["keep", "mask_cotangent"]

Array = Any


def keep(xp, mask: Array) -> Array:
    """A mask as booleans, True at real steps (a numeric mask is read as ``> 0.5``)."""
    mask = xp.asarray(mask)
    return mask if mask.dtype == bool else mask > 0.5


def mask_cotangent(xp, mask: Array | None, passed_on: Array | None = None) -> Array | None:
    """A mask only selects, so its own cotangent is zero: None for a bool / int
    mask, zeros for a float one (plus the cotangent of an output that passes the mask on)."""
    if mask is None or not np.issubdtype(np.dtype(mask.dtype), np.floating):
        return None
    zero = xp.zeros_like(mask)
    return zero if passed_on is None else zero + passed_on.astype(mask.dtype)
