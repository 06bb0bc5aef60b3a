"""Hypothesis property tests: for random shapes, dtypes and values (large
magnitudes included), every op's custom VJP == the reference's VJP, and the
forward pass is finite wherever the reference is."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxlayers as jl
from jaxlayers.gradcheck import norm_rel_error
from jaxlayers.layers import affine_reference, batchnorm_reference, dropout_reference, relu_reference
from jaxlayers.losses import softmax_loss_reference, svm_loss_reference

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

dims = st.integers(1, 6)
scales = st.sampled_from([1e-3, 1.0, 1e2, 1e4])
dtypes = st.sampled_from([jnp.float32, jnp.float64])
TOL = {jnp.float32: 1e-4, jnp.float64: 1e-10}


def _normal(seed, shape, scale, offset=0.0, dtype=jnp.float64):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape) * scale + offset, dtype)


def _assert_vjps_agree(f, f_ref, primals, seed):
    dtype = primals[0].dtype.type
    out_shape = jax.eval_shape(f, *primals)
    ct = _normal(seed + 1, out_shape.shape, 1.0, dtype=out_shape.dtype)

    # Both rules' forward and VJP in one jitted program: every example has new shapes, and one compile per
    # example costs a fraction of running the reference op by op (each primitive compiled on its own).
    # The public ops are jitted anyway; the reference's rounding under XLA is what a jitted caller gets.
    @jax.jit
    def both(primals, ct):
        out, vjp = jax.vjp(f, *primals)
        out_ref, vjp_ref = jax.vjp(f_ref, *primals)
        return out, out_ref, vjp(ct), vjp_ref(ct)

    out, out_ref, grads, grads_ref = both(primals, ct)
    finite_ref = np.isfinite(np.asarray(out_ref))
    assert np.isfinite(np.asarray(out))[finite_ref].all()
    # Normwise over the whole gradient: with random magnitudes, single elements
    # such as p - 1 for p = 1 - 1e-15 are pure cancellation in both rules.
    scale = max(float(jnp.max(jnp.abs(g), initial=0.0)) for g in grads_ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.dtype == g_ref.dtype
        assert norm_rel_error(g, g_ref, scale) <= TOL[dtype]


@pytest.mark.slow
@SETTINGS
@given(n=dims, d1=dims, d2=dims, m=dims, scale=scales, dtype=dtypes, seed=st.integers(0, 2**16))
def test_affine(x64, n, d1, d2, m, scale, dtype, seed):
    x = _normal(seed, (n, d1, d2), scale, dtype=dtype)
    w, b = _normal(seed + 2, (d1 * d2, m), 1.0, dtype=dtype), _normal(seed + 3, (m,), 1.0, dtype=dtype)
    _assert_vjps_agree(jl.affine, affine_reference, (x, w, b), seed)


@SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=4), scale=scales, dtype=dtypes, seed=st.integers(0, 2**16))
def test_relu(x64, shape, scale, dtype, seed):
    x = _normal(seed, tuple(shape), scale, dtype=dtype)
    x = jnp.where(jnp.abs(x) < 0.3 * scale, 0.0, x)  # plenty of exact kinks
    _assert_vjps_agree(jl.relu, relu_reference, (x,), seed)


@pytest.mark.slow
@SETTINGS
@given(
    n=dims,
    d=dims,
    scale=scales,
    offset=st.sampled_from([0.0, 10.0, 1e3]),
    train=st.booleans(),
    dtype=dtypes,
    seed=st.integers(0, 2**16),
)
def test_batchnorm(x64, n, d, scale, offset, train, dtype, seed):
    x = _normal(seed, (n, d), scale, offset, dtype)
    gamma, beta = _normal(seed + 2, (d,), 1.0, dtype=dtype), _normal(seed + 3, (d,), 1.0, dtype=dtype)
    state = jl.BatchNormState(
        _normal(seed + 4, (d,), scale, offset, dtype), jnp.abs(_normal(seed + 5, (d,), scale, dtype=dtype)) + 0.1
    )

    def f(x, g, b):
        return jl.batchnorm(x, g, b, state, train=train)[0]

    def f_ref(x, g, b):
        return batchnorm_reference(x, g, b, state, train=train)[0]

    _assert_vjps_agree(f, f_ref, (x, gamma, beta), seed)


@pytest.mark.slow
@SETTINGS
@given(
    shape=st.lists(dims, min_size=1, max_size=3),
    rate=st.floats(0.0, 1.0),
    scale=scales,
    dtype=dtypes,
    seed=st.integers(0, 2**16),
)
def test_dropout(x64, shape, rate, scale, dtype, seed):
    x = _normal(seed, tuple(shape), scale, dtype=dtype)
    key = jax.random.key(seed)
    _assert_vjps_agree(
        lambda x: jl.dropout(x, key, rate=rate, train=True),
        lambda x: dropout_reference(x, key, rate=rate, train=True),
        (x,),
        seed,
    )


@pytest.mark.slow
@SETTINGS
@given(
    n=dims,
    c=st.integers(2, 6),
    scale=scales,
    dtype=dtypes,
    seed=st.integers(0, 2**16),
    loss=st.sampled_from(["svm", "softmax"]),
)
def test_losses(x64, n, c, scale, dtype, seed, loss):
    scores = _normal(seed, (n, c), scale, dtype=dtype)
    if loss == "svm":
        scores = jnp.round(scores)  # integer scores make exact margin-0 kinks common
    y = jnp.asarray(np.random.RandomState(seed).randint(0, c, n), jnp.int32)
    op, ref = (jl.svm_loss, svm_loss_reference) if loss == "svm" else (jl.softmax_loss, softmax_loss_reference)
    _assert_vjps_agree(lambda s: op(s, y), lambda s: ref(s, y), (scores,), seed)
