"""Layer normalisation of ``(N, D)`` activations: statistics per example over its ``D`` features.

Source of the maths: Ba, Kiros & Hinton, "Layer Normalization" (arXiv:1607.06450,
2016): the mean and variance of each example's own features replace
batchnorm's batch statistics, so training and test compute the same thing
and there are no running statistics. The NumPy original's
``layernorm_forward`` / ``layernorm_backward`` define the semantics (biased
variance, ``eps`` inside the square root, per-feature ``gamma``/``beta``).

The backward pass is batchnorm's closed form with the roles of the axes
swapped: the statistics are over a row while ``gamma`` varies along it, so the
inner sums carry ``gamma`` (see :func:`layernorm_bwd`). The two helpers
:func:`_grouped_fwd` / :func:`_grouped_bwd` (statistics over some axes of
each example, ``gamma`` along others) are shared with group norm.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlayers._checks import as_array, require, require_float, require_rank, shape_of, stats_dtype
from jaxlayers._oprule import custom_op
from jaxlayers.layers._norm import check_eps, normalize, normalized_vjp

__all__ = [
    "LayerNormResiduals",
    "layernorm",
    "layernorm_reference",
    "layernorm_fwd",
    "layernorm_bwd",
    "check_layernorm",
]


class LayerNormResiduals(NamedTuple):
    """Residuals: ``x_hat`` (N, D; ``x``'s dtype, float32 for half-precision ``x``),
    ``inv_std`` (N,), and ``gamma``, ``beta``."""

    x_hat: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    beta: jax.Array


def _grouped_fwd(xg, gamma_b, beta_b, stat_axes, eps):
    """``(out, x_hat, inv_std)`` of a per-example norm on the view ``xg``.

    ``xg`` is ``x`` reshaped so each reduction set is ``stat_axes`` of one
    example (layer norm: ``(N, D)`` over ``(1,)``; group norm: ``(N, G, C/G, H,
    W)`` over ``(2, 3, 4)``); ``gamma_b``/``beta_b`` broadcast against it.
    Statistics, ``x_hat`` and ``out`` are computed in at least float32;
    ``inv_std`` keeps the reduced axes. ``x_hat`` is returned in that dtype
    (float32 for half-precision ``x``: rounded to the input dtype it would
    put a half-precision error into every backward sum), ``out`` in ``x``'s.
    """
    sd = stats_dtype(xg.dtype)
    x_hat, inv_std, _, _ = normalize(xg.astype(sd), stat_axes, eps)
    out = gamma_b.astype(sd) * x_hat + beta_b.astype(sd)
    return out.astype(xg.dtype), x_hat, inv_std


def _grouped_bwd(g, x_hat, inv_std, gamma_b, stat_axes, param_axes):
    """``(dx, dgamma, dbeta)`` for :func:`_grouped_fwd`, shapes as its views.

    ``dx = inv_std * (gg - (sum_R gg + x_hat * sum_R gg * x_hat) / M)`` with
    ``gg = g * gamma``; ``dgamma``, ``dbeta`` summed over ``param_axes``. In
    float32 at least; ``dx`` cast here to ``g``'s dtype (``out``'s, i.e.
    ``x``'s: ``x_hat`` may be wider), the parameter cotangents by the caller.
    """
    dx, dgamma, dbeta = normalized_vjp(g, x_hat, inv_std, gamma_b, stat_axes, param_axes)
    return dx.astype(g.dtype), dgamma, dbeta


def layernorm_reference(x, gamma, beta, *, eps: float = 1e-5):
    """Plain-``jnp`` layer norm, differentiated by JAX (the oracle): same signature and results."""
    sd = stats_dtype(x.dtype)
    xf = x.astype(sd)
    mean = jnp.mean(xf, axis=1, keepdims=True)
    var = jnp.mean((xf - mean) ** 2, axis=1, keepdims=True)
    return (gamma * (xf - mean) / jnp.sqrt(var + eps) + beta).astype(x.dtype)


def layernorm_fwd(x, gamma, beta, *, eps: float = 1e-5):
    """Forward pass: ``(out, residuals)``.

    Per row ``n``: ``mu_n``, ``var_n`` the mean and biased two-pass variance of
    ``x[n]`` (in at least float32, no overflow for finite input), ``x_hat =
    (x - mu_n) / sqrt(var_n + eps)``, ``out = gamma * x_hat + beta``.
    Residuals: :class:`LayerNormResiduals` -- ``x_hat`` (N, D) in ``x``'s
    dtype (float32 for half-precision ``x``), ``inv_std`` (N,), ``gamma``,
    ``beta``.
    """
    out, x_hat, inv_std = _grouped_fwd(x, gamma[None], beta[None], (1,), eps)
    return out, LayerNormResiduals(x_hat, inv_std[:, 0], gamma, beta)


def layernorm_bwd(residuals, g):
    """Backward pass: ``(dx, dgamma, dbeta)`` from residuals and ``g = dL/dout``.

    With ``gg = g * gamma`` (broadcast over rows) and sums over each row's
    ``D`` features::

        dbeta  = sum_n g
        dgamma = sum_n g * x_hat
        dx     = inv_std_n * (gg - (sum_d gg + x_hat * sum_d gg * x_hat) / D)

    (batchnorm's closed form over the row; Ba et al. 2016). In float32 at
    least, cast once at the end.
    """
    x_hat, inv_std, gamma, beta = residuals
    dx, dgamma, dbeta = _grouped_bwd(g, x_hat, inv_std[:, None], gamma[None], (1,), (0,))
    return dx, dgamma[0].astype(gamma.dtype), dbeta[0].astype(beta.dtype)


_layernorm = custom_op(layernorm_reference, layernorm_fwd, layernorm_bwd, static=("eps",))


def check_layernorm(x, gamma, beta, eps):
    """``(x, gamma, beta, eps)`` as :func:`layernorm`'s rule takes them (arrays,
    a float), or the error :func:`layernorm` raises (see its Raises)."""
    op = "layernorm"
    x, gamma, beta = as_array(x, op, "x"), as_array(gamma, op, "gamma"), as_array(beta, op, "beta")
    require_rank(x, op, "x", rank=2)
    for name, arr in (("x", x), ("gamma", gamma), ("beta", beta)):
        require_float(arr, op, name)
    shape = shape_of(x)
    d = shape[1]
    for name, arr in (("gamma", gamma), ("beta", beta)):
        require(
            shape_of(arr) == (d,),
            op,
            f"{name} must have shape ({d},) to match x's {d} features (x shape {shape}), got {shape_of(arr)}",
        )
    require(d > 0, op, f"x needs at least one feature per example to normalise over, got x of shape {shape}")
    return x, gamma, beta, check_eps(eps, op)


def layernorm(x, gamma, beta, *, eps: float = 1e-5):
    """Layer normalisation with a hand-derived backward pass.

    Args:
      x: activations, shape ``(N, D)``, floating dtype (float16/bfloat16
        allowed: statistics and the backward pass are then in float32).
        Arrays, NumPy arrays or nested lists of numbers.
      gamma: scale, shape ``(D,)``.
      beta: shift, shape ``(D,)``.
      eps: keyword, static, finite and ``> 0``, added to the variance.

    Returns:
      ``out = gamma * (x - mu_n) / sqrt(var_n + eps) + beta``, shape ``(N, D)``,
      ``x``'s dtype, with ``mu_n``, ``var_n`` the mean and biased variance of
      row ``n``. The same in training and at test time; no running statistics.
      ``N = 0`` gives an empty output; a constant row gives ``beta`` exactly.

    Raises:
      ValueError: ``x`` not 2-D; ``gamma`` or ``beta`` not ``(D,)``; ``D = 0``;
        ``eps`` not finite or ``<= 0``. At trace time, naming the shapes.
      TypeError: non-floating arrays; non-number ``eps``.

    Backward (``custom_vjp``), ``gg = g * gamma``, row sums over ``d``::

        dbeta  = g.sum(0)
        dgamma = (g * x_hat).sum(0)
        dx     = inv_std_n * (gg - (gg.sum(1) + x_hat * (gg * x_hat).sum(1)) / D)

    Residuals: ``x_hat`` (N x D, ``x``'s dtype; float32 for float16/bfloat16
    ``x``, twice ``x``'s bytes, so that the backward pass is float32's rounded
    once) and ``inv_std`` (N,).

    Source: Ba, Kiros & Hinton (2016); the NumPy original's ``layernorm_forward``.
    """
    x, gamma, beta, eps = check_layernorm(x, gamma, beta, eps)
    return _layernorm(x, gamma, beta, eps=eps)
