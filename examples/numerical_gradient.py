"""Numerical gradient vs backpropagation: the same answer, at very different costs.

The gradient of the loss can be computed without any calculus, by central
differences: nudge each parameter by +-eps, run the network forward twice,
``(L(w + eps) - L(w - eps)) / (2 eps)``. It is the slow, always-right
reference the notes use to check backpropagation. Two parts:

* Training. A small MLP (64 -> 10 -> 10, sigmoid) is trained on 200 digits
  with full-batch gradient descent twice from the same start in float64:
  once with the gradients of ``fnn.gradcheck.numerical_grad`` and once with
  fnn's hand-written backpropagation. The two loss curves are the same (to
  about 1e-8): finite differences are exact enough to train with.
* Cost. One gradient of finite differences needs ``2 * P`` forward passes
  for ``P`` parameters; backpropagation costs about one forward and one
  backward pass. The time of one gradient is measured for a growing hidden
  width and plotted on log-log axes. At these small sizes a forward pass
  costs nearly the same at every width (its fixed overheads dominate), so
  backpropagation's time is almost flat while finite differences grow like
  ``P`` (measured about ``P**1.2``; they would approach ``P**2`` once the
  forward pass itself grows with ``P``): at 4,810 parameters one numerical
  gradient is some 25,000 times slower than backpropagation. The dotted
  line, ``2P`` forward passes alone, shows that the rest of the cost is the
  bookkeeping of nudging each entry (a copy of the leaf for every nudge).

All on NumPy (float64), so nothing is compiled and the timings compare the
algorithms, not the compilers. The default run takes about 16 s of CPU
time (60 s of wall time on a busy 2-core machine).

    python examples/numerical_gradient.py
    python examples/numerical_gradient.py --quick
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import fnn
from fnn import gradcheck, losses, optim
from fnn import layers as L

LOSS = losses.softmax_cross_entropy


def mlp(hidden: int) -> fnn.Layer:
    return L.serial(L.dense(hidden), L.sigmoid, L.dense(10))


def setup(hidden: int, n: int, seed: int = 0) -> tuple[fnn.Layer, Any, Any, np.ndarray, np.ndarray]:
    """The model, its float64 params and state, and ``n`` digits (flattened, float64)."""
    x, y = fnn.data.load_digits(images=False)
    model = mlp(hidden)
    params, state = model.init(fnn.key(seed, backend="numpy"), (None, 64))
    params = fnn.backend.tree_map(lambda p: p.astype(np.float64), params)
    return model, params, state, x[:n].astype(np.float64), y[:n]


def numerical_gradient_fn(model: fnn.Layer, state: Any, x: np.ndarray, y: np.ndarray):
    """``params -> (loss, grads, forward passes)`` by central differences."""

    def f(params):
        f.calls += 1
        return LOSS(model.apply(params, state, x)[0], y)

    def value_and_grad(params):
        f.calls = 0
        grads = gradcheck.numerical_grad(f, params, eps=1e-6)
        calls = f.calls
        return float(f(params)), grads, calls

    return value_and_grad


def backprop_gradient_fn(model: fnn.Layer, state: Any, x: np.ndarray, y: np.ndarray):
    """``params -> (loss, grads, forward passes)`` by the hand-written backward rules."""
    grad_fn = fnn.value_and_grad(model, LOSS, method="manual")

    def value_and_grad(params):
        (loss, _), grads = grad_fn(params, state, x, y)
        return float(loss), grads, 1

    return value_and_grad


def train_both(steps: int, hidden: int, n: int, lr: float) -> dict[str, list[float]]:
    """Loss per step of gradient descent with numerical and with backprop gradients, same start."""
    model, params0, state, x, y = setup(hidden, n)
    opt = optim.sgd(lr)
    curves = {}
    for name, make in (("numerical", numerical_gradient_fn), ("backprop", backprop_gradient_fn)):
        grad_fn, params, opt_state, curve = make(model, state, x, y), params0, opt.init(params0), []
        for _ in range(steps):
            loss, grads, _ = grad_fn(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optim.apply_updates(params, updates)
            curve.append(loss)
        curves[name] = curve
    return curves


def best_time(fn, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``fn()`` (the least disturbed by other work)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def time_per_gradient(widths: tuple[int, ...], n: int) -> list[dict]:
    """For each hidden width: the parameter count P, the time of one forward pass, and the
    time and forward passes of one gradient by each method."""
    rows = []
    for hidden in widths:
        model, params, state, x, y = setup(hidden, n)
        numerical, backprop = numerical_gradient_fn(model, state, x, y), backprop_gradient_fn(model, state, x, y)
        backprop(params)  # the first call pays for one-off set-up
        row = {"hidden": hidden, "params": sum(p.size for p in fnn.backend.tree_leaves(params)),
               "forward": best_time(lambda: LOSS(model.apply(params, state, x)[0], y), 20),
               "backprop": best_time(lambda: backprop(params), 10)}
        start = time.perf_counter()  # one numerical gradient: itself 2P forward passes, timed once
        row["numerical_forwards"] = numerical(params)[2]
        row["numerical"] = time.perf_counter() - start
        rows.append(row)
    return rows


def slope(xs, ys) -> float:
    """The least-squares slope of log(ys) against log(xs): the power of the growth."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def plot(curves: dict, rows: list[dict], hidden: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, style in (("numerical", dict(linewidth=4, alpha=0.5)), ("backprop", dict(linestyle="--"))):
        left.plot(range(1, len(curves[name]) + 1), curves[name], label=f"{name} gradients", **style)
    gap = max(abs(a - b) for a, b in zip(*curves.values()))
    left.text(0.35, 0.85, f"the curves lie on each other:\nlargest difference {gap:.1e}", transform=left.transAxes,
              fontsize=9)
    left.set_xlabel("gradient-descent step (full batch)")
    left.set_ylabel("train loss (cross-entropy)")
    left.set_title(f"training a 64-{hidden}-10 MLP on 200 digits, float64")
    left.legend()
    params = np.array([r["params"] for r in rows])
    for name, marker in (("numerical", "o"), ("backprop", "s")):
        seconds = np.array([r[name] for r in rows])
        right.loglog(params, seconds * 1e3, marker=marker,
                     label=f"{name}: time ~ P^{slope(params, seconds):.1f}")
    forward = np.array([r["forward"] for r in rows])
    right.loglog(params, 2 * params * forward * 1e3, "k:", label="2P forward passes alone")
    right.set_xlabel("number of parameters P (hidden width grows)")
    right.set_ylabel("time of one gradient (ms, log scale)")
    right.set_title("cost: finite differences need 2P forward passes")
    right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.grid(alpha=0.3, which="both")
    right.legend()
    fig.suptitle("Numerical differentiation vs backpropagation (NumPy)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="numerical_gradient.png")
    parser.add_argument("--quick", action="store_true",
                        help="the test's size: 4 steps of a 64-3-10 MLP, widths 1 to 8 timed")
    parser.add_argument("--steps", type=int, default=None, help="gradient-descent steps (default 60, 4 with --quick)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden width trained (default 10, 3 with --quick)")
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="hidden widths timed (default 2 4 8 16 32 64; 1 2 4 8 with --quick)")
    args = parser.parse_args(argv)
    steps = args.steps or (4 if args.quick else 60)
    hidden = args.hidden or (3 if args.quick else 10)
    widths = tuple(args.widths or ((1, 2, 4, 8) if args.quick else (2, 4, 8, 16, 32, 64)))

    curves = train_both(steps, hidden=hidden, n=200, lr=args.lr)
    gap = max(abs(a - b) for a, b in zip(curves["numerical"], curves["backprop"]))
    print(f"training a 64-{hidden}-10 MLP, {steps} steps of gradient descent (lr {args.lr:g}) with each gradient:")
    print(f"  loss {curves['backprop'][0]:.4f} -> {curves['backprop'][-1]:.4f} (backprop), "
          f"{curves['numerical'][0]:.4f} -> {curves['numerical'][-1]:.4f} (numerical)")
    print(f"largest difference between the two loss curves: {gap:.2e}")
    rows = time_per_gradient(widths, n=200)
    print(f"{'hidden':>6s} {'params':>7s} {'forward ms':>10s} {'numerical ms':>13s} {'= forwards x':>12s} "
          f"{'backprop ms':>12s} {'numerical / backprop':>21s}")
    for r in rows:
        print(f"{r['hidden']:6d} {r['params']:7d} {r['forward'] * 1e3:10.3f} {r['numerical'] * 1e3:13.2f} "
              f"{r['numerical'] / r['forward']:12.0f} {r['backprop'] * 1e3:12.3f} "
              f"{r['numerical'] / r['backprop']:21.0f}")
    params = [r["params"] for r in rows]
    print(f"time ~ P^{slope(params, [r['numerical'] for r in rows]):.2f} (numerical) "
          f"vs P^{slope(params, [r['backprop'] for r in rows]):.2f} (backprop)")
    plot(curves, rows, hidden, args.out)
    print(f"saved {args.out}")
    return {"curves": curves, "gap": gap, "timings": rows}


if __name__ == "__main__":
    main()
