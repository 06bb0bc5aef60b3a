"""Temporal affine layer: one affine map applied at every time step, ``out[n, t] = x[n, t] @ w + b``.

Source of the maths: the NumPy original's ``temporal_affine_forward`` /
``temporal_affine_backward`` (its recurrent-network layers).

Four parts, as every jaxlayers op:

* :func:`temporal_affine_reference` -- plain ``jnp``; ``jax.grad`` of it is the oracle.
* :func:`temporal_affine_fwd` -- ``(x, w, b) -> (out, residuals)``; residuals: the inputs.
* :func:`temporal_affine_bwd` -- ``(residuals, g) -> (dx, dw, db)``.
* :func:`temporal_affine` -- the public op: checked, ``custom_vjp``, jit-compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlayers._checks import as_array, compute_dtype, require, require_float, require_rank, shape_of
from jaxlayers._oprule import custom_op
from jaxlayers.layers.affine import _mm, _xt_g

__all__ = [
    "temporal_affine",
    "temporal_affine_reference",
    "temporal_affine_fwd",
    "temporal_affine_bwd",
    "check_temporal_affine",
    "TemporalAffineResiduals",
]


class TemporalAffineResiduals(NamedTuple):
    """The inputs ``(x, w, b)``, the NumPy original's cache less its ``out``; all three are the op's
    own arguments (no new memory); ``b`` is kept only for its dtype."""

    x: jax.Array
    w: jax.Array
    b: jax.Array


def temporal_affine_reference(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Plain-``jnp`` ``x @ w + b`` over ``(N, T, D)``, accumulated in :func:`compute_dtype`."""
    acc = compute_dtype(x, w, b)
    out = jnp.matmul(x, w, preferred_element_type=acc) + b.astype(acc)
    return out.astype(jnp.result_type(x, w, b))


def temporal_affine_fwd(x: jax.Array, w: jax.Array, b: jax.Array) -> tuple[jax.Array, TemporalAffineResiduals]:
    """Forward pass: ``out = x @ w + b``, shape ``(N, T, M)``; residuals ``(x, w, b)``."""
    return temporal_affine_reference(x, w, b), TemporalAffineResiduals(x, w, b)


def temporal_affine_bwd(residuals: TemporalAffineResiduals, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward pass (the NumPy original's ``temporal_affine_backward``).

    With ``g`` of shape ``(N, T, M)`` and the ``N * T`` rows flattened:
    ``dx = g @ w.T``, ``dw = x.reshape(N T, D).T @ g.reshape(N T, M)``,
    ``db = g.sum((0, 1))``; accumulated in float32 for half precision and cast
    to each primal's dtype once.
    """
    x, w, b = residuals
    n, t, d = x.shape
    m = w.shape[1]
    dx = _mm(g, w.T).astype(x.dtype)
    dw = _xt_g(x.reshape(n * t, d), g.reshape(n * t, m)).astype(w.dtype)
    db = jnp.sum(g, axis=(0, 1), dtype=compute_dtype(g)).astype(b.dtype)
    return dx, dw, db


_temporal_affine = custom_op(temporal_affine_reference, temporal_affine_fwd, temporal_affine_bwd)


def check_temporal_affine(x, w, b):
    """``(x, w, b)`` as arrays, or the error :func:`temporal_affine` raises (see its Raises)."""
    op = "temporal_affine"
    x, w, b = as_array(x, op, "x"), as_array(w, op, "w"), as_array(b, op, "b")
    for name, arr in (("x", x), ("w", w), ("b", b)):
        require_float(arr, op, name)
    require_rank(x, op, "x", rank=3)
    require_rank(w, op, "w", rank=2)
    xs, ws, bs = shape_of(x), shape_of(w), shape_of(b)
    require(ws[0] == xs[2], op, f"w has {ws[0]} rows but x has D = {xs[2]} features (x shape {xs}, w shape {ws})")
    require(bs == (ws[1],), op, f"b must have shape ({ws[1]},) to match w's {ws[1]} columns, got {bs}")
    return x, w, b


def temporal_affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Temporal affine layer (one affine map at every time step) with a hand-derived backward pass.

    Args:
      x: inputs, shape ``(N, T, D)``, floating dtype.
      w: weights, shape ``(D, M)``.
      b: biases, shape ``(M,)``.

    Returns:
      ``out[n, t] = x[n, t] @ w + b``, shape ``(N, T, M)``, dtype the promotion
      of the inputs' dtypes (accumulated in float32 for bfloat16/float16).
      ``N = 0`` or ``T = 0`` give an empty output, with ``dw = 0``, ``db = 0``.

    Raises:
      ValueError: ``x`` not 3-D, ``w`` not 2-D, ``w.shape[0] != D`` or
        ``b.shape != (M,)``; the message names the argument and the shapes seen.
      TypeError: a non-floating argument, or one that is neither an array nor
        a (nested) list of numbers.

    Backward (``custom_vjp``), for cotangent ``g`` of shape ``(N, T, M)``::

        dx = g @ w.T                                    # (N, T, D)
        dw = x.reshape(N * T, D).T @ g.reshape(N * T, M)  # (D, M)
        db = g.sum(axis=(0, 1))                         # (M,)

    Residuals: ``(x, w, b)``, the op's own arguments.

    Source: the NumPy original's ``temporal_affine_forward`` / ``temporal_affine_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.temporal_affine(jnp.ones((2, 3, 4)), jnp.ones((4, 5)), jnp.zeros(5)).shape
      (2, 3, 5)
    """
    x, w, b = check_temporal_affine(x, w, b)
    return _temporal_affine(x, w, b)
