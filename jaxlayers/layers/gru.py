"""Gated recurrent unit: one step or a whole sequence (beyond the NumPy original).

Gate order **r, z, n** (reset, update, candidate), the variant of PyTorch's ``nn.GRU``, Flax's
``GRUCell`` and Equinox's ``GRUCell``, in which the reset gate multiplies the *recurrent product*
(after the matmul) rather than the previous hidden state (before it, as in Cho et al. 2014's first
formulation). With ``xa = x Wx + b`` and ``ha = prev_h Wh``, both ``(N, 3H)``, split into the ``H``-wide
blocks ``r, z, n``::

    r = sigmoid(xa_r + ha_r)
    z = sigmoid(xa_z + ha_z)
    n = tanh(xa_n + r * ha_n)
    next_h = (1 - z) * n + z * prev_h

The one bias ``b (3H,)`` is added on the input side. PyTorch's two biases fold into it for ``r`` and
``z`` (``b_ir + b_hr``, ``b_iz + b_hz``); PyTorch's and Flax's recurrent bias of the candidate,
``b_hn``, which the reset gate multiplies (``n = tanh(xa_n + r * (ha_n + b_hn))``), has no counterpart
here: it is zero. To use their weights, transpose PyTorch's ``(3H, D)`` matrices; the block order is
the same.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._oprule import custom_op
from jaxlayers.layers._recurrent import (
    at,
    check_recurrent,
    mm,
    outer_sum,
    project_inputs,
    put,
    sigmoid,
    upcast,
    weight_grads,
)

__all__ = [
    "gru_step",
    "gru_step_reference",
    "gru_step_fwd",
    "gru_step_bwd",
    "check_gru_step",
    "GRUStepResiduals",
    "gru",
    "gru_reference",
    "gru_fwd",
    "gru_bwd",
    "check_gru",
    "GRUResiduals",
]


def _step_reference(xa, h, Wh):
    """Plain ``jnp``: ``next_h`` from ``xa = x Wx + b`` and ``h`` (the module docstring's formulas)."""
    xr, xz, xn = jnp.split(xa, 3, axis=-1)
    hr, hz, hn = jnp.split(h @ Wh, 3, axis=-1)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _cell(xa, ha, h):
    """``(next_h, gates, ha_n)`` from ``xa (N, 3H)``, ``ha = h Wh (N, 3H)`` and ``h``; ``gates`` is
    ``[r, z, n]`` after their nonlinearities."""
    hidden = h.shape[-1]
    rz = sigmoid(xa[..., : 2 * hidden] + ha[..., : 2 * hidden])
    r, z = rz[..., :hidden], rz[..., hidden:]
    hn = ha[..., 2 * hidden :]
    n = jnp.tanh(xa[..., 2 * hidden :] + r * hn)
    return n + z * (h - n), jnp.concatenate([rz, n], axis=-1), hn


def _cell_bwd(dh, gates, hn, h):
    """``(dxa, dha, dh_direct)``: the gradients of ``xa``, of ``ha = h Wh`` and the part of ``dprev_h``
    that skips ``Wh`` (``dprev_h = dh_direct + dha Wh^T``), from ``dh`` of ``next_h``::

        dn = dh (1 - z)    dz = dh (h - n)    dan = dn (1 - n**2)
        dar = dan hn r (1 - r)    daz = dz z (1 - z)
        dxa = [dar, daz, dan]    dha = [dar, daz, dan r]    dh_direct = dh z
    """
    hidden = h.shape[-1]
    r, z, n = (gates[..., k * hidden : (k + 1) * hidden] for k in range(3))
    dan = dh * (1 - z) * (1 - n * n)
    drz = jnp.concatenate([dan * hn * r * (1 - r), dh * (h - n) * z * (1 - z)], axis=-1)
    return jnp.concatenate([drz, dan], axis=-1), jnp.concatenate([drz, dan * r], axis=-1), dh * z


# --------------------------------------------------------------------------- one step


class GRUStepResiduals(NamedTuple):
    """What :func:`gru_step_bwd` keeps: the arguments (alive anyway; ``b`` only for its dtype), the
    gates after their nonlinearities ``[r, z, n] (N, 3H)`` and the recurrent product ``ha_n (N, H)``,
    in the compute dtype."""

    x: jax.Array
    prev_h: jax.Array
    Wx: jax.Array
    Wh: jax.Array
    b: jax.Array
    gates: jax.Array
    hn: jax.Array


def gru_step_reference(x, prev_h, Wx, Wh, b):
    """Plain ``jnp`` (the module docstring's formulas), in the compute dtype, rounded once."""
    _, out, (x, prev_h, Wx, Wh, b) = upcast(x, prev_h, Wx, Wh, b)
    return _step_reference(x @ Wx + b, prev_h, Wh).astype(out)


def gru_step_fwd(x, prev_h, Wx, Wh, b):
    """Forward pass: ``next_h``; residuals :class:`GRUStepResiduals`."""
    _, out, (xa, ha, Wxa, Wha, ba) = upcast(x, prev_h, Wx, Wh, b)
    next_h, gates, hn = _cell(mm(xa, Wxa) + ba, mm(ha, Wha), ha)
    return next_h.astype(out), GRUStepResiduals(x, prev_h, Wx, Wh, b, gates, hn)


def gru_step_bwd(res: GRUStepResiduals, g):
    """Backward pass: ``dxa``, ``dha`` as in :func:`gru_step`'s docstring, then ``dx = dxa Wx^T``,
    ``dprev_h = dh z + dha Wh^T``, ``dWx = x^T dxa``, ``dWh = prev_h^T dha``, ``db = sum_n dxa``."""
    x, prev_h, Wx, Wh, b, gates, hn = res
    acc = gates.dtype
    h = prev_h.astype(acc)
    dxa, dha, dh_direct = _cell_bwd(g.astype(acc), gates, hn, h)
    return (
        mm(dxa, Wx.astype(acc).T).astype(x.dtype),
        (dh_direct + mm(dha, Wh.astype(acc).T)).astype(prev_h.dtype),
        mm(x.astype(acc).T, dxa).astype(Wx.dtype),
        mm(h.T, dha).astype(Wh.dtype),
        jnp.sum(dxa, axis=0).astype(b.dtype),
    )


_gru_step = custom_op(gru_step_reference, gru_step_fwd, gru_step_bwd)


def check_gru_step(x, prev_h, Wx, Wh, b):
    """The arguments as arrays, or the error :func:`gru_step` raises (see its Raises)."""
    return check_recurrent("gru_step", 3, x, prev_h, Wx, Wh, b, sequence=False, h_name="prev_h")


def gru_step(x, prev_h, Wx, Wh, b):
    """One GRU step (gate order r, z, n; reset gate after the recurrent matmul) by hand.

    Args:
      x: inputs, ``(N, D)``, floating dtype.
      prev_h: previous hidden state, ``(N, H)``.
      Wx: input weights, ``(D, 3H)``, column blocks ``r, z, n``.
      Wh: recurrent weights, ``(H, 3H)``, same blocks.
      b: biases (input side), ``(3H,)``, same blocks.

    Returns:
      ``next_h (N, H)``: with ``xa = x Wx + b`` and ``ha = prev_h Wh``, ``r = sigmoid(xa_r + ha_r)``,
      ``z = sigmoid(xa_z + ha_z)``, ``n = tanh(xa_n + r * ha_n)``, ``next_h = (1 - z) n + z prev_h``
      (PyTorch's ``nn.GRU`` variant with its recurrent candidate bias ``b_hn`` zero; see
      :mod:`jaxlayers.layers.gru`). dtype the promotion of the arguments' (computed in float32 for
      bfloat16/float16, rounded once). N = 0 gives an empty output.

    Raises:
      ValueError: at trace time, if a rank or shape does not match the above (the message names the
        argument and the shapes seen).
      TypeError: if an argument is not floating point or not array-like.

    Backward (``custom_vjp``), for cotangent ``dh`` of ``next_h``::

        dan = dh (1 - z) (1 - n**2)    dar = dan ha_n r (1 - r)    daz = dh (prev_h - n) z (1 - z)
        dxa = [dar, daz, dan]          dha = [dar, daz, dan r]
        dx = dxa Wx^T   dprev_h = dh z + dha Wh^T   dWx = x^T dxa   dWh = prev_h^T dha   db = sum_n dxa

    Residuals: the arguments, the gates ``[r, z, n]`` and ``ha_n``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.gru_step(jnp.ones((2, 3)), jnp.zeros((2, 4)), jnp.ones((3, 12)), jnp.ones((4, 12)), jnp.zeros(12)).shape
      (2, 4)
    """
    return _gru_step(*check_gru_step(x, prev_h, Wx, Wh, b))


# --------------------------------------------------------------------------- the sequence


class GRUResiduals(NamedTuple):
    """What :func:`gru_bwd` keeps: the arguments (alive anyway; ``b`` only for its dtype) and, per
    step, batch-major, in the compute dtype, the gates after their nonlinearities ``[r, z, n]
    (N, T, 3H)`` and the hidden states ``h (N, T, H)``: ``4 H`` numbers per example and step. For
    float32/float64 arguments ``h`` *is* the op's output array (under an enclosing ``jit`` the
    buffer is shared, so it costs no memory beyond the output the caller holds anyway); for
    bfloat16/float16 it is the float32 states the forward pass carried, the output before its
    rounding. The backward pass also
    needs the candidate's recurrent product ``h_{t-1} Wh_n``; rather than keep it (``H`` more per
    step), it recomputes it for all steps in one ``(N T, H) @ (H, H)`` matmul."""

    x: jax.Array
    h0: jax.Array
    Wx: jax.Array
    Wh: jax.Array
    b: jax.Array
    gates: jax.Array
    h: jax.Array


def gru_reference(x, h0, Wx, Wh, b):
    """Plain ``jnp``: a ``lax.scan`` of :func:`gru_step_reference`'s formulas over time, with the input
    projection ``x Wx + b`` for all steps hoisted out of the scan (one matmul)."""
    _, out, (x, h0, Wx, Wh, b) = upcast(x, h0, Wx, Wh, b)
    xa = jnp.einsum("ntd,dk->tnk", x, Wx) + b

    def step(h, xa_t):
        h = _step_reference(xa_t, h, Wh)
        return h, h

    _, hs = lax.scan(step, h0, xa)
    return jnp.swapaxes(hs, 0, 1).astype(out)


def _gru_forward(x, h0, Wx, Wh, b, *, residuals=True):
    """``(h, hs, gates)``: the output ``h`` (batch-major, the arguments' dtype), the states ``hs`` in
    the compute dtype (the same array as ``h`` when no rounding is needed) and the gates; or
    ``(h, None, None)`` without ``residuals``.

    The gates are written over the input projection ``xw = x Wx`` in place (step ``t`` of ``xw`` is
    dead once step ``t`` has read it), so the forward pass allocates no buffer for them. Each step
    writes the *previous* step's gates before it reads its own slice of ``xw``: a step that read its
    slice and then wrote its gates over it would leave reads of the buffer that the write does not
    depend on, and XLA would copy the whole buffer every step to keep them apart. Step 0 runs before
    the loop (nothing to write yet) and the last step's gates are written after it.
    """
    _, out, (xa, h0a, Wxa, Wha, ba) = upcast(x, h0, Wx, Wh, b)
    n, t, _ = x.shape
    xw = project_inputs(xa, Wxa)
    h, gates, _ = _cell(at(xw, 0) + ba, mm(h0a, Wha), h0a)
    hs = put(jnp.zeros((n, t, h0a.shape[1]), h0a.dtype), h, 0)

    def step(s, carry):
        h, hs, buf, prev = carry
        if residuals:
            buf = put(buf, prev, s - 1)
        h, gates, _ = _cell(at(buf, s) + ba, mm(h, Wha), h)
        return h, put(hs, h, s), buf, gates

    _, hs, buf, last = lax.fori_loop(1, t, step, (h, hs, xw, gates))
    if not residuals:
        return hs.astype(out), None, None
    return hs.astype(out), hs, put(buf, last, t - 1)


def gru_fwd(x, h0, Wx, Wh, b):
    """Forward pass: one loop over time on ``xw = x Wx`` (all steps in one matmul), the gates written
    over ``xw`` in place; residuals :class:`GRUResiduals` (the gates and the hidden states, which are
    the output)."""
    h, hs, gates = _gru_forward(x, h0, Wx, Wh, b)
    return h, GRUResiduals(x, h0, Wx, Wh, b, gates, hs)


def gru_bwd(res: GRUResiduals, g):
    """Backpropagation through time, one reverse loop carrying ``dh``: at each step, last to first,
    :func:`gru_step`'s formulas with ``dh = g_t + dh`` give ``dxa_t``, ``dha_t`` and
    ``dh = dh z + dha_t Wh^T`` (the step's only matmul); then one matmul each for ``dx``, ``dWx``,
    ``dWh = sum_t h_{t-1}^T dha_t`` and a sum for ``db``. Before the loop, ``h_{t-1}`` is the kept
    states shifted by one step (``h0`` first), and ``ha_n = h_{t-1} Wh_n`` is recomputed for all
    steps in one matmul (the forward pass does not keep it).

    In place: ``dxa_t`` is written over the gates of step ``t`` and ``dha_t``'s candidate block
    ``dan_t r_t`` over ``ha_n`` of step ``t`` (``dha_t`` is ``dxa_t`` with its ``n`` block times
    ``r``), so the loop allocates no buffer of its own. As in the forward pass, each step first
    writes the *previous* step's results and then reads its own slices (a write after the reads
    would not depend on all of them and XLA would copy both buffers every step); the loop runs one
    step more than ``T``, whose only effect is to write step 0's results (its reads are unused and
    its ``dh`` is dropped).
    """
    x, h0, Wx, Wh, b, gates, hs = res
    acc = gates.dtype
    Wha = Wh.astype(acc)
    WhT = Wha.T
    n, t, hidden = hs.shape
    h0a, ga = h0.astype(acc), g.astype(acc)
    h_prev = jnp.concatenate([h0a[:, None], hs[:, :-1]], axis=1)
    hn = mm(h_prev.reshape(n * t, hidden), Wha[:, 2 * hidden :]).reshape(n, t, hidden)

    def cell(s, dh, gate_buf, hn_buf):
        """``(dh for step s - 1, dxa_s, dan_s r_s)``: :func:`_cell_bwd`'s formulas, with
        ``dar = (dan r) hn (1 - r)`` so that every read of a buffer comes before the values written
        over it."""
        gs = at(gate_buf, s)
        r, z, nn = gs[:, :hidden], gs[:, hidden : 2 * hidden], gs[:, 2 * hidden :]
        dh = at(ga, s) + dh
        dan = dh * (1 - z) * (1 - nn * nn)
        dhan = dan * r
        drz = jnp.concatenate([dhan * at(hn_buf, s) * (1 - r), dh * (at(h_prev, s) - nn) * z * (1 - z)], axis=-1)
        return dh * z + mm(jnp.concatenate([drz, dhan], axis=-1), WhT), jnp.concatenate([drz, dan], axis=-1), dhan

    def step(j, carry):
        dh, gate_buf, hn_buf, dxa, dhan = carry
        s = t - 1 - j  # -1 on the extra last iteration
        gate_buf, hn_buf = put(gate_buf, dxa, s + 1), put(hn_buf, dhan, s + 1)
        new_dh, dxa, dhan = cell(jnp.maximum(s, 0), dh, gate_buf, hn_buf)
        return jnp.where(s >= 0, new_dh, dh), gate_buf, hn_buf, dxa, dhan

    dh, dxa, dhan = cell(t - 1, jnp.zeros_like(h0a), gates, hn)
    dh0, dXA, dHAn, _, _ = lax.fori_loop(1, t + 1, step, (dh, gates, hn, dxa, dhan))
    dx, dWx, db = weight_grads(x.astype(acc), dXA, Wx.astype(acc))
    dWh = jnp.concatenate([outer_sum(h_prev, dXA[..., : 2 * hidden]), outer_sum(h_prev, dHAn)], axis=1)
    return dx.astype(x.dtype), dh0.astype(h0.dtype), dWx.astype(Wx.dtype), dWh.astype(Wh.dtype), db.astype(b.dtype)


_gru = custom_op(gru_reference, gru_fwd, gru_bwd, primal=lambda *a: _gru_forward(*a, residuals=False)[0])


def check_gru(x, h0, Wx, Wh, b):
    """The arguments as arrays, or the error :func:`gru` raises (see its Raises)."""
    return check_recurrent("gru", 3, x, h0, Wx, Wh, b, sequence=True)


def gru(x, h0, Wx, Wh, b):
    """A GRU over a whole sequence (gate order r, z, n; PyTorch's variant), backpropagation through time
    written by hand.

    Args:
      x: inputs, batch-major, ``(N, T, D)``, floating dtype; ``T >= 1``.
      h0: initial hidden state, ``(N, H)``.
      Wx: input weights, ``(D, 3H)``, column blocks ``r, z, n``.
      Wh: recurrent weights, ``(H, 3H)``, same blocks.
      b: biases (input side), ``(3H,)``, same blocks.

    Returns:
      The hidden states ``h (N, T, H)`` of :func:`gru_step` applied along time from ``h0``::

          r = sigmoid(x_t Wx_r + b_r + h_{t-1} Wh_r)
          z = sigmoid(x_t Wx_z + b_z + h_{t-1} Wh_z)
          n = tanh(x_t Wx_n + b_n + r * (h_{t-1} Wh_n))
          h_t = (1 - z) * n + z * h_{t-1}

      (the reset gate applied after the recurrent matmul, as PyTorch's ``nn.GRU``, Flax's and
      Equinox's ``GRUCell``, with their recurrent candidate bias ``b_hn`` zero). dtype the promotion
      of the arguments' (computed, states carried and gradients accumulated in float32 for
      bfloat16/float16, each result rounded once). N = 0 gives an empty ``(0, T, H)`` output.

    Raises:
      ValueError: at trace time, for an empty sequence (``T = 0``), or a rank or shape that does not
        match the above (the message names the argument and the shapes seen).
      TypeError: if an argument is not floating point or not array-like.

    Backward (``custom_vjp``): one reverse loop over time (``lax.fori_loop``) carrying ``dh``; at step ``t``,
    last to first, :func:`gru_step`'s formulas with ``dh = g_t + dh`` give ``dxa_t``, ``dha_t``, and
    ``dh = dh z + dha_t Wh^T``. After the loop, one matmul each over all steps: ``dx = dXA Wx^T``,
    ``dWx = sum_t x_t^T dxa_t``, ``dWh = sum_t h_{t-1}^T dha_t``, and ``db = sum dXA``. Residuals:
    the arguments, the gates ``[r, z, n]`` (``3 T N H`` numbers) and the hidden states ``h``
    (``T N H``; for float32/float64 the output array itself, not a copy); autodiff of the forward
    scan keeps ``9 T N H``. ``h_{t-1} Wh_n`` is recomputed before the loop in one matmul. Both loops
    write in place (the gates over the input projection, the step cotangents over the gates and
    the recomputed product), so neither allocates a per-step buffer of its own.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.gru(jnp.ones((2, 5, 3)), jnp.zeros((2, 4)), jnp.ones((3, 12)), jnp.ones((4, 12)), jnp.zeros(12)).shape
      (2, 5, 4)
    """
    return _gru(*check_gru(x, h0, Wx, Wh, b))
