"""jaxlayers.data: the bundled/generated datasets, and the IDX and CIFAR-10 binary readers on tiny real-format files."""

from __future__ import annotations

import gzip
import random
import struct

import numpy as np
import pytest

from jaxlayers import data

# ---------------------------------------------------------------------------
# Writers of the real file formats (tiny files)
# ---------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, *, gz: bool = False, magic: int | None = None) -> None:
    """An IDX file: 0x0000, type byte 0x08 (uint8), ndim, big-endian uint32 dims, then the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", magic if magic is not None else 0x0800 | array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def write_mnist(directory, *, n_train=100, n_test=30, rows=4, cols=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    y_train, y_test = np.arange(n_train) % 10, np.arange(n_test) % 10
    X_train = rng.integers(0, 256, size=(n_train, rows, cols))
    X_test = rng.integers(0, 256, size=(n_test, rows, cols))
    write_idx(directory / f"train-images-idx3-ubyte{sfx}", X_train, gz=gz)
    write_idx(directory / f"train-labels-idx1-ubyte{sfx}", y_train, gz=gz)
    write_idx(directory / f"t10k-images-idx3-ubyte{sfx}", X_test, gz=gz)
    write_idx(directory / f"t10k-labels-idx1-ubyte{sfx}", y_test, gz=gz)
    return X_train, y_train, X_test, y_test


def write_cifar_batch(path, labels, rng) -> np.ndarray:
    """Records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    pixels = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], pixels], axis=1)
    path.write_bytes(records.tobytes())
    return pixels


def write_cifar(directory, *, per_batch=20, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    pixels = [write_cifar_batch(directory / f"data_batch_{i}.bin", np.arange(per_batch) % 10, rng) for i in range(1, 6)]
    test = write_cifar_batch(directory / "test_batch.bin", np.arange(n_test) % 10, rng)
    return np.concatenate(pixels), test


def _check_standardised(ds: data.Dataset, n_features: int) -> None:
    for split in ("train", "val", "test"):
        X, y = getattr(ds, f"X_{split}"), getattr(ds, f"y_{split}")
        assert X.dtype == np.float32 and X.ndim == 2 and X.shape[1] == n_features
        assert y.dtype == np.int32 and y.shape == (X.shape[0],)
        assert np.all(np.isfinite(X))
    mean, std = ds.X_train.mean(axis=0), ds.X_train.std(axis=0)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    raw_std = (ds.X_train * ds.std + ds.mean).std(axis=0)
    typical = raw_std > 0.5 * raw_std.mean() * (1 + 1e-6)  # above the floor: plain z-scores
    assert typical.sum() > 0.5 * len(typical)
    np.testing.assert_allclose(std[typical], 1.0, rtol=1e-3)
    assert np.all(std[~typical] < 1.0 + 1e-3)  # floored features are scaled down, never up


# ---------------------------------------------------------------------------
# digits, mnist1d
# ---------------------------------------------------------------------------


def test_digits_splits_are_stratified_standardised_and_disjoint():
    ds = data.load("digits")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1293, 144, 360)
    assert ds.num_features == 64 and ds.num_classes == 10
    _check_standardised(ds, 64)
    for y in (ds.y_train, ds.y_val, ds.y_test):  # stratified: every class, in proportion
        counts = np.bincount(y, minlength=10) / len(y)
        assert np.all(np.abs(counts - 0.1) < 0.02)
    # standardised with the TRAINING statistics only: undo them and compare with sklearn's raw data
    from sklearn.datasets import load_digits

    raw = load_digits().data
    X_all = np.concatenate([ds.X_train, ds.X_val, ds.X_test]) * ds.std + ds.mean
    assert len(np.unique(np.round(X_all).astype(int), axis=0)) == len(np.unique(raw, axis=0))
    np.testing.assert_allclose(ds.mean, (ds.X_train * ds.std + ds.mean).mean(axis=0), atol=1e-4)
    assert not np.allclose(ds.mean, raw.mean(axis=0), atol=1e-6)
    again = data.load("digits")
    np.testing.assert_array_equal(again.X_train, ds.X_train)  # deterministic


def test_mnist1d_generator_and_no_global_random_side_effects():
    # mnist1d seeds the legacy global generators; load() must put them back as they were.
    np_before, py_before = np.random.get_state(), random.getstate()  # noqa: NPY002
    ds = data.load("mnist1d")
    np_after, py_after = np.random.get_state(), random.getstate()  # noqa: NPY002
    assert py_after == py_before
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1]) and np_after[2:] == np_before[2:]
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (3600, 400, 1000)
    assert ds.num_features == 40 and ds.num_classes == 10
    _check_standardised(ds, 40)


