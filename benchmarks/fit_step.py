"""Per-step time of ``fnn.train.fit`` (a whole epoch in one compiled call:
``lax.scan`` over the shuffled batches) against a plain Python loop calling a
jitted, state-donating ``train_step`` once per batch, on the same model, data
and optimizer (SGD).

* tiny MLP 2-16-16-1, batch 32, mean squared error: dispatch dominates, so
  fusing the epoch should make each step at least 5x cheaper;
* MLP 784-512-512-10, batch 128, softmax cross-entropy: compute dominates,
  the fused epoch should be no slower.

Compilation is excluded (one warm-up epoch each); times are medians over
several epochs, divided by the steps per epoch. A fit epoch's time includes
everything ``fit`` does between epochs (shuffling on the host, copying the
per-step losses back, the epoch record).

    python -m benchmarks.fit_step
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fnn
from benchmarks.timing import block, environment
from fnn import layers as L
from fnn import losses, optim, train


def mlp(sizes: tuple[int, ...], outputs: int) -> fnn.Layer:
    hidden = [layer for width in sizes for layer in (L.dense(width), L.relu)]
    return L.serial(*hidden, L.dense(outputs))


def python_loop_epoch(step, ts, xb, yb):
    """One epoch as a host loop: one dispatch of the jitted step per batch."""
    for i in range(len(xb)):
        ts, out = step(ts, xb[i], yb[i])
    return ts, out


def per_step_times(model, loss, x, y, batch_size, epochs) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    opt = optim.sgd(0.01)
    n_steps = len(x) // batch_size
    ts = train.init_state(model, opt, fnn.key(0), (None,) + x.shape[1:])

    # fit: a warm-up epoch (compiles), then one call of `epochs` epochs, timed epoch by epoch
    ts_fit, _ = train.fit(model, loss, opt, ts, (x, y), epochs=1, batch_size=batch_size, metrics={}, progress=False)
    _, history = train.fit(model, loss, opt, ts_fit, (x, y), epochs=epochs, batch_size=batch_size, metrics={},
                           progress=False)
    fit_times = [seconds / n_steps for seconds in history["seconds"]]

    # the Python loop: the same step, jitted with the state donated; batches already on the device
    step = jax.jit(train.train_step(model, loss, opt, metrics={}), donate_argnums=0)
    order = np.random.default_rng(0).permutation(len(x))[: n_steps * batch_size].reshape(n_steps, batch_size)
    xb, yb = jnp.asarray(x[order]), jnp.asarray(y[order])
    xs, ys = [xb[i] for i in range(n_steps)], [yb[i] for i in range(n_steps)]
    loop_ts = jax.tree.map(lambda a: a.copy(), ts)
    loop_ts, _ = python_loop_epoch(step, loop_ts, xs, ys)
    block(loop_ts)
    loop_times = []
    for _ in range(epochs):
        start = time.perf_counter()
        loop_ts, out = python_loop_epoch(step, loop_ts, xs, ys)
        block((loop_ts, out))
        loop_times.append((time.perf_counter() - start) / n_steps)
    return {"fit": statistics.median(fit_times), "loop": statistics.median(loop_times)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per contender")
    args = parser.parse_args(argv)
    print(environment())
    rng = np.random.default_rng(0)
    cases = {
        "tiny MLP 2-16-16-1, batch 32": (
            mlp((16, 16), 1), losses.mse, rng.standard_normal((32 * 256, 2)).astype(np.float32),
            rng.standard_normal((32 * 256, 1)).astype(np.float32), 32,
        ),
        "MLP 784-512-512-10, batch 128": (
            mlp((512, 512), 10), losses.softmax_cross_entropy, rng.standard_normal((128 * 24, 784)).astype(np.float32),
            rng.integers(0, 10, 128 * 24).astype(np.int32), 128,
        ),
    }
    results = {}
    print(f"\n{'model':34s} {'fit (scan) us/step':>19s} {'python loop us/step':>20s} {'loop / fit':>11s}")
    for name, (model, loss, x, y, batch) in cases.items():
        t = per_step_times(model, loss, x, y, batch, args.epochs)
        results[name] = t
        print(f"{name:34s} {t['fit'] * 1e6:19.1f} {t['loop'] * 1e6:20.1f} {t['loop'] / t['fit']:11.2f}")
    return results


if __name__ == "__main__":
    main()
