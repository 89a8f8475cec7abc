"""fnn.data: the bundled digits, IDX files, splits, shuffled batches, labels, normalisation."""

import gzip

import numpy as np
import pytest

import fnn
from fnn import data


def write_idx(path, array: np.ndarray, type_byte: int = 0x08) -> None:
    """An IDX file: 00 00 <type> <ndim>, the dims as big-endian uint32, the data big-endian."""
    header = bytes([0, 0, type_byte, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def fake_mnist(directory, n_train=5, n_test=3, gz=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    sets = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name = data.MNIST_FILES[split]
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(directory / (images_name + suffix), images)
        write_idx(directory / (labels_name + suffix), labels)
        sets[split] = (images, labels)
    return sets


def test_digits_are_bundled():
    x, y = data.load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (1797,) and y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
    flat, _ = data.load_digits(images=False, normalize=False)
    assert flat.shape == (1797, 64) and flat.max() == 16


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_are_read(tmp_path, gz):
    sets = fake_mnist(tmp_path, gz=gz)
    for split, (images, labels) in sets.items():
        x, y = data.load_mnist(tmp_path, split)
        assert x.shape == (len(images), 28, 28, 1) and x.dtype == np.float32
        np.testing.assert_allclose(x[..., 0] * 255, images, atol=1e-4)
        np.testing.assert_array_equal(y, labels)
    flat, _ = data.load_mnist(tmp_path, "test", images=False, normalize=False)
    assert flat.shape == (3, 784) and flat.max() > 1


def test_read_idx_keeps_wider_types(tmp_path):
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "ints", values, type_byte=0x0C)
    back = data.read_idx(tmp_path / "ints")
    np.testing.assert_array_equal(back, values)
    assert back.dtype == np.int32 and back.dtype.isnative


def test_missing_mnist_files_are_listed(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_mnist(tmp_path)
    message = str(err.value)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in message
    assert str(tmp_path) in message


def test_truncated_or_foreign_idx_files_are_refused(tmp_path):
    write_idx(tmp_path / "a", np.zeros((4, 2, 2), np.uint8))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match=r"announces shape \(4, 2, 2\)"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "png")


def test_split_is_fixed_and_disjoint():
    x = np.arange(100).reshape(100, 1)
    y = np.arange(100)
    a = data.train_val_split(x, y, 0.25, seed=3)
    b = data.train_val_split(x, y, 0.25, seed=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    x_tr, y_tr, x_val, y_val = a
    assert len(x_val) == 25 and len(x_tr) == 75
    assert sorted(np.concatenate([y_tr, y_val]).tolist()) == list(range(100))


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_batches_shuffle_from_a_key_and_cover_every_example_once(backend_name):
    x = np.arange(10).reshape(10, 1)
    y = np.arange(10)
    k = fnn.key(0, backend=backend_name)
    first = [yb.tolist() for _, yb in data.batches(x, y, 4, key=k)]
    again = [yb.tolist() for _, yb in data.batches(x, y, 4, key=k)]
    assert first == again  # a key is a value: the same key, the same order
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and sum(first, []) != list(range(10))
    other = [yb.tolist() for _, yb in data.batches(x, y, 4, key=fnn.fold_in(k, 1))]
    assert other != first
    assert [len(b) for _, b in data.batches(x, y, 4, drop_last=True)] == [4, 4]


def test_permutation_leaves_a_numpy_key_unchanged():
    k = np.random.default_rng(5)
    state = k.bit_generator.state
    np.testing.assert_array_equal(data.permutation(k, 20), data.permutation(k, 20))
    assert k.bit_generator.state == state


@pytest.mark.parametrize(
    "batch_size, message",
    [(0, "positive int"), (-3, "positive int"), (2.5, "positive int"), (11, "larger than the dataset")],
)
def test_bad_batch_sizes(batch_size, message):
    with pytest.raises(ValueError, match=message):
        list(data.batches(np.zeros((10, 2)), np.zeros(10), batch_size))


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="x has 10 .* y has 9"):
        list(data.batches(np.zeros((10, 2)), np.zeros(9), 2))


def test_one_hot_and_label_range():
    np.testing.assert_array_equal(data.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    assert data.one_hot(np.array([1]), 2, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match=r"\[0, 3\).*from 0 to 5"):
        data.one_hot(np.array([0, 5]), 3)
    with pytest.raises(ValueError, match="-1"):
        data.check_labels(np.array([-1, 2]), 3)
    with pytest.raises(TypeError, match="integers"):
        data.one_hot(np.array([0.5]), 3)


def test_normalize_with_training_statistics():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 3)) * [1.0, 5.0, 0.0] + [0.0, 3.0, 7.0]).astype(np.float32)
    mean, std = data.mean_std(x, per_feature=True)
    z = data.normalize(x, mean, std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-4)
    assert np.all(np.isfinite(z)) and np.allclose(z[:, 2], 0)  # a constant feature maps to 0, not NaN
    m, s = data.mean_std(x)
    assert m.shape == () and s.shape == ()


def test_broken_headers_and_gzip_files_name_the_file(tmp_path):
    write_idx(tmp_path / "a", np.zeros((4, 2, 2), np.uint8))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "header").write_bytes(raw[:9])  # 3 dimensions announced, 1 and a bit given
    with pytest.raises(ValueError, match=r"header: truncated IDX header \(9 bytes; 3 dimensions need 16\)"):
        data.read_idx(tmp_path / "header")
    (tmp_path / "plain.gz").write_bytes(raw)  # not gzip at all
    with pytest.raises(ValueError, match=r"plain.gz: not a readable gzip file"):
        data.read_idx(tmp_path / "plain.gz")
    write_idx(tmp_path / "whole.gz", np.zeros((40, 20), np.uint8))
    (tmp_path / "cut.gz").write_bytes((tmp_path / "whole.gz").read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"cut.gz: not a readable gzip file"):
        data.read_idx(tmp_path / "cut.gz")


def test_mnist_labels_outside_0_to_9_are_refused_and_float_images_are_not_rescaled(tmp_path):
    fake_mnist(tmp_path, gz=False)
    names = data.MNIST_FILES["train"]
    write_idx(tmp_path / names[1], np.array([0, 1, 255, 3, 4], np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte must hold integer labels 0-9; got uint8 values from 0 to 255"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / names[1], np.array([0, 1, 2, 3, 4], np.uint8))
    floats = np.linspace(0, 1, 5 * 28 * 28, dtype=np.float32).reshape(5, 28, 28)
    write_idx(tmp_path / names[0], floats, type_byte=0x0D)
    x, y = data.load_mnist(tmp_path)
    np.testing.assert_array_equal(x[..., 0], floats)  # taken as stored, not divided by 255
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4])


def test_a_split_that_leaves_a_side_empty_is_refused():
    x, y = np.zeros((3, 2)), np.zeros(3, int)
    with pytest.raises(ValueError, match=r"val_fraction 0.1 of 3 examples leaves 0 for validation and 3 for training"):
        data.train_val_split(x, y, 0.1)
