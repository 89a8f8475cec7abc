"""Vanishing gradients through time: a plain RNN against an LSTM on the adding problem.

The adding problem (Hochreiter & Schmidhuber, 1997) needs memory. Each input
step carries two numbers: a value drawn uniformly from [0, 1) and a marker.
Exactly two steps are marked, one among the first tenth of the sequence and
one among the last tenth; the target is the sum of the two marked values. To
get it right, the network must carry the early value across most of the
sequence.

Both models are trained the same way: the hand-written backprop through time
(``fnn.value_and_grad(method="manual")``), gradients clipped with
``clip_by_global_norm`` (which tames exploding gradients, but cannot revive
vanishing ones), then Adam. The script prints, for a few time steps t, the
norm of the gradient of the loss with respect to the input x_t, at
initialisation and after training, and saves the whole curve as a PNG:

* the RNN's gradient shrinks geometrically as t moves away from the end (each
  step back multiplies it by ``w_h^T diag(tanh')``), so the early marked value
  never gets a learning signal. The RNN learns only the late value and its
  error stays near ``var(U[0,1]) = 1/12 = 0.083``;
* the LSTM's cell carries the gradient back multiplied by the forget gate
  alone (initialised near 1 by its forget bias), so the early steps get a
  signal of the same size as the late ones, and it learns the sum.

The mean predictor has a mean squared error of 1/6 = 0.167; a prediction
counts as correct when it is within 0.04 of the target.

    python examples/sequence.py [--quick] [--time 60] [--steps 1200] [--out sequence.png]

The default run takes about 45 seconds on 2 CPU cores. ``--quick`` (the
test's size) trains 30-step sequences for 200 steps: too short to learn the
sum, long enough to show the gradient's reach. The default run prints lines
such as::

    t=0 / t=59  rnn 8.3e-08   lstm 9.0e-01
    rnn       0.0948                    0.086        9.0s
    lstm      0.0013                    0.756       21.4s
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
import fnn.optim
from fnn import layers as L

TOLERANCE = 0.04  # a prediction within this of the target counts as correct


@functools.partial(jax.jit, static_argnums=(1, 2))
def adding_batch(key: Any, batch: int, time_steps: int) -> tuple[jax.Array, jax.Array]:
    """Inputs ``(batch, time, 2)`` (value, marker) and targets ``(batch, 1)``."""
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch, time_steps), jnp.float32)  # the same stream under jax_enable_x64
    window = max(1, time_steps // 10)
    first = jax.random.randint(k_first, (batch, 1), 0, window, jnp.int32)
    second = jax.random.randint(k_second, (batch, 1), time_steps - window, time_steps, jnp.int32)
    steps = jnp.arange(time_steps)[None, :]
    marked = (steps == first) | (steps == second)
    x = jnp.stack([values, marked.astype(values.dtype)], axis=-1)
    return x, jnp.sum(values * marked, axis=1, keepdims=True)


def input_gradient_norms(model: fnn.Layer, params: Any, state: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """``||dL/dx_t||`` for every t (over the batch and the features), by the
    hand-written backward pass: the picture of how far back the signal reaches."""
    loss = fnn.losses.mse
    pred, _, residuals = model.fwd(params, state, x)
    _, loss_residuals = loss.fwd(pred, y)
    _, dx = model.bwd(params, residuals, loss.bwd(loss_residuals, 1.0))
    return jnp.sqrt(jnp.sum(dx * dx, axis=(0, 2)))


def train(cell: fnn.Layer, *, time_steps: int, steps: int, batch: int, lr: float, clip: float, seed: int) -> dict:
    """Train ``serial(cell, dense(1))``; returns the loss, accuracy and gradient norms."""
    model = L.serial(cell, L.dense(1))
    # init on the host from a NumPy key (no compilation for the orthogonal init's
    # QR), then move the params to the device; a JAX key works the same way
    params, state = jax.device_put(model.init(np.random.default_rng(seed), (batch, time_steps, 2)))
    opt = fnn.optim.chain(fnn.optim.clip_by_global_norm(clip), fnn.optim.adam(lr))
    opt_state = opt.init(params)
    grad_fn = fnn.value_and_grad(model, fnn.losses.mse, method="manual")

    @jax.jit
    def step(params, opt_state, key):
        x, y = adding_batch(key, batch, time_steps)
        (loss, _), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return fnn.optim.apply_updates(params, updates), opt_state, loss

    x_eval, y_eval = adding_batch(jax.random.key(seed + 1000), 512, time_steps)

    @jax.jit
    def evaluate(params):
        pred, _ = model.apply(params, state, x_eval)
        error = pred - y_eval
        norms = input_gradient_norms(model, params, state, x_eval, y_eval)
        return jnp.mean(error * error), jnp.mean(jnp.abs(error) < TOLERANCE), norms

    _, _, norms_init = evaluate(params)
    start = time.perf_counter()
    data_key = jax.random.key(seed + 1)
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(data_key, i))
    mse, accuracy, norms = evaluate(params)
    if not np.isfinite(float(mse)):
        raise FloatingPointError(f"{cell.name}: the evaluation loss is not finite after {steps} steps")
    return {
        "mse": float(mse),
        "accuracy": float(accuracy),
        "norms_init": np.asarray(norms_init),
        "norms": np.asarray(norms),
        "seconds": time.perf_counter() - start,
    }


def run(*, time_steps: int = 60, hidden: int = 32, steps: int = 1200, batch: int = 64, lr: float = 3e-3,
        clip: float = 1.0, seed: int = 0) -> dict[str, dict]:
    """Train a tanh RNN and an LSTM of the same width on the same data stream."""
    settings = dict(time_steps=time_steps, steps=steps, batch=batch, lr=lr, clip=clip, seed=seed)
    return {"rnn": train(L.rnn(hidden), **settings), "lstm": train(L.lstm(hidden), **settings)}


def report(results: dict[str, dict], time_steps: int) -> str:
    """The gradient-norm table and the final scores, as printed."""
    shown = sorted({0, time_steps // 10, time_steps // 4, time_steps // 2, 3 * time_steps // 4, time_steps - 1})
    lines = ["||dL/dx_t|| (norm over the 512 evaluation sequences), at initialisation and after training", ""]
    lines.append(f"{'t':>5s} {'rnn init':>12s} {'rnn trained':>12s} {'lstm init':>12s} {'lstm trained':>12s}")
    for t in shown:
        row = [results[m][k][t] for m in ("rnn", "lstm") for k in ("norms_init", "norms")]
        lines.append(f"{t:5d} " + " ".join(f"{v:12.3e}" for v in row))
    ratio = {m: r["norms"][0] / r["norms"][-1] for m, r in results.items()}
    lines.append(f"{'t=0 / t=' + str(time_steps - 1):>18s}  rnn {ratio['rnn']:.1e}   lstm {ratio['lstm']:.1e}")
    lines.append("")
    lines.append(f"{'model':6s} {'eval mse':>9s} {'accuracy (|err| < 0.04)':>24s} {'train time':>11s}")
    for name, r in results.items():
        lines.append(f"{name:6s} {r['mse']:9.4f} {r['accuracy']:24.3f} {r['seconds']:10.1f}s")
    lines.append("(predicting the mean: mse 0.167; remembering only the late value: mse 0.083)")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: str) -> None:
    """Save the per-step gradient norms of both models on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, color in (("rnn", "tab:red"), ("lstm", "tab:blue")):
        r = results[name]
        t = np.arange(len(r["norms"]))
        ax.semilogy(t, r["norms_init"], color=color, linestyle="--", alpha=0.6, label=f"{name}, at init")
        ax.semilogy(t, r["norms"], color=color, label=f"{name}, trained (mse {r['mse']:.3f})")
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL/dx_t||")
    ax.set_title("Adding problem: how far back the gradient reaches")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


QUICK = {"time": 30, "hidden": 16, "steps": 200, "batch": 32}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"the test's size: {QUICK} unless given")
    parser.add_argument("--time", type=int, default=None, help="sequence length T (default 60)")
    parser.add_argument("--hidden", type=int, default=None, help="state size (default 32)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 1200)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="clip_by_global_norm threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sequence.png", help="where to save the PNG")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else {"time": 60, "hidden": 32, "steps": 1200, "batch": 64}
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.time < 2:
        parser.error(f"--time must be at least 2; got {args.time}")
    results = run(time_steps=args.time, hidden=args.hidden, steps=args.steps, batch=args.batch, lr=args.lr,
                  clip=args.clip, seed=args.seed)
    print(report(results, args.time))
    plot(results, args.out)
    print(f"\nsaved {args.out}")
    return results


if __name__ == "__main__":
    main()
