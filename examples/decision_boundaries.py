"""Decision boundaries of 0 to 3 hidden layers, and one hidden layer approximating a curve.

Part 1 (depth). Two interleaved spirals (two classes, 2-D points drawn with a
fixed seed) are classified by networks of 0, 1, 2 and 3 hidden layers of 6
tanh units, each trained the same way (Adam, full batch, 2,000 steps). With no hidden layer
the network is logistic regression: one straight boundary, about half the
points right. One hidden layer of 6 units bends the boundary but cannot follow
two turns of the arms; a second layer folds the bent boundary again, and it
classifies every training point.

Part 2 (width: the universal approximation theorem). One hidden layer of
``n`` tanh units fits ``f(x) = sin(2x) + 0.3 x`` on ``[-3, 3]``. The fitted
curve is a sum of ``n`` shifted and scaled tanh steps, so a wider layer has
more steps to place: the maximum error falls as the width grows. (Each width
keeps the best of a few random starts: the theorem promises that a good fit
exists, not that every start finds it.)

Everything runs on NumPy (networks this small train faster eagerly than
they compile): the hand-written backward rules, ``fnn.value_and_grad(method="manual")``.

    python examples/decision_boundaries.py [--quick] [--out decision_boundaries.png]

The default run takes about 35 seconds (12 s of CPU time) on 2 busy CPU
cores (``--quick``: a few). It prints::

    spirals training accuracy: 0 hidden 0.65, 1 hidden 0.87, 2 hidden 1.00, 3 hidden 1.00
    max |error| of one hidden layer: width 1 0.78, width 2 0.72, width 4 0.42, ..., width 32 0.03
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import fnn
import fnn.models
import fnn.optim
from fnn import layers as L

SETTINGS = {
    "default": dict(points=200, turns=2.0, depth_steps=2000, widths=(1, 2, 4, 8, 16, 32), width_steps=2000,
                    width_lr=0.01, restarts=3),
    "quick": dict(points=100, turns=1.75, depth_steps=800, widths=(1, 4, 16), width_steps=800, width_lr=0.02,
                  restarts=1),
}
HIDDEN = 6


def two_spirals(points_per_class: int, turns: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x (2 * points_per_class, 2)`` float32 and labels ``y`` (0 and 1): two arms of a spiral,
    the second the first turned by 180 degrees, with a little Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.02, 1.0, points_per_class)) * turns * 2 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (turns * 2 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0.0, 0.03, (2 * points_per_class, 2))
    y = np.repeat(np.array([0, 1], np.int32), points_per_class)
    return (2.0 * x).astype(np.float32), y


def fit_full_batch(model: fnn.Layer, loss: Any, x: np.ndarray, y: np.ndarray, *, steps: int, lr: float,
                   seed: int) -> tuple[Any, Any, list[float]]:
    """Adam on the whole set for ``steps`` steps; returns ``(params, state, losses)``."""
    params, state = model.init(np.random.default_rng(seed), (None, *x.shape[1:]))
    opt = fnn.optim.adam(lr)
    opt_state = opt.init(params)
    grad_fn = fnn.value_and_grad(model, loss, method="manual")
    losses = []
    for _ in range(steps):
        (value, state), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = fnn.optim.apply_updates(params, updates)
        losses.append(float(value))
    return params, state, losses


def classifier(hidden_layers: int) -> fnn.Layer:
    """``hidden_layers`` dense(6) + tanh layers, then 2 logits (0 hidden layers: logistic regression)."""
    return fnn.models.mlp((HIDDEN,) * hidden_layers, 2, activation=L.tanh)


def approximator(width: int) -> fnn.Layer:
    return L.serial(L.dense(width), L.tanh, L.dense(1))


def target_function(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * x) + 0.3 * x


def run(*, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Train every network; returns the data, the grids of predictions and the measured numbers."""
    cfg = SETTINGS["quick" if quick else "default"]
    start = time.perf_counter()
    x, y = two_spirals(cfg["points"], cfg["turns"], seed)
    lim = float(np.abs(x).max()) * 1.1
    grid = np.stack(np.meshgrid(np.linspace(-lim, lim, 150), np.linspace(-lim, lim, 150)), -1).astype(np.float32)
    depth = {}
    for hidden_layers in range(4):
        model = classifier(hidden_layers)
        params, state, losses = fit_full_batch(model, fnn.losses.softmax_cross_entropy, x, y,
                                               steps=cfg["depth_steps"], lr=0.02, seed=seed)
        logits = model.apply(params, state, x)[0]
        probability = fnn.functional.softmax(model.apply(params, state, grid.reshape(-1, 2))[0])[:, 1]
        depth[hidden_layers] = {"accuracy": float(np.mean(np.argmax(logits, -1) == y)), "losses": losses,
                                "probability": probability.reshape(grid.shape[:2])}

    xs = np.linspace(-3, 3, 200, dtype=np.float32)[:, None]
    dense_xs = np.linspace(-3, 3, 1000, dtype=np.float32)[:, None]
    width = {}
    for n in cfg["widths"]:
        model = approximator(n)
        fits = []  # the theorem says a good fit exists: the best of a few starts measures that, not one start's luck
        for restart in range(cfg["restarts"]):
            params, state, _ = fit_full_batch(model, fnn.losses.mse, xs, target_function(xs),
                                              steps=cfg["width_steps"], lr=cfg["width_lr"],
                                              seed=seed + restart)
            prediction = model.apply(params, state, dense_xs)[0]
            fits.append({"curve": prediction[:, 0],
                         "max_error": float(np.max(np.abs(prediction - target_function(dense_xs))))})
        width[n] = min(fits, key=lambda fit: fit["max_error"])
    return {"x": x, "y": y, "grid": grid, "depth": depth, "xs": dense_xs[:, 0], "width": width,
            "seconds": time.perf_counter() - start}


