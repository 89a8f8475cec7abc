"""Timing helpers shared by the benchmarks: median of many timed calls after
warm-up, compilation excluded, every result blocked on before the clock stops."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fnn import allocator


def block(tree: Any) -> Any:
    """Wait for every JAX array in ``tree`` (a no-op for NumPy arrays), and for the GPU's
    queue when ``tree`` is a PyTorch tensor on a GPU."""
    if getattr(tree, "is_cuda", False):  # a torch.Tensor on a CUDA device
        import torch

        torch.cuda.synchronize()
        return tree
    try:
        import jax
    except ImportError:
        return tree
    return jax.block_until_ready(tree)


def median_time(step: Callable[[], Any], *, warmup: int = 3, repeats: int = 30, min_seconds: float = 0.0) -> float:
    """Median wall time in seconds of ``step()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        block(step())
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
        start = time.perf_counter()
        block(step())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment() -> str:
    """One line naming the device, library versions and thread settings."""
    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}"]
    try:
        import jax

        parts += [f"jax {jax.__version__}", f"device {jax.devices()[0].device_kind} ({jax.default_backend()})"]
    except ImportError:
        parts.append("jax not installed")
    parts.append(f"cpus {os.cpu_count()}")
    parts.append(allocator.describe())
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var):
            parts.append(f"{var}={os.environ[var]}")
    return ", ".join(parts)


def print_table(title: str, rows: list[tuple[str, float]], baseline: str) -> None:
    """Print ``name  ms/step  ratio-to-baseline`` rows."""
    base = dict(rows)[baseline]
    print(f"\n{title}")
    print(f"{'contender':40s} {'ms/step':>10s} {'ratio':>8s}")
    for name, seconds in rows:
        print(f"{name:40s} {seconds * 1e3:10.3f} {seconds / base:8.3f}")
