"""SGD's zig-zag, and how Momentum, AdaGrad, RMSProp and Adam avoid it.

Every optimizer minimises ``f(x, y) = x**2 / 20 + y**2`` from ``(-7, 2)``; the
minimum is at the origin. The function is 20 times steeper along ``y`` than
along ``x`` (curvatures 2 and 0.1), and one learning rate must suit both:

* SGD: along ``y`` a step multiplies ``y`` by ``1 - 2 lr``, so ``lr`` must stay
  below 1 or ``y`` diverges. At ``lr = 0.95`` (about the best SGD can do here)
  ``y`` overshoots and flips sign at every step (the zig-zag), while along ``x``
  each step only removes ``lr / 10`` of the remaining distance.
* Momentum, at the same learning rate: the velocity sums successive gradients,
  so the alternating ``y`` components cancel and the steady ``x`` components add
  up. (Momentum 0.9, the usual default for noisy mini-batch gradients, is too
  slow to damp on this small deterministic problem; 0.5 is close to the
  theoretical optimum for a condition number of 20.)
* AdaGrad, RMSProp, Adam divide each coordinate's step by the size of its own
  gradients, so both coordinates advance at a similar pace: the path heads
  almost straight for the minimum. Adam moves about ``lr`` per step per
  coordinate (7 units at 0.3 take ~23 steps), and its momentum then overshoots
  and circles the minimum: after 30 steps it is about as close as SGD, along a
  path four times shorter.

The table gives, after N steps, the distance to the minimum and the length of
the path walked (the straight line from the start is 7.3 long). Runs on the
NumPy backend; no JAX needed.

    python examples/optimizers.py --out optimizers.png --steps 30
"""

from __future__ import annotations

import argparse

import numpy as np

from fnn import optim

START = (-7.0, 2.0)

OPTIMIZERS = [
    ("SGD", "lr=0.95", optim.sgd(0.95)),
    ("Momentum", "lr=0.95, momentum=0.5", optim.sgd(0.95, momentum=0.5)),
    ("AdaGrad", "lr=1.5", optim.adagrad(1.5)),
    ("RMSProp", "lr=0.3, decay=0.9", optim.rmsprop(0.3, decay=0.9)),
    ("Adam", "lr=0.3", optim.adam(0.3)),
]


def f(x, y):
    return x**2 / 20.0 + y**2


def grad_f(params: dict) -> dict:
    return {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}


def descend(opt: optim.GradientTransformation, steps: int) -> np.ndarray:
    """The points visited, shape (steps + 1, 2)."""
    params = {"x": np.array(START[0]), "y": np.array(START[1])}
    state = opt.init(params)
    path = [START]
    for _ in range(steps):
        updates, state = opt.update(grad_f(params), state, params)
        params = optim.apply_updates(params, updates)
        path.append((float(params["x"]), float(params["y"])))
    return np.array(path)


def plot(paths: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 100))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (name, path) in zip(axes.flat, paths.items()):
        ax.contour(xs, ys, f(xs, ys), levels=np.geomspace(0.05, 25, 12), colors="0.75", linewidths=0.8)
        ax.plot(path[:, 0], path[:, 1], "o-", color="tab:red", markersize=3, linewidth=1)
        ax.plot(0, 0, "+", color="black", markersize=10)
        ax.set(title=name, xlim=(-10, 10), ylim=(-5, 5), xlabel="x", ylabel="y")
    ax = axes.flat[len(paths)]
    for name, path in paths.items():
        ax.semilogy(np.maximum(np.hypot(path[:, 0], path[:, 1]), 1e-12), label=name)
    ax.set(title="distance to the minimum", xlabel="step")
    ax.legend()
    fig.suptitle("f(x, y) = x²/20 + y² from (-7, 2)")
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="optimizers.png", help="where to save the plot (PNG)")
    parser.add_argument("--steps", type=int, default=30, help="number of updates per optimizer")
    args = parser.parse_args(argv)

    paths = {name: descend(opt, args.steps) for name, _, opt in OPTIMIZERS}
    print(
        f"f(x, y) = x**2/20 + y**2 from {START}, {args.steps} steps; straight line to the minimum: {np.hypot(*START):.1f}"
    )
    print(f"{'optimizer':<10}{'settings':<24}{'distance':>12}{'path length':>13}")
    results = {}
    for name, settings, _ in OPTIMIZERS:
        path = paths[name]
        distance = float(np.hypot(*path[-1]))
        length = float(np.sum(np.hypot(*np.diff(path, axis=0).T)))
        results[name] = (distance, length)
        print(f"{name:<10}{settings:<24}{distance:>12.3g}{length:>13.1f}")
    plot(paths, args.out)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
