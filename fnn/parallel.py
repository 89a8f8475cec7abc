"""Data-parallel training over :mod:`jax.sharding`: the same result as one device.

Data parallelism splits every global batch along a mesh axis named ``"data"``:
each device holds a slice of the batch and a full copy of the parameters,
the model state and the optimizer state. The step is the very same pure
function as on one device, compiled once with ``jax.jit``::

    mesh = fnn.parallel.data_mesh()                  # all devices on one "data" axis
    step = jax.jit(fnn.train.train_step(model, loss, opt, mesh=mesh))
    ts = fnn.parallel.replicate(ts, mesh)            # params, state, opt state on every device
    for xb, yb in batches:
        ts, out = step(ts, *fnn.parallel.shard_batch((xb, yb), mesh))

or simply ``fnn.train.fit(..., mesh=mesh)``.

How the gradients are reduced. fnn uses ``jax.jit`` with *sharding
propagation*: the step constrains the batch to ``NamedSharding(mesh,
P("data"))`` and the train state to be replicated, and XLA's partitioner
does the rest. The loss is a mean over the batch, so each gradient is a sum
over examples; the compiler computes each device's partial sum and inserts
the all-reduce itself (no ``pmean`` written by hand, no communication layer
of fnn's own). This was chosen over ``shard_map`` + ``lax.pmean`` because

* the step is the single-device step unchanged, so both gradient methods
  (hand-written ``bwd`` rules and ``jax.value_and_grad``) work with no
  per-device code;
* anything that reduces over the batch is global automatically: the loss,
  the metrics and **batch-norm statistics** (mean and variance over the
  whole global batch, exactly as on one device — not per device);
* correctness never depends on the sharding, only speed does.

The result equals single-device training up to floating-point summation
order (float32 round-off).

Rules and errors. The mesh must have an axis named ``"data"``; a global batch
must be divisible by the size of that axis (otherwise a ``ValueError`` names
both numbers — fnn never drops or pads examples silently). In
:func:`fnn.train.fit`, ``batch_size`` must be divisible; the epoch's last
partial batch, when its size is not divisible, runs replicated (every device
computes the whole small batch: the same result, without the speed-up).

Several processes (hosts). Call :func:`initialize` first in every process
(it wraps ``jax.distributed.initialize``); ``jax.devices()`` then lists the
devices of all processes and :func:`data_mesh` spans them. Each process
passes *its own* share of the global batch to :func:`shard_batch` (built
with ``jax.make_array_from_process_local_data``). Only process 0 should write
files (:func:`is_main_process`).

Everything here needs JAX; ``import fnn.parallel`` works without it and each
function raises a clear ``ImportError`` when called.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Sequence

import numpy as np

from fnn import backend

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "check_mesh",
    "data_size",
    "check_batch",
    "batch_sharding",
    "replicated_sharding",
    "shard_batch",
    "replicate",
    "constrain_batch",
    "constrain_replicated",
    "initialize",
    "is_main_process",
]

DATA_AXIS = "data"
Mesh = Any
PyTree = Any


def _jax():
    if not backend.HAS_JAX:
        raise ImportError("fnn.parallel needs JAX (pip install 'fnn[jax]'); NumPy alone runs on one CPU only")
    return backend.jax


# --------------------------------------------------------------------------- #
# The mesh
# --------------------------------------------------------------------------- #


def data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D ``jax.sharding.Mesh`` with one axis ``"data"`` over ``devices``
    (default: ``jax.devices()``, every device of every process).

    >>> import fnn
    >>> mesh = fnn.parallel.data_mesh()
    >>> mesh.axis_names
    ('data',)
    """
    jax = _jax()
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("data_mesh: devices is empty; expected at least one jax device")
    return jax.sharding.Mesh(np.array(devices, dtype=object), (DATA_AXIS,))


def check_mesh(mesh: Any, where: str = "fnn.parallel") -> Mesh:
    """``mesh`` must be a ``jax.sharding.Mesh`` with an axis named ``"data"``."""
    jax = _jax()
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"{where}: mesh must be a jax.sharding.Mesh (fnn.parallel.data_mesh()); got {type(mesh).__name__}"
        )
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"{where}: the mesh needs an axis named {DATA_AXIS!r} to shard the batch over; "
            f"it has axes {tuple(mesh.axis_names)} (build one with fnn.parallel.data_mesh())"
        )
    return mesh


def data_size(mesh: Mesh) -> int:
    """The number of batch slices: the size of the mesh's ``"data"`` axis."""
    return int(check_mesh(mesh).shape[DATA_AXIS])


def check_batch(batch: int, mesh: Mesh, where: str = "fnn.parallel") -> None:
    """A global batch of ``batch`` examples must split evenly over the ``"data"`` axis."""
    n = data_size(mesh)
    if batch % n:
        lower, upper = batch // n * n, (batch // n + 1) * n
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"{where}: a global batch of {batch} examples does not split evenly over the {n} devices "
            f"of the mesh's {DATA_AXIS!r} axis; use a batch size divisible by {n} (e.g. {hint})"
        )


