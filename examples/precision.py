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

Mixed precision is the recipe that fixes the stall: ``mixed-bfloat16`` and
``mixed-float16`` keep float32 parameters and optimizer state and compute the
model in 16 bits (:func:`fnn.precision.policy`). float16 has only 5 exponent
bits — gradients below ~6e-8 vanish, above 65504 overflow — so it also needs
*dynamic loss scaling* (:func:`fnn.optim.dynamic_loss_scale`): the loss is
multiplied by a scale S before the backward pass, the gradients divided by S
in float32; a step that overflows is skipped and halves S, and S doubles after
``--growth-interval`` clean steps. The run starts S at 2**24 on purpose, so
the first steps overflow and the scale is seen settling.

    python examples/precision.py --out precision.png
    python examples/precision.py --dtypes float32 mixed-float16
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fnn
from fnn import backend, losses, models, optim, train

DTYPES = ("float64", "float32", "bfloat16")  # every parameter and computation in that dtype
MIXED = ("mixed-bfloat16", "mixed-float16")  # float32 params, 16-bit compute


def _dtype(name: str) -> np.dtype:
    import ml_dtypes  # installed with JAX: NumPy's bfloat16

    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def run(dtypes: tuple[str, ...], epochs: int, hidden: tuple[int, ...] = (128, 64), seed: int = 0,
        growth_interval: int = 200) -> dict[str, dict]:
    import jax
    import ml_dtypes  # installed with JAX: NumPy's bfloat16

    import fnn.precision

    jax.config.update("jax_enable_x64", True)  # float64 on JAX is opt-in
    x, y = fnn.data.load_digits()
    x_train, y_train, x_test, y_test = fnn.data.train_val_split(x, y, 0.2, seed=0)
    model = models.mlp(hidden, num_classes=10)
    loss, opt = losses.softmax_cross_entropy, optim.adam(1e-3)
    # one float64 starting point, drawn on the host; each run gets it rounded to its dtype
    reference = train.init_state(model, opt, fnn.key(seed, backend="numpy"), (None,) + x.shape[1:], dtype=np.float64)
    results = {}
    for name in dtypes:
        mixed = name.startswith("mixed-")
        dtype = _dtype(name.removeprefix("mixed-"))  # the arithmetic's dtype
        stored = np.dtype(np.float32) if mixed else dtype  # params, optimizer state and data
        run_model = fnn.precision.policy(model, compute=dtype) if mixed else model
        run_opt = opt
        if name == "mixed-float16":  # start too high on purpose: watch the scale settle
            run_opt = optim.dynamic_loss_scale(opt, init_scale=2.0**24, growth_interval=growth_interval)
        params = backend.tree_cast(reference.params, stored)
        host = train.TrainState(params, reference.state, run_opt.init(params), reference.step, None)
        ts = jax.device_put(host)._replace(key=fnn.key(seed))  # onto the device, training with a JAX key
        start = time.perf_counter()
        ts, history = train.fit(run_model, loss, run_opt, ts, (x_train.astype(stored), y_train), epochs=epochs,
                                batch_size=32, validation_data=(x_test.astype(stored), y_test), progress=False)
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
        if name == "mixed-float16":
            results[name]["loss_scale"] = float(ts.opt_state.scale)
            results[name]["skipped_steps"] = int(ts.opt_state.skipped)
    return results


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = list(results)
    hidden = {}  # a curve drawn over an earlier one it agrees with to 1%: name -> the name it hides
    for i, name in enumerate(names):
        for earlier in names[:i]:
            a, b = np.asarray(results[name]["train_loss"]), np.asarray(results[earlier]["train_loss"])
            if name not in hidden and a.shape == b.shape and np.allclose(a, b, rtol=1e-2):
                hidden[name] = earlier
    for name, r in results.items():
        style = dict(linestyle="--", linewidth=2.5, alpha=0.8) if name in hidden.values() else {}
        ax.plot(range(1, len(r["train_loss"]) + 1), r["train_loss"], marker="o", markersize=3,
                label=f"{name}: test {r['test_accuracy']:.1%}", **style)
    if hidden:
        note = "; ".join(f"{name} lies on {earlier} (within 1%)" for name, earlier in hidden.items())
        ax.text(0.02, 0.02, note + ": the thick dashed curve is beneath", transform=ax.transAxes, fontsize=7,
                va="bottom", bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.set_title("MLP on digits, Adam: one dtype, or mixed precision")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="precision.png")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES + MIXED, default=list(DTYPES + MIXED),
                        help="mixed-*: float32 params, 16-bit compute (float16 with dynamic loss scaling)")
    parser.add_argument("--growth-interval", type=int, default=200, help="clean steps before the loss scale doubles")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64], help="hidden layer widths")
    args = parser.parse_args(argv)
    if not fnn.backend.HAS_JAX:
        raise SystemExit("precision.py compares dtypes under jax.jit and needs JAX (pip install 'fnn[jax]')")

    results = run(tuple(args.dtypes), args.epochs, tuple(args.hidden), growth_interval=args.growth_interval)
    print(f"{'dtype':14s} {'eps':>9s} {'bytes':>5s} {'final train loss':>16s} {'test acc':>8s} {'ms/epoch':>9s}")
    for name, r in results.items():
        print(f"{name:14s} {r['eps']:9.2e} {r['bytes']:5d} {r['train_loss'][-1]:16.4f} {r['test_accuracy']:8.1%} "
              f"{r['seconds_per_epoch'] * 1e3:9.1f}")
        if "loss_scale" in r:
            print(f"{'':14s} dynamic loss scale: started at 2**24, ended at {r['loss_scale']:g}; "
                  f"{r['skipped_steps']} steps skipped for inf/NaN gradients")
    plot(results, args.out)
    print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
