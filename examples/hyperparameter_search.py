"""Hyper-parameter search: random samples on a log scale, judged on
validation data, never on the test set, with the range narrowed round by round.

The learning rate and the weight-decay strength matter by orders of
magnitude, so they are drawn uniformly in their *exponent*: round 1 draws
``lr = 10 ** uniform(-4, 2)``, ``weight_decay = 10 ** uniform(-8, -2)``.
Each trial trains the same 7-layer MLP with SGD on 400 digits and is scored
by its accuracy on 100 held-out validation digits. As the notes say, the
search then narrows: each next round draws from the range spanned by the
best quarter of all trials so far (widened by a tenth of a decade on each
side), so later rounds spend their trials where the good settings are. The
best setting of the whole search is measured once on the untouched test set.

Both hyper-parameters live in the optimizer's *state* (the learning rate as
in every fnn optimizer, the decay in a three-line transform written below),
so one optimizer serves every trial and the training epoch is compiled once
for the whole search. Trials whose learning rate is too large diverge: fit
stops them at the first non-finite loss, and the figure marks them with a
red cross. The default run (3 rounds of 14 trials) takes about 13 s of CPU
time (46 s of wall time on a busy 2-core machine).

    python examples/hyperparameter_search.py
    python examples/hyperparameter_search.py --quick
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


def model(hidden: int = 6, width: int = 100) -> fnn.Layer:
    """``hidden`` blocks of dense(width) -> relu, then dense(10)."""
    blocks = [layer for _ in range(hidden) for layer in (L.dense(width, w_init=fnn.initializers.he_normal()), L.relu)]
    return L.serial(L.flatten, *blocks, L.dense(10))


LR_RANGE, WD_RANGE = (-4.0, 2.0), (-8.0, -2.0)  # round 1's exponent ranges (base 10)


def narrowed(results: list[dict], previous: tuple[tuple, tuple], keep: float = 0.25,
             margin: float = 0.1) -> tuple[tuple, tuple]:
    """The next round's exponent ranges: those spanned by the best ``keep`` fraction of
    the trials so far (a diverged trial never counts among the best), widened by
    ``margin`` decades and kept inside the ``previous`` round's ranges."""
    ranked = sorted((r for r in results if not r["diverged"]), key=lambda r: -r["val_accuracy"])
    best = ranked[: max(2, int(round(keep * len(results))))] or results
    out = []
    for name, (low, high) in zip(("lr", "weight_decay"), previous):
        exponents = np.log10([r[name] for r in best])
        out.append((float(max(low, exponents.min() - margin)), float(min(high, exponents.max() + margin))))
    return out[0], out[1]


def search(trials: int, epochs: int, backend_name: str, seed: int = 0, rounds: int = 3, *,
           hidden: int = 6, width: int = 100, lr_range: tuple = LR_RANGE,
           wd_range: tuple = WD_RANGE) -> tuple[list[dict], dict, list[tuple]]:
    """``rounds`` rounds of ``trials`` random trials, each round in the range narrowed by
    the previous ones; returns (every trial, the best with its test accuracy, each round's ranges)."""
    x, y = fnn.data.load_digits()
    x_rest, y_rest, x_test, y_test = fnn.data.train_val_split(x, y, 0.2, seed=0)
    x_train, y_train, x_val, y_val = fnn.data.train_val_split(x_rest[:500], y_rest[:500], 0.2, seed=1)
    net, loss = model(hidden, width), losses.softmax_cross_entropy
    opt = optim.chain(decay_from_state(), optim.sgd(1.0))  # one optimizer for all trials
    rng = np.random.default_rng(seed)
    results, best_state, best_accuracy = [], None, -1.0
    ranges = [(tuple(lr_range), tuple(wd_range))]
    for round_ in range(rounds):
        if round_:
            ranges.append(narrowed(results, ranges[-1]))
        lr_range, wd_range = ranges[-1]
        for _ in range(trials):
            trial = len(results)
            lr, wd = 10 ** rng.uniform(*lr_range), 10 ** rng.uniform(*wd_range)
            ts = train.init_state(net, opt, fnn.key(seed * 1000 + trial, backend=backend_name), (None,) + x.shape[1:])
            opt_state = dict(ts.opt_state, decay=DecayState(backend.namespace(ts.params).asarray(wd, np.float32)))
            ts = ts._replace(opt_state=optim.set_learning_rate(opt_state, lr))
            with np.errstate(over="ignore", invalid="ignore"):  # NumPy: a diverging trial overflows, as expected
                ts, history = train.fit(net, loss, opt, ts, (x_train, y_train), epochs=epochs, batch_size=100,
                                        validation_data=(x_val, y_val), progress=False)
            val = history["val_accuracy"] if len(history) else [0.0]
            results.append({"round": round_ + 1, "lr": lr, "weight_decay": wd, "val_accuracy": val[-1],
                            "val_curve": val, "train_curve": history["train_accuracy"] if len(history) else [0.0],
                            "diverged": history.stopped is not None})
            if val[-1] > best_accuracy:
                best_state, best_accuracy, best = ts, val[-1], results[-1]
    test = train.evaluate(net, best_state.params, best_state.state, x_test, y_test, loss=loss)
    return results, {**best, "test_accuracy": test["accuracy"]}, ranges


