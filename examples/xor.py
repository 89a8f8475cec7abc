"""XOR: a single neuron cannot learn it, a network with one hidden layer can.

Logistic regression (one dense unit + sigmoid) draws a straight line, and no
straight line separates XOR's classes: the best it can do under the
cross-entropy loss is to output 0.5 for every point (w = 0, b = 0), a coin
flip, reported as 50% accuracy (a prediction within 0.01 of 0.5 counts as
half right rather than as whichever side rounding noise puts it on). A
hidden layer bends the boundary and reaches 100%.

The two models are trained twice: with hand-written backpropagation on NumPy
alone, and with ``jax.grad`` inside a ``jax.jit``-compiled step on JAX. The
script prints the four final accuracies and saves the decision boundaries.

    python examples/xor.py --out xor.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fnn
from fnn import layers as L
from fnn import losses, optim

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([[0], [1], [1], [0]], dtype=np.float32)


def perceptron_gates() -> dict[str, np.ndarray]:
    """AND, OR and NAND as single perceptrons (dense + step) with hand-set
    weights, and XOR as a two-layer network of them: XOR = AND(NAND, OR)."""
    perceptron = L.serial(L.dense(1), L.step)

    def gate(w1, w2, b):
        return {"dense": {"w": np.array([[w1], [w2]], np.float32), "b": np.array([b], np.float32)}, "step": {}}

    state = {"dense": {}, "step": {}}
    gates = {"AND": gate(0.5, 0.5, -0.7), "OR": gate(0.5, 0.5, -0.2), "NAND": gate(-0.5, -0.5, 0.7)}
    out = {name: perceptron.apply(p, state, X)[0][:, 0] for name, p in gates.items()}
    hidden = np.stack([out["NAND"], out["OR"]], axis=1)
    out["XOR"] = perceptron.apply(gates["AND"], state, hidden)[0][:, 0]
    return out


def logistic_regression() -> fnn.Layer:
    """One affine unit; the sigmoid lives in the loss (binary cross-entropy from logits)."""
    return L.serial(L.dense(1), name="logistic_regression")


def two_layer_net(hidden: int = 8) -> fnn.Layer:
    return L.serial(L.dense(hidden, w_init=fnn.initializers.glorot_normal()), L.tanh, L.dense(1), name="two_layer_net")


def train(model: fnn.Layer, backend: str, *, steps: int = 2000, lr: float = 0.05, seed: int = 0):
    """Full-batch Adam on the four XOR points; returns (params, state, accuracy)."""
    params, state = model.init(fnn.key(seed, backend=backend), X.shape)
    opt = optim.adam(lr)
    opt_state = opt.init(params)
    method = "manual" if backend == "numpy" else "autodiff"
    grad_fn = fnn.value_and_grad(model, losses.sigmoid_binary_cross_entropy, method)

    def step(params, state, opt_state, x, y):
        (loss, state), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), state, opt_state, loss

    x, y = X, Y
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        step = jax.jit(step)
        x, y = jnp.asarray(X), jnp.asarray(Y)
    for _ in range(steps):
        params, state, opt_state, loss = step(params, state, opt_state, x, y)
    logits, _ = model.apply(params, state, x)
    return params, state, accuracy(np.asarray(logits))


def accuracy(logits: np.ndarray, undecided: float = 0.01) -> float:
    """The fraction of the four points classified right, where a probability within
    ``undecided`` of 0.5 is a coin flip and counts as half right."""
    prob = fnn.functional.sigmoid(logits.astype(np.float64))
    right = np.where((prob > 0.5) == (Y > 0.5), 1.0, 0.0)
    return float(np.mean(np.where(np.abs(prob - 0.5) < undecided, 0.5, right)))


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-0.5, 1.5, 200, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 5), layout="constrained")
    for ax, (title, (model, params, state, acc)) in zip(np.atleast_1d(axes), results.items()):
        logits, _ = model.apply(fnn.backend.to_numpy(params), fnn.backend.to_numpy(state), points)
        prob = fnn.functional.sigmoid(np.asarray(logits)).reshape(gx.shape)
        ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.8, vmin=0, vmax=1)
        ax.contour(gx, gy, prob, levels=[0.5], colors="k")
        for label, color in ((0, "tab:blue"), (1, "tab:red")):
            chosen = Y[:, 0] == label
            ax.scatter(X[chosen, 0], X[chosen, 1], color=color, edgecolors="k", s=120, label=f"XOR = {label}")
        ax.plot([], [], "k-", label="boundary p = 0.5")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.legend(loc="upper center", fontsize=8, framealpha=0.9)
        ax.set_title(f"{title}: accuracy {acc:.0%}\noutput p from {prob.min():.3f} to {prob.max():.3f}")
    fig.colorbar(plt.cm.ScalarMappable(cmap="RdBu_r", norm=plt.Normalize(0, 1)), ax=axes,
                 label="predicted probability of XOR = 1")
    fig.suptitle("XOR: logistic regression (no hidden layer) vs one hidden layer of 8 tanh units")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="xor.png", help="where to save the decision-boundary plot")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print("perceptrons with hand-set weights (x1, x2 = 00 01 10 11):")
    for name, column in perceptron_gates().items():
        print(f"  {name:5s} {column.astype(int)}")
    print()

    backends = ["numpy"] + (["jax"] if fnn.backend.HAS_JAX else [])
    accuracies, to_plot = {}, {}
    print(f"{'model':22s} {'backend / gradients':28s} {'accuracy':>8s} {'time':>7s}")
    for backend in backends:
        how = "numpy / manual backprop" if backend == "numpy" else "jax / autodiff under jit"
        for build in (logistic_regression, two_layer_net):
            model = build()
            start = time.perf_counter()
            params, state, acc = train(model, backend, steps=args.steps, seed=args.seed)
            seconds = time.perf_counter() - start
            accuracies[(model.name, backend)] = acc
            print(f"{model.name:22s} {how:28s} {acc:8.0%} {seconds:6.2f}s")
            if backend == "numpy":
                to_plot[model.name] = (model, params, state, acc)
    plot(to_plot, args.out)
    print(f"decision boundaries saved to {args.out}")
    return accuracies


if __name__ == "__main__":
    main()
