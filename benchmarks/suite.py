"""The benchmark suite: every workload's contenders timed side by side in one
process, memory of the compiled steps, and the targets the issue sets.

Order matters on a small CPU: the NumPy contenders run first, before any XLA
computation, because once XLA has run its idle worker threads compete with
NumPy's BLAS threads and slow NumPy down many times on 2 cores.

Each figure is the median wall time of many calls of one train step
(forward + backward + update) after warm-up calls, compilation
excluded, every result blocked on (``benchmarks.timing.median_time``). The
contenders of a workload are timed in alternating rounds and each keeps its
best round's median, so that load from other processes hits them alike.

Every contender updates with the same optimizer, chosen once
(:mod:`benchmarks.optimizers`: Adam by default, or SGD + momentum) and
handed to each in its own form.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import fnn
import fnn.optim
from benchmarks import numpy_reference
from benchmarks.optimizers import ADAM, Optimizer
from benchmarks.timing import median_time
from benchmarks.workloads import Workload, workloads

# contender names, in table order
MANUAL, AUTODIFF, PLAIN_JAX, FIT, TORCH = "fnn manual", "fnn autodiff", "plain JAX", "fnn fit", "PyTorch eager"
PLAIN_LOOP = "plain JAX loop"  # W3: per-step time of a Python loop threading the state, blocked once per loop
MANUAL_LOOP = "fnn manual loop"  # W3: the same loop of fnn's jitted manual step
BARE_SCAN = "bare scan"  # W3: fnn's manual step in a jitted lax.scan over an epoch's batches (what fit runs, bare)
LIBRARIES = ("Flax linen", "Equinox", "Haiku")  # benchmarks.libraries.LIBRARIES, importable without JAX
MATMUL = "jnp.dot roofline"  # W1: the matmul-peak probe, timed in W1's rounds, reported as the roofline
FASTEST = "fastest"  # pseudo-contender: the fastest of plain JAX, the JAX libraries and PyTorch eager
RIVALS = (PLAIN_JAX, *LIBRARIES, TORCH)
FNN_NUMPY, NUMPY_REF = "fnn NumPy", "NumPy reference"


@dataclass(frozen=True)
class Settings:
    """How long to measure: warm-up calls, timed calls per round, alternating rounds, fit epochs per round."""

    warmup: int = 3
    repeats: int = 20
    rounds: int = 5
    fit_epochs: int = 3  # per round


FULL = Settings()
QUICK = Settings(warmup=1, repeats=3, rounds=1, fit_epochs=2)
# W6's step takes about 0.1 s (PyTorch's several times that on a busy machine):
# fewer calls per round keep the whole suite within minutes
SLOW_STEPS = {"W6": Settings(warmup=2, repeats=10, rounds=5, fit_epochs=2)}


@dataclass(frozen=True)
class Target:
    """``numerator / denominator <= limit`` for one workload (``kind`` "time" or "memory"), or
    ``numerator - denominator <= limit`` milliseconds per step (``kind`` "overhead")."""

    workload: str
    numerator: str
    denominator: str
    limit: float
    kind: str = "time"  # "time" and "memory": a ratio; "overhead": numerator - denominator, in ms


TARGETS = (
    *(Target(f"W{i}", MANUAL, FASTEST, 1.0) for i in range(1, 7)),
    Target("W3", MANUAL_LOOP, PLAIN_LOOP, 1.05),
    Target("W3", FIT, BARE_SCAN, 0.02, "overhead"),
    Target("W1", MANUAL, PLAIN_JAX, 1.0),
    Target("W2", MANUAL, PLAIN_JAX, 0.5),
    Target("W2", MANUAL, TORCH, 1.0),
    Target("W5", MANUAL, TORCH, 1.0),
    Target("W4", MANUAL, TORCH, 1.0),
    Target("W3", FIT, PLAIN_LOOP, 0.15),
    Target("W4", MANUAL, AUTODIFF, 1.1),
    Target("W5", MANUAL, AUTODIFF, 1.05),
    Target("W6", MANUAL, PLAIN_JAX, 1.0),
    Target("W6", MANUAL, TORCH, 1.0),
    Target("W1", FNN_NUMPY, NUMPY_REF, 1.0),
    Target("W2", FNN_NUMPY, NUMPY_REF, 1.0),
    Target("W1", MANUAL, AUTODIFF, 1.1, "memory"),
    Target("W2", MANUAL, AUTODIFF, 1.1, "memory"),
    Target("W4", MANUAL, AUTODIFF, 1.1, "memory"),
)
MEMORY_WORKLOADS = ("W1", "W2", "W4", "W6")
STEPS_PER_EPOCH = 64  # steps of one fit epoch, and (W3) of one timed Python loop


@dataclass(frozen=True)
class SelfTimed:
    """A contender that times itself: ``measure()`` runs one round and returns its
    per-step seconds (fit's epochs, the W3 Python loop), timed in the same
    alternating rounds as the others."""

    measure: Callable[[], float]


def time_alternating(steps: dict[str, Callable[[], Any] | SelfTimed], settings: Settings) -> dict[str, float]:
    """Each step's best per-round median (seconds) over alternating rounds."""
    best = {name: float("inf") for name in steps}
    for _ in range(settings.rounds):
        for name, step in steps.items():
            if isinstance(step, SelfTimed):
                seconds = step.measure()
            else:
                seconds = median_time(step, warmup=settings.warmup, repeats=settings.repeats)
            best[name] = min(best[name], seconds)
    return best


def fnn_step(workload: Workload, method: str, optimizer: Optimizer = ADAM) -> tuple[Callable, Any]:
    """``step(params, state, opt_state, x, y) -> (params, state, opt_state, loss)`` and its
    optimizer (fnn's form of ``optimizer``)."""
    grad_fn = fnn.value_and_grad(workload.model, workload.loss, method=method)
    opt = optimizer.fnn()

    def step(params, state, opt_state, x, y):
        (loss, state), grads = grad_fn(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return fnn.optim.apply_updates(params, updates), state, opt_state, loss

    return step, opt


def numpy_init(workload: Workload) -> tuple[Any, Any]:
    """The workload's params and state as NumPy arrays (seed 0): every contender starts from them."""
    return workload.model.init(np.random.default_rng(0), (None, *workload.input_shape))


# --------------------------------------------------------------------------- #
# NumPy contenders (run before any JAX computation)
# --------------------------------------------------------------------------- #


def run_numpy(workload: Workload, settings: Settings, optimizer: Optimizer = ADAM) -> tuple[dict[str, float], str]:
    """fnn's NumPy backend (manual backward) against the from-scratch reference."""
    params, state = numpy_init(workload)
    x, y = workload.data()
    step, opt = fnn_step(workload, "manual", optimizer)
    opt_state = opt.init(params)
    net = numpy_network(workload, copy.deepcopy(params), optimizer)
    loss_fnn = float(step(params, state, opt_state, x, y)[3])
    loss_ref = net.train_step(x, y)  # first step from the same params: the losses must agree
    note = f"first loss fnn {loss_fnn:.5f} / reference {loss_ref:.5f}"
    if not np.isclose(loss_fnn, loss_ref, rtol=1e-4):
        note += " (MISMATCH)"
    times = time_alternating(
        {FNN_NUMPY: lambda: step(params, state, opt_state, x, y), NUMPY_REF: lambda: net.train_step(x, y)},
        Settings(warmup=1, repeats=max(3, settings.repeats // 3), rounds=settings.rounds),
    )
    return times, note


def numpy_network(workload: Workload, params: Any, optimizer: Optimizer = ADAM) -> numpy_reference.Network:
    """The NumPy reference network of W1 or W2 on ``params`` (updated in place) with ``optimizer``'s NumPy form."""
    if workload.key == "W1":
        return numpy_reference.mlp(params, len(workload.sizes["widths"]), optimizer.numpy())
    return numpy_reference.lenet(params, optimizer.numpy())


# --------------------------------------------------------------------------- #
# JAX contenders
# --------------------------------------------------------------------------- #


def fit_contender(workload: Workload, settings: Settings, optimizer: Optimizer = ADAM) -> tuple[SelfTimed | None, str]:
    """``fnn.train.fit`` (one compiled call per epoch) as a contender whose round is one
    ``fit`` call of ``settings.fit_epochs`` epochs from the same state, timed per step by
    the median of the epoch times fit records; or ``None`` and why not."""
    try:
        from fnn import train
    except Exception as error:  # noqa: BLE001 -- fnn.train is being written beside this suite
        return None, f"fnn.train unavailable: {type(error).__name__}: {error}"
    steps_per_epoch = STEPS_PER_EPOCH
    x, y = epoch_batches(workload)
    opt = optimizer.fnn()
    kwargs = {"batch_size": workload.batch, "metrics": {}, "progress": False}
    try:
        ts = train.init_state(workload.model, opt, fnn.key(0), (None, *workload.input_shape))
        ts, _ = train.fit(workload.model, workload.loss, opt, ts, (x, y), epochs=1, **kwargs)  # compiles
    except Exception as error:  # noqa: BLE001
        return None, f"fnn.train.fit failed: {type(error).__name__}: {error}"

    def measure() -> float:
        _, history = train.fit(workload.model, workload.loss, opt, ts, (x, y), epochs=settings.fit_epochs, **kwargs)
        return statistics.median(history["seconds"]) / steps_per_epoch

    note = f"{steps_per_epoch} steps per epoch, median of {settings.fit_epochs} epochs per round"
    return SelfTimed(measure), note


def python_loop(step: Callable, carry: tuple, x: Any, y: Any, settings: Settings) -> SelfTimed:
    """A Python loop of ``STEPS_PER_EPOCH`` calls of the jitted ``step(*carry, x, y) -> (*carry, loss)``,
    each call taking the previous one's output and the loop blocked on once at its end (so
    dispatch overlaps with compute, as in a real loop), timed per step."""

    def loop():
        state = carry
        for _ in range(STEPS_PER_EPOCH):
            *state, loss = step(*state, x, y)
        return loss

    return SelfTimed(lambda: median_time(loop, warmup=1, repeats=max(3, settings.repeats // 3)) / STEPS_PER_EPOCH)


def epoch_batches(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    """``STEPS_PER_EPOCH`` batches ``(xs, ys)`` stacked on a leading axis (the data fit trains on)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((workload.batch * STEPS_PER_EPOCH, *workload.input_shape)).astype(np.float32)
    y = workload.targets(rng, len(x))
    return x, y


def bare_scan(step: Callable, carry: tuple, workload: Workload, settings: Settings) -> SelfTimed:
    """fnn's ``step`` in one compiled ``lax.scan`` over an epoch's batches, nothing else (no
    shuffle, no finite checks, no host work): the floor that fit's per-step time is compared
    with, timed per step."""
    import jax
    from jax import lax

    x, y = epoch_batches(workload)
    xs = jax.numpy.asarray(x.reshape(STEPS_PER_EPOCH, workload.batch, *workload.input_shape))
    ys = jax.numpy.asarray(y.reshape(STEPS_PER_EPOCH, workload.batch, *y.shape[1:]))

    def epoch(carry, xs, ys):
        def body(c, batch):
            *c, loss = step(*c, *batch)
            return tuple(c), loss

        return lax.scan(body, carry, (xs, ys))

    compiled = jax.jit(epoch).lower(carry, xs, ys).compile()
    return SelfTimed(
        lambda: median_time(lambda: compiled(carry, xs, ys), warmup=1, repeats=max(3, settings.repeats // 3))
        / STEPS_PER_EPOCH
    )


def run_jax(
    workload: Workload,
    settings: Settings,
    with_memory: bool,
    with_libraries: bool = True,
    optimizer: Optimizer = ADAM,
) -> tuple[dict[str, float], list[str], dict]:
    """fnn manual, fnn autodiff and the plain-JAX reference (jitted, one call per step), fnn fit,
    and on W3 the plain-JAX Python loop, every one updating with ``optimizer``."""
    import jax
    import jax.numpy as jnp

    numpy_params, numpy_state = numpy_init(workload)
    params, state = jax.tree.map(jnp.asarray, (numpy_params, numpy_state))
    x, y = (jnp.asarray(a) for a in workload.data())
    calls: dict[str, Callable[[], Any]] = {}
    compiled: dict[str, Any] = {}
    losses: dict[str, float] = {}
    for method, name in (("manual", MANUAL), ("autodiff", AUTODIFF)):
        step, opt = fnn_step(workload, method, optimizer)
        opt_state = opt.init(params)
        args = (params, state, opt_state, x, y)
        compiled[name] = jax.jit(step).lower(*args).compile()
        losses[name] = float(compiled[name](*args)[3])
        calls[name] = lambda f=compiled[name], a=args: f(*a)
    notes: list[str] = []
    ref, ref_carry = plain_jax_step(workload, params, state, optimizer)
    ref_args = (*ref_carry, x, y)
    ref_step = jax.jit(ref).lower(*ref_args).compile()
    losses[PLAIN_JAX] = float(ref_step(*ref_args)[-1])
    calls[PLAIN_JAX] = lambda: ref_step(*ref_args)
    if torch_note() is None:  # PyTorch eager, timed in the same alternating rounds
        from benchmarks import torch_reference

        calls[TORCH], losses[TORCH] = torch_reference.train_step(
            workload, numpy_params, numpy_state, *workload.data(), optimizer
        )
    contenders = library_contenders(workload, numpy_params, numpy_state, notes, optimizer) if with_libraries else ()
    for name, call, loss in contenders:
        calls[name], losses[name] = call, loss
    spread = max(losses.values()) - min(losses.values())
    notes.append(
        "first losses "
        + ", ".join(f"{k} {v:.5f}" for k, v in losses.items())
        + (" (MISMATCH)" if spread > 1e-3 * max(1.0, abs(losses[MANUAL])) else "")
    )
    if workload.key == "W3":
        calls[PLAIN_LOOP] = python_loop(jax.jit(ref), ref_carry, x, y, settings)
        manual_step, opt = fnn_step(workload, "manual", optimizer)
        carry = (params, state, opt.init(params))
        calls[MANUAL_LOOP] = python_loop(jax.jit(manual_step), carry, x, y, settings)
        calls[BARE_SCAN] = bare_scan(manual_step, carry, workload, settings)
        notes.append(f"{PLAIN_LOOP}, {MANUAL_LOOP}: {STEPS_PER_EPOCH} chained calls, blocked once at the end")
        notes.append(f"{BARE_SCAN}: the manual step in one jitted lax.scan over {STEPS_PER_EPOCH} batches")
    if workload.key == "W1":
        calls[MATMUL] = matmul_probe(roofline_size(settings is QUICK), 3 if settings is QUICK else 10)
    fit, note = fit_contender(workload, settings, optimizer)
    notes.append(f"{FIT}: {note}")
    if fit is not None:
        calls[FIT] = fit
    times = time_alternating(calls, settings)
    memory = {}
    if with_memory:
        for name in (MANUAL, AUTODIFF):
            analysis = compiled[name].memory_analysis()
            memory[name] = None if analysis is None else int(analysis.temp_size_in_bytes)
    return times, notes, memory


def plain_jax_step(workload: Workload, params: Any, state: Any, optimizer: Optimizer = ADAM) -> tuple[Callable, tuple]:
    """The plain-JAX reference's ``step(*carry, x, y) -> (*carry, loss)``, not yet jitted, and its
    first ``carry``: ``(params, opt_state)`` (W1-W4, W6: ``benchmarks.references``) or ``(params,
    state, opt_state)`` (W5: ``benchmarks.resnet_reference``), updating with ``optimizer``'s inline form."""
    from benchmarks import references, resnet_reference

    step = references.train_step(workload, optimizer.jax_update)
    if step is not None:
        return step, (params, optimizer.jax_init(params))
    return resnet_reference.train_step(optimizer.jax_update), (params, state, optimizer.jax_init(params))


def library_step(
    name: str, workload: Workload, params: Any, state: Any, optimizer: Optimizer = ADAM
) -> tuple[Callable, tuple, tuple, list]:
    """Library ``name``'s ``step(params, state, opt_state, x, y) -> (params, state, opt_state, loss)``
    (not yet jitted, optax's form of ``optimizer``), its first carry ``(params, state, opt_state)``
    loaded from fnn's NumPy ``params`` and ``state``, the batch ``(x, y)`` in its layout, and the
    bindings that read its params back in fnn's layout (``benchmarks.libraries.export``)."""
    import jax

    from benchmarks import libraries

    built = libraries.build(name, workload, params, state)
    x, y = (jax.numpy.asarray(a) for a in built.inputs(*workload.data()))
    optax_optimizer = optimizer.optax()
    carry = (built.params, built.state, optax_optimizer.init(built.params))
    return libraries.train_step(built.loss, optax_optimizer), carry, (x, y), built.bindings


def library_contenders(
    workload: Workload, params: Any, state: Any, notes: list[str], optimizer: Optimizer = ADAM
) -> list[tuple]:
    """``(name, call, first loss)`` of each JAX library contender that imports (flax.linen,
    Equinox, Haiku: its model loaded from fnn's ``params``, optax's form of ``optimizer``,
    one compiled step); a note in ``notes`` for each one skipped."""
    import jax

    from benchmarks import libraries

    out = []
    for name, note in libraries.available().items():
        if note is not None:
            notes.append(note)
            continue
        step, carry, batch, _ = library_step(name, workload, params, state, optimizer)
        args = (*carry, *batch)
        step = jax.jit(step).lower(*args).compile()
        out.append((name, lambda f=step, a=args: f(*a), float(step(*args)[3])))
    return out


def torch_note() -> str | None:
    """``None`` if PyTorch is importable, else why its contender is skipped."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "PyTorch not installed (pip install torch): its contender is skipped"
    except Exception as error:  # noqa: BLE001 -- e.g. a broken install missing a shared library
        return f"PyTorch does not import ({type(error).__name__}: {error}): its contender is skipped"
    return None


def run(
    quick: bool = False,
    only: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
    libraries: bool = True,
    optimizer: Optimizer = ADAM,
) -> dict:
    """Run the suite; returns ``{"settings", "times", "memory", "notes", "targets", "titles", "torch", "roofline"}``.

    ``times[workload][contender]`` is seconds per step, ``roofline`` W1's share of the
    machine's matmul rate (:func:`roofline`; ``None`` without W1), ``memory[workload][contender]``
    the compiled step's temp bytes. ``libraries=False`` leaves out the JAX library contenders.
    Every contender updates with ``optimizer`` (``settings["optimizer"]`` names it, its
    ``"optimizer_label"`` says it in words); the targets are the same for every optimizer.
    """
    settings = QUICK if quick else FULL
    cases = {k: w for k, w in workloads(quick).items() if only is None or k in only}
    times: dict[str, dict[str, float]] = {k: {} for k in cases}
    notes: dict[str, list[str]] = {k: [] for k in cases}
    memory: dict[str, dict[str, int | None]] = {}
    for key in ("W1", "W2"):  # NumPy first: no XLA computation has run yet
        if key in cases:
            log(f"{key} NumPy contenders ...")
            numpy_times, note = run_numpy(cases[key], settings, optimizer)
            times[key].update(numpy_times)
            notes[key].append(f"NumPy: {note}")
    for key, workload in cases.items():
        log(f"{key} JAX contenders ...")
        own = settings if quick else SLOW_STEPS.get(key, settings)
        jax_times, jax_notes, mem = run_jax(workload, own, key in MEMORY_WORKLOADS, libraries, optimizer)
        times[key].update(jax_times)
        notes[key] += jax_notes
        if mem:
            memory[key] = mem
    dot_seconds = times["W1"].pop(MATMUL) if "W1" in cases else None
    lines = roofline(cases["W1"], times["W1"], dot_seconds, quick) if dot_seconds else None
    torch_line = torch_note()
    if torch_line is None:
        from benchmarks import torch_reference

        torch_line = torch_reference.threads_note(optimizer)
    return {
        "settings": settings.__dict__
        | {"quick": quick, "optimizer": optimizer.name, "optimizer_label": optimizer.label},
        "titles": {k: w.title for k, w in cases.items()},
        "torch": torch_line,
        "times": times,
        "memory": memory,
        "notes": notes,
        "targets": evaluate_targets(times, memory),
        "roofline": lines,
    }


def matmul_probe(size: int, repeats: int) -> SelfTimed:
    """The roofline's probe: seconds of one jitted ``jnp.dot`` of two ``size x size`` float32
    matrices, median of ``repeats`` calls, timed in W1's alternating rounds (so that load
    from other processes hits it as it hits W1's contenders)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot).lower(a, b).compile()
    return SelfTimed(lambda: median_time(lambda: dot(a, b), warmup=1, repeats=repeats))


def mlp_step_flops(workload: Workload) -> int:
    """Matrix-product FLOPs of one MLP train step: the forward products, the weight
    gradients, and the input gradients of every layer but the first (nobody needs the
    data's gradient); the elementwise work is left out."""
    widths = (workload.input_shape[0], *workload.sizes["widths"], workload.classes or 1)
    products = [n_in * n_out for n_in, n_out in zip(widths[:-1], widths[1:])]
    return 2 * workload.batch * (3 * sum(products) - products[0])


def roofline_size(quick: bool) -> int:
    """The roofline's matrix size: 2048 (256 with ``--quick``)."""
    return 256 if quick else 2048


def roofline(workload: Workload, times: dict[str, float], dot_seconds: float, quick: bool) -> dict:
    """W1's roofline: the matmul rate (FLOP/s of the probe's best round) and each contender's share of it."""
    size = roofline_size(quick)
    peak = 2 * size**3 / dot_seconds
    flops = mlp_step_flops(workload)
    fractions = {name: flops / seconds / peak for name, seconds in times.items() if "NumPy" not in name}
    return {"size": size, "peak_flops": peak, "step_flops": flops, "fractions": fractions}


def evaluate_targets(times: dict, memory: dict) -> list[dict]:
    """Each target with its measured ratio and ``met`` (``None`` when a side was not measured)."""
    rows = []
    for t in TARGETS:
        table = (memory if t.kind == "memory" else times).get(t.workload)
        if table is None:
            continue
        num = table.get(t.numerator)
        if t.denominator == FASTEST:
            rivals = [table[r] for r in RIVALS if r in table]
            den = min(rivals) if rivals else None
        else:
            den = table.get(t.denominator)
        if t.kind == "overhead":
            ratio = (num - den) * 1e3 if num is not None and den is not None else None
        else:
            ratio = num / den if num is not None and den else None
        rows.append(
            {
                "workload": t.workload,
                "kind": t.kind,
                "what": f"{t.numerator} {'-' if t.kind == 'overhead' else '/'} {t.denominator}"
                + (" (ms)" if t.kind == "overhead" else ""),
                "limit": t.limit,
                "ratio": ratio,
                "met": None if ratio is None else bool(ratio <= t.limit),
            }
        )
    return rows
