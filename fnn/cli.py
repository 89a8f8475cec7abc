"""The ``fnn`` command.

* ``fnn train`` — train a model on the bundled handwritten digits (or MNIST
  from a directory), show a progress bar, print the test accuracy and save
  the training curves as a PNG. With no options: an MLP trained by
  hand-written backpropagation under ``jax.jit``, above 97% test accuracy in
  a few seconds. With ``--coordinator HOST:PORT --num-processes N
  --process-id I`` (or ``FNN_COORDINATOR`` / ``FNN_NUM_PROCESSES`` /
  ``FNN_PROCESS_ID``), N processes train one data-parallel model over all
  their devices (:mod:`fnn.parallel`); only process 0 writes checkpoints and
  the plot. ``--log-dir DIR`` writes the run's log there (a CSV, and
  TensorBoard events when tensorboardX is installed), each run in a folder
  of its own; ``--grad-stats`` adds a plot of the per-layer gradient norms.
  On ``--backend numpy`` the matrix products run on one BLAS thread unless
  told otherwise (``--blas-threads``, or the environment: see :mod:`fnn.blas`).
* ``fnn gradcheck`` — every layer's and loss's hand-written backward rule
  against ``jax.grad`` and finite differences, as a table.
* ``fnn bench`` — the step time of manual backprop against autodiff for the
  standard models; ``fnn bench --full`` runs the whole benchmark suite
  (``python -m benchmarks``: fnn against plain JAX and NumPy, and how the step
  time scales), which ships with the source checkout (:mod:`fnn.cli_bench`).

Run ``fnn <command> --help`` for the options and their defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import fnn
from fnn import backend, blas, checkpoint, cli_bench, data, gradcheck_suite, losses, models, optim, train
from fnn import layers as L
from fnn.cli_args import Parser, UsageError, address, int_at_least, positive_float

__all__ = ["main", "build_model", "build_optimizer", "load_data"]

MODELS = ("mlp", "cnn", "lstm", "resnet")
OPTIMIZERS = {  # name -> (constructor, default learning rate)
    "sgd": (lambda lr: optim.sgd(lr), 0.1),
    "momentum": (lambda lr: optim.sgd(lr, momentum=0.9), 0.02),
    "nesterov": (lambda lr: optim.sgd(lr, momentum=0.9, nesterov=True), 0.02),
    "adagrad": (lambda lr: optim.adagrad(lr), 0.05),
    "rmsprop": (lambda lr: optim.rmsprop(lr), 1e-3),
    "adam": (lambda lr: optim.adam(lr), 1e-3),
    "adamw": (lambda lr: optim.adamw(lr, weight_decay=1e-4, mask=optim.decay_mask), 1e-3),
}


# --------------------------------------------------------------------------- #
# Building blocks (importable, used by the tests too)
# --------------------------------------------------------------------------- #


def load_data(name: str, data_dir: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "val", "test"}`` splits of ``(x, y)`` with NHWC images.

    digits: 20% held out for test, then 10% of the rest for validation (fixed
    seeds, so every run sees the same split). mnist: the IDX files in
    ``data_dir`` (60,000 train, of which 5,000 for validation; 10,000 test).
    """
    if name == "digits":
        x, y = data.load_digits()
        x_rest, y_rest, x_test, y_test = data.train_val_split(x, y, 0.2, seed=0)
    elif name == "mnist":
        if data_dir is None:
            raise UsageError("--data mnist needs --data-dir DIR, the directory holding the IDX files "
                             f"({', '.join(s for pair in data.MNIST_FILES.values() for s in pair)}, .gz or not)")
        x_rest, y_rest = data.load_mnist(data_dir, "train")
        x_test, y_test = data.load_mnist(data_dir, "test")
    else:
        raise ValueError(f"unknown dataset {name!r}; expected 'digits' or 'mnist'")
    x_train, y_train, x_val, y_val = data.train_val_split(x_rest, y_rest, 0.1 if name == "digits" else 1 / 12, seed=1)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def build_model(name: str, image_shape: tuple[int, int, int], num_classes: int) -> fnn.Layer:
    """The model called ``name`` for NHWC images of ``image_shape``.

    mlp: :func:`fnn.models.mlp` with hidden layers (256, 128); cnn:
    :func:`fnn.models.lenet5`; resnet: :func:`fnn.models.resnet`; lstm:
    :func:`fnn.models.lstm_classifier` (128 units) reading each image as a
    sequence of its rows (``reshape`` to ``(rows, cols * channels)`` first).
    """
    if name == "mlp":
        return models.mlp((256, 128), num_classes=num_classes)
    if name == "cnn":
        return models.lenet5(num_classes)
    if name == "resnet":
        return models.resnet(num_classes)
    if name == "lstm":
        rows, cols, channels = image_shape
        return L.serial(L.reshape((rows, cols * channels)), models.lstm_classifier(num_classes), name="lstm")
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def build_optimizer(name: str, learning_rate: float | None = None) -> Any:
    """The optimizer called ``name`` (see ``OPTIMIZERS``), at its default learning rate unless given."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    make, default = OPTIMIZERS[name]
    return make(default if learning_rate is None else learning_rate)


# --------------------------------------------------------------------------- #
# fnn train
# --------------------------------------------------------------------------- #


def _check_train_args(args: argparse.Namespace) -> None:
    """What argparse cannot check alone: combinations of flags, and the paths, before any training."""
    if args.backend == "jax" and not backend.HAS_JAX:
        raise UsageError("--backend jax needs JAX (pip install 'fnn[jax]'); or use --backend numpy")
    if args.grad == "autodiff" and args.backend != "jax":
        raise UsageError("--grad autodiff is jax.grad and needs --backend jax; on NumPy use --grad manual")
    if args.blas_threads is not None and args.backend != "numpy":
        raise UsageError("--blas-threads sets NumPy's matrix products and goes with --backend numpy")
    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint DIR, the directory to resume from")
    if args.data_dir is not None and args.data != "mnist":
        raise UsageError(f"--data-dir is read with --data mnist only; --data {args.data} is bundled")
    if args.process_id is not None and args.num_processes is not None and args.process_id >= args.num_processes:
        raise UsageError(f"--process-id must be below --num-processes ({args.num_processes}); got {args.process_id}")
    if args.checkpoint:
        Path(args.checkpoint).mkdir(parents=True, exist_ok=True)  # an OSError naming it, now rather than after an epoch
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    if args.out:
        folder = Path(args.out).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UsageError(f"--out {args.out}: the folder {folder} does not exist or is not writable")
        if importlib.util.find_spec("matplotlib") is None:
            print("fnn train: matplotlib is not installed, so no plot (pip install 'fnn[plot]')", file=sys.stderr)
            args.out = None


class _UseLearningRate(train.Callback):
    """Resuming with ``--lr``: the rate given on the command line, not the checkpoint's."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def on_train_begin(self, train_state: train.TrainState, history: train.History) -> train.TrainState:
        saved = float(optim.get_learning_rate(train_state.opt_state))
        if len(history) and saved != self.learning_rate:
            print(f"fnn train: resuming at --lr {self.learning_rate:g} (the checkpoint had {saved:g})")
        return train_state._replace(opt_state=optim.set_learning_rate(train_state.opt_state, self.learning_rate))


