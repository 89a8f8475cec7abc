"""Weight initialisation: how the scale of the initial weights shapes the
activations of a deep network, and whether it learns at all.

Part 1 (activation histograms). 1,000 random inputs go through five dense
layers of 100 units, with sigmoid or ReLU after each, for four initial
weight scales:

* std 1: sigmoid units saturate at 0 and 1, where their gradient vanishes;
* std 0.01: every sigmoid output sits near 0.5 (the units all compute the
  same thing), and ReLU activations shrink towards 0 layer after layer;
* Xavier (Glorot, std sqrt(1 / n) for square layers): the sigmoid
  activations stay spread out in every layer;
* He (std sqrt(2 / n)): the same for ReLU, whose half-zero outputs need twice
  the variance.

Part 2 (training). The same five-layer ReLU network is trained on the
bundled digits with SGD from std 0.01, Xavier and He initial weights; the
loss curves show std 0.01 barely moving while He learns fastest.

Both parts are saved side by side in one PNG.

    python examples/initialization.py --out initialization.png
"""

from __future__ import annotations

import argparse

import numpy as np

import fnn
from fnn import initializers, losses, optim, train
from fnn import layers as L

INITS = {
    "std 1": initializers.normal(1.0),
    "std 0.01": initializers.normal(0.01),
    "Xavier": initializers.glorot_normal(),
    "He": initializers.he_normal(),
}
ACTIVATIONS = {"sigmoid": L.sigmoid, "relu": L.relu}


def activations(activation: fnn.Layer, w_init, *, layers: int = 5, width: int = 100, n: int = 1000, seed: int = 0):
    """The outputs of each of ``layers`` (dense -> activation) blocks for random normal inputs."""
    key = fnn.key(seed, backend="numpy")
    x = np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)
    outputs = []
    for i in range(layers):
        block = L.serial(L.dense(width, w_init=w_init), activation)
        params, state = block.init(fnn.fold_in(key, i), x.shape)
        x, _ = block.apply(params, state, x)
        outputs.append(x)
    return outputs


def with_init(params: dict, w_init, key) -> dict:
    """``params`` with every weight matrix ``w`` redrawn from ``w_init`` (biases
    unchanged): initialisation is just a function of shapes."""
    leaves = fnn.backend.tree_leaves_with_path(params)
    new = [w_init(fnn.fold_in(key, i), leaf.shape, leaf.dtype) if path.endswith("/w") else leaf
           for i, (path, leaf) in enumerate(leaves)]
    return fnn.backend.tree_unflatten(fnn.backend.tree_structure(params), new)


def train_curves(epochs: int, backend: str, n_train: int | None = None, seed: int = 0) -> dict[str, list[float]]:
    """Train loss per epoch of a 5-layer ReLU MLP on the digits for three initialisations.

    One model and one optimizer for every run, so the compiled epoch is reused:
    only the params differ."""
    x, y = fnn.data.load_digits(images=False)
    x, y = x[:n_train], y[:n_train]
    model = L.serial(*[layer for _ in range(5) for layer in (L.dense(100), L.relu)], L.dense(10))
    opt = optim.sgd(0.05)
    curves = {}
    for name in ("std 0.01", "Xavier", "He"):
        key = fnn.key(seed, backend=backend)
        ts = train.init_state(model, opt, key, x.shape)
        params = with_init(ts.params, INITS[name], fnn.fold_in(key, 1))
        ts = ts._replace(params=params, opt_state=opt.init(params))
        _, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=epochs,
                               batch_size=100, progress=False)
        curves[name] = history["train_loss"]
    return curves


def plot(hists: dict, curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(20, 7.5))
    grid = fig.add_gridspec(2, 5)
    colors = plt.cm.viridis(np.linspace(0, 0.9, 5))
    for row, act in enumerate(ACTIVATIONS):
        for col, init in enumerate(INITS):
            ax = fig.add_subplot(grid[row, col])
            # ReLU: the positive outputs only (about half are exactly 0), on a range shared by the layers
            values = [a.ravel() if act == "sigmoid" else a[a > 0] for a in hists[act, init]]
            upper = 1.0 if act == "sigmoid" else max(max(float(np.percentile(v, 99)) for v in values if v.size), 1e-12)
            for layer, (v, c) in enumerate(zip(values, colors)):
                ax.hist(v, bins=30, range=(0, upper), histtype="step", color=c, label=f"layer {layer + 1}")
            ax.set_title(f"{act}, {init}" + (" (outputs > 0)" if act == "relu" else ""))
            ax.set_yticks([])
            ax.locator_params(axis="x", nbins=4)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[:, 4])
    for name, losses_ in curves.items():
        ax.plot(range(1, len(losses_) + 1), losses_, marker="o", markersize=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.set_title("5-layer ReLU MLP on digits, SGD")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="initialization.png")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-size", type=int, default=None, help="train on the first N digits only")
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax" if fnn.backend.HAS_JAX else "numpy")
    args = parser.parse_args(argv)

    hists, spread = {}, {}
    print("standard deviation of each layer's activations (1,000 random inputs):")
    print(f"{'activation':10s} {'init':9s} " + " ".join(f"{'layer ' + str(i + 1):>8s}" for i in range(5)))
    for act_name, act in ACTIVATIONS.items():
        for init_name, w_init in INITS.items():
            outs = activations(act, w_init)
            hists[act_name, init_name] = outs
            spread[act_name, init_name] = [float(np.std(a)) for a in outs]
            print(f"{act_name:10s} {init_name:9s} " + " ".join(f"{s:8.4f}" for s in spread[act_name, init_name]))

    print(f"\ntraining a 5-layer ReLU MLP on the digits for {args.epochs} epochs ({args.backend}):")
    curves = train_curves(args.epochs, args.backend, args.train_size)
    for name, values in curves.items():
        print(f"  {name:9s} train loss {values[0]:.3f} -> {values[-1]:.3f}")
    plot(hists, curves, args.out)
    print(f"saved {args.out}")
    return {"spread": spread, "curves": curves}


if __name__ == "__main__":
    main()
