"""The layer functions of :mod:`jaxlayers.compat` (the seed's API, unchanged): ``forward -> (out, cache)``, ``backward(dout, cache)``.

Code written for the NumPy original (the course's layer library,
``layers.py``, that jaxlayers re-implements) runs with its import line
changed to ``from jaxlayers.compat import *``. The
functions keep the seed's names, arguments and return values, and are
built on the very ``<op>_fwd`` / ``<op>_bwd`` rules behind the jitted ops: the
seed's ``cache`` *is* the ``custom_vjp`` residuals. The course's
normalisation layers (``spatial_batchnorm_*``, ``layernorm_*``,
``batchnorm_backward_alt``, ``spatial_groupnorm_*`` with ``gamma`` of shape
``(1, C, 1, 1)``) follow the same rules.

Like the seed they take and return NumPy arrays, and follow its conventions:

* ``batchnorm_forward`` updates ``bn_param['running_mean']`` and
  ``['running_var']`` in place; both default to zeros, as in the seed.
* ``dropout_param['p']`` is the probability of KEEPING a unit (the jitted
  :func:`jaxlayers.dropout` takes ``rate``, the probability of dropping);
  ``'seed'`` makes the mask deterministic. Without ``'seed'`` a seed is drawn
  from NumPy's global generator, as the seed's ``np.random`` would.
* ``svm_loss`` / ``softmax_loss`` return ``(loss, dx)``.

Differences, on purpose: an invalid ``p`` or ``mode`` raises ``ValueError``
(the seed asserts, or returns ``None``); ``batchnorm_backward`` is right in
test mode too; ``softmax_loss`` has no 1e-8 clamp (see
:func:`jaxlayers.softmax_loss`). Masks come from JAX's PRNG, so a dropout mask
differs from NumPy's for the same seed.

Precision: with ``jax_enable_x64`` on, float64 inputs give float64 results.
With it off (JAX's default), float64 inputs are computed in float32 and a
``UserWarning`` says so, once.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers import losses as _losses
from jaxlayers._checks import require_float
from jaxlayers.layers.affine import affine_bwd, affine_fwd, check_affine
from jaxlayers.layers.batchnorm import BatchNormState, batchnorm_bwd, batchnorm_fwd, check_batchnorm
from jaxlayers.layers.conv import check_conv2d, conv2d_bwd, conv2d_fwd
from jaxlayers.layers.dropout import dropout_bwd, dropout_fwd
from jaxlayers.layers.embedding import check_word_embedding, word_embedding_bwd, word_embedding_fwd
from jaxlayers.layers.groupnorm import check_groupnorm, groupnorm_bwd, groupnorm_fwd
from jaxlayers.layers.layernorm import check_layernorm, layernorm_bwd, layernorm_fwd
from jaxlayers.layers.lstm import (
    check_lstm,
    check_lstm_step,
    lstm_bwd,
    lstm_fwd,
    lstm_step_bwd,
    lstm_step_fwd,
)
from jaxlayers.layers.pool import check_max_pool2d, max_pool2d_bwd, max_pool2d_fwd
from jaxlayers.layers.relu import relu_bwd, relu_fwd
from jaxlayers.layers.rnn import check_rnn, check_rnn_step, rnn_bwd, rnn_fwd, rnn_step_bwd, rnn_step_fwd
from jaxlayers.layers.temporal import check_temporal_affine, temporal_affine_bwd, temporal_affine_fwd

__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "dropout_forward",
    "dropout_backward",
    "svm_loss",
    "softmax_loss",
    # issue 11, convolutional networks
    "conv_forward_naive",
    "conv_backward_naive",
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_naive",
    "max_pool_backward_naive",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "affine_relu_forward",
    "affine_relu_backward",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    # normalisation layers (issue 11)
    "batchnorm_backward_alt",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "spatial_groupnorm_forward",
    "spatial_groupnorm_backward",
    # sequence models (issue 18): word embedding, temporal affine, temporal softmax loss
    "word_embedding_forward",
    "word_embedding_backward",
    "temporal_affine_forward",
    "temporal_affine_backward",
    "temporal_softmax_loss",
    # recurrent layers (issue 18): the course's rnn_layers
    "sigmoid",
    "rnn_step_forward",
    "rnn_step_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_step_forward",
    "lstm_step_backward",
    "lstm_forward",
    "lstm_backward",
]

_warned_float64 = False


def _to_jax(*arrays: Any) -> tuple[jax.Array, ...]:
    """NumPy (or JAX) arrays -> JAX arrays; float64 without x64 warns once."""
    global _warned_float64
    out = []
    for a in arrays:
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        if a.dtype == np.float64 and not jax.config.jax_enable_x64:
            if not _warned_float64:
                warnings.warn(
                    "jaxlayers.compat: float64 input is computed in float32 because JAX's "
                    "x64 mode is off; enable it with jax.config.update('jax_enable_x64', True) "
                    "or `with jax.enable_x64(True):` for float64 results.",
                    UserWarning,
                    stacklevel=3,
                )
                _warned_float64 = True
            a = a.astype(np.float32)
        out.append(jnp.asarray(a))
    return tuple(out)


def _float_args(op: str, **arrays: Any) -> tuple[jax.Array, ...]:
    """:func:`_to_jax` of ``arrays`` after checking that each has a floating dtype, for the functions that
    cast or compute before any jaxlayers op could check (``conv_forward_naive`` promotes its three arrays
    to one dtype: an int32 ``x`` with float16 filters would become float16, 2049 -> 2048; ``dropout_forward``
    and the ``*_backward`` functions call the op's forward/backward directly).

    Raises:
      TypeError: ``"{op}: {name} must have a floating dtype, got {dtype} (shape ...)"``, as the ops say it.
    """
    for name, a in arrays.items():
        require_float(a if isinstance(a, jax.Array) else np.asarray(a), op, name)
    return _to_jax(*arrays.values())


def _np(*arrays):
    return tuple(np.asarray(a) for a in arrays)


_affine_fwd = jax.jit(affine_fwd)
_affine_bwd = jax.jit(affine_bwd)
_relu_fwd = jax.jit(relu_fwd)
_relu_bwd = jax.jit(relu_bwd)
_bn_fwd = jax.jit(batchnorm_fwd, static_argnames=("train", "momentum", "eps"))
_bn_bwd = jax.jit(batchnorm_bwd)
_dropout_fwd = jax.jit(dropout_fwd, static_argnames=("rate", "train"))
_dropout_bwd = jax.jit(dropout_bwd)
_svm_fwd = jax.jit(_losses.svm_loss_fwd)
_svm_bwd = jax.jit(_losses.svm_loss_bwd)
_softmax_fwd = jax.jit(_losses.softmax_loss_fwd)
_softmax_bwd = jax.jit(_losses.softmax_loss_bwd)


def affine_forward(x, w, b):
    """Affine forward pass (the seed's signature).

    Args:
      x: ``(N, d_1, ..., d_k)``; w: ``(D, M)`` with ``D = d_1 * ... * d_k``;
        b: ``(M,)``.

    Returns:
      ``(out, cache)``: ``out = x.reshape(N, D) @ w + b`` of shape ``(N, M)``
      (NumPy); ``cache`` the residuals ``(x, w, b)``.

    Raises:
      ValueError: on mismatched shapes (see :func:`jaxlayers.affine`).
    """
    x, w, b = _to_jax(x, w, b)
    x, w, b = check_affine(x, w, b)
    out, cache = _affine_fwd(x, w, b)
    return np.asarray(out), cache


def affine_backward(dout, cache):
    """Affine backward pass: ``(dx, dw, db)`` shaped like ``(x, w, b)``.

    ``dx = (dout @ w.T).reshape(x.shape)``, ``dw = x.reshape(N, D).T @ dout``,
    ``db = dout.sum(0)``.
    """
    (dout,) = _float_args("affine_backward", dout=dout)
    return _np(*_affine_bwd(cache, dout))


def relu_forward(x):
    """ReLU forward pass: ``(out, cache)`` with ``out = max(x, 0)``; the cache is
    a boolean mask (the seed keeps a float copy of ``x``)."""
    (x,) = _to_jax(x)
    require_float(x, "relu_forward", "x")
    out, cache = _relu_fwd(x)
    return np.asarray(out), cache


def relu_backward(dout, cache):
    """ReLU backward pass: ``dx = dout * (x > 0)``."""
    (dout,) = _float_args("relu_backward", dout=dout)
    return np.asarray(_relu_bwd(cache, dout)[0])


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batchnorm forward pass (the seed's signature and semantics).

    Args:
      x: ``(N, D)``; gamma, beta: ``(D,)``.
      bn_param: dict with ``'mode'`` (``'train'`` or ``'test'``, required),
        optional ``'eps'`` (1e-5), ``'momentum'`` (0.9), ``'running_mean'``
        and ``'running_var'`` (``(D,)``, default zeros, as in the seed).
        The running statistics are updated IN PLACE in ``bn_param``.

    Returns:
      ``(out, cache)``; ``out`` of shape ``(N, D)`` (NumPy).

    Raises:
      ValueError: ``'Invalid forward batchnorm mode "<mode>"'`` for any other
        mode, as the seed; shape errors as :func:`jaxlayers.batchnorm`.
    """
    mode = bn_param["mode"]
    if mode not in ("train", "test"):
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    x, gamma, beta = _to_jax(x, gamma, beta)
    if x.ndim != 2:
        raise ValueError(f"batchnorm_forward: x must be 2-D (N, D), got shape {x.shape}")
    d = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(d, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(d, dtype=x.dtype))
    state = BatchNormState(*_to_jax(running_mean, running_var))
    train = mode == "train"
    x, gamma, beta, state, train, momentum, eps, _ = check_batchnorm(x, gamma, beta, state, train, momentum, eps)
    (out, new_state), cache = _bn_fwd(x, gamma, beta, state, train=train, momentum=momentum, eps=eps)
    bn_param["running_mean"] = np.asarray(new_state.mean)
    bn_param["running_var"] = np.asarray(new_state.var)
    return np.asarray(out), cache


def batchnorm_backward(dout, cache):
    """Batchnorm backward pass: ``(dx, dgamma, dbeta)``.

    Train mode uses the closed form ``dx = gamma / sqrt(var + eps) * (dout -
    mean(dout) - x_hat * mean(dout * x_hat))``; test mode ``dx = dout * gamma /
    sqrt(running_var + eps)`` (the seed's formula is only right in train mode).
    """
    (dout,) = _float_args("batchnorm_backward", dout=dout)
    return _np(*_bn_bwd(cache, dout))


def _dropout_config(dropout_param) -> tuple[float, str]:
    p, mode = dropout_param["p"], dropout_param["mode"]
    if not 0 < p <= 1:
        raise ValueError(f"Dropout probability is not in (0,1]: dropout_param['p'] = {p!r}")
    if mode not in ("train", "test"):
        raise ValueError(f"Invalid dropout mode {mode!r}: expected 'train' or 'test'")
    return float(p), mode


def dropout_forward(x, dropout_param):
    """Inverted dropout forward pass (the seed's signature).

    Args:
      x: any shape, floating dtype.
      dropout_param: dict with ``'p'`` -- the probability of KEEPING each
        unit, in ``(0, 1]`` --, ``'mode'`` (``'train'``/``'test'``) and
        optional ``'seed'`` (int) for a deterministic mask.

    Returns:
      ``(out, cache)`` with ``cache = (dropout_param, residuals)``; in test
      mode ``out = x``.

    Raises:
      ValueError: ``p`` outside ``(0, 1]`` or an unknown mode.
      TypeError: ``x`` not of a floating dtype (as :func:`jaxlayers.dropout`).
    """
    p, mode = _dropout_config(dropout_param)
    (x,) = _float_args("dropout_forward", x=x)
    if mode == "test":
        return np.asarray(x), (dropout_param, None)
    # Without a 'seed', draw one from NumPy's global generator, as the seed's np.random would.
    seed = dropout_param["seed"] if "seed" in dropout_param else np.random.randint(2**31 - 1)  # noqa: NPY002
    out, residuals = _dropout_fwd(x, jax.random.key(seed), rate=1.0 - p, train=True)
    return np.asarray(out), (dropout_param, residuals)


def dropout_backward(dout, cache):
    """Inverted dropout backward pass: ``dx = dout * mask / p`` (train),
    ``dx = dout`` (test)."""
    dropout_param, residuals = cache
    _dropout_config(dropout_param)
    (dout,) = _float_args("dropout_backward", dout=dout)
    if dropout_param["mode"] == "test" or residuals is None:
        return np.asarray(dout)
    return np.asarray(_dropout_bwd(residuals, dout)[0])


def _loss(check, fwd, bwd, x, y):
    (x,) = _to_jax(x)
    y = jnp.asarray(np.asarray(y))
    x, y = check(x, y)
    loss, residuals = fwd(x, y)
    (dx,) = bwd(residuals, jnp.ones((), loss.dtype))
    return np.asarray(loss)[()], np.asarray(dx)


def svm_loss(x, y):
    """Multiclass SVM loss and gradient: ``(loss, dx)`` for scores ``x`` (N, C)
    and labels ``y`` (N,), margin 1, mean over the batch."""
    return _loss(_losses.check_svm_loss, _svm_fwd, _svm_bwd, x, y)


def softmax_loss(x, y):
    """Softmax loss and gradient: ``(loss, dx)`` for scores ``x`` (N, C) and
    labels ``y`` (N,), mean over the batch (no 1e-8 clamp)."""
    return _loss(_losses.check_softmax_loss, _softmax_fwd, _softmax_bwd, x, y)


# --------------------------------------------------------------------------
# issue 11, convolutional networks: the course's convolution and max-pooling
# layers and its "sandwich" layers (layer_utils), NCHW.
# --------------------------------------------------------------------------

_conv_fwd = jax.jit(conv2d_fwd, static_argnames=("stride", "padding"))
_conv_bwd = jax.jit(conv2d_bwd)
_pool_fwd = jax.jit(max_pool2d_fwd, static_argnames=("pool_size", "stride"))
_pool_bwd = jax.jit(max_pool2d_bwd)


def conv_forward_naive(x, w, b, conv_param):
    """Convolution forward pass (the NumPy original's signature), NCHW.

    Args:
      x: ``(N, C, H, W)``; w: ``(F, C, HH, WW)``; b: ``(F,)``.
      conv_param: dict with ``'stride'`` and ``'pad'`` (ints; zeros are
        padded on both sides of ``H`` and ``W``).

    Returns:
      ``(out, cache)``: ``out`` of shape ``(N, F, 1 + (H + 2 pad - HH) //
      stride, 1 + (W + 2 pad - WW) // stride)`` (NumPy), ``out[n, f, i, j] =
      b[f] + sum_{c, u, v} w[f, c, u, v] * xpad[n, c, stride*i + u, stride*j + v]``;
      ``cache`` the residuals (``x``, ``w``, stride, pad). ``x``, ``w``, ``b`` of
      different float dtypes are promoted to one (``jnp.result_type``).

    Raises:
      ValueError, TypeError: as :func:`jaxlayers.conv2d`; ``TypeError`` for a
        non-float ``x``, ``w`` or ``b``, before any promotion.
    """
    stride, pad = conv_param["stride"], conv_param["pad"]
    x, w, b = _float_args("conv_forward_naive", x=x, w=w, b=b)  # before the cast to one float dtype
    dtype = jnp.result_type(x, w, b)
    x, w, b = x.astype(dtype), w.astype(dtype), b.astype(dtype)
    x, w, b, stride, pad, _ = check_conv2d(x, w, b, stride, pad)
    out, cache = _conv_fwd(x, w, b, stride=stride, padding=pad)
    return np.asarray(out), cache


def conv_backward_naive(dout, cache):
    """Convolution backward pass: ``(dx, dw, db)`` shaped like ``(x, w, b)``.

    ``db = dout.sum((0, 2, 3))``; ``dw`` the correlation of the padded ``x``
    with ``dout``; ``dx`` the transposed convolution of ``dout`` with ``w``
    (see :func:`jaxlayers.conv2d`).
    """
    (dout,) = _float_args("conv_backward_naive", dout=dout)
    return _np(*_conv_bwd(cache, dout))


def max_pool_forward_naive(x, pool_param):
    """Max-pooling forward pass (the NumPy original's signature), NCHW.

    Args:
      x: ``(N, C, H, W)``.
      pool_param: dict with ``'pool_height'``, ``'pool_width'`` and
        ``'stride'`` (ints).

    Returns:
      ``(out, cache)``: ``out`` of shape ``(N, C, 1 + (H - pool_height) //
      stride, 1 + (W - pool_width) // stride)`` (NumPy), the maximum of each
      window; ``cache`` the argmax of every window (uint8), not ``x``.

    Raises:
      ValueError, TypeError: as :func:`jaxlayers.max_pool2d`.
    """
    pool_size = (pool_param["pool_height"], pool_param["pool_width"])
    (x,) = _to_jax(x)
    x, pool_size, stride, _ = check_max_pool2d(x, pool_size, pool_param["stride"])
    out, cache = _pool_fwd(x, pool_size=pool_size, stride=stride)
    return np.asarray(out), cache


def max_pool_backward_naive(dout, cache):
    """Max-pooling backward pass: ``dx``, each window's ``dout`` at its maximum.

    A window with several equal maxima sends its gradient to the first one
    in row-major window order (``np.argmax`` of the flattened window).
    """
    (dout,) = _float_args("max_pool_backward_naive", dout=dout)
    return np.asarray(_pool_bwd(cache, dout)[0])


# The course's "fast" layers compute the same functions; here one
# implementation serves both names.
conv_forward_fast = conv_forward_naive
conv_backward_fast = conv_backward_naive
max_pool_forward_fast = max_pool_forward_naive
max_pool_backward_fast = max_pool_backward_naive


def affine_relu_forward(x, w, b):
    """Affine then ReLU: ``(out, cache)`` with ``cache = (fc_cache, relu_cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward pass of :func:`affine_relu_forward`: ``(dx, dw, db)``."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def conv_relu_forward(x, w, b, conv_param):
    """Convolution then ReLU: ``(out, cache)`` with ``cache = (conv_cache, relu_cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward pass of :func:`conv_relu_forward`: ``(dx, dw, db)``."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, max pooling: ``(out, cache)`` with
    ``cache = (conv_cache, relu_cache, pool_cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward pass of :func:`conv_relu_pool_forward`: ``(dx, dw, db)``."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)


# --- normalisation layers (issue 11): the course's spatial batchnorm, layer norm, group norm ---
#
# Same conventions as above: NumPy in and out, the cache is the op's residuals,
# bn_param updated in place.

_ln_fwd = jax.jit(layernorm_fwd, static_argnames=("eps",))
_ln_bwd = jax.jit(layernorm_bwd)
_gn_fwd = jax.jit(groupnorm_fwd, static_argnames=("groups", "eps"))
_gn_bwd = jax.jit(groupnorm_bwd)


def _bn_param_forward(op: str, rank: int, x, gamma, beta, bn_param):
    """batchnorm_forward's handling of ``bn_param``, for ``(N, D)`` or NCHW ``x``."""
    mode = bn_param["mode"]
    if mode not in ("train", "test"):
        raise ValueError(f'Invalid forward batchnorm mode "{mode}"')
    x, gamma, beta = _to_jax(x, gamma, beta)
    if x.ndim != rank:
        raise ValueError(f"{op}_forward: x must be {rank}-D, got shape {x.shape}")
    c = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(c, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(c, dtype=x.dtype))
    state = BatchNormState(*_to_jax(running_mean, running_var))
    train = mode == "train"
    x, gamma, beta, state, train, momentum, eps, _ = check_batchnorm(
        x, gamma, beta, state, train, bn_param.get("momentum", 0.9), bn_param.get("eps", 1e-5), op=op, rank=rank
    )
    (out, new_state), cache = _bn_fwd(x, gamma, beta, state, train=train, momentum=momentum, eps=eps)
    bn_param["running_mean"] = np.asarray(new_state.mean)
    bn_param["running_var"] = np.asarray(new_state.var)
    return np.asarray(out), cache


def batchnorm_backward_alt(dout, cache):
    """Batchnorm backward pass, the simplified formula: ``(dx, dgamma, dbeta)``.

    ``dx = gamma / sqrt(var + eps) * (dout - mean(dout) - x_hat * mean(dout * x_hat))``
    (means over the batch). jaxlayers' :func:`batchnorm_backward` already
    uses this closed form, so the two return the same arrays.
    """
    return batchnorm_backward(dout, cache)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Spatial batchnorm forward pass (the course's signature).

    Args:
      x: ``(N, C, H, W)``; gamma, beta: ``(C,)``.
      bn_param: as :func:`batchnorm_forward` (``'mode'`` required; ``'eps'``,
        ``'momentum'``, ``'running_mean'``/``'running_var'`` of shape ``(C,)``,
        default zeros), updated IN PLACE.

    Returns:
      ``(out, cache)``; ``out`` ``(N, C, H, W)`` (NumPy), statistics per channel
      over ``(N, H, W)``.

    Raises:
      ValueError: an invalid mode (as batchnorm_forward), shapes as
        :func:`jaxlayers.spatial_batchnorm`.
    """
    return _bn_param_forward("spatial_batchnorm", 4, x, gamma, beta, bn_param)


def spatial_batchnorm_backward(dout, cache):
    """Spatial batchnorm backward pass: ``(dx, dgamma, dbeta)``, ``dgamma``/``dbeta`` ``(C,)``.

    Batchnorm's closed form with sums over ``(N, H, W)``; right in test mode too.
    """
    (dout,) = _float_args("spatial_batchnorm_backward", dout=dout)
    return _np(*_bn_bwd(cache, dout))


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer norm forward pass (the course's signature).

    Args:
      x: ``(N, D)``; gamma, beta: ``(D,)``.
      ln_param: dict with optional ``'eps'`` (1e-5).

    Returns:
      ``(out, cache)``; ``out`` ``(N, D)`` (NumPy), each row standardised by
      its own mean and biased variance, then ``gamma * x_hat + beta``.

    Raises:
      ValueError: shapes as :func:`jaxlayers.layernorm`.
    """
    x, gamma, beta = _to_jax(x, gamma, beta)
    x, gamma, beta, eps = check_layernorm(x, gamma, beta, ln_param.get("eps", 1e-5))
    out, cache = _ln_fwd(x, gamma, beta, eps=eps)
    return np.asarray(out), cache


def layernorm_backward(dout, cache):
    """Layer norm backward pass: ``(dx, dgamma, dbeta)``.

    ``dx = inv_std / D * (D * dout*gamma - sum_d(dout*gamma) - x_hat * sum_d(dout*gamma*x_hat))``
    per row; ``dgamma = sum_n dout * x_hat``, ``dbeta = sum_n dout``.
    """
    (dout,) = _float_args("layernorm_backward", dout=dout)
    return _np(*_ln_bwd(cache, dout))


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Spatial group norm forward pass (the course's signature).

    Args:
      x: ``(N, C, H, W)``; gamma, beta: ``(1, C, 1, 1)``, as in the course.
      G: number of groups, dividing ``C``.
      gn_param: dict with optional ``'eps'`` (1e-5).

    Returns:
      ``(out, cache)``; ``out`` ``(N, C, H, W)`` (NumPy), each example's group
      of ``C // G`` channels standardised over ``(C // G, H, W)``.

    Raises:
      ValueError: ``gamma``/``beta`` not of shape ``(1, C, 1, 1)``; shapes and
        ``G`` as :func:`jaxlayers.groupnorm`.
    """
    x, gamma, beta = _to_jax(x, gamma, beta)
    if x.ndim == 4:
        c = x.shape[1]
        for name, p in (("gamma", gamma), ("beta", beta)):
            if p.shape != (1, c, 1, 1):
                raise ValueError(
                    f"spatial_groupnorm_forward: {name} must have shape (1, {c}, 1, 1) for x of shape {x.shape}, "
                    f"got {p.shape}"
                )
        gamma, beta = gamma.reshape(c), beta.reshape(c)
    x, gamma, beta, groups, eps, _ = check_groupnorm(x, gamma, beta, G, gn_param.get("eps", 1e-5))
    out, cache = _gn_fwd(x, gamma, beta, groups=groups, eps=eps)
    return np.asarray(out), cache


def spatial_groupnorm_backward(dout, cache):
    """Spatial group norm backward pass: ``(dx, dgamma, dbeta)``; ``dgamma``, ``dbeta`` ``(1, C, 1, 1)``.

    ``dx = inv_std / M * (M * dout*gamma - sum_R(dout*gamma) - x_hat * sum_R(dout*gamma*x_hat))``
    with ``R`` one example's group, ``M = (C/G) * H * W``.
    """
    (dout,) = _float_args("spatial_groupnorm_backward", dout=dout)
    dx, dgamma, dbeta = _gn_bwd(cache, dout)
    return np.asarray(dx), np.asarray(dgamma).reshape(1, -1, 1, 1), np.asarray(dbeta).reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------
# sequence models (issue 18): the course's word embedding, temporal affine and
# temporal softmax loss (its rnn_layers), on the same fwd/bwd rules as the ops.
# --------------------------------------------------------------------------

_word_embedding_fwd = jax.jit(word_embedding_fwd)
_word_embedding_bwd = jax.jit(word_embedding_bwd)
_temporal_affine_fwd = jax.jit(temporal_affine_fwd)
_temporal_affine_bwd = jax.jit(temporal_affine_bwd)
_temporal_softmax_fwd = jax.jit(_losses.temporal_softmax_loss_fwd)
_temporal_softmax_bwd = jax.jit(_losses.temporal_softmax_loss_bwd)


def word_embedding_forward(x, W):
    """Word embedding forward pass (the NumPy original's signature).

    Args:
      x: integer word indices ``(N, T)``, each in ``[0, V)``; W: ``(V, D)``.

    Returns:
      ``(out, cache)``: ``out = W[x]`` of shape ``(N, T, D)`` (NumPy); ``cache``
      the residuals (the indices and ``W``'s row count and dtype).

    Raises:
      ValueError: indices outside ``[0, V)`` (the NumPy original raises
        ``IndexError`` for ``>= V`` and wraps negative ones), or bad shapes
        (see :func:`jaxlayers.word_embedding`).
    """
    (W,) = _to_jax(W)
    x = jnp.asarray(np.asarray(x))
    x, W = check_word_embedding(x, W)
    out, cache = _word_embedding_fwd(x, W)
    return np.asarray(out), cache


def word_embedding_backward(dout, cache):
    """Word embedding backward pass: ``dW`` of shape ``(V, D)``, a scatter-add of ``dout`` (``np.add.at``)."""
    (dout,) = _float_args("word_embedding_backward", dout=dout)
    return np.asarray(_word_embedding_bwd(cache, dout)[0])


def temporal_affine_forward(x, w, b):
    """Temporal affine forward pass: ``(out, cache)`` with ``out = x @ w + b`` of shape ``(N, T, M)``
    for ``x`` ``(N, T, D)``, ``w`` ``(D, M)``, ``b`` ``(M,)``; ``cache`` the residuals ``(x, w, b)``."""
    x, w, b = _to_jax(x, w, b)
    x, w, b = check_temporal_affine(x, w, b)
    out, cache = _temporal_affine_fwd(x, w, b)
    return np.asarray(out), cache


def temporal_affine_backward(dout, cache):
    """Temporal affine backward pass: ``(dx, dw, db)`` shaped like ``(x, w, b)``."""
    (dout,) = _float_args("temporal_affine_backward", dout=dout)
    return _np(*_temporal_affine_bwd(cache, dout))


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Temporal softmax loss and gradient (the NumPy original's signature): ``(loss, dx)``.

    Args:
      x: scores ``(N, T, V)``; y: integer labels ``(N, T)``; mask: bool ``(N, T)``
        (an integer 0/1 mask is accepted and read as ``mask != 0``).
      verbose: print ``dx_flat``'s shape, as the NumPy original does.

    Returns:
      ``loss``: summed over the unmasked time steps, divided by ``N`` (a NumPy
      scalar); ``dx``: ``(N, T, V)`` (NumPy). No 1e-8 clamp; see
      :func:`jaxlayers.temporal_softmax_loss`.
    """
    (x,) = _to_jax(x)
    y = jnp.asarray(np.asarray(y))
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ and np.issubdtype(mask.dtype, np.integer):
        mask = mask != 0
    mask = jnp.asarray(mask)
    x, y, mask = _losses.check_temporal_softmax_loss(x, y, mask)
    loss, residuals = _temporal_softmax_fwd(x, y, mask)
    (dx,) = _temporal_softmax_bwd(residuals, jnp.ones((), loss.dtype))
    if verbose:
        n, t, v = x.shape
        print("dx_flat: ", (n * t, v))
    return np.asarray(loss)[()], np.asarray(dx)


# --- recurrent layers (issue 18): the course's rnn_layers (rnn, lstm), batch-major x (N, T, D) ---
#
# Same conventions: NumPy in and out; the cache is the op's residuals (the gates after their
# nonlinearities and the cells for the LSTM, not every intermediate). LSTM gate order i, f, o, g.

_rnn_step_fwd = jax.jit(rnn_step_fwd)
_rnn_step_bwd = jax.jit(rnn_step_bwd)
_rnn_fwd = jax.jit(rnn_fwd)
_rnn_bwd = jax.jit(rnn_bwd)
_lstm_step_fwd = jax.jit(lstm_step_fwd)
_lstm_step_bwd = jax.jit(lstm_step_bwd)
_lstm_fwd = jax.jit(lstm_fwd)
_lstm_bwd = jax.jit(lstm_bwd)


def sigmoid(x):
    """A numerically stable logistic function ``1 / (1 + exp(-x))`` (NumPy in and out), as the
    NumPy original's: never overflows, ``sigmoid(-1000) = 0``, ``sigmoid(1000) = 1``."""
    (x,) = _float_args("sigmoid", x=x)
    return np.asarray(jax.nn.sigmoid(x))


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One vanilla RNN step: ``(next_h, cache)`` with ``next_h = tanh(x Wx + prev_h Wh + b)``.

    Args:
      x: ``(N, D)``; prev_h: ``(N, H)``; Wx: ``(D, H)``; Wh: ``(H, H)``; b: ``(H,)``.

    Raises:
      ValueError: on mismatched shapes (see :func:`jaxlayers.rnn_step`).
    """
    args = check_rnn_step(*_to_jax(x, prev_h, Wx, Wh, b))
    next_h, cache = _rnn_step_fwd(*args)
    return np.asarray(next_h), cache


def rnn_step_backward(dnext_h, cache):
    """``(dx, dprev_h, dWx, dWh, db)`` for the upstream gradient ``dnext_h (N, H)``: with
    ``da = dnext_h (1 - next_h**2)``, ``dx = da Wx^T``, ``dprev_h = da Wh^T``, ``dWx = x^T da``,
    ``dWh = prev_h^T da``, ``db = da.sum(0)``."""
    (dnext_h,) = _float_args("rnn_step_backward", dnext_h=dnext_h)
    return _np(*_rnn_step_bwd(cache, dnext_h))


def rnn_forward(x, h0, Wx, Wh, b):
    """A vanilla RNN over a sequence: ``(h, cache)``, ``h (N, T, H)``.

    Args:
      x: ``(N, T, D)``, ``T >= 1``; h0: ``(N, H)``; Wx: ``(D, H)``; Wh: ``(H, H)``; b: ``(H,)``.

    Raises:
      ValueError: on mismatched shapes or ``T = 0`` (see :func:`jaxlayers.rnn`).
    """
    args = check_rnn(*_to_jax(x, h0, Wx, Wh, b))
    h, cache = _rnn_fwd(*args)
    return np.asarray(h), cache


def rnn_backward(dh, cache):
    """Backpropagation through time: ``(dx, dh0, dWx, dWh, db)`` for the upstream gradient of every
    hidden state ``dh (N, T, H)`` (see :func:`jaxlayers.rnn` for the formulas)."""
    (dh,) = _float_args("rnn_backward", dh=dh)
    return _np(*_rnn_bwd(cache, dh))


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step, gate order i, f, o, g: ``(next_h, next_c, cache)``.

    Args:
      x: ``(N, D)``; prev_h, prev_c: ``(N, H)``; Wx: ``(D, 4H)``; Wh: ``(H, 4H)``; b: ``(4H,)``.

    Raises:
      ValueError: on mismatched shapes (see :func:`jaxlayers.lstm_step`).
    """
    args = check_lstm_step(*_to_jax(x, prev_h, prev_c, Wx, Wh, b))
    (next_h, next_c), cache = _lstm_step_fwd(*args)
    return np.asarray(next_h), np.asarray(next_c), cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    """``(dx, dprev_h, dprev_c, dWx, dWh, db)`` for the upstream gradients ``dnext_h``, ``dnext_c``
    (each ``(N, H)``); see :func:`jaxlayers.lstm_step` for the formulas."""
    dnext_h, dnext_c = _float_args("lstm_step_backward", dnext_h=dnext_h, dnext_c=dnext_c)
    return _np(*_lstm_step_bwd(cache, (dnext_h, dnext_c)))


def lstm_forward(x, h0, Wx, Wh, b):
    """An LSTM over a sequence from ``h0`` and a zero initial cell: ``(h, cache)``, ``h (N, T, H)``.

    Args:
      x: ``(N, T, D)``, ``T >= 1``; h0: ``(N, H)``; Wx: ``(D, 4H)``; Wh: ``(H, 4H)``; b: ``(4H,)``.

    Raises:
      ValueError: on mismatched shapes or ``T = 0`` (see :func:`jaxlayers.lstm`).
    """
    args = check_lstm(*_to_jax(x, h0, Wx, Wh, b))
    h, cache = _lstm_fwd(*args)
    return np.asarray(h), cache


def lstm_backward(dh, cache):
    """Backpropagation through time: ``(dx, dh0, dWx, dWh, db)`` for the upstream gradient of every
    hidden state ``dh (N, T, H)`` (the initial cell's gradient is dropped, as the NumPy original has
    none; see :func:`jaxlayers.lstm` for the formulas)."""
    (dh,) = _float_args("lstm_backward", dh=dh)
    return _np(*_lstm_bwd(cache, dh)[:5])
