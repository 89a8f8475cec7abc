"""Numerical precision: the same network trained in float64, float32 and bfloat16.

Deep learning needs far less precision than scientific computing: float32
(24-bit significand) trains exactly as well as float64 at half the memory,
and bfloat16 (float32's 8-bit exponent with only an 8-bit significand) still
learns with half the memory again, which is why accelerators compute in it.
bfloat16's spacing at 1 is 2**-7 ≈ 0.008, so an update smaller than about
0.4% of a weight is rounded away: plain bfloat16 training stalls earlier
than float32 (mixed-precision recipes keep a float32 copy of the weights).

An MLP is trained on the bundled digits with Adam, from the same initial
weights rounded to each dtype, with data, parameters, optimizer state and
arithmetic all in that dtype. The script prints each dtype's machine
epsilon, memory per parameter, test accuracy and time per epoch, and saves
the loss curves.

    python examples/precision.py --out precision.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fnn
from fnn import backend, losses, models, optim, train

DTYPES = ("float64", "float32", "bfloat16")


def run(dtypes: tuple[str, ...], epochs: int, hidden: tuple[int, ...] = (128, 64), seed: int = 0) -> dict[str, dict]:
    import jax
    import ml_dtypes  # installed with JAX: NumPy's bfloat16

    jax.config.update("jax_enable_x64", True)  # float64 on JAX is opt-in
    x, y = fnn.data.load_digits()
    x_train, y_train, x_test, y_test = fnn.data.train_val_split(x, y, 0.2, seed=0)
    model = models.mlp(hidden, num_classes=10)
    loss, opt = losses.softmax_cross_entropy, optim.adam(1e-3)
    # one float64 starting point, drawn on the host; each run gets it rounded to its dtype
    reference = train.init_state(model, opt, fnn.key(seed, backend="numpy"), (None,) + x.shape[1:], dtype=np.float64)
    results = {}
    for name in dtypes:
        dtype = np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)
        params = backend.tree_cast(reference.params, dtype)
        host = train.TrainState(params, reference.state, opt.init(params), reference.step, None)
        ts = jax.device_put(host)._replace(key=fnn.key(seed))  # onto the device, training with a JAX key
        start = time.perf_counter()
        ts, history = train.fit(model, loss, opt, ts, (x_train.astype(dtype), y_train), epochs=epochs, batch_size=32,
                                validation_data=(x_test.astype(dtype), y_test), progress=False)
        seconds = time.perf_counter() - start
        info = ml_dtypes.finfo(dtype)
        results[name] = {
            "eps": float(info.eps),
            "bytes": dtype.itemsize,
            "train_loss": history["train_loss"],
            "test_accuracy": history["val_accuracy"][-1],
            "seconds_per_epoch": float(np.median(history["seconds"])),
            "total_seconds": seconds,
            "param_dtype": str(backend.tree_leaves(ts.params)[0].dtype),
        }
    return results


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in results.items():
        ax.plot(range(1, len(r["train_loss"]) + 1), r["train_loss"], marker="o", markersize=3,
                label=f"{name}: test {r['test_accuracy']:.1%}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.set_title("MLP on digits, Adam, everything in one dtype")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="precision.png")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64], help="hidden layer widths")
    args = parser.parse_args(argv)
    if not fnn.backend.HAS_JAX:
        raise SystemExit("precision.py compares dtypes under jax.jit and needs JAX (pip install 'fnn[jax]')")

    results = run(tuple(args.dtypes), args.epochs, tuple(args.hidden))
    print(f"{'dtype':9s} {'eps':>9s} {'bytes':>5s} {'final train loss':>16s} {'test acc':>8s} {'ms/epoch':>9s}")
    for name, r in results.items():
        print(f"{name:9s} {r['eps']:9.2e} {r['bytes']:5d} {r['train_loss'][-1]:16.4f} {r['test_accuracy']:8.1%} "
              f"{r['seconds_per_epoch'] * 1e3:9.1f}")
    plot(results, args.out)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
