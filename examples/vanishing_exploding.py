"""Vanishing and exploding gradients, and three remedies: clipping, ReLU, an identity start.

Part 1 (vanishing, through depth). A deep sigmoid network (eight hidden
layers of 32 units) is trained on the bundled digits with
``fit(..., grad_stats=True)``; ``History.grad_stats`` gives each layer's
weight-gradient norm per epoch. Each layer back multiplies the gradient by
``w^T diag(sigmoid')`` with ``sigmoid' <= 1/4``, so the first layer's gradient
is orders of magnitude smaller than the last's: the early layers barely
learn. The same depth with ReLU (He init) keeps the norms within one order.

Part 2 (exploding, through time). A ReLU RNN whose recurrent weights start
at the identity (an IRNN) reads 50-step sequences of the adding problem (two
marked values among uniform noise; the target is their sum). Its state adds
up the inputs, so the loss and its gradient grow with the length. SGD with
momentum 0.9 at learning rate 0.01: without clipping the gradient norm passes
1e3 and the first updates throw the weights far off (the loss jumps by orders
of magnitude, or turns to inf / NaN); with ``clip_by_global_norm(1.0)`` the
same run's loss stays finite and falls.

Part 3 (long memory). The same ReLU RNN (the same clipped SGD) from two starts of
``w_h``: the identity (IRNN; Le, Jaitly & Hinton, 2015) against the default
orthogonal start. The identity copies the state from step to step, so the
early marked value survives to the end and the IRNN solves the task (its mean
squared error falls far below ``1/12 = 0.083``, the error of a network that
remembers only the late value); the plain start stays near that plateau.

    python examples/vanishing_exploding.py [--quick] [--out vanishing_exploding.png]

The default run takes about 40 seconds (12 s of CPU time) on 2 busy CPU
cores (``--quick``: a few seconds of CPU). It prints::

    deep sigmoid: first / last hidden layer gradient norm 7.2e-05 (relu 1.9e+00)
    without clipping: max gradient norm 4.3e+03, final loss nan
    with clipping: max loss 20, final loss 0.002
    adding problem mse: irnn 0.002 vs plain rnn 0.086
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import fnn
import fnn.models
import fnn.optim
from fnn import initializers, layers as L, train
from fnn.data import load_digits

SETTINGS = {
    # depth/epochs: part 1; time/hidden/batch/steps: parts 2 and 3
    "default": dict(depth=8, width=32, epochs=12, time_steps=50, hidden=32, batch=64, steps=1500),
    "quick": dict(depth=6, width=16, epochs=2, time_steps=20, hidden=16, batch=32, steps=600),
}


# --- part 1: per-layer gradient norms of a deep network -----------------------------------------------


def layer_gradient_norms(activation: fnn.Layer, *, depth: int, width: int, epochs: int, seed: int) -> np.ndarray:
    """Train ``mlp((width,) * depth, activation)`` on the digits with SGD (learning rate 0.1);
    returns the weight-gradient norms, ``(epochs, depth + 1)`` (input layer first)."""
    x, y = load_digits()
    model = fnn.models.mlp((width,) * depth, 10, activation=activation)
    opt = fnn.optim.sgd(0.1)
    # NumPy: for a network this small, eager steps cost less than compiling them
    state = train.init_state(model, opt, fnn.key(seed, backend="numpy"), (None, *x.shape[1:]))
    _, history = train.fit(model, fnn.losses.softmax_cross_entropy, opt, state, (x, y), epochs=epochs,
                           batch_size=32, grad_stats=True, progress=False)
    names = ["dense"] + [f"dense_{i}" for i in range(1, depth + 1)]
    return np.array([[epoch[f"{name}/w"]["grad_norm"] for name in names] for epoch in history.grad_stats])


# --- parts 2 and 3: a ReLU RNN on the adding problem --------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2))
def adding_batch(key: Any, batch: int, time_steps: int) -> tuple[jax.Array, jax.Array]:
    """Inputs ``(batch, time, 2)`` (a value in [0, 1), a 0/1 marker) and targets ``(batch, 1)``:
    one marked step in the first tenth, one in the last, the target their sum."""
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch, time_steps), jnp.float32)  # float32 and int32 whatever
    window = max(1, time_steps // 10)  # jax_enable_x64 says: the same stream in the tests as in the script
    first = jax.random.randint(k_first, (batch, 1), 0, window, jnp.int32)
    second = jax.random.randint(k_second, (batch, 1), time_steps - window, time_steps, jnp.int32)
    marked = (jnp.arange(time_steps)[None, :] == first) | (jnp.arange(time_steps)[None, :] == second)
    return jnp.stack([values, marked.astype(values.dtype)], axis=-1), jnp.sum(values * marked, 1, keepdims=True)


def rnn_model(hidden: int, recurrent_init: initializers.Initializer) -> fnn.Layer:
    return L.serial(L.rnn(hidden, L.relu, recurrent_init=recurrent_init), L.dense(1))


def rnn_trainer(model: fnn.Layer, optimizer: Any, *, time_steps: int, batch: int, steps: int, seed: int):
    """``train(params, state) -> {"loss", "grad_norm"}``: ``steps`` updates on fresh adding-problem
    batches (the same stream for every call) in one compiled scan, compiled once for every start of
    the same network; ``loss`` is the per-step training loss, ``grad_norm`` the gradient's global
    norm before any clipping."""
    grad_fn = fnn.value_and_grad(model, fnn.losses.mse, method="manual")
    keys = jax.random.split(jax.random.key(seed + 1), steps)

    @jax.jit
    def scan(params, state):
        def step(carry, key):
            params, opt_state = carry
            x, y = adding_batch(key, batch, time_steps)
            (loss, _), grads = grad_fn(params, state, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (fnn.optim.apply_updates(params, updates), opt_state), (loss, fnn.optim.global_norm(grads))

        return jax.lax.scan(step, (params, optimizer.init(params)), keys)[1]

    def train_from(variables: tuple[Any, Any]) -> dict[str, np.ndarray]:
        loss, norm = scan(*variables)
        return {"loss": np.asarray(loss), "grad_norm": np.asarray(norm)}

    return train_from


def init_rnn(model: fnn.Layer, time_steps: int, seed: int) -> tuple[Any, Any]:
    """``(params, state)`` drawn on the host (no compilation), then put on the device."""
    return jax.device_put(model.init(np.random.default_rng(seed), (None, time_steps, 2)))


def run(*, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Every part's measurements (see the module docstring)."""
    cfg = SETTINGS["quick" if quick else "default"]
    start = time.perf_counter()
    depth = dict(depth=cfg["depth"], width=cfg["width"], epochs=cfg["epochs"], seed=seed)
    sigmoid_norms = layer_gradient_norms(L.sigmoid, **depth)
    relu_norms = layer_gradient_norms(L.relu, **depth)

    rnn = dict(time_steps=cfg["time_steps"], batch=cfg["batch"], steps=cfg["steps"], seed=seed)
    irnn = rnn_model(cfg["hidden"], initializers.identity())
    sgd = fnn.optim.sgd(0.01, momentum=0.9)
    unclipped = rnn_trainer(irnn, sgd, **rnn)
    clipped = rnn_trainer(irnn, fnn.optim.chain(fnn.optim.clip_by_global_norm(1.0), sgd), **rnn)
    irnn_start = init_rnn(irnn, cfg["time_steps"], seed)
    # part 3: the same network from the default orthogonal w_h (its compiled training is reused)
    plain_start = init_rnn(rnn_model(cfg["hidden"], initializers.orthogonal()), cfg["time_steps"], seed)
    memory = {"irnn": clipped(irnn_start), "plain rnn": clipped(plain_start)}
    return {"settings": cfg, "sigmoid_norms": sigmoid_norms, "relu_norms": relu_norms,
            "unclipped": unclipped(irnn_start), "clipped": memory["irnn"], "memory": memory,
            "seconds": time.perf_counter() - start}


