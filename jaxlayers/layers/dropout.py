"""Inverted dropout: ``out = x * mask / keep`` with ``P(mask = 1) = keep = 1 - rate``.

Source of the maths: Srivastava et al., "Dropout: A Simple Way to Prevent
Neural Networks from Overfitting" (JMLR 2014), in the "inverted" form of the
seed's ``dropout_forward`` (survivors are scaled at train time, test time is
the identity).

Convention: ``rate`` is the probability of DROPPING an element (Flax, PyTorch,
Keras). The NumPy original's ``dropout_param['p']`` is the probability of KEEPING; the
seed's API in :mod:`jaxlayers.compat` keeps that meaning.

How the mask is drawn: random bits are drawn as 32-bit words and split into
``k``-bit lanes, so one Threefry evaluation serves ``32 / k`` elements -- the
bits dominate dropout's cost on CPU. An element survives when its lane is
one of the top ``t = keep * 2**k`` values (``lane >= 2**k - t``); survivors
are scaled by ``2**k / t``, the reciprocal of the *exact* keep probability,
so ``E[out] = x`` holds exactly.
``k`` is the smallest of 1, 2, 4, 8 for which ``keep * 2**k`` is a whole
number (``rate = 0.5``: one bit per element; 0.25 or 0.75: two; multiples of
1/256: eight), else 16 (``rate`` then rounds to the nearest 1/65536), else 32
when 16 bits would keep nothing (``rate > 1 - 2**-17``). Element ``e`` of the
flattened ``x`` reads lane ``e % (32 / k)`` (bits ``k * lane`` upwards) of
word ``e // (32 / k)``.

The words are exactly ``jax.random.bits(key, (m,), jnp.uint32)``. For
Threefry keys (JAX's default) they are computed here with the Threefry-2x32
hash written out round by round, which XLA fuses into one loop; JAX's own CPU
lowering runs the hash as a rolled loop of separate kernels, about three
times slower. Other key implementations go through ``jax.random.bits``.

Residual: the keep-mask, bit-packed when that is free (``k = 1``: the mask
*is* the random words, 1 bit per element) and otherwise as booleans (1 byte
per element). Recomputing the mask from the key in the backward pass would
draw every random bit twice; keeping it is cheaper.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlayers._checks import as_array, check_number, compute_dtype, require, require_bool, require_float, require_key
from jaxlayers._oprule import custom_op

__all__ = [
    "dropout",
    "dropout_reference",
    "dropout_fwd",
    "dropout_bwd",
    "check_dropout",
    "DropoutResiduals",
    "keep_threshold",
]


class DropoutResiduals(NamedTuple):
    """The keep-mask and the 0-d survivor scale ``1 / keep`` (at least float32:
    a bfloat16 ``1 / keep`` would be off by up to 0.4%).

    ``mask`` is either boolean with ``x``'s shape or, bit-packed, uint32 of
    shape ``(ceil(n / 32),)`` with ``n = x.size``: bit ``j`` of word ``i`` is
    element ``32 * i + j`` of the flattened mask. The backward pass tells the
    two apart by dtype.
    """

    mask: jax.Array
    scale: jax.Array


def keep_threshold(rate: float) -> tuple[int, int]:
    """``(k, t)``: lanes of ``k`` random bits, kept when ``lane >= 2**k - t``.

    The exact keep probability is ``t / 2**k``; see the module docstring.
    """
    keep = 1.0 - rate
    for k in (1, 2, 4, 8):
        tk = keep * 2**k
        if 0 < tk < 2**k and tk == round(tk):
            return k, int(tk)
    t16 = round(keep * 2**16)
    if 0 < t16 < 2**16:
        return 16, t16
    return 32, max(1, min(round(keep * 2**32), 2**32 - 1))


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds; Salmon et al. 2011), unrolled: one XLA fusion."""

    def rotl(v, r):
        return (v << np.uint32(r)) | (v >> np.uint32(32 - r))

    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _random_words(key: jax.Array, m: int) -> jax.Array:
    """``jax.random.bits(key, (m,), jnp.uint32)``, bit for bit; see the module docstring."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl, data = str(jax.random.key_impl(key)), jax.random.key_data(key)
    else:  # a legacy uint32 key pair: the default implementation
        impl, data = str(jax.config.jax_default_prng_impl), key
    if impl != "threefry2x32" or data.shape != (2,) or not jax.config.jax_threefry_partitionable or m >= 2**32:
        return jax.random.bits(key, (m,), jnp.uint32)
    # jax.random.bits (partitionable Threefry): counter (hi, lo) = (0, i) for
    # word i, and the word is the XOR of the hash's two outputs.
    lo = lax.iota(jnp.uint32, m)
    y0, y1 = _threefry2x32(data[0], data[1], jnp.zeros_like(lo), lo)
    # XLA fuses cheap elementwise producers into their consumers, and the
    # consumers here read each word once per element it serves (32 times for
    # k = 1), so the hash would be recomputed for every element. An integer
    # division is "expensive" to XLA and never duplicated that way: ending the
    # hash with a division by an all-ones array XLA cannot see through makes
    # it compute and store each word once, in the same kernel as the hash.
    ones = (lo | np.uint32(1)) // (lo | np.uint32(1))
    return (y0 ^ y1) // ones


def _keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> tuple[jax.Array, jax.Array | None, float]:
    """``(mask, packed, keep)``: the boolean keep-mask of ``shape``; the same mask
    bit-packed (``DropoutResiduals`` layout) when that costs nothing (``k = 1``),
    else ``None``; and the exact keep probability."""
    k, t = keep_threshold(rate)
    n = int(np.prod(shape, dtype=np.int64))
    per_word = 32 // k
    words = _random_words(key, -(-n // per_word))
    if k == 32:
        return (words >= jnp.uint32(2**32 - t)).reshape(shape), None, t / 2.0**32
    shifts = jnp.arange(per_word, dtype=jnp.uint32) * np.uint32(k)
    lanes = (words[:, None] >> shifts) & np.uint32(2**k - 1)
    mask = (lanes >= np.uint32(2**k - t)).reshape(-1)
    if mask.shape[0] != n:
        mask = mask[:n]
    packed = words if k == 1 else None  # k = 1, t = 1: kept where the bit is 1
    return mask.reshape(shape), packed, t / 2.0**k


def _unpack(packed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The boolean mask of ``shape`` from its bit-packed words (see :class:`DropoutResiduals`)."""
    n = int(np.prod(shape, dtype=np.int64))
    bits = (packed[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & np.uint32(1)
    mask = (bits != 0).reshape(-1)
    if mask.shape[0] != n:
        mask = mask[:n]
    return mask.reshape(shape)


def dropout_reference(x, key, *, rate: float, train: bool):
    """Plain-``jnp`` inverted dropout with the same mask, differentiated by JAX."""
    if not train or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    mask, _, keep = _keep_mask(key, x.shape, rate)
    acc = compute_dtype(x)
    return jnp.where(mask, (x.astype(acc) / jnp.asarray(keep, acc)).astype(x.dtype), jnp.zeros((), x.dtype))


def dropout_fwd(x, key, *, rate: float, train: bool):
    """Forward pass: ``(out, residuals)``; residuals are ``None`` when the op is
    the identity (``train=False`` or ``rate=0``) or zero (``rate=1``)."""
    if not train or rate == 0.0:
        return x, None
    if rate == 1.0:
        return jnp.zeros_like(x), None
    mask, packed, keep = _keep_mask(key, x.shape, rate)
    scale = jnp.asarray(1.0 / keep, compute_dtype(x))
    out = jnp.where(mask, (x.astype(scale.dtype) * scale).astype(x.dtype), jnp.zeros((), x.dtype))
    return out, DropoutResiduals(mask if packed is None else packed, scale)


def dropout_bwd(residuals, g):
    """Backward pass: ``dx = g * mask / keep``, returned as ``(dx,)``; the
    product is formed in ``scale``'s dtype (float32 for half-precision ``g``)
    and rounded to ``g``'s dtype once.

    ``residuals`` must be a :class:`DropoutResiduals`; when :func:`dropout_fwd`
    returned ``None`` the op was the identity (``dx = g``) or zero (``dx = 0``).
    """
    mask, scale = residuals
    if mask.dtype != jnp.bool_:
        mask = _unpack(mask, g.shape)
    dx = (g.astype(compute_dtype(g, scale)) * scale).astype(g.dtype)
    return (jnp.where(mask, dx, jnp.zeros((), g.dtype)),)


# Undifferentiated calls run the reference (``x / keep``; the fwd rule multiplies by ``1 / keep``).
_dropout = custom_op(
    dropout_reference,
    dropout_fwd,
    dropout_bwd,
    static=("rate", "train"),
    nondiff=("key",),  # keys carry no gradient
    primal=dropout_reference,
)


def check_dropout(x, key, rate, train):
    """``(x, key, rate, train)`` as :func:`dropout` takes them (an array, one
    key, a float, a bool), or the error :func:`dropout` raises (see its Raises)."""
    op = "dropout"
    x = as_array(x, op, "x")
    require_float(x, op, "x")
    key = require_key(key, op, "key")
    require_bool(train, op, "train")
    rate = check_number(rate, op, "rate")
    require(0.0 <= rate <= 1.0, op, f"rate (probability of dropping) must lie in [0, 1], got {rate}")
    return x, key, rate, bool(train)


def dropout(x, key, *, rate: float, train: bool):
    """Inverted dropout with a hand-derived backward pass.

    Args:
      x: any shape, floating dtype.
      key: ONE PRNG key (``jax.random.key(seed)``, shape ``()``, or a legacy
        ``jax.random.PRNGKey(seed)`` uint32 pair, shape ``(2,)``); ignored
        when the op is the identity, but still checked. For one key per
        example, ``jax.vmap`` the op over ``jax.random.split(key, n)``.
      rate: keyword, static, in ``[0, 1]``: the probability of DROPPING each
        element (Flax/PyTorch convention; the NumPy original's ``p`` is ``1 - rate``).
        A Python or NumPy number (``np.float32(0.5)`` works); not inf/NaN.
      train: keyword, static. ``False`` makes the op the identity.

    Returns:
      ``out``, ``x``'s shape and dtype: each element zeroed with probability
      ``rate`` and the survivors scaled by ``1 / (1 - rate)`` (exactly: see the
      module docstring on mask lanes). ``train=False`` or ``rate=0``: ``x``.
      ``rate=1``: zeros (never NaN). Empty input (N = 0): an empty output
      of ``x``'s shape, and an empty gradient. bfloat16/float16 ``x``: the
      scaling (forward and backward) is done in float32, rounded once.

    Raises:
      ValueError: ``rate`` outside ``[0, 1]`` or not finite; ``key`` a batch
        of keys (shape ``(n,)`` typed, ``(n, 2)`` legacy).
      TypeError: ``key`` not a PRNG key, ``train`` not a bool, ``rate`` not a
        number, ``x`` not floating point or not an array / nested list of
        numbers (lists are converted with ``jnp.asarray`` before tracing).

    Backward (``custom_vjp``): ``dx = g * mask / (1 - rate)``; the key gets no
    cotangent. Residual: the keep-mask -- 1 bit per element for
    ``rate = 0.5``, else 1 byte -- and a scalar.

    Source: Srivastava et al. (2014); the NumPy original's ``dropout_forward``.
    """
    x, key, rate, train = check_dropout(x, key, rate, train)
    if not train or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    return _dropout(x, key, rate=rate, train=True)
