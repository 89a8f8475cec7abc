"""LeNet training step: hand-written backward vs ``jax.grad``, and fnn's NumPy
backend vs a plain im2col implementation.

Model: ``fnn.models.lenet5(padding="valid")`` -- the classic LeNet-5 layout on
28x28x1 inputs (conv 6@5x5 "same", max pool 2, conv 16@5x5, max pool 2,
dense 120, 84, 10), batch 64, float32, softmax cross-entropy, one SGD update.

1. JAX, one ``jax.jit``-compiled step each: gradients from the layers'
   hand-written rules (``fnn.value_and_grad(method="manual")``) or from
   ``jax.grad`` (``method="autodiff"``). Target: manual / autodiff <= 1.05 on CPU.
   The contenders are timed in alternating rounds (the best round's median
   counts), so that load from other processes hits both alike.
2. NumPy, no JAX arrays: fnn's manual step against a straightforward,
   loop-free im2col reference written below (``sliding_window_view`` for
   im2col, ``np.add.at`` for col2im, the textbook pooling and dense rules).
   Both compute the same gradients (checked before timing).

    python -m benchmarks.conv_step [--batch 64] [--repeats 20] [--rounds 5] [--skip-numpy]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import fnn
import fnn.models
import fnn.optim
from benchmarks.timing import environment, median_time, print_table

LR = 0.01


# --------------------------------------------------------------------------- #
# The straightforward NumPy reference (the same LeNet, the same gradients)
# --------------------------------------------------------------------------- #


def im2col(x, k, pad):
    """(N, H, W, C) -> (N*OH*OW, k*k*C), stride 1, ``pad`` pixels on every side."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))  # (N, OH, OW, C, k, k)
    n, oh, ow, c = windows.shape[:4]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, k * k * c), (n, oh, ow)


def col2im(dcols, x_shape, k, pad):
    """The adjoint of :func:`im2col`, with ``np.add.at`` (repeated indices add up)."""
    n, h, w, c = x_shape
    oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    rows = (np.arange(oh)[:, None] + np.arange(k)[None, :])[:, None, :, None]  # (OH, 1, k, 1)
    cols = (np.arange(ow)[:, None] + np.arange(k)[None, :])[None, :, None, :]  # (1, OW, 1, k)
    dx = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dcols.dtype)
    np.add.at(dx, (slice(None), rows, cols, slice(None)), dcols.reshape(n, oh, ow, k, k, c))
    return dx[:, pad : pad + h, pad : pad + w, :]


def conv_fwd(x, w, b, pad):
    k, _, _, f = w.shape
    cols, (n, oh, ow) = im2col(x, k, pad)
    return (cols @ w.reshape(-1, f) + b).reshape(n, oh, ow, f), (x.shape, cols)


def conv_bwd(w, cache, dy, pad):
    x_shape, cols = cache
    k, _, _, f = w.shape
    dy2 = dy.reshape(-1, f)
    dw = (cols.T @ dy2).reshape(w.shape)
    dx = col2im(dy2 @ w.reshape(-1, f).T, x_shape, k, pad)
    return dw, dy2.sum(0), dx


def pool_fwd(x):
    """2x2 max pool, stride 2, as im2col + argmax (the textbook way)."""
    n, h, w, c = x.shape
    win = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4)
    arg = win.argmax(axis=1)
    return win[np.arange(win.shape[0]), arg].reshape(n, h // 2, w // 2, c), (x.shape, arg)


def pool_bwd(cache, dy):
    (n, h, w, c), arg = cache
    dwin = np.zeros((arg.size, 4), dy.dtype)
    dwin[np.arange(arg.size), arg] = dy.ravel()
    return dwin.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, h, w, c)


