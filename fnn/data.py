"""Datasets and batching: the bundled handwritten digits (offline, no download),
train / validation splits and shuffled mini-batches.

Everything returns NumPy arrays; move them to a device with ``jnp.asarray``
when training with JAX.
"""

from __future__ import annotations

import gzip
from importlib import resources
from typing import Any, Iterator

import numpy as np

from fnn import backend

__all__ = ["load_digits", "train_val_split", "batches"]

Array = Any


def load_digits(*, images: bool = True, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 UCI handwritten digits (8×8 pixels, 10 classes), bundled with fnn.

    Returns ``(x, y)``: ``x`` float32 of shape ``(1797, 8, 8, 1)`` (NHWC) when
    ``images`` else ``(1797, 64)``, scaled to ``[0, 1]`` when ``normalize``
    (raw pixel counts 0..16 otherwise); ``y`` int32 labels 0..9.
    Source and licence: ``fnn/datasets/README.md`` (CC BY 4.0).
    """
    with resources.files("fnn.datasets").joinpath("digits.csv.gz").open("rb") as raw:
        table = np.loadtxt(gzip.open(raw, "rt"), delimiter=",", dtype=np.float32)
    x, y = table[:, :64], table[:, 64].astype(np.int32)
    if normalize:
        x = x / np.float32(16.0)
    if images:
        x = x.reshape(-1, 8, 8, 1)
    return x, y


def _check_pair(x: Array, y: Array) -> int:
    n = np.shape(x)[0]
    if np.shape(y)[0] != n:
        raise ValueError(f"x has {n} examples but y has {np.shape(y)[0]}")
    return n


def train_val_split(x: Array, y: Array, val_fraction: float = 0.2, *, seed: int = 0) -> tuple:
    """A fixed random split ``(x_train, y_train, x_val, y_val)`` (the same for the same seed)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    n = _check_pair(x, y)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def batches(x: Array, y: Array, batch_size: int, *, key: Any = None, drop_last: bool = False) -> Iterator[tuple]:
    """Mini-batches ``(xb, yb)`` in a random order drawn from ``key`` (in order
    when ``key`` is None). The last smaller batch is kept unless ``drop_last``."""
    n = _check_pair(x, y)
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if key is None:
        order = np.arange(n)
    elif isinstance(key, np.random.Generator):
        order = backend.split(key, 1)[0].permutation(n)
    else:
        order = np.asarray(backend.jax.random.permutation(key, n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
