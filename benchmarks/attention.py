"""Attention gradient step: the hand-written (flash) backward vs ``jax.grad``.

For each sequence length T, one jit-compiled gradient step of scaled
dot-product attention (self-attention shapes, ``q, k, v (N, T, H, K)``,
float32): the cotangents ``dq, dk, dv`` of ``sum(attention(q, k, v) * dy)``.

* manual: :func:`fnn.kernels.attention.attention_fwd` then ``attention_bwd``
  (keeps ``q, k, v, o`` and one log-sum-exp per query row, recomputes the
  probabilities; ``implementation="auto"``, which is key-blocked from 512 keys);
* autodiff: ``jax.vjp`` of the plain (``"xla"``) forward, which keeps every
  ``(T, T)`` probability for its backward.

Each contender is compiled first (``jax.jit(...).lower(...).compile()``), its
compiled ``memory_analysis()`` temp bytes read, and its time is the median of
several calls. Targets: temp memory manual/autodiff <= 0.5 at T=512 and
<= 0.25 at T=2048, time <= 1.0 at T=512.

    python -m benchmarks.attention [--quick] [--out DIR] [--causal] [--implementation auto|xla|blocked] [--block 256]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import environment, median_time
from fnn.kernels import attention as kernel

TARGETS = {512: {"memory": 0.5, "time": 1.0}, 2048: {"memory": 0.25}}


def _steps(causal: bool, implementation: str, block: int | None):
    opts = dict(causal=causal)

    def manual(q, k, v, dy):
        o, lse = kernel.attention_fwd(q, k, v, implementation=implementation, block_size=block, **opts)
        return kernel.attention_bwd(q, k, v, o, lse, dy, implementation=implementation, block_size=block, **opts)

    def autodiff(q, k, v, dy):
        _, vjp = jax.vjp(lambda *a: kernel.attention_fwd(*a, implementation="xla", **opts)[0], q, k, v)
        return vjp(dy)

    return {"manual": manual, "autodiff": autodiff}


def measure(t: int, *, batch: int, heads: int, size: int, causal: bool, implementation: str, block: int | None,
            repeats: int) -> dict:
    """Time (s) and temp bytes of both contenders at sequence length ``t``, and their largest difference."""
    rng = np.random.default_rng(0)
    q, k, v, dy = (jnp.asarray(rng.standard_normal((batch, heads, t, size)), jnp.float32) for _ in range(4))
    row, outs = {"T": t}, {}
    for name, fn in _steps(causal, implementation, block).items():
        compiled = jax.jit(fn).lower(q, k, v, dy).compile()
        row[f"{name}_temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
        outs[name] = compiled(q, k, v, dy)
        row[f"{name}_seconds"] = median_time(lambda c=compiled: c(q, k, v, dy), warmup=2, repeats=repeats)
    row["max_abs_difference"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(outs["manual"], outs["autodiff"]))
    row["memory_ratio"] = row["manual_temp_bytes"] / max(row["autodiff_temp_bytes"], 1)
    row["time_ratio"] = row["manual_seconds"] / row["autodiff_seconds"]
    return row


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (times in ms, memory in MiB)."""
    head = ("| T | manual ms | autodiff ms | time ratio | manual temp MiB | autodiff temp MiB | memory ratio |\n"
            "|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['manual_seconds'] * 1e3:.2f} | {r['autodiff_seconds'] * 1e3:.2f} | {r['time_ratio']:.2f} "
            f"| {r['manual_temp_bytes'] / 2**20:.2f} | {r['autodiff_temp_bytes'] / 2**20:.2f} "
            f"| {r['memory_ratio']:.3f} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """One line per target: met or missed."""
    by_t = {r["T"]: r for r in rows}
    out = []
    for t, limits in TARGETS.items():
        if t not in by_t:
            continue
        for what, limit in limits.items():
            value = by_t[t][f"{what}_ratio"]
            out.append(f"T={t} {what} manual/autodiff {value:.3f} <= {limit}: {'met' if value <= limit else 'MISSED'}")
    return out


def plot(rows: list[dict], path: Path) -> bool:
    """Temp memory and time vs T, both contenders (False when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ts = [r["T"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("manual", "autodiff"):
        axes[0].plot(ts, [r[f"{name}_temp_bytes"] / 2**20 for r in rows], "o-", label=name)
        axes[1].plot(ts, [r[f"{name}_seconds"] * 1e3 for r in rows], "o-", label=name)
    for ax, label in zip(axes, ("compiled temp memory (MiB)", "time per step (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("attention gradient step: hand-written (flash) backward vs jax.grad")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (seconds)")
    parser.add_argument("--out", type=Path, default=None, help="write attention.json and attention.png here")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--implementation", default="auto", choices=kernel.IMPLEMENTATIONS)
    parser.add_argument("--block", type=int, default=None, help=f"keys per block (default {kernel.BLOCK_SIZE})")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="K = V, the size of a head")
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    args = parser.parse_args(argv)
    lengths = args.lengths or ([64, 128] if args.quick else [256, 512, 1024, 2048])
    repeats = 3 if args.quick else 10
    print(environment())
    print(f"N={args.batch} H={args.heads} K=V={args.size} float32 causal={args.causal} "
          f"implementation={args.implementation} block={args.block or kernel.BLOCK_SIZE}")
    rows = [measure(t, batch=args.batch, heads=args.heads, size=args.size, causal=args.causal,
                    implementation=args.implementation, block=args.block, repeats=repeats) for t in lengths]
    print(format_table(rows))
    for line in targets(rows):
        print(line)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "attention.json").write_text(json.dumps(rows, indent=1))
        if plot(rows, args.out / "attention.png"):
            print(f"wrote {args.out / 'attention.png'}")
        else:
            print("matplotlib is not installed: no plot")
    return rows


if __name__ == "__main__":
    main()
