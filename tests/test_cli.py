"""The ``fnn`` command, run in-process end to end."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import fnn
from fnn import blas, cli, cli_bench, data

ROOT = Path(__file__).resolve().parents[1]


def test_fnn_train_with_defaults_reaches_97_percent_and_plots(tmp_path, capsys):
    png = tmp_path / "curves.png"
    argv = ["train", "--out", str(png), "--checkpoint", str(tmp_path / "ckpt"), "--checkpoint-every", "10"]
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out.out).group(1))
    assert accuracy >= 97.0, out.out
    assert "mlp" in out.out and "hand-written backprop" in out.out
    assert png.stat().st_size > 10_000
    assert "epoch" in out.err  # the progress bar (tqdm writes to stderr)
    checkpoints = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert checkpoints == [f"checkpoint_0000{e}.safetensors" for e in (10, 20, 30)]

    # resuming a finished run trains nothing more and reports the same model
    assert cli.main(["train", "--out", "", "--checkpoint", str(tmp_path / "ckpt"), "--resume", "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert f"test accuracy: {accuracy:.2f}%" in again


def test_fnn_train_on_numpy_with_mnist_files(tmp_path, capsys):
    from tests.test_data import fake_mnist

    fake_mnist(tmp_path, n_train=48, n_test=16)
    argv = ["train", "--backend", "numpy", "--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "2",
            "--batch-size", "16", "--optimizer", "sgd", "--grad-stats", "--no-progress",
            "--out", str(tmp_path / "m.png"), "--log-dir", str(tmp_path / "logs")]
    titles = []
    real_plot = fnn.train.plot_history
    fnn.train.plot_history = lambda history, path, title: titles.append(title) or real_plot(history, path, title=title)
    try:
        assert cli.main(argv) == 0
    finally:
        fnn.train.plot_history = real_plot
    out = capsys.readouterr().out
    assert "numpy (eager, " in out and "44 train / 4 val / 16 test" in out
    assert "dense_2/w" in out  # the gradient-statistics table
    accuracy = re.search(r"test accuracy: ([\d.]+%)", out).group(1)
    assert titles == [f"fnn train: mlp on mnist (hand-written backprop, numpy); test accuracy {accuracy}"]
    assert (tmp_path / "m_grad_norms.png").stat().st_size > 10_000  # the gradient norms beside the curves
    # --log-dir: a folder per run, never another run's; the CSV has every epoch and the gradient statistics
    assert cli.main(argv[:-4] + ["--out", "", "--log-dir", str(tmp_path / "logs")]) == 0
    runs = sorted((tmp_path / "logs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("mlp-") for r in runs)
    assert f"log written to {runs[-1]}" in capsys.readouterr().out
    for run_dir in runs:
        header, *rows = (run_dir / "log.csv").read_text().splitlines()
        assert len(rows) == 2 and header.startswith("epoch,step,train_loss") and "grad_norm/dense_2/w" in header
        if importlib.util.find_spec("tensorboardX") is not None:
            assert list(run_dir.glob("events.out.tfevents.*"))
    status, message = _fails(["train", "--data", "mnist"], capsys)
    assert status == 2 and message.startswith("--data mnist needs --data-dir DIR, the directory holding the IDX")


@pytest.mark.parametrize("name", cli.MODELS)
def test_every_model_choice_builds_for_digits(name):
    import jax

    model = cli.build_model(name, (8, 8, 1), 10)
    assert model.out_shape((None, 8, 8, 1)) == (None, 10)
    x, _ = data.load_digits()

    def run():  # traced by eval_shape, never compiled: a cheap check that init and apply fit together
        params, state = model.init(fnn.key(0), (2, 8, 8, 1))
        return model.apply(params, state, x[:2])[0]

    assert jax.eval_shape(run).shape == (2, 10)


def test_every_optimizer_choice_builds():
    for name in cli.OPTIMIZERS:
        opt = cli.build_optimizer(name, 0.01)
        assert hasattr(opt, "init") and hasattr(opt, "update")
    with pytest.raises(SystemExit):  # argparse rejects an unknown choice
        cli.main(["train", "--optimizer", "lbfgs"])


def _fails(argv, capsys):
    """``(exit status, stderr)`` of a command that must fail with one line and no traceback."""
    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    err = capsys.readouterr().err
    assert status != 0 and err.count("\n") == 1 and "Traceback" not in err, (status, err)
    assert err.startswith(f"fnn {argv[0]}: error: "), err
    return status, err[len(f"fnn {argv[0]}: error: "):].strip()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "-1"], "argument --epochs: must be an int >= 1; got -1"),
        (["--lr", "-1"], "argument --lr: must be a positive finite number; got -1"),
        (["--lr", "nan"], "argument --lr: must be a positive finite number; got nan"),
        (["--batch-size", "0"], "argument --batch-size: must be an int >= 1; got 0"),
        (["--batch-size", "100000"], "--batch-size 100000 is larger than the training set (1294 examples)"),
        (["--checkpoint-every", "0"], "argument --checkpoint-every: must be an int >= 1; got 0"),
        (["--num-processes", "0"], "argument --num-processes: must be an int >= 1; got 0"),
        (["--process-id", "5", "--num-processes", "2"], "--process-id must be below --num-processes (2); got 5"),
        (["--coordinator", "nonsense"], "argument --coordinator: must be HOST:PORT (e.g. 10.0.0.1:1234); got 'nonsense'"),
        (["--seed", "-1"], "argument --seed: must be an int >= 0; got -1"),
        (["--data-dir", "somewhere"], "--data-dir is read with --data mnist only; --data digits is bundled"),
        (["--grad", "autodiff"], "--grad autodiff is jax.grad and needs --backend jax; on NumPy use --grad manual"),
        (["--resume"], "--resume needs --checkpoint DIR, the directory to resume from"),
        (["--out", "no/such/folder/c.png"], "--out no/such/folder/c.png: the folder"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(argv, expected, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _, message = _fails(["train", "--backend", "numpy", "--no-progress"] + argv, capsys)
    assert message.startswith(expected), message


def test_bad_files_and_paths_are_one_line_naming_them(tmp_path, capsys):
    from tests.test_data import fake_mnist

    (tmp_path / "garbage").mkdir()
    fake_mnist(tmp_path / "garbage", n_train=8, n_test=4, gz=False)
    (tmp_path / "garbage" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    cases = [
        (["--data", "mnist", "--data-dir", str(tmp_path / "missing")], "load_mnist: train-images-idx3-ubyte"),
        (["--data", "mnist", "--data-dir", str(tmp_path / "garbage")], "not an IDX file"),
    ]
    (tmp_path / "a_file").write_text("x")
    cases.append((["--checkpoint", str(tmp_path / "a_file" / "ckpt")], "a_file/ckpt"))
    for argv, expected in cases:
        status, message = _fails(["train", "--backend", "numpy", "--no-progress", "--out", ""] + argv, capsys)
        assert status == 1 and expected in message, message
    for argv, expected in ((["--repeats", "0"], "--repeats"), (["--batch-size", "0"], "--batch-size")):
        assert expected in _fails(["bench"] + argv, capsys)[1]
    assert cli.main([]) == 2 and "train" in capsys.readouterr().out


def test_resume_uses_the_given_rate_and_refuses_another_model(tmp_path, capsys):
    base = ["train", "--backend", "numpy", "--no-progress", "--out", "", "--checkpoint", str(tmp_path / "c")]
    assert cli.main(base + ["--epochs", "1", "--resume"]) == 0
    assert "no checkpoint in" in capsys.readouterr().err  # said, not silent
    assert cli.main(base + ["--epochs", "2", "--resume", "--lr", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "resuming at --lr 0.5 (the checkpoint had 0.001)" in out and "adam lr 0.5" in out
    status, message = _fails(base + ["--epochs", "3", "--resume", "--model", "resnet"], capsys)
    assert status == 1 and "was written for another model" in message, message
    status, message = _fails(base + ["--epochs", "1"], capsys)  # a fresh run never prunes another's checkpoints
    assert "already holds checkpoints of another run" in message and "--overwrite" not in message
    assert cli.main(base + ["--epochs", "1", "--overwrite"]) == 0


def test_without_matplotlib_the_run_is_kept_and_the_plot_skipped(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    png = tmp_path / "c.png"
    assert cli.main(["train", "--backend", "numpy", "--no-progress", "--epochs", "1", "--out", str(png)]) == 0
    captured = capsys.readouterr()
    assert "matplotlib is not installed, so no plot" in captured.err and "test accuracy" in captured.out
    assert not png.exists()


@pytest.mark.slow  # two compilations of a 670k-parameter step
def test_fnn_bench_prints_the_ratio(capsys):
    assert cli.main(["bench", "--models", "mlp", "--repeats", "2", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^mlp +669,706 +[\d.]+ +[\d.]+ +[\d.]+$", out, flags=re.MULTILINE), out


def test_fnn_bench_full_runs_the_suite_from_the_source_checkout(tmp_path, monkeypatch, capfd):
    assert cli_bench._source_root() == ROOT and (ROOT / "benchmarks" / "__main__.py").is_file()
    # a stand-in suite beside a stand-in fnn/: the real subprocess, streaming, cwd and exit status, in milliseconds
    fake = tmp_path / "checkout"
    (fake / "benchmarks").mkdir(parents=True)
    (fake / "benchmarks" / "__main__.py").write_text(
        "import os, sys\nprint('suite args', sys.argv[1:], 'in', os.getcwd())\nsys.exit(3)\n"
    )
    monkeypatch.setattr(cli_bench, "_source_root", lambda: fake)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--full", "--quick", "--out", "results"]) == 3
    out = capfd.readouterr().out
    assert f"{sys.executable} -m benchmarks --quick --out {tmp_path / 'results'}" in out
    assert f"suite args ['--quick', '--out', '{tmp_path / 'results'}'] in {fake}" in out  # --out made absolute
    assert cli.main(["bench", "--full"]) == 3
    assert "suite args [] in" in capfd.readouterr().out


def test_fnn_bench_full_explains_where_the_suite_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_bench, "_source_root", lambda: tmp_path)  # an installed fnn: no benchmarks/ beside it
    with pytest.raises(SystemExit, match=r"ships with fnn's source checkout.*python -m benchmarks"):
        cli.main(["bench", "--full", "--quick"])
    assert cli.main(["bench", "--quick"]) == 2


def test_the_console_script_is_declared():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["fnn"] == "fnn.cli:main"
    assert any(d.startswith("safetensors") for d in project["dependencies"])
    assert any(d.startswith("tqdm") for d in project["dependencies"])


@pytest.mark.parametrize("command", ["train", "gradcheck", "bench"])
def test_help_shows_every_default(command, capsys):
    parser = cli._parser()
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False) and action.dest != "help":
            shown = "all" if isinstance(action.default, list) else str(action.default)
            assert f"(default: {shown})" in text, (action.option_strings, action.default)


def test_numpy_training_runs_on_one_blas_thread_unless_the_user_chose(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads_now():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

    for name in blas.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = blas_threads_now()
    with blas.blas_threads() as threads:
        assert threads == 1 and set(blas_threads_now()) == {1}
    with blas.blas_threads(3) as threads:
        assert threads == 3 and set(blas_threads_now()) == {3}
    assert blas_threads_now() == before  # restored
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting wins: nothing is changed
    assert blas.user_setting() == "OMP_NUM_THREADS=2"
    with blas.blas_threads() as threads:
        assert blas_threads_now() == before and threads == before[0]


def test_blas_threads_goes_with_the_numpy_backend(capsys):
    _, message = _fails(["train", "--backend", "jax", "--blas-threads", "2", "--no-progress"], capsys)
    assert message.startswith("--blas-threads sets NumPy's matrix products and goes with --backend numpy")
