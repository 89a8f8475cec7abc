"""``fnn bench``: the jitted step time of manual backprop against autodiff for
the standard models; ``fnn bench --full`` runs the whole benchmark suite
(``python -m benchmarks``), which ships with the source checkout."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import fnn
from fnn import backend, losses, models, optim, train
from fnn import layers as L
from fnn.cli_args import UsageError, int_at_least

__all__ = ["BENCH_MODELS", "add_parser"]

BENCH_MODELS = {  # name -> (build the model, shape of one example), at MNIST scale
    "mlp": (lambda: L.serial(L.flatten, L.dense(512), L.relu, L.dense(512), L.relu, L.dense(10), name="mlp"), (784,)),
    "cnn": (lambda: models.lenet5(10), (28, 28, 1)),
    "lstm": (lambda: L.serial(L.reshape((28, 28)), models.lstm_classifier(10), name="lstm"), (28, 28, 1)),
    "resnet": (lambda: models.resnet(10), (28, 28, 1)),
}


def _median_step(step, ts, x, y, repeats: int) -> float:
    jax = backend.jax
    ts, out = step(ts, x, y)
    ts, out = step(ts, x, y)
    jax.block_until_ready((ts, out))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ts, out = step(ts, x, y)
        jax.block_until_ready((ts, out))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _source_root() -> Path:
    """The directory holding the ``fnn`` package: in a source checkout, ``benchmarks/`` sits beside it."""
    return Path(fnn.__file__).resolve().parents[1]


def _run_streaming(command: list[str], cwd: Path) -> int:
    """Run ``command`` in ``cwd``, its output going straight to this process's; its exit status."""
    return subprocess.run(command, cwd=cwd, check=False).returncode


def _bench_full(args: argparse.Namespace) -> int:
    """``python -m benchmarks`` run from the source checkout holding this fnn (the suite is not installed)."""
    root = _source_root()
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise SystemExit(
            f"fnn bench --full: the benchmark suite ships with fnn's source checkout, not with the installed "
            f"package, and there is no benchmarks/ directory beside {root / 'fnn'}. From a source checkout run: "
            "python -m benchmarks [--quick] [--out DIR] (or install it editable: pip install -e .)"
        )
    command = [sys.executable, "-m", "benchmarks"] + ["--quick"] * args.quick
    if args.optimizer is not None:
        command += ["--optimizer", args.optimizer]
    if args.out is not None:
        command += ["--out", str(Path(args.out).resolve())]  # the suite runs in ``root``, not here
    print(f"fnn bench --full: {' '.join(command)} (in {root})", flush=True)
    return _run_streaming(command, root)


def _bench(args: argparse.Namespace) -> int:
    if args.full:
        return _bench_full(args)
    if args.quick or args.out is not None or args.optimizer is not None:
        raise UsageError("--quick, --out and --optimizer go with --full (the full benchmark suite)")
    if not backend.HAS_JAX:
        raise UsageError("fnn bench compares jitted steps and needs JAX (pip install 'fnn[jax]')")
    jax, jnp = backend.jax, backend.jnp
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; SGD train step under jit, "
          f"batch {args.batch_size}, median of {args.repeats}")
    print(f"{'model':8s} {'params':>10s} {'autodiff ms':>12s} {'manual ms':>10s} {'manual/autodiff':>16s}")
    rng = np.random.default_rng(0)
    for name in args.models:
        make, shape = BENCH_MODELS[name]
        model, opt = make(), optim.sgd(0.01)
        x = jnp.asarray(rng.standard_normal((args.batch_size,) + shape).astype(np.float32))
        y = jnp.asarray(rng.integers(0, 10, args.batch_size).astype(np.int32))
        ts = train.init_state(model, opt, fnn.key(0), (None,) + shape)
        times = {}
        for method in ("autodiff", "manual"):
            step = train.train_step(model, losses.softmax_cross_entropy, opt, method, metrics={})
            step = jax.jit(step, donate_argnums=0)
            times[method] = _median_step(step, backend.tree_map(lambda a: a.copy(), ts), x, y, args.repeats)
        print(f"{name:8s} {backend.tree_size(ts.params):10,d} {times['autodiff'] * 1e3:12.3f} "
              f"{times['manual'] * 1e3:10.3f} {times['manual'] / times['autodiff']:16.2f}")
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``fnn`` command's subparsers."""
    b = commands.add_parser(
        "bench",
        help="manual backprop vs autodiff step time of the standard models (--full: the whole benchmark suite)",
        description="Without --full: a quick table of the jitted train step time of manual backprop against "
        "autodiff for the standard models. With --full: the whole benchmark suite (python -m benchmarks: fnn "
        "against plain JAX and NumPy on five workloads, then how the step time scales with batch size and "
        "sequence length), run from the source checkout that holds this fnn; it takes a few minutes.",
    )
    b.add_argument("--models", nargs="+", choices=sorted(BENCH_MODELS), default=list(BENCH_MODELS),
                   help="without --full: the models to time (default: all)")
    b.add_argument("--batch-size", type=int_at_least(1), default=64, help="without --full: the batch size")
    b.add_argument("--repeats", type=int_at_least(1), default=20, help="without --full: timed steps per model")
    b.add_argument("--full", action="store_true",
                   help="run the full benchmark suite (python -m benchmarks, from the source checkout)")
    b.add_argument("--quick", action="store_true", help="with --full: tiny sizes and few repeats (seconds)")
    b.add_argument("--out", default=None, metavar="DIR",
                   help="with --full: where to write the results (default: benchmarks/results/ in the checkout)")
    b.add_argument("--optimizer", choices=("adam", "momentum"), default=None,
                   help="with --full: what every contender updates with (python -m benchmarks' default: adam)")
    b.set_defaults(run=_bench)
    return b
