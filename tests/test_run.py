"""After training: ``load_run`` brings a run back in one call; ``predict`` and ``evaluate`` on raw inputs.

The raw digits come from scikit-learn's loader and the same stratified split
``jaxlayers.data.load("digits")`` makes, so the tests check that a loaded run
standardises raw inputs bit for bit as training did and reproduces the
reported test accuracy exactly.
"""

from __future__ import annotations

import json
import warnings

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jaxlayers as jl
from jaxlayers import cli, train
from jaxlayers.model import _predict_batch
from jaxlayers.training import checkpoint, strategies

SMALL = ["--hidden-dims", "24", "--epochs", "3", "--batch-size", "100", "--dropout-rate", "0.1", "--lr", "0.01"]


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def digits():
    return jl.data.load("digits")


@pytest.fixture(scope="module")
def raw_test(digits):
    """The raw (unstandardised, 0..16) digits test split: sklearn's loader, the loader's split."""
    bunch = load_digits()
    _, X_test, _, y_test = train_test_split(
        bunch.data, bunch.target, test_size=360, stratify=bunch.target, random_state=0
    )
    np.testing.assert_array_equal(y_test, digits.y_test)  # the same split
    return X_test, y_test


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", *SMALL, "--quiet", "-o", str(run_dir)]) == 0
    return run_dir


def test_raw_inputs_standardise_bitwise_as_the_loader_did(digits, raw_test):
    X_raw, _ = raw_test
    np.testing.assert_array_equal(jl.data.apply_standardization(X_raw, digits.mean, digits.std), digits.X_test)
    assert digits.input_shape == (64,) and digits.class_names == tuple("0123456789")


def test_load_run_of_a_cli_run_reproduces_its_test_accuracy_from_raw_digits(cli_run, raw_test, digits):
    X_raw, y = raw_test
    summary = json.loads((cli_run / "summary.json").read_text())
    misses = strategies._compiled.cache_info().misses
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new checkpoint stores its preprocessing: no warning
        run = jl.load_run(cli_run)
    assert strategies._compiled.cache_info().misses == misses  # no epoch program compiled
    assert isinstance(run.model, jl.FullyConnectedNet) and run.model.hidden_dims == (24,)
    assert run.which == "best" and run.epoch == summary["best_epoch"] and run.epochs == 3
    assert run.summary == summary and run.config["dataset"] == "digits"
    assert run.class_names == tuple("0123456789") and run.preprocessing.input_shape == (64,)
    assert run.train_config.batch_size == 100 and run.history.val_acc.shape == (3,)
    np.testing.assert_array_equal(run.preprocessing.mean, digits.mean)

    assert run.evaluate(X_raw, y) == summary["test_acc"]  # exactly
    labels = run.predict(X_raw)
    assert labels.shape == (360,) and labels.dtype == np.int32
    assert np.mean(labels == y) == summary["test_acc"]
    probs = run.predict_proba(X_raw)
    assert probs.shape == (360, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), labels)

    last = jl.load_run(cli_run / "checkpoint.safetensors", which="last")
    assert last.epoch == 3 and last.evaluate(X_raw, y) == summary["final_test_acc"]
    # the complaint: raw digits fed to the model unstandardised score far lower
    assert jl.train.evaluate(run.model, run.params, run.model_state, X_raw, y) < summary["test_acc"]


def test_load_run_of_fit_returns_its_best_and_last_parameters(tmp_path, digits, raw_test):
    X_raw, y = raw_test
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10, loss_type="svm", reg=1e-3)
    config = train.TrainConfig(epochs=2, batch_size=64, optimizer="adam", learning_rate=3e-3)
    result = train.fit(net, digits, config, checkpoint_dir=tmp_path)
    run = jl.load_run(tmp_path)
    assert run.model == net and run.summary is None and run.config is None
    for a, b in zip(
        _leaves((run.params, run.model_state)),
        _leaves((result.best_params, result.best_model_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    best = train.evaluate(net, result.best_params, result.best_model_state, digits.X_test, digits.y_test)
    assert run.evaluate(X_raw, y) == best
    assert np.mean(run.predict(X_raw) == y) == best
    last = jl.load_run(tmp_path, "last")
    np.testing.assert_array_equal(last.params["W1"], result.state.params["W1"])
    # SVM scores through a softmax: rows sum to 1, argmax is the label (uncalibrated, documented)
    np.testing.assert_array_equal(run.predict_proba(X_raw[:7]).argmax(1), run.predict(X_raw[:7]))


def test_load_run_of_fit_many_picks_one_model(tmp_path, digits):
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10, normalization="batchnorm")
    config = train.TrainConfig(epochs=1, batch_size=100)
    result = train.fit_many(net, digits, config, seeds=[0, 1], checkpoint_dir=tmp_path)
    run = jl.load_run(tmp_path, index=1)
    np.testing.assert_array_equal(run.params["W1"], result[1].best_params["W1"])
    np.testing.assert_array_equal(run.model_state["bn1"].mean, result[1].best_model_state["bn1"].mean)
    with pytest.raises(ValueError, match="index 2 is out of range: the checkpoint holds 2"):
        jl.load_run(tmp_path, index=2)


def test_predict_any_batch_size_one_compiled_program():
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=5, num_classes=3, normalization="batchnorm")
    params, state = net.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float32)
    scores, _ = net.apply(params, state, x, train=False)
    want = np.asarray(scores).argmax(1)
    before = _predict_batch._cache_size()
    for n in (1, 5, 16, 17, 37):
        np.testing.assert_array_equal(net.predict(params, state, x[:n], batch_size=16), want[:n])
    assert _predict_batch._cache_size() == before + 1  # one program for every N
    assert net.predict(params, state, x[:0]).shape == (0,)
    assert net.predict_proba(params, state, x[:0]).shape == (0, 3)
    np.testing.assert_allclose(jl.model.predict_proba(net, params, state, x).sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"x has 4 features per example \(shape \(3, 4\)\)"):
        net.predict(params, state, x[:3, :4])
    with pytest.raises(ValueError, match="batch_size"):
        net.predict(params, state, x, batch_size=0)


