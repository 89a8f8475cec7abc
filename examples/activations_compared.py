"""Activations compared: sigmoid, tanh and ReLU on one network; dead ReLUs at a
high learning rate; the zig-zag caused by sigmoid's non-zero-centred outputs;
the randomized leaky ReLU.

The notes' claims, each measured here:

1. **Speed.** The same network (four hidden layers of 64, the same initial
   weights, drawn with Xavier's ``1/sqrt(n)``, the same batches, SGD at 0.1)
   with sigmoid, tanh, ReLU and ``rrelu`` (a leaky ReLU whose negative slope is
   drawn uniformly from [1/8, 1/3] per unit while training, the mean slope at
   evaluation). Sigmoid, whose derivative is at most 0.25, is by far the
   slowest; tanh and ReLU learn quickly, and rrelu keeps pace with ReLU.
2. **Dead ReLUs.** A ReLU unit whose input is negative for every example gets
   no gradient and never recovers. SGD with a learning rate too high throws
   many units into that state; a small learning rate leaves them alive. The
   fraction of hidden units that output 0 on every training image is tracked
   over the epochs.
3. **Non-zero-centred outputs.** A unit fed by sigmoid outputs (all positive)
   receives, for one example, the weight gradient ``delta * x``: every
   component has the sign of ``delta``. Each update therefore moves all of the
   unit's incoming weights up together or down together, and reaching weights
   of mixed signs takes a zig-zag. Measured on the trained network (the share
   of per-example weight-gradient columns whose entries all have one sign) and
   drawn on a two-weight unit trained by SGD towards the weights ``(1, -1)``.

The measured default run (about 50 s of wall time on 2 busy CPU cores):
training loss after 40 epochs sigmoid 2.311 (still chance, ln 10 = 2.303:
through four sigmoid layers the gradient vanishes), tanh 0.007, ReLU 0.002,
rrelu 0.003 (tanh is ahead in the first epochs, ReLU lower at the end); dead
ReLU fraction up to 0.77 at lr 1 against 0.14 at lr 0.01 (4 % of the units are
dead at initialisation already); the weight updates of a unit fed by sigmoid
outputs have one sign for 100 % of the units and examples, fed by tanh outputs
for 0 %; on the two-weight unit, 100 % of the SGD steps move both weights the
same way with sigmoid inputs (52 % with tanh inputs), and after 60 steps it is
still 0.096 from its target while the tanh-fed unit has reached it (1e-10).

    python examples/activations_compared.py --out activations_compared.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fnn
from fnn import data, initializers, losses, optim, train
from fnn import layers as L

ACTIVATIONS = {"sigmoid": L.sigmoid, "tanh": L.tanh, "relu": L.relu, "rrelu": L.rrelu()}
XAVIER = initializers.lecun_normal()  # std 1 / sqrt(n_in): the notes' "Xavier"


def network(activation: fnn.Layer, width: int = 64, hidden_layers: int = 4) -> fnn.Layer:
    """``hidden_layers`` x (dense -> activation), then a 10-way dense output."""
    layers = []
    for _ in range(hidden_layers):
        layers += [L.dense(width, w_init=XAVIER), activation]
    return L.serial(*layers, L.dense(10, w_init=XAVIER))


def _digits(train_size: int | None):
    x, y = data.load_digits(images=False)
    return (x, y) if train_size is None else (x[:train_size], y[:train_size])


# --------------------------------------------------------------------------- #
# 1. speed
# --------------------------------------------------------------------------- #


def speed(*, epochs: int, width: int, lr: float, batch_size: int, train_size: int | None, seed: int,
          backend: str) -> dict:
    """Training loss per epoch for each activation, from the same weights and batches."""
    x, y = _digits(train_size)
    curves = {}
    for name, act in ACTIVATIONS.items():
        model, opt = network(act, width), optim.sgd(lr)
        ts = train.init_state(model, opt, fnn.key(seed, backend=backend), (None, x.shape[1]))
        _, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=epochs,
                               batch_size=batch_size, progress=False)
        curves[name] = np.array(history["train_loss"])
    return curves


# --------------------------------------------------------------------------- #
# 2. dead ReLUs
# --------------------------------------------------------------------------- #


def hidden_outputs(model: fnn.Layer, params: dict, state: dict, x: np.ndarray) -> list[np.ndarray]:
    """The output of every activation layer of a ``serial`` model (eval mode)."""
    outs = []
    for name, layer, _ in model.sublayers((None, x.shape[1])):
        x, _ = layer.apply(params[name], state[name], x)
        if not name.startswith("dense"):
            outs.append(np.asarray(x))
    return outs


def dead_fraction(model: fnn.Layer, params: dict, state: dict, x: np.ndarray) -> float:
    """The share of hidden units that output 0 for every example of ``x``."""
    outs = hidden_outputs(model, params, state, x)
    dead = sum(int(np.sum(np.all(h <= 0, axis=0))) for h in outs)
    return dead / sum(h.shape[1] for h in outs)


def dead_relus(*, lrs: tuple[float, float], epochs: int, width: int, batch_size: int, train_size: int | None,
               seed: int, backend: str) -> dict:
    """``{lr: (epochs + 1,) dead fraction}`` of a ReLU network trained by SGD at each learning rate."""
    x, y = _digits(train_size)
    model = network(L.relu, width)
    out = {}
    for lr in lrs:
        opt = optim.sgd(lr)
        ts = train.init_state(model, opt, fnn.key(seed, backend=backend), (None, x.shape[1]))
        fractions = [dead_fraction(model, ts.params, ts.state, x)]
        for _ in range(epochs):  # one epoch at a time: fit continues the shuffle sequence
            ts, history = train.fit(model, losses.softmax_cross_entropy, opt, ts, (x, y), epochs=1,
                                    batch_size=batch_size, progress=False)
            if history.stopped:
                break
            fractions.append(dead_fraction(model, ts.params, ts.state, x))
        out[lr] = np.array(fractions + [np.nan] * (epochs + 1 - len(fractions)))
    return out


# --------------------------------------------------------------------------- #
# 3. non-zero-centred outputs
# --------------------------------------------------------------------------- #


def one_sign_share(activation: fnn.Layer, *, width: int, examples: int, train_size: int | None, seed: int) -> float:
    """For the second dense layer (fed by ``activation``'s outputs), the share of
    per-example weight-gradient columns (one per unit) whose nonzero entries all
    have one sign: 1.0 when the inputs are all positive."""
    x, y = _digits(train_size)
    model = network(activation, width, hidden_layers=2)
    params, state = model.init(fnn.key(seed, backend="numpy"), (None, x.shape[1]))
    grad = fnn.value_and_grad(model, losses.softmax_cross_entropy, method="manual")
    one_sign = total = 0
    for i in np.random.default_rng(seed).choice(len(x), examples, replace=False):
        _, grads = grad(params, state, x[i : i + 1], y[i : i + 1])
        g = grads["dense_1"]["w"]  # (width in, width out): column j is unit j's incoming weights
        nonzero = g != 0
        one_sign += int(np.sum(np.all((g >= 0) | ~nonzero, axis=0) | np.all((g <= 0) | ~nonzero, axis=0)))
        total += g.shape[1]
    return one_sign / total


def zigzag(inputs: str, *, steps: int, lr: float = 0.5, seed: int = 0) -> np.ndarray:
    """SGD (one example per step) on a unit ``y = w . a`` whose two inputs are
    sigmoid outputs (``inputs="sigmoid"``, all positive) or tanh outputs
    (centred), fitting targets made by the weights ``(1, -1)``; returns the
    path of ``w`` from ``(0, 0)``, shape ``(steps + 1, 2)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, (steps, 2))
    a = 1.0 / (1.0 + np.exp(-z)) if inputs == "sigmoid" else np.tanh(z)
    target_w = np.array([1.0, -1.0])
    w, path = np.zeros(2), [np.zeros(2)]
    for ai in a:
        delta = w @ ai - target_w @ ai  # d(0.5 * error**2) / d output
        w = w - lr * delta * ai
        path.append(w.copy())
    return np.array(path)


