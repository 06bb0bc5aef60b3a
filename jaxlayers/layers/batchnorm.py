"""Batch normalisation over the batch axis of ``(N, D)`` activations.

Source of the maths: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift" (ICML 2015), and the
seed's ``batchnorm_forward`` / ``batchnorm_backward`` for the semantics
(biased batch variance, ``running = momentum * running + (1 - momentum) *
batch``, test mode normalises with the running statistics).

Deviations from the seed, on purpose:

* The train-mode backward is the simplified closed form (one pass over ``g``
  and ``x_hat``) rather than the seed's long chain through the graph.
* Test mode has its own backward, ``dx = g * gamma / sqrt(running_var + eps)``.
  The seed's ``batchnorm_backward`` applies the train-mode formula to the
  test-mode cache, which is wrong there (the running statistics do not depend
  on ``x``).
* The running statistics live in an explicit :class:`BatchNormState` that is
  returned, never mutated; they receive no gradient.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import (
    require,
    require_bool,
    require_float,
    require_rank,
    require_real,
    shape_of,
    stats_dtype,
)

__all__ = [
    "BatchNormState",
    "BatchNormTrainResiduals",
    "BatchNormEvalResiduals",
    "batchnorm",
    "batchnorm_state",
    "batchnorm_reference",
    "batchnorm_fwd",
    "batchnorm_bwd",
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
    """Train-mode residuals: ``x_hat`` (N, D, x's dtype), ``inv_std`` (D,),
    and ``gamma``, ``beta`` (the op's own arguments; ``beta`` only for its dtype)."""

    x_hat: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    beta: jax.Array


class BatchNormEvalResiduals(NamedTuple):
    """Test-mode residuals: same fields as train mode; the backward differs."""

    x_hat: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    beta: jax.Array


def _new_state(state: BatchNormState, mean, var, momentum: float) -> BatchNormState:
    new = BatchNormState(
        (momentum * state.mean + (1.0 - momentum) * mean).astype(state.mean.dtype),
        (momentum * state.var + (1.0 - momentum) * var).astype(state.var.dtype),
    )
    return jax.tree.map(lax.stop_gradient, new)


def batchnorm_reference(
    x, gamma, beta, state, *, train: bool, momentum: float = 0.9, eps: float = 1e-5, axis_name=None
):
    """Plain-``jnp`` batchnorm, differentiated by JAX (the oracle).

    Same signature and results as :func:`batchnorm`; the running statistics
    are wrapped in ``stop_gradient`` so that, like the custom rule, they carry
    no gradient. With ``axis_name`` the batch moments are ``lax.pmean``-ed.
    """
    sd = stats_dtype(x.dtype)
    xf = x.astype(sd)
    if train:
        mean = _pmean(jnp.mean(xf, axis=0), axis_name)
        var = _pmean(jnp.mean((xf - mean) ** 2, axis=0), axis_name)
        new_state = _new_state(state, mean, var, momentum)
    else:
        mean = lax.stop_gradient(state.mean).astype(sd)
        var = lax.stop_gradient(state.var).astype(sd)
        new_state = jax.tree.map(lax.stop_gradient, state)
    x_hat = (xf - mean) / jnp.sqrt(var + eps)
    out = (gamma * x_hat + beta).astype(x.dtype)
    return out, new_state


def _pmean(v, axis_name):
    return v if axis_name is None else lax.pmean(v, axis_name)


def _psum(v, axis_name):
    return v if axis_name is None else lax.psum(v, axis_name)


def _batch_stats(xf: jax.Array, axis_name=None) -> tuple[jax.Array, jax.Array]:
    """Two-pass mean and biased variance of ``xf`` over axis 0 (and ``axis_name``).

    The data are first shifted by their first row: for features with a large
    offset (mean 1e4, std 0.1 in float32) the sum of ``x - x[0]`` loses no
    digits to the offset, so the mean -- and the centred values the variance
    is built from -- keep float32 accuracy. Mathematically the shift cancels.
    Across a mapped axis the (equal-sized) shards' means are averaged, then
    the variance is taken about that global mean: still two passes.
    """
    shift = xf[0]
    mean = _pmean(shift + jnp.mean(xf - shift, axis=0), axis_name)
    xc = xf - mean
    var = _pmean(jnp.mean(xc * xc, axis=0), axis_name)
    return mean, var


def batchnorm_fwd(x, gamma, beta, state, *, train: bool, momentum: float = 0.9, eps: float = 1e-5, axis_name=None):
    """Forward pass: ``((out, new_state), residuals)``.

    Train mode: ``mu, var`` = batch mean and biased (two-pass) variance,
    ``x_hat = (x - mu) / sqrt(var + eps)``, ``out = gamma * x_hat + beta``,
    running statistics updated with ``momentum``. Test mode: the running
    statistics replace ``mu, var`` and are returned unchanged. Statistics are
    computed in at least float32. Residuals: ``x_hat`` in ``x``'s dtype, the
    ``(D,)`` vector ``inv_std``, and ``gamma``, ``beta``. With ``axis_name``
    the moments span every shard of the mapped axis.
    """
    sd = stats_dtype(x.dtype)
    xf = x.astype(sd)
    if train:
        mean, var = _batch_stats(xf, axis_name)
        new_state = _new_state(state, mean, var, momentum)
        residual_type = BatchNormTrainResiduals
    else:
        mean, var = state.mean.astype(sd), state.var.astype(sd)
        new_state = state
        residual_type = BatchNormEvalResiduals
    inv_std = lax.rsqrt(var + eps)
    x_hat = (xf - mean) * inv_std
    out = (gamma * x_hat + beta).astype(x.dtype)
    return (out, new_state), residual_type(x_hat.astype(x.dtype), inv_std, gamma, beta)


def _varies(a, axis_name) -> bool:
    """Whether ``a``'s type says it varies over the manual axis ``axis_name``
    (``shard_map`` with ``check_vma=True``); False where JAX tracks no such type."""
    aval = jax.typeof(a)
    manual = getattr(aval, "manual_axis_type", None)  # JAX >= 0.9; earlier: aval.vma
    vma = manual.varying if manual is not None else getattr(aval, "vma", frozenset())
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    return any(name in vma for name in names)


def batchnorm_bwd(residuals, g, *, axis_name=None):
    """Backward pass: ``(dx, dgamma, dbeta)`` from residuals and ``g = dL/dout``.

    With ``x_hat`` the normalised input and ``s = gamma / sqrt(var + eps)``::

        dbeta  = sum_n g
        dgamma = sum_n g * x_hat
        dx     = s * (g - (dbeta + x_hat * dgamma) / N)    # train mode
        dx     = s * g                                      # test mode

    The train-mode line is the closed form of the seed's chain rule through
    mean and variance (Ioffe & Szegedy 2015, section 3): one pass over ``g``
    and ``x_hat``. ``g`` may also be the pair ``(g_out, g_state)``; the state
    cotangent is ignored (running statistics carry no gradient).

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
    x_hat, inv_std, gamma, beta = residuals
    sd = inv_std.dtype
    gf = g.astype(sd)
    xh = x_hat.astype(sd)
    dbeta = jnp.sum(gf, axis=0)
    dgamma = jnp.sum(gf * xh, axis=0)
    scale = gamma.astype(sd) * inv_std
    if isinstance(residuals, BatchNormTrainResiduals):
        n = g.shape[0]
        if axis_name is None:
            dx = scale * (gf - (dbeta + xh * dgamma) / n)
        else:
            total_dbeta, total_dgamma = _psum((dbeta, dgamma), axis_name)
            n = n * lax.psum(1, axis_name)
            dx = scale * (gf - (total_dbeta + xh * total_dgamma) / n)
            if _varies(x_hat, axis_name) and not _varies(gamma, axis_name):
                dbeta, dgamma = total_dbeta, total_dgamma
    else:
        dx = scale * gf
    return dx.astype(x_hat.dtype), dgamma.astype(gamma.dtype), dbeta.astype(beta.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _batchnorm_vjp(x, gamma, beta, state, train, momentum, eps, axis_name):
    # Undifferentiated calls run the same forward code as differentiated ones.
    return batchnorm_fwd(x, gamma, beta, state, train=train, momentum=momentum, eps=eps, axis_name=axis_name)[0]


def _batchnorm_vjp_fwd(x, gamma, beta, state, train, momentum, eps, axis_name):
    return batchnorm_fwd(x, gamma, beta, state, train=train, momentum=momentum, eps=eps, axis_name=axis_name)


def _batchnorm_vjp_bwd(train, momentum, eps, axis_name, residuals, g):
    del train, momentum, eps  # the residuals' type carries the mode
    dx, dgamma, dbeta = batchnorm_bwd(residuals, g[0], axis_name=axis_name)
    return dx, dgamma, dbeta, None  # no gradient for the running statistics


_batchnorm_vjp.defvjp(_batchnorm_vjp_fwd, _batchnorm_vjp_bwd)
_batchnorm_jit = jax.jit(_batchnorm_vjp, static_argnums=(4, 5, 6, 7))


def _check(x, gamma, beta, state, train, momentum, eps, axis_name=None) -> tuple[float, float]:
    op = "batchnorm"
    require_rank(x, op, "x", rank=2)
    for name, arr in (("x", x), ("gamma", gamma), ("beta", beta)):
        require_float(arr, op, name)
    d = shape_of(x)[1]
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
            f"{name} must have shape ({d},) to match x's {d} features (x shape {shape_of(x)}), got {shape_of(arr)}",
        )
    require_bool(train, op, "train")
    momentum = require_real(momentum, op, "momentum")
    eps = require_real(eps, op, "eps")
    require(0.0 <= momentum <= 1.0, op, f"momentum must lie in [0, 1], got {momentum}")
    require(eps > 0.0, op, f"eps must be > 0, got {eps}")
    require(
        axis_name is None or isinstance(axis_name, str | tuple),
        op,
        f"axis_name must be None, a mapped axis name (str) or a tuple of them, got {axis_name!r}",
        TypeError,
    )
    return momentum, eps


def batchnorm(x, gamma, beta, state, *, train: bool, momentum: float = 0.9, eps: float = 1e-5, axis_name=None):
    """Batch normalisation with a hand-derived backward pass.

    Args:
      x: activations, shape ``(N, D)``, floating dtype (float16/bfloat16
        allowed: statistics are then computed in float32).
      gamma: scale, shape ``(D,)``.
      beta: shift, shape ``(D,)``.
      state: :class:`BatchNormState` of running ``mean`` and ``var``, ``(D,)``.
      train: keyword, static. ``True``: normalise with the batch mean and
        biased two-pass variance and update the running statistics;
        ``False``: normalise with the running statistics.
      momentum: keyword, static, in ``[0, 1]``: ``running = momentum *
        running + (1 - momentum) * batch``.
      eps: keyword, static, ``> 0``, added to the variance.
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
        ``state.var`` not of shape ``(D,)``; ``momentum`` outside ``[0, 1]``;
        ``eps <= 0``. Raised at trace time, naming the argument and shapes.
      TypeError: non-bool ``train``, non-number ``momentum``/``eps``, a state
        that is not a ``BatchNormState``, or non-floating arrays.

    Backward (``custom_vjp``), with ``x_hat = (x - mu) / sqrt(var + eps)`` and
    ``s = gamma / sqrt(var + eps)``::

        dbeta  = g.sum(0)
        dgamma = (g * x_hat).sum(0)
        dx     = s * (g - (dbeta + x_hat * dgamma) / N)   # train
        dx     = s * g                                     # test

    The running statistics receive no gradient. With ``N = 1`` in train mode
    the batch variance is 0, ``out = beta`` and ``dx = 0`` (finite).

    Residuals: ``x_hat`` (N x D, in ``x``'s dtype) and ``inv_std`` (D,) --
    ``gamma``/``beta`` are arguments, alive anyway.

    Source: Ioffe & Szegedy (2015); the seed's ``batchnorm_forward``.
    """
    momentum, eps = _check(x, gamma, beta, state, train, momentum, eps, axis_name)
    return _batchnorm_jit(x, gamma, beta, state, bool(train), momentum, eps, axis_name)
