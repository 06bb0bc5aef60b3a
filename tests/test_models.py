"""FullyConnectedNet: config validation, shapes, the L2 term, gradients vs finite differences, overfitting."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import model_loss_gradients

import jaxlayers as jl
from jaxlayers.gradcheck import rel_error


def _data(n=6, d=5, c=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(dtype), rng.integers(0, c, size=n).astype(np.int32)


def test_init_names_shapes_and_state():
    net = jl.FullyConnectedNet(hidden_dims=[7, 6], input_dim=5, num_classes=3, normalization="batchnorm")
    assert net.hidden_dims == (7, 6)
    params, state = net.init(jax.random.key(0))
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (5, 7),
        "b1": (7,),
        "gamma1": (7,),
        "beta1": (7,),
        "W2": (7, 6),
        "b2": (6,),
        "gamma2": (6,),
        "beta2": (6,),
        "W3": (6, 3),
        "b3": (3,),
    }
    assert set(state) == {"bn1", "bn2"}
    assert isinstance(state["bn1"], jl.BatchNormState)
    np.testing.assert_array_equal(state["bn2"].var, np.ones(6))
    assert all(v.dtype == jnp.float32 for v in params.values())
    np.testing.assert_array_equal(params["gamma1"], np.ones(7))
    np.testing.assert_array_equal(params["b3"], np.zeros(3))


def test_init_without_batchnorm_and_weight_scale():
    net = jl.FullyConnectedNet(hidden_dims=(), input_dim=300, num_classes=4, weight_scale=1e-3)
    params, state = net.init(jax.random.key(1))
    assert sorted(params) == ["W1", "b1"] and state == {}
    assert abs(float(jnp.std(params["W1"])) - 1e-3) < 2e-4


def test_he_init_scale():
    net = jl.FullyConnectedNet(hidden_dims=(400,), input_dim=800, num_classes=10)
    params, _ = net.init(jax.random.key(2))
    assert abs(float(jnp.std(params["W1"])) - np.sqrt(2 / 800)) < 0.05 * np.sqrt(2 / 800)
    assert abs(float(jnp.std(params["W2"])) - np.sqrt(2 / 400)) < 0.1 * np.sqrt(2 / 400)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"hidden_dims": (10, 0)}, ValueError, r"hidden_dims\[1\]"),
        ({"hidden_dims": "10"}, TypeError, "hidden_dims"),
        ({"input_dim": 0}, ValueError, "input_dim"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"normalization": "layernorm"}, ValueError, "normalization"),
        ({"dropout_rate": 1.0}, ValueError, "dropout_rate"),
        ({"dropout_rate": -0.1}, ValueError, "dropout_rate"),
        ({"reg": -1.0}, ValueError, "reg"),
        ({"reg": float("nan")}, ValueError, "reg"),
        ({"loss_type": "hinge"}, ValueError, "loss_type"),
        ({"weight_scale": 0.0}, ValueError, "weight_scale"),
        ({"dtype": jnp.int32}, TypeError, "dtype"),
    ],
)
def test_config_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        jl.FullyConnectedNet(**{"input_dim": 5, "num_classes": 3, **kwargs})


def test_frozen_hashable_and_dict_roundtrip():
    net = jl.FullyConnectedNet(hidden_dims=[4], input_dim=5, num_classes=3, normalization="none")
    assert net.normalization is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.reg = 1.0
    assert hash(net) == hash(jl.FullyConnectedNet.from_dict(net.to_dict()))
    assert jl.FullyConnectedNet.from_dict(net.to_dict()) == net


def test_float64_without_x64_is_an_error():
    net = jl.FullyConnectedNet(hidden_dims=(3,), input_dim=5, num_classes=3, dtype=jnp.float64)
    with pytest.raises(TypeError, match="x64"):
        net.init(jax.random.key(0))


def test_apply_shapes_modes_and_state_update():
    net = jl.FullyConnectedNet(
        hidden_dims=(8,), input_dim=12, num_classes=3, normalization="batchnorm", dropout_rate=0.5
    )
    params, state = net.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(3.0, 1.0, size=(10, 3, 4)).astype(np.float32)  # flattens to 12
    scores, new_state = net.apply(params, state, x, train=True, key=jax.random.key(1))
    assert scores.shape == (10, 3) and scores.dtype == jnp.float32
    assert not np.allclose(new_state["bn1"].mean, state["bn1"].mean)  # running mean moved towards the batch's
    test_scores, same = net.apply(params, state, x, train=False)
    assert same["bn1"] is state["bn1"] or np.array_equal(same["bn1"].mean, state["bn1"].mean)
    again, _ = net.apply(params, state, x, train=False, key=jax.random.key(5))
    np.testing.assert_array_equal(test_scores, again)  # test mode is deterministic


def test_apply_errors():
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=12, num_classes=3, dropout_rate=0.5)
    params, state = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x has 11 features .* input_dim=12"):
        net.apply(params, state, np.zeros((4, 11), np.float32), train=False)
    with pytest.raises(ValueError, match="key"):
        net.apply(params, state, np.zeros((4, 12), np.float32), train=True)
    with pytest.raises(ValueError, match=r"missing \['W2'\]"):
        net.apply({k: v for k, v in params.items() if k != "W2"}, state, np.zeros((4, 12), np.float32), train=False)
    with pytest.raises(ValueError, match="params\\['W1'\\] must have shape"):
        net.apply({**params, "W1": jnp.zeros((12, 9))}, state, np.zeros((4, 12), np.float32), train=False)
    with pytest.raises(TypeError, match="train"):
        net.apply(params, state, np.zeros((4, 12), np.float32), train="yes")
    with pytest.raises(ValueError, match=r"labels in \[0, 5\]"):
        net.loss(params, state, np.zeros((4, 12), np.float32), np.array([0, 1, 2, 5]), key=jax.random.key(0))


@pytest.mark.parametrize("loss_type", ["softmax", "svm"])
def test_l2_penalty_is_half_reg_sum_of_squared_weights(loss_type):
    x, y = _data(dtype=np.float32)
    kw = {"hidden_dims": (4,), "input_dim": 5, "num_classes": 3, "normalization": "batchnorm", "loss_type": loss_type}
    net0, net1 = jl.FullyConnectedNet(**kw), jl.FullyConnectedNet(**kw, reg=0.3)
    params, state = net0.init(jax.random.key(0))
    l0, _ = net0.loss(params, state, x, y)
    l1, _ = net1.loss(params, state, x, y)
    expected = 0.5 * 0.3 * sum(float(jnp.sum(params[k] ** 2)) for k in ("W1", "W2"))
    np.testing.assert_allclose(float(l1 - l0), expected, rtol=1e-5)
    data_loss = jl.softmax_loss if loss_type == "softmax" else jl.svm_loss
    scores, _ = net0.apply(params, state, x, train=True)
    np.testing.assert_allclose(float(l0), float(data_loss(scores, jnp.asarray(y))), rtol=1e-6)


@pytest.mark.parametrize("loss_type", ["softmax", "svm"])
def test_loss_gradient_matches_finite_differences_float64(loss_type, x64):
    """Every gradient of the net is a jaxlayers hand-derived rule; check them together."""
    net = jl.FullyConnectedNet(
        hidden_dims=(6, 5),
        input_dim=4,
        num_classes=3,
        normalization="batchnorm",
        dropout_rate=0.3,
        reg=0.05,
        loss_type=loss_type,
        dtype=jnp.float64,
    )
    params, state = net.init(jax.random.key(0))
    rng = np.random.default_rng(1)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}  # gamma, beta away from 1, 0
    x, y = _data(n=8, d=4, c=3, seed=2)
    key = jax.random.key(3)  # a fixed dropout mask: the loss is a deterministic function of params

    grads, num = model_loss_gradients(net, params, state, x, y, key)
    assert set(grads) == set(params)
    for name in sorted(params):
        assert grads[name].dtype == jnp.float64
        if name in ("b1", "b2"):  # batchnorm cancels the bias before it: the gradient is exactly 0
            np.testing.assert_allclose(grads[name], 0.0, atol=1e-12)
            np.testing.assert_allclose(num[name], 0.0, atol=1e-9)
            continue
        # Dead or dropped units have an exactly-zero gradient, where finite
        # differences leave ~1e-12 of round-off: an absolute floor covers those.
        np.testing.assert_allclose(grads[name], num[name], rtol=1e-6, atol=1e-9, err_msg=name)
        big = np.abs(num[name]) > 1e-6
        assert rel_error(np.asarray(grads[name])[big], np.asarray(num[name])[big]) < 1e-7, name


def test_gradient_flows_only_through_jaxlayers_ops():
    """Input gradients are the hand-derived rules: equal to jax.grad of the plain-jnp references."""
    from jaxlayers.layers import affine_reference, batchnorm_reference, relu_reference
    from jaxlayers.losses import softmax_loss_reference

    net = jl.FullyConnectedNet(hidden_dims=(6,), input_dim=4, num_classes=3, normalization="batchnorm")
    params, state = net.init(jax.random.key(0))
    x, y = _data(n=8, d=4, c=3, seed=4, dtype=np.float32)

    def reference(p, state, x, y):
        h = affine_reference(x, p["W1"], p["b1"])
        h, _ = batchnorm_reference(h, p["gamma1"], p["beta1"], state["bn1"], train=True)
        return softmax_loss_reference(affine_reference(relu_reference(h), p["W2"], p["b2"]), y)

    g_net, _ = jax.jit(jax.grad(net.loss, has_aux=True))(params, state, x, y)
    g_ref = jax.jit(jax.grad(reference))(params, state, x, y)
    for k in params:
        np.testing.assert_allclose(g_net[k], g_ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_overfits_50_examples():
    ds = jl.data.load("digits")
    X, y = ds.X_train[:50], ds.y_train[:50]
    small = jl.data.Dataset(X, y, X, y, X, y, name="digits[:50]")
    net = jl.FullyConnectedNet(hidden_dims=(100, 100), input_dim=64, num_classes=10, normalization="batchnorm")
    config = jl.train.TrainConfig(epochs=30, batch_size=25, optimizer="adam", learning_rate=1e-2, lr_decay=1.0, seed=0)
    result = jl.train.fit(net, small, config)
    assert jl.train.evaluate(net, result.state.params, result.state.model_state, X, y) == 1.0
    assert result.history.train_acc[-1] == 1.0
    assert result.history.loss[-1] < 0.1 * result.history.loss[0]
