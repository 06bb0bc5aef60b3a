"""jl.multi_head_attention (issue 19): against a plain jnp reference (values and gradients, float64), against a
NumPy transcription of the course's MultiHeadAttention formulas, causal masking, dropout, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.layers.mha import MHA_PARAMS

B, T, S, D, E, HEADS = 2, 5, 7, 6, 8, 2


def _params(rng, dq=D, dk=D, dv=D, e=E, do=D, dtype=np.float64):
    shapes = {"Wq": (dq, e), "bq": (e,), "Wk": (dk, e), "bk": (e,), "Wv": (dv, e), "bv": (e,), "Wo": (e, do)}
    shapes["bo"] = (do,)
    return {n: jnp.asarray(rng.standard_normal(s) / math.sqrt(s[0]), dtype) for n, s in shapes.items()}


def _reference(query, key, value, p, num_heads, mask=None, is_causal=False):
    """Plain jnp, differentiated by JAX: the definition written out."""
    b, t, _ = query.shape
    s = key.shape[1]
    e = p["Wq"].shape[1]
    h = e // num_heads
    q = (query @ p["Wq"] + p["bq"]).reshape(b, t, num_heads, h)
    k = (key @ p["Wk"] + p["bk"]).reshape(b, s, num_heads, h)
    v = (value @ p["Wv"] + p["bv"]).reshape(b, s, num_heads, h)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(h)
    allowed = jnp.ones(logits.shape, bool)
    if mask is not None:
        allowed = allowed & mask
    if is_causal:
        allowed = allowed & jnp.tril(jnp.ones((t, s), bool))
    probs = jax.nn.softmax(jnp.where(allowed, logits, -1e30), axis=-1)
    o = jnp.einsum("bnts,bsnh->btnh", probs, v).reshape(b, t, e)
    return o @ p["Wo"] + p["bo"]


def _course_numpy(query, key, value, p, num_heads, attn_mask=None):
    """The course's MultiHeadAttention.forward (PyTorch) transcribed to NumPy: query (N, S, E), key/value
    (N, T, E) in ITS names; attn_mask (S, T), 0 = query i must not attend to key j; no dropout."""
    query, key, value = (np.asarray(a, np.float64) for a in (query, key, value))
    p = {n: np.asarray(a, np.float64) for n, a in p.items()}
    N, S_, _ = query.shape
    _, T_, _ = value.shape
    E_ = p["Wq"].shape[1]
    H = num_heads
    q = (query @ p["Wq"] + p["bq"]).reshape(N, S_, H, E_ // H).transpose(0, 2, 1, 3)
    k = (key @ p["Wk"] + p["bk"]).reshape(N, T_, H, E_ // H).transpose(0, 2, 1, 3)
    v = (value @ p["Wv"] + p["bv"]).reshape(N, T_, H, E_ // H).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E_ / H)
    if attn_mask is not None:
        scores = np.where(attn_mask == 0, -np.inf, scores)  # masked_fill(attn_mask == 0, -inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    attn = np.exp(scores)
    attn = attn / attn.sum(axis=-1, keepdims=True)
    Y = (attn @ v).transpose(0, 2, 1, 3).reshape(N, S_, E_)
    return Y @ p["Wo"] + p["bo"]


def _inputs(rng, t=T, s=S, dtype=np.float64):
    q = jnp.asarray(rng.standard_normal((B, t, D)), dtype)
    kv = jnp.asarray(rng.standard_normal((B, s, D)), dtype)
    v = jnp.asarray(rng.standard_normal((B, s, D)), dtype)
    return q, kv, v


@pytest.mark.parametrize("case", ["plain", "mask", "causal", "self"])
def test_values_and_gradients_match_the_plain_reference_float64(x64, case):
    rng = np.random.default_rng(0)
    q, k, v = _inputs(rng, s=T if case in ("causal", "self") else S)
    if case == "self":
        k = v = q
    p = _params(rng)
    mask = None
    if case == "mask":  # every row keeps at least one key
        m = rng.random((B, 1, T, S)) < 0.6
        m[..., 0] = True
        mask = jnp.asarray(m)
    causal = case == "causal"
    out = jl.multi_head_attention(q, k, v, p, num_heads=HEADS, mask=mask, is_causal=causal)
    ref = _reference(q, k, v, p, HEADS, mask, causal)
    assert out.shape == (B, T, D) and out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    g = jnp.asarray(rng.standard_normal(out.shape))

    def loss(fn):
        return lambda q, k, v, p: jnp.vdot(fn(q, k, v, p), g)

    ours = jax.grad(loss(lambda *a: jl.multi_head_attention(*a, num_heads=HEADS, mask=mask, is_causal=causal)), (0, 1, 2, 3))(q, k, v, p)  # fmt: skip
    theirs = jax.grad(loss(lambda *a: _reference(*a, HEADS, mask, causal)), (0, 1, 2, 3))(q, k, v, p)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mask_kind", [None, "causal", "random"])
def test_matches_a_numpy_transcription_of_the_course_formulas(x64, mask_kind):
    """The course's head split, 1/sqrt(head_dim) scaling and attn_mask (0 = do not attend) against ours:
    mask = attn_mask != 0."""
    rng = np.random.default_rng(1)
    t = s = T if mask_kind == "causal" else None
    q, k, v = _inputs(rng, t=t or T, s=s or S)
    p = _params(rng, e=12)
    attn_mask = None
    if mask_kind == "causal":
        attn_mask = np.tril(np.ones((T, T)))  # the course's causal mask
    elif mask_kind == "random":
        attn_mask = (rng.random((T, S)) < 0.5).astype(np.float64)
        attn_mask[:, 2] = 1.0
    want = _course_numpy(q, k, v, p, 3, attn_mask)
    mask = None if attn_mask is None else jnp.asarray(attn_mask != 0)
    got = jl.multi_head_attention(q, k, v, p, num_heads=3, mask=mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)
    if mask_kind == "causal":  # the same as is_causal=True
        np.testing.assert_allclose(jl.multi_head_attention(q, k, v, p, num_heads=3, is_causal=True), want, atol=1e-9)


def test_causal_output_at_t_does_not_depend_on_later_inputs(x64):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((B, T, D)))
    p = _params(rng)

    def f(x):
        return jl.multi_head_attention(x, x, x, p, num_heads=HEADS, is_causal=True)

    out = f(x)
    for t in range(T - 1):
        later = x.at[:, t + 1 :].add(jnp.asarray(rng.standard_normal((B, T - t - 1, D))))
        np.testing.assert_array_equal(f(later)[:, : t + 1], out[:, : t + 1])
        jac = jax.grad(lambda x, t=t: f(x)[:, t].sum())(x)
        assert np.all(jac[:, t + 1 :] == 0) and np.any(jac[:, : t + 1] != 0)
    assert not np.allclose(f(x.at[:, 0].add(1.0))[:, -1], out[:, -1])  # the last step sees the first


def test_attention_dropout_drops_probabilities_as_the_course(x64):
    """With a rate, the probabilities are multiplied by jl.dropout's mask (same key, same shape) / keep;
    rate 0 or no key in test mode: the deterministic output."""
    rng = np.random.default_rng(3)
    q, k, v = _inputs(rng)
    p = _params(rng)
    key = jax.random.key(7)
    out = jl.multi_head_attention(q, k, v, p, num_heads=HEADS, dropout_rate=0.25, dropout_key=key)
    again = jl.multi_head_attention(q, k, v, p, num_heads=HEADS, dropout_rate=0.25, dropout_key=key)
    np.testing.assert_array_equal(out, again)
    plain = jl.multi_head_attention(q, k, v, p, num_heads=HEADS)
    assert not np.allclose(out, plain)
    # the same computation by hand: probabilities (B, N, T, S), dropped with the op's mask
    h = E // HEADS
    qh = (q @ p["Wq"] + p["bq"]).reshape(B, T, HEADS, h)
    kh = (k @ p["Wk"] + p["bk"]).reshape(B, S, HEADS, h)
    vh = (v @ p["Wv"] + p["bv"]).reshape(B, S, HEADS, h)
    probs = jax.nn.softmax(jnp.einsum("btnh,bsnh->bnts", qh, kh) / math.sqrt(h), axis=-1)
    dropped = jl.dropout(probs, key, rate=0.25, train=True)
    assert np.any(dropped == 0)
    want = jnp.einsum("bnts,bsnh->btnh", dropped, vh).reshape(B, T, E) @ p["Wo"] + p["bo"]
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
    # gradients flow through the dropped path (jl.dropout's rule) and match autodiff of the by-hand version
    grad = jax.grad(lambda q: jl.multi_head_attention(q, k, v, p, num_heads=HEADS, dropout_rate=0.25, dropout_key=key).sum())(q)  # fmt: skip
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_cross_attention_shapes_and_output_width(x64):
    rng = np.random.default_rng(4)
    q = jnp.asarray(rng.standard_normal((B, T, 3)))
    ctx = jnp.asarray(rng.standard_normal((B, S, 5)))
    p = _params(rng, dq=3, dk=5, dv=5, e=8, do=4)
    out = jl.multi_head_attention(q, ctx, ctx, p, num_heads=4)
    assert out.shape == (B, T, 4)
    np.testing.assert_allclose(out, _reference(q, ctx, ctx, p, 4), rtol=1e-10, atol=1e-10)


def test_float32_under_jit_and_vmap_of_a_loss():
    rng = np.random.default_rng(5)
    q, k, v = _inputs(rng, dtype=np.float32)
    p = _params(rng, dtype=np.float32)
    f = jax.jit(lambda q, k, v, p: jl.multi_head_attention(q, k, v, p, num_heads=HEADS, is_causal=False))
    out = f(q, k, v, p)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, _reference(q, k, v, p, HEADS), rtol=1e-4, atol=1e-5)
    per_example = jax.vmap(lambda q, k, v: f(q[None], k[None], v[None], p)[0])(q, k, v)
    np.testing.assert_allclose(per_example, out, rtol=1e-5, atol=1e-6)


def test_errors_name_the_argument_and_shapes():
    rng = np.random.default_rng(6)
    q, k, v = _inputs(rng, dtype=np.float32)
    p = _params(rng, dtype=np.float32)
    with pytest.raises(ValueError, match=r"num_heads=3 must divide the projected width E = .* 8"):
        jl.multi_head_attention(q, k, v, p, num_heads=3)
    with pytest.raises(ValueError, match=r"params lack \['Wo', 'bo'\]"):
        jl.multi_head_attention(q, k, v, {n: p[n] for n in MHA_PARAMS[:6]}, num_heads=2)
    with pytest.raises(ValueError, match=r"params\['Wk'\] must have shape \(6, 8\)"):
        jl.multi_head_attention(q, k, v, {**p, "Wk": p["Wk"][:5]}, num_heads=2)
    with pytest.raises(ValueError, match="must agree on B and S"):
        jl.multi_head_attention(q, k, v[:, :3], p, num_heads=2)
    with pytest.raises(ValueError, match=r"dropout_rate=0\.1 needs dropout_key"):
        jl.multi_head_attention(q, k, v, p, num_heads=2, dropout_rate=0.1)
    with pytest.raises(TypeError, match="mask must be boolean"):
        jl.multi_head_attention(q, k, v, p, num_heads=2, mask=jnp.ones((T, S)))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 4\) does not broadcast to"):
        jl.multi_head_attention(q, k, v, p, num_heads=2, mask=jnp.ones((4, 4), bool))
    with pytest.raises(ValueError, match="query must be 3-D"):
        jl.multi_head_attention(q[0], k, v, p, num_heads=2)
