"""Word embedding: ``out[n, t] = W[x[n, t]]``, a lookup of rows of ``W``.

Source of the maths: the NumPy original's ``word_embedding_forward`` /
``word_embedding_backward`` (its recurrent-network layers).

Four parts, as every jaxlayers op:

* :func:`word_embedding_reference` -- plain ``jnp``; ``jax.grad`` of it is the oracle.
* :func:`word_embedding_fwd` -- ``(x, W) -> (out, residuals)``; residuals: the indices only.
* :func:`word_embedding_bwd` -- ``(residuals, g) -> (dW,)``: a scatter-add of ``g`` into the rows.
* :func:`word_embedding` -- the public op: checked, ``custom_vjp``, jit-compiled.

Out-of-range indices (outside ``[0, V)``, negative ones included -- they do
NOT wrap around as NumPy's ``W[-1]`` would): an eager call raises
``ValueError``; under ``jit`` the indices cannot be inspected, so their output
rows are NaN (never a silently valid row: plain ``W[x]`` indexing would clamp)
and they send no gradient to ``W``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import (
    as_array,
    as_index_labels,
    require,
    require_float,
    require_rank,
    shape_of,
    stats_dtype,
)
from jaxlayers._oprule import custom_op

__all__ = [
    "word_embedding",
    "word_embedding_reference",
    "word_embedding_fwd",
    "word_embedding_bwd",
    "check_word_embedding",
    "WordEmbeddingResiduals",
]


class WordEmbeddingResiduals(NamedTuple):
    """What the backward pass keeps: the indices ``x`` (widened to int32/int64) and ``W_like``, an
    empty ``(V, 0)`` array carrying ``W``'s row count and dtype (no copy of ``W``: ``dW`` does not
    depend on its values)."""

    x: jax.Array
    W_like: jax.Array


def _lookup(x: jax.Array, W: jax.Array) -> jax.Array:
    """``W[x]`` for in-range indices, NaN rows for the others."""
    v = W.shape[0]
    x = as_index_labels(x)
    valid = (x >= 0) & (x < v)
    rows = jnp.take(W, jnp.clip(x, 0, v - 1), axis=0)
    return jnp.where(valid[..., None], rows, jnp.full((), jnp.nan, W.dtype))


def word_embedding_reference(x: jax.Array, W: jax.Array) -> jax.Array:
    """Plain-``jnp`` lookup ``W[x]`` (NaN rows for out-of-range indices), differentiated by JAX."""
    return _lookup(x, W)


def word_embedding_fwd(x: jax.Array, W: jax.Array) -> tuple[jax.Array, WordEmbeddingResiduals]:
    """Forward pass: ``out = W[x]``, shape ``(N, T, D)``; residuals the indices and an empty ``W_like``."""
    return _lookup(x, W), WordEmbeddingResiduals(as_index_labels(x), jnp.zeros((W.shape[0], 0), W.dtype))


def word_embedding_bwd(residuals: WordEmbeddingResiduals, g: jax.Array) -> tuple[jax.Array]:
    """Backward pass (the NumPy original's ``word_embedding_backward``): ``(dW,)``.

    ``dW[v] = sum over (n, t) with x[n, t] == v of g[n, t]``: a scatter-add
    (``np.add.at`` in the NumPy original, ``.at[].add`` here), accumulated in
    float32 for half-precision ``g`` and cast to ``W``'s dtype once.
    Out-of-range indices add nothing. The integer indices get no cotangent.
    """
    x, W_like = residuals
    v, dtype = W_like.shape[0], W_like.dtype
    d = g.shape[-1]
    acc = stats_dtype(dtype)
    target = jnp.where((x >= 0) & (x < v), x, v).reshape(-1)  # v: out of bounds, dropped
    dW = jnp.zeros((v, d), acc).at[target].add(g.reshape(target.shape[0], d).astype(acc), mode="drop")
    return (dW.astype(dtype),)


_word_embedding = custom_op(word_embedding_reference, word_embedding_fwd, word_embedding_bwd, nondiff=("x",))


def check_word_embedding(x, W):
    """``(x, W)`` as arrays, or the error :func:`word_embedding` raises (see its Raises)."""
    op = "word_embedding"
    x, W = as_array(x, op, "x"), as_array(W, op, "W")
    dtype = jnp.result_type(x)
    require(
        jnp.issubdtype(dtype, jnp.integer),
        op,
        f"x must have an integer dtype (word indices), got {dtype} (shape {shape_of(x)})",
        TypeError,
    )
    require_float(W, op, "W")
    require_rank(x, op, "x", rank=2)
    require_rank(W, op, "W", rank=2)
    v = shape_of(W)[0]
    require(v >= 1, op, f"W must hold at least one row (a vocabulary of V >= 1 words), got shape {shape_of(W)}")
    if not isinstance(x, jax.core.Tracer):
        xs = np.asarray(x)
        if xs.size:
            lo, hi = int(xs.min()), int(xs.max())
            require(
                lo >= 0 and hi < v,
                op,
                f"x holds indices in [{lo}, {hi}] but W has {v} rows (shape {shape_of(W)}); "
                f"indices must lie in [0, {v})",
            )
    return x, W


def word_embedding(x: jax.Array, W: jax.Array) -> jax.Array:
    """Word embedding (a table lookup) with a hand-derived backward pass.

    Args:
      x: word indices, shape ``(N, T)``, any integer dtype, each in ``[0, V)``.
      W: the embedding table, shape ``(V, D)``, floating dtype; row ``v`` is word ``v``'s vector.

    Returns:
      ``out[n, t] = W[x[n, t]]``, shape ``(N, T, D)``, ``W``'s dtype. ``N = 0``
      or ``T = 0`` give an empty output (and ``dW = 0``).

    Raises:
      ValueError: ``x`` not 2-D, ``W`` not 2-D or with no rows, or (eagerly)
        indices outside ``[0, V)``; the message names the range seen. Under
        ``jit`` the indices are traced values and cannot be checked: an
        out-of-range index (negative ones included: no wrap-around) gives a
        row of NaN and adds nothing to ``dW``.
      TypeError: non-integer ``x``, non-floating ``W``, or an argument that is
        neither an array nor a (nested) list of numbers.

    Backward (``custom_vjp``), for cotangent ``g`` of shape ``(N, T, D)``::

        dW = zeros((V, D)); dW.at[x].add(g)      # scatter-add: repeated words sum

    The integer indices get no cotangent (``jax.grad`` with respect to ``x``
    is refused by JAX, as for any integer input). Accumulated in float32 for
    half-precision ``W``, cast to ``W``'s dtype once. Residuals: the indices
    only (no copy of ``W`` or of the output).

    Source: the NumPy original's ``word_embedding_forward`` / ``word_embedding_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> W = jnp.arange(6.0).reshape(3, 2)
      >>> jl.word_embedding(jnp.array([[2, 0]]), W)
      Array([[[4., 5.],
              [0., 1.]]], dtype=float32)
    """
    x, W = check_word_embedding(x, W)
    return _word_embedding(x, W)
