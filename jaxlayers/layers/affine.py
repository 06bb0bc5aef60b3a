"""Affine (fully connected) layer: ``out = x.reshape(N, D) @ w + b``.

Source of the maths: the NumPy original's ``affine_forward`` /
``affine_backward``.

Four parts, as every jaxlayers op:

* :func:`affine_reference` -- plain ``jnp``; ``jax.grad`` of it is the oracle.
* :func:`affine_fwd` -- ``(x, w, b) -> (out, residuals)``; the NumPy original's cache.
* :func:`affine_bwd` -- ``(residuals, g) -> (dx, dw, db)``; the NumPy original's backward.
* :func:`affine` -- the public op: checked, ``custom_vjp``, jit-compiled.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import as_array, compute_dtype, flat_features, require, require_float, require_rank, shape_of
from jaxlayers._oprule import custom_op

__all__ = ["affine", "affine_reference", "affine_fwd", "affine_bwd", "check_affine", "AffineResiduals"]


class AffineResiduals(NamedTuple):
    """What the backward pass keeps: the inputs ``(x, w, b)``, the NumPy original's cache.

    All three are the op's own arguments, alive anyway, so saving them costs no
    new memory; ``b`` is kept only for its dtype (``db`` just sums ``g``).
    """

    x: jax.Array
    w: jax.Array
    b: jax.Array


def _flatten(x: jax.Array) -> jax.Array:
    # Not ``reshape(N, -1)``: with N = 0 the -1 is ambiguous (ZeroDivisionError).
    return x.reshape(x.shape[0], flat_features(x.shape))


def affine_reference(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Plain-``jnp`` affine layer, differentiated by JAX (the oracle).

    The product and the bias add accumulate in :func:`compute_dtype` (float32
    for half-precision inputs) and the output is rounded once to the inputs'
    promoted dtype.
    """
    acc = compute_dtype(x, w, b)
    out = jnp.matmul(_flatten(x), w, preferred_element_type=acc) + b.astype(acc)
    return out.astype(jnp.result_type(x, w, b))


def affine_fwd(x: jax.Array, w: jax.Array, b: jax.Array) -> tuple[jax.Array, AffineResiduals]:
    """Forward pass: ``out = x.reshape(N, D) @ w + b``; residuals ``(x, w, b)``."""
    return affine_reference(x, w, b), AffineResiduals(x, w, b)


