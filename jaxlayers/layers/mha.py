"""Multi-head attention: input projections, head split, :func:`dot_product_attention`, output projection.

A composition of ops, not a new rule: the four projections are
:func:`jaxlayers.temporal_affine` (hand-derived backward), the attention is
:func:`jaxlayers.layers.attention.dot_product_attention` (hand-derived,
blocked backward that keeps ``O(T)`` residuals), the optional dropout of the
attention probabilities :func:`jaxlayers.dropout`; the reshapes in between are
differentiated by JAX.

The NumPy original's ``MultiHeadAttention(embed_dim, num_heads, dropout)``
--------------------------------------------------------------------------
The course's module (PyTorch) computes, for ``query (N, S, E)``,
``key``/``value (N, T, E)`` -- its ``S`` is our ``T`` (queries) and its ``T``
our ``S`` (keys) -- and ``H = num_heads``, ``d = E / H``::

    q = (query @ Wq + bq).reshape(N, S, H, d).transpose(0, 2, 1, 3)   # (N, H, S, d)
    k = (key @ Wk + bk).reshape(N, T, H, d).transpose(0, 2, 1, 3)     # (N, H, T, d)
    v = (value @ Wv + bv).reshape(N, T, H, d).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / sqrt(d)                    # (N, H, S, T)
    scores[..., attn_mask == 0] = -inf                                # attn_mask (S, T)
    attn = dropout(softmax(scores, axis=-1))                          # drop probability `dropout`
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(N, S, E) @ Wproj + bproj

(``nn.Linear`` stores ``W.T``; here ``W`` is ``(in, out)``.) This function is
the same computation, with these correspondences:

* head split: the projected width ``E = num_heads * head_dim`` is cut into
  ``num_heads`` consecutive blocks of ``head_dim`` columns, as the course's
  ``view(N, S, H, d)``;
* scaling: ``1 / sqrt(head_dim)`` (the default of
  :func:`~jaxlayers.layers.attention.dot_product_attention`);
* the mask: the course's ``attn_mask[i, j] == 0`` means query (target) ``i``
  must NOT attend to key (source) ``j``; ours is a boolean ``mask``
  broadcastable to ``(B, num_heads, T, S)`` with **True = attend**, so
  ``mask = attn_mask != 0`` (a ``(T, S)`` array broadcasts). A causal mask is
  ``is_causal=True`` (the course builds ``tril(ones(S, S))``);
* a query row with every key masked: the course's softmax of all ``-inf``
  gives NaN; here that row's output is ``bo`` (zero attention), with zero
  gradients;
* dropout: ``dropout_rate`` is the probability of DROPPING an attention
  probability (the course's ``nn.Dropout(p)``), with an explicit PRNG key.
  The dropped probabilities are not renormalised (as the course).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxlayers._checks import as_array, check_int, check_number, require, require_float, require_key, shape_of
from jaxlayers.layers.attention import dot_product_attention
from jaxlayers.layers.dropout import dropout
from jaxlayers.layers.temporal import temporal_affine

__all__ = ["MHA_PARAMS", "multi_head_attention"]

MHA_PARAMS = ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo")
"""The parameter names :func:`multi_head_attention` reads from its ``params`` mapping."""


def _check(query, key, value, params, num_heads, mask, dropout_rate, dropout_key):
    op = "multi_head_attention"
    query, key, value = as_array(query, op, "query"), as_array(key, op, "key"), as_array(value, op, "value")
    for name, arr in (("query", query), ("key", key), ("value", value)):
        require_float(arr, op, name)
        require(arr.ndim == 3, op, f"{name} must be 3-D (B, length, features), got shape {shape_of(arr)}")
    (b, t, dq), (bk, s, dk), (bv, sv, dv) = query.shape, key.shape, value.shape
    require(
        b == bk == bv and s == sv,
        op,
        f"query (B, T, Dq), key (B, S, Dk) and value (B, S, Dv) must agree on B and S, got query {query.shape}, "
        f"key {key.shape}, value {value.shape}",
    )
    require(isinstance(params, dict), op, f"params must be a dict with {list(MHA_PARAMS)}, got {type(params).__name__}")
    missing = [n for n in MHA_PARAMS if n not in params]
    require(not missing, op, f"params lack {missing} (needs {list(MHA_PARAMS)})")
    p = {n: as_array(params[n], op, f"params[{n!r}]") for n in MHA_PARAMS}
    num_heads = check_int(num_heads, op, "num_heads", minimum=1)
    e = p["Wq"].shape[-1] if p["Wq"].ndim == 2 else -1
    want = {
        "Wq": (dq, e),
        "bq": (e,),
        "Wk": (dk, e),
        "bk": (e,),
        "Wv": (dv, e),
        "bv": (e,),
        "Wo": (e, p["Wo"].shape[-1] if p["Wo"].ndim == 2 else -1),
    }
    want["bo"] = (want["Wo"][1],)
    for n, shape in want.items():
        require(
            tuple(p[n].shape) == shape,
            op,
            f"params[{n!r}] must have shape {shape} (query {query.shape}, key {key.shape}, value {value.shape}, "
            f"Wq {tuple(p['Wq'].shape)}), got {tuple(p[n].shape)}",
        )
    require(
        e % num_heads == 0,
        op,
        f"num_heads={num_heads} must divide the projected width E = Wq.shape[1] = {e}",
    )
    if mask is not None:
        mask = as_array(mask, op, "mask")
        require(mask.dtype == jnp.bool_, op, f"mask must be boolean (True = attend), got dtype {mask.dtype}", TypeError)
        try:
            jnp.broadcast_shapes(mask.shape, (b, num_heads, t, s))
        except ValueError:
            raise ValueError(
                f"{op}: mask of shape {mask.shape} does not broadcast to (B, num_heads, T, S) = {(b, num_heads, t, s)}"
            ) from None
    rate = check_number(dropout_rate, op, "dropout_rate", low=0.0, high=1.0, high_open=True)
    if rate > 0:
        require(dropout_key is not None, op, f"dropout_rate={rate} needs dropout_key (a PRNG key); test mode: rate 0")
        dropout_key = require_key(dropout_key, op, "dropout_key")
    return query, key, value, p, num_heads, mask, rate, dropout_key


def _probabilities(q, k, scale, mask, is_causal):
    """Softmax attention probabilities ``(B, N, T, S)``, at least float32 (a fully masked row: zeros)."""
    acc = jnp.promote_types(q.dtype, jnp.float32)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=acc) * scale
    t, s = logits.shape[-2:]
    allowed = jnp.ones(logits.shape, bool)
    if mask is not None:
        allowed = allowed & mask
    if is_causal:
        allowed = allowed & jnp.tril(jnp.ones((t, s), bool))
    logits = jnp.where(allowed, logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.where(allowed, jnp.exp(logits - m), 0.0)
    total = jnp.sum(w, axis=-1, keepdims=True)
    return w / jnp.where(total > 0, total, 1.0)


def multi_head_attention(
    query,
    key,
    value,
    params,
    *,
    num_heads: int,
    mask=None,
    is_causal: bool = False,
    dropout_rate: float = 0.0,
    dropout_key=None,
):
    """Multi-head attention (Vaswani et al. 2017): project, split into heads, attend, merge, project.

    Args:
      query: ``(B, T, Dq)`` floating.
      key: ``(B, S, Dk)`` floating (self-attention: ``key = value = query``).
      value: ``(B, S, Dv)`` floating.
      params: a dict with ``Wq (Dq, E)``, ``bq (E,)``, ``Wk (Dk, E)``, ``bk (E,)``, ``Wv (Dv, E)``,
        ``bv (E,)``, ``Wo (E, Do)``, ``bo (Do,)`` (:data:`MHA_PARAMS`); ``E = num_heads * head_dim``.
      num_heads: ``N >= 1``, dividing ``E``.
      mask: optional boolean, broadcastable to ``(B, N, T, S)``, **True = attend** (as
        ``jax.nn.dot_product_attention``; the course's ``attn_mask`` is ``mask = attn_mask != 0``).
      is_causal: query ``t`` attends to keys ``s <= t`` only (top-left aligned when ``T != S``).
      dropout_rate: probability of dropping each attention probability, in ``[0, 1)``; ``0``
        (default, and what test mode passes) uses the fused op. ``> 0`` forms the probabilities
        explicitly (``O(B N T S)`` memory, as the course) and needs ``dropout_key``.
      dropout_key: a PRNG key (``jax.random.key``), required when ``dropout_rate > 0``.

    Returns:
      ``(B, T, Do)``, in the promotion of the inputs' dtypes::

        q = query @ Wq + bq,  k = key @ Wk + bk,  v = value @ Wv + bv   (split into N heads of E/N)
        o_n = softmax(q_n k_n^T / sqrt(E/N), masked) v_n
        out = concat_n(o_n) @ Wo + bo

    A query row with every key masked gives ``o = 0`` (so ``out = bo``) and zero gradients.

    Backward: JAX composes the ops' hand-derived rules (:func:`jaxlayers.temporal_affine` for the
    projections, the attention op's blocked backward, :func:`jaxlayers.dropout`); with
    ``dropout_rate > 0`` the softmax and its products are differentiated by JAX.

    Raises:
      ValueError: inputs not 3-D or disagreeing on ``B``/``S``, missing or misshapen params,
        ``num_heads`` not dividing ``E``, a mask that does not broadcast, a rate outside ``[0, 1)``
        or without a key -- naming the argument and the shapes.
      TypeError: non-floating inputs, a non-boolean mask.
    """
    query, key, value, p, n, mask, rate, dkey = _check(
        query, key, value, params, num_heads, mask, dropout_rate, dropout_key
    )
    b, t, _ = query.shape
    s = key.shape[1]
    e = p["Wq"].shape[1]
    h = e // n
    q = temporal_affine(query, p["Wq"], p["bq"]).reshape(b, t, n, h)
    k = temporal_affine(key, p["Wk"], p["bk"]).reshape(b, s, n, h)
    v = temporal_affine(value, p["Wv"], p["bv"]).reshape(b, s, n, h)
    if rate == 0.0:
        o = dot_product_attention(q, k, v, mask=mask, is_causal=bool(is_causal))
    else:
        probs = _probabilities(q, k, 1.0 / math.sqrt(h), mask, bool(is_causal)).astype(v.dtype)
        probs = dropout(probs, dkey, rate=rate, train=True)
        o = jnp.einsum("bnts,bsnh->btnh", probs, v)
    return temporal_affine(o.reshape(b, t, e), p["Wo"], p["bo"])
