"""Save and load any pytree (a :class:`fnn.train.TrainState` included),
atomically, in a safe documented format, checked against a template on load.

Format
------
One `safetensors <https://github.com/huggingface/safetensors>`_ file: a
little-endian 8-byte header length, a JSON header, then the raw bytes of each
array. Nothing in it is executed on load (no pickle). Each array leaf is a
tensor named by its path in the tree (``params/dense_1/w``,
``opt_state/adam/scale_by_adam/mu/dense/w``). The header's ``__metadata__``
holds, as JSON strings:

* ``format``: ``"fnn.checkpoint/1"``;
* ``tree``: one entry per leaf in tree order: ``{"path", "kind", "dtype",
  "shape"}``; ``kind`` is ``"array"``, ``"jax_key"`` (a typed JAX PRNG key,
  stored as its ``uint32`` key data, with its ``impl``) or
  ``"numpy_generator"`` (a ``numpy.random.Generator``, stored as its
  bit-generator ``state``, no tensor); arrays of a dtype safetensors' NumPy
  reader does not know (``bfloat16``) are stored as their raw bytes (``uint8``);
* ``user``: the caller's ``metadata`` (any JSON);
* ``sha256``: a checksum of ``tree``, ``user`` and every tensor's bytes, so a
  truncated or corrupted file is an error, never silently wrong numbers.

Writes go to a temporary file in a staging folder of the same directory
(``.fnn-saving-<host>-<pid>``), are flushed to disk, and then renamed over
the target (``os.replace``, atomic on POSIX and Windows): a crash mid-write
leaves the previous checkpoint as it was, and the next save in that
directory removes the staging folders of saves whose process is gone.

>>> import tempfile, numpy as np, fnn
>>> tree = {"w": np.ones((2, 3), np.float32), "step": np.int32(7)}
>>> path = fnn.checkpoint.save(tempfile.mkdtemp() + "/ckpt.safetensors", tree, metadata={"epoch": 3})
>>> back = fnn.checkpoint.load(path, like=tree)
>>> back["w"].shape, int(back["step"]), fnn.checkpoint.read_metadata(path)
((2, 3), 7, {'epoch': 3})
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

from fnn import backend

__all__ = [
    "FORMAT",
    "CheckpointError",
    "save",
    "load",
    "read_metadata",
    "save_numbered",
    "list_checkpoints",
    "latest",
]

PyTree = Any
FORMAT = "fnn.checkpoint/1"
_NUMBERED = re.compile(r"^checkpoint_(\d+)\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, corrupted, not a
    checkpoint) or that does not match the template it is loaded into."""


def _safetensors():
    try:
        import safetensors.numpy
        from safetensors import safe_open
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("fnn.checkpoint needs safetensors: pip install safetensors") from err
    return safetensors.numpy, safe_open


# --------------------------------------------------------------------------- #
# Leaves <-> (description, tensor)
# --------------------------------------------------------------------------- #


def _is_shape_struct(leaf: Any) -> bool:
    return type(leaf).__name__ == "ShapeDtypeStruct"  # jax.eval_shape's stand-in for an array


def _is_jax_key(leaf: Any) -> bool:
    return (backend.is_jax_array(leaf) or _is_shape_struct(leaf)) and backend.jax.dtypes.issubdtype(
        leaf.dtype, backend.jax.dtypes.prng_key
    )


def _key_impl(leaf: Any) -> str:
    if _is_shape_struct(leaf):  # no key data to ask: the key dtype knows its implementation
        return leaf.dtype._impl.name
    return str(backend.jax.random.key_impl(leaf))


def _describe(path: str, leaf: Any) -> dict[str, Any]:
    """The JSON description of one leaf (no data)."""
    if isinstance(leaf, np.random.Generator):
        return {"path": path, "kind": "numpy_generator", "dtype": type(leaf.bit_generator).__name__, "shape": []}
    if _is_jax_key(leaf):
        return {"path": path, "kind": "jax_key", "dtype": _key_impl(leaf), "shape": list(leaf.shape)}
    if not hasattr(leaf, "dtype"):  # a Python number
        leaf = np.asarray(leaf)
    dtype = np.dtype(leaf.dtype)
    record = dtype.kind == "V" and (dtype.fields is not None or dtype.name.startswith("void"))  # not bfloat16 & co
    if dtype.kind in "OSUMm" or record:  # objects, strings, bytes, records, dates: no tensor to store
        raise TypeError(
            f"checkpoint.save: leaf {path!r} is a {dtype.name} array; only numeric and boolean arrays, "
            "JAX keys and NumPy Generators can be saved (put strings and other values in metadata=)"
        )
    return {"path": path, "kind": "array", "dtype": dtype.name, "shape": list(leaf.shape)}


