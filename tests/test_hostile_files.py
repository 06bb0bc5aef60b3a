"""Hostile input files: bounded memory and time for gzip bombs, huge IDX dims and
checkpoints of a million tensors; a schema for checkpoint metadata whose digest
was recomputed after an edit (issue 12, items 15 and 16)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import resource
import struct
import time
import tracemalloc

import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

import jaxlayers as jl
from jaxlayers import data, train
from jaxlayers.training import checkpoint

MB = 1 << 20


def _bounded(fn, *, peak_mb: float = 20, seconds: float = 5):
    """Run ``fn`` (which must raise); assert Python's peak allocation, RSS growth and time stay small.

    Returns the exception ``fn`` raised.
    """
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as e:
        error = e
    else:
        raise AssertionError(f"{fn} did not refuse the file")
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    assert peak < peak_mb * MB, f"peak Python allocation {peak / MB:.0f} MB"
    assert rss_growth < 100 * MB, f"max RSS grew by {rss_growth / MB:.0f} MB"
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    return error


def _idx_header(*dims: int, type_byte: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_byte, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


# ---------------------------------------------------------------------------
# IDX and gzip
# ---------------------------------------------------------------------------


def test_gzip_bomb_is_refused_after_the_declared_size(tmp_path):
    # 1 MB of gzip that expands to 1 GiB of zeros behind a header declaring 10 images of 28x28.
    # gzip allows concatenated members, so 1024 copies of a 1 MiB-of-zeros member are a valid file.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(10, 28, 28)) + gzip.compress(bytes(MB)) * 1024)
    assert path.stat().st_size < 2 * MB
    e = _bounded(lambda: data.read_idx(path))
    assert isinstance(e, ValueError)
    assert str(e).startswith(str(path))
    assert "shape (10, 28, 28) (7840 bytes of data) but the file holds more than 7840 bytes" in str(e)
    assert "\n" not in str(e)


def test_gzip_declaring_more_than_it_can_expand_to_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(60000, 28, 28)) + gzip.compress(bytes(MB)))
    e = _bounded(lambda: data.read_idx(path))
    assert isinstance(e, ValueError)
    assert f"{path}: IDX header says shape (60000, 28, 28)" in str(e)
    assert "more than a" in str(e) and "gzip file can expand to" in str(e)


@pytest.mark.parametrize("gz", [False, True])
def test_huge_idx_dims_do_not_overflow(tmp_path, gz):
    # 2^31 x 2^31 x 4 uint8 values: 2^64 bytes, which wrapped to 0 in an int64 size check.
    payload = _idx_header(2**31, 2**31, 4) + bytes(64)
    path = tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    e = _bounded(lambda: data.read_idx(path))
    assert isinstance(e, ValueError)
    assert str(e).startswith(f"{path}: IDX header says shape (2147483648, 2147483648, 4) ({2**64} bytes of data)")


def test_bomb_through_data_load_names_the_file(tmp_path):
    from test_data import write_mnist  # tests/ is on sys.path, as for _helpers

    write_mnist(tmp_path, gz=True)
    bomb = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip.compress(_idx_header(30)) + gzip.compress(bytes(MB)) * 256)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: IDX header says shape \(30,\)"):
        data.load(f"mnist:{tmp_path}")


def test_cifar_file_of_the_wrong_size_is_refused_before_reading(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    with open(path, "wb") as f:  # a sparse 4 GiB + 1 byte file: nothing is read
        f.truncate(4 * 1024 * MB + 1)
    e = _bounded(lambda: data.read_cifar10_bin(path))
    assert isinstance(e, ValueError) and str(e).startswith(f"{path}: 4294967297 bytes is not a whole")


# ---------------------------------------------------------------------------
# Checkpoint bounds
# ---------------------------------------------------------------------------


def test_checkpoint_of_a_million_empty_tensors_is_refused_before_parsing(tmp_path):
    entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(1_000_000))
    header = ("{" + entries + ',"__metadata__":{"jaxlayers":"{}","sha256":"0"}}').encode()
    path = tmp_path / train.CHECKPOINT_NAME
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    del entries, header
    assert path.stat().st_size > 50 * MB
    e = _bounded(lambda: train.read_checkpoint_metadata(path), seconds=3)
    assert isinstance(e, train.CheckpointError)
    assert str(e).startswith(f"checkpoint {path}: its header holds more than 100000 JSON objects")


def test_checkpoint_header_over_the_bound_is_refused(tmp_path, monkeypatch):
    path = tmp_path / train.CHECKPOINT_NAME
    path.write_bytes((2000).to_bytes(8, "little") + b"{" + b" " * 1998 + b"}")
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(train.CheckpointError, match=r"header of 2000 bytes, more than the 1000"):
        train.read_checkpoint_metadata(path)
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(train.CheckpointError, match=r"does not fit in the 10-byte file"):
        train.read_checkpoint_metadata(path)


# ---------------------------------------------------------------------------
# Checkpoint metadata: a schema, not only a digest
# ---------------------------------------------------------------------------

NET = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
CONFIG = train.TrainConfig(epochs=2, batch_size=50, optimizer="adam", learning_rate=3e-3, seed=1)


@pytest.fixture(scope="module")
def small():
    ds = jl.data.load("digits")
    return dataclasses.replace(ds, X_train=ds.X_train[:200], y_train=ds.y_train[:200])


@pytest.fixture(scope="module")
def fit_checkpoint(small, tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    train.fit(NET, small, CONFIG, checkpoint_dir=d)
    return (d / train.CHECKPOINT_NAME).read_bytes()


@pytest.fixture(scope="module")
def sweep_checkpoint(small, tmp_path_factory):
    d = tmp_path_factory.mktemp("fit_many")
    train.fit_many(NET, small, dataclasses.replace(CONFIG, epochs=1), seeds=[0, 1], checkpoint_dir=d)
    return (d / train.CHECKPOINT_NAME).read_bytes()


def rewrite_metadata(path, edit) -> None:
    """Apply ``edit`` to the checkpoint's metadata dict and re-sign it with checkpoint.py's own digest."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(json.loads(blob[8 : 8 + n])["__metadata__"]["jaxlayers"])
    edit(meta)
    tensors = st_load(blob)
    meta_json = json.dumps(meta, sort_keys=True)
    path.write_bytes(
        st_save(tensors, metadata={"jaxlayers": meta_json, "sha256": checkpoint._digest(meta_json, tensors)})
    )


