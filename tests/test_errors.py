"""Bad input: clear errors at trace time, naming the argument and the shapes seen."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl

X = jnp.ones((4, 6))
KEY = jax.random.key(0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((X, jnp.ones((5, 3)), jnp.zeros(3)), r"affine: w has 5 rows but x flattens to 6 features"),
        ((jnp.ones((4, 2, 3)), jnp.ones((5, 3)), jnp.zeros(3)), r"x shape \(4, 2, 3\), w shape \(5, 3\)"),
        ((X, jnp.ones((6, 3)), jnp.zeros(4)), r"affine: b must have shape \(3,\).*got \(4,\)"),
        ((X, jnp.ones((6, 3)), jnp.zeros((1, 3))), r"affine: b must have shape \(3,\)"),
        ((jnp.ones(6), jnp.ones((6, 3)), jnp.zeros(3)), r"affine: x must have at least 2 dimensions, got shape \(6,\)"),
    ],
)
def test_affine_shape_errors(args, match):
    with pytest.raises(ValueError, match=match):
        jl.affine(*args)


def test_affine_errors_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="affine: w has 5 rows"):
        jax.jit(jl.affine)(X, jnp.ones((5, 3)), jnp.zeros(3))


def test_affine_rejects_integer_input():
    with pytest.raises(TypeError, match="affine: x must have a floating dtype"):
        jl.affine(jnp.ones((2, 3), jnp.int32), jnp.ones((3, 2)), jnp.zeros(2))


def _bn(**over):
    args = {"x": X, "gamma": jnp.ones(6), "beta": jnp.zeros(6), "state": jl.batchnorm_state(6)}
    kw = {"train": True}
    for k, v in over.items():
        (args if k in args else kw)[k] = v
    return jl.batchnorm(args["x"], args["gamma"], args["beta"], args["state"], **kw)


@pytest.mark.parametrize(
    ("over", "exc", "match"),
    [
        ({"x": jnp.ones((4, 2, 3))}, ValueError, r"batchnorm: x must be 2-D, got shape \(4, 2, 3\)"),
        ({"gamma": jnp.ones(5)}, ValueError, r"batchnorm: gamma must have shape \(6,\).*got \(5,\)"),
        ({"beta": jnp.ones((6, 1))}, ValueError, r"batchnorm: beta must have shape \(6,\)"),
        ({"state": jl.batchnorm_state(3)}, ValueError, r"batchnorm: state.mean must have shape \(6,\)"),
        ({"state": (jnp.zeros(6), jnp.ones(6))}, TypeError, r"state must be a jaxlayers.BatchNormState"),
        ({"train": "yes"}, TypeError, r"batchnorm: train must be a Python bool"),
        ({"train": jnp.array(True)}, TypeError, r"batchnorm: train must be a Python bool"),
        ({"momentum": 1.5}, ValueError, r"batchnorm: momentum must lie in \[0, 1\], got 1.5"),
        ({"momentum": -0.1}, ValueError, r"momentum must lie in \[0, 1\]"),
        ({"eps": 0.0}, ValueError, r"batchnorm: eps must be > 0, got 0.0"),
        ({"eps": -1e-5}, ValueError, r"eps must be > 0"),
    ],
)
def test_batchnorm_errors(over, exc, match):
    with pytest.raises(exc, match=match):
        _bn(**over)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"dropout: rate \(probability of dropping\) must lie in \[0, 1\]"):
        jl.dropout(X, KEY, rate=rate, train=True)


@pytest.mark.parametrize("key", [0, jnp.ones(2), jnp.zeros(3, jnp.uint32)])
def test_dropout_rejects_non_keys(key):
    with pytest.raises(TypeError, match="dropout: key must be a PRNG key"):
        jl.dropout(X, key, rate=0.5, train=True)


def test_dropout_accepts_legacy_keys():
    out = jl.dropout(X, jax.random.PRNGKey(0), rate=0.5, train=True)
    assert out.shape == X.shape


@pytest.mark.parametrize("loss", [jl.svm_loss, jl.softmax_loss])
def test_loss_errors(loss):
    name = loss.__name__
    with pytest.raises(ValueError, match=rf"{name}: scores must be 2-D, got shape \(4,\)"):
        loss(jnp.ones(4), jnp.zeros(4, jnp.int32))
    with pytest.raises(TypeError, match=rf"{name}: y must have an integer dtype"):
        loss(X, jnp.zeros(4))
    with pytest.raises(ValueError, match=rf"{name}: y must have shape \(4,\).*got \(4, 1\)"):
        loss(X, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=rf"{name}: y holds labels in \[0, 6\] but scores have 6 classes"):
        loss(X, jnp.array([0, 1, 2, 6]))
    with pytest.raises(ValueError, match=r"labels in \[-1, 2\]"):
        loss(X, jnp.array([0, 1, 2, -1]))


@pytest.mark.parametrize("loss", [jl.svm_loss, jl.softmax_loss])
def test_out_of_range_labels_under_jit_give_nan(loss):
    scores = jnp.asarray(np.random.RandomState(0).randn(4, 6), jnp.float32)
    for bad in (6, 100, -1):
        y = jnp.array([0, 1, 2, bad])
        value, grad = jax.jit(jax.value_and_grad(loss))(scores, y)
        assert np.isnan(value)
        assert np.isnan(grad).all()
    good = jax.jit(loss)(scores, jnp.array([0, 1, 2, 5]))
    assert np.isfinite(good)