def batch_sharding(mesh: Mesh) -> Any:
    """``NamedSharding(mesh, P("data"))``: the leading (batch) axis split over the devices."""
    jax = _jax()
    return jax.sharding.NamedSharding(check_mesh(mesh), jax.sharding.PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> Any:
    """``NamedSharding(mesh, P())``: a full copy on every device."""
    jax = _jax()
    return jax.sharding.NamedSharding(check_mesh(mesh), jax.sharding.PartitionSpec())


# --------------------------------------------------------------------------- #
# Placing data
# --------------------------------------------------------------------------- #


def shard_batch(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf of ``tree`` (e.g. ``(x, y)``) as a global array split along its
    first axis over the mesh's ``"data"`` axis.

    Each process passes its own share of the global batch (with one process,
    that is the whole batch); the global batch is the concatenation of the
    shares in process order (``jax.make_array_from_process_local_data``).
    Raises ``ValueError`` when the global batch does not divide evenly.
    """
    jax = _jax()
    sharding = batch_sharding(mesh)
    processes = jax.process_count()

    def place(leaf):
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        if leaf.ndim == 0:
            raise ValueError(f"shard_batch: expected arrays with a batch axis; got a scalar of dtype {leaf.dtype}")
        check_batch(leaf.shape[0] * processes, mesh, "shard_batch")
        if processes == 1:
            return jax.device_put(leaf, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return backend.tree_map(place, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf of ``tree`` (params, a whole :class:`~fnn.train.TrainState`, a
    dataset) copied to every device of the mesh.

    With several processes every process must pass the same values (e.g.
    parameters initialised from the same key)."""
    jax = _jax()
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=impl)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def constrain_batch(tree: PyTree, mesh: Mesh) -> PyTree:
    """Inside ``jit``: ask for every leaf split along its first axis over ``"data"``
    (``jax.lax.with_sharding_constraint``); checks the batch size first."""
    jax = _jax()
    sharding = batch_sharding(mesh)
    for leaf in backend.tree_leaves(tree):
        check_batch(np.shape(leaf)[0], mesh, "fnn.parallel (batch)")
    return jax.lax.with_sharding_constraint(tree, backend.tree_map(lambda _: sharding, tree))


def constrain_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """Inside ``jit``: ask for every leaf replicated on every device of ``mesh``."""
    jax = _jax()
    sharding = replicated_sharding(mesh)
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: sharding, tree))


# --------------------------------------------------------------------------- #
# Several processes
# --------------------------------------------------------------------------- #

ENV = {"coordinator_address": "FNN_COORDINATOR", "num_processes": "FNN_NUM_PROCESSES", "process_id": "FNN_PROCESS_ID"}


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = "gloo",
    timeout: float = 300.0,
) -> None:
    """Join a multi-process run (``jax.distributed.initialize``); call it first,
    before any other JAX call, in every process.

    Args:
        coordinator_address: ``"host:port"`` of process 0, reachable by all
            (default: the environment variable ``FNN_COORDINATOR``).
        num_processes: how many processes take part (default ``FNN_NUM_PROCESSES``).
        process_id: this process's index, ``0 <= process_id < num_processes``
            (default ``FNN_PROCESS_ID``).
        cpu_collectives: the collectives library for CPU devices
            (``jax_cpu_collectives_implementation``; ``"gloo"`` works on any
            machine); ``None`` leaves JAX's setting alone.
        timeout: seconds to wait for the coordinator. A process other than 0
            first waits for the coordinator's port to open and raises a
            ``TimeoutError`` naming it if it does not within ``timeout``
            (JAX itself would abort the process); the same limit is passed to
            ``jax.distributed.initialize`` for the rest of the start-up.

    When neither arguments nor variables are given, JAX's own cluster
    detection (SLURM, Kubernetes, ...) is used. Example, two processes on one
    machine::

        FNN_COORDINATOR=127.0.0.1:1234 FNN_NUM_PROCESSES=2 FNN_PROCESS_ID=0 python train.py &
        FNN_COORDINATOR=127.0.0.1:1234 FNN_NUM_PROCESSES=2 FNN_PROCESS_ID=1 python train.py
    """
    jax = _jax()
    args = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, var in ENV.items():
        if args[name] is None and os.environ.get(var):
            args[name] = os.environ[var]
    for name in ("num_processes", "process_id"):
        if args[name] is not None:
            try:
                args[name] = int(args[name])
            except ValueError:
                raise ValueError(f"initialize: {name} ({ENV[name]}) must be an int; got {args[name]!r}") from None
    n, i = args["num_processes"], args["process_id"]
    if n is not None and n < 1:
        raise ValueError(f"initialize: num_processes must be >= 1; got {n}")
    if n is not None and i is not None and not 0 <= i < n:
        raise ValueError(f"initialize: process_id must be in [0, {n}); got {i}")
    if not timeout > 0:
        raise ValueError(f"initialize: timeout must be > 0 seconds; got {timeout}")
    if args["coordinator_address"] is not None and i not in (None, 0):
        _wait_for_coordinator(args["coordinator_address"], timeout)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(**args, initialization_timeout=int(math.ceil(timeout)))


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; TimeoutError after ``timeout`` seconds."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"initialize: coordinator_address must be 'host:port'; got {address!r}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"initialize: the coordinator {address} did not answer within {timeout:g} s; start process 0 "
                    "first (it runs the coordinator) and check the address and port"
                ) from None
            time.sleep(0.2)


def is_main_process() -> bool:
    """True in process 0 (the one that writes checkpoints, logs and plots); True without JAX."""
    return not backend.HAS_JAX or backend.jax.process_index() == 0