def _set(key_path: str, value):
    def edit(meta):
        *parents, last = key_path.split(".")
        d = meta
        for k in parents:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if value is _DELETE:
            del d[last]
        elif isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return edit


_DELETE = object()


FIT_CASES = {
    "epoch -3": (_set("epoch", -3), "'epoch' is -3"),
    "epoch 1000": (_set("epoch", 1000), "'epoch' is 1000, expected an int in \\[0, 2\\]"),
    "epoch 1, history of 2": (_set("epoch", 1), "'history.loss' is a list of 8, expected a list of 4"),
    "epoch a string": (_set("epoch", "2"), "'epoch' is '2'"),
    "epoch a bool": (_set("epoch", True), "'epoch' is True"),
    "epoch a float": (_set("epoch", 2.0), "'epoch' is 2.0"),
    "models missing": (_set("models", _DELETE), "'models' is missing"),
    "models empty": (_set("models", []), "'models' is \\[\\]"),
    "two models for fit": ((lambda m: m["models"].append(m["models"][0])), "'models' is"),
    "model class not a string": (_set("models.0.class", 3), "'models\\[0\\].class' is 3"),
    "model config missing": (_set("models.0.config", _DELETE), "'models\\[0\\].config' is missing"),
    "model config not an object": (_set("models.0.config", [1]), "'models\\[0\\].config' is list"),
    "train_configs not a list": (_set("train_configs", {}), "'train_configs'"),
    "epochs missing": (_set("train_configs.0.epochs", _DELETE), "'train_configs\\[0\\].epochs' is missing"),
    "batch_size 0": (_set("train_configs.0.batch_size", 0), "'train_configs\\[0\\].batch_size' is 0"),
    "data missing": (_set("data", _DELETE), "'data' is missing"),
    "data a list": (_set("data", []), "'data' is list"),
    "data shape negative": (_set("data.shapes.y_train", [-1]), "'data.shapes.y_train' is \\[-1\\]"),
    "kind unknown": (_set("kind", "sweep"), "'kind' is 'sweep'"),
    "history missing": (_set("history", _DELETE), "'history' is missing"),
    "history field missing": (_set("history.lr", _DELETE), "'history.lr' is missing"),
    "loss one short": ((lambda m: m["history"]["loss"].pop()), "'history.loss' is a list of 7"),
    "val_acc above 1": (_set("history.val_acc.1", 2.0), "'history.val_acc\\[1\\]' is 2.0"),
    "train_acc one long": ((lambda m: m["history"]["train_acc"].append(0.5)), "'history.train_acc' is a list of 3"),
    "lr a string": (_set("history.lr.0", "0.1"), "'history.lr\\[0\\]' is '0.1'"),
    "epoch times empty": (_set("history.epoch_time_s", []), "'history.epoch_time_s' is a list of 0"),
    "best_epoch past epoch": (_set("best_epoch", 3), "'best_epoch' is 3, expected an int in \\[0, 2\\]"),
    "best_epoch negative": (_set("best_epoch", -1), "'best_epoch' is -1"),
    "best_val_acc 1.5": (_set("best_val_acc", 1.5), "'best_val_acc' is 1.5"),
    "best_val_acc missing": (_set("best_val_acc", _DELETE), "'best_val_acc' is missing"),
    "best_val_acc NaN": (_set("best_val_acc", float("nan")), "'best_val_acc' is nan"),
    "preprocessing not an object": (_set("preprocessing", 3), "'preprocessing' is int"),
    "preprocessing std 0": (_set("preprocessing", {"std": [[1.0, 0.0]]}), "'preprocessing.std' holds 0.0"),
    "preprocessing mean NaN": (_set("preprocessing", {"mean": [float("nan")]}), "'preprocessing.mean' holds nan"),
    "preprocessing shape": (
        _set("preprocessing", {"input_shape": [8, 0]}),
        "'preprocessing.input_shape' is \\[8, 0\\]",
    ),
    "preprocessing names": (
        _set("preprocessing", {"class_names": [0, 1]}),
        "'preprocessing.class_names' is \\[0, 1\\]",
    ),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_edited_and_resigned_metadata_is_refused_naming_the_field(fit_checkpoint, tmp_path, case):
    edit, match = FIT_CASES[case]
    path = tmp_path / train.CHECKPOINT_NAME
    path.write_bytes(fit_checkpoint)
    rewrite_metadata(path, edit)
    with pytest.raises(train.CheckpointError, match=f"^checkpoint {path}: metadata field {match}"):
        train.read_checkpoint_metadata(path)


SWEEP_CASES = {
    "loss of one model": ((lambda m: m["history"]["loss"].pop()), "'history.loss' is list, expected a list of 2"),
    "val_acc of model 1 short": (_set("history.val_acc.1", []), "'history.val_acc\\[1\\]' is a list of 0"),
    "best_epoch a scalar": (_set("best_epoch", 1), "'best_epoch' is 1, expected a list of 2"),
    "best_val_acc of model 0": (_set("best_val_acc.0", -2.0), "'best_val_acc\\[0\\]' is -2.0"),
    "configs fewer than models": ((lambda m: m["train_configs"].pop()), "'train_configs' is .* expected a list of 2"),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_fit_many_metadata_is_checked_per_model(sweep_checkpoint, tmp_path, case):
    edit, match = SWEEP_CASES[case]
    path = tmp_path / train.CHECKPOINT_NAME
    path.write_bytes(sweep_checkpoint)
    rewrite_metadata(path, edit)
    with pytest.raises(train.CheckpointError, match=f"^checkpoint {path}: metadata field {match}"):
        train.read_checkpoint_metadata(path)


def test_resigned_checkpoints_that_pass_the_schema_load(fit_checkpoint, sweep_checkpoint, tmp_path):
    # The helper itself changes nothing a load checks; the optional preprocessing record is allowed.
    for blob in (fit_checkpoint, sweep_checkpoint):
        path = tmp_path / train.CHECKPOINT_NAME
        path.write_bytes(blob)
        record = {"mean": [[0.0, 1.5]], "std": [[1.0, 2.0]], "input_shape": [1, 2], "image_shape": None}
        rewrite_metadata(path, _set("preprocessing", {**record, "class_names": ["a", "b"]}))
        assert train.read_checkpoint_metadata(path)["preprocessing"]["std"] == [[1.0, 2.0]]


def test_resume_refuses_an_edited_epoch_instead_of_training(small, fit_checkpoint, tmp_path):
    # epoch = -3 used to train 6 epochs and overwrite the checkpoint.
    path = tmp_path / train.CHECKPOINT_NAME
    path.write_bytes(fit_checkpoint)
    rewrite_metadata(path, _set("epoch", -3))
    edited = path.read_bytes()
    with pytest.raises(train.CheckpointError, match="metadata field 'epoch' is -3"):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert path.read_bytes() == edited


def test_save_refuses_metadata_that_a_load_would_refuse(small, tmp_path):
    result = train.fit(NET, small, dataclasses.replace(CONFIG, epochs=1))
    path = tmp_path / train.CHECKPOINT_NAME
    with pytest.raises(train.CheckpointError, match=r"save_checkpoint .*: metadata field 'kind' is missing"):
        train.save_checkpoint(path, result.state, result.state, {"epoch": 1})
    assert not path.exists()