def final_loss(curve: np.ndarray) -> float:
    """The mean training loss over the last tenth of the steps (NaN once it has diverged)."""
    return float(np.mean(curve[-max(1, len(curve) // 10):]))


def report(r: dict[str, Any]) -> str:
    """The measured results as plain lines."""
    ratio = {name: r[f"{name}_norms"][:, 0] / r[f"{name}_norms"][:, -2] for name in ("sigmoid", "relu")}
    lines = [
        "weight-gradient norm per layer (input layer first), mean over the epochs:",
        "  sigmoid " + " ".join(f"{v:.1e}" for v in r["sigmoid_norms"].mean(0)),
        "  relu    " + " ".join(f"{v:.1e}" for v in r["relu_norms"].mean(0)),
        f"deep sigmoid: first / last hidden layer gradient norm {np.max(ratio['sigmoid']):.1e} "
        f"(relu {np.min(ratio['relu']):.1e})",
        f"without clipping: max gradient norm {np.nanmax(r['unclipped']['grad_norm']):.1e}, "
        f"final loss {final_loss(r['unclipped']['loss']):.3g}",
        f"with clipping: max loss {np.max(r['clipped']['loss']):.2g}, "
        f"final loss {final_loss(r['clipped']['loss']):.3f}",
        f"adding problem mse: irnn {final_loss(r['memory']['irnn']['loss']):.3f} vs plain rnn "
        f"{final_loss(r['memory']['plain rnn']['loss']):.3f}",
        f"({r['seconds']:.0f} s)",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str) -> None:
    """The four panels: per-layer norms, loss and gradient norm with and without clipping, IRNN vs plain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    norms = r["sigmoid_norms"]
    epochs = np.arange(1, len(norms) + 1)
    colors = plt.cm.viridis(np.linspace(0, 0.9, norms.shape[1]))
    for layer in range(norms.shape[1]):
        label = "layer 1 (input)" if layer == 0 else ("output layer" if layer == norms.shape[1] - 1 else None)
        ax.semilogy(epochs, norms[:, layer], color=colors[layer], marker=".", label=label or f"layer {layer + 1}")
    ax.semilogy(epochs, r["relu_norms"][:, 0], "k--", label="layer 1, relu net")
    ax.set(title=f"Vanishing: {norms.shape[1] - 1} sigmoid layers on the digits", xlabel="epoch",
           ylabel="||dL/dW|| (mean over the epoch)")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * 1e3)  # room for the legend above the curves
    ax.legend(fontsize=7, ncol=3, loc="upper center")

    steps = np.arange(1, len(r["clipped"]["loss"]) + 1)
    runs = (("unclipped", "tab:red", "no clipping"), ("clipped", "tab:blue", "clip_by_global_norm(1)"))
    for key, color, label in runs:
        marker = "o" if key == "unclipped" else None  # a run that turns NaN after a step or two is only points
        axes[0, 1].loglog(steps, r[key]["loss"], color=color, marker=marker, markersize=4, label=label)
        axes[1, 0].loglog(steps, r[key]["grad_norm"], color=color, marker=marker, markersize=4, label=label)
    diverged = np.flatnonzero(~np.isfinite(r["unclipped"]["loss"]))
    if diverged.size:
        axes[0, 1].axvline(diverged[0] + 1, color="tab:red", linestyle=":",
                           label=f"no clipping: NaN from step {diverged[0] + 1}")
    t = r["settings"]["time_steps"]
    axes[0, 1].set(title=f"Exploding: IRNN, SGD (lr 0.01, momentum 0.9), T = {t}", xlabel="step (log scale)",
                   ylabel="training loss (mse)")
    axes[1, 0].axhline(1e3, color="gray", linestyle=":", label="1e3")
    axes[1, 0].set(title="Gradient norm before clipping", xlabel="step (log scale)", ylabel="||g|| (global norm)")
    for ax in (axes[0, 1], axes[1, 0]):
        ax.legend(fontsize=8)

    ax = axes[1, 1]
    for name, color in (("irnn", "tab:green"), ("plain rnn", "tab:gray")):
        loss = r["memory"][name]["loss"]
        smooth = np.convolve(loss, np.ones(25) / 25, mode="valid") if len(loss) > 50 else loss
        ax.semilogy(np.arange(1, len(smooth) + 1), smooth, color=color,
                    label=f"{name} (w_h = {'identity' if name == 'irnn' else 'orthogonal'}): {final_loss(loss):.3f}")
    ax.axhline(1 / 12, color="k", linestyle=":", label="1/12: only the late value remembered")
    ax.set(title=f"Long memory: ReLU RNN, clipped SGD, T = {t}", xlabel="step", ylabel="training loss (mse, smoothed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small version the tests run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="vanishing_exploding.png", help="where to save the PNG")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, seed=args.seed)
    print(report(results))
    plot(results, args.out)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
