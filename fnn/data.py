"""Datasets and batching: the bundled handwritten digits (offline, no download),
MNIST-format IDX files from a directory you name, train / validation splits,
shuffled mini-batches, one-hot labels and normalisation.

Loaders return NumPy arrays; :func:`fnn.train.fit` moves them to the device
once. Shuffling takes a key, like everything random in fnn: a JAX key or a
``numpy.random.Generator`` (read, never advanced), so the same key always
gives the same order.

>>> import numpy as np, fnn
>>> x, y = fnn.data.load_digits()
>>> x.shape, y.shape, int(y.max())
((1797, 8, 8, 1), (1797,), 9)
>>> x_tr, y_tr, x_val, y_val = fnn.data.train_val_split(x, y, 0.2, seed=0)
>>> len(x_tr), len(x_val)
(1438, 359)
>>> [len(xb) for xb, yb in fnn.data.batches(x_val, y_val, 128)]
[128, 128, 103]
"""

from __future__ import annotations

import gzip
import zlib
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fnn import backend
from fnn import functional as F

__all__ = [
    "load_digits",
    "load_mnist",
    "read_idx",
    "MNIST_FILES",
    "train_val_split",
    "permutation",
    "key_bits",
    "permutation_from_bits",
    "batches",
    "check_pair",
    "check_batch_size",
    "check_labels",
    "one_hot",
    "mean_std",
    "normalize",
]

Array = Any


# --------------------------------------------------------------------------- #
# Bundled digits
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# MNIST / Fashion-MNIST IDX files
# --------------------------------------------------------------------------- #

# IDX type byte -> big-endian dtype (the format of LeCun's MNIST page)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

#: The file names :func:`load_mnist` looks for (each may end in ``.gz``).
#: MNIST and Fashion-MNIST use the same names.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file (``.gz`` compressed or not).

    IDX layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
    each dimension as a big-endian uint32, then the data, big-endian, row-major.
    Returns the array in native byte order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # not gzip, or cut short
        raise ValueError(f"{path}: not a readable gzip file ({err}); re-download or unpack it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>; got {raw[:4].hex(' ')})"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes; {ndim} dimensions need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: the header announces shape {shape} ({expected} bytes in all) but the file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_mnist(
    directory: str | Path, split: str = "train", *, images: bool = True, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST from the IDX files in ``directory`` (nothing is downloaded).

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000). The files
    are the four of :data:`MNIST_FILES`, gzipped or not. Returns ``(x, y)``:
    ``x`` float32 ``(N, 28, 28, 1)`` when ``images`` else ``(N, 784)``; integer
    (byte) images are scaled to ``[0, 1]`` when ``normalize`` (0..255
    otherwise), float images are taken as stored; ``y`` int32 labels 0..9
    (other label values are refused).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"load_mnist: split must be 'train' or 'test'; got {split!r}")
    directory = Path(directory)
    stems = MNIST_FILES[split]
    found = [_find(directory, stem) for stem in stems]
    if any(p is None for p in found):
        wanted = ", ".join(f"{s}[.gz]" for pair in MNIST_FILES.values() for s in pair)
        missing = ", ".join(s for s, p in zip(stems, found) if p is None)
        raise FileNotFoundError(
            f"load_mnist: {missing} not found in {directory}. The directory must hold the MNIST (or "
            f"Fashion-MNIST) IDX files: {wanted}. fnn never downloads them; fetch them yourself."
        )
    pixels, labels = read_idx(found[0]), read_idx(found[1])
    if pixels.ndim != 3 or labels.ndim != 1 or len(pixels) != len(labels):
        raise ValueError(
            f"load_mnist: expected images (N, rows, cols) and labels (N,); got {pixels.shape} from {found[0].name} "
            f"and {labels.shape} from {found[1].name}"
        )
    if labels.dtype.kind not in "iu" or labels.size and (labels.min() < 0 or labels.max() > 9):
        span = f"values from {labels.min()} to {labels.max()}" if labels.size else "no values"
        raise ValueError(f"load_mnist: {found[1].name} must hold integer labels 0-9; got {labels.dtype} {span}")
    x = pixels.astype(np.float32)
    if normalize and pixels.dtype.kind in "iu":  # 0..255 bytes; float images are taken as they are
        x = x / np.float32(255.0)
    x = x[..., None] if images else x.reshape(len(x), -1)
    return x, labels.astype(np.int32)


# --------------------------------------------------------------------------- #
# Checks
# --------------------------------------------------------------------------- #


