"""MLP train step (784-512-512-10, batch 128, float32, SGD): hand-written
backprop vs autodiff, both jitted, plus the NumPy backend, timed side by side.

    python -m benchmarks.mlp_step
"""

from __future__ import annotations

import argparse

import numpy as np

import fnn
from benchmarks.timing import environment, median_time, print_table
from fnn import layers as L


def build(sizes=(512, 512), classes=10) -> fnn.Layer:
    hidden = [layer for width in sizes for layer in (L.dense(width), L.relu)]
    return L.serial(*hidden, L.dense(classes))


def sgd_step(model, method, lr=0.01):
    grad_fn = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, method)

    def step(params, state, x, y):
        (loss, state), grads = grad_fn(params, state, x, y)
        return fnn.backend.tree_map(lambda p, g: p - lr * g, params, grads), state, loss

    return step


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    print(environment())
    model = build()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    params, state = model.init(jax.random.key(0), (None, 784))
    jx, jy = jnp.asarray(x), jnp.asarray(y)

    # NumPy first: once XLA has run, its idle worker threads compete with
    # NumPy's BLAS threads on a small machine and slow NumPy down many times.
    np_params = fnn.backend.tree_map(np.array, params)
    np_step = sgd_step(model, "manual")
    numpy_time = median_time(lambda: np_step(np_params, state, x, y), repeats=args.repeats // 2)
    rows = []
    for method in ("autodiff", "manual"):
        step = jax.jit(sgd_step(model, method))
        rows.append((f"fnn {method} (jit)", median_time(lambda f=step: f(params, state, jx, jy), repeats=args.repeats)))
    rows.append(("fnn manual (NumPy backend)", numpy_time))
    print_table(f"MLP 784-512-512-10, batch {args.batch}", rows, baseline="fnn autodiff (jit)")
    ratio = rows[1][1] / rows[0][1]
    print(f"\nmanual / autodiff step time: {ratio:.3f}")
    return dict(rows)


if __name__ == "__main__":
    main()
