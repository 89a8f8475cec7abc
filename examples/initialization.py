"""Weight initialisation: how the scale of the initial weights shapes the
activations of a deep network, and whether it learns at all.

Part 1 (activation histograms). 1,000 random inputs go through five dense
layers of 100 units, with sigmoid or ReLU after each, for five initial
weight scales:

* std 1: sigmoid units saturate at 0 and 1, where their gradient vanishes;
* std 0.01: every sigmoid output sits near 0.5 (the units all compute the
  same thing), and ReLU activations shrink towards 0 layer after layer;
* LeCun, std ``1 / sqrt(n_in)``: what the notes call "Xavier" (a standard
  deviation of 1/sqrt(n) for n nodes in the previous layer), i.e.
  ``fnn.initializers.lecun_normal``: the sigmoid activations stay spread out;
* Glorot, std ``sqrt(2 / (n_in + n_out))``: the Xavier initialisation of
  Glorot and Bengio's paper (``glorot_normal``); for these square layers it
  equals LeCun's, for any other shape it differs (panel 3);
* He, std ``sqrt(2 / n_in)``: the right scale for ReLU, whose half-zero
  outputs need twice the variance.

Part 2 (training). A five-layer ReLU network is trained on the bundled
digits with SGD from std 0.01, LeCun, Glorot and He initial weights; the loss
curves show std 0.01 barely moving while He learns fastest.

Part 3 (the three rules). The standard deviation each rule gives a dense
layer of ``n_in`` inputs and 100 outputs, measured on drawn weights against
the formula: LeCun and He fall as ``1/sqrt(n_in)``, Glorot depends on both
fans and meets LeCun at ``n_in = n_out``.

The panels are saved in one PNG. The default run takes about 7 s of CPU
time (31 s of wall time on a busy 2-core machine).

    python examples/initialization.py
    python examples/initialization.py --quick
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
    "LeCun": initializers.lecun_normal(),  # the notes' "Xavier": std 1/sqrt(n_in)
    "Glorot": initializers.glorot_normal(),  # Glorot & Bengio's Xavier: std sqrt(2/(n_in + n_out))
    "He": initializers.he_normal(),
}
LABELS = {  # how the panels name each rule
    "std 1": "std 1",
    "std 0.01": "std 0.01",
    "LeCun": "LeCun 1/√n_in (notes' Xavier)",
    "Glorot": "Glorot √(2/(n_in+n_out))",
    "He": "He √(2/n_in)",
}
RULES = {  # the standard deviation each rule prescribes for a (n_in, n_out) matrix
    "LeCun": lambda n_in, n_out: 1 / np.sqrt(n_in),
    "Glorot": lambda n_in, n_out: np.sqrt(2 / (n_in + n_out)),
    "He": lambda n_in, n_out: np.sqrt(2 / n_in),
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
    """Train loss per epoch of a 5-layer ReLU MLP on the digits for four initialisations.

    One model and one optimizer for every run, so the compiled epoch is reused:
    only the params differ."""
    x, y = fnn.data.load_digits(images=False)
    x, y = x[:n_train], y[:n_train]
    model = L.serial(*[layer for _ in range(5) for layer in (L.dense(100), L.relu)], L.dense(10))
    opt = optim.sgd(0.05)
    curves = {}
    for name in ("std 0.01", "LeCun", "Glorot", "He"):
        key = fnn.key(seed, backend=backend)
        ts = train.init_state(model, opt, key, x.shape)
        params = with_init(ts.params, INITS[name], fnn.fold_in(key, 1))
        ts = ts._replace(params=params, opt_state=opt.init(params))
        _, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=epochs,
                               batch_size=100, progress=False)
        curves[name] = history["train_loss"]
    return curves


def rule_stds(fan_ins: tuple[int, ...] = (10, 30, 100, 300, 1000), fan_out: int = 100, seed: int = 0) -> dict:
    """``{rule: [(n_in, measured std, formula std), ...]}`` for dense(fan_out) weights of each fan-in."""
    key = fnn.key(seed, backend="numpy")
    return {name: [(n_in, float(np.std(INITS[name](fnn.fold_in(key, n_in), (n_in, fan_out)))),
                    float(rule(n_in, fan_out))) for n_in in fan_ins]
            for name, rule in RULES.items()}


def plot(hists: dict, curves: dict, stds: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(23, 8))
    grid = fig.add_gridspec(2, 6)
    colors = plt.cm.viridis(np.linspace(0, 0.9, 5))
    for row, act in enumerate(ACTIVATIONS):
        for col, init in enumerate(INITS):
            ax = fig.add_subplot(grid[row, col])
            # ReLU: the positive outputs only (about half are exactly 0), on a range shared by the layers
            values = [a.ravel() if act == "sigmoid" else a[a > 0] for a in hists[act, init]]
            upper = 1.0 if act == "sigmoid" else max(max(float(np.percentile(v, 99)) for v in values if v.size), 1e-12)
            for layer, (v, c) in enumerate(zip(values, colors)):
                counts, edges = np.histogram(v, bins=30, range=(0, upper))
                ax.stairs(counts, edges, color=c, label=f"layer {layer + 1}")
            ax.set_title(f"{act}, {LABELS[init]}", fontsize=10)
            ax.set_xlabel(f"{act} output" + (" (> 0 only)" if act == "relu" else ""))
            ax.set_ylabel("count (of 100,000 units)")
            ax.locator_params(axis="x", nbins=4)
            ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4))
            ax.legend(fontsize=7, title="5 x dense(100)", title_fontsize=7)
    ax = fig.add_subplot(grid[0, 5])
    for name, losses_ in curves.items():
        ax.plot(range(1, len(losses_) + 1), losses_, marker="o", markersize=3, label=LABELS[name])
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (cross-entropy)")
    ax.set_title("5-layer ReLU MLP on digits, SGD", fontsize=10)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, 5])
    for name, rows in stds.items():
        n_in, measured, formula = (np.array(c) for c in zip(*rows))
        line, = ax.plot(n_in, formula, label=f"{LABELS[name]} (formula)")
        ax.plot(n_in, measured, "o", color=line.get_color(), markersize=4)
    ax.plot([], [], "ko", markersize=4, label="measured std of drawn weights")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n_in (a dense layer with n_out = 100)")
    ax.set_ylabel("std of the initial weights")
    ax.set_title("Glorot meets LeCun at n_in = n_out", fontsize=10)
    ax.legend(fontsize=7)
    fig.suptitle("Initialisation: activations of 5 layers of 100 units (1,000 random inputs), training, and the rules")
    fig.subplots_adjust(left=0.035, right=0.99, bottom=0.07, top=0.9, wspace=0.4, hspace=0.35)  # cheaper than tight
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="initialization.png")
    parser.add_argument("--quick", action="store_true", help="the test's size: 3 epochs on 300 digits")
    parser.add_argument("--epochs", type=int, default=None, help="default 15 (3 with --quick)")
    parser.add_argument("--train-size", type=int, default=None, help="train on the first N digits (300 with --quick)")
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax" if fnn.backend.HAS_JAX else "numpy")
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 15)
    train_size = args.train_size or (300 if args.quick else None)

    hists, spread = {}, {}
    print("standard deviation of each layer's activations (1,000 random inputs):")
    print(f"{'activation':10s} {'init':9s} " + " ".join(f"{'layer ' + str(i + 1):>8s}" for i in range(5)))
    for act_name, act in ACTIVATIONS.items():
        for init_name, w_init in INITS.items():
            outs = activations(act, w_init)
            hists[act_name, init_name] = outs
            spread[act_name, init_name] = [float(np.std(a)) for a in outs]
            print(f"{act_name:10s} {init_name:9s} " + " ".join(f"{s:8.4f}" for s in spread[act_name, init_name]))

    stds = rule_stds()
    print("\nstd of the initial weights of a dense layer (n_in -> 100), measured (formula):")
    print(f"{'n_in':>6s} " + " ".join(f"{LABELS[name]:>32s}" for name in stds))
    for i, n_in in enumerate(rows[0] for rows in zip(*stds.values())):
        print(f"{n_in[0]:6d} " + " ".join(f"{rows[i][1]:21.4f} ({rows[i][2]:.4f})" for rows in stds.values()))

    print(f"\ntraining a 5-layer ReLU MLP on the digits for {epochs} epochs ({args.backend}):")
    curves = train_curves(epochs, args.backend, train_size)
    for name, values in curves.items():
        print(f"  {name:9s} train loss {values[0]:.3f} -> {values[-1]:.3f}")
    plot(hists, curves, stds, args.out)
    print(f"saved {args.out}")
    return {"spread": spread, "curves": curves, "stds": stds}


if __name__ == "__main__":
    main()
