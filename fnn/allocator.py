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

:func:`keep_freed_memory` sets three of glibc's ``mallopt`` parameters so
that large blocks come from the heap and stay in the process after
``free``: no ``mmap`` for large requests (``M_MMAP_MAX = 0``), one heap for
all threads (``M_ARENA_MAX = 1``; a heap of another thread cannot grow past
64 MiB and would ``mmap`` again), and freed memory at the top of the heap
returned to the kernel only above ``retain_bytes`` (``M_TRIM_THRESHOLD``).
The next call then reuses the same pages. The price: the process keeps up to
``retain_bytes`` of freed memory, and all threads share one heap's lock.

It changes the whole process (PyTorch and NumPy in it too), so fnn never
calls it on its own: a training script or benchmark calls it once, first
thing, before JAX has started its threads (a thread that already allocated
keeps its own heap). The same settings can be given from outside, with
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=1073741824``.
On other C libraries (macOS, Windows, musl) it changes nothing and says why.

>>> import fnn.allocator
>>> applied, why = fnn.allocator.keep_freed_memory()
>>> applied or bool(why)
True
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["DEFAULT_RETAIN_BYTES", "describe", "keep_freed_memory"]

#: Freed memory kept in the process by default: 1 GiB.
DEFAULT_RETAIN_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
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
    """Make glibc keep freed memory up to ``retain_bytes`` for reuse; returns ``(applied, note)``.

    ``note`` names the C library and what was set, or says why nothing was.
    Call it once at the start of a process, before the first JAX operation.

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
    settings = ((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, retain_bytes))
    refused = [parameter for parameter, value in settings if libc.mallopt(parameter, value) != 1]
    if refused:
        return False, f"{library}: mallopt refused parameters {refused}"
    global _applied
    _applied = f"{library}: large blocks from the heap, one heap, up to {retain_bytes >> 20} MiB of freed memory kept"
    return True, _applied


def describe() -> str:
    """One line saying how this process's allocator was set: by :func:`keep_freed_memory`,
    by ``GLIBC_TUNABLES``, or left at the C library's defaults (for benchmark headers)."""
    if _applied is not None:
        return f"malloc: keep_freed_memory ({_applied})"
    tunables = os.environ.get("GLIBC_TUNABLES", "").strip()
    return f"malloc: GLIBC_TUNABLES={tunables}" if tunables else "malloc: the C library's defaults"
