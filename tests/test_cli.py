"""The ``fnn`` command, run in-process end to end."""

import re
import sys
from pathlib import Path

import pytest

import fnn
from fnn import cli, data

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
    argv = ["train", "--backend", "numpy", "--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "1",
            "--batch-size", "16", "--optimizer", "sgd", "--grad-stats", "--no-progress",
            "--out", str(tmp_path / "m.png")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "numpy (eager)" in out and "44 train / 4 val / 16 test" in out
    assert "dense_2/w" in out  # the gradient-statistics table
    with pytest.raises(SystemExit, match="--data-dir"):
        cli.main(["train", "--data", "mnist"])
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        cli.main(["train", "--data", "mnist", "--data-dir", str(tmp_path / "empty")])


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


def test_bad_options_are_explained(capsys):
    with pytest.raises(SystemExit, match="--resume needs --checkpoint"):
        cli.main(["train", "--resume"])
    with pytest.raises(ValueError, match="batch_size 5000 is larger than the dataset"):
        cli.main(["train", "--batch-size", "5000", "--backend", "numpy", "--no-progress", "--out", ""])
    assert cli.main([]) == 2 and "train" in capsys.readouterr().out


@pytest.mark.slow  # two compilations of a 670k-parameter step
def test_fnn_bench_prints_the_ratio(capsys):
    assert cli.main(["bench", "--models", "mlp", "--repeats", "2", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^mlp +669,706 +[\d.]+ +[\d.]+ +[\d.]+$", out, flags=re.MULTILINE), out


def test_fnn_bench_full_runs_the_suite_from_the_source_checkout(tmp_path, monkeypatch, capfd):
    assert cli._source_root() == ROOT and (ROOT / "benchmarks" / "__main__.py").is_file()
    # a stand-in suite beside a stand-in fnn/: the real subprocess, streaming, cwd and exit status, in milliseconds
    fake = tmp_path / "checkout"
    (fake / "benchmarks").mkdir(parents=True)
    (fake / "benchmarks" / "__main__.py").write_text(
        "import os, sys\nprint('suite args', sys.argv[1:], 'in', os.getcwd())\nsys.exit(3)\n"
    )
    monkeypatch.setattr(cli, "_source_root", lambda: fake)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--full", "--quick", "--out", "results"]) == 3
    out = capfd.readouterr().out
    assert f"{sys.executable} -m benchmarks --quick --out {tmp_path / 'results'}" in out
    assert f"suite args ['--quick', '--out', '{tmp_path / 'results'}'] in {fake}" in out  # --out made absolute
    assert cli.main(["bench", "--full"]) == 3
    assert "suite args [] in" in capfd.readouterr().out


def test_fnn_bench_full_explains_where_the_suite_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_source_root", lambda: tmp_path)  # an installed fnn: no benchmarks/ beside it
    with pytest.raises(SystemExit, match=r"ships with fnn's source checkout.*python -m benchmarks"):
        cli.main(["bench", "--full", "--quick"])
    with pytest.raises(SystemExit, match="go with --full"):
        cli.main(["bench", "--quick"])


def test_the_console_script_is_declared():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["fnn"] == "fnn.cli:main"
    assert any(d.startswith("safetensors") for d in project["dependencies"])
    assert any(d.startswith("tqdm") for d in project["dependencies"])