def check_pair(x: Array, y: Array) -> int:
    """The number of examples, after checking that ``x`` and ``y`` have as many."""
    n = np.shape(x)[0]
    if np.shape(y)[0] != n:
        raise ValueError(
            f"x and y must have as many examples: x has {n} ({np.shape(x)}), y has {np.shape(y)[0]} ({np.shape(y)})"
        )
    return n


def check_batch_size(batch_size: Any, n: int | None = None) -> int:
    """``batch_size`` as a positive int, at most ``n`` when given; else a ValueError naming both."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if n is not None and batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} examples); use at most {n}")
    return int(batch_size)


def check_labels(y: Array, num_classes: int) -> None:
    """Integer labels must lie in ``[0, num_classes)``; raises a ValueError naming the bad values."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.size == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = np.unique(y[(y < 0) | (y >= num_classes)])[:5].tolist()
        raise ValueError(
            f"labels must be in [0, {num_classes}) for {num_classes} classes; got values from {lo} to {hi} "
            f"(out of range: {bad}{' ...' if bad and len(bad) == 5 else ''})"
        )


# --------------------------------------------------------------------------- #
# Splits, shuffling, batches
# --------------------------------------------------------------------------- #


def train_val_split(x: Array, y: Array, val_fraction: float = 0.2, *, seed: int = 0) -> tuple:
    """A fixed random split ``(x_train, y_train, x_val, y_val)`` (the same for the same seed).

    Use it twice for three sets: first hold out a test set, then a validation
    set from what is left.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    n = check_pair(x, y)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(
            f"train_val_split: val_fraction {val_fraction} of {n} examples leaves {n_val} for validation and "
            f"{n - n_val} for training; both need at least one"
        )
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def permutation(key: Any, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` determined by ``key``, drawn on the host by NumPy.

    A NumPy Generator is left unchanged (a generator derived from it draws);
    a JAX key seeds a NumPy generator with its bits. The order is computed on
    the host because sorting random keys, how ``jax.random.permutation``
    works, is slow on CPU (milliseconds for a few thousand examples); only the
    indices go to the device.
    """
    if isinstance(key, np.random.Generator):
        return backend.split(key, 1)[0].permutation(n)
    backend._check_key(key)
    return permutation_from_bits(key_bits(key), n)


def key_bits(key: Any) -> Array:
    """The raw ``uint32`` data of a JAX key (typed or raw); traceable under ``jit``."""
    jax = backend.jax
    return jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def permutation_from_bits(bits: Array, n: int) -> np.ndarray:
    """The permutation :func:`permutation` draws for a JAX key whose :func:`key_bits` are ``bits``."""
    return np.random.default_rng(np.asarray(bits).ravel().tolist()).permutation(n)


def batches(x: Array, y: Array, batch_size: int, *, key: Any = None, drop_last: bool = False) -> Iterator[tuple]:
    """Mini-batches ``(xb, yb)`` in a random order drawn from ``key`` (in order
    when ``key`` is None). The last smaller batch is kept unless ``drop_last``;
    every example appears exactly once per pass."""
    n = check_pair(x, y)
    batch_size = check_batch_size(batch_size, n)
    order = np.arange(n) if key is None else permutation(key, n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


# --------------------------------------------------------------------------- #
# Labels and features
# --------------------------------------------------------------------------- #


def one_hot(labels: Array, num_classes: int, dtype: Any = np.float32) -> Array:
    """Integer labels ``(...,)`` as one-hot rows ``(..., num_classes)`` (on the labels' backend).

    >>> import numpy as np, fnn
    >>> fnn.data.one_hot(np.array([2, 0]), 3)
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    xp = backend.namespace(labels)
    labels = xp.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"one_hot: labels must be integers; got dtype {labels.dtype}")
    if backend.is_concrete(labels):
        check_labels(np.asarray(labels), num_classes)
    return F.one_hot(labels, num_classes, dtype=dtype)


def mean_std(x: Array, *, per_feature: bool = False, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the training inputs, to :func:`normalize` every split with.

    With ``per_feature`` the statistics are per entry of an example (over the
    batch axis), else one scalar pair. ``std`` is at least ``eps``, so a
    constant feature (a blank border pixel) maps to 0 instead of NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    axis = 0 if per_feature else None
    mean, std = x.mean(axis=axis), np.maximum(x.std(axis=axis), eps)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(x: Array, mean: Array, std: Array) -> Array:
    """``(x - mean) / std`` in ``x``'s dtype: use the training set's :func:`mean_std` for every split."""
    xp = backend.namespace(x)
    return ((x - xp.asarray(mean)) / xp.asarray(std)).astype(x.dtype)
