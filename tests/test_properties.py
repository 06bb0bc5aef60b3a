"""Hypothesis property tests: for random shapes and values, custom VJP == reference VJP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxlayers as jl
from jaxlayers.gradcheck import norm_rel_error
from jaxlayers.layers import affine_reference, batchnorm_reference, dropout_reference, relu_reference
from jaxlayers.losses import softmax_loss_reference, svm_loss_reference

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

dims = st.integers(1, 6)
scales = st.sampled_from([1e-3, 1.0, 1e2, 1e4])


def _normal(seed, shape, scale, offset=0.0):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape) * scale + offset, jnp.float64)


def _assert_vjps_agree(f, f_ref, primals, seed):
    out, vjp = jax.vjp(f, *primals)
    out_ref, vjp_ref = jax.vjp(f_ref, *primals)
    assert bool(jnp.all(jnp.isfinite(out))) or not bool(jnp.all(jnp.isfinite(out_ref)))
    ct = _normal(seed + 1, np.shape(out), 1.0)
    grads, grads_ref = vjp(ct), vjp_ref(ct)
    # Normwise over the whole gradient: with random magnitudes, single elements
    # such as p - 1 for p = 1 - 1e-15 are pure cancellation in both rules.
    scale = max(float(jnp.max(jnp.abs(g), initial=0.0)) for g in grads_ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert norm_rel_error(g, g_ref, scale) <= 1e-10


@SETTINGS
@given(n=dims, d1=dims, d2=dims, m=dims, scale=scales, seed=st.integers(0, 2**16))
def test_affine(x64, n, d1, d2, m, scale, seed):
    x, w, b = _normal(seed, (n, d1, d2), scale), _normal(seed + 2, (d1 * d2, m), 1.0), _normal(seed + 3, (m,), 1.0)
    _assert_vjps_agree(jl.affine, affine_reference, (x, w, b), seed)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=4), scale=scales, seed=st.integers(0, 2**16))
def test_relu(x64, shape, scale, seed):
    x = _normal(seed, tuple(shape), scale)
    x = jnp.where(jnp.abs(x) < 0.3 * scale, 0.0, x)  # plenty of exact kinks
    _assert_vjps_agree(jl.relu, relu_reference, (x,), seed)


@SETTINGS
@given(
    n=dims,
    d=dims,
    scale=scales,
    offset=st.sampled_from([0.0, 10.0, 1e3]),
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batchnorm(x64, n, d, scale, offset, train, seed):
    x = _normal(seed, (n, d), scale, offset)
    gamma, beta = _normal(seed + 2, (d,), 1.0), _normal(seed + 3, (d,), 1.0)
    state = jl.BatchNormState(_normal(seed + 4, (d,), scale, offset), jnp.abs(_normal(seed + 5, (d,), scale)) + 0.1)

    def f(x, g, b):
        return jl.batchnorm(x, g, b, state, train=train)[0]

    def f_ref(x, g, b):
        return batchnorm_reference(x, g, b, state, train=train)[0]

    _assert_vjps_agree(f, f_ref, (x, gamma, beta), seed)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=3), rate=st.floats(0.0, 1.0), scale=scales, seed=st.integers(0, 2**16))
def test_dropout(x64, shape, rate, scale, seed):
    x = _normal(seed, tuple(shape), scale)
    key = jax.random.key(seed)
    _assert_vjps_agree(
        lambda x: jl.dropout(x, key, rate=rate, train=True),
        lambda x: dropout_reference(x, key, rate=rate, train=True),
        (x,),
        seed,
    )


@SETTINGS
@given(n=dims, c=st.integers(2, 6), scale=scales, seed=st.integers(0, 2**16), loss=st.sampled_from(["svm", "softmax"]))
def test_losses(x64, n, c, scale, seed, loss):
    scores = _normal(seed, (n, c), scale)
    if loss == "svm":
        scores = jnp.round(scores)  # integer scores make exact margin-0 kinks common
    y = jnp.asarray(np.random.RandomState(seed).randint(0, c, n), jnp.int32)
    op, ref = (jl.svm_loss, svm_loss_reference) if loss == "svm" else (jl.softmax_loss, softmax_loss_reference)
    _assert_vjps_agree(lambda s: op(s, y), lambda s: ref(s, y), (scores,), seed)
