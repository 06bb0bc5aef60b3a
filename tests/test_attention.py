"""jl.dot_product_attention: the blocked FlashAttention-2 rule against the plain reference and jax.nn.

The generic registry checks (tests/test_ops.py, tests/test_hostile.py) run it on tiny inputs, one
block each; here several blocks are forced (``attention_block_sizes``, with and without the loop over
(batch, key/value head) pairs) so that the loops, the causal
block skipping and the padding of ``T`` and ``S`` are exercised, in float64 against autodiff of the
reference, and the op is compared with ``jax.nn.dot_product_attention`` in float32.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.gradcheck import norm_rel_error, numerical_gradient
from jaxlayers.layers.attention import _default_blocks, attention_block_sizes, dot_product_attention_reference


def _qkv(seed, b, t, s, n, k, h, dtype=jnp.float64):
    r = np.random.RandomState(seed)
    return tuple(jnp.asarray(r.randn(*shape), dtype) for shape in ((b, t, n, h), (b, s, k, h), (b, s, k, h)))


def _vjp(f, args, ct):
    out, vjp = jax.vjp(f, *args)
    return out, vjp(ct)


# (B, T, S, N, K, H, blocks, causal, bias shape or None, mask kind)
CASES = [
    pytest.param(2, 7, 11, 4, 2, 3, (3, 4), False, None, None, id="GQA, T, S not multiples of the blocks"),
    pytest.param(1, 9, 9, 2, 2, 4, (2, 3), True, (1, 2, 9, 9), None, id="causal, bias (1,N,T,S), 5x3 blocks"),
    pytest.param(2, 10, 6, 2, 1, 3, (4, 4), True, (2, 1, 1, 6), "random", id="MQA, causal T > S, mask, bias"),
    pytest.param(2, 5, 13, 3, 3, 2, (2, 5), True, None, "rows", id="causal T < S, fully masked rows"),
    pytest.param(1, 6, 8, 2, 2, 3, (1, 1), False, (1, 2, 6, 1), "random", id="1x1 blocks, bias (1,N,T,1)"),
]


def _mask(kind, b, t, s, seed=0):
    if kind is None:
        return None
    r = np.random.RandomState(seed)
    m = r.rand(b, 1, t, s) > 0.3
    if kind == "rows":
        m[:, :, 1] = False  # query 1 sees nothing, in every example
    return jnp.asarray(m)


@pytest.mark.parametrize("per_head", [False, True], ids=["heads together", "one head at a time"])
@pytest.mark.parametrize(("b", "t", "s", "n", "k", "h", "blocks", "causal", "bias_shape", "mask"), CASES)
def test_blocked_rule_matches_autodiff_of_the_reference(
    b, t, s, n, k, h, blocks, causal, bias_shape, mask, per_head, x64
):
    q, kk, v = _qkv(1, b, t, s, n, k, h)
    r = np.random.RandomState(2)
    bias = None if bias_shape is None else jnp.asarray(r.randn(*bias_shape))
    m = _mask(mask, b, t, s)
    ct = jnp.asarray(r.randn(b, t, n, h))
    args = (q, kk, v) if bias is None else (q, kk, v, bias)

    def op(*a):
        return jl.dot_product_attention(*a[:3], a[3] if len(a) > 3 else None, m, is_causal=causal)

    def ref(*a):
        return dot_product_attention_reference(*a[:3], a[3] if len(a) > 3 else None, m, is_causal=causal)

    with attention_block_sizes(*blocks, per_head=per_head):
        out, grads = _vjp(op, args, ct)
    out_ref, grads_ref = _vjp(ref, args, ct)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_ref), rtol=1e-12, atol=1e-13)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.shape == g_ref.shape and g.dtype == jnp.float64
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-10, atol=1e-12)


def test_default_blocks_split_evenly_and_go_per_head_for_long_sequences():
    assert _default_blocks(100, 100) == (100, 100, False)  # one block of every head
    assert _default_blocks(200, 200) == (50, 200, False)
    assert _default_blocks(768, 64) == (64, 64, False)
    assert _default_blocks(256, 256) == (256, 256, True)  # T S = PER_HEAD_MIN
    assert _default_blocks(768, 768) == (384, 384, True)  # two even blocks, not 512 + a padded 256
    assert _default_blocks(2048, 1000) == (512, 500, True)


def test_default_per_head_blocks_match_the_reference(x64):
    """T S >= PER_HEAD_MIN: the default loops over (batch, key/value head) pairs, here with GQA, a
    bias broadcast over heads and queries (its gradient summed over the pairs), a mask and causality."""
    b, t, s, n, k, h = 2, 260, 256, 4, 2, 3
    assert _default_blocks(t, s)[2]
    q, kk, v = _qkv(6, b, t, s, n, k, h)
    r = np.random.RandomState(7)
    bias = jnp.asarray(r.randn(b, 1, 1, s))
    m = _mask("random", b, t, s)
    ct = jnp.asarray(r.randn(b, t, n, h))
    out, grads = _vjp(lambda *a: jl.dot_product_attention(*a, m, is_causal=True), (q, kk, v, bias), ct)
    out_ref, grads_ref = _vjp(lambda *a: dot_product_attention_reference(*a, m, is_causal=True), (q, kk, v, bias), ct)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_ref), rtol=1e-12, atol=1e-13)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-10, atol=1e-11)


def test_per_head_loop_under_vmap_and_jit_matches_a_python_loop(x64):
    """The loop over (batch, key/value head) pairs batched by vmap (a mask that differs per example)."""
    q, kk, v = _qkv(8, 3, 6, 5, 4, 2, 3)  # 3 examples of T = 6, S = 5, N = 4, K = 2, H = 3
    m = jnp.asarray(np.random.RandomState(9).rand(3, 1, 1, 6, 5) > 0.3)
    ct = jnp.asarray(np.random.RandomState(10).randn(*q.shape))

    def loss(f, q, k, v, m, c):
        return jnp.sum(f(q[None], k[None], v[None], None, m, is_causal=True)[0] * c)

    with attention_block_sizes(4, 2, per_head=True):
        got = jax.jit(jax.vmap(jax.value_and_grad(partial(loss, jl.dot_product_attention), (0, 1, 2))))(q, kk, v, m, ct)
    for i in range(3):
        want = jax.value_and_grad(partial(loss, dot_product_attention_reference), (0, 1, 2))(
            q[i], kk[i], v[i], m[i], ct[i]
        )
        np.testing.assert_allclose(float(got[0][i]), float(want[0]), rtol=1e-12)
        for g, w in zip(got[1], want[1], strict=True):
            np.testing.assert_allclose(np.asarray(g[i]), np.asarray(w), rtol=1e-10, atol=1e-12)


def test_blocked_rule_matches_finite_differences(x64):
    """Several blocks, padding, causal, GQA and a broadcast bias, against float64 central differences."""
    q, k, v = _qkv(3, 1, 5, 7, 2, 1, 2)
    bias = jnp.asarray(np.random.RandomState(4).randn(1, 1, 5, 7))
    ct = jnp.asarray(np.random.RandomState(5).randn(*q.shape))
    with attention_block_sizes(2, 3):
        f = jax.jit(lambda q, k, v, b: jl.dot_product_attention(q, k, v, b, is_causal=True))
        grads = jax.vjp(f, q, k, v, bias)[1](ct)
        primals = (q, k, v, bias)
        scale = max(float(jnp.max(jnp.abs(g))) for g in grads)
        for i, g in enumerate(grads):

            def f_i(a, i=i):
                args = list(primals)
                args[i] = a
                return f(*args)

            assert norm_rel_error(g, numerical_gradient(f_i, primals[i], ct), scale) <= 1e-7


# --------------------------------------------------------------------------- against jax.nn


@pytest.mark.parametrize(
    ("b", "t", "s", "n", "k", "causal", "with_bias", "with_mask"),
    [
        pytest.param(2, 16, 16, 4, 4, False, False, False, id="MHA"),
        pytest.param(2, 12, 20, 4, 2, True, True, True, id="GQA, causal T < S, bias, mask"),
        pytest.param(1, 20, 12, 6, 3, True, False, False, id="causal T > S"),
        pytest.param(1, 1, 1, 2, 1, False, True, False, id="T = S = 1"),
    ],
)
@pytest.mark.parametrize("blocks", [(None, None), (4, 8)], ids=["default blocks", "4x8 blocks"])
def test_matches_jax_nn_float32(b, t, s, n, k, causal, with_bias, with_mask, blocks):
    h = 8
    q, kk, v = _qkv(6, b, t, s, n, k, h, jnp.float32)
    r = np.random.RandomState(7)
    bias = jnp.asarray(r.randn(1, n, t, s), jnp.float32) if with_bias else None
    mask = jnp.asarray(r.rand(b, 1, t, s) > 0.2).at[..., 0].set(True) if with_mask else None  # no empty row
    ct = jnp.asarray(r.randn(b, t, n, h), jnp.float32)

    def ours(q, k, v, bias):
        return jl.dot_product_attention(q, k, v, bias, mask, scale=0.3, is_causal=causal)

    def theirs(q, k, v, bias):
        return jax.nn.dot_product_attention(q, k, v, bias, mask, scale=0.3, is_causal=causal)

    with attention_block_sizes(*blocks):
        out, grads = _vjp(ours, (q, kk, v, bias), ct)
    out_nn, grads_nn = _vjp(theirs, (q, kk, v, bias), ct)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_nn), rtol=2e-5, atol=2e-6)
    for g, g_nn in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_nn), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_nn), rtol=1e-4, atol=1e-5)


def test_unbatched_input_like_jax_nn():
    q, k, v = _qkv(8, 1, 5, 7, 2, 1, 4, jnp.float32)
    out = jl.dot_product_attention(q[0], k[0], v[0], is_causal=True)
    assert out.shape == (5, 2, 4)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(jax.nn.dot_product_attention(q[0], k[0], v[0], is_causal=True)), atol=2e-6
    )


def test_causal_with_t_not_s_is_top_left_like_jax_nn():
    """Query 0 sees key 0 only, whatever S - T (jnp.tril(ones((T, S)))), as jax.nn and PyTorch."""
    q, k, v = _qkv(9, 1, 2, 5, 1, 1, 3, jnp.float32)
    out = jl.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(np.asarray(out[0, 0, 0]), np.asarray(v[0, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(out), np.asarray(jax.nn.dot_product_attention(q, k, v, is_causal=True)), atol=2e-6
    )


# --------------------------------------------------------------------------- fully masked rows


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_fully_masked_rows_give_zeros_and_zero_gradients(dtype):
    q, k, v = _qkv(10, 2, 6, 9, 2, 2, 4, dtype)
    mask = np.ones((2, 2, 6, 9), bool)
    mask[0, :, 2] = False  # by the mask
    bias = np.zeros((2, 2, 6, 9), np.float32)
    bias[1, 1, 4] = -np.inf  # by a -inf bias
    mask, bias = jnp.asarray(mask), jnp.asarray(bias, dtype)
    ct = jnp.ones(q.shape, dtype)
    with attention_block_sizes(4, 4):
        out, (dq, dk, dv, dbias) = _vjp(lambda *a: jl.dot_product_attention(*a, mask=mask), (q, k, v, bias), ct)
    for a in (out, dq, dk, dv, dbias):
        assert not np.any(np.isnan(np.asarray(a, np.float32)))
    np.testing.assert_array_equal(np.asarray(out[0, 2], np.float32), 0.0)
    np.testing.assert_array_equal(np.asarray(out[1, 4, 1], np.float32), 0.0)
    np.testing.assert_array_equal(np.asarray(dq[0, 2], np.float32), 0.0)
    np.testing.assert_array_equal(np.asarray(dq[1, 4, 1], np.float32), 0.0)
    np.testing.assert_array_equal(np.asarray(dbias[1, 1, 4], np.float32), 0.0)
    # jax.nn gives such a row the mean of the values instead (its masked logits are finite)
    nn_out = jax.nn.dot_product_attention(
        q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask=mask
    )
    np.testing.assert_allclose(np.asarray(nn_out[0, 2]), np.asarray(v[0].astype(jnp.float32).mean(0)), rtol=1e-5)


def test_causal_empty_rows_when_t_greater_than_nothing(x64):
    """A mask that leaves a whole example empty: zeros, and the others unchanged."""
    q, k, v = _qkv(11, 2, 3, 4, 2, 2, 2)
    mask = jnp.asarray(np.array([False, True])[:, None, None, None] * np.ones((2, 1, 3, 4), bool))
    out = jl.dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_array_equal(np.asarray(out[0]), 0.0)
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(dot_product_attention_reference(q, k, v)[1]), rtol=1e-12)


# --------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
    """Half inputs, several blocks, logits large enough that float16 scores would overflow
    (|q k| ~ 1e5 > 65504) and a mask: float32 reference on the same values, rounded once."""
    q, k, v = _qkv(12, 1, 40, 70, 2, 1, 16, jnp.float32)
    q = q * 300.0
    mask = jnp.asarray(np.random.RandomState(13).rand(1, 2, 40, 70) > 0.5)
    qh, kh, vh = (a.astype(dtype) for a in (q, k, v))
    ct = jnp.asarray(np.random.RandomState(14).randn(*q.shape), dtype)
    with attention_block_sizes(16, 32):
        out, grads = _vjp(lambda *a: jl.dot_product_attention(*a, mask=mask, scale=1.0), (qh, kh, vh), ct)
    up = tuple(a.astype(jnp.float32) for a in (qh, kh, vh))
    out_ref, grads_ref = _vjp(
        lambda *a: dot_product_attention_reference(*a, mask=mask, scale=1.0), up, ct.astype(jnp.float32)
    )
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    eps = float(jnp.finfo(dtype).eps)
    for a, r in zip((out, *grads), (out_ref, *grads_ref), strict=True):
        a, r = np.asarray(a, np.float64), np.asarray(r, np.float64)
        assert np.all(np.isfinite(a))
        assert np.all(np.abs(a - r) <= eps * np.abs(r) + 1e-3 * np.max(np.abs(r)))


# --------------------------------------------------------------------------- memory, errors


def _residual_bytes(f, args):
    """Bytes jax.vjp keeps that are not inputs, per residual shape."""
    jaxpr = jax.make_jaxpr(lambda *a: jax.tree.leaves(jax.vjp(f, *a)[1]))(*args).jaxpr
    invars = set(jaxpr.invars)
    outs = {id(v): v for v in jaxpr.outvars if not isinstance(v, jex_core.Literal)}.values()
    return sorted((tuple(v.aval.shape), np.dtype(v.aval.dtype).itemsize) for v in outs if v not in invars)


def test_residuals_are_the_output_and_one_lse_per_row():
    b, t, s, n, k, h = 1, 256, 384, 4, 2, 8
    q, kk, v = _qkv(0, b, t, s, n, k, h, jnp.float32)
    new = _residual_bytes(jl.dot_product_attention, (q, kk, v))
    assert new == sorted([((b, t, n, h), 4), ((b, k, t * n // k), 4)])  # out, lse: no (T, S) array
    ref = _residual_bytes(dot_product_attention_reference, (q, kk, v))
    assert any(np.prod(shape) >= n * t * s for shape, _ in ref)  # autodiff keeps the probabilities


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (((2, 5, 4, 8), (2, 7, 3, 8), (2, 7, 3, 8)), {}, ValueError, r"multiple of the key/value heads K, got N = 4"),
        (((2, 5, 4, 8), (3, 7, 4, 8), (3, 7, 4, 8)), {}, ValueError, r"key must have query's batch size"),
        (((2, 5, 4, 8), (2, 7, 4, 8), (2, 6, 4, 8)), {}, ValueError, r"key and value must have one shape"),
        (((2, 5, 4, 8), (2, 7, 4, 8), (2, 7, 4, 8)), {"bias": (2, 4, 5, 6)}, ValueError, r"bias of shape"),
        (((5, 8), (7, 8), (7, 8)), {}, ValueError, r"query must be 4-D"),
        (((2, 5, 4, 8), (2, 7, 4, 8), (2, 7, 4, 8)), {"scale": float("nan")}, ValueError, r"scale must be finite"),
        (((2, 5, 4, 8), (2, 7, 4, 8), (2, 7, 4, 8)), {"is_causal": 1}, TypeError, r"is_causal must be a Python bool"),
    ],
)
def test_bad_arguments_are_named(args, kwargs, exc, match):
    q, k, v = (jnp.zeros(shape) for shape in args)
    if "bias" in kwargs:
        kwargs = {**kwargs, "bias": jnp.zeros(kwargs["bias"])}
    with pytest.raises(exc, match=r"^dot_product_attention: .*" + match):
        jl.dot_product_attention(q, k, v, **kwargs)


def test_mask_must_be_boolean_and_dtypes_must_agree():
    q = jnp.zeros((1, 2, 2, 4))
    with pytest.raises(TypeError, match=r"^dot_product_attention: mask must be a boolean array"):
        jl.dot_product_attention(q, q, q, mask=jnp.ones((1, 1, 2, 2)))
    with pytest.raises(TypeError, match=r"^dot_product_attention: query, key and value must have one dtype"):
        jl.dot_product_attention(q, q.astype(jnp.bfloat16), q)
