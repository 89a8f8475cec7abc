"""Batch normalisation's effect: training with and without batch norm over a
grid of initial weight scales (the notes' 16-panel figure).

The book's experiment: a network of five hidden ReLU layers of 100 units
trained by SGD (learning rate 0.01, mini-batches of 100) on 1,000 training
images, once as it is and once with a batch-norm layer before every
activation, for 16 standard deviations of the initial weights from 1 down to
1e-4 (``logspace(0, -4, 16)``). Without batch norm the scale decides
everything: too large and the activations and gradients explode, too small and
they vanish, and the network only learns in a narrow band of scales. With batch
norm every layer's input is renormalised whatever the weights' scale, so the
network learns at every scale, and faster.

The measured default run (1,000 digits, 20 epochs, 32 runs; about 35 s of wall
time on 2 busy CPU cores): with batch norm the final training accuracy reaches
90 % at 9 of the 16 scales (0.16 down to 0.0012), and is above the plain
network's at 14; without it only 2 scales (0.29 and 0.16, around He's
``sqrt(2 / 100) = 0.14``) learn at all, the two largest diverge and every scale
below 0.09 stays at chance (0.10). Batch norm does not make the speed
independent of the scale: a weight's gradient behind batch norm scales as
``1 / std``, so its relative update as ``lr / std**2``: the largest scales
learn slowly. At the smallest scales (below about 1e-3) the pre-activations'
batch variance (``~64 * 0.1 * std**2`` in the first layer) falls below batch
norm's ``eps = 1e-5``, which then dominates ``sqrt(var + eps)``: the layer no
longer rescales its input to unit variance, and the signal fades again.

    python examples/batch_norm_scales.py --out batch_norm_scales.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fnn
from fnn import data, losses, optim, train


def network(normalize: bool, width: int = 100, hidden_layers: int = 5) -> fnn.Layer:
    """Five hidden ReLU layers (``dense -> [batch_norm] -> relu``) and a 10-way output."""
    return fnn.models.mlp((width,) * hidden_layers, num_classes=10, normalize=normalize)


def with_weight_scale(params: dict, std: float, key) -> dict:
    """The params with every dense weight redrawn from ``std * N(0, 1)`` (biases,
    batch-norm scales and shifts kept), so that every scale shares one compiled model."""
    out = {}
    for i, (name, leaf) in enumerate(params.items()):
        if isinstance(leaf, dict) and "w" in leaf:
            w = std * fnn.backend.normal(fnn.fold_in(key, i), np.shape(leaf["w"]), dtype=leaf["w"].dtype)
            leaf = dict(leaf, w=w)
        out[name] = leaf
    return out


def train_once(model, std: float, x, y, *, epochs: int, batch_size: int, lr: float, seed: int,
               backend: str) -> np.ndarray:
    """The training-set accuracy (eval mode) after every epoch; NaN after a non-finite step."""
    opt = optim.sgd(lr)
    key = fnn.key(seed, backend=backend)
    ts = train.init_state(model, opt, key, (None, x.shape[1]))
    ts = ts._replace(params=with_weight_scale(ts.params, std, fnn.fold_in(key, 1)))
    ts, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=epochs,
                            batch_size=batch_size, validation_data=(x, y), progress=False)
    acc = np.full(epochs, np.nan)
    done = history["val_accuracy"]
    acc[: len(done)] = done
    return acc


def run(*, scales=None, train_size: int = 1000, epochs: int = 20, width: int = 100, batch_size: int = 100,
        lr: float = 0.01, seed: int = 0, backend: str = "jax") -> dict:
    """Both networks at every scale, from the same weights and batches.

    Returns ``{"scales": (S,), "with_bn": (S, epochs), "without_bn": (S, epochs)}``:
    training accuracy per epoch (NaN once a run diverged), and ``"seconds"``.
    """
    scales = np.logspace(0, -4, 16) if scales is None else np.asarray(scales, float)
    x, y = data.load_digits(images=False)
    x, y = x[:train_size], y[:train_size]
    start = time.perf_counter()
    curves = {}
    for label, normalize in (("with_bn", True), ("without_bn", False)):
        model = network(normalize, width)
        curves[label] = np.stack([train_once(model, s, x, y, epochs=epochs, batch_size=batch_size, lr=lr,
                                             seed=seed, backend=backend) for s in scales])
    return {"scales": scales, **curves, "seconds": time.perf_counter() - start}


def final_accuracy(curve: np.ndarray) -> float:
    """The last epoch's accuracy; a run that diverged counts as chance (0.1)."""
    return 0.1 if np.isnan(curve[-1]) else float(curve[-1])


def plot(result: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result["scales"])
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharex=True, sharey=True,
                             constrained_layout=True, squeeze=False)
    epochs = np.arange(1, result["with_bn"].shape[1] + 1)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(epochs, result["with_bn"][i], color="tab:blue", linewidth=2, label="with batch norm")
        ax.plot(epochs, result["without_bn"][i], color="tab:orange", linestyle="--", linewidth=2,
                label="without batch norm")
        diverged = np.isnan(result["without_bn"][i]).any()
        ax.set_title(f"w std {result['scales'][i]:.2g}" + (" (diverged)" if diverged else ""), fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("train accuracy")
        if i // cols == rows - 1:
            ax.set_xlabel("epoch")
    axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Batch normalisation over 16 initial weight scales: 5 hidden ReLU layers of 100, SGD lr 0.01, "
                 "1,000 digits")
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="batch_norm_scales.png", help="where to save the figure (PNG)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20; quick 6)")
    parser.add_argument("--quick", action="store_true",
                        help="the test size: 4 scales from 0.3 to 0.002, 500 images, 6 epochs of batches of 50 at "
                             "lr 0.05, 32 units, on NumPy (nothing to compile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be positive; got {args.epochs}")
    if args.quick:
        result = run(scales=[0.3, 0.05, 0.01, 0.002], train_size=500, epochs=args.epochs or 6, width=32,
                     batch_size=50, lr=0.05, seed=args.seed, backend="numpy")
    else:
        result = run(epochs=args.epochs or 20, seed=args.seed)
    print(f"{'w std':>8}  {'with batch norm':>16}  {'without':>8}   (final training accuracy)")
    for s, bn, plain in zip(result["scales"], result["with_bn"], result["without_bn"]):
        note = "  (diverged)" if np.isnan(plain).any() else ""
        print(f"{s:>8.2g}  {final_accuracy(bn):>16.3f}  {final_accuracy(plain):>8.3f}{note}")
    good = lambda key: sum(final_accuracy(c) >= 0.9 for c in result[key])  # noqa: E731
    n = len(result["scales"])
    print(f"scales reaching 90% training accuracy: {good('with_bn')} of {n} with batch norm, "
          f"{good('without_bn')} of {n} without ({result['seconds']:.0f} s)")
    plot(result, args.out)
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
