"""Your own data and your own optimizer: `npz:PATH` and `Dataset.from_arrays`, `--model PATH.json`, any optax
optimizer in `fit` (checkpointed, resumed bitwise), the CLI's optimizer and schedule flags, and the history's
learning rates read from the optimizer's one optax schedule."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import jaxlayers as jl
from jaxlayers import cli, train
from jaxlayers.data import Dataset, load, load_npz
from jaxlayers.model import model_record
from jaxlayers.training import state as state_module
from jaxlayers.training import strategies
from jaxlayers.training.config import learning_rate_schedule

TINY = ["--hidden-dims", "16", "--epochs", "2", "--batch-size", "64", "--lr", "0.01", "-q"]


def _digits_arrays(n_train=600, n_test=200):
    d = load_digits()
    X, y = d.data, d.target
    return X[:n_train], y[:n_train], X[n_train : n_train + n_test], y[n_train : n_train + n_test]


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    X_train, y_train, X_test, y_test = _digits_arrays()
    path = tmp_path_factory.mktemp("own") / "digits.npz"
    names = np.array([f"digit {i}" for i in range(10)])
    np.savez(path, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test, class_names=names)
    return path


# ---------------------------------------------------------------------------
# Dataset.from_arrays and npz:PATH
# ---------------------------------------------------------------------------


def test_from_arrays_splits_standardises_and_stores_its_statistics():
    X_train, y_train, X_test, y_test = _digits_arrays()
    ds = Dataset.from_arrays(X_train, y_train, X_test, y_test, class_names=[str(i) for i in range(10)])
    assert len(ds.y_train) + len(ds.y_val) == 600 and len(ds.y_val) == 60 and len(ds.y_test) == 200
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.X_test, jl.data.apply_standardization(X_test, ds.mean, ds.std))
    assert np.bincount(ds.y_val).min() >= 5  # stratified
    assert ds.digest is not None and ds.digest == Dataset.from_arrays(X_train, y_train, X_test, y_test).digest
    given = Dataset.from_arrays(X_train[:500], y_train[:500], X_test, y_test, X_val=X_train[500:], y_val=y_train[500:])
    assert len(given.y_train) == 500 and len(given.y_val) == 100
    images = Dataset.from_arrays(X_train.reshape(-1, 1, 8, 8), y_train, X_test.reshape(-1, 1, 8, 8), y_test)
    assert images.image_shape == (1, 8, 8) and images.X_train.shape[1:] == (64,)
    assert images.as_images().X_train.shape[1:] == (1, 8, 8)


def test_from_arrays_errors_name_the_array():
    X_train, y_train, X_test, y_test = _digits_arrays()
    with pytest.raises(TypeError, match=r"y_train must hold integer class labels, got dtype float64"):
        Dataset.from_arrays(X_train, y_train.astype(float), X_test, y_test)
    with pytest.raises(ValueError, match=r"y_test has shape \(199,\), but X_test \(200, 64\) needs \(200,\)"):
        Dataset.from_arrays(X_train, y_train, X_test, y_test[:-1])
    with pytest.raises(ValueError, match=r"X_test has examples of shape \(32,\), but X_train of \(64,\)"):
        Dataset.from_arrays(X_train, y_train, X_test[:, :32], y_test)
    with pytest.raises(ValueError, match="X_val is given without its partner"):
        Dataset.from_arrays(X_train, y_train, X_test, y_test, X_val=X_test)
    with pytest.raises(ValueError, match="3 class_names for labels up to 9"):
        Dataset.from_arrays(X_train, y_train, X_test, y_test, class_names=["a", "b", "c"])


def test_npz_loads_by_name_and_missing_arrays_are_listed(npz_path, tmp_path):
    ds = load(f"npz:{npz_path}")
    assert ds.name == f"npz:{npz_path}" and ds.class_names[3] == "digit 3" and ds.num_features == 64
    X_train, y_train, X_test, _ = _digits_arrays()
    bad = tmp_path / "bad.npz"
    np.savez(bad, X_train=X_train, y_train=y_train, X_test=X_test)
    with pytest.raises(ValueError, match=r"lacks y_test; it holds X_test, X_train, y_train"):
        load_npz(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load(f"npz:{tmp_path / 'none.npz'}")


# ---------------------------------------------------------------------------
# The CLI: npz:PATH, --model PATH.json, optimizer and schedule flags
# ---------------------------------------------------------------------------


def test_cli_npz_train_resume_evaluate_predict(npz_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", f"npz:{npz_path}", *TINY, "-o", str(out)]) == 0
    assert cli.main(["train", "--resume", "--epochs", "3", "-q", "-o", str(out)]) == 0  # dataset from the checkpoint
    run = jl.load_run(out)
    assert run.epochs == 3 and run.class_names[0] == "digit 0"
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 0
    assert f"accuracy {run.summary['test_acc']:.4f}" in capsys.readouterr().out
    X_test = _digits_arrays()[2]
    np.save(tmp_path / "x.npy", X_test[:5])
    assert cli.main(["predict", str(out), str(tmp_path / "x.npy"), "-o", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    np.testing.assert_array_equal([int(r.split(",")[1]) for r in rows], run.predict(X_test[:5]))
    # the same file with other values: the resume is refused, naming the data's digest
    changed = tmp_path / "changed.npz"
    with np.load(npz_path) as z:
        arrays = dict(z)
    arrays["X_train"] = arrays["X_train"][::-1].copy()
    np.savez(changed, **arrays)
    out2 = tmp_path / "run2"
    assert cli.main(["train", "--dataset", f"npz:{changed}", *TINY, "-o", str(out2)]) == 0
    np.savez(changed, **{**arrays, "X_train": arrays["X_train"] + 1.0})
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--epochs", "3", "-q", "-o", str(out2)]) == 2  # refused before training
    assert "digest" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fc", "convnet"])
def test_cli_model_json_trains_resumes_and_evaluates(npz_path, tmp_path, capsys, kind):
    if kind == "fc":
        net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    else:
        net = jl.ConvNet(input_dim=(1, 8, 8), conv_channels=(4,), hidden_dims=(16,), num_classes=10)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model_record(net)))
    out = tmp_path / "run"
    args = ["train", "--dataset", f"npz:{npz_path}", "--model", str(path), "--epochs", "1", "-q", "-o", str(out)]
    assert cli.main([*args, "--batch-size", "64"]) == 0
    assert cli.main(["train", "--resume", "--epochs", "2", "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    assert run.epochs == 2 and type(run.model) is type(net) and run.model.to_dict() == net.to_dict()
    assert cli.main(["evaluate", str(out)]) == 0
    capsys.readouterr()
    assert cli.main([*args, "--hidden-dims", "32", "--overwrite"]) == 2
    assert "--hidden-dims configure the named models" in capsys.readouterr().err


def test_cli_optimizer_and_schedule_flags(tmp_path):
    out = tmp_path / "run"
    flags = ["--optimizer", "adamw", "--weight-decay", "0.01", "--clip-norm", "1.0", "--schedule", "cosine"]
    assert cli.main(["train", *TINY, "--epochs", "3", "--warmup-epochs", "1", *flags, "-o", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["optimizer"] == "adamw" and config["schedule"] == "cosine" and config["clip_norm"] == 1.0
    assert config["weight_decay"] == 0.01 and config["warmup_epochs"] == 1
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    run = jl.load_run(out)
    steps = len(run.history.loss) // 3
    expected = [0.0, 0.01, 0.01 * 0.5 * (1 + np.cos(np.pi * steps / (2 * steps)))]  # warmup, then cosine
    np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------
# fit with your own optax optimizer
# ---------------------------------------------------------------------------

NET = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10, dropout_rate=0.2)
CONFIG = train.TrainConfig(epochs=4, batch_size=50, seed=1)


@pytest.fixture(scope="module")
def small():
    X_train, y_train, X_test, y_test = _digits_arrays(450, 150)
    return Dataset.from_arrays(X_train, y_train, X_test, y_test, name="small")


def _adamw(steps):
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, steps, 4 * steps), weight_decay=1e-3),
    )


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_fit_with_an_optax_optimizer_resumes_bitwise(small, tmp_path):
    steps = 405 // 50
    straight = train.fit(NET, small, CONFIG, optimizer=_adamw(steps))
    assert np.all(np.isfinite(straight.history.loss)) and np.all(np.isnan(straight.history.lr))

    def stop(report):
        if report.epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, callback=stop, optimizer=_adamw(steps))
    strategies._compiled.cache_clear()  # as in a fresh process
    state_module.jitted_init.cache_clear()
    with pytest.raises(train.CheckpointError, match="pass the same optimizer again"):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(train.CheckpointError, match="optimizer's state differs"):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True, optimizer=optax.sgd(0.1))
    resumed = train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True, optimizer=_adamw(steps))
    assert resumed.start_epoch == 2
    for name in ("loss", "train_acc", "val_acc"):
        np.testing.assert_array_equal(getattr(resumed.history, name), getattr(straight.history, name))
    jax.tree.map(np.testing.assert_array_equal, resumed.state.params, straight.state.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.best_params, straight.best_params)
    run = jl.load_run(tmp_path)
    assert run.epochs == 4


def test_an_injected_optimizer_reports_its_rate_and_fit_many_sweeps_it(small):
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=0.01)
    result = train.fit(NET, small, dataclasses.replace(CONFIG, epochs=2), optimizer=opt)
    np.testing.assert_allclose(result.history.lr, [0.01, 0.01])
    many = train.fit_many(
        NET, small, dataclasses.replace(CONFIG, epochs=2), learning_rates=[0.01, 0.002], optimizer=opt
    )
    np.testing.assert_allclose(many.history.lr, [[0.01, 0.01], [0.002, 0.002]], rtol=1e-6)
    with pytest.raises(TypeError, match="inject_hyperparams"):
        train.fit_many(NET, small, CONFIG, learning_rates=[0.01, 0.002], optimizer=optax.adam(0.01))
    with pytest.raises(TypeError, match="optimizer must be an optax GradientTransformation"):
        train.fit(NET, small, CONFIG, optimizer="adamw")


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "exponential", "lr_decay": 0.5},
        {"schedule": "exponential", "lr_decay": 0.5, "warmup_epochs": 1},
        {"schedule": "cosine", "warmup_epochs": 1},
        {"schedule": "constant", "optimizer": "adamw"},
    ],
)
def test_history_learning_rates_are_the_optax_schedule(small, fields):
    config = dataclasses.replace(CONFIG, epochs=3, learning_rate=0.01, **fields)
    result = train.fit(NET, small, config)
    steps = result.steps_per_epoch
    spec = config.spec(steps)
    expected = [float(learning_rate_schedule(spec, 0.01)(e * steps)) for e in range(3)]
    np.testing.assert_array_equal(result.history.lr, expected)
    # and the optimizer's updates follow it: plain sgd steps are -lr * grad
    sgd = train.make_optimizer(dataclasses.replace(config, optimizer="sgd"), steps)
    params = {"w": jax.numpy.zeros(())}
    state = sgd.init(params)
    for t in range(3 * steps):
        update, state = sgd.update({"w": jax.numpy.ones(())}, state, params)
        if t % steps == 0:
            np.testing.assert_allclose(-float(update["w"]), expected[t // steps], rtol=1e-6)


def test_a_cosine_run_cannot_change_its_epochs_on_resume(small, tmp_path):
    config = dataclasses.replace(CONFIG, epochs=1, schedule="cosine")
    train.fit(NET, small, config, checkpoint_dir=tmp_path)
    with pytest.raises(train.CheckpointError, match="epochs: checkpoint 1, now 2"):
        train.fit(NET, small, dataclasses.replace(config, epochs=2), checkpoint_dir=tmp_path, resume=True)
