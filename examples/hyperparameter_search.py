"""Hyper-parameter search: random samples on a log scale, judged on
validation data, never on the test set.

The learning rate and the weight-decay strength matter by orders of
magnitude, so they are drawn uniformly in their *exponent*:
``lr = 10 ** uniform(-4, 0)``, ``weight_decay = 10 ** uniform(-8, -2)``.
Each trial trains the same 7-layer MLP with SGD on 400 digits and is scored
by its accuracy on 100 held-out validation digits; the best setting is then
measured once on the untouched test set. Repeating the search in the range
where the best trials fall narrows it down.

Both hyper-parameters live in the optimizer's *state* (the learning rate as
in every fnn optimizer, the decay in a three-line transform written below),
so one optimizer serves every trial and the training epoch is compiled once
for the whole search. Trials whose learning rate is too large diverge: fit
stops them at the first non-finite loss.

    python examples/hyperparameter_search.py --out hyperparameter_search.png
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import numpy as np

import fnn
from fnn import backend, losses, optim, train
from fnn import layers as L


class DecayState(NamedTuple):
    rate: Any  # 0-d float array: the weight-decay strength, as state so that changing it never recompiles


def decay_from_state() -> optim.GradientTransformation:
    """``g + rate * w`` for every weight matrix, with ``rate`` read from the state (initially 0)."""

    def init(params):
        return DecayState(backend.namespace(params).zeros((), np.float32))

    def update(grads, state, params):
        decay = lambda path, g, p: g + state.rate.astype(g.dtype) * p if optim.decay_mask(path, p) else g  # noqa: E731
        leaves = [decay(path, g, p) for (path, g), p in
                  zip(backend.tree_leaves_with_path(grads), backend.tree_leaves(params))]
        return backend.tree_unflatten(backend.tree_structure(grads), leaves), state

    return optim.GradientTransformation(init, update, name="decay")


def model() -> fnn.Layer:
    blocks = [layer for _ in range(6) for layer in (L.dense(100, w_init=fnn.initializers.he_normal()), L.relu)]
    return L.serial(L.flatten, *blocks, L.dense(10))


def search(trials: int, epochs: int, backend_name: str, seed: int = 0) -> tuple[list[dict], dict]:
    x, y = fnn.data.load_digits()
    x_rest, y_rest, x_test, y_test = fnn.data.train_val_split(x, y, 0.2, seed=0)
    x_train, y_train, x_val, y_val = fnn.data.train_val_split(x_rest[:500], y_rest[:500], 0.2, seed=1)
    net, loss = model(), losses.softmax_cross_entropy
    opt = optim.chain(decay_from_state(), optim.sgd(1.0))  # one optimizer for all trials
    rng = np.random.default_rng(seed)
    results, best_state, best_accuracy = [], None, -1.0
    for trial in range(trials):
        lr, wd = 10 ** rng.uniform(-4, 0), 10 ** rng.uniform(-8, -2)
        ts = train.init_state(net, opt, fnn.key(seed * 1000 + trial, backend=backend_name), (None,) + x.shape[1:])
        opt_state = dict(ts.opt_state, decay=DecayState(backend.namespace(ts.params).asarray(wd, np.float32)))
        ts = ts._replace(opt_state=optim.set_learning_rate(opt_state, lr))
        ts, history = train.fit(net, loss, opt, ts, (x_train, y_train), epochs=epochs, batch_size=100,
                                validation_data=(x_val, y_val), progress=False)
        val = history["val_accuracy"] if len(history) else [0.0]
        results.append({"lr": lr, "weight_decay": wd, "val_accuracy": val[-1], "val_curve": val,
                        "train_curve": history["train_accuracy"] if len(history) else [0.0],
                        "diverged": history.stopped is not None})
        if val[-1] > best_accuracy:
            best_state, best_accuracy, best = ts, val[-1], results[-1]
    test = train.evaluate(net, best_state.params, best_state.state, x_test, y_test, loss=loss)
    return results, {**best, "test_accuracy": test["accuracy"]}


def plot(results: list[dict], path: str, top: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    lr = np.array([r["lr"] for r in results])
    wd = np.array([r["weight_decay"] for r in results])
    acc = np.array([r["val_accuracy"] for r in results])
    points = left.scatter(lr, wd, c=acc, cmap="viridis", vmin=0, vmax=1, s=40, edgecolors="k")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("learning rate")
    left.set_ylabel("weight decay")
    left.set_title("validation accuracy of each trial")
    fig.colorbar(points, ax=left)
    ranked = sorted(results, key=lambda r: -r["val_accuracy"])[:top]
    for i, r in enumerate(ranked):
        line, = right.plot(r["val_curve"], label=f"#{i + 1}: lr {r['lr']:.1e}, wd {r['weight_decay']:.0e}")
        right.plot(r["train_curve"], "--", color=line.get_color(), alpha=0.5)
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (validation solid, train dashed)")
    right.set_title(f"the {len(ranked)} best trials")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="hyperparameter_search.png")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax" if fnn.backend.HAS_JAX else "numpy")
    args = parser.parse_args(argv)

    results, best = search(args.trials, args.epochs, args.backend, args.seed)
    print(f"{args.trials} trials of {args.epochs} epochs ({args.backend}); the best by validation accuracy:")
    print(f"{'rank':>4s} {'learning rate':>14s} {'weight decay':>13s} {'val acc':>8s}")
    for i, r in enumerate(sorted(results, key=lambda r: -r["val_accuracy"])[:5]):
        print(f"{i + 1:4d} {r['lr']:14.2e} {r['weight_decay']:13.2e} {r['val_accuracy']:8.1%}")
    print(f"diverged (stopped at a non-finite loss): {sum(r['diverged'] for r in results)} of {len(results)}")
    print(f"best setting on the test set, measured once: {best['test_accuracy']:.1%}")
    plot(results, args.out)
    print(f"saved {args.out}")
    return {"results": results, "best": best}


if __name__ == "__main__":
    main()