# Below this many multiply-adds the transposed copy in ``_xt_g`` costs more than it saves.
_TRANSPOSE_MIN_MACS = 1 << 20


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` accumulated in :func:`compute_dtype` (float32 for half inputs)."""
    return jnp.matmul(a, b, preferred_element_type=compute_dtype(a, b))


def _xt_g(x2: jax.Array, g: jax.Array) -> jax.Array:
    """``x2.T @ g`` for ``x2`` (N, D), ``g`` (N, M): the weight gradient.

    The product contracts the leading (batch) axis of both operands. XLA's CPU
    backend hands a matmul to its fast kernel library only when the left
    operand's contracted axis is its last, and runs this one ~20-30% slower
    (up to 4x for narrow ``M``) in a generic loop. So on CPU one operand is
    first written out transposed -- a cheap copy, kept from being folded back
    into the dot by an optimization barrier -- and the dot is the ordinary
    kind: ``x2.T @ g`` with ``x2.T`` copied, or, when ``g`` and the (D, M)
    result are together smaller than ``x2`` (a narrow layer: ``M`` << ``D``),
    ``(g.T @ x2).T`` with ``g.T`` and the product copied. Other platforms and
    small products use the dot as it is.
    """
    n, d = x2.shape
    m = g.shape[1]
    if n * d * m < _TRANSPOSE_MIN_MACS:
        return _mm(x2.T, g)
    if n * m + d * m < n * d:

        def cpu(x2, g):
            return lax.optimization_barrier(_mm(lax.optimization_barrier(g.T), x2)).T

    else:

        def cpu(x2, g):
            return _mm(lax.optimization_barrier(x2.T), g)

    return lax.platform_dependent(x2, g, cpu=cpu, default=lambda x2, g: _mm(x2.T, g))


def affine_bwd(residuals: AffineResiduals, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward pass (the NumPy original's ``affine_backward``).

    ``dx = (g @ w.T).reshape(x.shape)``, ``dw = x.reshape(N, D).T @ g``,
    ``db = sum_n g[n]``; each accumulated in :func:`compute_dtype` (float32
    for half-precision inputs) and cast to its primal's dtype once. (On CPU,
    ``x.T`` is materialised before the ``dw`` product; see ``_xt_g``.)
    """
    x, w, b = residuals
    dx = _mm(g, w.T).reshape(x.shape).astype(x.dtype)
    dw = _xt_g(_flatten(x), g).astype(w.dtype)
    db = jnp.sum(g, axis=0, dtype=compute_dtype(g)).astype(b.dtype)
    return dx, dw, db


_affine = custom_op(affine_reference, affine_fwd, affine_bwd)


def check_affine(x, w, b):
    """``(x, w, b)`` as arrays, or the error :func:`affine` raises (see its Raises)."""
    op = "affine"
    x, w, b = as_array(x, op, "x"), as_array(w, op, "w"), as_array(b, op, "b")
    for name, arr in (("x", x), ("w", w), ("b", b)):
        require_float(arr, op, name)
    require_rank(x, op, "x", min_rank=2)
    require_rank(w, op, "w", rank=2)
    xs, ws, bs = shape_of(x), shape_of(w), shape_of(b)
    d = flat_features(xs)
    require(
        ws[0] == d,
        op,
        f"w has {ws[0]} rows but x flattens to {d} features (x shape {xs}, w shape {ws})",
    )
    require(bs == (ws[1],), op, f"b must have shape ({ws[1]},) to match w's {ws[1]} columns, got {bs}")
    return x, w, b


def affine(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Affine (fully connected) layer with a hand-derived backward pass.

    Args:
      x: inputs, shape ``(N, d1, ..., dk)``, floating dtype. Each example is
        flattened to ``D = d1 * ... * dk`` features, as the NumPy original does.
      w: weights, shape ``(D, M)``.
      b: biases, shape ``(M,)``.

    Returns:
      ``out = x.reshape(N, D) @ w + b``, shape ``(N, M)``, dtype the promotion
      of the inputs' dtypes (accumulated in float32 for bfloat16/float16).
      An empty batch (N = 0) gives an empty ``(0, M)`` output; its gradients
      are an empty ``dx``, ``dw = 0`` and ``db = 0``.

    Raises:
      ValueError: at trace time, if ``x`` has rank < 2, ``w`` is not 2-D,
        ``w.shape[0] != D`` or ``b.shape != (M,)``; the message names the
        argument and the shapes seen.
      TypeError: if an argument is not floating point, or is neither an
        array nor a (nested) list of numbers. Lists and NumPy scalars are
        accepted and converted with ``jnp.asarray`` before tracing.

    Backward (``custom_vjp``), for cotangent ``g`` of shape ``(N, M)``::

        dx = (g @ w.T).reshape(x.shape)     # (N, d1, ..., dk)
        dw = x.reshape(N, D).T @ g          # (D, M)
        db = g.sum(axis=0)                  # (M,)

    Each product and sum accumulates in float32 for half-precision inputs
    (``preferred_element_type``) and is cast to its primal's dtype once.
    Residuals: ``(x, w, b)``, the op's own arguments (no new memory).

    Source: the NumPy original's ``affine_forward`` / ``affine_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.affine(jnp.ones((2, 3, 4)), jnp.ones((12, 5)), jnp.zeros(5)).shape
      (2, 5)
    """
    x, w, b = check_affine(x, w, b)
    return _affine(x, w, b)
