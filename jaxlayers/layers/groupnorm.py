"""Group normalisation of ``(N, C, H, W)`` (or ``(N, H, W, C)``) activations: statistics per example per group of channels.

Source of the maths: Wu & He, "Group Normalization" (ECCV 2018): the ``C``
channels are split into ``groups`` consecutive groups of ``C // groups``; each
example's group is standardised by its own mean and biased variance over
``(C // groups, H, W)``, then scaled and shifted per channel. ``groups = 1`` is
layer norm over ``(C, H, W)``; ``groups = C`` is instance norm. Like layer
norm it has no running statistics and does not depend on the batch.

It runs on layer norm's per-example helpers
(:func:`jaxlayers.layers.layernorm._grouped_fwd` / ``_grouped_bwd``) on the
view ``(N, G, C // G, H, W)``: a reshape, no copy. Channels last
(``data_format="NHWC"``), the view is ``(N, H, W, G, C // G)``, again a
reshape of the array as it is.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlayers._checks import (
    as_array,
    channel_axis,
    check_data_format,
    is_int,
    require,
    require_float,
    require_rank,
    shape_of,
    stats_dtype,
)
from jaxlayers._oprule import custom_op
from jaxlayers.layers._norm import check_eps
from jaxlayers.layers.layernorm import _grouped_bwd, _grouped_fwd

__all__ = [
    "GroupNormResiduals",
    "groupnorm",
    "groupnorm_reference",
    "groupnorm_fwd",
    "groupnorm_bwd",
    "check_groupnorm",
]

#: Axes of the views: NCHW ``(N, G, C // G, H, W)``, NHWC ``(N, H, W, G, C // G)``.
_STAT_AXES = {"NCHW": (2, 3, 4), "NHWC": (1, 2, 4)}
_PARAM_AXES = {"NCHW": (0, 3, 4), "NHWC": (0, 1, 2)}


class GroupNormResiduals(NamedTuple):
    """Residuals: ``x_hat`` (``x``'s shape, ``(N, C, H, W)`` or ``(N, H, W, C)``; ``x``'s dtype,
    float32 for half-precision ``x``), ``inv_std`` (N, G), and ``gamma``, ``beta``."""

    x_hat: jax.Array
    inv_std: jax.Array
    gamma: jax.Array
    beta: jax.Array


def _view(a, groups: int, data_format: str = "NCHW"):
    if data_format == "NHWC":
        n, h, w, c = a.shape
        return a.reshape(n, h, w, groups, c // groups)
    n, c, h, w = a.shape
    return a.reshape(n, groups, c // groups, h, w)


def _param_view(p, groups: int, data_format: str = "NCHW"):
    return p.reshape(1, 1, 1, groups, -1) if data_format == "NHWC" else p.reshape(1, groups, -1, 1, 1)


def _inv_std_view(inv_std, data_format: str):
    """``inv_std (N, G)`` shaped to broadcast against the view."""
    return inv_std[:, None, None, :, None] if data_format == "NHWC" else inv_std[:, :, None, None, None]


def groupnorm_reference(x, gamma, beta, *, groups: int, eps: float = 1e-5, data_format: str = "NCHW"):
    """Plain-``jnp`` group norm, differentiated by JAX (the oracle): same signature and results."""
    sd = stats_dtype(x.dtype)
    xg = _view(x.astype(sd), groups, data_format)
    axes = _STAT_AXES[data_format]
    mean = jnp.mean(xg, axis=axes, keepdims=True)
    var = jnp.mean((xg - mean) ** 2, axis=axes, keepdims=True)
    gamma_b, beta_b = _param_view(gamma, groups, data_format), _param_view(beta, groups, data_format)
    out = gamma_b * (xg - mean) / jnp.sqrt(var + eps) + beta_b
    return out.reshape(x.shape).astype(x.dtype)


def groupnorm_fwd(x, gamma, beta, *, groups: int, eps: float = 1e-5, data_format: str = "NCHW"):
    """Forward pass: ``(out, residuals)``.

    On the view ``(N, G, C/G, H, W)``: ``mu_ng``, ``var_ng`` the mean and biased
    two-pass variance of example ``n``'s group ``g`` (in at least float32, no
    overflow for finite input), ``x_hat = (x - mu_ng) / sqrt(var_ng + eps)``,
    ``out = gamma_c * x_hat + beta_c``. Residuals: :class:`GroupNormResiduals`
    -- ``x_hat`` (N, C, H, W) in ``x``'s dtype (float32 for half-precision
    ``x``), ``inv_std`` (N, G), ``gamma``, ``beta``. ``data_format="NHWC"``:
    the view is ``(N, H, W, G, C/G)``, reduced over its axes ``(1, 2, 4)``.
    """
    out, x_hat, inv_std = _grouped_fwd(
        _view(x, groups, data_format),
        _param_view(gamma, groups, data_format),
        _param_view(beta, groups, data_format),
        _STAT_AXES[data_format],
        eps,
    )
    return out.reshape(x.shape), GroupNormResiduals(
        x_hat.reshape(x.shape), inv_std.reshape(x.shape[0], groups), gamma, beta
    )


def groupnorm_bwd(residuals, g, *, data_format: str = "NCHW"):
    """Backward pass: ``(dx, dgamma, dbeta)`` from residuals and ``g = dL/dout``.

    With ``gg = g * gamma_c``, ``M = (C / G) * H * W`` and ``sum_R`` over one
    example's group::

        dbeta_c  = sum_{n,h,w} g
        dgamma_c = sum_{n,h,w} g * x_hat
        dx       = inv_std_ng * (gg - (sum_R gg + x_hat * sum_R gg * x_hat) / M)

    (Wu & He 2018; layer norm's closed form per group). In float32 at least,
    cast once at the end. ``G`` is read off ``inv_std``'s shape. NHWC: the
    same sums on the channels-last view (``sum_R`` over its axes ``(1, 2,
    4)``, the parameter sums over ``(0, 1, 2)``).
    """
    x_hat, inv_std, gamma, beta = residuals
    groups = inv_std.shape[1]
    dx, dgamma, dbeta = _grouped_bwd(
        _view(g, groups, data_format),
        _view(x_hat, groups, data_format),
        _inv_std_view(inv_std, data_format),
        _param_view(gamma, groups, data_format),
        _STAT_AXES[data_format],
        _PARAM_AXES[data_format],
    )
    return dx.reshape(x_hat.shape), dgamma.reshape(-1).astype(gamma.dtype), dbeta.reshape(-1).astype(beta.dtype)


_groupnorm = custom_op(groupnorm_reference, groupnorm_fwd, groupnorm_bwd, static=("groups", "eps", "data_format"))


def check_groupnorm(x, gamma, beta, groups, eps, data_format="NCHW"):
    """``(x, gamma, beta, groups, eps, data_format)`` as :func:`groupnorm`'s rule takes them
    (arrays, an int, a float, a layout), or the error :func:`groupnorm` raises (see its Raises)."""
    op = "groupnorm"
    data_format = check_data_format(data_format, op)
    x, gamma, beta = as_array(x, op, "x"), as_array(gamma, op, "gamma"), as_array(beta, op, "beta")
    require_rank(x, op, "x", rank=4)
    for name, arr in (("x", x), ("gamma", gamma), ("beta", beta)):
        require_float(arr, op, name)
    shape = shape_of(x)
    c = shape[channel_axis(data_format)]
    for name, arr in (("gamma", gamma), ("beta", beta)):
        require(
            shape_of(arr) == (c,),
            op,
            f"{name} must have shape ({c},) to match x's {c} channels (x shape {shape}, "
            f"data_format {data_format!r}), got {shape_of(arr)}",
        )
    require(
        is_int(groups),
        op,
        f"groups must be a Python int (static under jit), got {groups!r} of type {type(groups).__name__}",
        TypeError,
    )
    groups = int(groups)
    require(groups >= 1, op, f"groups must be >= 1, got {groups}")
    require(
        c % groups == 0,
        op,
        f"x's {c} channels do not split into {groups} groups of equal size (x shape {shape}); groups must divide C",
    )
    require(
        shape[1] * shape[2] * shape[3] > 0,
        op,
        f"each group needs at least one element to normalise over, got x of shape {shape} (C * H * W = 0)",
    )
    return x, gamma, beta, groups, check_eps(eps, op), data_format


def groupnorm(x, gamma, beta, *, groups: int, eps: float = 1e-5, data_format: str = "NCHW"):
    """Group normalisation (NCHW or NHWC) with a hand-derived backward pass.

    Args:
      x: activations, shape ``(N, C, H, W)`` (``data_format="NHWC"``: ``(N,
        H, W, C)``), floating dtype (float16/bfloat16 allowed: statistics and
        the backward pass are then in float32). Arrays, NumPy arrays or
        nested lists of numbers.
      gamma: scale, shape ``(C,)``.
      beta: shift, shape ``(C,)``.
      groups: keyword, static: the number ``G`` of channel groups; must
        divide ``C``. Group ``k`` holds channels ``k*C/G .. (k+1)*C/G - 1``.
      eps: keyword, static, finite and ``> 0``, added to the variance.
      data_format: keyword, static: ``"NCHW"`` (default) or ``"NHWC"``
        (channels last; the groups are the same consecutive channels).

    Returns:
      ``out = gamma_c * (x - mu_ng) / sqrt(var_ng + eps) + beta_c``, ``x``'s
      shape (``(N, C, H, W)`` or ``(N, H, W, C)``) and dtype, with ``mu_ng``, ``var_ng`` the mean and
      biased variance of example ``n``'s group over ``(C/G, H, W)``. No running
      statistics. ``N = 0`` gives an empty output; a constant group gives
      ``beta`` exactly.

    Raises:
      ValueError: ``x`` not 4-D; ``gamma`` or ``beta`` not ``(C,)``; ``groups``
        < 1 or not dividing ``C``; a group with no elements (``C * H * W =
        0``); ``eps`` not finite or ``<= 0``; ``data_format`` not
        ``"NCHW"``/``"NHWC"``. At trace time, naming the shapes (or choices).
      TypeError: non-floating arrays; non-int ``groups``; non-number ``eps``.

    Backward (``custom_vjp``), with ``gg = g * gamma_c``, ``M = (C/G) * H * W``,
    ``sum_R`` over one example's group::

        dbeta_c  = sum_{n,h,w} g
        dgamma_c = sum_{n,h,w} g * x_hat
        dx       = inv_std_ng * (gg - (sum_R gg + x_hat * sum_R gg * x_hat) / M)

    Residuals: ``x_hat`` (``x``'s shape and dtype; float32 for float16/bfloat16
    ``x``, so that the backward pass is float32's rounded once) and
    ``inv_std`` (N, G).

    Source: Wu & He (2018); the NumPy original's ``spatial_groupnorm_forward``.
    """
    x, gamma, beta, groups, eps, data_format = check_groupnorm(x, gamma, beta, groups, eps, data_format)
    return _groupnorm(x, gamma, beta, groups=groups, eps=eps, data_format=data_format)
