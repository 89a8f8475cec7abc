"""Printing and saving the suite's results: one text table, a JSON file, a
Markdown table and a PNG bar chart (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASELINES = ("plain JAX", "fnn autodiff", "NumPy reference")
SUFFIXES = {"json": ".json", "markdown": ".md", "png": ".png"}
TORCH = "PyTorch eager"


def environment_line() -> str:
    """``benchmarks.timing.environment()`` plus the thread settings and the
    machine's load average (the numbers of a loaded machine are noisier)."""
    import os

    from benchmarks.timing import environment

    threads = ", ".join(
        f"{v}={os.environ.get(v, 'unset')}"
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")
        if v not in os.environ
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{environment()}, {threads} (library defaults: threads = cores), load average {load}"


def _baseline(row: dict[str, float]) -> str | None:
    """The contender every other one of a workload is compared with."""
    return next((b for b in BASELINES if b in row), None)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def optimizer_label(results: dict[str, Any]) -> str:
    """Which optimizer every contender ran with, in words."""
    return results["settings"]["optimizer_label"]


def lines(results: dict[str, Any], environment: str) -> list[str]:
    """The table as text lines: environment, optimizer, then ``workload | contender | ms/step | ratio``,
    then memory and targets."""
    settings = {k: v for k, v in results["settings"].items() if k != "optimizer_label"}
    out = [environment, f"{TORCH}: {results.get('torch')}", f"optimizer (every contender): {optimizer_label(results)}"]
    out += [f"settings: {settings}", ""]
    out.append(f"{'workload':4s} {'contender':18s} {'ms/step':>10s} {'ratio':>7s}  vs")
    for key, row in results["times"].items():
        out.append(f"{key} {results['titles'][key]}")
        numpy_side = {k: v for k, v in row.items() if "NumPy" in k}
        jax_side = {k: v for k, v in row.items() if "NumPy" not in k}
        for side in (jax_side, numpy_side):
            base = _baseline(side)
            for name, seconds in side.items():
                ratio = f"{seconds / side[base]:7.3f}" if base else f"{'':7s}"
                out.append(f"{'':4s} {name:18s} {seconds * 1e3:10.3f} {ratio}  {base or ''}")
        for note in results["notes"].get(key, []):
            out.append(f"{'':4s} note: {note}")
    out += roofline_lines(results.get("roofline"))
    if results["memory"]:
        out += ["", "compiled step temp memory (memory_analysis().temp_size_in_bytes)"]
        for key, mem in results["memory"].items():
            parts = ", ".join(f"{k} {v / 2**10:.1f} KiB" if v is not None else f"{k} n/a" for k, v in mem.items())
            out.append(f"{key}   {parts}")
    out += ["", "targets"]
    for t in results["targets"]:
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.3f}"
        out.append(
            f"{t['workload']} {t['kind']:6s} {t['what']:34s} {ratio:>7s} <= {t['limit']:<5} {_verdict(t['met'])}"
        )
    return out


def roofline_lines(roofline: dict | None) -> list[str]:
    """The roofline: the machine's float32 matmul rate and each W1 contender's share of it."""
    if not roofline:
        return []
    size, peak = roofline["size"], roofline["peak_flops"]
    shares = ", ".join(f"{name} {share:.1%}" for name, share in roofline["fractions"].items())
    return [
        "",
        f"roofline: float32 matmul peak {peak / 1e9:.1f} GFLOP/s (jnp.dot {size}x{size}); "
        f"W1 step {roofline['step_flops'] / 1e6:.1f} MFLOP of products, share of the peak: {shares}",
    ]


def markdown(results: dict[str, Any], environment: str) -> str:
    """The same content as Markdown tables."""
    md = [
        f"Environment: {environment}",
        "",
        f"{TORCH}: {results.get('torch')}",
        "",
        f"Optimizer (every contender): {optimizer_label(results)}",
        "",
        "| workload | contender | ms/step | ratio | vs |",
        "|---|---|---:|---:|---|",
    ]
    for key, row in results["times"].items():
        for side in (
            {k: v for k, v in row.items() if "NumPy" not in k},
            {k: v for k, v in row.items() if "NumPy" in k},
        ):
            base = _baseline(side)
            for name, seconds in side.items():
                ratio = f"{seconds / side[base]:.3f}" if base else ""
                md.append(f"| {key} {results['titles'][key]} | {name} | {seconds * 1e3:.3f} | {ratio} | {base or ''} |")
    md += ["", "| target | measured | limit | verdict |", "|---|---:|---:|---|"]
    for t in results["targets"]:
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.3f}"
        md.append(f"| {t['workload']} {t['kind']}: {t['what']} | {ratio} | {t['limit']} | {_verdict(t['met'])} |")
    if results["memory"]:
        md += ["", "| workload | " + " | ".join(next(iter(results["memory"].values()))) + " |", "|---|---:|---:|"]
        for key, mem in results["memory"].items():
            md.append(
                f"| {key} | " + " | ".join("n/a" if v is None else f"{v / 2**10:.1f} KiB" for v in mem.values()) + " |"
            )
    md += roofline_lines(results.get("roofline"))
    notes = [f"- {key}: {note}" for key, ns in results["notes"].items() for note in ns]
    return "\n".join(md + ([""] + notes if notes else [])) + "\n"


def bar_chart(results: dict[str, Any], path: Path) -> None:
    """One group of bars per workload (ms/step, log scale), one bar per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contenders = list(dict.fromkeys(name for row in results["times"].values() for name in row))
    keys = list(results["times"])
    width = 0.8 / max(1, len(contenders))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(keys)), 4.0))
    for i, name in enumerate(contenders):
        xs = [k for k, key in enumerate(keys) if name in results["times"][key]]
        ms = [results["times"][keys[k]][name] * 1e3 for k in xs]
        ax.bar([k + (i - len(contenders) / 2 + 0.5) * width for k in xs], ms, width, label=name)
    ax.set_xticks(range(len(keys)), keys)
    ax.set_yscale("log")
    ax.set_ylabel("ms per train step (median, log scale)")
    ax.set_title(f"fnn benchmarks: train step time, {optimizer_label(results)}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(results: dict[str, Any], environment: str, out: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out`` (another optimizer
    than Adam: ``results-momentum.json``, ...; ``benchmarks.optimizers``); returns their paths."""
    from benchmarks.optimizers import choose

    optimizer = choose(results["settings"]["optimizer"])
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / optimizer.file_name("results", suffix) for kind, suffix in SUFFIXES.items()}
    paths["json"].write_text(json.dumps({"environment": environment, **results}, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results, environment))
    bar_chart(results, paths["png"])
    return paths
