"""fnn.allocator: a jitted program's scratch memory is reused from call to call, not faulted in again."""

import subprocess
import sys
import textwrap

import pytest

from fnn import allocator

# A program with 48 MiB of temp memory (above glibc's largest mmap threshold, 32 MiB);
# prints its temp size and the minor page faults per call after warm-up calls.
PROGRAM = textwrap.dedent(
    """
    import resource
    from fnn import allocator
    print(allocator.keep_freed_memory()[0])
    import jax, jax.numpy as jnp
    from jax import lax

    def f(x):
        a = lax.optimization_barrier(jnp.sin(x))  # materialised: the temp buffer
        return (a * a).sum()

    x = jnp.ones((48 << 20) // 4, jnp.float32)
    step = jax.jit(f).lower(x).compile()
    print(step.memory_analysis().temp_size_in_bytes >> 20)

    for _ in range(6):
        step(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step(x).block_until_ready()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
    """
)


@pytest.mark.skipif(allocator._glibc()[0] is None, reason="keep_freed_memory acts on glibc only")
def test_scratch_memory_is_not_faulted_in_again_on_every_call():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout.split()
    applied, temp_mib, faults = out[0], int(out[1]), float(out[2])
    assert applied == "True"
    assert temp_mib >= 40  # the premise: a temp buffer glibc would mmap and unmap on every call
    # without keep_freed_memory: 48 MiB / 4 KiB = about 12,300 faults per call
    assert faults < 200


def test_retain_bytes_is_checked():
    for bad in (0, 1 << 19, 2**31, 1.5, True, "1g"):
        with pytest.raises(ValueError, match=r"keep_freed_memory: retain_bytes must be an int from 1 MiB"):
            allocator.keep_freed_memory(bad)


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(allocator, "_applied", None)
    applied, note = allocator.keep_freed_memory()
    assert not applied
    assert note == "the C library of darwin is not glibc: the allocator is left as it is"
    assert allocator.describe() == "malloc: the C library's defaults"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    assert allocator.describe() == "malloc: GLIBC_TUNABLES=glibc.malloc.mmap_max=0"
