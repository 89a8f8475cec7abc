"""fnn.allocator: a jitted program's scratch memory is reused from call to call, not faulted in again."""

import os
import subprocess
import sys
import textwrap

import pytest

from fnn import allocator

# A program with 48 MiB of temp memory (above glibc's largest mmap threshold, 32 MiB) that
# prints its temp size and how many of 16 windows of 2 calls had under 200 minor page faults per
# call. Without the settings none has (about 12,300 per call); with them the heap grows for a
# few calls (more on a busy machine, where a buffer may be freed after the next call took its
# own) and then no call faults. Before
# anything else (NumPy and JAX start threads) it may call keep_freed_memory, loaded from its
# file alone so that importing it imports neither.
PROGRAM = textwrap.dedent(
    """
    import importlib.util, resource, sys
    if sys.argv[1] == "call":
        spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.keep_freed_memory()[0]
    import jax, jax.numpy as jnp
    from jax import lax

    def f(x):
        a = lax.optimization_barrier(jnp.sin(x))  # materialised: the temp buffer
        return (a * a).sum()

    x = jnp.ones((48 << 20) // 4, jnp.float32)
    step = jax.jit(f).lower(x).compile()
    print(step.memory_analysis().temp_size_in_bytes >> 20)
    windows = []  # faults per call over windows of 2 calls
    for _ in range(16):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(2):
            step(x).block_until_ready()
        windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2)
    print(sum(w < 200 for w in windows))
    """
)


def calm_windows(how: str, env: dict) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, how, allocator.__file__], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) >= 40  # the premise: a temp buffer glibc would mmap and unmap at every call
    return int(out[1])


glibc_only = pytest.mark.skipif(allocator._glibc()[0] is None, reason="the settings act on glibc only")


@glibc_only
@pytest.mark.parametrize("how", ["tunables", "call"])
def test_scratch_memory_is_not_faulted_in_again_on_every_call(how):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if how == "tunables":  # TUNABLES when the process starts
        env = allocator.environment(env)
    assert calm_windows(how, env) >= 4


def test_the_tunables_join_the_ones_already_set():
    assert not allocator.kept({})
    env = allocator.environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "HOME": "/x"})
    assert env["HOME"] == "/x" and allocator.kept(env)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:" + allocator.TUNABLES
    assert not allocator.kept({"GLIBC_TUNABLES": allocator.TUNABLES.replace("mmap_max=0", "mmap_max=1")})


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


def test_the_suite_restarts_itself_with_the_tunables(monkeypatch):
    from benchmarks.__main__ import main

    class Restarted(Exception):
        pass

    def execve(path, argv, env):
        raise Restarted(path, argv, env)

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--keep-freed-memory", "--quick"])
    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(Restarted) as restarted:
        main(["--keep-freed-memory", "--quick"], restart=True)
    path, argv, env = restarted.value.args
    assert path == sys.executable and argv == [sys.executable, "-m", "benchmarks", "--keep-freed-memory", "--quick"]
    assert allocator.kept(env) and env["PATH"] == os.environ["PATH"]
