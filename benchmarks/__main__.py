"""Run the fnn benchmark suite and the scaling benchmark, and write their tables.

    python -m benchmarks [--quick] [--out benchmarks/results] [--only W1 W3] [--blas-threads N]
                         [--device cpu|gpu] [--no-libraries] [--no-scaling | --scaling-only]
                         [--optimizer adam|momentum] [--keep-freed-memory]

Prints the environment and the suite's table, then the scaling table, and
writes ``results.json``, ``results.md``, ``results.png`` and ``scaling.json``,
``scaling.md``, ``scaling.png`` into ``--out`` (with ``--optimizer momentum``:
``results-momentum.json``, ..., beside an Adam run's). With
``--keep-freed-memory`` it restarts itself with ``GLIBC_TUNABLES`` set to
:data:`fnn.allocator.TUNABLES`, so that no contender faults in its scratch
memory afresh on every call. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# benchmarks.optimizers.OPTIMIZERS' names, spelled here so that --help and its errors import nothing
OPTIMIZER_CHOICES = ("adam", "momentum")


def gpu_error() -> str | None:
    """``None`` when JAX sees a GPU (then its default device), else why not, in one line."""
    try:
        import jax

        jax.devices("gpu")
    except ImportError:
        return "JAX is not installed"
    except RuntimeError:
        return "no GPU visible to JAX (its devices: " + ", ".join(sorted({d.platform for d in jax.devices()})) + "); " \
            "install JAX for CUDA (pip install -U 'jax[cuda12]') on a machine with an NVIDIA driver"
    return None


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``python -m benchmarks: error: ...``), exit status 2,
    instead of the usage block (fnn's own parser is not imported here: it imports NumPy,
    which ``--blas-threads`` must come before)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None, *, restart: bool = False) -> int:
    """The suite's command line; ``restart``: with ``--keep-freed-memory``, the process may
    restart itself with :data:`fnn.allocator.TUNABLES` (only as ``python -m benchmarks``)."""
    parser = Parser(prog="python -m benchmarks", description="fnn benchmark suite")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (seconds, for tests)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output directory")
    parser.add_argument("--only", nargs="+", metavar="W", help="run only these workloads of the suite (W1 ... W6)")
    parser.add_argument(
        "--blas-threads",
        type=int,
        metavar="N",
        help="set OMP/OPENBLAS/MKL_NUM_THREADS=N for NumPy's BLAS (only before NumPy is first imported)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        help="where JAX runs (default: JAX's default device, a GPU when one is visible); "
        "gpu stops with an error when JAX sees none",
    )
    parser.add_argument(
        "--no-libraries", action="store_true", help="leave out the Flax, Equinox and Haiku contenders"
    )
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZER_CHOICES,
        default=OPTIMIZER_CHOICES[0],
        help="what every contender updates with: adam (learning rate 1e-3, the default) or momentum "
        "(SGD + momentum 0.9, learning rate 1e-2); a momentum run writes results-momentum.* and scaling-momentum.*",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="restart with GLIBC_TUNABLES=fnn.allocator.TUNABLES, for every contender alike: no page faults "
        "for a step's scratch memory above 32 MiB at every call (glibc; default: the allocator as it is)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-scaling", action="store_true", help="skip the scaling benchmark (the suite only)")
    which.add_argument("--scaling-only", action="store_true", help="run only the scaling benchmark (not the suite)")
    args = parser.parse_args(argv)
    if args.scaling_only and args.only:
        parser.error("--only selects workloads of the suite, which --scaling-only skips")
    if args.blas_threads is not None:
        if "numpy" in sys.modules:
            parser.error("--blas-threads must be set before NumPy is imported (use python -m benchmarks)")
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)

    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"  # before JAX is imported
    if args.keep_freed_memory:
        from fnn import allocator

        if not allocator.kept():
            if restart:  # every thread's heap must follow: start again with the tunables (does not return)
                sys.stdout.flush()
                os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], allocator.environment())
            allocator.keep_freed_memory()  # called as a function: the in-process form
    if args.device == "gpu" and (error := gpu_error()) is not None:
        print(f"python -m benchmarks: --device gpu: {error}", file=sys.stderr)
        return 2

    # imported here so that --help stays fast; the suite runs NumPy before any XLA work
    from benchmarks import report, suite
    from benchmarks.optimizers import choose

    optimizer = choose(args.optimizer)

    log = lambda message: print(message, file=sys.stderr, flush=True)
    if not args.scaling_only:
        only = tuple(args.only) if args.only else None
        results = suite.run(
            quick=args.quick, only=only, log=log, libraries=not args.no_libraries, optimizer=optimizer
        )
        env = report.environment_line()
        print("\n".join(report.lines(results, env)))
        paths = report.save(results, env, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    if not args.no_scaling:  # after the suite: it runs only JAX steps
        from benchmarks import scaling

        results = scaling.run(quick=args.quick, log=log, optimizer=optimizer)
        print("\n" + "\n".join(scaling.lines(results)))
        paths = scaling.save(results, args.out)
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(restart=True))
