"""Spatial batch normalisation of ``(N, C, H, W)`` (or ``(N, H, W, C)``) activations: per-channel statistics over ``(N, H, W)``.

Source of the maths: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift" (ICML 2015), section
3.2: for convolutional layers every location of a feature map is one more
example, so the mini-batch of a channel has ``M = N * H * W`` values. The
NumPy original's ``spatial_batchnorm_forward`` reshapes to ``(N*H*W, C)`` and
calls ``batchnorm_forward``; here the very same rank-generic rules of
:mod:`jaxlayers.layers.batchnorm` (statistics over every axis but axis 1) run
on the NCHW array directly, without the two transposes -- or, with
``data_format="NHWC"``, on the channels-last array (statistics over axes
``(0, 1, 2)``), again without a transpose.

Same state type (:class:`~jaxlayers.layers.batchnorm.BatchNormState`, shape
``(C,)``), numerics (two-pass variance, no overflow for finite input, a
constant channel gives ``beta`` exactly, half-precision input with float32
statistics) and ``axis_name`` semantics as ``batchnorm``.
"""

from __future__ import annotations

from jaxlayers._checks import channel_axis, check_data_format
from jaxlayers._oprule import custom_op
from jaxlayers.layers.batchnorm import _reference, batchnorm_bwd, batchnorm_fwd, check_batchnorm

__all__ = [
    "spatial_batchnorm",
    "spatial_batchnorm_reference",
    "spatial_batchnorm_fwd",
    "spatial_batchnorm_bwd",
    "check_spatial_batchnorm",
]


def spatial_batchnorm_reference(
    x,
    gamma,
    beta,
    state,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis_name=None,
    data_format: str = "NCHW",
):
    """Plain-``jnp`` spatial batchnorm, differentiated by JAX (the oracle).

    Same signature and results as :func:`spatial_batchnorm`: mean and biased
    variance per channel over axes ``(0, 2, 3)`` (NHWC: ``(0, 1, 2)``),
    running statistics behind ``stop_gradient``.
    """
    return _reference(x, gamma, beta, state, train, momentum, eps, axis_name, channel_axis(data_format))


def spatial_batchnorm_fwd(
    x,
    gamma,
    beta,
    state,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis_name=None,
    data_format: str = "NCHW",
):
    """Forward pass: ``((out, new_state), residuals)``.

    ``x_hat = (x - mu_c) / sqrt(var_c + eps)`` with ``mu_c, var_c`` the mean
    and biased two-pass variance of channel ``c`` over ``(N, H, W)`` (train) or
    the running statistics (test); ``out = gamma_c * x_hat + beta_c``.
    Residuals, as ``batchnorm_fwd``: train mode a ``BatchNormTrainResiduals``
    -- ``x_hat`` ``(N, C, H, W)`` (float32 for half-precision ``x``, else ``x``'s
    dtype) and ``inv_std`` ``(C,)`` (plus
    ``gamma``, ``beta``); test mode a ``BatchNormEvalResiduals`` -- ``x``, the
    running mean and ``inv_std`` ``(C,)``. ``data_format="NHWC"``: ``x`` and
    ``x_hat`` are ``(N, H, W, C)``, the statistics reduce axes ``(0, 1, 2)``.
    """
    return batchnorm_fwd(
        x,
        gamma,
        beta,
        state,
        train=train,
        momentum=momentum,
        eps=eps,
        axis_name=axis_name,
        channel_axis=channel_axis(data_format),
    )


def spatial_batchnorm_bwd(residuals, g, *, axis_name=None, data_format: str = "NCHW"):
    """Backward pass: ``(dx, dgamma, dbeta)``; ``g = dL/dout`` (or ``(g_out, g_state)``).

    With ``M = N * H * W`` and every sum over ``(n, h, w)``::

        dbeta  = sum g
        dgamma = sum g * x_hat
        dx     = gamma * inv_std * (g - (dbeta + x_hat * dgamma) / M)   # train
        dx     = gamma * inv_std * g                                     # test

    ``data_format="NHWC"``: the same, with the sums over axes ``(0, 1, 2)``
    of the channels-last ``g`` and ``x_hat``.
    """
    return batchnorm_bwd(residuals, g, axis_name=axis_name, channel_axis=channel_axis(data_format))


_spatial_batchnorm = custom_op(
    spatial_batchnorm_reference,
    spatial_batchnorm_fwd,
    spatial_batchnorm_bwd,
    static=("train", "momentum", "eps", "axis_name", "data_format"),
    nondiff=("state",),  # running statistics carry no gradient
)


