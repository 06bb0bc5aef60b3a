"""jaxlayers.train.fit_many: K models in one vmapped program equal K separate fits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import sweep, train

NET = jl.FullyConnectedNet(hidden_dims=(24,), input_dim=64, num_classes=10, normalization="batchnorm")
# sgd_momentum, not adam: a bias before batchnorm has a zero gradient in exact
# arithmetic, and Adam turns its rounding noise into learning-rate-sized steps,
# so under Adam that bias differs by O(lr) between *any* two summation orders.
CONFIG = train.TrainConfig(epochs=3, batch_size=50, optimizer="sgd_momentum", learning_rate=0.03, lr_decay=0.9)


@pytest.fixture(scope="module")
def small():
    ds = jl.data.load("digits")
    return dataclasses.replace(ds, X_train=ds.X_train[:400], y_train=ds.y_train[:400])


def _host(a):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.asarray(a)


def assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = _host(x), _host(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.slow
def test_fit_many_equals_separate_fits(small):
    # Every swept setting at once: seeds; He and explicit weight scales; learning
    # rates; two dropout groups (0.2 and 0.0, interleaved, so the internal
    # group order is not the model order); regs that differ inside a group
    # (traced) and one that is alone in its group (static).
    settings = {
        "seeds": [0, 1, 2],
        "weight_scales": [None, 0.1, 0.05],
        "learning_rates": [0.03, 0.05, 0.01],
        "dropout_rates": [0.2, 0.0, 0.2],
        "regs": [0.0, 1e-3, 1e-2],
    }
    reports = []
    many = train.fit_many(NET, small, CONFIG, callback=reports.append, **settings)
    assert len(many) == 3 and many.steps_per_epoch == 8
    assert many.history.loss.shape == (3, 24) and many.history.val_acc.shape == (3, 3)
    assert [r.epoch for r in reports] == [1, 2, 3] and reports[-1].val_acc.shape == (3,)
    assert many.finite.all()
    n_train, n_val = len(small.y_train), len(small.y_val)
    for k in range(3):
        net_k = dataclasses.replace(
            NET,
            weight_scale=settings["weight_scales"][k],
            dropout_rate=settings["dropout_rates"][k],
            reg=settings["regs"][k],
        )
        config_k = dataclasses.replace(CONFIG, seed=settings["seeds"][k], learning_rate=settings["learning_rates"][k])
        assert (many.models[k], many.configs[k]) == (net_k, config_k)
        one, mine = train.fit(net_k, small, config_k), many[k]
        assert_trees_close(mine.state, one.state)  # params, running stats, optimizer state, step, key
        assert_trees_close(mine.best_params, one.best_params)
        assert_trees_close(mine.best_model_state, one.best_model_state)
        np.testing.assert_allclose(mine.history.loss, one.history.loss, rtol=1e-5)
        np.testing.assert_array_equal(mine.history.lr, one.history.lr)
        # Accuracies are counts of argmaxes: equal unless a float32 rounding flips one example.
        np.testing.assert_allclose(mine.history.train_acc, one.history.train_acc, atol=1.01 / n_train)
        np.testing.assert_allclose(mine.history.val_acc, one.history.val_acc, atol=1.01 / n_val)
        if np.array_equal(mine.history.val_acc, one.history.val_acc):
            assert (mine.best_epoch, mine.best_val_acc) == (one.best_epoch, one.best_val_acc)


def test_fit_many_equals_separate_fits_in_float64(small):
    # In float64 the summation order costs ~1e-16, so any hyperparameter that
    # reached the vmapped program in another dtype or rounding than in fit
    # (a float32 learning rate is fit's, for one) shows up far above it.
    with jax.enable_x64(True):
        net = dataclasses.replace(NET, hidden_dims=(16,), dropout_rate=0.2, dtype=jnp.float64)
        config = dataclasses.replace(CONFIG, epochs=2)
        many = train.fit_many(net, small, config, learning_rates=[0.03, 0.01], regs=[0.0, 1e-2], seeds=[3, 4])
        for k in range(2):
            one, mine = train.fit(many.models[k], small, many.configs[k]), many[k]
            assert mine.state.params["W1"].dtype == jnp.float64
            assert_trees_close(mine.state, one.state, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(mine.history.loss, one.history.loss, rtol=1e-12)
            np.testing.assert_array_equal(mine.history.val_acc, one.history.val_acc)


def test_fit_many_is_train_fit_many():
    assert train.fit_many is sweep.fit_many
    assert "Args:" in train.fit_many.__doc__ and "Raises:" in train.fit_many.__doc__


def test_a_diverging_model_is_recorded_and_the_others_train_on(small):
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10)
    config = train.TrainConfig(epochs=2, batch_size=100, optimizer="sgd", lr_decay=1.0)
    many = train.fit_many(net, small, config, learning_rates=[0.1, 1e30])
    assert many.finite.tolist() == [True, False]
    assert np.all(np.isfinite(many.history.loss[0])) and not np.all(np.isfinite(many.history.loss[1]))
    assert many.history.val_acc[0, -1] > 0.2  # chance is 0.1
    with pytest.raises(train.NonFiniteLossError):
        train.fit(net, small, dataclasses.replace(config, learning_rate=1e30))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "give at least one of seeds"),
        ({"seeds": [0, 1], "regs": [0.0]}, ValueError, r"one length, got \{'seeds': 2, 'regs': 1\}"),
        ({"seeds": []}, ValueError, "seeds is empty"),
        ({"seeds": 3}, TypeError, "seeds must be a sequence"),
        ({"dropout_rates": [0.1, 1.0]}, ValueError, r"model 1: FullyConnectedNet: dropout_rate"),
        ({"learning_rates": [0.1, float("nan")]}, ValueError, r"model 1: TrainConfig: learning_rate"),
        ({"learning_rates": [0.1, -1.0]}, ValueError, r"model 1: TrainConfig: learning_rate"),
        ({"weight_scales": [0.0]}, ValueError, r"model 0: FullyConnectedNet: weight_scale"),
    ],
)
def test_fit_many_rejects_bad_sweeps_before_compiling(small, kwargs, error, match):
    with pytest.raises(error, match=match):
        train.fit_many(NET, small, CONFIG, **kwargs)


def test_fit_many_rejects_data_that_disagree_with_the_net(small):
    net = dataclasses.replace(NET, input_dim=10)
    with pytest.raises(ValueError, match="input_dim=10"):
        train.fit_many(net, small, CONFIG, seeds=[0, 1])


def test_grid_is_the_cartesian_product():
    assert sweep.grid(dropout_rates=[0.0, 0.5], seeds=[0, 1]) == {
        "dropout_rates": [0.0, 0.0, 0.5, 0.5],
        "seeds": [0, 1, 0, 1],
    }
    with pytest.raises(ValueError, match="seed"):
        sweep.grid(seed=[0])
