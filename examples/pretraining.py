"""Layer-wise pre-training: autoencoders, one layer at a time, then fine-tuning.

Before ReLU, good initialisations and normalisation, a deep network of
sigmoid units barely trained with backpropagation: the gradient fades on its
way down (every sigmoid derivative is at most 1/4), so the first layers
hardly move from their random start. Hinton's 2006 remedy, which the notes
describe, trains the hidden layers without labels, one at a time: layer 1 is
the encoder of an autoencoder that learns to reconstruct the input; layer 2
the encoder of one that reconstructs layer 1's outputs; and so on. The
stacked encoders, with a fresh output layer on top, are then *fine-tuned*
with backpropagation on the labels.

Here a 6-layer sigmoid MLP (five hidden layers of 64) is fine-tuned on the
bundled digits with plain SGD, from random weights (``normal(0.1)``: small,
as in the networks of that time) and from the pre-trained ones (each
autoencoder ``dense -> sigmoid -> dense -> sigmoid``, trained with Adam on
the mean squared reconstruction error). The pre-trained network learns much
faster; random initialisation sits on the plateau of the vanishing gradient.
The figure shows each autoencoder's reconstruction error and the two
fine-tuning curves. The default run takes about 8 s of CPU time (30 s of
wall time on a busy 2-core machine).

    python examples/pretraining.py
    python examples/pretraining.py --quick
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import fnn
from fnn import initializers, losses, optim, train
from fnn import layers as L

W_INIT = initializers.normal(0.1)


def encoder(width: int) -> fnn.Layer:
    return L.serial(L.dense(width, w_init=W_INIT), L.sigmoid)


def autoencoder(width: int, features: int) -> fnn.Layer:
    """Encode ``features`` inputs in [0, 1] into ``width`` sigmoid units, decode them back to [0, 1]."""
    return L.serial(encoder(width), L.dense(features, w_init=W_INIT), L.sigmoid)


def deep_mlp(widths: tuple[int, ...]) -> fnn.Layer:
    """``len(widths)`` blocks of dense -> sigmoid (named ``hidden_i``), then dense(10)."""
    blocks = [L.serial(L.dense(w, w_init=W_INIT), L.sigmoid, name=f"hidden_{i}") for i, w in enumerate(widths)]
    return L.serial(*blocks, L.dense(10, w_init=W_INIT, name="output"))


def pretrain(x: np.ndarray, widths: tuple[int, ...], epochs: int, backend_name: str, seed: int = 0):
    """Train one autoencoder per hidden layer on the previous layer's outputs;
    returns (the encoders' params, each autoencoder's reconstruction-error curve)."""
    params, curves, h = [], [], x
    for i, width in enumerate(widths):
        ae = autoencoder(width, h.shape[-1])
        opt = optim.adam(3e-3)
        ts = train.init_state(ae, opt, fnn.fold_in(fnn.key(seed, backend=backend_name), i), (None, h.shape[-1]))
        ts, history = train.fit(ae, losses.mse, opt, ts, (h, h), epochs=epochs, batch_size=32, progress=False)
        encoder_params = {"dense": ts.params["serial"]["dense"], "sigmoid": {}}
        enc = encoder(width)
        h = np.asarray(enc.apply(encoder_params, enc.init(fnn.key(0, backend="numpy"), h.shape)[1], h)[0])
        params.append(encoder_params)
        curves.append(history["train_loss"])
    return params, curves


def fine_tune(x, y, x_test, y_test, widths, params, epochs: int, lr: float, backend_name: str, seed: int = 0):
    """SGD on the labels from ``params`` (replacing the hidden layers of a fresh init when given)."""
    model, opt = deep_mlp(widths), optim.sgd(lr)
    ts = train.init_state(model, opt, fnn.key(seed, backend=backend_name), (None, x.shape[-1]))
    if params is not None:
        start = dict(ts.params, **{f"hidden_{i}": p for i, p in enumerate(params)})
        start = fnn.backend.tree_map(lambda new, old: fnn.backend.namespace(old).asarray(new, old.dtype),
                                     start, ts.params)
        ts = ts._replace(params=start, opt_state=opt.init(start))
    _, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=epochs, batch_size=32,
                           validation_data=(x_test, y_test), progress=False)
    return {"train_loss": history["train_loss"], "test_accuracy": history["val_accuracy"]}


def run(widths: tuple[int, ...], pretrain_epochs: int, epochs: int, lr: float, backend_name: str,
        n_train: int | None = None) -> dict:
    x, y = fnn.data.load_digits(images=False)
    x_train, y_train, x_test, y_test = fnn.data.train_val_split(x, y, 0.3, seed=0)
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    encoders, reconstruction = pretrain(x_train, widths, pretrain_epochs, backend_name)
    return {
        "reconstruction": reconstruction,
        "random": fine_tune(x_train, y_train, x_test, y_test, widths, None, epochs, lr, backend_name),
        "pre-trained": fine_tune(x_train, y_train, x_test, y_test, widths, encoders, epochs, lr, backend_name),
    }


def plot(result: dict, widths: tuple[int, ...], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, curve in enumerate(result["reconstruction"]):
        left.plot(range(1, len(curve) + 1), curve, label=f"autoencoder {i + 1}: {widths[i]} units")
    left.set_xlabel("pre-training epoch (Adam, no labels)")
    left.set_ylabel("reconstruction error (mean squared)")
    left.set_yscale("log")
    left.set_title("pre-training, one layer at a time")
    left.legend(fontsize=8)
    for name in ("random", "pre-trained"):
        r = result[name]
        epochs = range(1, len(r["train_loss"]) + 1)
        middle.plot(epochs, r["train_loss"], label=f"{name} initialisation")
        right.plot(epochs, r["test_accuracy"], label=f"{name}: {r['test_accuracy'][-1]:.1%}")
    middle.set_xlabel("fine-tuning epoch (SGD)")
    middle.set_ylabel("train loss (cross-entropy)")
    middle.set_title(f"fine-tuning a {len(widths) + 1}-layer sigmoid MLP")
    middle.legend()
    right.set_xlabel("fine-tuning epoch (SGD)")
    right.set_ylabel("test accuracy")
    right.set_ylim(0, 1)
    right.set_title("test accuracy (final value in the legend)")
    right.legend()
    fig.suptitle("Layer-wise pre-training with autoencoders, then fine-tuning, on digits")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="pretraining.png")
    parser.add_argument("--quick", action="store_true",
                        help="the test's size: 3 hidden layers of 32, 500 digits, 15 + 10 epochs, lr 1")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="hidden widths (default five of 64)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="per autoencoder (default 20, 15 --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 30, 10 with --quick)")
    parser.add_argument("--lr", type=float, default=None, help="fine-tuning SGD learning rate (0.5, 1 with --quick)")
    parser.add_argument("--train-size", type=int, default=None, help="default all 1,257 (500 with --quick)")
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax" if fnn.backend.HAS_JAX else "numpy")
    args = parser.parse_args(argv)
    widths = tuple(args.widths or ((32,) * 3 if args.quick else (64,) * 5))
    pretrain_epochs = args.pretrain_epochs or (15 if args.quick else 20)
    lr = args.lr or (1.0 if args.quick else 0.5)
    epochs = args.epochs or (10 if args.quick else 30)
    n_train = args.train_size or (500 if args.quick else None)

    result = run(widths, pretrain_epochs, epochs, lr, args.backend, n_train)
    print(f"{len(widths) + 1}-layer sigmoid MLP {widths}, {args.backend}")
    for i, curve in enumerate(result["reconstruction"]):
        print(f"autoencoder {i + 1}: reconstruction error {curve[0]:.4f} -> {curve[-1]:.4f}")
    for name in ("random", "pre-trained"):
        r = result[name]
        print(f"{name + ' init:':18s} train loss {r['train_loss'][0]:.3f} -> {r['train_loss'][-1]:.3f}, "
              f"test accuracy {r['test_accuracy'][-1]:.1%} after {epochs} epochs of fine-tuning")
    plot(result, widths, args.out)
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
