"""What one call of a jitted train step costs the host, W3 (the tiny MLP, where
the call is most of the step): fnn's manual step against the plain-JAX step and
variants of each that add or remove one thing fnn's step has.

    python -m benchmarks.dispatch [--rounds 30] [--quick]

Each variant is a jitted ``step(*carry, x, y) -> (*carry, loss)`` called in a
Python loop of 64 chained calls; the figure is the calling thread's CPU time
per call (``time.thread_time``: dispatch, argument flattening, the run of the
small program on the calling thread, the outputs' Python objects), the median
of alternating rounds. Thread time is steadier than wall time on a busy
machine, where other processes' load lands mostly in the waits.

Variants: ``fnn`` (the suite's manual step); ``fnn, state closed over`` (the
model's state, a tree of empty dicts, not passed: what its flattening costs);
``fnn, donated`` (the carry donated, ``donate_argnums``: outputs reuse the
inputs' buffers); ``plain JAX``; ``plain JAX + fnn's state`` (the empty dicts
passed through); ``plain JAX + 2 scalars`` (an int32 count and a float32
learning rate threaded through, as fnn's optimizer state holds beyond Adam's);
``plain JAX + fnn's Adam`` (the plain-JAX gradients, fnn's ``adam`` and
``apply_updates``: fnn's optimizer state and kernels alone).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

STEPS = 64


def variants(quick: bool = False) -> dict[str, tuple[Callable, tuple]]:
    """Each variant's jitted step and its first carry."""
    import jax
    import jax.numpy as jnp

    import fnn.optim
    from benchmarks import references
    from benchmarks.suite import fnn_step, numpy_init
    from benchmarks.workloads import workloads

    workload = workloads(quick)["W3"]
    params, state = jax.tree.map(jnp.asarray, numpy_init(workload))
    step, opt = fnn_step(workload, "manual")
    ref = references.train_step(workload)

    def fnn_state_closed(p, o, x, y):
        p, _, o, loss = step(p, state, o, x, y)
        return p, o, loss

    def ref_with_state(p, s, o, x, y):
        p, o, loss = ref(p, o, x, y)
        return p, s, o, loss

    def ref_with_scalars(p, o, extra, x, y):
        p, o, loss = ref(p, o, x, y)
        return p, o, (extra[0] + 1, extra[1]), loss

    loss = references.loss_function(workload)

    def ref_with_fnn_adam(p, o, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        updates, o = opt.update(grads, o, p)
        return fnn.optim.apply_updates(p, updates), o, value

    scalars = (jnp.zeros((), jnp.int32), jnp.asarray(1e-3, jnp.float32))
    copy = lambda tree: jax.tree.map(jnp.copy, tree)
    return {
        "fnn": (jax.jit(step), (params, state, opt.init(params))),
        "fnn, state closed over": (jax.jit(fnn_state_closed), (params, opt.init(params))),
        "fnn, donated": (jax.jit(step, donate_argnums=(0, 1, 2)), copy((params, state, opt.init(params)))),
        "plain JAX": (jax.jit(ref), (params, references.adam_init(params))),
        "plain JAX + fnn's state": (jax.jit(ref_with_state), (params, state, references.adam_init(params))),
        "plain JAX + 2 scalars": (jax.jit(ref_with_scalars), (params, references.adam_init(params), scalars)),
        "plain JAX + fnn's Adam": (jax.jit(ref_with_fnn_adam), (params, opt.init(params))),
    }


def measure(rounds: int = 30, quick: bool = False) -> dict[str, float]:
    """Each variant's median thread CPU time per call, in microseconds."""
    import jax
    import jax.numpy as jnp

    from benchmarks.workloads import workloads

    x, y = (jnp.asarray(a) for a in workloads(quick)["W3"].data())
    cases = variants(quick)
    carries = {name: carry for name, (_, carry) in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds + 1):  # the first round compiles and warms up
        for name, (step, _) in cases.items():
            carry = carries[name]
            start = time.thread_time()
            for _ in range(STEPS):
                *carry, _loss = step(*carry, x, y)
            times[name].append((time.thread_time() - start) / STEPS * 1e6)
            carries[name] = jax.block_until_ready(tuple(carry))  # a donated carry is consumed: keep the new one
    return {name: statistics.median(ts[1:]) for name, ts in times.items()}


def main(argv: list[str] | None = None, print_: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds of 64 calls per variant")
    parser.add_argument("--quick", action="store_true", help="3 rounds (for tests)")
    args = parser.parse_args(argv)
    from benchmarks.report import environment_line

    results = measure(3 if args.quick else args.rounds, args.quick)
    print_(environment_line())
    base = results["plain JAX"]
    print_(f"{'W3 variant':26s} {'us/call':>8s} {'/ plain JAX':>12s}")
    for name, us in results.items():
        print_(f"{name:26s} {us:8.1f} {us / base:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
