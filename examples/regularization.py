"""Overfitting, and two cures: weight decay and dropout.

A network with many parameters trained on few examples learns its training
set by heart: train accuracy reaches 100% while test accuracy stays below.
Here a 7-layer MLP (six hidden layers of 100 ReLU units) is trained with
SGD on only 300 of the bundled digits, three ways:

* plain: the gap between train and test accuracy is the overfitting;
* weight decay: ``loss + lambda/2 * sum(w**2)`` over the weight matrices,
  i.e. ``lambda * w`` added to each weight's gradient
  (``optim.add_decayed_weights(lambda, mask=optim.decay_mask)`` before SGD);
* dropout: each hidden unit dropped with probability ``rate`` in training
  (inverted dropout, so nothing changes at test time).

Both cures narrow the gap: weight decay by holding the training fit back
(train loss far from 0), dropout by making the memorised solution harder to
reach, which here also lifts the test accuracy. The 8x8 digits are easier
than MNIST, so the effects are smaller than in the classic MNIST version of
this experiment (100% train vs about 75% test). The train and test accuracy
per epoch are saved as one PNG with a panel per variant.

    python examples/regularization.py --out regularization.png
"""

from __future__ import annotations

import argparse

import numpy as np

import fnn
from fnn import losses, optim, train
from fnn import layers as L


def mlp(dropout_rate: float = 0.0, hidden: int = 6, width: int = 100) -> fnn.Layer:
    """``hidden`` blocks of dense(width) -> relu (-> dropout), then dense(10)."""
    blocks = []
    for _ in range(hidden):
        blocks += [L.dense(width, w_init=fnn.initializers.he_normal()), L.relu]
        if dropout_rate:
            blocks.append(L.dropout(dropout_rate))
    return L.serial(L.flatten, *blocks, L.dense(10))


def variants(weight_decay: float, dropout_rate: float, lr: float, hidden: int, width: int) -> dict[str, tuple]:
    plain = mlp(hidden=hidden, width=width)
    return {
        "plain": (plain, optim.sgd(lr)),
        f"weight decay {weight_decay:g}": (
            plain,
            optim.chain(optim.add_decayed_weights(weight_decay, mask=optim.decay_mask), optim.sgd(lr)),
        ),
        f"dropout {dropout_rate:g}": (mlp(dropout_rate, hidden=hidden, width=width), optim.sgd(lr)),
    }


def run(epochs: int, n_train: int, backend: str, *, weight_decay: float, dropout_rate: float, lr: float,
        hidden: int = 6, width: int = 100, seed: int = 0) -> dict:
    x, y = fnn.data.load_digits()
    x_train, y_train, x_test, y_test = fnn.data.train_val_split(x, y, 0.3, seed=0)
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    results = {}
    for name, (model, opt) in variants(weight_decay, dropout_rate, lr, hidden, width).items():
        ts = train.init_state(model, opt, fnn.key(seed, backend=backend), (None,) + x.shape[1:])
        ts, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x_train, y_train), epochs=epochs,
                                batch_size=100, validation_data=(x_test, y_test), progress=False)
        # the train accuracy of the finished model in eval mode (without dropout), like the test accuracy
        final_train = train.evaluate(model, ts.params, ts.state, x_train, y_train, loss=losses.softmax_cross_entropy)
        results[name] = {
            "train": history["train_accuracy"],
            "test": history["val_accuracy"],
            "test_loss": history["val_loss"],
            "final_train": final_train["accuracy"],
            "final_test": history["val_accuracy"][-1],
            "final_train_loss": final_train["loss"],
            "final_test_loss": history["val_loss"][-1],
        }
    return results


def plot(results: dict, path: str, n_train: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), sharey=True)
    for ax, (name, r) in zip(np.atleast_1d(axes), results.items()):
        epochs = range(1, len(r["train"]) + 1)
        ax.plot(epochs, r["train"], label="train (running, train mode)")
        ax.plot(epochs, r["test"], label="test")
        ax.set_title(f"{name}: gap {r['final_train'] - r['final_test']:.1%}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(f"accuracy ({n_train} training digits)")
    np.atleast_1d(axes)[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="regularization.png")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--train-size", type=int, default=300)
    parser.add_argument("--weight-decay", type=float, default=0.03)
    parser.add_argument("--dropout", type=float, default=0.15)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=6, help="number of hidden layers")
    parser.add_argument("--width", type=int, default=100, help="units per hidden layer")
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax" if fnn.backend.HAS_JAX else "numpy")
    args = parser.parse_args(argv)

    results = run(args.epochs, args.train_size, args.backend, weight_decay=args.weight_decay,
                  dropout_rate=args.dropout, lr=args.lr, hidden=args.hidden, width=args.width)
    print(f"{args.train_size} training digits, {args.epochs} epochs of SGD (lr {args.lr:g}), {args.backend}:")
    print(f"{'variant':22s} {'train acc':>9s} {'test acc':>9s} {'gap':>7s} {'train loss':>10s} {'test loss':>10s}")
    for name, r in results.items():
        print(f"{name:22s} {r['final_train']:9.1%} {r['final_test']:9.1%} {r['final_train'] - r['final_test']:7.1%} "
              f"{r['final_train_loss']:10.4f} {r['final_test_loss']:10.4f}")
    plot(results, args.out, args.train_size)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
