"""fnn.checkpoint: safe atomic save / load, checked against a template; exact resume of fit."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest

import fnn
from fnn import checkpoint, data, losses, optim, train
from fnn import layers as L
from fnn.checkpoint import CheckpointError

ROOT = pathlib.Path(__file__).resolve().parent.parent

CE = losses.softmax_cross_entropy


def leaves_equal(a, b) -> bool:
    """Bit-for-bit equality of two trees (keys compared by their data / generator state)."""

    def raw(leaf):
        if isinstance(leaf, np.random.Generator):
            return json.dumps(leaf.bit_generator.state)
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return np.asarray(jax.random.key_data(leaf))
        return np.asarray(leaf)

    la, lb = fnn.backend.tree_leaves(a), fnn.backend.tree_leaves(b)
    if fnn.backend.tree_structure(a) != fnn.backend.tree_structure(b):
        return False
    for x, y in zip(la, lb):
        x, y = raw(x), raw(y)
        if isinstance(x, str):
            if x != y:
                return False
        elif x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


MODEL = L.serial(L.flatten, L.dense(32), L.batch_norm(), L.relu, L.dropout(0.2), L.dense(10))
OPT = optim.adam(1e-2)


def state_on(backend_name, seed=0):
    """A fresh TrainState; on JAX, initialised by NumPy and moved over (nothing compiled eagerly)."""
    ts = train.init_state(MODEL, OPT, fnn.key(seed, backend="numpy"), (None, 8, 8, 1))
    return ts if backend_name == "numpy" else jax.device_put(ts._replace(key=None))._replace(key=fnn.key(seed))


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_a_train_state_round_trips(tmp_path, backend_name):
    ts = state_on(backend_name)
    path = checkpoint.save(tmp_path / "ts.safetensors", ts, metadata={"epoch": 3, "note": "hi"})
    back = checkpoint.load(path, like=ts)
    assert leaves_equal(back, ts)
    assert type(back) is train.TrainState and type(back.opt_state) is type(ts.opt_state)
    assert isinstance(back.params["dense"]["w"], jax.Array) == (backend_name == "jax")
    assert checkpoint.read_metadata(path) == {"epoch": 3, "note": "hi"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_dtypes_and_python_scalars_survive(tmp_path):
    tree = {
        "bf16": np.arange(6, dtype=ml_dtypes.bfloat16).reshape(2, 3),
        "f64": np.linspace(0, 1, 5),
        "i8": np.array([-1, 2], np.int8),
        "flag": np.array(True),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": 2.5,
        "jax": jax.numpy.ones((2,), jax.numpy.float16),
    }
    back = checkpoint.load(checkpoint.save(tmp_path / "t.safetensors", tree), like=tree)
    for name in ("bf16", "f64", "i8", "flag", "empty"):
        assert back[name].dtype == tree[name].dtype and back[name].shape == tree[name].shape
        np.testing.assert_array_equal(back[name], tree[name])
    assert back["scalar"] == 2.5 and isinstance(back["scalar"], float)
    assert isinstance(back["jax"], jax.Array) and back["jax"].dtype == jax.numpy.float16


def test_the_file_is_safetensors_with_a_json_tree(tmp_path):
    from safetensors import safe_open

    ts = train.init_state(MODEL, OPT, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    path = checkpoint.save(tmp_path / "ts.safetensors", ts)
    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata()
        names = set(f.keys())
    assert header["format"] == checkpoint.FORMAT
    tree = json.loads(header["tree"])
    assert {"path": "params/dense/w", "kind": "array", "dtype": "float32", "shape": [64, 32]} in tree
    assert any(e["path"] == "key" and e["kind"] == "numpy_generator" for e in tree)
    assert "params/dense/w" in names and "key" not in names


def test_a_checkpoint_of_another_model_names_the_differences(tmp_path):
    ts = train.init_state(MODEL, OPT, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    path = checkpoint.save(tmp_path / "a.safetensors", ts)
    other_model = L.serial(L.flatten, L.dense(16), L.relu, L.dense(10))
    other = train.init_state(other_model, OPT, fnn.key(0, backend="numpy"), (None, 8, 8, 1))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path, like=other)
    message = str(err.value)
    assert "params/dense/w: shape (64, 32) in the file, (64, 16) expected" in message
    assert "not in the template: params/batch_norm/scale" in message
    half = fnn.backend.tree_cast(ts, np.float16)
    with pytest.raises(CheckpointError, match="params/dense/w: dtype float32 in the file, float16 expected"):
        checkpoint.load(path, like=half)
    with pytest.raises(CheckpointError, match="key: kind numpy_generator in the file, jax_key expected"):
        checkpoint.load(path, like=ts._replace(key=fnn.key(0)))


def test_a_truncated_or_corrupted_file_is_an_error_and_the_previous_one_survives(tmp_path):
    tree = {"w": np.arange(1000, dtype=np.float32)}
    first = checkpoint.save_numbered(tmp_path, 1, tree)
    second = checkpoint.save_numbered(tmp_path, 2, {"w": tree["w"] + 1})
    assert checkpoint.latest(tmp_path) == second
    raw = second.read_bytes()

    second.write_bytes(raw[: len(raw) // 2])  # a crash in the middle of a non-atomic write
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.load(second, like=tree)
    flipped = bytearray(raw)
    flipped[-10] ^= 0x40  # one bit of the data
    second.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load(second, like=tree)
    np.testing.assert_array_equal(checkpoint.load(first, like=tree)["w"], tree["w"])

    second.write_bytes(b"")
    with pytest.raises(CheckpointError, match=str(second.name)):
        checkpoint.read_metadata(second)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.safetensors", like=tree)


def test_a_crash_while_writing_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "c.safetensors", {"w": np.zeros(3)})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"w": np.ones(3)})
    monkeypatch.undo()
    np.testing.assert_array_equal(checkpoint.load(path, like={"w": np.zeros(3)})["w"], np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_numbered_checkpoints_keep_the_newest(tmp_path):
    for epoch in range(1, 6):
        checkpoint.save_numbered(tmp_path, epoch, {"e": np.array(epoch)}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "checkpoint_000004.safetensors",
        "checkpoint_000005.safetensors",
    ]
    assert checkpoint.latest(tmp_path / "missing") is None
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(tmp_path / "x.safetensors", {"e": np.zeros(1)}, metadata={"bad": object()})


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, backend_name):
    x, y = data.load_digits()
    x, y = x[:256], y[:256]
    ts0 = state_on(backend_name)
    # the model has dropout and batch norm: the keys and the state must both be restored
    run = dict(batch_size=64, validation_data=(x[:64], y[:64]), progress=False)
    straight, history = train.fit(MODEL, CE, OPT, ts0, (x, y), epochs=4, **run)

    _, first = train.fit(MODEL, CE, OPT, ts0, (x, y), epochs=2, checkpoint_dir=tmp_path, **run)  # "crashes" after 2
    assert len(first) == 2 and checkpoint.latest(tmp_path).name == "checkpoint_000002.safetensors"
    resumed, history2 = train.fit(MODEL, CE, OPT, ts0, (x, y), epochs=4, checkpoint_dir=tmp_path, resume=True, **run)
    assert leaves_equal(resumed, straight)
    assert history2["train_loss"] == history["train_loss"] and history2["val_accuracy"] == history["val_accuracy"]

    # a corrupted newest checkpoint stops the resume with its name (the older ones are intact)
    newest = checkpoint.latest(tmp_path)
    newest.write_bytes(newest.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match=newest.name):
        train.fit(MODEL, CE, OPT, ts0, (x, y), epochs=5, checkpoint_dir=tmp_path, resume=True, **run)
    checkpoint.load(checkpoint.list_checkpoints(tmp_path)[-2], like=ts0)


def test_leaves_that_cannot_be_stored_are_refused_at_save_naming_the_leaf(tmp_path):
    for leaf, dtype in (("hello", "str160"), (np.array([{"a": 1}], dtype=object), "object")):
        with pytest.raises(TypeError, match=rf"leaf 'params/name' is a {dtype} array; only numeric and boolean"):
            checkpoint.save(tmp_path / "s.safetensors", {"params": {"name": leaf, "w": np.ones(2)}})
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    script = (
        "import os, sys, numpy as np\n"
        "from fnn import checkpoint\n"
        "def die(src, dst):\n"
        "    os._exit(9)  # killed between writing and renaming\n"
        "os.replace = die\n"
        f"checkpoint.save({str(tmp_path / 'big.safetensors')!r}, {{'w': np.ones((256, 256), np.float32)}})\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".fnn-saving-") and any(left[0].iterdir())
    checkpoint.save(tmp_path / "next.safetensors", {"w": np.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["next.safetensors"]


def test_save_numbered_refuses_a_negative_number_and_an_unwritable_target_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"number must be a non-negative int \(e.g. the epoch\); got -1"):
        checkpoint.save_numbered(tmp_path, -1, {"w": np.ones(2)})
    (tmp_path / "taken").mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(OSError, match=r"checkpoint.save: cannot write .*taken"):
        checkpoint.save(tmp_path / "taken", {"w": np.ones(2)})


def test_a_train_state_loads_into_an_eval_shape_template(tmp_path):
    model, opt = fnn.models.mlp((4,), num_classes=3), fnn.optim.adam(1e-3)
    ts = fnn.train.init_state(model, opt, fnn.key(0), (None, 5))
    path = checkpoint.save(tmp_path / "ts.safetensors", ts)
    like = jax.eval_shape(lambda: fnn.train.init_state(model, opt, fnn.key(0), (None, 5)))
    back = checkpoint.load(path, like=like)
    assert jax.dtypes.issubdtype(back.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(back.key), jax.random.key_data(ts.key))
    np.testing.assert_array_equal(back.params["dense"]["w"], ts.params["dense"]["w"])