def check_spatial_batchnorm(x, gamma, beta, state, train, momentum, eps, axis_name=None, data_format="NCHW"):
    """``check_batchnorm`` for 4-D input in ``data_format``: the arguments as the rule takes them
    (``data_format`` last), or the errors :func:`spatial_batchnorm` raises."""
    data_format = check_data_format(data_format, "spatial_batchnorm")
    checked = check_batchnorm(
        x,
        gamma,
        beta,
        state,
        train,
        momentum,
        eps,
        axis_name,
        op="spatial_batchnorm",
        rank=4,
        channel_axis=channel_axis(data_format),
    )
    return (*checked, data_format)


def spatial_batchnorm(
    x,
    gamma,
    beta,
    state,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    axis_name=None,
    data_format: str = "NCHW",
):
    """Spatial batch normalisation (NCHW or NHWC) with a hand-derived backward pass.

    Args:
      x: activations, shape ``(N, C, H, W)`` (``data_format="NHWC"``: ``(N,
        H, W, C)``), floating dtype (float16/bfloat16 allowed: statistics and
        the backward pass are then in float32). Arrays, NumPy arrays or
        nested lists of numbers.
      gamma: scale, shape ``(C,)``.
      beta: shift, shape ``(C,)``.
      state: :class:`~jaxlayers.BatchNormState` of running ``mean`` and
        ``var``, shape ``(C,)``, a floating dtype; keep it float32 whatever
        ``x``'s dtype (``batchnorm_state(C)``): the update is computed in
        float32 and stored in the state's dtype.
      train: keyword, static. ``True``: normalise with the batch statistics
        of each channel over ``(N, H, W)`` and update the running statistics;
        ``False``: normalise with the running statistics.
      momentum: keyword, static, in ``[0, 1]``: ``running = momentum *
        running + (1 - momentum) * batch``.
      eps: keyword, static, finite and ``> 0``, added to the variance.
      axis_name: keyword, static: a mapped axis name or tuple of them; the
        train-mode statistics then span every shard's ``(N, H, W)`` (shards of
        equal size), as :func:`~jaxlayers.batchnorm`.
      data_format: keyword, static: ``"NCHW"`` (default) or ``"NHWC"``
        (channels last: statistics over axes ``(0, 1, 2)``, ``out`` channels
        last). Parameters and state are ``(C,)`` in both.

    Returns:
      ``(out, new_state)``: ``out = gamma_c * (x - mu_c) / sqrt(var_c + eps) +
      beta_c``, ``x``'s shape (``(N, C, H, W)`` or ``(N, H, W, C)``) and
      dtype; ``new_state`` the updated (train) or unchanged (test) state, in
      the state's dtype.

    Raises:
      ValueError: ``x`` not 4-D; ``gamma``, ``beta``, ``state.mean`` or
        ``state.var`` not ``(C,)`` (``C`` read from the axis ``data_format``
        names; the message gives the shapes); ``data_format`` not
        ``"NCHW"``/``"NHWC"``; ``momentum`` outside ``[0, 1]``; ``eps`` not
        finite or ``<= 0``; ``N * H * W = 0`` in train mode (for ``N = 0``:
        ``spatial_batchnorm: the train-mode batch mean over an empty batch is
        undefined: x has shape (0, C, H, W)``). At trace time.
      TypeError: non-bool ``train``, non-number ``momentum``/``eps``, a state
        that is not a ``BatchNormState``, or non-floating arrays (an integer
        state included).

    Backward (``custom_vjp``), with ``M = N * H * W``, sums over ``(n, h, w)``
    and ``s = gamma / sqrt(var + eps)`` per channel::

        dbeta  = sum g
        dgamma = sum g * x_hat
        dx     = s * (g - (dbeta + x_hat * dgamma) / M)   # train
        dx     = s * g                                     # test

    Residuals: train mode ``x_hat`` (``x``'s shape and dtype; float32 for
    float16/bfloat16 ``x``, so that the backward pass stays within one
    half-precision rounding of float32's) and ``inv_std`` ``(C,)``; test mode
    ``x`` itself and two ``(C,)`` vectors.
    A constant channel gives ``out = beta`` exactly and finite gradients; test
    mode on ``N = 0`` gives an empty output.

    Source: Ioffe & Szegedy (2015), section 3.2; the NumPy original's
    ``spatial_batchnorm_forward``.
    """
    x, gamma, beta, state, train, momentum, eps, axis_name, data_format = check_spatial_batchnorm(
        x, gamma, beta, state, train, momentum, eps, axis_name, data_format
    )
    return _spatial_batchnorm(
        x, gamma, beta, state, train=train, momentum=momentum, eps=eps, axis_name=axis_name, data_format=data_format
    )
