"""Maths shared by the normalisation layers: statistics, ``x_hat``, and the backward pass.

Every normalisation op standardises ``x`` over a *reduction set* ``R`` of
``M`` elements -- batchnorm over the batch (axis 0), spatial batchnorm over
``(N, H, W)``, layer norm over each example's features, group norm over each
example's group of channels -- and then applies a per-channel ``gamma`` and
``beta``. This module holds the two pieces they all share:

* :func:`normalize`: mean, biased two-pass variance, ``x_hat`` and
  ``1 / sqrt(var + eps)`` over given axes, computed so that no intermediate
  overflows when the input is finite (see its docstring);
* :func:`normalized_vjp`: the closed-form backward pass

      dx = inv_std / M * (M * g*gamma - sum_R(g*gamma) - x_hat * sum_R(g*gamma * x_hat))

  (Ioffe & Szegedy 2015, section 3; the same line for layer norm, Ba et al.
  2016, and group norm, Wu & He 2018, where ``gamma`` varies inside ``R``).

Both take an optional ``axis_name`` so batch statistics can span a mapped
axis (``shard_map``, ``pmap``, ``vmap(axis_name=)``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import check_number, require

__all__ = ["Normalized", "check_eps", "normalize", "normalized_vjp", "pmean", "psum"]


def pmean(v, axis_name):
    return v if axis_name is None else lax.pmean(v, axis_name)


def psum(v, axis_name):
    return v if axis_name is None else lax.psum(v, axis_name)


def _pmax(v, axis_name):
    return v if axis_name is None else lax.pmax(v, axis_name)


def _pmin(v, axis_name):
    return v if axis_name is None else lax.pmin(v, axis_name)


class Normalized(NamedTuple):
    """What :func:`normalize` returns; statistics keep the reduced axes (size 1).

    Attributes:
      x_hat: ``(x - mean) / sqrt(var + eps)``, ``x``'s shape and dtype.
      inv_std: ``1 / sqrt(var + eps)``.
      mean: the mean.
      var: the biased variance; ``inf`` only where it exceeds the dtype's range
        (``x_hat`` and ``inv_std`` stay finite then).
    """

    x_hat: jax.Array
    inv_std: jax.Array
    mean: jax.Array
    var: jax.Array


def _pow2(e, like):
    return jnp.ldexp(jnp.ones_like(like), e)


def normalize(xf: jax.Array, axes: tuple[int, ...], eps: float, axis_name=None) -> Normalized:
    """Standardise ``xf`` over ``axes`` (and ``axis_name``): two passes, no overflow.

    The statistics are taken in units of ``s``, a power of two at least the
    spread ``max(x) - min(x)`` of each reduction set (and at least 1)::

        c      = max/2 + min/2                    # a point inside the data
        mean_s = c/s + mean(x/s - c/s)            # pass 1 (about c: no digits lost to an offset)
        d      = x/s - mean_s                     # |d| <= 1: its square cannot overflow
        var_s  = mean(d * d)                      # pass 2: the two-pass (centred) variance
        x_hat  = d / sqrt(var_s + eps / s^2)      # == (x - mean) / sqrt(var + eps)
        mean, var, inv_std = s * mean_s, s^2 * var_s, 1 / (s * sqrt(var_s + eps / s^2))

    Multiplying by a power of two is exact, so for ordinary data this is the
    plain two-pass computation to the last bit or so; for float32 features of
    magnitude 1e19..3e38, whose squares overflow, ``x_hat`` and ``inv_std`` stay
    finite and right (only ``var`` itself, beyond float32's range, is ``inf``).
    A constant set has ``d == 0`` exactly, so ``x_hat == 0`` exactly. ``s`` is
    capped at ``2**(maxexp - 28)`` so that ``1 / s`` is a normal number (``|d|``
    is then at most ``2**29``, its square still far from overflow).

    With ``axis_name`` the spread, mean and variance span every shard (the
    shards hold equal numbers of elements).
    """
    finfo = jnp.finfo(xf.dtype)
    hi = _pmax(jnp.max(xf, axis=axes, keepdims=True), axis_name)
    lo = _pmin(jnp.min(xf, axis=axes, keepdims=True), axis_name)
    half = 0.5
    centre = hi * half + lo * half
    # half_spread = m * 2**e with m in [0.5, 1): the spread is below 2**(e + 1).
    _, e = jnp.frexp(hi * half - lo * half)
    e = jnp.clip(e + 1, 0, finfo.maxexp - 28)
    scale, inv_scale = _pow2(e, hi), _pow2(-e, hi)
    cs = centre * inv_scale
    mean_s = cs + pmean(jnp.mean(xf * inv_scale - cs, axis=axes, keepdims=True), axis_name)
    d = xf * inv_scale - mean_s
    var_s = pmean(jnp.mean(d * d, axis=axes, keepdims=True), axis_name)
    inv_std_s = lax.rsqrt(var_s + eps * inv_scale * inv_scale)
    return Normalized(d * inv_std_s, inv_std_s * inv_scale, mean_s * scale, var_s * scale * scale)


def normalized_vjp(g, x_hat, inv_std, gamma, stat_axes, param_axes, axis_name=None):
    """``(dx, dgamma, dbeta)`` of ``out = gamma * x_hat + beta`` through the statistics.

    All arrays broadcast against ``x_hat`` (``inv_std`` keeps the reduced axes,
    ``gamma`` its channel axes); ``stat_axes`` is the reduction set ``R`` of the
    statistics (``M`` elements), ``param_axes`` the axes ``gamma`` is shared
    over. With ``gg = g * gamma``::

        dbeta  = sum_{param_axes} g
        dgamma = sum_{param_axes} g * x_hat
        dx     = inv_std * (gg - (sum_R gg + x_hat * sum_R (gg * x_hat)) / M)

    Where ``R`` is the parameter axes (batch norms: ``gamma`` is constant on
    ``R``) the two inner sums are ``gamma * dbeta`` and ``gamma * dgamma``: one
    pass over ``g`` and ``x_hat`` for all three cotangents. With ``axis_name``
    the inner sums and ``M`` span every shard; ``dgamma``/``dbeta`` are this
    shard's share (the caller decides whether to ``psum`` them). Everything is
    in the dtype of ``inv_std`` (at least float32); the caller casts.
    """
    sd = inv_std.dtype
    gf, xh, gm = g.astype(sd), x_hat.astype(sd), gamma.astype(sd)
    dbeta = jnp.sum(gf, axis=param_axes, keepdims=True)
    dgamma = jnp.sum(gf * xh, axis=param_axes, keepdims=True)
    m = math.prod(x_hat.shape[a] for a in stat_axes)
    if tuple(stat_axes) == tuple(param_axes):
        sum_gg, sum_ggx = psum((dbeta, dgamma), axis_name)
        sum_gg, sum_ggx = gm * sum_gg, gm * sum_ggx
    else:
        gg = gf * gm
        sum_gg = psum(jnp.sum(gg, axis=stat_axes, keepdims=True), axis_name)
        sum_ggx = psum(jnp.sum(gg * xh, axis=stat_axes, keepdims=True), axis_name)
    if axis_name is not None:
        m = m * lax.psum(1, axis_name)
    dx = inv_std * (gf * gm - (sum_gg + xh * sum_ggx) / m)
    return dx, dgamma, dbeta


def check_eps(eps, op: str) -> float:
    """``eps`` as a float: a Python number, finite and ``> 0``."""
    eps = check_number(eps, op, "eps")  # finite
    require(eps > 0.0, op, f"eps must be > 0, got {eps}")
    return eps