def report(r: dict[str, Any]) -> str:
    """The measured results as plain lines."""
    accuracy = ", ".join(f"{k} hidden {v['accuracy']:.2f}" for k, v in r["depth"].items())
    errors = ", ".join(f"width {n} {v['max_error']:.2f}" for n, v in r["width"].items())
    return "\n".join([f"spirals training accuracy: {accuracy}", f"max |error| of one hidden layer: {errors}",
                      f"({r['seconds']:.0f} s)"])


def plot(r: dict[str, Any], path: str) -> None:
    """Four boundary panels above, the approximations and their error below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 7.5))
    grid_spec = fig.add_gridspec(2, 4, height_ratios=(1.1, 1))
    x, y, grid = r["x"], r["y"], r["grid"]
    for k, result in r["depth"].items():
        ax = fig.add_subplot(grid_spec[0, k])
        shading = ax.contourf(grid[..., 0], grid[..., 1], result["probability"], levels=np.linspace(0, 1, 11),
                              cmap="RdBu_r", alpha=0.6)
        ax.contour(grid[..., 0], grid[..., 1], result["probability"], levels=[0.5], colors="k", linewidths=1)
        for label, color in ((0, "tab:blue"), (1, "tab:red")):
            ax.scatter(*x[y == label].T, s=6, color=color, label=f"class {label}")
        ax.set_title(f"{k} hidden layer{'s' if k != 1 else ''}: {result['accuracy']:.0%} right", fontsize=10)
        ax.set(xlabel="x1", ylabel="x2" if k == 0 else None, aspect="equal")
        if k == 0:
            ax.legend(fontsize=7, loc="lower left")
    fig.colorbar(shading, ax=fig.axes[:4], shrink=0.8, label="P(class 1)")

    ax = fig.add_subplot(grid_spec[1, :2])
    ax.plot(r["xs"], target_function(r["xs"]), "k", linewidth=3, alpha=0.4, label="f(x) = sin(2x) + 0.3x")
    for n, result in r["width"].items():
        ax.plot(r["xs"], result["curve"], linewidth=1, label=f"width {n}")
    ax.set(title="One hidden layer of n tanh units", xlabel="x", ylabel="f(x) and the network's fit")
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(grid_spec[1, 2:])
    widths = list(r["width"])
    ax.loglog(widths, [r["width"][n]["max_error"] for n in widths], "o-", label="max |fit - f| on [-3, 3]")
    ax.set(title="Universal approximation: the error falls with width", xlabel="hidden units n",
           ylabel="max |error|")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small version the tests run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="decision_boundaries.png", help="where to save the PNG")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, seed=args.seed)
    print(report(results))
    plot(results, args.out)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
