"""The loggers: CSV and TensorBoard write every epoch's record and the gradient
statistics, read back from the files they wrote."""

import csv
import struct
import sys

import numpy as np
import pytest

from fnn import train
from tests.test_callbacks import VAL, run, state_on


def read_csv(path):
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, {name: [row[i] for row in rows] for i, name in enumerate(header)}


def read_scalars(log_dir):
    """``{tag: [(step, value), ...]}`` from the event files in ``log_dir``: TFRecords
    (length, its CRC, the data, its CRC) of ``Event`` protos, read with tensorboardX's protos."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_csv_logger_writes_the_gradient_statistics(tmp_path):
    path = tmp_path / "log.csv"
    _, history = run(state_on("numpy"), 2, validation_data=VAL, grad_stats=True, callbacks=[train.CSVLogger(path)])
    header, column = read_csv(path)
    grad_columns = [f"{stat}/{leaf}" for leaf in history.grad_stats[0] for stat in history.grad_stats[0][leaf]]
    assert header == list(history.last) + grad_columns
    assert "grad_norm/dense/w" in header and "update_ratio/dense_1/b" in header
    for epoch, stats in enumerate(history.grad_stats):
        for leaf, values in stats.items():
            for stat, value in values.items():
                assert float(column[f"{stat}/{leaf}"][epoch]) == value  # every digit
    assert [float(v) for v in column["train_loss"]] == history["train_loss"]


def test_tensorboard_writes_every_record_and_the_gradient_statistics(tmp_path):
    pytest.importorskip("tensorboardX")
    logger = train.TensorBoard(tmp_path / "tb")
    _, history = run(state_on("numpy"), 3, validation_data=VAL, grad_stats=True, callbacks=[logger])
    scalars = read_scalars(tmp_path / "tb")
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "step", "seconds"):
        assert [step for step, _ in scalars[name]] == [1, 2, 3], name
        np.testing.assert_allclose([v for _, v in scalars[name]], history[name], rtol=1e-6)  # float32 in the file
    assert "epoch" not in scalars
    for leaf in ("dense/w", "dense/b", "dense_1/w", "dense_1/b"):
        for stat in ("grad_norm", "grad_max", "nonfinite", "update_ratio"):
            expected = [h[leaf][stat] for h in history.grad_stats]
            np.testing.assert_allclose([v for _, v in scalars[f"{stat}/{leaf}"]], expected, rtol=1e-6)


def test_tensorboard_without_tensorboardx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    with pytest.raises(ImportError, match=r"TensorBoard needs tensorboardX: pip install 'fnn\[log\]'"):
        train.TensorBoard("runs")


def test_the_progress_bar_rate_excludes_the_first_epochs_compilation(capsys):
    import time

    from fnn.train.loop import _Bar

    bar = _Bar(True, True, epochs=20, start=0, steps=5)
    time.sleep(0.6)  # the first epoch on JAX: compiling it, then running it
    bar.epoch({"train_loss": 1.0})
    for _ in range(2):
        time.sleep(0.12)  # compiled epochs, 8 per second
        bar.epoch({"train_loss": 1.0})
    meter = bar.bar.format_dict
    rate = meter["rate"] or (meter["n"] - meter["initial"]) / meter["elapsed"]
    bar.close()
    capsys.readouterr()
    assert meter["n"] == 3 and meter["elapsed"] < 0.5  # the clock started after the first epoch
    assert 6.0 < rate < 9.0, rate  # with the compilation counted it would be below 5
