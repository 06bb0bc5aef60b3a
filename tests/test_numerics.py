"""Numerically hard input gets the right answer (each compared with a float64 reference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.layers import batchnorm_reference
from jaxlayers.losses import softmax_loss_reference, svm_loss_reference


def _bn_out(x, gamma, beta, train=True):
    return jl.batchnorm(x, gamma, beta, jl.batchnorm_state(x.shape[1], x.dtype), train=train)[0]


def test_batchnorm_large_offset_float32_matches_float64():
    """Mean 1e4, std 0.1 in float32: E[x^2] - E[x]^2 loses every digit here."""
    x64 = np.random.RandomState(0).randn(256, 8) * 0.1 + 1e4
    gamma, beta = jnp.ones(8), jnp.zeros(8)
    out32 = _bn_out(jnp.asarray(x64, jnp.float32), gamma, beta)
    xs = np.asarray(jnp.asarray(x64, jnp.float32), np.float64)  # the same float32 inputs
    expected = (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5)
    assert np.max(np.abs(np.asarray(out32) - expected)) <= 1e-2
    # and the gradient stays finite and close too
    ct = jnp.asarray(np.random.RandomState(1).randn(256, 8), jnp.float32)
    dx32 = jax.vjp(lambda x: _bn_out(x, gamma, beta), jnp.asarray(x64, jnp.float32))[1](ct)[0]
    with jax.enable_x64(True):
        dx64 = jax.vjp(
            lambda x: batchnorm_reference(x, jnp.ones(8), jnp.zeros(8), jl.batchnorm_state(8, jnp.float64), train=True)[
                0
            ],
            jnp.asarray(xs),
        )[1](jnp.asarray(np.asarray(ct), jnp.float64))[0]
    scale = np.max(np.abs(np.asarray(dx64)))
    assert np.max(np.abs(np.asarray(dx32) - np.asarray(dx64))) <= 1e-2 * scale


def test_batchnorm_constant_feature_gives_beta_and_finite_gradients():
    x = np.random.RandomState(0).randn(16, 3).astype(np.float32)
    x[:, 1] = 0.1  # constant feature (0.1 is not exactly representable)
    gamma, beta = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, -0.25, 1.0])
    out = _bn_out(jnp.asarray(x), gamma, beta)
    np.testing.assert_array_equal(np.asarray(out[:, 1]), np.full(16, -0.25, np.float32))
    grads = jax.grad(lambda x, g, b: jnp.sum(_bn_out(x, g, b) ** 3), argnums=(0, 1, 2))(jnp.asarray(x), gamma, beta)
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_array_equal(np.asarray(grads[0][:, 1]), 0.0)


def test_batchnorm_single_example_in_train_mode():
    """N = 1: the batch variance is 0, so out = beta and dx = 0 (documented)."""
    x = jnp.array([[3.0, -1.0]])
    gamma, beta = jnp.array([2.0, 0.5]), jnp.array([0.1, 0.2])
    out = _bn_out(x, gamma, beta)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(beta)[None])
    dx, dgamma, dbeta = jax.grad(lambda *a: jnp.sum(_bn_out(*a) * jnp.array([[1.0, 2.0]])), argnums=(0, 1, 2))(
        x, gamma, beta
    )
    np.testing.assert_array_equal(np.asarray(dx), 0.0)
    np.testing.assert_array_equal(np.asarray(dgamma), 0.0)
    np.testing.assert_array_equal(np.asarray(dbeta), [1.0, 2.0])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_batchnorm_half_precision_statistics_in_float32(dtype):
    """4096 values near 20 sum to ~8e4: beyond float16's range (65504), and
    with bfloat16's 8-bit mantissa a half-precision mean would be off by ~1."""
    rs = np.random.RandomState(0)
    x_np = (rs.randn(4096, 4) + 20.0).astype(np.float32)
    x = jnp.asarray(x_np, dtype)
    gamma, beta = jnp.ones(4, jnp.float32), jnp.zeros(4, jnp.float32)
    state = jl.batchnorm_state(4)
    out, new_state = jl.batchnorm(x, gamma, beta, state, train=True)
    assert out.dtype == dtype
    assert new_state.mean.dtype == jnp.float32
    xs = np.asarray(x.astype(jnp.float32), np.float64)
    expected = (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5)
    tol = 1e-2 if dtype == jnp.float16 else 5e-2  # the output's own rounding
    assert np.max(np.abs(np.asarray(out, np.float64) - expected)) <= tol * np.max(np.abs(expected))
    np.testing.assert_allclose(np.asarray(new_state.mean), 0.1 * xs.mean(0), rtol=1e-5)
    dx = jax.grad(lambda x: jnp.sum(jl.batchnorm(x, gamma, beta, state, train=True)[0].astype(jnp.float32) ** 2))(x)
    assert dx.dtype == dtype and np.isfinite(np.asarray(dx, np.float32)).all()


