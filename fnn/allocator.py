"""Keep the host's freed memory for the next call of a jitted step (Linux, glibc).

On a CPU, XLA allocates each compiled program's scratch memory (its *temp*
buffer: activations kept for the backward pass, intermediate results) with
``malloc`` when the program starts and frees it when it ends. glibc serves a
request above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
hands it back to the kernel on ``free``, so every call of a step whose temp
buffer is larger touches its memory for the first time again: one page
fault per 4 KiB page, each zeroing its page. For the LSTM step of
``benchmarks/`` (batch 64, hidden 128) at 100 time steps (60 MiB of temp)
that is about 15,000 faults and 25 ms of kernel time per call, a third of
the step; below 32 MiB (50 time steps) there are none, so the cost of a step
jumps with its size instead of growing in proportion. A ``lax.scan`` over
many steps (``fnn.train.fit``) allocates once per scan and barely pays it.

glibc's allocator can be told to keep such blocks: no ``mmap`` for large
requests (``mmap_max = 0``), one heap for all threads (``arena_max = 1``; a
heap of another thread cannot grow past 64 MiB and gives its memory back on
its own), and freed memory at the top of the heap returned to the kernel only
above 1 GiB (``trim_threshold``). The next call then reuses the same pages.
The price: the process keeps up to that much freed memory, and all threads
share one heap's lock, which slows code that allocates from many threads at
once: XLA's compiler (compiling the benchmark suite's small ResNet step took
25 s instead of 19 s) and PyTorch's CPU kernels (its LSTM step 5-10 %). So
it pays for long training runs of large steps, not for short ones. It
changes the whole process (PyTorch and NumPy in it too), so fnn never does
it on its own. Two ways:

* :data:`TUNABLES` in the environment when Python starts, which holds for
  every thread: ``GLIBC_TUNABLES=<TUNABLES> python train.py``, or
  :func:`environment` for a subprocess. This is the dependable way; the
  benchmark suite's ``--keep-freed-memory`` restarts itself with it.
* :func:`keep_freed_memory` from inside the process, through ``mallopt``.
  It holds for the threads that allocate for the first time after the call;
  a thread that allocated before (``import numpy`` and ``import jax`` start
  some) keeps its own heap, and a later thread may be given that heap, so
  some large blocks may still be unmapped. Call it first thing.

On other C libraries (macOS, Windows, musl) both change nothing.

>>> import fnn.allocator
>>> "glibc.malloc.mmap_max=0" in fnn.allocator.environment({})["GLIBC_TUNABLES"]
True
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["DEFAULT_RETAIN_BYTES", "TUNABLES", "describe", "environment", "keep_freed_memory", "kept"]

#: Freed memory kept in the process by default: 1 GiB.
DEFAULT_RETAIN_BYTES = 1 << 30
# The settings: glibc's tunable name, its mallopt parameter (malloc.h) and the value
# (the trim threshold's is keep_freed_memory's retain_bytes).
_SETTINGS = (("mmap_max", -4, 0), ("arena_max", -8, 1), ("trim_threshold", -1, DEFAULT_RETAIN_BYTES))
#: The same settings as glibc tunables, for ``GLIBC_TUNABLES`` when a process starts.
TUNABLES = ":".join(f"glibc.malloc.{name}={value}" for name, _, value in _SETTINGS)
_INT_MAX = 2**31 - 1
_applied: str | None = None  # the note of the call that changed this process's allocator


def _glibc() -> tuple[ctypes.CDLL | None, str]:
    """The running C library when it is glibc, else ``(None, why not)``."""
    if not sys.platform.startswith("linux"):
        return None, f"the C library of {sys.platform} is not glibc"
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None, "the C library is not glibc (no gnu_get_libc_version)"
    version.restype = ctypes.c_char_p
    if not hasattr(libc, "mallopt"):
        return None, "the C library has no mallopt"
    return libc, f"glibc {version().decode()}"


def keep_freed_memory(retain_bytes: int = DEFAULT_RETAIN_BYTES) -> tuple[bool, str]:
    """Make glibc keep freed memory up to ``retain_bytes`` for reuse, from inside the
    process; returns ``(applied, note)``.

    ``note`` names the C library and what was set, or says why nothing was.
    Call it once, first thing; threads that allocated before keep their own
    heaps (see the module docstring: :data:`TUNABLES` at start-up is the
    dependable way).

    Args:
      retain_bytes: free memory at the top of the heap above which glibc gives
        memory back to the kernel; an int from 1 MiB to 2**31 - 1.
    """
    if isinstance(retain_bytes, bool) or not isinstance(retain_bytes, int) or not 1 << 20 <= retain_bytes <= _INT_MAX:
        raise ValueError(f"keep_freed_memory: retain_bytes must be an int from 1 MiB (1048576) to {_INT_MAX}; "
                         f"got {retain_bytes!r}")
    libc, library = _glibc()
    if libc is None:
        return False, f"{library}: the allocator is left as it is"
    values = {name: retain_bytes if name == "trim_threshold" else value for name, _, value in _SETTINGS}
    refused = [name for name, parameter, _ in _SETTINGS if libc.mallopt(parameter, values[name]) != 1]
    if refused:
        return False, f"{library}: mallopt refused {refused}"
    global _applied
    _applied = f"{library}: large blocks from the heap, one heap, up to {retain_bytes >> 20} MiB of freed memory kept"
    return True, _applied


def _settings(tunables: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in tunables.split(":") if "=" in item)


def kept(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``env`` (default: this process's environment) sets every one of :data:`TUNABLES`."""
    given = _settings((os.environ if env is None else env).get("GLIBC_TUNABLES", ""))
    return all(given.get(name) == value for name, value in _settings(TUNABLES).items())


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's environment) whose ``GLIBC_TUNABLES``
    holds :data:`TUNABLES` beside any other tunables it sets, for a process to start with."""
    out = dict(os.environ if env is None else env)
    given = _settings(out.get("GLIBC_TUNABLES", ""))
    given.update(_settings(TUNABLES))
    out["GLIBC_TUNABLES"] = ":".join(f"{name}={value}" for name, value in given.items())
    return out


def describe() -> str:
    """One line saying how this process's allocator was set: by :func:`keep_freed_memory`,
    by ``GLIBC_TUNABLES``, or left at the C library's defaults (for benchmark headers)."""
    if _applied is not None:
        return f"malloc: keep_freed_memory ({_applied})"
    tunables = os.environ.get("GLIBC_TUNABLES", "").strip()
    return f"malloc: GLIBC_TUNABLES={tunables}" if tunables else "malloc: the C library's defaults"
