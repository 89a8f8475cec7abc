"""Mutation testing of the hand-written rules: plant one plausible bug at a
time (a :class:`~tests.mutation.mutants.Mutant`) and check that the tests of
its module notice.

Each mutant is applied to a private copy of the repository (made once, in a
temporary directory, and restored after every mutant), never to the tree you
run it from: the copy's tests run with ``PYTHONPATH`` pointing at the copy.
A mutant is *killed* when its tests fail (or time out), and *survives* when
they pass. Before any mutant, the unmutated copy must pass every test file
the mutants use, so that a broken test never counts as a kill.

Usage (from the repository root; slow -- minutes per dozen mutants)::

    python tests/mutation/run.py                 # every mutant
    python tests/mutation/run.py softmax adam    # mutants whose name contains a word
    python tests/mutation/run.py --list          # the mutants, nothing run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tests.mutation`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.mutation.mutants import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PYTEST_FLAGS = ("-x", "-q", "-p", "no:cacheprovider", "--no-header")
IGNORED = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.egg-info", ".hypothesis", "*.pyc")


@dataclasses.dataclass
class Outcome:
    """One mutant's result: ``"killed"``, ``"survived"`` or ``"timeout"`` (a kill)."""

    mutant: Mutant
    verdict: str
    seconds: float
    detail: str = ""


def mutate(source: str, mutant: Mutant) -> str:
    """``source`` with the mutant's snippet replaced; the snippet must occur exactly once."""
    count = source.count(mutant.find)
    if count != 1:
        raise ValueError(
            f"mutant {mutant.name!r}: the snippet occurs {count} times in {mutant.file} (it must occur once); "
            f"snippet: {mutant.find!r}"
        )
    return source.replace(mutant.find, mutant.replace)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """pytest on ``tests`` inside ``copy``: (exit code or None on timeout, the last output line)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", *PYTEST_FLAGS, *tests]
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else ""


def check_copy_is_imported(copy: Path) -> None:
    """The copy's ``fnn`` must be the one its tests import (not an installed one)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", "import fnn; print(fnn.__file__)"], cwd=copy, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise RuntimeError(f"the copy's tests would import fnn from {out}, not from the copy {copy}")


def run_mutant(copy: Path, mutant: Mutant, timeout: float) -> Outcome:
    """Apply one mutant to the copy, run its tests, restore the file."""
    path = copy / mutant.file
    original = path.read_text()
    path.write_text(mutate(original, mutant))
    start = time.perf_counter()
    try:
        code, last = run_tests(copy, mutant.tests, timeout)
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - start
    if code is None:
        return Outcome(mutant, "timeout", seconds, last)
    if code in (3, 4, 5):  # internal error, usage error (a test id that does not exist), no tests: not a kill
        raise RuntimeError(f"mutant {mutant.name!r}: pytest could not run {mutant.tests} (exit {code}: {last})")
    return Outcome(mutant, "survived" if code == 0 else "killed", seconds, last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only the mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated tests first")
    parser.add_argument("--first", nargs="*", default=[], metavar="WORD",
                        help="run the mutants whose name or file contains one of these before the others")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="WORD",
                        help="leave out the mutants whose name contains one of these (e.g. those already run)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if (not args.names or any(n in m.name for n in args.names))
              and not any(w in m.name for w in args.exclude)]
    chosen.sort(key=lambda m: not any(w in m.name or w in m.file for w in args.first))  # stable otherwise
    if not chosen:
        print(f"no mutant matches {args.names}", file=sys.stderr)
        return 2
    for m in chosen:  # every snippet must still be in the source: a stale mutant is an error, not a kill
        mutate((ROOT / m.file).read_text(), m)
    if args.list:
        for m in chosen:
            print(f"{m.name:50s} {m.file:32s} {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="fnn-mutation-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORED)
        check_copy_is_imported(copy)
        if not args.skip_baseline:  # every test the chosen mutants use, unmutated, in one run
            tests = tuple(sorted({t for m in chosen for t in m.tests}))
            code, last = run_tests(copy, tests, args.timeout * 3)
            if code != 0:
                print(f"baseline: the unmutated tests fail ({last}); fix them first", file=sys.stderr)
                return 2
            print(f"baseline ok: {len(tests)} test files and tests ({last})", flush=True)
        outcomes = []
        for i, mutant in enumerate(chosen, 1):
            outcome = run_mutant(copy, mutant, args.timeout)
            outcomes.append(outcome)
            print(f"[{i:3d}/{len(chosen)}] {outcome.verdict:8s} {outcome.seconds:6.1f}s  {mutant.name}  "
                  f"| {outcome.detail[:100]}", flush=True)
    survivors = [o for o in outcomes if o.verdict == "survived"]
    killed = len(outcomes) - len(survivors)
    print(f"\nmutation score: {killed} of {len(outcomes)} killed ({100.0 * killed / len(outcomes):.1f} %)")
    for o in survivors:
        print(f"  survived: {o.mutant.name}  ({o.mutant.file}: {o.mutant.find.strip()!r} -> "
              f"{o.mutant.replace.strip()!r})")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