def path_stats(path: np.ndarray) -> dict:
    steps = np.diff(path, axis=0)
    moving = np.any(steps != 0, axis=1)
    same_sign = np.sign(steps[:, 0]) == np.sign(steps[:, 1])
    return {"same_sign": float(np.mean(same_sign[moving])),
            "length": float(np.sum(np.hypot(*steps.T))),
            "distance": float(np.hypot(*(path[-1] - [1.0, -1.0])))}


# --------------------------------------------------------------------------- #
# all of it
# --------------------------------------------------------------------------- #


def run(*, quick: bool = False, seed: int = 0) -> dict:
    """Every measurement of the experiment (quick: the test size, on NumPy)."""
    backend = "numpy" if quick else "jax"
    size = 600 if quick else None
    start = time.perf_counter()
    result = {
        "speed": speed(epochs=8 if quick else 40, width=32 if quick else 64, lr=0.1, batch_size=32,
                       train_size=size, seed=seed, backend=backend),
        "dead": dead_relus(lrs=(1.0, 0.01), epochs=4 if quick else 15, width=32 if quick else 64, batch_size=32,
                           train_size=size, seed=seed, backend=backend),
        "one_sign": {name: one_sign_share(ACTIVATIONS[name], width=32, examples=10 if quick else 50,
                                          train_size=size, seed=seed) for name in ("sigmoid", "tanh")},
        "paths": {inputs: zigzag(inputs, steps=30 if quick else 60, seed=seed) for inputs in ("sigmoid", "tanh")},
    }
    result["path_stats"] = {k: path_stats(p) for k, p in result["paths"].items()}
    result["seconds"] = time.perf_counter() - start
    return result


