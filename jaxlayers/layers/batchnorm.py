"""Batch normalisation over the batch axis of ``(N, D)`` activations.

Source of the maths: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift" (ICML 2015), and the
seed's ``batchnorm_forward`` / ``batchnorm_backward`` for the semantics
(biased batch variance, ``running = momentum * running + (1 - momentum) *
batch``, test mode normalises with the running statistics).

Deviations from the NumPy original, on purpose:

* The train-mode backward is the simplified closed form (one pass over ``g``
  and ``x_hat``) rather than the NumPy original's long chain through the graph.
* Test mode has its own backward, ``dx = g * gamma / sqrt(running_var + eps)``.
  The NumPy original's ``batchnorm_backward`` applies the train-mode formula to the
  test-mode cache, which is wrong there (the running statistics do not depend
  on ``x``).
* The running statistics live in an explicit :class:`BatchNormState` that is
  returned, never mutated; they receive no gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import (
    as_array,
    check_number,
    require,
    require_batch,
    require_bool,
    require_float,
    require_rank,
    shape_of,
    stats_dtype,
)
from jaxlayers._oprule import custom_op
from jaxlayers.layers._norm import check_eps, normalize, normalized_vjp, pmean, psum

__all__ = [
    "BatchNormState",
    "BatchNormTrainResiduals",
    "BatchNormEvalResiduals",
    "batchnorm",
    "batchnorm_state",
    "batchnorm_reference",
    "batchnorm_fwd",
    "batchnorm_bwd",
    "check_batchnorm",
]


class BatchNormState(NamedTuple):
    """Running statistics of a batchnorm layer, a pytree (never mutated).

    Attributes:
      mean: running mean, shape ``(D,)``.
      var: running (biased) variance, shape ``(D,)``.
    """

    mean: jax.Array
    var: jax.Array


def batchnorm_state(num_features: int, dtype=jnp.float32) -> BatchNormState:
    """Fresh running statistics: ``mean = 0``, ``var = 1``, shape ``(num_features,)``."""
    return BatchNormState(jnp.zeros((num_features,), dtype), jnp.ones((num_features,), dtype))


class BatchNormTrainResiduals(NamedTuple):
    """Train-mode residuals: ``x_hat`` (N, D) in the statistics dtype (``x``'s
    dtype, but float32 for float16/bfloat16 ``x``: a half-precision ``x_hat``
    would put its rounding error into every backward sum), ``inv_std`` (D,),
    and ``gamma``, ``beta`` (the op's own arguments; ``beta`` only for its dtype)."""

    x_hat: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    beta: jax.Array


class BatchNormEvalResiduals(NamedTuple):
    """Test-mode residuals: ``x`` itself (an input, alive anyway), the running
    ``mean`` and ``inv_std`` (D,), ``gamma``, ``beta``. ``x_hat`` is recomputed
    inside the ``dgamma`` sum: the forward pass writes nothing but ``out``."""

    x: jax.Array
    mean: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    beta: jax.Array


def _new_state(state: BatchNormState, mean, var, momentum: float) -> BatchNormState:
    new = BatchNormState(
        (momentum * state.mean + (1.0 - momentum) * mean).astype(state.mean.dtype),
        (momentum * state.var + (1.0 - momentum) * var).astype(state.var.dtype),
    )
    return jax.tree.map(lax.stop_gradient, new)


def _stat_axes(ndim: int, channel_axis: int = 1) -> tuple[int, ...]:
    """Every axis but the channel axis: ``(0,)`` for ``(N, D)``, ``(0, 2, 3)`` for NCHW, ``(0, 1, 2)`` for NHWC."""
    return tuple(a for a in range(ndim) if a != channel_axis)


def _channel(v, ndim: int, channel_axis: int = 1):
    """A ``(C,)`` vector shaped to broadcast along axis ``channel_axis`` of an ``ndim``-D array."""
    return v.reshape((1,) * channel_axis + (-1,) + (1,) * (ndim - channel_axis - 1))


def batchnorm_reference(
    x, gamma, beta, state, *, train: bool, momentum: float = 0.9, eps: float = 1e-5, axis_name=None
):
    """Plain-``jnp`` batchnorm, differentiated by JAX (the oracle).

    Same signature and results as :func:`batchnorm`; the running statistics
    are wrapped in ``stop_gradient`` so that, like the custom rule, they carry
    no gradient. With ``axis_name`` the batch moments are ``lax.pmean``-ed.
    Statistics are over every axis of ``x`` but axis 1, so the same function
    is the oracle for ``spatial_batchnorm`` on NCHW input.
    """
    return _reference(x, gamma, beta, state, train, momentum, eps, axis_name, 1)


def _reference(x, gamma, beta, state, train, momentum, eps, axis_name, channel_axis):
    """:func:`batchnorm_reference` with the channel axis ``channel_axis`` (3: NHWC ``spatial_batchnorm``)."""
    sd = stats_dtype(x.dtype)
    xf = x.astype(sd)
    axes, nd = _stat_axes(x.ndim, channel_axis), x.ndim

    def ch(v):
        return _channel(v, nd, channel_axis)

    if train:
        mean = pmean(jnp.mean(xf, axis=axes), axis_name)
        var = pmean(jnp.mean((xf - ch(mean)) ** 2, axis=axes), axis_name)
        new_state = _new_state(state, mean, var, momentum)
    else:
        mean = lax.stop_gradient(state.mean).astype(sd)
        var = lax.stop_gradient(state.var).astype(sd)
        new_state = jax.tree.map(lax.stop_gradient, state)
    x_hat = (xf - ch(mean)) / jnp.sqrt(ch(var) + eps)
    out = (ch(gamma) * x_hat + ch(beta)).astype(x.dtype)
    return out, new_state


def batchnorm_fwd(
    x,
    gamma,
    beta,
    state,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis_name=None,
    channel_axis: int = 1,
):
    """Forward pass: ``((out, new_state), residuals)``.

    Train mode: ``mu, var`` = batch mean and biased (two-pass) variance,
    ``x_hat = (x - mu) / sqrt(var + eps)``, ``out = gamma * x_hat + beta``,
    running statistics updated with ``momentum`` (in float32 at least, stored
    in the state's dtype). Test mode: the running statistics replace ``mu,
    var`` and are returned unchanged. Statistics are computed in at least
    float32, without overflow for any finite input (see
    :func:`jaxlayers.layers._norm.normalize`). Residuals (train): ``x_hat`` in
    the statistics dtype (``x``'s, or float32 for half-precision ``x``), the
    ``(D,)`` vector ``inv_std``, and ``gamma``, ``beta``;
    (test): ``x`` itself, the running ``mean`` and ``inv_std``. With
    ``axis_name`` the moments span every shard of the mapped axis.

    Rank-generic: statistics are over every axis but ``channel_axis`` (1
    unless given), so this is also ``spatial_batchnorm``'s forward pass on
    ``(N, C, H, W)``, and with ``channel_axis=3`` on ``(N, H, W, C)``.
    """
    sd = stats_dtype(x.dtype)
    xf = x.astype(sd)
    nd = x.ndim

    def _ch(v, nd):
        return _channel(v, nd, channel_axis)

    if train:
        x_hat, inv_std, mean, var = normalize(xf, _stat_axes(nd, channel_axis), eps, axis_name)
        inv_std = inv_std.reshape(-1)
        new_state = _new_state(state, mean.reshape(-1), var.reshape(-1), momentum)
        residuals = BatchNormTrainResiduals(x_hat, inv_std, gamma, beta)
    else:
        mean, var = state.mean.astype(sd), state.var.astype(sd)
        inv_std = lax.rsqrt(var + eps)
        x_hat = (xf - _ch(mean, nd)) * _ch(inv_std, nd)
        new_state = state
        residuals = BatchNormEvalResiduals(x, mean, inv_std, gamma, beta)
    out = (_ch(gamma, nd) * x_hat + _ch(beta, nd)).astype(x.dtype)
    return (out, new_state), residuals


def _varies(a, axis_name) -> bool:
    """Whether ``a``'s type says it varies over the manual axis ``axis_name``
    (``shard_map`` with ``check_vma=True``); False where JAX tracks no such type."""
    aval = jax.typeof(a)
    manual = getattr(aval, "manual_axis_type", None)  # JAX >= 0.9; earlier: aval.vma
    vma = manual.varying if manual is not None else getattr(aval, "vma", frozenset())
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    return any(name in vma for name in names)


def batchnorm_bwd(residuals, g, *, axis_name=None, channel_axis: int = 1):
    """Backward pass: ``(dx, dgamma, dbeta)`` from residuals and ``g = dL/dout``.

    With ``x_hat`` the normalised input and ``s = gamma / sqrt(var + eps)``::

        dbeta  = sum_n g
        dgamma = sum_n g * x_hat
        dx     = s * (g - (dbeta + x_hat * dgamma) / N)    # train mode
        dx     = s * g                                      # test mode

    The train-mode line is the closed form of the NumPy original's chain rule through
    mean and variance (Ioffe & Szegedy 2015, section 3): one pass over ``g``
    and ``x_hat``. ``g`` may also be the pair ``(g_out, g_state)``; the state
    cotangent is ignored (running statistics carry no gradient). Arithmetic is
    in float32 at least; the cotangents are cast to their arguments' dtypes
    once, at the end (``dx`` to ``g``'s dtype, which is ``out``'s and so
    ``x``'s: the train-mode ``x_hat`` may be wider than ``x``).

    Rank-generic like :func:`batchnorm_fwd`: on NCHW residuals the sums run
    over ``(n, h, w)`` and ``N`` is ``N * H * W`` (``spatial_batchnorm``);
    ``channel_axis=3`` for NHWC residuals (sums over axes ``(0, 1, 2)``).

    With ``axis_name`` (train mode), ``N`` is the global batch and the two
    sums inside ``dx`` are ``lax.psum``-ed, so each shard gets its rows of the
    global ``dx``. ``dgamma``/``dbeta`` are this shard's share -- JAX sums the
    shares when it transposes the replication of ``gamma`` (``vmap``, ``pmap``,
    ``shard_map(check_vma=False)``) -- except where ``gamma`` is typed as
    invariant over the axis while ``x`` varies (``shard_map``'s default
    ``check_vma=True``): its cotangent must then be invariant, so the shares
    are ``psum``-ed here.
    """
    if isinstance(g, tuple):
        g = g[0]
    x_like, inv_std, gamma, beta = residuals[0], residuals.inv_std, residuals.gamma, residuals.beta
    nd = x_like.ndim
    x_dtype = g.dtype if isinstance(residuals, BatchNormTrainResiduals) else x_like.dtype
    axes = _stat_axes(nd, channel_axis)
    inv_std_b, gamma_b = _channel(inv_std, nd, channel_axis), _channel(gamma, nd, channel_axis)
    if isinstance(residuals, BatchNormTrainResiduals):
        dx, dgamma, dbeta = normalized_vjp(g, x_like, inv_std_b, gamma_b, axes, axes, axis_name)
        if axis_name is not None and _varies(x_like, axis_name) and not _varies(gamma, axis_name):
            dgamma, dbeta = psum((dgamma, dbeta), axis_name)
    else:
        sd = inv_std.dtype
        gf = g.astype(sd)
        x_hat = (x_like.astype(sd) - _channel(residuals.mean, nd, channel_axis)) * inv_std_b
        dbeta = jnp.sum(gf, axis=axes)
        dgamma = jnp.sum(gf * x_hat, axis=axes)
        dx = (gamma_b.astype(sd) * inv_std_b) * gf
    return dx.astype(x_dtype), dgamma.reshape(-1).astype(gamma.dtype), dbeta.reshape(-1).astype(beta.dtype)


_batchnorm = custom_op(
    batchnorm_reference,
    batchnorm_fwd,
    batchnorm_bwd,
    static=("train", "momentum", "eps", "axis_name"),
    nondiff=("state",),  # running statistics carry no gradient
)


def check_batchnorm(
    x,
    gamma,
    beta,
    state,
    train,
    momentum,
    eps,
    axis_name=None,
    *,
    op: str = "batchnorm",
    rank: int = 2,
    channel_axis: int = 1,
):
    """``(x, gamma, beta, state, train, momentum, eps, axis_name)`` as the rule
    takes them -- arrays, a state of arrays, a bool and two floats -- or the
    error :func:`batchnorm` (``rank=2``) or ``spatial_batchnorm`` (``rank=4``,
    ``op="spatial_batchnorm"``) raises (see their Raises). Lists and NumPy
    arrays (a ``BatchNormState``'s fields too) become arrays before anything
    is traced."""
    x, gamma, beta = as_array(x, op, "x"), as_array(gamma, op, "gamma"), as_array(beta, op, "beta")
    if isinstance(state, BatchNormState):
        state = BatchNormState(as_array(state.mean, op, "state.mean"), as_array(state.var, op, "state.var"))
    require_rank(x, op, "x", rank=rank)
    for name, arr in (("x", x), ("gamma", gamma), ("beta", beta)):
        require_float(arr, op, name)
    shape = shape_of(x)
    d = shape[channel_axis]
    what = "features" if rank == 2 else "channels"
    layout = "" if rank == 2 else f", data_format {'NCHW' if channel_axis == 1 else 'NHWC'!r}"
    require(
        isinstance(state, BatchNormState),
        op,
        f"state must be a jaxlayers.BatchNormState (see batchnorm_state({d})), got {type(state).__name__}",
        TypeError,
    )
    for name, arr in (("gamma", gamma), ("beta", beta), ("state.mean", state.mean), ("state.var", state.var)):
        require(
            shape_of(arr) == (d,),
            op,
            f"{name} must have shape ({d},) to match x's {d} {what} (x shape {shape}{layout}), got {shape_of(arr)}",
        )
    for name, arr in (("state.mean", state.mean), ("state.var", state.var)):
        dtype = jnp.result_type(arr)
        require(
            jnp.issubdtype(dtype, jnp.floating),
            op,
            f"{name} must have a floating dtype (float32 recommended: see batchnorm_state({d})), got {dtype}; "
            "an integer state would silently truncate the running statistics",
            TypeError,
        )
    require_bool(train, op, "train")
    momentum = check_number(momentum, op, "momentum")
    require(0.0 <= momentum <= 1.0, op, f"momentum must lie in [0, 1], got {momentum}")
    eps = check_eps(eps, op)
    require(
        axis_name is None or isinstance(axis_name, str | tuple),
        op,
        f"axis_name must be None, a mapped axis name (str) or a tuple of them, got {axis_name!r}",
        TypeError,
    )
    if train:
        require_batch(x, op, "x", "the train-mode batch mean")
        count = math.prod(shape[a] for a in _stat_axes(rank, channel_axis))
        require(
            count > 0,
            op,
            f"train mode needs at least one example to compute batch statistics, got x of shape {shape}",
        )
    return x, gamma, beta, state, bool(train), momentum, eps, axis_name


def batchnorm(x, gamma, beta, state, *, train: bool, momentum: float = 0.9, eps: float = 1e-5, axis_name=None):
    """Batch normalisation with a hand-derived backward pass.

    Args:
      x: activations, shape ``(N, D)``, floating dtype (float16/bfloat16
        allowed: statistics and the backward pass are then computed in
        float32). Arrays, NumPy arrays or nested lists of numbers (converted
        once, before tracing, as for every op).
      gamma: scale, shape ``(D,)``.
      beta: shift, shape ``(D,)``.
      state: :class:`BatchNormState` of running ``mean`` and ``var``, ``(D,)``,
        a floating dtype. Keep it float32 whatever ``x``'s dtype
        (:func:`batchnorm_state`'s default, as PyTorch AMP and Flax do): the
        average is updated in float32 and stored in the state's dtype, so a
        bfloat16 state stalls once ``(1 - momentum) * (batch - running)``
        falls below half its spacing (a few percent short of the mean).
      train: keyword, static. ``True``: normalise with the batch mean and
        biased two-pass variance and update the running statistics;
        ``False``: normalise with the running statistics.
      momentum: keyword, static, in ``[0, 1]``: ``running = momentum *
        running + (1 - momentum) * batch``.
      eps: keyword, static, finite and ``> 0``, added to the variance.
      axis_name: keyword, static: a mapped axis name (``shard_map``, ``pmap``,
        ``vmap(..., axis_name=)``) or tuple of them. The train-mode batch mean
        and variance then span the global batch -- every shard's rows, shards
        of equal size -- and the backward pass ``psum``-s its two sums to
        match. Under ``vmap`` take the gradient inside the map
        (``vmap(grad(f))``): JAX cannot transpose a ``custom_vjp`` whose rule
        uses collectives from outside a ``vmap`` (jax-ml/jax#7047).

    Returns:
      ``(out, new_state)``: ``out = gamma * (x - mu) / sqrt(var + eps) +
      beta``, shape ``(N, D)``, ``x``'s dtype; ``new_state`` the updated (train)
      or unchanged (test) :class:`BatchNormState`, in the state's dtype.

    Raises:
      ValueError: ``x`` not 2-D; ``gamma``, ``beta``, ``state.mean`` or
        ``state.var`` not of shape ``(D,)``; ``momentum`` outside ``[0, 1]``
        (or NaN); ``eps`` not finite or ``<= 0``; ``N = 0`` in train mode
        (``batchnorm: the train-mode batch mean over an empty batch is
        undefined: x has shape (0, D)``). Raised at trace time, naming the
        argument and shapes.
      TypeError: non-bool ``train``, non-number ``momentum``/``eps``, a state
        that is not a ``BatchNormState``, or non-floating arrays (an integer
        ``state.mean``/``state.var`` included).

    Backward (``custom_vjp``), with ``x_hat = (x - mu) / sqrt(var + eps)`` and
    ``s = gamma / sqrt(var + eps)``::

        dbeta  = g.sum(0)
        dgamma = (g * x_hat).sum(0)
        dx     = s * (g - (dbeta + x_hat * dgamma) / N)   # train
        dx     = s * g                                     # test

    The running statistics receive no gradient. With ``N = 1`` in train mode
    the batch variance is 0, ``out = beta`` and ``dx = 0`` (finite). Finite
    input never overflows the statistics: float32 features of magnitude up to
    3e38 are standardised correctly (only a variance beyond float32's range
    enters the running state as ``inf``). In test mode ``N = 0`` gives an
    empty output (and empty ``dx``).

    Residuals: train mode ``x_hat`` (N x D) and ``inv_std`` (D,); ``x_hat`` is
    in ``x``'s dtype, but in float32 for float16/bfloat16 ``x`` (twice the
    bytes of ``x``: the price of a backward pass within one half-precision
    rounding of the float32 one). Test mode only (D,) vectors beside ``x`` --
    ``x``, ``gamma``, ``beta`` are arguments, alive anyway.

    Source: Ioffe & Szegedy (2015); the NumPy original's ``batchnorm_forward``.
    """
    x, gamma, beta, state, train, momentum, eps, axis_name = check_batchnorm(
        x, gamma, beta, state, train, momentum, eps, axis_name
    )
    return _batchnorm(x, gamma, beta, state, train=train, momentum=momentum, eps=eps, axis_name=axis_name)