def test_run_refuses_inputs_of_the_wrong_shape_in_one_line(cli_run):
    run = jl.load_run(cli_run)
    for bad in (np.zeros((4, 63)), np.zeros((4, 8, 8)), np.zeros(64)):
        with pytest.raises(ValueError) as e:
            run.predict(bad)
        assert "\n" not in str(e.value) and "(N, 64)" in str(e.value) and str(bad.shape) in str(e.value)
    with pytest.raises(TypeError, match="numeric"):
        run.predict(np.array([["a"] * 64]))
    assert run.predict(np.zeros((0, 64))).shape == (0,)


def test_load_run_errors(tmp_path, cli_run):
    with pytest.raises(ValueError, match="which must be 'best' or 'last', got 'middle'"):
        jl.load_run(cli_run, which="middle")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        jl.load_run(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        jl.load_run(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    blob = bytearray((cli_run / "checkpoint.safetensors").read_bytes())
    blob[-3] ^= 0xFF  # one flipped bit in a tensor
    (bad / "checkpoint.safetensors").write_bytes(bytes(blob))
    with pytest.raises(train.CheckpointError, match="SHA-256"):
        jl.load_run(bad)


def test_an_old_checkpoint_without_preprocessing_loads_with_a_warning(tmp_path, cli_run, digits):
    path = cli_run / "checkpoint.safetensors"
    meta = train.read_checkpoint_metadata(path)
    del meta["preprocessing"]
    checkpoint._write_checkpoint(tmp_path / "checkpoint.safetensors", load_file(path), meta)
    with pytest.warns(UserWarning, match="expects them standardised"):
        run = jl.load_run(tmp_path)
    assert not run.preprocessing.standardizes and run.preprocessing.input_shape == (64,)
    summary = json.loads((cli_run / "summary.json").read_text())
    assert run.evaluate(digits.X_test, digits.y_test) == summary["test_acc"]  # standardised inputs, as given


def test_data_without_statistics_store_none_and_predict_takes_inputs_as_given(tmp_path, digits):
    data = {k: getattr(digits, k) for k in ("X_train", "y_train", "X_val", "y_val")}
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10)
    train.fit(net, data, train.TrainConfig(epochs=1, batch_size=200), checkpoint_dir=tmp_path)
    run = jl.load_run(tmp_path)
    assert not run.preprocessing.standardizes and run.preprocessing.stored
    np.testing.assert_array_equal(run.standardize(digits.X_test), digits.X_test)


def test_a_run_trained_on_image_shaped_inputs_takes_raw_images(tmp_path, digits, raw_test):
    X_raw, y = raw_test
    images = digits.as_images()  # (N, 1, 8, 8), as convolutional models take them
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    result = train.fit(net, images, train.TrainConfig(epochs=1, batch_size=100), checkpoint_dir=tmp_path)
    run = jl.load_run(tmp_path)
    assert run.preprocessing.input_shape == (1, 8, 8) and run.preprocessing.image_shape == (1, 8, 8)
    best = train.evaluate(net, result.best_params, result.best_model_state, images.X_test, images.y_test)
    assert run.evaluate(X_raw.reshape(-1, 1, 8, 8), y) == best
    with pytest.raises(
        ValueError, match=r"X has shape \(360, 64\), but this run's model takes inputs of shape \(N, 1, 8, 8\)"
    ):
        run.predict(X_raw)


def test_a_conv_net_run_loads_back_and_predicts_raw_images(tmp_path, digits, raw_test):
    X_raw, y = raw_test
    images = digits.as_images()
    net = jl.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=4, filter_size=3, hidden_dim=16, weight_scale=None)
    result = train.fit(net, images, train.TrainConfig(epochs=1, batch_size=100), checkpoint_dir=tmp_path)
    run = jl.load_run(tmp_path)
    assert isinstance(run.model, jl.ThreeLayerConvNet) and run.model == net
    best = train.evaluate(net, result.best_params, result.best_model_state, images.X_test, images.y_test)
    assert run.evaluate(X_raw.reshape(-1, 1, 8, 8), y) == best
    assert run.predict(X_raw.reshape(-1, 1, 8, 8)[:3]).shape == (3,)
