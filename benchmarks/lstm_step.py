"""LSTM training step: hand-written backprop through time vs ``jax.grad``.

One jit-compiled training step (loss, gradients, Adam update) of
``serial(lstm(128), dense(10))`` on a batch of 64 sequences of 50 steps with
32 features, float32. The two contenders differ only in how the gradient is
computed: ``fnn.value_and_grad(method="manual")`` (the layer's reverse scan)
or ``method="autodiff"`` (``jax.grad`` of the forward scan). The target is a
ratio manual / autodiff of at most 1.1 on CPU.

    python -m benchmarks.lstm_step [--batch 64] [--time 50] [--hidden 128] [--repeats 30]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import fnn
import fnn.optim
from benchmarks.timing import environment, median_time, print_table


def make_step(model, method: str, opt, state):
    grad_fn = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, method=method)

    @jax.jit
    def step(params, opt_state, x, y):
        (loss, _), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return fnn.optim.apply_updates(params, updates), opt_state, loss

    return step


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    model = fnn.layers.serial(fnn.layers.lstm(args.hidden), fnn.layers.dense(10))
    params, state = model.init(jax.random.key(0), (args.batch, args.time, args.features))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.time, args.features)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, args.batch))
    opt = fnn.optim.adam(1e-3)
    opt_state = opt.init(params)

    steps = {m: make_step(model, m, opt, state) for m in ("manual", "autodiff")}
    # same numbers first: one step of each from the same start
    p_m, _, loss_m = steps["manual"](params, opt_state, x, y)
    p_a, _, loss_a = steps["autodiff"](params, opt_state, x, y)
    drift = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p_m), jax.tree.leaves(p_a)))
    print(environment())
    print(f"loss manual {float(loss_m):.6f}  autodiff {float(loss_a):.6f}  "
          f"max |param difference| after one step {drift:.2e}")

    times = {}
    for name, step in steps.items():
        times[name] = median_time(lambda step=step: step(params, opt_state, x, y), repeats=args.repeats)
    labels = {"manual": "hand-written BPTT (manual)", "autodiff": "jax.grad (autodiff)"}
    rows = [(labels[name], t) for name, t in times.items()]
    print_table(
        f"LSTM train step: batch {args.batch}, T {args.time}, hidden {args.hidden}, features {args.features}, float32",
        rows,
        baseline="jax.grad (autodiff)",
    )
    ratio = times["manual"] / times["autodiff"]
    print(f"\nratio manual / autodiff = {ratio:.3f} (target <= 1.1 on CPU)")
    return times


if __name__ == "__main__":
    main()
