"""Where one workload's train step spends its time: a per-operation profile.

    python -m benchmarks.profile W2 [--method manual|autodiff|plain] [--steps 30] [--top 15] [--quick]

Compiles the step (fnn's manual or autodiff step, or the plain-JAX
reference), runs it ``--steps`` times under ``jax.profiler`` and reads the
Perfetto trace: each XLA operation's mean time per step, the share of the
step's wall time, and what the operation computes (its result shape and the
JAX operation it came from, from the compiled HLO). This is how the notes in
``benchmarks/README.md`` say where a step's time goes.

The times are those of the operations' events on the thread that ran them.
An operation that hands its work to XLA's thread pool and returns can show
less than it costs; the wall time per step is the reference.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

METHODS = ("manual", "autodiff", "plain")
# runtime bookkeeping events of the profiler, not operations of the program
_RUNTIME_EVENT = re.compile(
    r"^(\$|end: |ThunkExecutor|PjitFunction|CommonPjRt|ParseArguments|SlinkyThreadPool|Allocate|Handle |Wait |PythonRef)"
)


@dataclass(frozen=True)
class Operation:
    """One operation of the compiled step: mean time per step and what it computes."""

    name: str
    seconds: float
    calls: float  # events per step (more than 1 inside loops)
    shape: str
    source: str  # the JAX operation it was lowered from


def compiled_step(workload_key: str, method: str, quick: bool = False) -> tuple[Any, tuple]:
    """The workload's compiled train step for ``method`` and the arguments to call it with."""
    import jax
    import jax.numpy as jnp

    from benchmarks import references, resnet_reference
    from benchmarks.suite import fnn_step, numpy_init
    from benchmarks.workloads import workloads

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    table = workloads(quick)
    if workload_key not in table:
        raise ValueError(f"workload must be one of {', '.join(table)}; got {workload_key!r}")
    workload = table[workload_key]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    x, y = (jnp.asarray(a) for a in workload.data())
    if method == "plain":
        step = references.train_step(workload)
        if step is None:  # W5
            step, args = resnet_reference.train_step(), (params, state, references.adam_init(params), x, y)
        else:
            args = (params, references.adam_init(params), x, y)
    else:
        step, opt = fnn_step(workload, method)
        args = (params, state, opt.init(params), x, y)
    return jax.jit(step).lower(*args).compile(), args


def describe(hlo_text: str) -> dict[str, tuple[str, str]]:
    """``{instruction name: (result shape, source op)}`` from compiled HLO text."""
    found = {}
    for line in hlo_text.splitlines():
        head = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+?)(?:\{[^}]*\})? ", line)
        if head:
            source = re.search(r'op_name="([^"]*)"', line)
            found[head.group(1)] = (head.group(2), source.group(1).split("/")[-1] if source else "")
    return found


def trace_events(trace_dir: str) -> list[dict]:
    """The complete ("X") events of the Perfetto trace that ``jax.profiler.trace`` wrote."""
    files = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    if not files:
        raise RuntimeError(f"jax.profiler wrote no Perfetto trace under {trace_dir}")
    with gzip.open(files[0]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X"]


def profile(compiled: Any, args: tuple, steps: int = 30, warmup: int = 5) -> tuple[float, list[Operation]]:
    """Wall seconds per step and the operations, slowest first, of ``steps`` profiled calls."""
    import jax

    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(steps):
                jax.block_until_ready(compiled(*args))
            wall = (time.perf_counter() - start) / steps
        events = trace_events(trace_dir)
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for event in events:
        if not _RUNTIME_EVENT.match(event["name"]):
            total[event["name"]] += event.get("dur", 0) * 1e-6
            count[event["name"]] += 1
    info = describe(compiled.as_text())
    operations = [
        Operation(name, seconds / steps, count[name] / steps, *info.get(name, ("", "")))
        for name, seconds in total.most_common()
    ]
    return wall, operations


def lines(title: str, wall: float, operations: list[Operation], top: int) -> list[str]:
    """The profile as printable lines."""
    out = [title, f"{'operation':28s} {'ms/step':>8s} {'share':>6s}  {'result':24s} from"]
    for op in operations[:top]:
        out.append(
            f"{op.name[:28]:28s} {op.seconds * 1e3:8.3f} {op.seconds / wall:6.1%}  {op.shape[:24]:24s} {op.source}"
            + (f" (x{op.calls:g} per step)" if op.calls != 1 else "")
        )
    listed = sum(op.seconds for op in operations)
    out.append(f"{'all operations':28s} {listed * 1e3:8.3f} {listed / wall:6.1%}")
    out.append(f"{'wall time per step':28s} {wall * 1e3:8.3f}")
    return out


def main(argv: list[str] | None = None, print_: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n")[0])
    parser.add_argument("workload", help="W1 ... W5")
    parser.add_argument("--method", default="manual", choices=METHODS)
    parser.add_argument("--steps", type=int, default=30, help="profiled steps (after 5 warm-up steps)")
    parser.add_argument("--top", type=int, default=15, help="operations to list")
    parser.add_argument("--quick", action="store_true", help="the workloads' tiny sizes")
    args = parser.parse_args(argv)
    try:
        compiled, call_args = compiled_step(args.workload, args.method, args.quick)
    except ValueError as e:
        parser.error(str(e))
    wall, operations = profile(compiled, call_args, args.steps)
    for line in lines(f"{args.workload} {args.method} step, {args.steps} steps", wall, operations, args.top):
        print_(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
