"""On the CPU a model with a convolution runs its epoch's steps from a host loop: fit_many, the mesh and
resume keep their promises on that path too (test_sweep / test_parallel / test_train check the scan's)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import nn, parallel, train
from jaxlayers.training import strategies

CONV = nn.Sequential(
    nn.Conv2d(4, 3, padding="same"),
    nn.SpatialBatchNorm(),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Dropout(0.2),
    nn.Affine(10),
    input_shape=(1, 8, 8),
)
# sgd_momentum (see test_sweep.py: Adam amplifies the rounding noise of a bias before batchnorm)
CONFIG = train.TrainConfig(epochs=2, batch_size=50, optimizer="sgd_momentum", learning_rate=0.03, lr_decay=0.9)


@pytest.fixture(scope="module")
def small():
    ds = jl.data.load("digits").as_images()
    return dataclasses.replace(ds, X_train=ds.X_train[:300], y_train=ds.y_train[:300])


def assert_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the host loop is the CPU backend's choice")
def test_the_host_loop_is_chosen_for_convolutions_only(small):
    assert strategies.use_host_loop(CONV, (8, 1, 8, 8), np.float32)
    fc = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10)
    assert not strategies.use_host_loop(fc, (8, 64), np.float32)
    s = strategies.SingleDevice(CONV, train.make_optimizer(CONFIG, 6), steps=6, batch_size=50, eval_batch_size=1024)
    s.place(small)
    assert isinstance(s._epoch, strategies._HostLoopEpoch)


def test_fit_many_of_conv_nets_equals_separate_fits(small):
    many = train.fit_many(CONV, small, CONFIG, seeds=[0, 1], learning_rates=[0.03, 0.01])
    assert many.history.loss.shape == (2, 2 * (300 // 50))
    for k in range(2):
        one, mine = train.fit(many.models[k], small, many.configs[k]), many[k]
        assert_close(mine.state, one.state)
        assert_close(mine.best_params, one.best_params)
        np.testing.assert_allclose(mine.history.loss, one.history.loss, rtol=1e-5)
        np.testing.assert_allclose(mine.history.val_acc, one.history.val_acc, atol=1.01 / len(small.y_val))


def test_a_one_device_mesh_of_a_conv_net_equals_plain_fit(small):
    config = dataclasses.replace(CONFIG, augment="shift:1")
    ref = train.fit(CONV, small, config)
    res = train.fit(CONV, small, config, mesh=parallel.make_data_mesh(1))
    np.testing.assert_allclose(res.history.loss, ref.history.loss, rtol=1e-6)
    assert_close(res.state.params, ref.state.params)
    np.testing.assert_array_equal(res.history.val_acc, ref.history.val_acc)