def _new_run_dir(log_dir: str, model: str) -> Path:
    """A folder of its own for this run's logs under ``log_dir`` (``mlp-20260101-120000``,
    then ``-1``, ``-2``, ... when taken): never another run's."""
    stem = f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        path = Path(log_dir) / (stem if n == 0 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UsageError(f"--log-dir {log_dir}: no free folder name for {stem}")


def _loggers(args: argparse.Namespace) -> tuple[list, Path | None]:
    """``(the logging callbacks, the run's folder)`` for ``--log-dir``, or ``([], None)``."""
    if not args.log_dir:
        return [], None
    run_dir = _new_run_dir(args.log_dir, args.model)
    loggers: list = [train.CSVLogger(run_dir / "log.csv")]
    if importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(train.TensorBoard(run_dir))
    else:
        print("fnn train: tensorboardX is not installed, so the log is CSV only (pip install 'fnn[log]')",
              file=sys.stderr)
    return loggers, run_dir


def _train(args: argparse.Namespace) -> int:
    _check_train_args(args)
    with blas.blas_threads(args.blas_threads) if args.backend == "numpy" else contextlib.nullcontext() as threads:
        return _run_training(args, threads)


def _run_training(args: argparse.Namespace, blas_threads: int | None) -> int:
    distributed = any(v is not None for v in (args.coordinator, args.num_processes, args.process_id))
    distributed = distributed or bool(os.environ.get("FNN_COORDINATOR"))
    mesh, main_process = None, True
    if distributed:
        if args.backend != "jax":
            raise UsageError("--coordinator/--num-processes/--process-id need --backend jax")
        from fnn import parallel

        parallel.initialize(args.coordinator, args.num_processes, args.process_id)  # before any other JAX call
        mesh, main_process = parallel.data_mesh(), parallel.is_main_process()
    splits = load_data(args.data, args.data_dir)
    x_train, y_train = splits["train"]
    if args.batch_size > len(x_train):
        raise UsageError(f"--batch-size {args.batch_size} is larger than the training set ({len(x_train)} examples)")
    image_shape, num_classes = x_train.shape[1:], int(y_train.max()) + 1
    model = build_model(args.model, image_shape, num_classes)
    optimizer = build_optimizer(args.optimizer, args.lr)
    loss = losses.softmax_cross_entropy
    ts = train.init_state(model, optimizer, fnn.key(args.seed, backend=args.backend), (None,) + image_shape)
    how = "hand-written backprop" if args.grad == "manual" else "autodiff"
    where = f"jax ({backend.jax.default_backend()}, jit)" if args.backend == "jax" else "numpy (eager)"
    if blas_threads is not None:
        setting = "" if args.blas_threads is not None or blas.user_setting() is None else f", {blas.user_setting()}"
        where = f"numpy (eager, {blas_threads} BLAS thread{'s' * (blas_threads > 1)}{setting})"
    lr = args.lr if args.lr is not None else OPTIMIZERS[args.optimizer][1]
    if mesh is not None:
        processes = backend.jax.process_count()
        where += (f", data-parallel over {mesh.devices.size} devices in {processes} process{'es' * (processes > 1)} "
                  f"(this is process {backend.jax.process_index()})")
    print(f"fnn train: {args.model} ({backend.tree_size(ts.params):,} params) on {args.data} "
          f"({len(x_train)} train / {len(splits['val'][0])} val / {len(splits['test'][0])} test), {how} on {where}, "
          f"{args.optimizer} lr {lr:g}, {args.epochs} epochs of batch {args.batch_size}, seed {args.seed}")

    callbacks = []
    if args.resume and args.lr is not None:
        callbacks.append(_UseLearningRate(args.lr))
    loggers, run_dir = _loggers(args) if main_process else ([], None)
    callbacks += loggers
    if args.checkpoint:
        meta = {"model": repr(model), "batch_size": args.batch_size}
        callbacks.append(train.Checkpoint(args.checkpoint, args.checkpoint_every, metadata=meta, overwrite=args.overwrite))
    start = time.perf_counter()
    with warnings.catch_warnings():  # the learning rate on resume is said above
        warnings.filterwarnings("ignore", message="fit: resumed from epoch")
        ts, history = train.fit(
            model, loss, optimizer, ts, splits["train"], epochs=args.epochs, batch_size=args.batch_size,
            validation_data=splits["val"], method=args.grad, grad_stats=args.grad_stats, callbacks=callbacks,
            resume=args.resume, progress=not args.no_progress and main_process, mesh=mesh,
        )
    seconds = time.perf_counter() - start
    if args.grad_stats and history.grad_stats:
        print(_grad_table(history.grad_stats[-1]))
    if history.stopped:
        print(f"stopped early: {history.stopped['message']}")
    test = splits["test"] if mesh is None else parallel.replicate(splits["test"], mesh)
    scores = train.evaluate(model, ts.params, ts.state, *test, loss=loss)
    n_test = len(splits["test"][0])
    if history.records:
        last = history.last
        print(f"epoch {last['epoch']}: train loss {last['train_loss']:.4f}, accuracy {last['train_accuracy']:.2%}; "
              f"validation loss {last['val_loss']:.4f}, accuracy {last['val_accuracy']:.2%}")
    print(f"test accuracy: {scores['accuracy']:.2%} ({round(scores['accuracy'] * n_test)}/{n_test}), "
          f"test loss {scores['loss']:.4f}; trained in {seconds:.1f} s")
    if args.checkpoint and main_process:
        print(f"checkpoint: {checkpoint.latest(args.checkpoint)}")
    if run_dir is not None:
        print(f"log written to {run_dir}")
    if args.out and history.records and main_process:
        engine = f"jax {backend.jax.default_backend()}" if args.backend == "jax" else "numpy"
        title = (f"fnn train: {args.model} on {args.data} ({how}, {engine}); "
                 f"test accuracy {scores['accuracy']:.2%}")
        path = train.plot_history(history, args.out, title=title)
        print(f"training curves saved to {path}")
        if history.grad_stats:
            out = Path(args.out)
            grads = train.plot_grad_stats(history, out.with_name(f"{out.stem}_grad_norms.png"),
                                          title=f"gradient norms per parameter: {args.model} ({how}, {engine})")
            print(f"gradient norms saved to {grads}")
    return 1 if history.stopped and history.stopped["reason"] == "non-finite" else 0


def _grad_table(stats: dict[str, dict[str, float]]) -> str:
    width = max(len("parameter"), *(len(p) for p in stats))
    header = f"{'|g| mean':>10s}  {'max |g|':>10s}  {'non-finite':>10s}  {'|update|/|param|':>16s}"
    lines = [f"{'parameter':{width}s}  {header}"]
    for path, s in stats.items():
        lines.append(f"{path:{width}s}  {s['grad_norm']:10.2e}  {s['grad_max']:10.2e}  {s['nonfinite']:10.0f}  "
                     f"{s['update_ratio']:16.2e}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# fnn gradcheck
# --------------------------------------------------------------------------- #


def _gradcheck(args: argparse.Namespace) -> int:
    if backend.HAS_JAX:
        backend.jax.config.update("jax_enable_x64", True)  # the checks run in float64
    cases = [c for c in gradcheck_suite.CASES if not args.names or any(n in c.name for n in args.names)]
    if not cases:
        names = [c.name for c in gradcheck_suite.CASES]
        raise UsageError(f"no case matches {args.names}; cases: {names}")
    methods = ("numeric",) if args.numeric_only or not backend.HAS_JAX else ("autodiff", "numeric")
    results = []
    for case in cases:  # one row at a time, so a long run shows progress
        results.append(gradcheck_suite.run_case(case, methods=methods, seed=args.seed))
        if not args.quiet:
            print(f"  {case.name}: {'pass' if results[-1].passed else 'FAIL'}", file=sys.stderr)
    print(gradcheck_suite.format_table(results))
    return 0 if all(r.passed for r in results) else 1


# --------------------------------------------------------------------------- #
# argument parsing
# --------------------------------------------------------------------------- #


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fnn", description="Train, check and benchmark fnn models.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="{train,gradcheck,bench}")

    t = commands.add_parser("train", help="train a model on the digits (or MNIST) and plot the training curves",
                            description="Train a model on the bundled handwritten digits (or MNIST from IDX "
                            "files), print the test accuracy and save the training curves.")
    t.add_argument("--model", choices=MODELS, default="mlp", help="the model (see fnn.cli.build_model)")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam", help="the optimizer")
    t.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the optimizer's usual one)")
    t.add_argument("--epochs", type=int_at_least(1), default=30, help="epochs to train")
    t.add_argument("--batch-size", type=int_at_least(1), default=32, help="examples per step")
    t.add_argument("--grad", choices=("manual", "autodiff"), default="manual",
                   help="hand-written backward rules or jax.value_and_grad")
    t.add_argument("--backend", choices=("jax", "numpy"), default="jax" if backend.HAS_JAX else "numpy",
                   help="jax (one compiled call per epoch) or numpy (eager)")
    t.add_argument("--blas-threads", type=int_at_least(1), default=None, metavar="N",
                   help="with --backend numpy: the BLAS threads of the matrix products (default: "
                   f"{blas.DEFAULT_THREADS}, fastest for small products, unless $OPENBLAS_NUM_THREADS, "
                   "$OMP_NUM_THREADS or $MKL_NUM_THREADS is set)")
    t.add_argument("--data", choices=("digits", "mnist"), default="digits",
                   help="the bundled 8x8 digits, or MNIST-format IDX files from --data-dir")
    t.add_argument("--data-dir", default=None, help="directory of the MNIST / Fashion-MNIST IDX files")
    t.add_argument("--checkpoint", default=None, metavar="DIR", help="save a checkpoint there after every epoch")
    t.add_argument("--checkpoint-every", type=int_at_least(1), default=1, metavar="N",
                   help="with --checkpoint: save every N epochs (and after the last)")
    t.add_argument("--overwrite", action="store_true", help="replace the checkpoints of another run in --checkpoint")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint")
    t.add_argument("--seed", type=int_at_least(0), default=0, help="initialisation and batch order (the split is fixed)")
    t.add_argument("--out", default="fnn_train.png",
                   help="where to save the training curves (PNG; an empty string for none)")
    t.add_argument("--log-dir", default=None, metavar="DIR",
                   help="write the run's log in a new folder under DIR: log.csv (every epoch's record and, with "
                   "--grad-stats, the gradient statistics) and TensorBoard events when tensorboardX is installed")
    t.add_argument("--grad-stats", action="store_true",
                   help="record per-parameter gradient statistics: print the last epoch's, and plot the gradient "
                   "norms over the epochs beside --out (NAME_grad_norms.png)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--coordinator", type=address, default=None, metavar="HOST:PORT",
                   help="multi-process training: the address of process 0 (default: $FNN_COORDINATOR)")
    t.add_argument("--num-processes", type=int_at_least(1), default=None, metavar="N",
                   help="multi-process training: how many processes (default: $FNN_NUM_PROCESSES)")
    t.add_argument("--process-id", type=int_at_least(0), default=None, metavar="I",
                   help="multi-process training: this process's index, 0..N-1 (default: $FNN_PROCESS_ID)")
    t.set_defaults(run=_train)

    g = commands.add_parser(
        "gradcheck", help="check every layer's backward rule against autodiff and finite differences",
        description="Check every layer's and loss's hand-written backward rule against jax.grad and central "
        "finite differences in float64, and print a table.",
    )
    g.add_argument("names", nargs="*", help="only the cases whose name contains one of these (default: all)")
    g.add_argument("--numeric-only", action="store_true", help="skip the comparison with jax.grad")
    g.add_argument("--seed", type=int_at_least(0), default=0, help="the random inputs and parameters")
    g.add_argument("--quiet", action="store_true", help="print the table only")
    g.set_defaults(run=_gradcheck)

    cli_bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fnn`` command; returns the exit status.

    A mistake (a bad flag, a missing file, a checkpoint of another model) is
    one line on stderr, ``fnn <command>: error: ...``, and a non-zero status;
    ``fnn --debug <command>`` shows the traceback instead."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"fnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the library's messages name what is wrong; the traceback adds nothing for a user
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"fnn {args.command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
