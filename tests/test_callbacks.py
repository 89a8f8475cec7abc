"""fnn.train callbacks: what each built-in one really does to a run, and the hook protocol."""

import csv

import jax
import numpy as np
import pytest

import fnn
from fnn import checkpoint, data, losses, optim, train
from fnn import layers as L
from tests.test_checkpoint import leaves_equal

CE = losses.softmax_cross_entropy
# tiny and shared, so that JAX compiles its epoch once for the whole module
MODEL = L.serial(L.dense(16), L.relu, L.dropout(0.1), L.dense(10))
OPT = optim.sgd(0.1)
X, Y = data.load_digits(images=False)
TRAIN = (X[:90], Y[:90])  # batches of 32: two full ones and a tail of 26
# labels that cannot be learnt: the validation loss soon rises while the train loss falls
VAL = (X[100:160], np.random.default_rng(0).permutation(Y[100:160]))


def state_on(backend_name, seed=0):
    ts = train.init_state(MODEL, OPT, fnn.key(seed, backend="numpy"), (None, 64))
    return ts if backend_name == "numpy" else jax.device_put(ts._replace(key=None))._replace(key=fnn.key(seed))


def run(ts, epochs, **kwargs):
    return train.fit(MODEL, CE, OPT, ts, TRAIN, epochs=epochs, batch_size=32, progress=False, **kwargs)


class Recorder(train.Callback):
    """Records every hook call, and the learning rate at each epoch's end."""

    def __init__(self):
        self.calls, self.lrs = [], []

    def on_train_begin(self, train_state, history):
        self.calls.append(("begin", len(history)))

    def on_epoch_end(self, epoch, record, train_state):
        self.calls.append(("epoch", epoch, record["epoch"]))
        self.lrs.append(float(optim.get_learning_rate(train_state.opt_state)))

    def on_train_end(self, train_state, history):
        self.calls.append(("end", len(history)))


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_state(backend_name):
    ts0 = state_on(backend_name)
    _, reference = run(ts0, 8, validation_data=VAL)
    losses_ = reference["val_loss"]
    best, patience = 0, 2  # the rule: stop once `patience` epochs in a row did not beat the best
    for e in range(1, len(losses_)):
        if losses_[e] < losses_[best]:
            best = e
        elif e - best >= patience:
            break
    stop_epoch, best_epoch = e + 1, best + 1
    assert stop_epoch < 8, losses_  # the test is about an early stop

    ts, history = run(ts0, 8, validation_data=VAL, callbacks=[train.EarlyStopping(patience=patience)])
    assert history["epoch"] == list(range(1, stop_epoch + 1))
    assert history["val_loss"] == losses_[:stop_epoch]
    assert history.stopped["reason"] == "callback" and history.stopped["epoch"] == stop_epoch
    assert f"best {losses_[best]:.6g} at epoch {best_epoch}" in history.stopped["message"]
    at_best, _ = run(ts0, best_epoch)  # fit for best_epoch epochs: the same run up to there
    assert leaves_equal(ts, at_best)  # the whole state of the best epoch, restored exactly

    last, _ = run(ts0, 8, validation_data=VAL, callbacks=[train.EarlyStopping(patience=patience, restore_best=False)])
    assert leaves_equal(last, run(ts0, stop_epoch)[0])


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_reduce_lr_on_plateau_changes_the_rate_the_training_then_uses(backend_name):
    ts0 = state_on(backend_name)
    recorder = Recorder()
    # the train loss falls every epoch, so in mode "max" it never improves after epoch 1
    plateau = train.ReduceLROnPlateau("train_loss", factor=0.5, patience=2, mode="max")
    ts, history = run(ts0, 5, callbacks=[plateau, recorder])
    assert np.all(np.diff(history["train_loss"]) < 0), history["train_loss"]
    assert recorder.lrs == [0.1, 0.1, 0.05, 0.05, 0.025]
    # the same run by hand: 3 epochs, rate 0.05, 2 epochs, rate 0.025
    by_hand, _ = run(ts0, 3)
    by_hand, _ = run(by_hand._replace(opt_state=optim.set_learning_rate(by_hand.opt_state, 0.05)), 2)
    by_hand = by_hand._replace(opt_state=optim.set_learning_rate(by_hand.opt_state, 0.025))
    assert leaves_equal(ts, by_hand)
    with pytest.raises(ValueError, match="factor must be in"):
        train.ReduceLROnPlateau(factor=2.0)


