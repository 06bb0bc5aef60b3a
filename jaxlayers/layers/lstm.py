"""Long short-term memory: one step or a whole sequence, gate order **i, f, o, g** as the NumPy original.

Source of the maths: the NumPy original's ``lstm_step_forward`` / ``lstm_step_backward`` and
``lstm_forward`` / ``lstm_backward`` (batch-major, ``x (N, T, D)``; ``c0`` zeros).

With ``a = x Wx + prev_h Wh + b`` of shape ``(N, 4H)`` split into four ``H``-wide blocks in the order
``i, f, o, g`` (input, forget, output gates and the candidate cell)::

    i = sigmoid(a[:, 0:H])     f = sigmoid(a[:, H:2H])     o = sigmoid(a[:, 2H:3H])     g = tanh(a[:, 3H:4H])
    next_c = f * prev_c + i * g
    next_h = o * tanh(next_c)

PyTorch (``nn.LSTM``), Flax (``LSTMCell``, ``OptimizedLSTMCell``) and Equinox (``LSTMCell``) order the
blocks **i, f, g, o**: to use their weights here, swap the last two ``H``-column blocks of ``Wx``, ``Wh``
and ``b`` (and transpose PyTorch's ``(4H, D)`` weights, summing its two biases).
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
    project_inputs,
    put,
    sequence_grads,
    sigmoid,
    upcast,
)

__all__ = [
    "lstm_step",
    "lstm_step_reference",
    "lstm_step_fwd",
    "lstm_step_bwd",
    "check_lstm_step",
    "LSTMStepResiduals",
    "lstm",
    "lstm_reference",
    "lstm_fwd",
    "lstm_bwd",
    "check_lstm",
    "LSTMResiduals",
]


def _gates_reference(a):
    """Plain ``jnp``: ``(i, f, o, g)`` from the pre-activations ``a (N, 4H)``, gate order i, f, o, g."""
    ai, af, ao, ag = jnp.split(a, 4, axis=-1)
    return sigmoid(ai), sigmoid(af), sigmoid(ao), jnp.tanh(ag)


def _cell(a, c):
    """``(next_h, next_c, gates)`` from the pre-activations ``a (N, 4H)`` and ``prev_c``; ``gates`` is
    ``[i, f, o, g]`` after their nonlinearities, ``(N, 4H)``."""
    hidden = c.shape[-1]
    ifo = sigmoid(a[..., : 3 * hidden])
    g = jnp.tanh(a[..., 3 * hidden :])
    i, f, o = ifo[..., :hidden], ifo[..., hidden : 2 * hidden], ifo[..., 2 * hidden :]
    next_c = f * c + i * g
    next_h = o * jnp.tanh(next_c)
    return next_h, next_c, jnp.concatenate([ifo, g], axis=-1)


def _cell_bwd(dh, dc, gates, next_c, prev_c):
    """``(da, dprev_c)``: the gradient of the pre-activations ``a`` and of ``prev_c`` from those of
    ``next_h`` (``dh``) and ``next_c`` (``dc``)::

        tc = tanh(next_c)
        do = dh tc                    dc' = dc + dh o (1 - tc**2)
        di = dc' g    df = dc' prev_c    dg = dc' i    dprev_c = dc' f
        da = [di i (1-i), df f (1-f), do o (1-o), dg (1 - g**2)]
    """
    hidden = next_c.shape[-1]
    i, f, o, g = (gates[..., k * hidden : (k + 1) * hidden] for k in range(4))
    tc = jnp.tanh(next_c)
    dc = dc + dh * o * (1 - tc * tc)
    da = jnp.concatenate(
        [dc * g * i * (1 - i), dc * prev_c * f * (1 - f), dh * tc * o * (1 - o), dc * i * (1 - g * g)],
        axis=-1,
    )
    return da, dc * f


# --------------------------------------------------------------------------- one step


class LSTMStepResiduals(NamedTuple):
    """What :func:`lstm_step_bwd` keeps: the arguments (alive anyway; ``b`` only for its dtype), the
    four gates after their nonlinearities ``[i, f, o, g] (N, 4H)`` and ``next_c``, in the compute
    dtype."""

    x: jax.Array
    prev_h: jax.Array
    prev_c: jax.Array
    Wx: jax.Array
    Wh: jax.Array
    b: jax.Array
    gates: jax.Array
    next_c: jax.Array


def lstm_step_reference(x, prev_h, prev_c, Wx, Wh, b):
    """Plain ``jnp`` (the module docstring's formulas), in the compute dtype, rounded once."""
    _, out, (x, prev_h, prev_c, Wx, Wh, b) = upcast(x, prev_h, prev_c, Wx, Wh, b)
    i, f, o, g = _gates_reference(x @ Wx + prev_h @ Wh + b)
    next_c = f * prev_c + i * g
    next_h = o * jnp.tanh(next_c)
    return next_h.astype(out), next_c.astype(out)


def lstm_step_fwd(x, prev_h, prev_c, Wx, Wh, b):
    """Forward pass: ``(next_h, next_c)``; residuals :class:`LSTMStepResiduals`."""
    _, out, (xa, ha, ca, Wxa, Wha, ba) = upcast(x, prev_h, prev_c, Wx, Wh, b)
    next_h, next_c, gates = _cell(mm(xa, Wxa) + mm(ha, Wha) + ba, ca)
    return (next_h.astype(out), next_c.astype(out)), LSTMStepResiduals(x, prev_h, prev_c, Wx, Wh, b, gates, next_c)


def lstm_step_bwd(res: LSTMStepResiduals, g):
    """Backward pass (the NumPy original's ``lstm_step_backward``): ``da`` and ``dprev_c`` as in
    :func:`lstm_step`'s docstring, then ``dx = da Wx^T``, ``dprev_h = da Wh^T``, ``dWx = x^T da``,
    ``dWh = prev_h^T da``, ``db = sum_n da``."""
    x, prev_h, prev_c, Wx, Wh, b, gates, next_c = res
    acc = gates.dtype
    dh, dc = (t.astype(acc) for t in g)
    da, dprev_c = _cell_bwd(dh, dc, gates, next_c, prev_c.astype(acc))
    return (
        mm(da, Wx.astype(acc).T).astype(x.dtype),
        mm(da, Wh.astype(acc).T).astype(prev_h.dtype),
        dprev_c.astype(prev_c.dtype),
        mm(x.astype(acc).T, da).astype(Wx.dtype),
        mm(prev_h.astype(acc).T, da).astype(Wh.dtype),
        jnp.sum(da, axis=0).astype(b.dtype),
    )


_lstm_step = custom_op(lstm_step_reference, lstm_step_fwd, lstm_step_bwd)


def check_lstm_step(x, prev_h, prev_c, Wx, Wh, b):
    """The arguments as arrays, in :func:`lstm_step`'s order, or the error it raises (see its Raises)."""
    x, prev_h, Wx, Wh, b, prev_c = check_recurrent(
        "lstm_step", 4, x, prev_h, Wx, Wh, b, sequence=False, c=prev_c, h_name="prev_h", c_name="prev_c"
    )
    return x, prev_h, prev_c, Wx, Wh, b


def lstm_step(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step (gate order i, f, o, g) with a hand-derived backward pass.

    Args:
      x: inputs, ``(N, D)``, floating dtype.
      prev_h: previous hidden state, ``(N, H)``.
      prev_c: previous cell state, ``(N, H)``.
      Wx: input weights, ``(D, 4H)``, column blocks ``i, f, o, g``.
      Wh: recurrent weights, ``(H, 4H)``, same blocks.
      b: biases, ``(4H,)``, same blocks.

    Returns:
      ``(next_h, next_c)``, each ``(N, H)``: with ``a = x Wx + prev_h Wh + b``, ``i, f, o =
      sigmoid(a)`` on the first three blocks, ``g = tanh(a)`` on the last, ``next_c = f prev_c + i g``,
      ``next_h = o tanh(next_c)``. dtype the promotion of the arguments' (computed in float32 for
      bfloat16/float16, rounded once). N = 0 gives empty outputs.

    Raises:
      ValueError: at trace time, if a rank or shape does not match the above (the message names the
        argument and the shapes seen).
      TypeError: if an argument is not floating point or not array-like.

    Backward (``custom_vjp``), for cotangents ``dh`` of ``next_h`` and ``dc`` of ``next_c``::

        tc = tanh(next_c);  dc' = dc + dh o (1 - tc**2)
        da = [dc' g i(1-i),  dc' prev_c f(1-f),  dh tc o(1-o),  dc' i (1-g**2)]
        dx = da Wx^T   dprev_h = da Wh^T   dprev_c = dc' f   dWx = x^T da   dWh = prev_h^T da   db = sum_n da

    Residuals: the arguments, the gates after their nonlinearities ``(N, 4H)`` and ``next_c``.

    Gate order: the NumPy original's i, f, o, g; PyTorch, Flax and Equinox use i, f, g, o (see the
    module docstring for converting their weights).

    Source: the NumPy original's ``lstm_step_forward`` / ``lstm_step_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> h, c = jl.lstm_step(jnp.ones((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 4)),
      ...                     jnp.ones((3, 16)), jnp.ones((4, 16)), jnp.zeros(16))
      >>> h.shape, c.shape
      ((2, 4), (2, 4))
    """
    return _lstm_step(*check_lstm_step(x, prev_h, prev_c, Wx, Wh, b))


# --------------------------------------------------------------------------- the sequence


class LSTMResiduals(NamedTuple):
    """What :func:`lstm_bwd` keeps: the arguments (alive anyway; ``b`` only for its dtype) and, per
    step, the four gates after their nonlinearities ``gates (N, T, 4H)`` and the cell ``cs (N, T, H)``,
    batch-major, in the compute dtype: ``5 H`` numbers per example and step. The hidden states are not
    kept: ``h_t = o_t tanh(c_t)`` is recomputed from them for ``dWh``."""

    x: jax.Array
    h0: jax.Array
    c0: jax.Array
    Wx: jax.Array
    Wh: jax.Array
    b: jax.Array
    gates: jax.Array
    cs: jax.Array


def lstm_reference(x, h0, Wx, Wh, b, c0=None):
    """Plain ``jnp``: a ``lax.scan`` of :func:`lstm_step_reference`'s formulas over time, with the input
    projection ``x Wx + b`` for all steps hoisted out of the scan (one matmul); ``c0`` zeros if None."""
    if c0 is None:
        c0 = jnp.zeros_like(h0)
    _, out, (x, h0, c0, Wx, Wh, b) = upcast(x, h0, c0, Wx, Wh, b)
    xa = jnp.einsum("ntd,dk->tnk", x, Wx) + b

    def step(carry, xa_t):
        h, c = carry
        i, f, o, g = _gates_reference(xa_t + h @ Wh)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), h

    _, hs = lax.scan(step, (h0, c0), xa)
    return jnp.swapaxes(hs, 0, 1).astype(out)


def _lstm_forward(x, h0, Wx, Wh, b, c0, *, residuals=True):
    """``(h, gates, cs)`` (batch-major), or ``(h, None, None)`` without ``residuals``."""
    _, out, (xa, h0a, Wxa, Wha, ba, c0a) = upcast(x, h0, Wx, Wh, b, c0)
    n, t, _ = x.shape
    xw = project_inputs(xa, Wxa)

    def step(s, carry):
        h, c, hs, *res = carry
        h, c, gates = _cell(at(xw, s) + ba + mm(h, Wha), c)
        res = [put(res[0], gates, s), put(res[1], c, s)] if residuals else []
        return h, c, put(hs, h, s), *res

    bufs = [jnp.zeros((n, t, k), h0a.dtype) for k in (h0a.shape[1], Wxa.shape[1], h0a.shape[1])]
    _, _, hs, *res = lax.fori_loop(0, t, step, (h0a, c0a, *bufs[: 3 if residuals else 1]))
    return (hs.astype(out), *res) if residuals else (hs.astype(out), None, None)


def lstm_fwd(x, h0, Wx, Wh, b, c0):
    """Forward pass: one loop over time on ``xw = x Wx`` (all steps in one matmul); residuals
    :class:`LSTMResiduals` (gates and cells, not the hidden states)."""
    h, gates, cs = _lstm_forward(x, h0, Wx, Wh, b, c0)
    return h, LSTMResiduals(x, h0, c0, Wx, Wh, b, gates, cs)


def lstm_bwd(res: LSTMResiduals, g):
    """Backpropagation through time (the NumPy original's ``lstm_backward``), one reverse loop carrying
    ``(dh, dc)``: at each step, last to first, ``da_t, dc = cell_bwd(g_t + dh, dc)`` (the step's
    formulas, :func:`lstm_step`) and ``dh = da_t Wh^T`` (the step's only matmul); then one matmul each
    for ``dx``, ``dWx``, ``dWh = sum_t h_{t-1}^T da_t`` (``h_{t-1} = o_{t-1} tanh(c_{t-1})``
    recomputed) and a sum for ``db``. Returns ``(dx, dh0, dWx, dWh, db, dc0)``."""
    x, h0, c0, Wx, Wh, b, gates, cs = res
    acc = gates.dtype
    n, t, hidden = cs.shape
    WhT = Wh.astype(acc).T
    c0a, ga = c0.astype(acc), g.astype(acc)

    def step(j, carry):
        s = t - 1 - j
        dh, dc, dA = carry
        c_prev = jnp.where(s == 0, c0a, at(cs, jnp.maximum(s - 1, 0)))
        da, dc = _cell_bwd(at(ga, s) + dh, dc, at(gates, s), at(cs, s), c_prev)
        return mm(da, WhT), dc, put(dA, da, s)

    zeros = jnp.zeros((n, hidden), acc)
    dh0, dc0, dA = lax.fori_loop(0, t, step, (zeros, zeros, jnp.zeros(gates.shape, acc)))
    o = gates[:, :-1, 2 * hidden : 3 * hidden]
    h_prev = jnp.concatenate([h0.astype(acc)[:, None], o * jnp.tanh(cs[:, :-1])], axis=1)
    return (*sequence_grads(x, h0, Wx, Wh, b, dA, dA, h_prev, dh0, acc), dc0.astype(c0.dtype))


_lstm = custom_op(lstm_reference, lstm_fwd, lstm_bwd, primal=lambda *a: _lstm_forward(*a, residuals=False)[0])


def check_lstm(x, h0, Wx, Wh, b, c0=None):
    """The arguments as arrays (``c0`` zeros of ``h0``'s shape and dtype when None), or the error
    :func:`lstm` raises (see its Raises)."""
    if c0 is None:
        h0 = check_recurrent("lstm", 4, x, h0, Wx, Wh, b, sequence=True)[1]
        c0 = jnp.zeros(h0.shape, h0.dtype)
    return check_recurrent("lstm", 4, x, h0, Wx, Wh, b, sequence=True, c=c0)


def lstm(x, h0, Wx, Wh, b, c0=None):
    """An LSTM over a whole sequence (gate order i, f, o, g), backpropagation through time by hand.

    Args:
      x: inputs, batch-major, ``(N, T, D)``, floating dtype; ``T >= 1``.
      h0: initial hidden state, ``(N, H)``.
      Wx: input weights, ``(D, 4H)``, column blocks ``i, f, o, g``.
      Wh: recurrent weights, ``(H, 4H)``, same blocks.
      b: biases, ``(4H,)``, same blocks.
      c0: initial cell state, ``(N, H)``; zeros (as the NumPy original) when None.

    Returns:
      The hidden states ``h (N, T, H)`` of :func:`lstm_step` applied along time from ``(h0, c0)``;
      dtype the promotion of the arguments' (computed, states carried and gradients accumulated in
      float32 for bfloat16/float16, each result rounded once). N = 0 gives an empty ``(0, T, H)``
      output and zero weight gradients.

    Raises:
      ValueError: at trace time, for an empty sequence (``T = 0``), or a rank or shape that does not
        match the above (the message names the argument and the shapes seen).
      TypeError: if an argument is not floating point or not array-like.

    Backward (``custom_vjp``): one reverse loop over time (``lax.fori_loop``) carrying ``(dh, dc)``; at step
    ``t``, last to first, :func:`lstm_step`'s backward formulas with ``dh = g_t + dh`` give ``da_t``
    and the new ``dc``, and ``dh = da_t Wh^T``. After the loop, one matmul each over all steps:
    ``dx = dA Wx^T``, ``dWx = sum_t x_t^T da_t``, ``dWh = sum_t h_{t-1}^T da_t``, and ``db = sum
    da``; ``dh0``, ``dc0`` are the final carry. Residuals: the arguments, the gates after their
    nonlinearities and the cells, ``5 T N H`` numbers (autodiff of the forward scan keeps
    ``12 T N H``); the hidden states are recomputed as ``o tanh(c)``.

    Gate order: the NumPy original's i, f, o, g; PyTorch, Flax and Equinox use i, f, g, o.

    Source: the NumPy original's ``lstm_forward`` / ``lstm_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.lstm(jnp.ones((2, 5, 3)), jnp.zeros((2, 4)), jnp.ones((3, 16)), jnp.ones((4, 16)), jnp.zeros(16)).shape
      (2, 5, 4)
    """
    x, h0, Wx, Wh, b, c0 = check_lstm(x, h0, Wx, Wh, b, c0)
    return _lstm(x, h0, Wx, Wh, b, c0)