def plot(results: list[dict], ranges: list[tuple], path: str, top: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    markers = "osD^v"
    finished = [r for r in results if not r["diverged"]]
    for round_ in range(1, len(ranges) + 1):
        rs = [r for r in finished if r["round"] == round_]
        points = left.scatter([r["lr"] for r in rs], [r["weight_decay"] for r in rs],
                              c=[r["val_accuracy"] for r in rs], cmap="viridis", vmin=0, vmax=1, s=45,
                              marker=markers[(round_ - 1) % len(markers)], edgecolors="k", label=f"round {round_}")
    diverged = [r for r in results if r["diverged"]]
    left.scatter([r["lr"] for r in diverged], [r["weight_decay"] for r in diverged], marker="x", color="red", s=50,
                 label=f"diverged ({len(diverged)})")
    for round_, (lr_range, wd_range) in enumerate(ranges, start=1):
        (l0, l1), (w0, w1) = (10 ** np.array(lr_range)), (10 ** np.array(wd_range))
        left.add_patch(Rectangle((l0, w0), l1 - l0, w1 - w0, fill=False, linestyle="--", linewidth=1,
                                 edgecolor=plt.cm.plasma(0.8 * (round_ - 1) / max(1, len(ranges) - 1))))
        left.annotate(f"range {round_}", (l0, w1), fontsize=7, va="bottom")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("learning rate (log scale)")
    left.set_ylabel("weight decay (log scale)")
    left.set_title("each trial (dashed boxes: the range each round drew from)")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
    fig.colorbar(points, ax=left, label="validation accuracy")
    ranked = sorted(results, key=lambda r: -r["val_accuracy"])[:top]
    for i, r in enumerate(ranked):
        line, = right.plot(range(1, len(r["val_curve"]) + 1), r["val_curve"],
                           label=f"#{i + 1} (round {r['round']}): lr {r['lr']:.1e}, wd {r['weight_decay']:.0e}")
        right.plot(range(1, len(r["train_curve"]) + 1), r["train_curve"], "--", color=line.get_color(), alpha=0.5)
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy (validation solid, train dashed)")
    right.set_title(f"the {len(ranked)} best trials")
    right.legend(fontsize=7)
    fig.suptitle("Hyper-parameter search on a log scale: an MLP trained on digits with SGD, "
                 "scored on validation digits")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="hyperparameter_search.png")
    parser.add_argument("--quick", action="store_true",
                        help="the test's size: 2 rounds of 8 trials of 4 epochs, 3 hidden layers of 50")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (2 with --quick)")
    parser.add_argument("--trials", type=int, default=None, help="trials per round (default 14, 8 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="default 50 (4 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-range", type=float, nargs=2, default=LR_RANGE, metavar=("LOW", "HIGH"),
                        help="round 1's learning-rate exponents (base 10)")
    parser.add_argument("--wd-range", type=float, nargs=2, default=WD_RANGE, metavar=("LOW", "HIGH"),
                        help="round 1's weight-decay exponents (base 10)")
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax" if fnn.backend.HAS_JAX else "numpy")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    trials = args.trials or (8 if args.quick else 14)
    epochs = args.epochs or (4 if args.quick else 50)
    hidden, width = (3, 50) if args.quick else (6, 100)

    results, best, ranges = search(trials, epochs, args.backend, args.seed, rounds, hidden=hidden, width=width,
                                   lr_range=args.lr_range, wd_range=args.wd_range)
    print(f"{rounds} rounds of {trials} trials of {epochs} epochs ({args.backend})")
    for round_, (lr_range, wd_range) in enumerate(ranges, start=1):
        rs = [r for r in results if r["round"] == round_]
        print(f"round {round_}: lr 10^[{lr_range[0]:.2f}, {lr_range[1]:.2f}], "
              f"weight decay 10^[{wd_range[0]:.2f}, {wd_range[1]:.2f}]: "
              f"median val acc {np.median([r['val_accuracy'] for r in rs]):.1%}, "
              f"diverged {sum(r['diverged'] for r in rs)} of {len(rs)}")
    print("the best by validation accuracy:")
    print(f"{'rank':>4s} {'round':>5s} {'learning rate':>14s} {'weight decay':>13s} {'val acc':>8s}")
    for i, r in enumerate(sorted(results, key=lambda r: -r["val_accuracy"])[:5]):
        print(f"{i + 1:4d} {r['round']:5d} {r['lr']:14.2e} {r['weight_decay']:13.2e} {r['val_accuracy']:8.1%}")
    print(f"diverged (stopped at a non-finite loss): {sum(r['diverged'] for r in results)} of {len(results)}")
    print(f"best setting on the test set, measured once: {best['test_accuracy']:.1%}")
    plot(results, ranges, args.out)
    print(f"saved {args.out}")
    return {"results": results, "best": best, "ranges": ranges}


if __name__ == "__main__":
    main()