# dtypes safetensors reads into NumPy as they are; others are stored as raw bytes
_NATIVE = {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"}
_NATIVE |= {"float16", "float32", "float64"}


def _resolve_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # bfloat16, float8_*: installed with JAX

        return np.dtype(getattr(ml_dtypes, name))


def _encode(entry: dict, leaf: Any) -> tuple[np.ndarray | None, dict]:
    """``(tensor or None, entry)``; generator state goes into the entry."""
    if entry["kind"] == "numpy_generator":
        return None, {**entry, "state": leaf.bit_generator.state}
    if entry["kind"] == "jax_key":
        return np.asarray(backend.jax.random.key_data(leaf)), entry
    array = np.ascontiguousarray(np.asarray(leaf))
    return (array if array.dtype.name in _NATIVE else array.reshape(-1).view(np.uint8)), entry


def _decode(entry: dict, tensor: np.ndarray | None, template_leaf: Any) -> Any:
    if entry["kind"] == "numpy_generator":
        bit_generator = getattr(np.random, entry["dtype"])()
        bit_generator.state = entry["state"]
        return np.random.Generator(bit_generator)
    if entry["kind"] == "jax_key":
        return backend.jax.random.wrap_key_data(backend.jnp.asarray(tensor), impl=entry["dtype"])
    array = tensor.view(_resolve_dtype(entry["dtype"])).reshape(entry["shape"])
    if backend.is_jax_array(template_leaf) or _is_shape_struct(template_leaf):
        return backend.jnp.asarray(array)
    if isinstance(template_leaf, (bool, int, float)) and not isinstance(template_leaf, np.generic):
        return type(template_leaf)(array.item())
    return array


def _checksum(tree_json: str, user_json: str, tensors: list[tuple[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    digest.update(tree_json.encode())
    digest.update(user_json.encode())
    for name, array in tensors:
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _leaves(tree: PyTree) -> list[tuple[str, Any]]:
    pairs = [(path or "<root>", leaf) for path, leaf in backend.tree_leaves_with_path(tree)]
    seen = set()
    for path, _ in pairs:
        if path in seen:
            raise ValueError(f"checkpoint: two leaves share the path {path!r}; dict keys must not contain '/'")
        seen.add(path)
    return pairs


# --------------------------------------------------------------------------- #
# save / load
# --------------------------------------------------------------------------- #


def save(path: str | Path, tree: PyTree, *, metadata: Any = None) -> Path:
    """Write ``tree`` (any pytree of arrays, JAX keys, NumPy Generators) to
    ``path`` atomically; ``metadata`` is any JSON-able value, read back with
    :func:`read_metadata`. Returns the path."""
    safe_numpy, _ = _safetensors()
    path = Path(path)
    entries, tensors = [], []
    for leaf_path, leaf in _leaves(tree):
        tensor, entry = _encode(_describe(leaf_path, leaf), leaf)
        entries.append(entry)
        if tensor is not None:
            tensors.append((leaf_path, tensor))
    tree_json = json.dumps(entries)
    try:
        user_json = json.dumps(metadata)
    except TypeError as err:
        raise TypeError(f"checkpoint.save: metadata must be JSON-serialisable; {err}") from None
    checksum = _checksum(tree_json, user_json, tensors)
    header = {"format": FORMAT, "tree": tree_json, "user": user_json, "sha256": checksum}
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(path.parent)
    staging = path.parent / f"{_STAGING}{socket.gethostname()}-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    tmp = staging / path.name  # safetensors' own temporary files land here too
    try:
        safe_numpy.save_file(dict(tensors), str(tmp), metadata=header)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:  # safetensors' own error type, or an OSError naming the temporary file
        raise OSError(f"checkpoint.save: cannot write {path}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


_STAGING = ".fnn-saving-"  # + host-pid: one save's temporary files, removed when it ends


def _remove_stale_staging(directory: Path) -> None:
    """Remove what killed saves of this host left in ``directory`` (their process is gone);
    a save still running in another process is left alone."""
    prefix = f"{_STAGING}{socket.gethostname()}-"
    for entry in directory.glob(f"{_STAGING}*"):
        pid = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _read(path: Path) -> tuple[list[dict], Any, dict[str, np.ndarray]]:
    """``(tree entries, user metadata, tensors)``, verified against the checksum."""
    _, safe_open = _safetensors()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not an fnn checkpoint (no '{FORMAT}' in its header)")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except CheckpointError:
        raise
    except Exception as err:  # safetensors reports a bad file with its own error type
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupted: {err}") from None
    try:
        entries = json.loads(header["tree"])
        user = json.loads(header["user"])
        ordered = [(e["path"], tensors[e["path"]]) for e in entries if e["kind"] != "numpy_generator"]
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint file {path} has a corrupted header: {err!r}") from None
    if _checksum(header["tree"], header["user"], ordered) != header.get("sha256"):
        raise CheckpointError(f"checkpoint file {path} is corrupted: its contents do not match their sha256 checksum")
    return entries, user, tensors


def read_metadata(path: str | Path) -> Any:
    """The ``metadata`` given to :func:`save` (after checking the whole file)."""
    return _read(Path(path))[1]


def _differences(found: list[dict], expected: list[dict]) -> list[str]:
    got = {e["path"]: e for e in found}
    want = {e["path"]: e for e in expected}
    lines = [f"missing in the file: {p}" for p in want if p not in got]
    lines += [f"not in the template: {p}" for p in got if p not in want]
    for p, e in want.items():
        if p in got:
            for field in ("kind", "dtype", "shape"):
                if got[p][field] != e[field]:
                    lines.append(f"{p}: {field} {_fmt(got[p][field])} in the file, {_fmt(e[field])} expected")
    return lines


def _fmt(value: Any) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


def load(path: str | Path, like: PyTree) -> PyTree:
    """Read a checkpoint into a tree shaped like ``like`` (the template).

    The file must hold exactly the template's leaf paths, with the same kinds,
    shapes and dtypes; otherwise a :class:`CheckpointError` lists every
    difference (``params/dense/w: shape (64, 128) in the file, (64, 32)
    expected``), which is what a checkpoint of another model gives. Leaves come
    back on the template's backend: JAX arrays where the template has JAX
    arrays (or ``jax.ShapeDtypeStruct``), NumPy arrays otherwise.
    """
    path = Path(path)
    entries, _, tensors = _read(path)
    template = _leaves(like)
    problems = _differences(entries, [_describe(p, leaf) for p, leaf in template])
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CheckpointError(
            f"checkpoint {path} does not match the template "
            f"(a checkpoint of a different model or optimizer?):\n  {shown}"
        )
    by_path = {e["path"]: e for e in entries}
    leaves = [_decode(by_path[p], tensors.get(p), leaf) for p, leaf in template]
    return backend.tree_unflatten(backend.tree_structure(like), leaves)


# --------------------------------------------------------------------------- #
# A directory of numbered checkpoints
# --------------------------------------------------------------------------- #


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The numbered checkpoints ``checkpoint_<n>.safetensors`` in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NUMBERED.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(directory: str | Path) -> Path | None:
    """The highest-numbered checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_numbered(
    directory: str | Path, number: int, tree: PyTree, *, metadata: Any = None, keep: int | None = None
) -> Path:
    """Save as ``directory/checkpoint_<number>.safetensors`` (e.g. the epoch),
    then delete all but the ``keep`` newest (all kept when ``keep`` is None).
    Older files are removed only after the new one is safely on disk."""
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ValueError(f"save_numbered: keep must be None or a positive int; got {keep!r}")
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < 0:
        raise ValueError(f"save_numbered: number must be a non-negative int (e.g. the epoch); got {number!r}")
    path = save(Path(directory) / f"checkpoint_{int(number):06d}.safetensors", tree, metadata=metadata)
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path
