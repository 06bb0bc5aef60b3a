"""Generic checks, run over every op in the registry (jaxlayers.opinfo.OPS).

Modelled on PyTorch's OpInfo tests: each op declares samples once; every
check below runs on every sample of every op.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    batched_args,
    call,
    cotangent_like,
    jit_call,
    op_sample_params,
    tree_allclose,
    value_and_vjp,
    vjp_of,
)

from jaxlayers.gradcheck import norm_rel_error, numerical_gradient, rel_error

PARAMS = op_sample_params()


def _sample(info, i, dtype):
    return info.samples(dtype)[i]


def _max_abs(a) -> float:
    """``max |a|`` in NumPy: exact, as jnp's is, without compiling two tiny programs per shape."""
    return float(np.max(np.abs(np.asarray(a))))


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_forward_matches_reference(info, i, x64):
    s = _sample(info, i, jnp.float64)
    out = info.op(*s.args, **s.kwargs)
    ref = jit_call(info.reference, s)
    tree_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_custom_vjp_matches_autodiff_of_reference(info, i, x64):
    s = _sample(info, i, jnp.float64)
    out = info.bind(s)(*info.diff_args(s))
    ct = cotangent_like(out)
    for g, g_ref in zip(vjp_of(info, s, ct), vjp_of(info, s, ct, reference=True, jit=True), strict=True):
        assert g.dtype == jnp.float64
        assert rel_error(g, g_ref) <= 1e-10


# Finite differences are undefined on a kink; kink samples are instead checked
# for exact equality with autodiff of the reference (below).
@pytest.mark.parametrize(("info", "i"), op_sample_params(smooth=True))
def test_custom_vjp_matches_finite_differences(info, i, x64):
    s = _sample(info, i, jnp.float64)
    f = info.bind(s)
    primals = info.diff_args(s)
    ct = cotangent_like(f(*primals))
    grads = vjp_of(info, s, ct)
    scale = max(_max_abs(g) for g in grads)
    for k, g in enumerate(grads):

        def f_k(a, k=k):
            args = list(primals)
            args[k] = a
            return f(*args)

        assert norm_rel_error(g, numerical_gradient(f_k, primals[k], ct), scale) <= 1e-7


@pytest.mark.parametrize(("info", "i"), op_sample_params(smooth=False))
def test_kinks_match_reference_exactly(info, i, x64):
    s = _sample(info, i, jnp.float64)
    ct = cotangent_like(info.bind(s)(*info.diff_args(s)))
    for g, g_ref in zip(vjp_of(info, s, ct), vjp_of(info, s, ct, reference=True), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_identical_under_jit(info, i, x64):
    s = _sample(info, i, jnp.float64)
    eager = info.op(*s.args, **s.kwargs)
    jitted = jax.jit(lambda *a: info.op(*a, **s.kwargs))(*s.args)
    tree_allclose(eager, jitted, rtol=1e-15, atol=0)
    ct = cotangent_like(info.output(eager))
    g_eager = vjp_of(info, s, ct)
    g_jit = jax.jit(lambda *a: jax.vjp(info.bind(s), *a)[1](ct))(*info.diff_args(s))
    tree_allclose(g_eager, g_jit, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_vmap_of_op_and_of_gradient_matches_loop(info, i, x64):
    s = _sample(info, i, jnp.float64)
    stacked, in_axes, items = batched_args(info, s, 3)
    # vmap inside jit: the same batching rules as an eager vmap, in one compiled program each (eagerly,
    # the batched VJP compiled its primitives one by one); the loops run the op eagerly.
    out = jax.jit(jax.vmap(lambda *a: call(info, a, s.kwargs), in_axes=in_axes))(*stacked)
    loop = np.stack([np.asarray(call(info, a, s.kwargs)) for a in items])
    tree_allclose(out, loop, rtol=1e-12, atol=1e-12)

    ct = cotangent_like(call(info, items[0], s.kwargs))

    def grad_fn(*a):
        return value_and_vjp(info, a, s.kwargs, ct)[1]

    g_vmap = jax.jit(jax.vmap(grad_fn, in_axes=in_axes))(*stacked)
    g_loop = [grad_fn(*a) for a in items]
    for k, gv in enumerate(g_vmap):
        # Per-example gradients, shared (unbatched) arguments included.
        expected = np.stack([np.asarray(g[k]) for g in g_loop])
        np.testing.assert_allclose(np.asarray(gv), expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_inside_lax_scan(info, i, x64):
    s = _sample(info, i, jnp.float64)
    stacked, in_axes, items = batched_args(info, s, 3)
    ct = cotangent_like(call(info, items[0], s.kwargs))
    batched = [j for j, ax in enumerate(in_axes) if ax == 0]

    def value_and_grad(full):
        return value_and_vjp(info, full, s.kwargs, ct)

    def body(carry, xs):
        full = list(s.args)
        for j, x in zip(batched, xs, strict=True):
            full[j] = x
        return carry, value_and_grad(full)

    _, (outs, grads) = jax.lax.scan(body, 0, tuple(stacked[j] for j in batched))
    for k, a in enumerate(items):
        out_k, grads_k = value_and_grad(list(a))
        np.testing.assert_allclose(np.asarray(outs[k]), np.asarray(out_k), rtol=1e-12, atol=1e-12)
        for g, gk in zip(grads, grads_k, strict=True):
            np.testing.assert_allclose(np.asarray(g[k]), np.asarray(gk), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_under_jax_checkpoint(info, i, x64):
    s = _sample(info, i, jnp.float64)
    f = info.bind(s)
    primals = info.diff_args(s)
    ct = cotangent_like(f(*primals))
    g_remat = jax.vjp(jax.checkpoint(f), *primals)[1](ct)
    tree_allclose(g_remat, vjp_of(info, s, ct), rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_float32_within_float32_tolerance(info, i, x64):
    s32 = _sample(info, i, jnp.float32)
    s64 = _sample(info, i, jnp.float64)
    out32 = info.bind(s32)(*info.diff_args(s32))
    out64 = info.output(jit_call(info.reference, s64))
    assert out32.dtype == jnp.float32
    scale = _max_abs(out64) + 1.0
    np.testing.assert_allclose(np.asarray(out32, np.float64), np.asarray(out64), rtol=1e-5, atol=1e-5 * scale)
    ct64 = cotangent_like(out64)
    g32 = vjp_of(info, s32, jnp.asarray(np.asarray(ct64, np.float32)), jit=True)
    g64 = vjp_of(info, s64, ct64, reference=True, jit=True)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == jnp.float32
        gscale = _max_abs(b) + 1e-30
        assert norm_rel_error(a, b, gscale) <= 2e-4