def reference_step(p, x, labels):
    """Loss, gradients and SGD update of the LeNet, written out by hand."""
    a1, c1 = conv_fwd(x, p["conv2d"]["w"], p["conv2d"]["b"], 2)
    r1 = np.maximum(a1, 0)
    p1, cp1 = pool_fwd(r1)
    a2, c2 = conv_fwd(p1, p["conv2d_1"]["w"], p["conv2d_1"]["b"], 0)
    r2 = np.maximum(a2, 0)
    p2, cp2 = pool_fwd(r2)
    f = p2.reshape(len(x), -1)
    h1 = f @ p["dense"]["w"] + p["dense"]["b"]
    z1 = np.maximum(h1, 0)
    h2 = z1 @ p["dense_1"]["w"] + p["dense_1"]["b"]
    z2 = np.maximum(h2, 0)
    logits = z2 @ p["dense_2"]["w"] + p["dense_2"]["b"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(x)
    loss = -log_probs[np.arange(n), labels].mean()
    d = np.exp(log_probs)
    d[np.arange(n), labels] -= 1
    d /= n
    g = {"dense_2": {"w": z2.T @ d, "b": d.sum(0)}}
    d = (d @ p["dense_2"]["w"].T) * (h2 > 0)
    g["dense_1"] = {"w": z1.T @ d, "b": d.sum(0)}
    d = (d @ p["dense_1"]["w"].T) * (h1 > 0)
    g["dense"] = {"w": f.T @ d, "b": d.sum(0)}
    d = pool_bwd(cp2, (d @ p["dense"]["w"].T).reshape(p2.shape)) * (a2 > 0)
    dw, db, d = conv_bwd(p["conv2d_1"]["w"], c2, d, 0)
    g["conv2d_1"] = {"w": dw, "b": db}
    d = pool_bwd(cp1, d) * (a1 > 0)
    dw, db, _ = conv_bwd(p["conv2d"]["w"], c1, d, 2)
    g["conv2d"] = {"w": dw, "b": db}
    new = {k: {n_: p[k][n_] - LR * g[k][n_] for n_ in p[k]} for k in g}
    return new, loss, g


# --------------------------------------------------------------------------- #
# fnn steps
# --------------------------------------------------------------------------- #


def make_step(model, method: str, state):
    grad_fn = fnn.value_and_grad(model, fnn.losses.softmax_cross_entropy, method=method)
    opt = fnn.optim.sgd(LR)

    def step(params, opt_state, x, y):
        (loss, _), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return fnn.optim.apply_updates(params, updates), opt_state, loss

    return step, opt


def bench_jax(model, params, state, x, y, repeats: int, rounds: int) -> float:
    steps, opt_state = {}, None
    for method in ("manual", "autodiff"):
        step, opt = make_step(model, method, state)
        steps[method] = jax.jit(step)
        opt_state = opt.init(params)
    p_m, _, loss_m = steps["manual"](params, opt_state, x, y)
    p_a, _, loss_a = steps["autodiff"](params, opt_state, x, y)
    drift = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p_m), jax.tree.leaves(p_a)))
    print(f"loss manual {float(loss_m):.6f}  autodiff {float(loss_a):.6f}  max |param difference| after one step {drift:.2e}")
    best = {m: float("inf") for m in steps}
    for _ in range(rounds):  # alternate, keep each method's best round
        for method, step in steps.items():
            t = median_time(lambda step=step: step(params, opt_state, x, y), repeats=repeats)
            best[method] = min(best[method], t)
    print_table(
        f"JAX (jit) LeNet train step: batch {x.shape[0]}, 28x28x1, float32",
        [("hand-written backward (manual)", best["manual"]), ("jax.grad (autodiff)", best["autodiff"])],
        baseline="jax.grad (autodiff)",
    )
    ratio = best["manual"] / best["autodiff"]
    print(f"\nratio manual / autodiff = {ratio:.3f} (target <= 1.05 on CPU)")
    return ratio


def bench_numpy(model, params, state, x, y, repeats: int, rounds: int) -> float:
    params, state, x, y = (fnn.backend.to_numpy(t) for t in (params, state, x, y))
    step, opt = make_step(model, "manual", state)
    opt_state = opt.init(params)
    new_fnn, _, loss_fnn = step(params, opt_state, x, y)
    new_ref, loss_ref, _ = reference_step(params, x, y)
    fnn.gradcheck.assert_close(new_fnn, new_ref, tol=1e-5, names=("fnn numpy", "im2col reference"))
    print(f"\nloss fnn {float(loss_fnn):.6f}  reference {float(loss_ref):.6f}  (updated params agree)")
    t_fnn = t_ref = float("inf")
    for _ in range(rounds):  # alternate, keep each contender's best round
        t_fnn = min(t_fnn, median_time(lambda: step(params, opt_state, x, y), warmup=1, repeats=repeats))
        t_ref = min(t_ref, median_time(lambda: reference_step(params, x, y), warmup=1, repeats=repeats))
    print_table(
        f"NumPy LeNet train step (manual backward): batch {x.shape[0]}, 28x28x1, float32",
        [("fnn (channel-major im2col / col2im)", t_fnn), ("reference (sliding_window_view, add.at)", t_ref)],
        baseline="reference (sliding_window_view, add.at)",
    )
    return t_fnn / t_ref


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the JAX contenders")
    parser.add_argument("--skip-numpy", action="store_true")
    args = parser.parse_args(argv)

    print(environment())
    model = fnn.models.lenet5(padding="valid")
    params, state = model.init(np.random.default_rng(0), (args.batch, 28, 28, 1))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    on_device = fnn.backend.tree_map(jnp.asarray, (params, state, x, y))
    results = {"jax_manual_over_autodiff": bench_jax(model, *on_device, args.repeats, args.rounds)}
    if not args.skip_numpy:
        results["numpy_fnn_over_reference"] = bench_numpy(model, params, state, x, y, max(3, args.repeats // 4), args.rounds)
    return results


if __name__ == "__main__":
    main()
