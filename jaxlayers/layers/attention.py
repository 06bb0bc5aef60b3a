"""Scaled dot-product attention with the FlashAttention-2 backward: O(T) residuals, not O(T S).

``jl.dot_product_attention`` takes the arguments, layouts and mask semantics of
``jax.nn.dot_product_attention``. Autodiff of ``softmax(q k^T) v`` keeps the
whole ``(B, N, T, S)`` probability matrix for the backward pass; this op keeps
the inputs, the output and one log-sum-exp per query row, and recomputes the
probabilities block by block in the backward pass (Dao, "FlashAttention-2",
2023, algorithms 1 and 2), written with ``lax`` loops over blocks of queries and
keys (and, for long sequences, over the batch and key/value heads, one at a time).

Four parts, as every jaxlayers op:

* :func:`dot_product_attention_reference` -- plain ``jnp``, keeps the
  probability matrix; ``jax.grad`` of it is the oracle.
* :func:`dot_product_attention_fwd` -- ``-> (out, residuals)``: the blocked
  forward pass with the online softmax; residuals
  :class:`AttentionResiduals`.
* :func:`dot_product_attention_bwd` -- ``(residuals, g) -> (dq, dk, dv,
  dbias)``: the blocked backward pass.
* :func:`dot_product_attention` -- the public op: checked, ``custom_vjp``,
  jit-compiled.

Notation (``jax.nn``'s): ``B`` batch, ``T`` queries, ``S`` keys/values, ``N``
query heads, ``K`` key/value heads (``N = K G``: grouped-query attention), ``H``
head dimension.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlayers._checks import as_array, require, require_bool, require_float, shape_of
from jaxlayers._oprule import custom_op

__all__ = [
    "dot_product_attention",
    "dot_product_attention_reference",
    "dot_product_attention_fwd",
    "dot_product_attention_bwd",
    "check_dot_product_attention",
    "AttentionResiduals",
    "attention_block_sizes",
]

_OP = "dot_product_attention"


# --------------------------------------------------------------------------- the reference


def _acc_dtype(query) -> jnp.dtype:
    """Logits, softmax and every product in at least float32 (float64 stays float64)."""
    return jnp.promote_types(query.dtype, jnp.float32)


def _keep_mask(mask, is_causal: bool, t: int, s: int):
    """The boolean ``keep`` broadcastable to ``(B, N, T, S)`` (None: keep all): ``mask`` and, when
    causal, ``key <= query`` (``jnp.tril(ones((T, S)))``, jax.nn's top-left alignment)."""
    keep = mask
    if is_causal:
        causal = jnp.arange(s)[None, :] <= jnp.arange(t)[:, None]
        keep = causal if keep is None else jnp.logical_and(keep, causal)
    return keep


def dot_product_attention_reference(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False):
    """Plain ``jnp`` attention that keeps the ``(B, N, T, S)`` probability matrix (the oracle).

    ``logits = scale q k^T + bias`` in :func:`_acc_dtype` (float32 for half inputs), masked
    logits set to ``-inf``, then a softmax whose fully masked rows are all zeros (the maximum is
    taken over the kept logits only, and a row sum of 0 is divided by 1), and ``out = p v`` rounded
    once to the inputs' dtype. Takes the public op's shapes (4-D ``query``, ``key``, ``value``;
    ``bias`` and ``mask`` 4-D, broadcastable to ``(B, N, T, S)``).
    """
    b, t, n, h = query.shape
    s, k = key.shape[1], key.shape[2]
    g = n // k
    acc = _acc_dtype(query)
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    q = query.astype(acc).reshape(b, t, k, g, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", q, key.astype(acc)) * jnp.asarray(scale, acc)
    logits = logits.reshape(b, n, t, s)
    if bias is not None:
        logits = logits + bias.astype(acc)
    keep = _keep_mask(mask, is_causal, t, s)
    if keep is not None:
        logits = jnp.where(keep, logits, -jnp.inf)
    m = lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.exp(logits - m)
    den = jnp.sum(e, axis=-1, keepdims=True)
    p = e / jnp.where(den > 0, den, 1.0)
    out = jnp.einsum("bkgts,bskh->btkgh", p.reshape(b, k, g, t, s), value.astype(acc))
    return out.reshape(b, t, n, h).astype(query.dtype)


# --------------------------------------------------------------------------- blocks

#: Blocks ``(queries, keys, per_head)`` forced by :func:`attention_block_sizes` (None: by size).
_FORCED_BLOCKS: list[tuple[int | None, int | None, bool | None]] = [(None, None, None)]


@contextlib.contextmanager
def attention_block_sizes(block_q: int | None = None, block_k: int | None = None, per_head: bool | None = None):
    """Force the query and key block sizes of :func:`dot_product_attention` calls traced inside.

    For tests (several blocks on small inputs, ``S`` not a multiple of the block) and tuning; the
    defaults are chosen from ``T`` and ``S`` (see :func:`_default_blocks`). ``None`` keeps the
    default for that axis. A block larger than the axis is clipped to it. ``per_head`` True runs
    the blocks of one (batch, key/value head) pair at a time, in a loop over the ``B K`` pairs;
    False runs every pair in each block's products; None: by size.
    """
    for name, v in (("block_q", block_q), ("block_k", block_k)):
        require(v is None or (isinstance(v, int) and v >= 1), _OP, f"{name} must be an int >= 1, got {v!r}")
    require(per_head is None or isinstance(per_head, bool), _OP, f"per_head must be a bool or None, got {per_head!r}")
    _FORCED_BLOCKS.append((block_q, block_k, per_head))
    try:
        yield
    finally:
        _FORCED_BLOCKS.pop()


def _default_blocks(t: int, s: int) -> tuple[int, int, bool]:
    """Default ``(block_q, block_k, per_head)`` for ``T`` queries and ``S`` keys, tuned on a 2-core
    CPU (``python -m bench.attention``): one block of every head while ``T S <= 128 * 128``; from
    ``T S >= 256 * 256`` (:data:`PER_HEAD_MIN`) one (batch, key/value head) pair at a time, in
    blocks of at most 512 queries x 512 keys (a 1 MiB float32 logits block that stays in the L2
    cache, with long products); in between, every head at once in blocks of at most 64 queries and
    512 keys. Each axis is split into blocks of equal size (``S = 768``: two blocks of 384, not
    512 and a padded 256: padding costs its share of every product and a masking pass over every
    block)."""
    if t * s <= 128 * 128:  # the whole T x S matrix per head is small: one block, no loop
        return t, s, False
    if t * s >= PER_HEAD_MIN:
        return _even(t, PER_HEAD_BLOCKS[0]), _even(s, PER_HEAD_BLOCKS[1]), True
    return _even(t, 64 if t <= 1024 else 128), _even(s, 512), False


#: From this ``T S`` on, the default blocks run one (batch, key/value head) pair at a time.
PER_HEAD_MIN = 256 * 256
#: The largest default blocks ``(queries, keys)`` of one head (times ``G`` query heads per key/value head).
PER_HEAD_BLOCKS = (512, 512)


def _even(length: int, most: int) -> int:
    """The size of ``ceil(length / most)`` blocks as equal as can be that cover ``length``."""
    return _ceil_div(length, _ceil_div(length, most))


def _blocks(t: int, s: int) -> tuple[int, int, bool]:
    """The blocks ``(bq, bk, per_head)`` for ``T`` queries and ``S`` keys: the defaults, or those forced."""
    bq, bk, ph = _default_blocks(t, s)
    fq, fk, fph = _FORCED_BLOCKS[-1]
    return max(1, min(t, fq or bq)), max(1, min(s, fk or bk)), ph if fph is None else fph


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _to_rows(x, k: int):
    """``(B, L, N, H) -> (B, K, L G, H)``: per key/value head, one row per (position, group member),
    row ``l G + g`` (``N = K G``; a free reshape when ``K = 1`` or ``G = 1``)."""
    b, length, n, h = x.shape
    return x.reshape(b, length, k, n // k, h).transpose(0, 2, 1, 3, 4).reshape(b, k, length * (n // k), h)


def _grouped(a, k: int):
    """A bias or mask broadcastable to ``(B, N, T, S)`` as ``(B', K', T', G', S')`` (each 1 or full)."""
    if a is None:
        return None
    b, n, t, s = a.shape
    if n == 1:
        return a.reshape(b, 1, t, 1, s)
    return a.reshape(b, k, n // k, t, s).transpose(0, 1, 3, 2, 4)


def _pad_axis(x, axis: int, size: int, value=0):
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _block(a, t0, bq: int, s0, bk: int):
    """Queries ``t0:t0+bq`` and keys ``s0:s0+bk`` of a grouped bias/mask (size-1 axes kept)."""
    if a is None:
        return None
    if a.shape[2] != 1:
        a = lax.dynamic_slice_in_dim(a, t0, bq, axis=2)
    if a.shape[4] != 1:
        a = lax.dynamic_slice_in_dim(a, s0, bk, axis=4)
    return a


def _slice(x, start, size: int, axis: int):
    return lax.dynamic_slice_in_dim(x, start, size, axis=axis)


class _Plan(NamedTuple):
    """Static sizes of one call: ``t, s`` real lengths, ``g`` query heads per key/value head, ``bq, bk``
    the blocks (queries, keys), ``nq, nk`` their counts."""

    t: int
    s: int
    g: int
    bq: int
    bk: int
    nq: int
    nk: int
    causal: bool
    per_head: bool = False

    @property
    def tp(self) -> int:
        return self.nq * self.bq

    @property
    def sp(self) -> int:
        return self.nk * self.bk

    @property
    def rq(self) -> int:
        """Rows of one query block: ``bq`` queries times ``G`` heads."""
        return self.bq * self.g

    def key_blocks(self, i):
        """Key blocks ``[0, n)`` query block ``i`` sees: all, or (causal) those up to its last query."""
        if not self.causal:
            return self.nk
        if isinstance(i, int):
            return min(self.nk, (min((i + 1) * self.bq, self.t) - 1) // self.bk + 1)
        last = jnp.minimum((i + 1) * self.bq, self.t) - 1
        return jnp.minimum(self.nk, last // self.bk + 1)

    def first_query_block(self, j):
        """The first query block that sees key block ``j``: 0, or (causal) the one holding query ``j bk``."""
        return (j * self.bk) // self.bq if self.causal else 0


def _plan(t: int, s: int, g: int, causal: bool, blocks: tuple | None) -> _Plan:
    """``blocks``: ``(bq, bk)`` or ``(bq, bk, per_head)`` (static), or None for :func:`_blocks`."""
    if blocks is None:
        blocks = _blocks(t, s)
    bq, bk = max(1, min(t, blocks[0])), max(1, min(s, blocks[1]))
    per_head = bool(blocks[2]) if len(blocks) > 2 else False
    return _Plan(t, s, g, bq, bk, _ceil_div(t, bq), _ceil_div(s, bk), causal, per_head)


def _lane(x, idx, nkh: int):
    """Lane ``idx`` (batch ``idx // K``, key/value head ``idx % K``) of ``x (B|1, K|1, ...)``, as
    ``(1, 1, ...)`` (an axis of size 1 is broadcast: index 0)."""
    if x is None:
        return None
    start = (idx // nkh if x.shape[0] > 1 else 0, idx % nkh if x.shape[1] > 1 else 0) + (0,) * (x.ndim - 2)
    return lax.dynamic_slice(x, start, (1, 1, *x.shape[2:]))


def _put_lane(buf, x, idx, nkh: int, *, add: bool = False):
    """``buf`` with lane ``idx`` set to (``add``: increased by) ``x (1, 1, ...)``; see :func:`_lane`."""
    if buf is None:
        return None
    start = (idx // nkh if buf.shape[0] > 1 else 0, idx % nkh if buf.shape[1] > 1 else 0) + (0,) * (buf.ndim - 2)
    if add:
        x = lax.dynamic_slice(buf, start, x.shape) + x
    return lax.dynamic_update_slice(buf, x, start)


def _masked(plan: _Plan, s, bias, mask, i, j, *, keys_first: bool):
    """The logits block ``s`` plus bias, with masked entries (the mask, causal, padded keys) ``-inf``.

    ``s`` is ``(B, K, bq G, bk)`` or, ``keys_first``, ``(B, K, bk, bq G)``; ``bias`` and ``mask``
    are grouped ``(B', K', T', G', S')``.
    """
    need_iota = plan.causal or plan.sp > plan.s
    if bias is None and mask is None and not need_iota:
        return s
    t0, s0 = i * plan.bq, j * plan.bk
    b, k = s.shape[:2]
    # View the rows as (bq, G) and order the axes (B, K, bq, G, bk), or (B, K, bk, bq, G).
    perm = (0, 1, 4, 2, 3) if keys_first else (0, 1, 2, 3, 4)
    s5 = s.reshape((b, k, plan.bk, plan.bq, plan.g) if keys_first else (b, k, plan.bq, plan.g, plan.bk))
    if bias is not None:
        s5 = s5 + _block(bias, t0, plan.bq, s0, plan.bk).transpose(perm)
    keep = None if mask is None else _block(mask, t0, plan.bq, s0, plan.bk).transpose(perm)
    if need_iota:
        shape = (plan.bk, plan.bq, 1) if keys_first else (plan.bq, 1, plan.bk)
        q_axis, k_axis = (1, 0) if keys_first else (0, 2)
        cols = s0 + lax.broadcasted_iota(jnp.int32, shape, k_axis)
        extra = cols < plan.s
        if plan.causal:
            extra = jnp.logical_and(extra, cols <= t0 + lax.broadcasted_iota(jnp.int32, shape, q_axis))
        keep = extra if keep is None else jnp.logical_and(keep, extra)
    if keep is not None:
        s5 = jnp.where(keep, s5, -jnp.inf)
    return s5.reshape(s.shape)


# --------------------------------------------------------------------------- forward


class AttentionResiduals(NamedTuple):
    """What :func:`dot_product_attention_bwd` keeps: the arguments (alive anyway), the output
    ``out (B, T, N, H)`` and one log-sum-exp per query row and head, ``lse (B, K, T G)`` (row
    ``t G + g`` for query ``t`` and head ``k G + g``), both in the compute dtype -- float32 (float64
    for float64 inputs; for bfloat16/float16 inputs ``out`` is the unrounded float32 output, twice
    the returned output's bytes): ``4 B N T`` new bytes besides the output, never ``B N T S``.
    """

    query: jax.Array
    key: jax.Array
    value: jax.Array
    bias: jax.Array | None
    mask: jax.Array | None
    out: jax.Array
    lse: jax.Array


class _Setup(NamedTuple):
    """What the forward and the backward pass both start from (:func:`_setup`)."""

    plan: _Plan
    acc: jnp.dtype  # the compute dtype
    scale: float
    q: jax.Array  # (B, K, Tp G, H), times scale
    k: jax.Array  # (B, K, Sp, H)
    v: jax.Array  # (B, K, Sp, H)
    bias: jax.Array | None  # grouped (B', K', T'|Tp, G', S'|Sp)
    mask: jax.Array | None  # grouped, as bias


def _setup(query, key, value, bias, mask, scale, is_causal: bool, blocks) -> _Setup:
    """The plan, the compute dtype, the scale (default ``1/sqrt(H)``) and the head-major, padded
    operands in the compute dtype: ``q`` times ``scale``, the bias/mask grouped and padded."""
    _, t, n, h = query.shape
    s, nkh = key.shape[1], key.shape[2]
    acc = _acc_dtype(query)
    scale = 1.0 / math.sqrt(h) if scale is None else scale
    plan = _plan(t, s, n // nkh, is_causal, blocks)
    q = _pad_axis(_to_rows(query.astype(acc) * jnp.asarray(scale, acc), nkh), 2, plan.tp * plan.g)
    k = _pad_axis(key.astype(acc).transpose(0, 2, 1, 3), 2, plan.sp)
    v = _pad_axis(value.astype(acc).transpose(0, 2, 1, 3), 2, plan.sp)
    bias, mask = _grouped(bias, nkh), _grouped(mask, nkh)
    if bias is not None:
        bias = _pad_axis(_pad_axis(bias.astype(acc), 2, plan.tp), 4, plan.sp)
    if mask is not None:
        mask = _pad_axis(_pad_axis(mask, 2, plan.tp, False), 4, plan.sp, False)
    return _Setup(plan, acc, scale, q, k, v, bias, mask)


def _unrows(x, plan: _Plan):
    """``(B, K, Tp G, H) -> (B, T, K G, H)``."""
    b, k, _, h = x.shape
    x = x.reshape(b, k, plan.tp, plan.g, h)[:, :, : plan.t]
    return x.transpose(0, 2, 1, 3, 4).reshape(b, plan.t, k * plan.g, h)


def _forward(query, key, value, bias, mask, scale, is_causal, blocks):
    """``(out (B, T, N, H), lse (B, K, T G))``: FlashAttention-2's forward (algorithm 1)."""
    plan, acc, _, q, k, v, bias, mask = _setup(query, key, value, bias, mask, scale, is_causal, blocks)
    b, nkh = k.shape[:2]
    if not plan.per_head:
        o, lse = _forward_blocks(plan, acc, q, k, v, bias, mask)
    else:

        def lane(idx, carry):
            o_all, lse_all = carry
            args = (_lane(a, idx, nkh) for a in (q, k, v, bias, mask))
            o, lse = _forward_blocks(plan, acc, *args)
            return _put_lane(o_all, o, idx, nkh), _put_lane(lse_all, lse, idx, nkh)

        init = (jnp.zeros(q.shape, acc), jnp.zeros(q.shape[:3], acc))
        o, lse = lax.fori_loop(0, b * nkh, lane, init)
    return _unrows(o, plan), lse[:, :, : plan.t * plan.g]


def _forward_blocks(plan: _Plan, acc, q, k, v, bias, mask):
    """The blocked forward pass over every lane of ``q (B, K, Tp G, H)`` (padded ``(o, lse)``)."""
    b, nkh, _, h = k.shape

    def query_block(i):
        q_i = _slice(q, i * plan.rq, plan.rq, 2)

        def step(j, carry):
            m, rsum, o = carry
            k_j, v_j = _slice(k, j * plan.bk, plan.bk, 2), _slice(v, j * plan.bk, plan.bk, 2)
            s_ij = _masked(plan, jnp.einsum("bkrh,bksh->bkrs", q_i, k_j), bias, mask, i, j, keys_first=False)
            m_new = jnp.maximum(m, jnp.max(s_ij, axis=-1))
            m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # a row with nothing kept yet
            p = jnp.exp(s_ij - m_safe[..., None])
            alpha = jnp.exp(m - m_safe)
            rsum = alpha * rsum + jnp.sum(p, axis=-1)
            o = alpha[..., None] * o + jnp.einsum("bkrs,bksh->bkrh", p, v_j)
            return m_new, rsum, o

        shape = (b, nkh, plan.rq)
        init = (jnp.full(shape, -jnp.inf, acc), jnp.zeros(shape, acc), jnp.zeros((*shape, h), acc))
        n_blocks = plan.key_blocks(i)
        if isinstance(n_blocks, int) and n_blocks == 1:
            m, rsum, o = step(0, init)
        else:
            m, rsum, o = lax.fori_loop(0, n_blocks, step, init)
        kept = rsum > 0
        l_safe = jnp.where(kept, rsum, 1.0)
        o = o / l_safe[..., None]
        # A fully masked row: out 0, lse +inf (so the backward's exp(s - lse) is 0 there).
        lse = jnp.where(kept, m + jnp.log(l_safe), jnp.inf)
        return o, lse

    if plan.nq == 1:
        o, lse = query_block(0)
    else:

        def outer(i, carry):
            o_all, lse_all = carry
            o, lse = query_block(i)
            o_all = lax.dynamic_update_slice_in_dim(o_all, o, i * plan.rq, axis=2)
            lse_all = lax.dynamic_update_slice_in_dim(lse_all, lse, i * plan.rq, axis=2)
            return o_all, lse_all

        rows = plan.tp * plan.g
        init = (jnp.zeros((b, nkh, rows, h), acc), jnp.zeros((b, nkh, rows), acc))
        o, lse = lax.fori_loop(0, plan.nq, outer, init)
    return o, lse


def dot_product_attention_fwd(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False, blocks=None):
    """Forward pass in blocks (FlashAttention-2's algorithm 1); residuals :class:`AttentionResiduals`.

    For each block of ``bq`` queries, a loop over blocks of ``bk`` keys carries the running row
    maximum ``m``, the running row sum ``l`` and the unnormalised output ``o``::

        s = scale q_i k_j^T + bias_ij   (masked: -inf)
        m' = max(m, rowmax(s));  p = exp(s - m');  a = exp(m - m')
        l = a l + rowsum(p);     o = a o + p v_j;  m = m'

    and at the end ``out_i = o / l``, ``lse_i = m + log l`` (a row with ``l = 0``, all masked:
    ``out_i = 0``, ``lse_i = +inf``). ``blocks = (bq, bk)`` or ``(bq, bk, per_head)`` (static;
    None: by size, :func:`_default_blocks`); ``per_head`` True: an outer loop over the ``B K``
    (batch, key/value head) pairs runs these loops for one pair at a time, False: each block's
    products take every pair at once.
    """
    out, lse = _forward(query, key, value, bias, mask, scale, is_causal, blocks)
    # The residual keeps the unrounded output: for half inputs D = rowsum(dO * out) from the rounded
    # output would be off by a rounding of out, which ds = p (dp - D) turns into an error of the size
    # of the gradient itself where the softmax saturates.
    return out.astype(query.dtype), AttentionResiduals(query, key, value, bias, mask, out, lse)


# --------------------------------------------------------------------------- backward


def dot_product_attention_bwd(res: AttentionResiduals, g, *, scale=None, is_causal=False, blocks=None):
    """Backward pass in blocks (FlashAttention-2's algorithm 2): ``(dq, dk, dv, dbias)``.

    With ``D = rowsum(dO * out)`` (one number per query row) and, per pair of a block of keys
    ``j`` (outer loop) and a block of queries ``i`` (inner loop)::

        s  = scale q_i k_j^T + bias_ij (masked: -inf);   p = exp(s - lse_i)
        dv_j += p^T dO_i          dp = dO_i v_j^T          ds = p * (dp - D_i)
        dk_j += scale ds^T q_i    dq_i += scale ds k_j     dbias_ij += ds

    (``dbias`` summed over the axes ``bias`` broadcasts along; None without a bias). ``dq`` is one
    buffer the inner loop adds into; ``dk_j``, ``dv_j`` are the outer loop's carry. The blocks are
    computed keys-first (``s^T = k_j q_i^T``, ``p^T``, ``ds^T`` of shape ``(bk, bq G)``) and ``dq``
    is accumulated transposed, ``dq_i^T += scale k_j^T ds^T`` into ``(B, K, H, T G)`` with ``k^T``
    transposed once, so that all five products take their operands as stored (XLA's CPU backend
    runs a product contracting the first axis of its left operand, ``ds^T`` for ``ds k``, at a
    third of the rate). ``blocks`` as :func:`dot_product_attention_fwd`'s (with ``per_head``, the
    outer loop over (batch, key/value head) pairs adds each pair's ``dbias`` into the broadcast
    ``dbias``). ``mask`` gets no cotangent.
    """
    query, key, value, bias, mask, out, lse = res
    plan, acc, scale, q, k, v, biasg, maskg = _setup(query, key, value, bias, mask, scale, is_causal, blocks)
    b, nkh = k.shape[:2]
    rows = plan.tp * plan.g
    do = _to_rows(g.astype(acc), nkh)
    delta = _pad_axis(jnp.sum(do * _to_rows(out.astype(acc), nkh), axis=-1), 2, rows)  # (B, K, Tp G)
    do = _pad_axis(do, 2, rows)
    lse = _pad_axis(lse, 2, rows, jnp.inf)  # padded query rows: p = 0
    want_dbias = bias is not None

    # dq is accumulated transposed, dq^T += k_j^T ds^T, (B, K, H, Tp G): a product whose operands are
    # both as stored (k^T is transposed once here); dq = ds k on the keys-first ds would contract the
    # first axis of ds, which XLA's CPU backend runs at a third of the rate of the other products. The
    # barriers keep XLA from folding the transposes back into the product.
    kt = lax.optimization_barrier(k.transpose(0, 1, 3, 2))
    if not plan.per_head:
        dq, dk, dv, dbias = _backward_blocks(plan, acc, q, k, kt, v, do, delta, lse, biasg, maskg, want_dbias)
    else:

        def lane(idx, carry):
            dq_all, dk_all, dv_all, dbias_all = carry
            args = (_lane(a, idx, nkh) for a in (q, k, kt, v, do, delta, lse, biasg, maskg))
            dq, dk, dv, dbias = _backward_blocks(plan, acc, *args, want_dbias)
            dq_all, dk_all, dv_all = (_put_lane(x, y, idx, nkh) for x, y in ((dq_all, dq), (dk_all, dk), (dv_all, dv)))
            return dq_all, dk_all, dv_all, _put_lane(dbias_all, dbias, idx, nkh, add=True)

        dbias = jnp.zeros(biasg.shape, acc) if want_dbias else None
        init = (jnp.zeros((*kt.shape[:3], rows), acc), jnp.zeros(k.shape, acc), jnp.zeros(v.shape, acc), dbias)
        dq, dk, dv, dbias = lax.fori_loop(0, b * nkh, lane, init)
    dq = lax.optimization_barrier(dq).transpose(0, 1, 3, 2)
    dq = _unrows(dq * jnp.asarray(scale, acc), plan).astype(query.dtype)
    dk = dk[:, :, : plan.s].transpose(0, 2, 1, 3).astype(key.dtype)
    dv = dv[:, :, : plan.s].transpose(0, 2, 1, 3).astype(value.dtype)
    if want_dbias:
        bt, bs = bias.shape[2:]
        dbias = dbias[:, :, :bt, :, :bs]  # (B', K', T', G', S')
        dbias = dbias.transpose(0, 1, 3, 2, 4).reshape(bias.shape).astype(bias.dtype)
    return dq, dk, dv, dbias


def _backward_blocks(plan: _Plan, acc, q, k, kt, v, do, delta, lse, biasg, maskg, want_dbias: bool):
    """The blocked backward pass over every lane of ``q (B, K, Tp G, H)``: ``(dq^T (B, K, H, Tp G),
    dk, dv (B, K, Sp, H), dbias)`` (unscaled ``dq^T``; ``dbias`` grouped as ``biasg``, or None)."""
    b, nkh, _, h = k.shape
    rows = q.shape[2]

    def key_block(j, dq, dbias):
        k_j, v_j = _slice(k, j * plan.bk, plan.bk, 2), _slice(v, j * plan.bk, plan.bk, 2)
        kt_j = _slice(kt, j * plan.bk, plan.bk, 3)

        def step(i, carry):
            dk_j, dv_j, dq, dbias = carry
            r0 = i * plan.rq
            q_i, do_i = _slice(q, r0, plan.rq, 2), _slice(do, r0, plan.rq, 2)
            st = _masked(plan, jnp.einsum("bksh,bkrh->bksr", k_j, q_i), biasg, maskg, i, j, keys_first=True)
            pt = jnp.exp(st - _slice(lse, r0, plan.rq, 2)[:, :, None, :])
            dv_j = dv_j + jnp.einsum("bksr,bkrh->bksh", pt, do_i)
            dpt = jnp.einsum("bksh,bkrh->bksr", v_j, do_i)
            dst = pt * (dpt - _slice(delta, r0, plan.rq, 2)[:, :, None, :])
            dk_j = dk_j + jnp.einsum("bksr,bkrh->bksh", dst, q_i)
            dq_i = _slice(dq, r0, plan.rq, 3) + jnp.einsum("bkhs,bksr->bkhr", kt_j, dst)
            dq = lax.dynamic_update_slice_in_dim(dq, dq_i, r0, axis=3)
            if want_dbias:
                dbias = _add_block(plan, dbias, dst, i, j)
            return dk_j, dv_j, dq, dbias

        zeros = jnp.zeros((b, nkh, plan.bk, h), acc)
        carry = (zeros, zeros, dq, dbias)
        if plan.nq == 1:
            return step(0, carry)
        return lax.fori_loop(plan.first_query_block(j), plan.nq, step, carry)

    dq = jnp.zeros((b, nkh, h, rows), acc)
    dbias = jnp.zeros(biasg.shape, acc) if want_dbias else None
    if plan.nk == 1:
        dk, dv, dq, dbias = key_block(0, dq, dbias)
    else:

        def outer(j, carry):
            dk, dv, dq, dbias = carry
            dk_j, dv_j, dq, dbias = key_block(j, dq, dbias)
            dk = lax.dynamic_update_slice_in_dim(dk, dk_j, j * plan.bk, axis=2)
            dv = lax.dynamic_update_slice_in_dim(dv, dv_j, j * plan.bk, axis=2)
            return dk, dv, dq, dbias

        zeros = jnp.zeros((b, nkh, plan.sp, h), acc)
        dk, dv, dq, dbias = lax.fori_loop(0, plan.nk, outer, (zeros, zeros, dq, dbias))
    return dq, dk, dv, dbias


def _add_block(plan: _Plan, dbias, dst, i, j):
    """``dbias[.., queries of block i, :, keys of block j] += ds``, summed over the axes ``dbias``
    has size 1 along; ``dst`` is the keys-first ``(B, K, bk, bq G)`` block."""
    b, k = dst.shape[:2]
    ds = dst.reshape(b, k, plan.bk, plan.bq, plan.g).transpose(0, 1, 3, 4, 2)  # (B, K, bq, G, bk)
    axes = tuple(a for a in range(5) if dbias.shape[a] == 1 and ds.shape[a] != 1)
    part = jnp.sum(ds, axis=axes, keepdims=True) if axes else ds
    t0 = i * plan.bq if dbias.shape[2] != 1 else 0
    s0 = j * plan.bk if dbias.shape[4] != 1 else 0
    start = (0, 0, t0, 0, s0)
    return lax.dynamic_update_slice(dbias, lax.dynamic_slice(dbias, start, part.shape) + part, start)


def _rule_signature(query, key, value, bias, mask, *, scale, is_causal, blocks):
    """:func:`dot_product_attention_reference` with the rule's signature (``blocks`` static, unused)."""
    return dot_product_attention_reference(query, key, value, bias, mask, scale=scale, is_causal=is_causal)


_rule_signature.__name__ = "dot_product_attention_reference"

_dot_product_attention = custom_op(
    _rule_signature,
    dot_product_attention_fwd,
    dot_product_attention_bwd,
    static=("scale", "is_causal", "blocks"),
    nondiff=("mask",),
)


# --------------------------------------------------------------------------- checks and the op


def _as_4d(x):
    """``jax.nn``'s ``_ensure_4d``: leading axes of size 1 up to rank 4."""
    return x.reshape((1,) * (4 - x.ndim) + tuple(x.shape)) if x.ndim < 4 else x


def check_dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False):
    """The arguments as :func:`dot_product_attention`'s rule takes them (4-D, ``scale`` a float),
    or the error it raises (see its Raises)."""
    op = _OP
    query, key, value = (as_array(a, op, name) for a, name in ((query, "query"), (key, "key"), (value, "value")))
    for arr, name in ((query, "query"), (key, "key"), (value, "value")):
        require_float(arr, op, name)
        require(
            arr.ndim in (3, 4),
            op,
            f"{name} must be 4-D (B, L, heads, H) or 3-D (L, heads, H), got shape {shape_of(arr)}",
        )
    qs, ks, vs = shape_of(query), shape_of(key), shape_of(value)
    query, key, value = _as_4d(query), _as_4d(key), _as_4d(value)
    b, t, n, h = query.shape
    require(
        query.dtype == key.dtype == value.dtype,
        op,
        f"query, key and value must have one dtype, got {query.dtype}, {key.dtype}, {value.dtype}",
        TypeError,
    )
    require(key.shape == value.shape, op, f"key and value must have one shape, got key {ks} and value {vs}")
    require(
        key.shape[0] == b and key.shape[3] == h,
        op,
        f"key must have query's batch size and head dimension: query {qs} is (B, T, N, H), key {ks} is (B, S, K, H)",
    )
    nkh = key.shape[2]
    require(
        nkh >= 1 and n % nkh == 0,
        op,
        f"the number of query heads N must be a multiple of the key/value heads K, got N = {n} (query {qs}) "
        f"and K = {nkh} (key {ks})",
    )
    s = key.shape[1]
    full = (b, n, t, s)
    if bias is not None:
        bias = as_array(bias, op, "bias")
        require_float(bias, op, "bias")
        bias = _check_broadcast(bias, "bias", full)
    if mask is not None:
        mask = as_array(mask, op, "mask")
        require(
            jnp.result_type(mask) == jnp.bool_,
            op,
            f"mask must be a boolean array (True = attend; pass additive masks as bias), got dtype "
            f"{jnp.result_type(mask)}",
            TypeError,
        )
        mask = _check_broadcast(mask, "mask", full)
    if scale is not None:
        require(
            isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool),
            op,
            f"scale must be a Python number or None, got {scale!r} of type {type(scale).__name__}",
            TypeError,
        )
        require(math.isfinite(float(scale)), op, f"scale must be finite, got {scale!r}")
        scale = float(scale)
    require_bool(is_causal, op, "is_causal")
    return query, key, value, bias, mask, scale, bool(is_causal)


def _check_broadcast(a, name: str, full: tuple[int, ...]):
    shape = shape_of(a)
    require(a.ndim <= 4, op=_OP, message=f"{name} must have at most 4 dimensions (B, N, T, S), got shape {shape}")
    a4 = _as_4d(a)
    ok = all(d in (1, f) for d, f in zip(a4.shape, full, strict=True))
    require(
        ok,
        _OP,
        f"{name} of shape {shape} does not broadcast to (B, N, T, S) = {full}; each axis must be 1 or full",
    )
    return a4


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False):
    r"""Scaled dot-product attention whose backward pass keeps O(T) memory (FlashAttention-2).

    Drop-in for ``jax.nn.dot_product_attention`` (same argument names, layouts and mask
    semantics)::

        out = softmax(scale q k^T + bias, masked) v

    Args:
      query: ``(B, T, N, H)`` (or unbatched ``(T, N, H)``), floating dtype.
      key: ``(B, S, K, H)`` (or ``(S, K, H)``), ``query``'s dtype; ``N`` a multiple of ``K``
        (grouped-query attention: query head ``n`` uses key/value head ``n // (N / K)``; ``K = 1``
        is multi-query attention).
      value: ``key``'s shape and dtype.
      bias: optional, added to the logits; floating, at most 4-D, broadcastable to
        ``(B, N, T, S)`` (missing leading axes are added; each axis 1 or full).
      mask: optional, boolean, broadcastable to ``(B, N, T, S)``; True = attend.
      scale: the logits' scale, a Python number; default ``1 / sqrt(H)``.
      is_causal: query ``t`` attends to keys ``s <= t`` (``jnp.tril(ones((T, S)))``, jax.nn's
        and PyTorch's top-left alignment: with ``T != S`` query 0 sees key 0 only, whatever
        ``S - T``; for a decoder step against a longer cache, pass the mask yourself). Combined
        with ``mask`` by AND.

    Returns:
      ``(B, T, N, H)`` (``(T, N, H)`` for unbatched input), ``query``'s dtype. The logits,
      softmax and both products run in float32 for bfloat16/float16 inputs (float64 for float64),
      the output is rounded once. A query row whose keys are all masked gets an output of zeros
      and zero gradients (see below).

    Raises:
      ValueError: at trace time, for a rank or shape that does not match the above (``N`` not a
        multiple of ``K``, a bias or mask that does not broadcast), a non-finite ``scale``; the
        message names the argument and the shapes seen.
      TypeError: for a non-floating ``query``/``key``/``value``/``bias``, differing dtypes of
        ``query``/``key``/``value``, a non-boolean ``mask``, a non-number ``scale`` or a
        non-bool ``is_causal``.

    Backward (``custom_vjp``, FlashAttention-2's algorithm 2): residuals are the arguments, the
    output (unrounded: float32 for half inputs) and one log-sum-exp per query row
    ``lse = m + log sum_s exp(s - m)`` (float32; float64 for float64 input): ``O(B N T)`` new
    bytes, where autodiff of the plain formula keeps the ``(B, N, T, S)`` probabilities. With ``P = exp(S - lse)`` recomputed block by block::

        D  = rowsum(dO * O)                     # one number per query row
        dV = P^T dO        dP = dO V^T          dS = P * (dP - D)
        dQ = scale dS K    dK = scale dS^T Q    dbias = dS (summed to bias's shape)

    ``mask`` gets no gradient. ``dbias`` is materialised at ``bias``'s (broadcast) shape.

    Fully masked rows (all keys masked, by ``mask``, causality, or a ``-inf`` bias): here the
    output row and its gradients are 0. ``jax.nn.dot_product_attention`` fills masked logits with
    a large finite negative number, so such a row gets the *mean* of all values (and a ``-inf``
    bias everywhere gives NaN); PyTorch's ``scaled_dot_product_attention`` gives NaN on some
    versions and backends and 0 on others. Masked logits are ``-inf`` in the float32 logits, never
    a half-precision constant, so no mask overflows in float16.

    Half precision: ``jax.nn`` rounds the probabilities to the input dtype before ``P V``; here
    they stay float32 (the result differs from ``jax.nn`` by about one bfloat16/float16 rounding).

    Blocks: queries and keys are processed in blocks whose default sizes depend on ``T`` and ``S``
    (one block when ``T S`` is small; from ``T S = 256 * 256`` on, one batch element and key/value
    head at a time, in blocks of up to 512 x 512); ``S`` or ``T`` not a multiple of the block is
    padded and the padding masked. :func:`attention_block_sizes` overrides them.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> q = jnp.ones((2, 5, 4, 8)); kv = jnp.ones((2, 7, 2, 8))
      >>> jl.dot_product_attention(q, kv, kv, is_causal=True).shape
      (2, 5, 4, 8)
    """
    query = as_array(query, _OP, "query")
    q_shape = shape_of(query)
    query, key, value, bias, mask, scale, is_causal = check_dot_product_attention(
        query, key, value, bias, mask, scale, is_causal
    )
    blocks = _blocks(query.shape[1], key.shape[1])
    out = _dot_product_attention(query, key, value, bias, mask, scale=scale, is_causal=is_causal, blocks=blocks)
    return out.reshape(q_shape)
