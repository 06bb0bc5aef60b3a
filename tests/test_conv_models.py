"""ThreeLayerConvNet and ConvNet: shapes, config errors, inputs, gradients vs finite differences, training."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import model_loss_gradients
from jax.flatten_util import ravel_pytree

import jaxlayers as jl
from jaxlayers import train
from jaxlayers.gradcheck import numerical_gradient, rel_error

# A tiny ConvNet: (2, 6, 6) -> conv 4 -> pool -> (4, 3, 3) -> affine 5 -> 3 classes.
TINY = {"input_dim": (2, 6, 6), "conv_channels": (4,), "groups": 2, "hidden_dims": (5,), "num_classes": 3}


def _images(n=6, shape=(2, 6, 6), c=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(dtype), rng.integers(0, c, size=n).astype(np.int32)


@pytest.fixture(scope="module")
def digits():
    return jl.data.load("digits").as_images()


# ---------------------------------------------------------------- init: names and shapes


def test_three_layer_convnet_init_shapes():
    net = jl.ThreeLayerConvNet(input_dim=(3, 8, 10), num_filters=4, filter_size=3, hidden_dim=7, num_classes=5)
    params, state = net.init(jax.random.key(0))
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (4, 3, 3, 3),
        "b1": (4,),
        "W2": (4 * 4 * 5, 7),
        "b2": (7,),
        "W3": (7, 5),
        "b3": (5,),
    }
    assert state == {} and net.num_params() == sum(v.size for v in params.values())
    assert all(v.dtype == jnp.float32 for v in params.values())
    assert abs(float(jnp.std(params["W2"])) - 1e-3) < 2e-4  # the course's weight_scale
    np.testing.assert_array_equal(params["b1"], np.zeros(4))


def test_convnet_init_shapes_with_batchnorm_everywhere():
    net = jl.ConvNet(
        input_dim=(1, 8, 8), conv_channels=(4, 6), conv_norm="batchnorm", hidden_dims=(9,), fc_norm="batchnorm"
    )
    assert net.feature_shape() == (6, 2, 2)
    params, state = net.init(jax.random.key(0))
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (4, 1, 3, 3),
        "b1": (4,),
        "gamma1": (4,),
        "beta1": (4,),
        "W2": (6, 4, 3, 3),
        "b2": (6,),
        "gamma2": (6,),
        "beta2": (6,),
        "W3": (24, 9),
        "b3": (9,),
        "gamma3": (9,),
        "beta3": (9,),
        "W4": (9, 10),
        "b4": (10,),
    }
    assert set(state) == {"bn1", "bn2", "bn3"} and isinstance(state["bn2"], jl.BatchNormState)
    assert state["bn2"].mean.shape == (6,)
    np.testing.assert_array_equal(params["gamma3"], np.ones(9))
    # He init: std sqrt(2 / fan_in), fan_in = C * kh * kw for a conv.
    big = jl.ConvNet(input_dim=(16, 8, 8), conv_channels=(64,), conv_norm=None, hidden_dims=())
    w1 = big.init(jax.random.key(1))[0]["W1"]
    assert abs(float(jnp.std(w1)) - np.sqrt(2 / 144)) < 0.05 * np.sqrt(2 / 144)


def test_convnet_init_one_dimensional_groupnorm_layernorm():
    net = jl.ConvNet(
        input_dim=(1, 1, 40),
        conv_channels=(8, 8),
        filter_size=(1, 5),
        conv_norm="groupnorm",
        groups=4,
        pool_size=(1, 2),
        hidden_dims=(16,),
        fc_norm="layernorm",
    )
    assert net.filter_size == (1, 5) and net.pool_size == (1, 2) and net.feature_shape() == (8, 1, 10)
    params, state = net.init(jax.random.key(0))
    assert params["W1"].shape == (8, 1, 1, 5) and params["W3"].shape == (80, 16) and params["gamma3"].shape == (16,)
    assert state == {}  # groupnorm and layernorm keep no running statistics
    plain = jl.ConvNet(input_dim=(1, 8, 8), conv_channels=(), conv_norm=None, hidden_dims=(), pool_size=1)
    assert sorted(plain.init(jax.random.key(0))[0]) == ["W1", "b1"]  # a linear classifier


# ---------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"filter_size": 4}, ValueError, "filter_size must be odd"),
        ({"filter_size": (3, 2)}, ValueError, "filter_size must be odd"),
        ({"filter_size": (3, 3, 3)}, TypeError, "filter_size"),
        ({"conv_norm": "groupnorm", "groups": 3}, ValueError, r"groups=3 must divide .* \[4\]"),
        ({"conv_channels": (4, 4, 4, 4)}, ValueError, "conv block 3's 2x2 pool shrinks the 1x1 image"),
        ({"pool_size": (1, 7)}, ValueError, "conv block 1's 1x7 pool"),
        ({"pool_size": 0}, ValueError, r"pool_size must be >= 1, got 0"),
        ({"input_dim": (6, 6)}, TypeError, "input_dim must be"),
        ({"input_dim": 36}, TypeError, "input_dim must be"),
        ({"input_dim": (2, 0, 6)}, ValueError, r"input_dim\[1\]"),
        ({"conv_channels": (4, 0)}, ValueError, r"conv_channels\[1\]"),
        ({"hidden_dims": "5"}, TypeError, "hidden_dims"),
        ({"conv_norm": "layernorm"}, ValueError, "conv_norm"),
        ({"fc_norm": "groupnorm"}, ValueError, "fc_norm"),
        ({"dropout_rate": 1.0}, ValueError, "dropout_rate"),
        ({"reg": -1.0}, ValueError, "reg"),
        ({"weight_scale": 0.0}, ValueError, "weight_scale"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"loss_type": "hinge"}, ValueError, "loss_type"),
        ({"dtype": jnp.int32}, TypeError, "dtype"),
    ],
)
def test_convnet_config_errors(kwargs, exc, match):
    with pytest.raises(exc, match=rf"ConvNet.*{match}"):
        jl.ConvNet(**{**TINY, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"filter_size": 6}, ValueError, "filter_size must be odd"),
        ({"input_dim": (3, 1, 8)}, ValueError, "too small for a 2x2 pool"),
        ({"input_dim": (3, 8)}, TypeError, "input_dim must be"),
        ({"num_filters": 0}, ValueError, "num_filters"),
        ({"hidden_dim": 0}, ValueError, "hidden_dim"),
        ({"weight_scale": -1.0}, ValueError, "weight_scale"),
    ],
)
def test_three_layer_convnet_config_errors(kwargs, exc, match):
    with pytest.raises(exc, match=rf"ThreeLayerConvNet.*{match}"):
        jl.ThreeLayerConvNet(**{"input_dim": (3, 8, 8), "filter_size": 3, **kwargs})


def test_convnet_none_strings_and_dict_roundtrip():
    net = jl.ConvNet(**TINY, conv_norm="none", fc_norm="None", filter_size=[3, 5], pool_size=[2, 1], reg=1e-3)
    assert (net.conv_norm, net.fc_norm, net.filter_size, net.pool_size) == (None, None, (3, 5), (2, 1))
    d = net.to_dict()
    assert d["input_dim"] == [2, 6, 6] and d["filter_size"] == [3, 5] and d["dtype"] == "float32"
    back = jl.ConvNet.from_dict(d)
    assert back == net and hash(back) == hash(net)
    three = jl.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=3, filter_size=5, weight_scale=None)
    assert jl.ThreeLayerConvNet.from_dict(three.to_dict()) == three
    with pytest.raises(ValueError, match="unknown fields"):
        jl.ConvNet.from_dict({**d, "num_filters": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.reg = 1.0


# ---------------------------------------------------------------- apply


@pytest.mark.parametrize("cls", ["ThreeLayerConvNet", "ConvNet"])
def test_apply_accepts_images_and_flat_inputs(cls):
    if cls == "ConvNet":
        net = jl.ConvNet(**TINY, conv_norm="batchnorm", fc_norm="batchnorm", dropout_rate=0.5)
    else:
        net = jl.ThreeLayerConvNet(input_dim=(2, 6, 6), num_filters=4, filter_size=3, hidden_dim=5, num_classes=3)
    params, state = net.init(jax.random.key(0))
    x, _ = _images(n=7, dtype=np.float32)
    scores, _ = net.apply(params, state, x, train=False)
    flat, _ = net.apply(params, state, x.reshape(7, -1), train=False)
    assert scores.shape == (7, 3) and scores.dtype == jnp.float32
    np.testing.assert_array_equal(scores, flat)
    train_scores, new_state = net.apply(params, state, x, train=True, key=jax.random.key(1))
    assert train_scores.shape == (7, 3) and set(new_state) == set(state)
    if state:
        assert not np.allclose(new_state["bn1"].mean, state["bn1"].mean)  # running mean moved
    with pytest.raises(
        ValueError, match=r"x must have shape \(N, C, H, W\) = \(N, 2, 6, 6\) or flat \(N, 72\), got \(7, 71\)"
    ):
        net.apply(params, state, np.zeros((7, 71), np.float32), train=False)
    with pytest.raises(ValueError, match=r"missing \['W1'\]"):
        net.apply({k: v for k, v in params.items() if k != "W1"}, state, x, train=False)


def test_convnet_apply_needs_a_key_for_dropout():
    net = jl.ConvNet(**TINY, dropout_rate=0.5)
    params, state = net.init(jax.random.key(0))
    x, _ = _images(dtype=np.float32)
    with pytest.raises(ValueError, match="key"):
        net.apply(params, state, x, train=True)
    a, _ = net.apply(params, state, x, train=False, key=jax.random.key(2))
    b, _ = net.apply(params, state, x, train=False)
    np.testing.assert_array_equal(a, b)  # test mode is deterministic


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    ("conv_norm", "fc_norm", "dropout_rate"),
    [
        (None, None, 0.0),
        ("batchnorm", None, 0.0),
        ("groupnorm", None, 0.0),
        (None, "batchnorm", 0.0),
        (None, "layernorm", 0.0),
        ("batchnorm", "layernorm", 0.4),
    ],
)
def test_convnet_loss_gradient_matches_finite_differences_float64(conv_norm, fc_norm, dropout_rate, x64):
    """Every gradient of the net is a jaxlayers hand-derived rule; check them together in float64."""
    net = jl.ConvNet(
        **TINY, conv_norm=conv_norm, fc_norm=fc_norm, dropout_rate=dropout_rate, reg=0.05, dtype=jnp.float64
    )
    params, state = net.init(jax.random.key(0))
    rng = np.random.default_rng(1)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in params.items()}  # gamma, beta away from 1, 0
    x, y = _images(n=6, seed=2)
    key = jax.random.key(3)  # a fixed dropout mask: the loss is a deterministic function of params

    grads, num = model_loss_gradients(net, params, state, x, y, key)
    assert set(grads) == set(params)
    for name in sorted(params):
        assert grads[name].dtype == jnp.float64
        # Biases before batchnorm have an exactly-zero gradient, dead, pooled-away or
        # dropped units too, where finite differences leave ~1e-12 of round-off.
        np.testing.assert_allclose(grads[name], num[name], rtol=1e-6, atol=1e-9, err_msg=name)
        big = np.abs(num[name]) > 1e-6
        if big.any():
            assert rel_error(np.asarray(grads[name])[big], np.asarray(num[name])[big]) < 1e-6, name


def test_three_layer_convnet_gradient_matches_finite_differences_float64(x64):
    net = jl.ThreeLayerConvNet(
        input_dim=(2, 6, 6), num_filters=3, filter_size=3, hidden_dim=5, num_classes=3, weight_scale=None,
        reg=0.05, dtype=jnp.float64,
    )  # fmt: skip
    params, state = net.init(jax.random.key(0))
    x, y = _images(n=5, seed=4)
    grads, _ = jax.jit(jax.grad(net.loss, has_aux=True))(params, state, x, y)
    flat, unravel = ravel_pytree(params)
    num = unravel(numerical_gradient(jax.jit(lambda v: net.loss(unravel(v), state, x, y)[0]), flat, h=1e-4))
    for name in sorted(params):
        np.testing.assert_allclose(grads[name], num[name], rtol=1e-6, atol=1e-9, err_msg=name)


# ---------------------------------------------------------------- training


def test_tiny_convnet_overfits_50_digits(digits):
    X, y = digits.X_train[:50], digits.y_train[:50]
    small = jl.data.Dataset(X, y, X, y, X, y, name="digits[:50]")
    net = jl.ConvNet(input_dim=(1, 8, 8), conv_channels=(8,), conv_norm="batchnorm", hidden_dims=(32,))
    config = train.TrainConfig(epochs=20, batch_size=25, optimizer="adam", learning_rate=1e-2, lr_decay=1.0, seed=0)
    result = train.fit(net, small, config)
    assert train.evaluate(net, result.state.params, result.state.model_state, X, y) == 1.0
    assert result.history.loss[-1] < 0.1 * result.history.loss[0]


def _close(a, b, rtol=2e-5, atol=2e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def test_fit_and_fit_many_train_a_convnet_and_agree(digits):
    small = dataclasses.replace(digits, X_train=digits.X_train[:200], y_train=digits.y_train[:200])
    net = jl.ConvNet(
        input_dim=(1, 8, 8), conv_channels=(4,), conv_norm="batchnorm", hidden_dims=(16,), dropout_rate=0.2
    )
    # sgd_momentum, not adam: see tests/test_sweep.py (biases before batchnorm).
    config = train.TrainConfig(epochs=2, batch_size=50, optimizer="sgd_momentum", learning_rate=0.03, lr_decay=0.9)
    many = train.fit_many(net, small, config, seeds=[0, 1], learning_rates=[0.03, 0.01], regs=[0.0, 1e-3])
    assert len(many) == 2 and many.finite.all() and many.history.val_acc.shape == (2, 2)
    assert many.models[0] == net and many.configs[0] == config
    one, mine = train.fit(net, small, config), many[0]
    assert np.mean(one.history.loss[-4:]) < np.mean(one.history.loss[:4])  # it learns
    _close(mine.state, one.state)
    _close(mine.best_params, one.best_params)
    _close(mine.best_model_state, one.best_model_state)
    np.testing.assert_allclose(mine.history.loss, one.history.loss, rtol=1e-5)
    np.testing.assert_allclose(mine.history.val_acc, one.history.val_acc, atol=1.01 / len(small.y_val))


# ---------------------------------------------------------------- channels last inside (issue 20)


@pytest.mark.parametrize("conv_norm", ["batchnorm", "groupnorm", None])
def test_convnet_nhwc_inside_predicts_what_the_nchw_network_predicts(conv_norm):
    """conv_layout="NHWC" (the default) and "NCHW" are one network: the same parameters (names,
    shapes, initial values), and from the same parameters the same scores (to float32 summation order),
    predictions, running statistics and gradients. The input is (N, C, H, W) for both."""
    kw = {"input_dim": (3, 12, 12), "conv_channels": (8, 16), "conv_norm": conv_norm, "groups": 4}
    nhwc, nchw = jl.ConvNet(**kw, hidden_dims=(32,)), jl.ConvNet(**kw, hidden_dims=(32,), conv_layout="NCHW")
    assert nhwc.conv_layout == "NHWC" and nhwc.param_shapes() == nchw.param_shapes()
    assert nhwc.feature_shape() == nchw.feature_shape() == (16, 3, 3)
    params, state = nhwc.init(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, (params, state), nchw.init(jax.random.key(0)))
    x, y = _images(n=16, shape=(3, 12, 12), c=10, dtype=np.float32)
    for mode in (True, False):
        (s1, st1), (s2, st2) = (m.apply(params, state, x, train=mode) for m in (nhwc, nchw))
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.argmax(s1, 1), np.argmax(s2, 1))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), st1, st2)
    g1, g2 = (jax.grad(lambda p, m=m: m.loss(p, state, x, y)[0])(params) for m in (nhwc, nchw))
    for k in params:
        # atol 1e-6: a conv bias before batchnorm has a zero gradient, float32 noise ~1e-8 in either layout
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-4, atol=max(1e-6, 1e-5 * float(jnp.max(jnp.abs(g2[k])))))


def test_convnet_records_without_conv_layout_load_channels_last():
    """A ConvNet record written before conv_layout existed loads (NHWC inside) with the same parameters."""
    d = jl.ConvNet(**TINY).to_dict()
    assert d.pop("conv_layout") == "NHWC"
    old = jl.ConvNet.from_dict(d)
    assert old.conv_layout == "NHWC" and old == jl.ConvNet(**TINY)
    with pytest.raises(ValueError, match=r"ConvNet: conv_layout must be one of 'NHWC', 'NCHW', got 'HWC'"):
        jl.ConvNet(**TINY, conv_layout="HWC")
