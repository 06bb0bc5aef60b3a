"""Shared pieces of the recurrent ops (:mod:`~jaxlayers.layers.rnn`, :mod:`~jaxlayers.layers.lstm`,
:mod:`~jaxlayers.layers.gru`): argument checks, the stable nonlinearities, and the layout helpers of the
hoisted input projection.

Layout. The public ops are batch-major as the NumPy original: ``x (N, T, D)``, ``h (N, T, H)``, and so are
their loops and residuals: each loop over time is a ``lax.fori_loop`` that reads step ``t`` as ``a[:, t]``
(:func:`at`) and writes it in place (:func:`put`), so that no input, cotangent or result is transposed to
time-major and back. The input projection ``x @ Wx`` for all steps is one matmul before the forward loop
(the bias is added inside the step, where the addition fuses with the gates' nonlinearities instead of
costing a pass over ``(N, T, k H)``), and the weight gradients ``dWx = x^T dA``, ``dWh = h_prev^T dA`` and
``dx = dA Wx^T`` are one matmul each after the reverse loop, so that each step does only its one
recurrent product.

Precision. Every recurrent op computes in :func:`~jaxlayers._checks.compute_dtype` of its arguments
(float32 for bfloat16/float16): the arguments are cast up once, the hidden and cell states are carried
and every gradient (the weight gradients summed over time included) is accumulated in that dtype, and
each result is rounded to its dtype once at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import as_array, compute_dtype, require, require_float, require_rank, shape_of


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


def at(a: jax.Array, t) -> jax.Array:
    """Step ``t`` of a batch-major ``(N, T, ...)`` array: ``a[:, t]``."""
    return lax.dynamic_index_in_dim(a, t, axis=1, keepdims=False)


def put(buf: jax.Array, value: jax.Array, t) -> jax.Array:
    """``buf`` with step ``t`` set to ``value`` (``buf[:, t] = value``; in place inside a loop)."""
    return lax.dynamic_update_index_in_dim(buf, value, t, axis=1)


def project_inputs(x: jax.Array, Wx: jax.Array) -> jax.Array:
    """The hoisted input projection, batch-major: ``x @ Wx`` for all steps in one ``(N T, D) @ (D, K)``
    matmul, shape ``(N, T, K)`` (the bias is added in each step)."""
    n, t, d = x.shape
    return mm(x.reshape(n * t, d), Wx).reshape(n, t, Wx.shape[1])


def _tmm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^T @ b`` for ``a (M, P)``, ``b (M, Q)``, contracting the long leading axis. The dot is given to
    XLA as it is: measured on the 2-core CPU (jax 0.10.2), writing ``a^T`` out first (as
    ``jaxlayers.layers.affine`` does for its weight gradient) costs a copy and saves nothing at these
    sizes."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=a.dtype)


def weight_grads(x: jax.Array, dA: jax.Array, Wx: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """After the reverse loop: ``(dx, dWx, db)`` from ``dA (N, T, K)``, the gradient of the input
    projection: ``dx = dA Wx^T``, ``dWx = sum_t x_t^T dA_t``, ``db = sum_{n,t} dA``, each one matmul (or
    sum) over all ``N T`` rows."""
    n, t, d = x.shape
    k = dA.shape[-1]
    dA2 = dA.reshape(n * t, k)
    dWx = _tmm(x.reshape(n * t, d), dA2)
    dx = mm(dA2, Wx.T).reshape(n, t, d)
    db = jnp.sum(dA2, axis=0)
    return dx, dWx, db


def outer_sum(h_prev: jax.Array, dA: jax.Array) -> jax.Array:
    """``dWh = sum_t h_prev[:, t]^T dA[:, t]``: one ``(H, N T) @ (N T, K)`` matmul."""
    n, t, h = h_prev.shape
    return _tmm(h_prev.reshape(n * t, h), dA.reshape(n * t, dA.shape[-1]))


def sequence_grads(x, h0, Wx, Wh, b, dXA, dHA, h_prev, dh0, acc) -> tuple[jax.Array, ...]:
    """``(dx, dh0, dWx, dWh, db)`` of a sequence op once its reverse loop gave ``dXA`` (the cotangent of
    the input projection ``x Wx + b``, ``(N, T, k H)``), ``dHA`` (of ``h_{t-1} Wh``), ``h_prev (N, T, H)`` (the
    state each step started from) and ``dh0``: one matmul
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