def test_softmax_large_logits_exact():
    scores = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [1e4, 1e4 - 3.0, -1e4]], np.float32)
    y = np.array([1, 2, 0])
    loss, grad = jax.value_and_grad(jl.softmax_loss)(jnp.asarray(scores), jnp.asarray(y))
    with jax.enable_x64(True):
        s64 = jnp.asarray(scores, jnp.float64)
        loss64, grad64 = jax.value_and_grad(softmax_loss_reference)(s64, jnp.asarray(y))
    assert np.isfinite(loss)
    np.testing.assert_allclose(float(loss), float(loss64), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(grad64), atol=1e-6)


def test_softmax_minus_inf_in_non_target_logits():
    scores = jnp.array([[2.0, -jnp.inf, 0.5], [-jnp.inf, -jnp.inf, 1.0]])
    y = jnp.array([0, 2])
    loss, grad = jax.value_and_grad(jl.softmax_loss)(scores, y)
    assert np.isfinite(loss)
    expected = (np.log(np.exp(2.0) + np.exp(0.5)) - 2.0 + 0.0) / 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert not np.isnan(np.asarray(grad)).any()
    assert grad[0, 1] == 0 and grad[1, 0] == 0 and grad[1, 1] == 0 and grad[1, 2] == 0


def test_softmax_nan_input_gives_nan():
    scores = jnp.array([[1.0, jnp.nan], [0.0, 1.0]])
    y = jnp.array([0, 1])
    loss, grad = jax.value_and_grad(jl.softmax_loss)(scores, y)
    assert np.isnan(loss)
    assert np.isnan(np.asarray(grad[0])).all()


def test_svm_huge_scores_finite_where_the_maths_is():
    scores = np.array([[1e30, 1e30, -1e30], [0.0, 1e30, 2e30]], np.float32)
    y = np.array([0, 2])
    loss, grad = jax.value_and_grad(jl.svm_loss)(jnp.asarray(scores), jnp.asarray(y))
    with jax.enable_x64(True):
        loss64 = svm_loss_reference(jnp.asarray(scores, jnp.float64), jnp.asarray(y))
    assert np.isfinite(loss)
    np.testing.assert_allclose(float(loss), float(loss64), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(grad), [[-0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])


def test_svm_nan_input_gives_nan():
    loss = jl.svm_loss(jnp.array([[1.0, jnp.nan, 0.0]]), jnp.array([0]))
    assert np.isnan(loss)


def test_relu_propagates_nan():
    assert np.isnan(np.asarray(jl.relu(jnp.array([jnp.nan, 1.0]))[0]))


def test_dropout_rate_one_gives_zeros_without_nan():
    x = jnp.array([[1.0, jnp.inf, -2.0]])
    out, grad = jax.value_and_grad(lambda x: jnp.sum(jl.dropout(x, jax.random.key(0), rate=1.0, train=True)))(x)
    assert out == 0
    np.testing.assert_array_equal(np.asarray(grad), 0.0)
    np.testing.assert_array_equal(np.asarray(jl.dropout(x, jax.random.key(0), rate=1.0, train=True)), 0.0)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9, 0.999])
def test_dropout_keeps_the_expected_value(rate):
    n = 2_000_000
    x = jnp.ones((n,))
    out = jl.dropout(x, jax.random.key(42), rate=rate, train=True)
    keep = 1 - rate
    # mean of n Bernoulli(keep)/keep draws: std = sqrt((1 - keep) / (keep * n))
    sigma = np.sqrt((1 - keep) / (keep * n))
    assert abs(float(jnp.mean(out)) - 1.0) <= 5 * sigma
    assert abs(float(jnp.mean(out != 0)) - keep) <= 5 * np.sqrt(keep * (1 - keep) / n)


@pytest.mark.parametrize("m", [1, 7, 32, 1000, 4097])
@pytest.mark.parametrize("legacy", [False, True])
def test_dropout_random_words_are_jax_random_bits(m, legacy):
    """Dropout hashes its own Threefry words (one fused kernel): they must be
    jax.random.bits' words bit for bit, for typed and legacy keys, under vmap too."""
    from jaxlayers.layers.dropout import _random_words

    key = jax.random.PRNGKey(3) if legacy else jax.random.key(3)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(_random_words, static_argnums=1)(key, m)),
        np.asarray(jax.random.bits(key, (m,), jnp.uint32)),
    )
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: _random_words(k, m))(keys)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(jax.random.bits(keys[i], (m,), jnp.uint32)))


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.75, 0.3, 0.9])
def test_dropout_mask_is_packed_bits_of_the_words(rate):
    """The keep-mask is a deterministic function of the key (same key, same
    mask); its packed residual decodes to the mask the forward used."""
    x = jnp.ones((37, 13))
    key = jax.random.key(11)
    out1 = jl.dropout(x, key, rate=rate, train=True)
    out2 = jax.jit(lambda x, k: jl.dropout(x, k, rate=rate, train=True))(x, key)
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))
    grad = jax.grad(lambda x: jnp.sum(jl.dropout(x, key, rate=rate, train=True)))(x)
    np.testing.assert_array_equal(np.asarray(grad != 0), np.asarray(out1 != 0))
