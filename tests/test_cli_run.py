"""`jaxlayers evaluate` and `jaxlayers predict` on a trained run directory (through jaxlayers.load_run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import cli

pytestmark = pytest.mark.skipif(not hasattr(jl, "load_run"), reason="needs jaxlayers.load_run (the loadrun branch)")

SMALL = ["--hidden-dims", "24", "--epochs", "2", "--batch-size", "100", "--lr", "0.01", "-q"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    assert cli.main(["train", *SMALL, "-o", str(out)]) == 0
    return out


def test_evaluate_prints_accuracy_per_class_and_confusion(run_dir, capsys):
    assert cli.main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"accuracy {summary['test_acc']:.4f}" in out  # the run's own test accuracy, exactly
    assert "per class: " in out and "confusion matrix (rows: true, columns: predicted):" in out
    rows = out.split("confusion matrix (rows: true, columns: predicted):\n")[1].splitlines()[1:11]
    counts = np.array([[int(v) for v in r.split()[1:]] for r in rows])
    assert counts.shape == (10, 10) and counts.sum() == 360
    assert (run_dir / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["evaluate", str(run_dir), "--split", "val", "--which", "last", "-o", str(run_dir / "v.png")]) == 0
    assert "val (144 examples)" in capsys.readouterr().out and (run_dir / "v.png").exists()


def test_evaluate_refuses_a_dataset_of_another_shape(run_dir, capsys):
    assert cli.main(["evaluate", str(run_dir), "--dataset", "mnist1d"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxlayers evaluate: error: dataset 'mnist1d' test: X has shape (") and "\n" not in err
    assert ", 40), but this run's model takes inputs of shape (N, 64) or (N, 1, 8, 8) or (N, 8, 8)" in err


def test_predict_writes_a_row_per_example(run_dir, tmp_path, capsys):
    from sklearn.datasets import load_digits

    X = load_digits().data[:7]
    for name, save in (("x.npy", lambda p: np.save(p, X)), ("x.npz", lambda p: np.savez(p, X=X)),
                       ("x.csv", lambda p: np.savetxt(p, X, delimiter=","))):  # fmt: skip
        save(tmp_path / name)
        out = tmp_path / f"{name}.csv"
        assert cli.main(["predict", str(run_dir), str(tmp_path / name), "-o", str(out)]) == 0
        assert "wrote 7 predictions" in capsys.readouterr().out
        lines = out.read_text().splitlines()
        assert lines[0].startswith("index,label,") and lines[0].endswith(",p_9") and len(lines) == 8
        probs = np.array([[float(v) for v in line.split(",")[-10:]] for line in lines[1:]])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        labels = [int(line.split(",")[1]) for line in lines[1:]]
        assert labels == jl.load_run(run_dir).predict(X).tolist()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 10)), "bad.npy: X has shape (3, 10), but this run's model takes inputs of shape (N, 64) or"),
        (np.zeros(64), "bad.npy: X has shape (64,), but this run's model takes inputs of shape (N, 64) or"),
    ],
)
def test_predict_refuses_inputs_of_the_wrong_shape(run_dir, tmp_path, capsys, array, message):
    np.save(tmp_path / "bad.npy", array)
    assert cli.main(["predict", str(run_dir), str(tmp_path / "bad.npy"), "-o", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxlayers predict: error:") and message in err and "\n" not in err
    assert not (tmp_path / "p.csv").exists()


def test_predict_and_evaluate_missing_files_are_one_line(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), str(tmp_path / "none.npy")]) == 1
    assert capsys.readouterr().err.strip() == f"jaxlayers predict: error: no input file {tmp_path / 'none.npy'}"
    assert cli.main(["evaluate", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxlayers evaluate: error:") and "\n" not in err
