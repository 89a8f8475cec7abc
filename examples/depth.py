"""Depth: a deep plain network trains worse than a shallow one; the same depth with residual connections does not.

The degradation problem (He et al., 2016): stacking more layers on a network
that trains well should never hurt the training error (the extra layers
could learn the identity), yet a deep plain network trains *worse* than a
shallow one. It is not over-fitting (the training loss itself is higher) and
not vanishing gradients alone (batch norm keeps every layer's signal in
scale); the deep plain network is simply harder to optimise. Adding identity
shortcuts around every pair of layers, with nothing else changed, lets the
same depth train better than the shallow network.

Three convolutional networks on the bundled 8x8 digits, trained the same way
(SGD with momentum, the same batches):

* shallow plain: a 3x3 convolution stem, 1 block, pooling and a dense layer;
* deep plain: the same with 8 blocks (17 convolutions);
* deep residual: ``fnn.models.resnet(stages=(8,), blocks_per_stage=8,
  preactivation=True)``, the same 8 blocks with identity shortcuts.

Every block is the pre-activation block of He et al., "Identity Mappings in
Deep Residual Networks" (2016), ``batch_norm -> relu -> conv 3x3 ->
batch_norm -> relu -> conv 3x3``, plus the input in the residual network.

    python examples/depth.py [--quick] [--out depth.png]

The default run takes about 80 seconds on 2 CPU cores shared with other work
(23 s of CPU time). ``--quick`` (6 channels, 600 digits, 3 epochs, on NumPy)
is too short for the shallow network to overtake the deep plain one; it shows
the residual network training far better than the plain one of its depth.
The default run prints::

    final training loss: shallow plain 0.26, deep plain 0.38, deep residual 0.14
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import fnn
import fnn.models
import fnn.optim
from fnn import initializers, layers as L, train
from fnn.data import load_digits

SETTINGS = {
    "default": dict(channels=8, blocks=8, epochs=10, examples=None, batch=64, backend="jax"),
    "quick": dict(channels=6, blocks=8, epochs=3, examples=600, batch=16, backend="numpy"),
}


def plain_network(channels: int, blocks: int, num_classes: int = 10) -> fnn.Layer:
    """``fnn.models.resnet(stages=(channels,), blocks_per_stage=blocks, preactivation=True)``
    without its shortcuts: the same layers, in the same order, with the same parameters."""
    he = initializers.he_normal()

    def conv() -> fnn.Layer:
        return L.conv2d(channels, 3, padding="same", use_bias=False, w_init=he)

    layers = [L.conv2d(channels, 3, padding="same", use_bias=False, w_init=he, name="stem")]
    for _ in range(blocks):
        layers += [L.batch_norm(), L.relu, conv(), L.batch_norm(), L.relu, conv()]
    layers += [L.batch_norm(), L.relu, L.global_avg_pool, L.dense(num_classes)]
    return L.serial(*layers, name="plain")


def networks(channels: int, blocks: int) -> dict[str, fnn.Layer]:
    return {
        "shallow plain": plain_network(channels, 1),
        "deep plain": plain_network(channels, blocks),
        "deep residual": fnn.models.resnet(stages=(channels,), blocks_per_stage=blocks, preactivation=True),
    }


def run(*, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Train the three networks; returns each one's per-epoch training loss and accuracy."""
    cfg = SETTINGS["quick" if quick else "default"]
    start = time.perf_counter()
    x, y = load_digits()
    if cfg["examples"]:
        x, y = x[: cfg["examples"]], y[: cfg["examples"]]
    results = {}
    for name, model in networks(cfg["channels"], cfg["blocks"]).items():
        opt = fnn.optim.sgd(0.05, momentum=0.9)
        ts = train.init_state(model, opt, fnn.key(seed, backend=cfg["backend"]), (None, *x.shape[1:]))
        ts, history = train.fit(model, fnn.losses.softmax_cross_entropy, opt, ts, (x, y), epochs=cfg["epochs"],
                                batch_size=cfg["batch"], progress=False)
        params = sum(int(np.prod(leaf.shape)) for leaf in fnn.backend.tree_leaves(ts.params))
        results[name] = {"loss": np.array(history["train_loss"]), "accuracy": np.array(history["train_accuracy"]),
                         "params": params}
    return {"settings": cfg, "results": results, "seconds": time.perf_counter() - start}


def report(r: dict[str, Any]) -> str:
    """The measured results as plain lines."""
    res = r["results"]
    losses = ", ".join(f"{name} {v['loss'][-1]:.2f}" for name, v in res.items())
    accuracy = ", ".join(f"{name} {v['accuracy'][-1]:.3f}" for name, v in res.items())
    sizes = ", ".join(f"{name} {v['params']:,}" for name, v in res.items())
    return "\n".join([f"final training loss: {losses}", f"final training accuracy: {accuracy}",
                      f"parameters: {sizes}", f"({r['seconds']:.0f} s)"])


def plot(r: dict[str, Any], path: str) -> None:
    """Training loss and accuracy per epoch of the three networks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = r["settings"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"shallow plain": ("tab:gray", "--"), "deep plain": ("tab:red", "-"), "deep residual": ("tab:blue", "-")}
    for name, v in r["results"].items():
        color, style = styles[name]
        convs = 1 + 2 * (1 if name == "shallow plain" else cfg["blocks"])
        epochs = np.arange(1, len(v["loss"]) + 1)
        label = f"{name} ({convs} conv layers)"
        ax_loss.semilogy(epochs, v["loss"], color=color, linestyle=style, marker=".", label=label)
        ax_acc.plot(epochs, v["accuracy"], color=color, linestyle=style, marker=".", label=label)
    ax_loss.set(title="Degradation: deeper plain nets train worse", xlabel="epoch",
                ylabel="training loss (cross-entropy, epoch mean)")
    ax_acc.set(title="Training accuracy (digits, 8x8)", xlabel="epoch", ylabel="training accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small version the tests run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="depth.png", help="where to save the PNG")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, seed=args.seed)
    print(report(results))
    plot(results, args.out)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