def test_csv_logger_writes_one_row_per_epoch_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    ts, history = run(state_on("numpy"), 3, validation_data=VAL, callbacks=[train.CSVLogger(path)])
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == list(history.last)  # the record's keys, in its order
    assert set(header) == {"epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"}
    column = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    assert column["epoch"] == ["1", "2", "3"] and column["step"] == ["3", "6", "9"]
    assert [float(v) for v in column["val_loss"]] == history["val_loss"]  # every digit kept
    # a resumed run appends; a new one (append=False, the default) starts the file again
    run(ts, 2, validation_data=VAL, callbacks=[train.CSVLogger(path, append=True)])
    assert len(path.read_text().splitlines()) == 1 + 3 + 2
    with pytest.raises(ValueError, match=r"has the columns \['epoch', 'step'.*'val_loss'.*this run's records have"):
        run(ts, 1, callbacks=[train.CSVLogger(path, append=True)])  # no validation: other columns
    run(ts, 1, callbacks=[train.CSVLogger(path)])
    assert path.read_text().splitlines()[0] == "epoch,step,train_loss,train_accuracy,seconds"
    assert len(path.read_text().splitlines()) == 2


def test_checkpoint_writes_keeps_and_resumes(tmp_path):
    ts0 = state_on("numpy")
    straight, history = run(ts0, 7)
    _, first = run(ts0, 5, callbacks=[train.Checkpoint(tmp_path, every=2, keep=2)])  # saves 2, 4 and the last, 5
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "checkpoint_000004.safetensors",
        "checkpoint_000005.safetensors",
    ]
    meta = checkpoint.read_metadata(checkpoint.latest(tmp_path))
    assert meta["epoch"] == 5 and len(meta["history"]["records"]) == 5
    resumed, again = run(ts0, 7, callbacks=[train.Checkpoint(tmp_path, every=2, keep=2)], resume=True)
    assert leaves_equal(resumed, straight) and again["train_loss"] == history["train_loss"]
    assert checkpoint.latest(tmp_path).name == "checkpoint_000007.safetensors"
    with pytest.raises(ValueError, match="every must be a positive int"):
        train.Checkpoint(tmp_path, every=0)


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_a_returned_state_is_used_and_stop_training_ends_after_that_epoch(backend_name):
    ts0 = state_on(backend_name)

    class Freeze(train.Callback):
        """From epoch 2 on, a learning rate of 0: the params stop moving."""

        def on_epoch_end(self, epoch, record, train_state):
            if epoch == 2:
                return train_state._replace(opt_state=optim.set_learning_rate(train_state.opt_state, 0.0))
            return train.StopTraining if epoch == 4 else None

    recorder = Recorder()
    ts, history = run(ts0, 6, callbacks=[Freeze(), recorder])
    after_two, _ = run(ts0, 2)
    assert leaves_equal(ts.params, after_two.params) and int(ts.step) == 4 * 3
    assert len(history) == 4 and history.stopped == {"reason": "callback", "epoch": 4, "step": 12,
                                                     "message": "stopped by Freeze"}
    assert recorder.calls == [("begin", 0)] + [("epoch", e, e) for e in range(1, 5)] + [("end", 4)]

    class StopNow(train.Callback):
        def on_epoch_end(self, epoch, record, train_state):
            return train.StopTraining("enough")

    ts, history = run(ts0, 6, callbacks=[StopNow()])
    assert len(history) == 1 and history.stopped["message"] == "enough"
    assert leaves_equal(ts, run(ts0, 1)[0])  # the queued next epoch was not used


def test_callback_mistakes_are_named():
    ts0 = state_on("numpy")

    class Wrong(train.Callback):
        def on_epoch_end(self, epoch, record, train_state):
            return "stop"

    with pytest.raises(TypeError, match="Wrong.on_epoch_end must return None, a TrainState or fnn.train.StopTraining"):
        run(ts0, 1, callbacks=[Wrong()])
    with pytest.raises(ValueError, match=r"monitor 'val_loss' is not in the epoch record \(val_\* needs "
                                         r"fit\(validation_data=...\)\); it has \['epoch', 'seconds', 'step'"):
        run(ts0, 1, callbacks=[train.EarlyStopping()])
    with pytest.raises(TypeError, match="callbacks must be a list"):
        run(ts0, 1, callbacks=train.EarlyStopping())
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        train.EarlyStopping(mode="lower")
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        run(ts0, 1, resume=True, callbacks=[])
