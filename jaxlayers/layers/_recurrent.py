"""Shared pieces of the recurrent ops (:mod:`~jaxlayers.layers.rnn`, :mod:`~jaxlayers.layers.lstm`,
:mod:`~jaxlayers.layers.gru`): argument checks, the stable nonlinearities, and the layout helpers of the
hoisted input projection.

Layout. The public ops are batch-major as the NumPy original: ``x (N, T, D)``, ``h (N, T, H)``. The scans
run time-major (``(T, N, ...)``): the input projection ``x @ Wx + b`` for all steps is one matmul before
the forward scan, and the weight gradients ``dWx = x^T dA``, ``dWh = h_prev^T dA`` and ``dx = dA Wx^T``
are one matmul each after the reverse scan, so that each scan step does only its one recurrent product.

Precision. Every recurrent op computes in :func:`~jaxlayers._checks.compute_dtype` of its arguments
(float32 for bfloat16/float16): the arguments are cast up once, the hidden and cell states are carried
and every gradient (the weight gradients summed over time included) is accumulated in that dtype, and
each result is rounded to its dtype once at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlayers._checks import as_array, compute_dtype, require, require_float, require_rank, shape_of
from jaxlayers.layers.affine import _xt_g


def sigmoid(a: jax.Array) -> jax.Array:
    """The logistic function ``1 / (1 + exp(-a))``, stable for every finite ``a``.

    ``jax.nn.sigmoid`` (``lax.logistic``) never forms ``exp(+|a|)``: ``sigmoid(-1e4) = 0`` and
    ``sigmoid(1e4) = 1``, no overflow and no NaN; its derivative is ``s (1 - s)``.
    """
    return jax.nn.sigmoid(a)


def upcast(*arrays: jax.Array) -> tuple[jnp.dtype, jnp.dtype, tuple[jax.Array, ...]]:
    """``(acc, out_dtype, arrays cast to acc)``: the compute dtype (at least float32) and the
    promoted dtype results are rounded to."""
    acc = compute_dtype(*arrays)
    out = jnp.result_type(*arrays)
    return acc, out, tuple(a.astype(acc) for a in arrays)


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` (operands already in the compute dtype)."""
    return jnp.matmul(a, b, preferred_element_type=a.dtype)


def project_inputs(x: jax.Array, Wx: jax.Array, b: jax.Array) -> jax.Array:
    """The hoisted input projection, time-major: ``xa[t] = x[:, t] @ Wx + b``, shape ``(T, N, K)``."""
    n, t, d = x.shape
    xt = jnp.swapaxes(x, 0, 1).reshape(t * n, d)
    return (mm(xt, Wx) + b).reshape(t, n, Wx.shape[1])


def weight_grads(x: jax.Array, dA: jax.Array, Wx: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """After the reverse scan: ``(dx, dWx, db)`` from ``dA (T, N, K)``, the gradient of the input
    projection: ``dx = dA Wx^T`` (batch-major), ``dWx = sum_t x_t^T dA_t``, ``db = sum_{t,n} dA``."""
    n, t, d = x.shape
    k = dA.shape[-1]
    dA2 = dA.reshape(t * n, k)
    xt = jnp.swapaxes(x, 0, 1).reshape(t * n, d)
    dWx = _xt_g(xt, dA2)  # x^T dA, with the CPU-friendly operand layout (see affine's _xt_g)
    dx = jnp.swapaxes(mm(dA2, Wx.T).reshape(t, n, d), 0, 1)
    db = jnp.sum(dA2, axis=0)
    return dx, dWx, db


def outer_sum(h_prev: jax.Array, dA: jax.Array) -> jax.Array:
    """``dWh = sum_t h_prev[t]^T dA[t]``: one ``(H, T N) @ (T N, K)`` matmul."""
    t, n, h = h_prev.shape
    return _xt_g(h_prev.reshape(t * n, h), dA.reshape(t * n, dA.shape[-1]))


def sequence_grads(x, h0, Wx, Wh, b, dXA, dHA, h_prev, dh0, acc) -> tuple[jax.Array, ...]:
    """``(dx, dh0, dWx, dWh, db)`` of a sequence op once its reverse scan gave ``dXA`` (the cotangent of
    the input projection ``x Wx + b``, ``(T, N, k H)``), ``dHA`` (of ``h_{t-1} Wh``) and ``dh0``: one matmul
    each for ``dx``, ``dWx``, ``dWh`` (:func:`weight_grads`, :func:`outer_sum`, accumulated in ``acc``),
    each cotangent in its argument's dtype."""
    dx, dWx, db = weight_grads(x.astype(acc), dXA, Wx.astype(acc))
    dWh = outer_sum(h_prev, dHA)
    return dx.astype(x.dtype), dh0.astype(h0.dtype), dWx.astype(Wx.dtype), dWh.astype(Wh.dtype), db.astype(b.dtype)


def check_recurrent(
    op: str,
    gates: int,
    x,
    h,
    Wx,
    Wh,
    b,
    *,
    sequence: bool,
    c=None,
    h_name: str = "h0",
    c_name: str = "c0",
):
    """The arguments of a recurrent op as arrays, or a ``TypeError`` / ``ValueError`` naming the
    argument and the shapes seen.

    ``gates`` is the number of ``H``-wide blocks of ``Wx``'s columns (1 for rnn, 4 for lstm, 3 for gru).
    ``sequence``: ``x`` is ``(N, T, D)`` (else ``(N, D)``); an empty sequence (``T = 0``) is refused.
    """
    named = [("x", x), (h_name, h), ("Wx", Wx), ("Wh", Wh), ("b", b)]
    if c is not None:
        named.append((c_name, c))
    arrays = []
    for name, a in named:
        a = as_array(a, op, name)
        require_float(a, op, name)
        arrays.append(a)
    x, h, Wx, Wh, b = arrays[:5]
    require_rank(x, op, "x", rank=3 if sequence else 2)
    require_rank(h, op, h_name, rank=2)
    require_rank(Wx, op, "Wx", rank=2)
    require_rank(Wh, op, "Wh", rank=2)
    xs, hs, wxs, whs, bs = shape_of(x), shape_of(h), shape_of(Wx), shape_of(Wh), shape_of(b)
    if sequence:
        require(
            xs[1] > 0,
            op,
            f"x holds an empty sequence (T = 0, x shape {xs}); a recurrent op needs at least one time step",
        )
    n, d, hidden = xs[0], xs[-1], hs[1]
    require(
        hs[0] == n,
        op,
        f"{h_name} must have one row per example of x: x shape {xs} has N = {n}, {h_name} shape {hs}",
    )
    k = gates * hidden
    blocks = f"{gates} * H = {k}" if gates > 1 else f"H = {k}"
    require(
        wxs == (d, k),
        op,
        f"Wx must have shape (D, {blocks}) = {(d, k)} for x shape {xs} and {h_name} shape {hs}, got {wxs}",
    )
    require(
        whs == (hidden, k),
        op,
        f"Wh must have shape (H, {blocks}) = {(hidden, k)} for {h_name} shape {hs}, got {whs}",
    )
    require(bs == (k,), op, f"b must have shape ({blocks},) = {(k,)} for {h_name} shape {hs}, got {bs}")
    if c is not None:
        cs = shape_of(arrays[5])
        require(cs == hs, op, f"{c_name} must have the shape of {h_name} {hs}, got {cs}")
    return tuple(arrays)
