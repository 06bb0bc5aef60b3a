"""Vanilla recurrent layer: ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``, one step or a whole sequence.

Source of the maths: the NumPy original's ``rnn_step_forward`` / ``rnn_step_backward`` and
``rnn_forward`` / ``rnn_backward`` (batch-major, ``x (N, T, D)``).

Four parts per op, as every jaxlayers op: :func:`rnn_step_reference` / :func:`rnn_reference` (plain
``jnp``; ``jax.grad`` of them is the oracle), :func:`rnn_step_fwd` / :func:`rnn_fwd` (``-> (out,
residuals)``), :func:`rnn_step_bwd` / :func:`rnn_bwd` (the hand-derived backward; for the sequence,
backpropagation through time as one reverse loop written by hand), and the public :func:`rnn_step` /
:func:`rnn`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._oprule import custom_op
from jaxlayers.layers._recurrent import at, check_recurrent, mm, project_inputs, put, sequence_grads, upcast

__all__ = [
    "rnn_step",
    "rnn_step_reference",
    "rnn_step_fwd",
    "rnn_step_bwd",
    "check_rnn_step",
    "RNNStepResiduals",
    "rnn",
    "rnn_reference",
    "rnn_fwd",
    "rnn_bwd",
    "check_rnn",
    "RNNResiduals",
]


# --------------------------------------------------------------------------- one step


class RNNStepResiduals(NamedTuple):
    """What :func:`rnn_step_bwd` keeps: the arguments (alive anyway; ``b`` only for its dtype) and
    ``next_h`` in the compute dtype (``tanh' = 1 - next_h**2``)."""

    x: jax.Array
    prev_h: jax.Array
    Wx: jax.Array
    Wh: jax.Array
    b: jax.Array
    next_h: jax.Array


def rnn_step_reference(x, prev_h, Wx, Wh, b):
    """Plain ``jnp``: ``tanh(x Wx + prev_h Wh + b)`` in the compute dtype, rounded once."""
    _, out, (x, prev_h, Wx, Wh, b) = upcast(x, prev_h, Wx, Wh, b)
    return jnp.tanh(x @ Wx + prev_h @ Wh + b).astype(out)


def rnn_step_fwd(x, prev_h, Wx, Wh, b):
    """Forward pass: ``next_h = tanh(x Wx + prev_h Wh + b)``; residuals :class:`RNNStepResiduals`."""
    _, out, (xa, ha, Wxa, Wha, ba) = upcast(x, prev_h, Wx, Wh, b)
    next_h = jnp.tanh(mm(xa, Wxa) + mm(ha, Wha) + ba)
    return next_h.astype(out), RNNStepResiduals(x, prev_h, Wx, Wh, b, next_h)


def rnn_step_bwd(res: RNNStepResiduals, g):
    """Backward pass (the NumPy original's ``rnn_step_backward``): with ``da = g (1 - next_h**2)``,
    ``dx = da Wx^T``, ``dprev_h = da Wh^T``, ``dWx = x^T da``, ``dWh = prev_h^T da``, ``db = sum_n da``."""
    x, prev_h, Wx, Wh, b, next_h = res
    acc = next_h.dtype
    da = g.astype(acc) * (1 - next_h * next_h)
    xa, ha = x.astype(acc), prev_h.astype(acc)
    return (
        mm(da, Wx.astype(acc).T).astype(x.dtype),
        mm(da, Wh.astype(acc).T).astype(prev_h.dtype),
        mm(xa.T, da).astype(Wx.dtype),
        mm(ha.T, da).astype(Wh.dtype),
        jnp.sum(da, axis=0).astype(b.dtype),
    )


_rnn_step = custom_op(rnn_step_reference, rnn_step_fwd, rnn_step_bwd)


def check_rnn_step(x, prev_h, Wx, Wh, b):
    """The arguments as arrays, or the error :func:`rnn_step` raises (see its Raises)."""
    return check_recurrent("rnn_step", 1, x, prev_h, Wx, Wh, b, sequence=False, h_name="prev_h")


def rnn_step(x, prev_h, Wx, Wh, b):
    """One step of a vanilla (tanh) RNN with a hand-derived backward pass.

    Args:
      x: inputs, shape ``(N, D)``, floating dtype.
      prev_h: previous hidden state, ``(N, H)``.
      Wx: input-to-hidden weights, ``(D, H)``.
      Wh: hidden-to-hidden weights, ``(H, H)``.
      b: biases, ``(H,)``.

    Returns:
      ``next_h = tanh(x Wx + prev_h Wh + b)``, shape ``(N, H)``, dtype the promotion of the
      arguments' dtypes (computed in float32 for bfloat16/float16, rounded once). N = 0 gives an
      empty ``(0, H)`` output.

    Raises:
      ValueError: at trace time, if a rank or shape does not match the above (the message names the
        argument and the shapes seen).
      TypeError: if an argument is not floating point or not array-like.

    Backward (``custom_vjp``), for cotangent ``g`` of ``next_h``, with ``da = g * (1 - next_h**2)``::

        dx = da Wx^T    dprev_h = da Wh^T    dWx = x^T da    dWh = prev_h^T da    db = sum_n da

    Residuals: the arguments and ``next_h``.

    Source: the NumPy original's ``rnn_step_forward`` / ``rnn_step_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.rnn_step(jnp.ones((2, 3)), jnp.zeros((2, 4)), jnp.ones((3, 4)), jnp.ones((4, 4)), jnp.zeros(4)).shape
      (2, 4)
    """
    return _rnn_step(*check_rnn_step(x, prev_h, Wx, Wh, b))


# --------------------------------------------------------------------------- the sequence


class RNNResiduals(NamedTuple):
    """What :func:`rnn_bwd` keeps: the arguments (alive anyway; ``b`` only for its dtype) and the
    hidden states ``hs (N, T, H)``, batch-major, in the compute dtype -- one ``H``-vector per example
    and step, the least backpropagation through time needs (``tanh'`` is ``1 - h**2`` and ``dWh``
    needs ``h_{t-1}``)."""

    x: jax.Array
    h0: jax.Array
    Wx: jax.Array
    Wh: jax.Array
    b: jax.Array
    hs: jax.Array


def rnn_reference(x, h0, Wx, Wh, b):
    """Plain ``jnp``: a ``lax.scan`` of :func:`rnn_step_reference`'s formula over time, with the input
    projection ``x Wx + b`` for all steps hoisted out of the scan (one matmul)."""
    _, out, (x, h0, Wx, Wh, b) = upcast(x, h0, Wx, Wh, b)
    xa = jnp.einsum("ntd,dh->tnh", x, Wx) + b

    def step(h, xa_t):
        h = jnp.tanh(xa_t + h @ Wh)
        return h, h

    _, hs = lax.scan(step, h0, xa)
    return jnp.swapaxes(hs, 0, 1).astype(out)


def _rnn_forward(x, h0, Wx, Wh, b):
    _, out, (xa, h0a, Wxa, Wha, ba) = upcast(x, h0, Wx, Wh, b)
    xw = project_inputs(xa, Wxa)

    def step(s, carry):
        h, hs = carry
        h = jnp.tanh(at(xw, s) + ba + mm(h, Wha))
        return h, put(hs, h, s)

    _, hs = lax.fori_loop(0, x.shape[1], step, (h0a, jnp.zeros(xw.shape[:2] + h0a.shape[1:], h0a.dtype)))
    return hs.astype(out), hs


def rnn_fwd(x, h0, Wx, Wh, b):
    """Forward pass: one loop over time of ``h_t = tanh(xw_t + b + h_{t-1} Wh)`` on ``xw = x Wx``
    (computed for all steps in one matmul); residuals :class:`RNNResiduals`."""
    h, hs = _rnn_forward(x, h0, Wx, Wh, b)
    return h, RNNResiduals(x, h0, Wx, Wh, b, hs)


def rnn_bwd(res: RNNResiduals, g):
    """Backpropagation through time (the NumPy original's ``rnn_backward``), one reverse loop.

    Carry ``dh`` (zeros after the last step); at step ``t`` (last to first)::

        da_t = (g_t + dh) * (1 - h_t**2)      dh <- da_t Wh^T

    then, outside the loop, one matmul each: ``dx = dA Wx^T``, ``dWx = sum_t x_t^T da_t``,
    ``dWh = sum_t h_{t-1}^T da_t``, ``db = sum_{t,n} da``; ``dh0`` is the final carry.
    """
    x, h0, Wx, Wh, b, hs = res
    acc = hs.dtype
    WhT = Wh.astype(acc).T
    ga = g.astype(acc)
    t = hs.shape[1]

    def step(j, carry):
        s = t - 1 - j
        dh, dA = carry
        h_t = at(hs, s)
        da = (at(ga, s) + dh) * (1 - h_t * h_t)
        return mm(da, WhT), put(dA, da, s)

    dh0, dA = lax.fori_loop(0, t, step, (jnp.zeros_like(hs[:, 0]), jnp.zeros_like(hs)))
    h_prev = jnp.concatenate([h0.astype(acc)[:, None], hs[:, :-1]], axis=1)
    return sequence_grads(x, h0, Wx, Wh, b, dA, dA, h_prev, dh0, acc)


_rnn = custom_op(rnn_reference, rnn_fwd, rnn_bwd, primal=lambda *a: _rnn_forward(*a)[0])


def check_rnn(x, h0, Wx, Wh, b):
    """The arguments as arrays, or the error :func:`rnn` raises (see its Raises)."""
    return check_recurrent("rnn", 1, x, h0, Wx, Wh, b, sequence=True)


def rnn(x, h0, Wx, Wh, b):
    """A vanilla (tanh) RNN over a whole sequence, backpropagation through time written by hand.

    Args:
      x: inputs, batch-major, shape ``(N, T, D)``, floating dtype; ``T >= 1``.
      h0: initial hidden state, ``(N, H)``.
      Wx: input-to-hidden weights, ``(D, H)``.
      Wh: hidden-to-hidden weights, ``(H, H)``.
      b: biases, ``(H,)``.

    Returns:
      The hidden states ``h (N, T, H)`` with ``h[:, t] = tanh(x[:, t] Wx + h[:, t-1] Wh + b)``, where
      ``h[:, t-1]`` is ``h0`` at ``t = 0``; dtype the promotion of the arguments' (computed, states carried and
      gradients accumulated in float32 for bfloat16/float16, each result rounded once). N = 0 gives
      an empty ``(0, T, H)`` output and zero weight gradients.

    Raises:
      ValueError: at trace time, for an empty sequence (``T = 0``), or a rank or shape that does not
        match the above (the message names the argument and the shapes seen).
      TypeError: if an argument is not floating point or not array-like.

    Backward (``custom_vjp``): one reverse loop over time (``lax.fori_loop``) carrying ``dh``; for cotangent
    ``g (N, T, H)``, from the last step to the first::

        da_t = (g_t + dh) * (1 - h_t**2)      dh = da_t Wh^T      (dh0 = dh after step 0)

    and then, each as one matmul over all steps: ``dx = dA Wx^T``, ``dWx = sum_t x_t^T da_t``,
    ``dWh = sum_t h_{t-1}^T da_t``, ``db = sum da``. Residuals: the arguments and the hidden states
    (``T N H`` numbers).

    Source: the NumPy original's ``rnn_forward`` / ``rnn_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.rnn(jnp.ones((2, 5, 3)), jnp.zeros((2, 4)), jnp.ones((3, 4)), jnp.ones((4, 4)), jnp.zeros(4)).shape
      (2, 5, 4)
    """
    return _rnn(*check_rnn(x, h0, Wx, Wh, b))