# ---------------------------------------------------------------------------
# MNIST IDX
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
    _, y_train, X_test, y_test = write_mnist(tmp_path, gz=gz)
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"t10k-labels-idx1-ubyte{'.gz' if gz else ''}"), y_test)
    ds = data.load(f"mnist:{tmp_path}")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (90, 10, 30)
    _check_standardised(ds, 20)
    # the test split keeps the files' order: undo the standardisation and compare pixels
    np.testing.assert_allclose(ds.X_test * ds.std + ds.mean, X_test.reshape(30, 20), atol=1e-3)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert sorted(np.concatenate([ds.y_train, ds.y_val]).tolist()) == sorted(y_train.tolist())


def test_mnist_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.load(f"mnist:{tmp_path / 'nope'}")
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load(f"mnist:{tmp_path}")


def test_mnist_bad_magic(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(100) % 10, magic=2051)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: IDX magic number is 2051 .* expected 2049"):
        data.load(f"mnist:{tmp_path}")


def test_mnist_truncated_payload_and_header(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: IDX header says shape \(100, 4, 5\)"):
        data.load(f"mnist:{tmp_path}")
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(ValueError, match="truncated IDX header"):
        data.read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        data.read_idx(path)


def test_mnist_label_count_mismatch_and_range(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(99) % 10)
    with pytest.raises(ValueError, match="holds 99 labels but train-images-idx3-ubyte holds 100 images"):
        data.load(f"mnist:{tmp_path}")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(100, 12))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\], found 12"):
        data.load(f"mnist:{tmp_path}")


def test_mnist_corrupt_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: not a valid gzip file"):
        data.load(f"mnist:{tmp_path}")


# ---------------------------------------------------------------------------
# CIFAR-10 binary
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-bin"])
def test_cifar10_binary_roundtrip(tmp_path, subdir):
    train_pixels, test_pixels = write_cifar(tmp_path / subdir if subdir else tmp_path)
    ds = data.load(f"cifar10:{tmp_path}")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (90, 10, 20)
    _check_standardised(ds, 3072)
    np.testing.assert_allclose(ds.X_test * ds.std + ds.mean, test_pixels, atol=2e-3)
    np.testing.assert_array_equal(ds.y_test, np.arange(20) % 10)
    X, y = data.read_cifar10_bin(tmp_path / subdir / "data_batch_2.bin")
    np.testing.assert_array_equal(X, train_pixels[20:40])
    np.testing.assert_array_equal(y, np.arange(20) % 10)


def test_cifar10_missing_file(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_4.bin: missing CIFAR-10 binary batch"):
        data.load(f"cifar10:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.load(f"cifar10:{tmp_path / 'nope'}")


def test_cifar10_truncated_and_bad_label(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"test_batch.bin: 61360 bytes is not a whole, positive number of 3073-byte"):
        data.load(f"cifar10:{tmp_path}")
    write_cifar_batch(path, [1, 2, 200], np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"test_batch.bin: record 2 has label byte 200"):
        data.load(f"cifar10:{tmp_path}")
    (tmp_path / "data_batch_1.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"data_batch_1.bin: 0 bytes"):
        data.load(f"cifar10:{tmp_path}")


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "match"),
    [("imagenet", "unknown dataset 'imagenet'"), ("mnist", "needs a directory"), ("cifar10:", "needs a directory")],
)
def test_bad_names(name, match):
    with pytest.raises(ValueError, match=match):
        data.load(name)


def test_standardize_uses_training_statistics_only():
    X_train = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0]])
    X_test = np.array([[4.0, 7.0, 2.0]])
    mean, std, A, B = data.standardize(X_train, X_test)
    np.testing.assert_array_equal(mean, [1.0, 5.0, 2.0])
    # stds (1, 0, 1): the constant feature is floored at 0.5 * mean std = 1/3
    np.testing.assert_allclose(std, [1.0, 1 / 3, 1.0])
    np.testing.assert_allclose(A, [[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]])
    np.testing.assert_allclose(B, [[3.0, 6.0, 0.0]], rtol=1e-6)
    assert A.dtype == B.dtype == np.float32
    _, std0, _ = data.standardize(X_train, std_floor=0.0)
    np.testing.assert_array_equal(std0, [1.0, 1.0, 1.0])  # no floor: plain z-scores, constant only centred
