"""Inverted dropout: ``out = x * mask / keep`` with ``P(mask = 1) = keep = 1 - rate``.

Source of the maths: Srivastava et al., "Dropout: A Simple Way to Prevent
Neural Networks from Overfitting" (JMLR 2014), in the "inverted" form of the
seed's ``dropout_forward`` (survivors are scaled at train time, test time is
the identity).

Convention: ``rate`` is the probability of DROPPING an element (Flax, PyTorch,
Keras). The seed's ``dropout_param['p']`` is the probability of KEEPING; the
seed's API in :mod:`jaxlayers.compat` keeps that meaning.

How the mask is drawn: random bits are drawn as 32-bit words and split into
8- or 16-bit lanes, so one threefry evaluation serves 4 (or 2) elements -- the
bits dominate dropout's cost on CPU. An element survives when its lane is
below ``t = round(keep * 2**k)``; the survivors are scaled by ``2**k / t``, the
reciprocal of the *exact* keep probability, so ``E[out] = x`` holds exactly.
``k = 8`` when ``keep`` is a multiple of 1/256 (0.5, 0.75, ...), else 16
(``rate`` then rounds to the nearest 1/65536), else 32 when 16 bits would keep
nothing (``rate > 1 - 2**-17``).

Residual: the boolean keep-mask, 1 byte per element. Recomputing it from the
key in the backward pass would save those bytes but draw every random bit
twice; the mask is cheaper than the draw, so it is kept.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlayers._checks import require, require_bool, require_float, require_real, shape_of

__all__ = ["dropout", "dropout_reference", "dropout_fwd", "dropout_bwd", "DropoutResiduals", "keep_threshold"]


class DropoutResiduals(NamedTuple):
    """The boolean keep-mask (x's shape) and the 0-d survivor scale."""

    mask: jax.Array
    scale: jax.Array


def keep_threshold(rate: float) -> tuple[int, int]:
    """``(k, t)``: lanes of ``k`` random bits, kept when below ``t``.

    The exact keep probability is ``t / 2**k``; see the module docstring.
    """
    keep = 1.0 - rate
    t8 = keep * 2**8
    if 0 < t8 < 2**8 and t8 == round(t8):
        return 8, int(t8)
    t16 = round(keep * 2**16)
    if 0 < t16 < 2**16:
        return 16, t16
    return 32, max(1, min(round(keep * 2**32), 2**32 - 1))


def _keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> tuple[jax.Array, float]:
    """Boolean keep-mask of ``shape`` and the exact keep probability."""
    k, t = keep_threshold(rate)
    n = int(np.prod(shape, dtype=np.int64))
    if k == 32:
        lanes = jax.random.bits(key, shape, jnp.uint32)
        return lanes < jnp.uint32(t), t / 2.0**32
    per_word = 32 // k
    words = jax.random.bits(key, (-(-n // per_word),), jnp.uint32)
    lane_dtype = jnp.uint8 if k == 8 else jnp.uint16
    lanes = lax.bitcast_convert_type(words, lane_dtype).reshape(-1)[:n].reshape(shape)
    return lanes < jnp.asarray(t, lane_dtype), t / 2.0**k


def dropout_reference(x, key, *, rate: float, train: bool):
    """Plain-``jnp`` inverted dropout with the same mask, differentiated by JAX."""
    if not train or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    mask, keep = _keep_mask(key, x.shape, rate)
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


def dropout_fwd(x, key, *, rate: float, train: bool):
    """Forward pass: ``(out, residuals)``; residuals are ``None`` when the op is
    the identity (``train=False`` or ``rate=0``) or zero (``rate=1``)."""
    if not train or rate == 0.0:
        return x, None
    if rate == 1.0:
        return jnp.zeros_like(x), None
    mask, keep = _keep_mask(key, x.shape, rate)
    scale = jnp.asarray(1.0 / keep, x.dtype)
    return jnp.where(mask, x * scale, jnp.zeros((), x.dtype)), DropoutResiduals(mask, scale)


def dropout_bwd(residuals, g):
    """Backward pass: ``dx = g * mask / keep``, returned as ``(dx,)``.

    ``residuals`` must be a :class:`DropoutResiduals`; when :func:`dropout_fwd`
    returned ``None`` the op was the identity (``dx = g``) or zero (``dx = 0``).
    """
    mask, scale = residuals
    return (jnp.where(mask, g * scale.astype(g.dtype), jnp.zeros((), g.dtype)),)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dropout_vjp(x, key, rate):
    return dropout_reference(x, key, rate=rate, train=True)


def _dropout_vjp_fwd(x, key, rate):
    return dropout_fwd(x, key, rate=rate, train=True)


def _dropout_vjp_bwd(rate, residuals, g):
    del rate
    (dx,) = dropout_bwd(residuals, g)
    return dx, None  # keys carry no gradient


_dropout_vjp.defvjp(_dropout_vjp_fwd, _dropout_vjp_bwd)
_dropout_jit = jax.jit(_dropout_vjp, static_argnums=(2,))


def _is_key(key) -> bool:
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == jnp.uint32 and shape_of(key)[-1:] == (2,)


def dropout(x, key, *, rate: float, train: bool):
    """Inverted dropout with a hand-derived backward pass.

    Args:
      x: any shape, floating dtype.
      key: a PRNG key (``jax.random.key(seed)``, or a legacy
        ``jax.random.PRNGKey(seed)`` uint32 pair); ignored when the op is the
        identity, but still checked.
      rate: keyword, static, in ``[0, 1]``: the probability of DROPPING each
        element (Flax/PyTorch convention; the seed's ``p`` is ``1 - rate``).
      train: keyword, static. ``False`` makes the op the identity.

    Returns:
      ``out``, ``x``'s shape and dtype: each element zeroed with probability
      ``rate`` and the survivors scaled by ``1 / (1 - rate)`` (exactly: see the
      module docstring on mask lanes). ``train=False`` or ``rate=0``: ``x``.
      ``rate=1``: zeros (never NaN).

    Raises:
      ValueError: ``rate`` outside ``[0, 1]``.
      TypeError: ``key`` not a PRNG key, ``train`` not a bool, ``rate`` not a
        number, ``x`` not floating point.

    Backward (``custom_vjp``): ``dx = g * mask / (1 - rate)``; the key gets no
    cotangent. Residual: the boolean mask (1 byte/element) and a scalar.

    Source: Srivastava et al. (2014); the seed's ``dropout_forward``.
    """
    op = "dropout"
    require_float(x, op, "x")
    require(
        _is_key(key),
        op,
        "key must be a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got "
        f"{type(key).__name__} with dtype {getattr(key, 'dtype', None)} and shape {shape_of(key)}",
        TypeError,
    )
    require_bool(train, op, "train")
    rate = require_real(rate, op, "rate")
    require(0.0 <= rate <= 1.0, op, f"rate (probability of dropping) must lie in [0, 1], got {rate}")
    if not train or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    return _dropout_jit(x, key, rate)