def plot(result: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
    ax = axes[0, 0]
    for name, curve in result["speed"].items():
        ax.semilogy(np.arange(1, len(curve) + 1), curve, label=name, linewidth=2,
                    linestyle="--" if name == "rrelu" else "-")
    ax.set(title="1. Training speed: the same network and batches", xlabel="epoch",
           ylabel="training loss (cross-entropy, nats)")
    ax.legend()

    ax = axes[0, 1]
    for lr, frac in result["dead"].items():
        ax.plot(np.arange(len(frac)), 100 * frac, "o-", label=f"SGD lr {lr:g}")
    ax.set(title="2. Dead ReLU units (0 on every training image)", xlabel="epoch",
           ylabel="dead hidden units (%)", ylim=(-2, 102))
    ax.legend()

    ax = axes[0, 2]
    names = list(result["one_sign"])
    shares = [100 * result["one_sign"][n] for n in names]
    ax.bar(names, shares, color=["tab:blue", "tab:orange"])
    for i, v in enumerate(shares):
        ax.text(i, v + 1.5, f"{v:.0f} %", ha="center", fontsize=11)
    ax.set(title="3. Weight updates of one sign per unit", xlabel="activation feeding the layer",
           ylabel="units whose incoming-weight update\nhas one sign for all weights (%)", ylim=(0, 112))
    ax.bar([], [], color="0.6", label="per-example gradients,\nsecond dense layer")
    ax.legend(loc="upper right", fontsize=9)

    ax = axes[1, 0]
    for inputs, color in (("sigmoid", "tab:blue"), ("tanh", "tab:orange")):
        p = result["paths"][inputs]
        ax.plot(p[:, 0], p[:, 1], "o-", markersize=3, color=color, label=f"inputs from {inputs}")
    ax.plot(1, -1, "*", color="black", markersize=14, label="target weights (1, -1)")
    ax.plot(0, 0, "s", color="0.3", label="start")
    ax.set(title="3. The zig-zag: SGD path of a unit's two weights", xlabel="weight w1", ylabel="weight w2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=9)

    ax = axes[1, 1]
    for inputs, color in (("sigmoid", "tab:blue"), ("tanh", "tab:orange")):
        p = result["paths"][inputs]
        ax.semilogy(np.hypot(p[:, 0] - 1, p[:, 1] + 1), color=color, label=f"inputs from {inputs}")
    ax.set(title="3. Distance to the target weights", xlabel="SGD step (one example)",
           ylabel="|w - (1, -1)|")
    ax.legend()

    ax = axes[1, 2]
    layer = L.rrelu()
    xs = np.linspace(-3, 3, 400)
    ys, _ = layer.apply({}, {}, xs[None, :], key=np.random.default_rng(0), train=True)
    ax.plot(xs, ys[0], ".", markersize=3, color="tab:green", label="train: a random slope per element")
    ax.plot(xs, layer(xs), color="black", label="eval: the mean slope (1/8 + 1/3) / 2")
    ax.set(title="rrelu: randomized leaky ReLU", xlabel="input x", ylabel="output y")
    ax.legend()
    fig.suptitle("Activations on the digits: speed, dead ReLUs, sigmoid's non-zero-centred outputs, rrelu")
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="activations_compared.png", help="where to save the figure (PNG)")
    parser.add_argument("--quick", action="store_true", help="the test size (600 images, a few epochs, on NumPy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, seed=args.seed)
    final = {name: float(c[-1]) for name, c in result["speed"].items()}
    print("final training loss: " + ", ".join(f"{n} {v:.3f}" for n, v in final.items()))
    (hi, d_hi), (lo, d_lo) = result["dead"].items()
    print(f"dead ReLU fraction: {np.nanmax(d_hi):.2f} (lr {hi:g}) vs {np.nanmax(d_lo):.2f} (lr {lo:g})")
    s = result["one_sign"]
    print(f"one-sign weight updates: {s['sigmoid']:.2f} of units fed by sigmoid vs {s['tanh']:.2f} fed by tanh")
    ps = result["path_stats"]
    print(f"zig-zag: same-sign steps {ps['sigmoid']['same_sign']:.2f} (sigmoid inputs) vs "
          f"{ps['tanh']['same_sign']:.2f} (tanh inputs); distance left {ps['sigmoid']['distance']:.3f} vs "
          f"{ps['tanh']['distance']:.3f}; path length {ps['sigmoid']['length']:.2f} vs {ps['tanh']['length']:.2f}")
    print(f"({result['seconds']:.0f} s)")
    plot(result, args.out)
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
