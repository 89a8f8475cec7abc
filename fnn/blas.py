"""The BLAS thread count of NumPy's matrix products, for training on the NumPy backend.

OpenBLAS (NumPy's BLAS) starts one thread per core and splits every matrix
product above a small size among them. The products of a small model's
training step (a batch of 32 through 64 -> 256 -> 128 -> 10) are far too
small to gain from that: each split costs a synchronisation of the threads,
and when the cores are shared with other work, one product waits for a
thread that is not running, for a whole time slice of the scheduler. On 2
shared cores, ``(32, 256) @ (256, 128)`` took 79 us on one thread and 9.6 ms
on two, and ``fnn train --backend numpy`` 39 s with OpenBLAS's default against
1.5 s with one thread. So ``fnn train --backend numpy`` runs its products on
:data:`DEFAULT_THREADS` thread, unless the user chose: ``--blas-threads N``,
or any of :data:`THREAD_VARIABLES` set in the environment (which OpenBLAS,
MKL and BLIS read when NumPy is imported) wins.

The count is changed through threadpoolctl, for the duration of a ``with``
block only; without threadpoolctl nothing is changed.

>>> with blas_threads(1) as threads:
...     threads in (1, None)   # None: threadpoolctl is not installed
True
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["DEFAULT_THREADS", "THREAD_VARIABLES", "user_setting", "blas_threads"]

#: The thread count used when the user chose none: small products run fastest on one.
DEFAULT_THREADS = 1
#: Environment variables through which a user sets the BLAS thread count (the first set one wins).
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "OMP_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


def user_setting() -> str | None:
    """``"NAME=value"`` of the first of :data:`THREAD_VARIABLES` set in the environment, or None."""
    for name in THREAD_VARIABLES:
        if os.environ.get(name, "").strip():
            return f"{name}={os.environ[name].strip()}"
    return None


@contextlib.contextmanager
def blas_threads(threads: int | None = None) -> Iterator[int | None]:
    """Run the block with ``threads`` BLAS threads; yields the count in effect (None when unknown).

    ``threads=None`` means :data:`DEFAULT_THREADS`, unless the environment sets
    a count (:func:`user_setting`), which is then left as it is. The count is
    restored at the end of the block.
    """
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # optional: nothing to change without it
        yield None
        return
    if threads is None and user_setting() is not None:
        blas = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        yield blas[0] if blas else None
        return
    count = DEFAULT_THREADS if threads is None else int(threads)
    with threadpool_limits(limits=count, user_api="blas"):
        yield count
