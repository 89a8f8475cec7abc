"""How the train step's time grows with the problem size, fnn manual against
fnn autodiff.

Two series: W1 (MLP 784-512-512-10, relu, softmax cross-entropy, Adam or
the suite's other optimizer, ``benchmarks.optimizers``) at
batch 32 / 128 / 512 / 2048, and W4 (``fnn.models.lstm_classifier(10, 128)``,
batch 64, 32 features) at sequence length T = 25 / 50 / 100 / 200. At every
size both steps are jitted and compiled before timing, and timed in
alternating rounds (``benchmarks.suite.time_alternating``), each keeping its
best round's median.

The steps at the largest sizes cost over 100 ms, so the number of timed calls
per round is chosen per size: enough calls for a round of about
``Plan.round_seconds``, clamped to ``[min_repeats, max_repeats]`` (from one
timed call after compilation). Then for each series and method a least-squares
line ``time = a + b * size`` gives R^2, and the per-unit cost (time / size) at
the largest size over that at the second size says whether the growth is
linear (about 1) or better (below 1, fixed costs amortized); and the largest
manual / autodiff ratio over the sizes says whether manual is ever behind.
Nothing is asserted: timings depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.optimizers import ADAM, Optimizer, choose
from benchmarks.suite import AUTODIFF, MANUAL, QUICK, Settings, fnn_step, numpy_init, time_alternating
from benchmarks.timing import median_time
from benchmarks.workloads import Workload, resized, workloads

METHODS = (("manual", MANUAL), ("autodiff", AUTODIFF))
LIMITS = (1.0, 1.1)  # manual / autodiff verdicts: "never behind" and W4's target elsewhere


@dataclass(frozen=True)
class Plan:
    """How long to measure each size: alternating rounds, warm-up calls per round, and
    timed calls per round enough for about ``round_seconds``, within ``[min_repeats, max_repeats]``."""

    rounds: int = 3
    warmup: int = 1  # per round; each step has already run twice (first loss, round length)
    round_seconds: float = 0.5
    min_repeats: int = 5
    max_repeats: int = 100

    def repeats(self, seconds_per_call: float) -> int:
        """Timed calls per round for a step of about ``seconds_per_call``."""
        wanted = math.ceil(self.round_seconds / max(seconds_per_call, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, wanted))


FULL_PLAN = Plan()
QUICK_PLAN = Plan(
    rounds=QUICK.rounds, warmup=QUICK.warmup, round_seconds=0.0, min_repeats=QUICK.repeats, max_repeats=QUICK.repeats
)


@dataclass(frozen=True)
class Series:
    """One workload at several sizes: ``size_name`` is what varies, ``unit`` one unit of it."""

    key: str
    title: str
    size_name: str
    unit: str
    cases: tuple[tuple[int, Workload], ...]


def series(quick: bool = False, optimizer: Optimizer = ADAM) -> dict[str, Series]:
    """The W1 (batch) and W4 (sequence length) series; ``quick`` uses the suite's tiny models
    (W1 widths 32, W4 hidden 8 with 4 features at batch 4) at tiny sizes; ``optimizer`` names
    the update in the titles."""
    base = workloads(quick)
    w1, w4 = base["W1"], base["W4"]
    batches = (4, 8, 16, 32) if quick else (32, 128, 512, 2048)
    lengths = (2, 4, 8, 16) if quick else (25, 50, 100, 200)
    lstm_batch = 4 if quick else 64
    widths = "-".join(map(str, w1.sizes["widths"]))
    return {
        "W1": Series(
            "W1",
            f"MLP 784-{widths}-10, relu, softmax CE, {optimizer.short_label}",
            "batch",
            "example",
            tuple((b, resized(w1, batch=b)) for b in batches),
        ),
        "W4": Series(
            "W4",
            f"LSTM hidden {w4.sizes['hidden']}, {w4.input_shape[1]} features, batch {lstm_batch}, "
            f"{optimizer.short_label}",
            "T",
            "time step",
            tuple((t, resized(w4, batch=lstm_batch, time_steps=t)) for t in lengths),
        ),
    }


def time_size(workload: Workload, plan: Plan, optimizer: Optimizer = ADAM) -> dict[str, Any]:
    """Both methods' compiled steps on one workload (updating with ``optimizer``), timed in alternating rounds.

    Returns ``{"times": {method: seconds}, "repeats", "losses": {method: first loss}}``.
    """
    import jax
    import jax.numpy as jnp

    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    x, y = (jnp.asarray(a) for a in workload.data())
    calls: dict[str, Callable[[], Any]] = {}
    losses: dict[str, float] = {}
    for method, name in METHODS:
        step, opt = fnn_step(workload, method, optimizer)
        args = (params, state, opt.init(params), x, y)
        compiled = jax.jit(step).lower(*args).compile()
        losses[name] = float(compiled(*args)[3])
        calls[name] = lambda f=compiled, a=args: f(*a)
    repeats = plan.min_repeats
    if plan.max_repeats > plan.min_repeats:  # one timed call of the slower method sets the round length
        repeats = plan.repeats(max(median_time(call, warmup=0, repeats=1) for call in calls.values()))
    times = time_alternating(calls, Settings(warmup=plan.warmup, repeats=repeats, rounds=plan.rounds))
    return {"times": times, "repeats": repeats, "losses": losses}


def linear_fit(sizes: list[float], times: list[float]) -> dict[str, float]:
    """Least-squares ``time = intercept + slope * size`` and its R^2 (1.0 when the times are all equal)."""
    x, y = np.asarray(sizes, dtype=float), np.asarray(times, dtype=float)
    (intercept, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], axis=1), y, rcond=None)
    residual = float(np.sum((y - intercept - slope * x) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return {"intercept": float(intercept), "slope": float(slope), "r2": 1.0 - residual / total if total > 0 else 1.0}


def per_unit_ratio(sizes: list[float], times: list[float]) -> float:
    """Per-unit cost (time / size) at the largest size over that at the second size:
    about 1 for linear growth, below 1 while fixed costs are being amortized."""
    return (times[-1] / sizes[-1]) / (times[1] / sizes[1])


def _load() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def run(quick: bool = False, log: Callable[[str], None] = print, optimizer: Optimizer = ADAM) -> dict:
    """Time every series at every size, every step updating with ``optimizer``; returns a
    JSON-able dict (times in seconds; ``optimizer`` its name, ``optimizer_label`` in words).

    ``series[key]`` holds ``sizes``, ``repeats`` (timed calls per round at each size),
    ``times[method]`` (one per size), ``fit[method]`` (``intercept``, ``slope``, ``r2``,
    ``per_unit_ratio``), ``ratios`` (manual / autodiff per size), ``max_ratio`` and
    ``max_ratio_size``, ``within`` (``{"1.0": bool, "1.1": bool}``) and ``notes``.
    """
    from benchmarks.report import environment_line

    plan = QUICK_PLAN if quick else FULL_PLAN
    start, load_start = time.perf_counter(), _load()
    out: dict[str, Any] = {}
    for key, s in series(quick, optimizer).items():
        times: dict[str, list[float]] = {name: [] for _, name in METHODS}
        repeats, notes = [], []
        for size, workload in s.cases:
            log(f"scaling {key} {s.size_name}={size} ...")
            measured = time_size(workload, plan, optimizer)
            for name, column in times.items():
                column.append(measured["times"][name])
            repeats.append(measured["repeats"])
            manual, autodiff = measured["losses"][MANUAL], measured["losses"][AUTODIFF]
            if not np.isclose(manual, autodiff, rtol=1e-4, atol=1e-5):
                notes.append(
                    f"{s.size_name}={size}: first losses MISMATCH, manual {manual:.6f}, autodiff {autodiff:.6f}"
                )
        sizes = [size for size, _ in s.cases]
        ratios = [m / a for m, a in zip(times[MANUAL], times[AUTODIFF])]
        worst = int(np.argmax(ratios))
        out[key] = {
            "title": s.title,
            "size_name": s.size_name,
            "unit": s.unit,
            "sizes": sizes,
            "repeats": repeats,
            "times": times,
            "ratios": ratios,
            "fit": {
                name: linear_fit(sizes, ts) | {"per_unit_ratio": per_unit_ratio(sizes, ts)}
                for name, ts in times.items()
            },
            "max_ratio": ratios[worst],
            "max_ratio_size": sizes[worst],
            "within": {f"{limit}": bool(ratios[worst] <= limit) for limit in LIMITS},
            "notes": notes,
        }
    return {
        "environment": environment_line(),
        "plan": asdict(plan) | {"quick": quick},
        "optimizer": optimizer.name,
        "optimizer_label": optimizer.label,
        "load_average": {"start": load_start, "end": _load()},
        "seconds": time.perf_counter() - start,
        "series": out,
    }


def _plan_line(results: dict) -> str:
    p = results["plan"]
    if p["min_repeats"] == p["max_repeats"]:
        calls = f"{p['min_repeats']} timed calls"
    else:
        calls = (
            f"timed calls per round chosen per size for about {p['round_seconds']} s "
            f"(at least {p['min_repeats']}, at most {p['max_repeats']}; fewer at the large sizes)"
        )
    return (
        f"method: compiled steps, {p['rounds']} alternating round(s) of {p['warmup']} warm-up + {calls}, "
        "best round's median per method"
    )


def _rows(s: dict) -> list[tuple[str, str, str, str, str]]:
    """``(size, manual ms, autodiff ms, manual/autodiff, per-unit ms manual / autodiff)`` per size."""
    rows = []
    for k, size in enumerate(s["sizes"]):
        m, a = s["times"][MANUAL][k] * 1e3, s["times"][AUTODIFF][k] * 1e3
        rows.append((str(size), f"{m:.3f}", f"{a:.3f}", f"{m / a:.3f}", f"{m / size:.4f} / {a / size:.4f}"))
    return rows


def _verdict(s: dict) -> str:
    return ", ".join(f"<= {limit}: {'yes' if ok else 'NO'}" for limit, ok in s["within"].items())


def lines(results: dict) -> list[str]:
    """The scaling table, the linearity fits and the manual-vs-autodiff verdicts as text lines."""
    load = results["load_average"]
    out = [
        f"scaling: train step time vs size, fnn manual vs fnn autodiff, {results['optimizer_label']}",
        _plan_line(results),
        f"load average at start {load['start']}, at end {load['end']}; took {results['seconds']:.0f} s",
        "",
        f"{'series':6s} {'size':>6s} {'manual ms':>10s} {'autodiff ms':>12s} {'man/auto':>9s}  "
        + "ms per unit size (manual / autodiff)",
    ]
    for key, s in results["series"].items():
        out.append(
            f"{key} {s['title']} (size = {s['size_name']}, unit = one {s['unit']}; "
            f"timed calls per round {s['repeats']})"
        )
        for size, m, a, ratio, unit in _rows(s):
            out.append(f"{key:6s} {size:>6s} {m:>10s} {a:>12s} {ratio:>9s}  {unit}")
        out += [f"{'':6s} note: {note}" for note in s["notes"]]
    out += ["", "linearity: least-squares time = a + b * size; per-unit cost at the largest size / at the second size"]
    for key, s in results["series"].items():
        first, last = s["sizes"][1], s["sizes"][-1]
        for name, f in s["fit"].items():
            out.append(
                f"{key} {name:12s} a = {f['intercept'] * 1e3:8.3f} ms, b = {f['slope'] * 1e3:.5f} ms per {s['unit']}, "
                f"R^2 = {f['r2']:.4f}, per-unit {s['size_name']}={last} / {s['size_name']}={first} = "
                f"{f['per_unit_ratio']:.3f}"
            )
    out += ["", "manual never behind: max over sizes of manual / autodiff"]
    for key, s in results["series"].items():
        out.append(f"{key} max {s['max_ratio']:.3f} at {s['size_name']}={s['max_ratio_size']}: {_verdict(s)}")
    return out


def markdown(results: dict) -> str:
    """The same content as Markdown tables."""
    load = results["load_average"]
    md = [
        f"Environment: {results['environment']}",
        "",
        f"Optimizer: {results['optimizer_label']}",
        "",
        f"{_plan_line(results)}. Load average at start {load['start']}, at end {load['end']}; "
        + f"took {results['seconds']:.0f} s.",
        "",
        "| series | size | manual ms | autodiff ms | manual/autodiff | ms per unit size (manual / autodiff) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, s in results["series"].items():
        for size, m, a, ratio, unit in _rows(s):
            md.append(f"| {key} {s['size_name']} | {size} | {m} | {a} | {ratio} | {unit} |")
    md += [
        "",
        "| series | method | a (ms) | b (ms per unit) | R^2 | per-unit cost, largest / second size |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, s in results["series"].items():
        for name, f in s["fit"].items():
            md.append(
                f"| {key} ({s['size_name']}) | {name} | {f['intercept'] * 1e3:.3f} | {f['slope'] * 1e3:.5f} | "
                f"{f['r2']:.4f} | {f['per_unit_ratio']:.3f} |"
            )
    md += ["", "| series | max manual/autodiff | at | verdict |", "|---|---:|---:|---|"]
    for key, s in results["series"].items():
        md.append(f"| {key} | {s['max_ratio']:.3f} | {s['size_name']}={s['max_ratio_size']} | {_verdict(s)} |")
    md += [""] + [
        f"- {key}: {s['title']}; size = {s['size_name']}; timed calls per round {s['repeats']}"
        for key, s in results["series"].items()
    ]
    notes = [f"- {key}: {note}" for key, s in results["series"].items() for note in s["notes"]]
    return "\n".join(md + notes) + "\n"


def plot(results: dict, path: Path) -> None:
    """Two log-log panels (W1: time vs batch, W4: time vs T): manual and autodiff, and a
    dashed slope-1 line through the largest manual point for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    items = list(results["series"].items())
    fig, axes = plt.subplots(1, len(items), figsize=(5.0 * len(items), 4.0), squeeze=False)
    for ax, (key, s) in zip(axes[0], items):
        sizes = s["sizes"]
        for (_, name), marker in zip(METHODS, ("o", "s")):
            ax.plot(sizes, [t * 1e3 for t in s["times"][name]], marker=marker, label=name)
        top = s["times"][MANUAL][-1] * 1e3
        ax.plot(sizes, [top * size / sizes[-1] for size in sizes], "k--", linewidth=1, label="slope 1 (linear)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(size) for size in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(s["size_name"])
        ax.set_ylabel("ms per train step (median)")
        ax.set_title(f"{key}: {s['title']}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(results: dict, out: Path) -> dict[str, Path]:
    """Write ``scaling.json``, ``scaling.md`` and ``scaling.png`` into ``out`` (another optimizer
    than Adam: ``scaling-momentum.json``, ...); returns their paths."""
    optimizer = choose(results["optimizer"])
    out.mkdir(parents=True, exist_ok=True)
    suffixes = {"json": ".json", "markdown": ".md", "png": ".png"}
    paths = {kind: out / optimizer.file_name("scaling", suffix) for kind, suffix in suffixes.items()}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results))
    plot(results, paths["png"])
    return paths
