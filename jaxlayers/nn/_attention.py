"""Attention layers (issue 19): :class:`MultiHeadAttention`, :class:`PositionalEncoding`,
:class:`PositionalEmbedding`, :class:`TransformerBlock`, and the sequence helpers :class:`SequencePool`
and :class:`Reshape` that a Transformer classifier needs around them.

Each follows the layer protocol of :mod:`jaxlayers.nn`; inputs are one example's ``(T, D)`` (a batch
``(N, T, D)``). Every gradient is the ops' hand-derived rules composed by JAX: the projections
:func:`jaxlayers.temporal_affine`, the attention
:func:`~jaxlayers.layers.attention.dot_product_attention`, :func:`jaxlayers.layernorm`,
:func:`jaxlayers.relu`, :func:`jaxlayers.dropout`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_choice, check_int, check_number, require
from jaxlayers.layers import dropout, layernorm, multi_head_attention, relu, temporal_affine
from jaxlayers.layers.mha import MHA_PARAMS
from jaxlayers.nn._layers import _Layer, _shape

__all__ = [
    "MultiHeadAttention",
    "Patches",
    "PositionalEmbedding",
    "PositionalEncoding",
    "Reshape",
    "SequencePool",
    "TransformerBlock",
    "sinusoidal_encoding",
]


def _rate(rate, owner: str, name: str = "dropout") -> float:
    return check_number(rate, owner, f"{name} (probability of dropping)", low=0.0, high=1.0, high_open=True)


def _bool(value, owner: str, name: str) -> bool:
    require(isinstance(value, bool | np.bool_), owner, f"{name} must be a bool, got {value!r}", TypeError)
    return bool(value)


def _need_key(key, train: bool, rate: float, owner: str) -> None:
    require(not (train and rate > 0 and key is None), owner, f"a PRNG key is required in train mode (dropout={rate})")


def _mha_params(key, d_in: int, d_ctx: int, e: int, d_out: int, dtype) -> dict:
    """``Wq (d_in, E)``, ``Wk``/``Wv (d_ctx, E)`` ~ N(0, 1/fan_in), ``Wo (E, d_out)`` ~ N(0, 1/E), zero biases."""
    kq, kk, kv, ko = jax.random.split(key, 4)

    def normal(k, shape):
        return jnp.asarray(1.0 / math.sqrt(shape[0]), dtype) * jax.random.normal(k, shape, dtype)

    return {
        "Wq": normal(kq, (d_in, e)),
        "bq": jnp.zeros((e,), dtype),
        "Wk": normal(kk, (d_ctx, e)),
        "bk": jnp.zeros((e,), dtype),
        "Wv": normal(kv, (d_ctx, e)),
        "bv": jnp.zeros((e,), dtype),
        "Wo": normal(ko, (e, d_out)),
        "bo": jnp.zeros((d_out,), dtype),
    }


def _heads(num_heads: int, head_dim: int | None, d: int, owner: str) -> int:
    if head_dim is not None:
        return head_dim
    require(
        d % num_heads == 0,
        owner,
        f"num_heads={num_heads} must divide the input width D = {d} (or give head_dim=)",
    )
    return d // num_heads


class MultiHeadAttention(_Layer):
    """Multi-head self-attention over a sequence, :func:`jaxlayers.multi_head_attention`.

    Args:
      num_heads: ``N >= 1``.
      head_dim: width of each head; ``None`` (default): ``D // num_heads`` (``num_heads`` must divide
        the input width ``D``). The projected width is ``E = num_heads * head_dim``.
      features: the output width; ``None`` (default): ``D``.
      causal: step ``t`` attends to steps ``<= t`` only (a language model); default ``False``.
      dropout: probability of dropping each attention probability in train mode (the course's
        ``MultiHeadAttention(embed_dim, num_heads, dropout)``); ``0`` (default) keeps the fused
        attention op with ``O(T)`` residuals.
      context_dim: width of the sequence attended to by :meth:`attend` (cross-attention);
        ``None`` (default): ``D`` (self-attention, what :meth:`apply` does).

    Input ``(T, D)``; output ``(T, features)``. Parameters ``Wq (D, E)``, ``bq (E,)``, ``Wk``,
    ``Wv (context_dim, E)``, ``bk``, ``bv (E,)``, ``Wo (E, features)``, ``bo (features,)``, named
    ``Wq{i}, bq{i}, ...`` (a weight layer: it takes the next number; the L2 penalty covers
    ``Wq, Wk, Wv, Wo``). Init: each ``W ~ N(0, 1 / fan_in)``, biases zeros. No state.
    """

    _ARGS = ("num_heads",)
    _KWARGS = ("head_dim", "features", "causal", "dropout", "context_dim")
    naming = "weight"
    param_order = MHA_PARAMS
    random_init = True
    random_apply = True

    def __init__(
        self,
        num_heads: int,
        *,
        head_dim: int | None = None,
        features: int | None = None,
        causal: bool = False,
        dropout: float = 0.0,
        context_dim: int | None = None,
    ) -> None:
        owner = "nn.MultiHeadAttention"
        self._set(
            num_heads=check_int(num_heads, owner, "num_heads", minimum=1),
            head_dim=None if head_dim is None else check_int(head_dim, owner, "head_dim", minimum=1),
            features=None if features is None else check_int(features, owner, "features", minimum=1),
            causal=_bool(causal, owner, "causal"),
            dropout=_rate(dropout, owner),
            context_dim=None if context_dim is None else check_int(context_dim, owner, "context_dim", minimum=1),
        )

    def init(self, key, input_shape, *, dtype=jnp.float32):
        owner = "nn.MultiHeadAttention"
        t, d = _shape(input_shape, owner, 2, "(T, D)")
        e = self.num_heads * _heads(self.num_heads, self.head_dim, d, owner)
        out = self.features or d
        params = _mha_params(key, d, self.context_dim or d, e, out, dtype)
        return params, {}, (t, out)

    def attend(self, params, x, context=None, *, train: bool, key=None, mask=None):
        """Attention of ``x (N, T, D)`` to ``context (N, S, context_dim)`` (``None``: ``x`` itself):
        ``(N, T, features)``. ``mask``: boolean, broadcastable to ``(N, num_heads, T, S)``, True = attend.

        Raises:
          ValueError: no ``key`` in train mode with ``dropout > 0``; shapes the op refuses.
        """
        owner = "nn.MultiHeadAttention"
        _need_key(key, train, self.dropout, owner)
        ctx = x if context is None else context
        rate = self.dropout if train else 0.0
        return multi_head_attention(
            x, ctx, ctx, params, num_heads=self.num_heads, mask=mask, is_causal=self.causal,
            dropout_rate=rate, dropout_key=key if rate > 0 else None,
        )  # fmt: skip

    def apply(self, params, state, x, *, train, key=None):
        require(
            self.context_dim is None or self.context_dim == x.shape[-1],
            "nn.MultiHeadAttention",
            f"context_dim={self.context_dim} is for cross-attention (call .attend(params, x, context)); "
            f"self-attention needs it None or D = {x.shape[-1]}",
        )
        return self.attend(params, x, train=train, key=key), state


def sinusoidal_encoding(length: int, dim: int, dtype=jnp.float32) -> jax.Array:
    """The sinusoidal positional encoding of "Attention Is All You Need" (Vaswani et al. 2017), ``(length, dim)``.

    ``P[t, j] = sin(t * 10000 ** (-j / dim))`` for even ``j``, ``cos(t * 10000 ** (-(j - 1) / dim))`` for odd
    ``j`` (the course's ``PositionalEncoding``), computed in float64 by NumPy and cast to ``dtype``.
    """
    t = np.arange(length, dtype=np.float64)[:, None]
    j = np.arange(dim)
    freq = 10000.0 ** (-(j - j % 2) / dim)
    angle = t * freq[None, :]
    return jnp.asarray(np.where(j % 2 == 0, np.sin(angle), np.cos(angle)), dtype)


class PositionalEncoding(_Layer):
    """Adds the fixed sinusoidal encoding of each step's position (:func:`sinusoidal_encoding`), then
    dropout, as the course's ``PositionalEncoding(embed_dim, dropout, max_len)``.

    Args:
      max_len: the longest sequence it accepts, ``>= 1`` (default 5000, the course's).
      dropout: probability of dropping each element of ``x + P`` in train mode; default ``0``.

    Input ``(T, D)``, ``T <= max_len``; output ``x + P[:T]``, ``(T, D)``. No parameters.
    """

    _ARGS = ("max_len",)
    _KWARGS = ("dropout",)
    random_apply = True

    def __init__(self, max_len: int = 5000, *, dropout: float = 0.0) -> None:
        owner = "nn.PositionalEncoding"
        self._set(max_len=check_int(max_len, owner, "max_len", minimum=1), dropout=_rate(dropout, owner))

    def init(self, key, input_shape, *, dtype=jnp.float32):
        t, d = _shape(input_shape, "nn.PositionalEncoding", 2, "(T, D)")
        require(t <= self.max_len, "nn.PositionalEncoding", f"sequence length T = {t} exceeds max_len={self.max_len}")
        return {}, {}, (t, d)

    def apply(self, params, state, x, *, train, key=None):
        _need_key(key, train, self.dropout, "nn.PositionalEncoding")
        out = x + sinusoidal_encoding(x.shape[1], x.shape[2], x.dtype)
        if train and self.dropout > 0:
            out = dropout(out, key, rate=self.dropout, train=True)
        return out, state


class PositionalEmbedding(_Layer):
    """Adds a learned vector per position: ``out[t] = x[t] + P[t]`` (BERT's, GPT's).

    Args:
      max_len: the number of positions, ``>= T``.
      scale: std of the normal init of ``P``; ``None`` (default): ``1 / sqrt(D)`` (as :class:`Embedding`).

    Input ``(T, D)``; output ``(T, D)``. Parameter ``P (max_len, D)``, named ``P{i}`` (it takes the next
    weight number; outside the L2 penalty, like an embedding). No state.
    """

    _ARGS = ("max_len",)
    _KWARGS = ("scale",)
    naming = "weight"
    param_order = ("P",)
    random_init = True

    def __init__(self, max_len: int, *, scale: float | None = None) -> None:
        owner = "nn.PositionalEmbedding"
        if scale is not None:
            scale = check_number(scale, owner, "scale", low=0.0, low_open=True, what="(or None: 1 / sqrt(D))")
        self._set(max_len=check_int(max_len, owner, "max_len", minimum=1), scale=scale)

    def init(self, key, input_shape, *, dtype=jnp.float32):
        owner = "nn.PositionalEmbedding"
        t, d = _shape(input_shape, owner, 2, "(T, D)")
        require(t <= self.max_len, owner, f"sequence length T = {t} exceeds max_len={self.max_len}")
        std = 1.0 / math.sqrt(d) if self.scale is None else self.scale
        return {"P": jnp.asarray(std, dtype) * jax.random.normal(key, (self.max_len, d), dtype)}, {}, (t, d)

    def apply(self, params, state, x, *, train, key=None):
        return x + params["P"][: x.shape[1]].astype(x.dtype), state


def _layernorm(x, gamma, beta, eps):
    n, t, d = x.shape
    return layernorm(x.reshape(n * t, d), gamma, beta, eps=eps).reshape(n, t, d)


class TransformerBlock(_Layer):
    """A pre-norm Transformer encoder block (GPT-2's, Xiong et al. 2020)::

        h = x + drop(MHA(layernorm(x)))
        out = h + drop(W2 relu(W1 layernorm(h) + b1) + b2)

    Args:
      num_heads: attention heads, ``>= 1``, dividing ``D`` unless ``head_dim`` is given.
      mlp_dim: the hidden width of the MLP, ``>= 1`` (commonly ``4 D``).
      dropout: probability of dropping each element of the two sublayers' outputs before their
        residual add (train mode); default ``0``.
      attention_dropout: probability of dropping each attention probability (see
        :class:`MultiHeadAttention`; ``> 0`` forms the ``(T, T)`` probabilities); default ``0``.
      causal: step ``t`` attends to steps ``<= t`` only (a language model).
      head_dim: width of each head; ``None``: ``D // num_heads``.
      eps: the layer norms' epsilon.

    Input ``(T, D)``; output ``(T, D)``. Parameters: one dict, held by :class:`~jaxlayers.nn.Sequential`
    under the user-layer prefix ``TransformerBlock_{p}`` (``p`` its position): ``gamma1, beta1 (D,)``
    (the first layer norm), the attention's ``Wq, bq, Wk, bk, Wv, bv, Wo, bo`` (as
    :class:`MultiHeadAttention`'s), ``gamma2, beta2``, the MLP's ``W1 (D, mlp_dim)`` ~ N(0, 2 / D) (He),
    ``b1``, ``W2 (mlp_dim, D)`` ~ N(0, 1 / mlp_dim), ``b2``. The model's L2 penalty (``reg``) does not
    cover them (use ``--optimizer adamw``'s weight decay). No state.
    """

    _ARGS = ("num_heads", "mlp_dim")
    _KWARGS = ("dropout", "attention_dropout", "causal", "head_dim", "eps")
    naming = "custom"
    param_order = ("gamma1", "beta1", *MHA_PARAMS, "gamma2", "beta2", "W1", "b1", "W2", "b2")
    random_init = True
    random_apply = True

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        causal: bool = False,
        head_dim: int | None = None,
        eps: float = 1e-5,
    ) -> None:
        owner = "nn.TransformerBlock"
        self._set(
            num_heads=check_int(num_heads, owner, "num_heads", minimum=1),
            mlp_dim=check_int(mlp_dim, owner, "mlp_dim", minimum=1),
            dropout=_rate(dropout, owner),
            attention_dropout=_rate(attention_dropout, owner, "attention_dropout"),
            causal=_bool(causal, owner, "causal"),
            head_dim=None if head_dim is None else check_int(head_dim, owner, "head_dim", minimum=1),
            eps=check_number(eps, owner, "eps", low=0.0, low_open=True),
        )

    def init(self, key, input_shape, *, dtype=jnp.float32):
        owner = "nn.TransformerBlock"
        t, d = _shape(input_shape, owner, 2, "(T, D)")
        e = self.num_heads * _heads(self.num_heads, self.head_dim, d, owner)
        ka, k1, k2 = jax.random.split(key, 3)
        m = self.mlp_dim
        params = {
            "gamma1": jnp.ones((d,), dtype),
            "beta1": jnp.zeros((d,), dtype),
            **_mha_params(ka, d, d, e, d, dtype),
            "gamma2": jnp.ones((d,), dtype),
            "beta2": jnp.zeros((d,), dtype),
            "W1": jnp.asarray(math.sqrt(2.0 / d), dtype) * jax.random.normal(k1, (d, m), dtype),
            "b1": jnp.zeros((m,), dtype),
            "W2": jnp.asarray(1.0 / math.sqrt(m), dtype) * jax.random.normal(k2, (m, d), dtype),
            "b2": jnp.zeros((d,), dtype),
        }
        return params, {}, (t, d)

    def apply(self, params, state, x, *, train, key=None):
        owner = "nn.TransformerBlock"
        rate = self.dropout if train else 0.0
        arate = self.attention_dropout if train else 0.0
        require(
            not (train and (rate > 0 or arate > 0) and key is None),
            owner,
            f"a PRNG key is required in train mode (dropout={self.dropout}, attention_dropout={self.attention_dropout})",
        )
        ka, k1, k2 = jax.random.split(key, 3) if key is not None else (None, None, None)
        p = params
        a = _layernorm(x, p["gamma1"], p["beta1"], self.eps)
        a = multi_head_attention(
            a, a, a, {n: p[n] for n in MHA_PARAMS}, num_heads=self.num_heads, is_causal=self.causal,
            dropout_rate=arate, dropout_key=ka if arate > 0 else None,
        )  # fmt: skip
        if rate > 0:
            a = dropout(a, k1, rate=rate, train=True)
        h = x + a
        f = relu(temporal_affine(_layernorm(h, p["gamma2"], p["beta2"], self.eps), p["W1"], p["b1"]))
        f = temporal_affine(f, p["W2"], p["b2"])
        if rate > 0:
            f = dropout(f, k2, rate=rate, train=True)
        return h + f, state


_POOLS = ("mean", "first", "last")


class SequencePool(_Layer):
    """A sequence's one vector: ``(T, D) -> (D,)``, for a classifier head after attention layers.

    Args:
      mode: ``"mean"`` (default: the average over the ``T`` steps), ``"first"`` (step 0, a class
        token) or ``"last"`` (step ``T - 1``).

    No parameters; gradients by JAX (a mean or an index).
    """

    _ARGS = ("mode",)

    def __init__(self, mode: str = "mean") -> None:
        check_choice(mode, "nn.SequencePool", "mode", _POOLS)
        self._set(mode=mode)

    def init(self, key, input_shape, *, dtype=jnp.float32):
        _, d = _shape(input_shape, "nn.SequencePool", 2, "(T, D)")
        return {}, {}, (d,)

    def apply(self, params, state, x, *, train, key=None):
        if self.mode == "mean":
            return jnp.mean(x, axis=1), state
        return x[:, 0 if self.mode == "first" else -1], state


class Reshape(_Layer):
    """Reshape each example to ``shape`` (same number of elements): ``(40, 1) -> (10, 4)`` cuts a
    40-step signal into 10 patches of 4 steps (a patch embedding is then :class:`TemporalAffine`).

    Args:
      shape: the new shape, a tuple of positive ints (no batch axis).

    No parameters.
    """

    _ARGS = ("shape",)

    def __init__(self, shape) -> None:
        ok = isinstance(shape, tuple | list) and len(shape) >= 1
        ok = ok and all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in shape)
        require(ok, "nn.Reshape", f"shape must be a tuple of positive ints, got {shape!r}", TypeError)
        self._set(shape=tuple(int(d) for d in shape))

    def init(self, key, input_shape, *, dtype=jnp.float32):
        shape = _shape(input_shape, "nn.Reshape", None, "")
        require(
            math.prod(shape) == math.prod(self.shape),
            "nn.Reshape",
            f"cannot reshape an input of shape {shape} ({math.prod(shape)} elements) to {self.shape}",
        )
        return {}, {}, self.shape

    def apply(self, params, state, x, *, train, key=None):
        return x.reshape(x.shape[0], *self.shape), state


class Patches(_Layer):
    """Cut a sequence into windows of ``size`` steps every ``stride`` steps: ``(T, D) -> (T', size * D)``
    with ``T' = (T + 2 padding - size) // stride + 1`` (zero padding at both ends); window ``i`` is
    ``x[i * stride - padding : i * stride - padding + size]`` flattened (step-major). Followed by
    :class:`TemporalAffine` it is a patch embedding (a 1-D convolution of stride ``stride``); with
    ``stride < size`` the patches overlap.

    Args:
      size: steps per window, ``>= 1``.
      stride: steps between window starts; ``None`` (default): ``size`` (disjoint patches).
      padding: zero steps added at each end, ``>= 0``; default ``0``.

    No parameters; gradients by JAX (a gather).
    """

    _ARGS = ("size",)
    _KWARGS = ("stride", "padding")

    def __init__(self, size: int, *, stride: int | None = None, padding: int = 0) -> None:
        owner = "nn.Patches"
        self._set(
            size=check_int(size, owner, "size", minimum=1),
            stride=None if stride is None else check_int(stride, owner, "stride", minimum=1),
            padding=check_int(padding, owner, "padding", minimum=0),
        )

    def _count(self, t: int) -> int:
        return (t + 2 * self.padding - self.size) // (self.stride or self.size) + 1

    def init(self, key, input_shape, *, dtype=jnp.float32):
        t, d = _shape(input_shape, "nn.Patches", 2, "(T, D)")
        require(
            t + 2 * self.padding >= self.size,
            "nn.Patches",
            f"size={self.size} is longer than the padded sequence ({t} steps + 2 * padding {self.padding})",
        )
        return {}, {}, (self._count(t), self.size * d)

    def apply(self, params, state, x, *, train, key=None):
        n, t, d = x.shape
        x = jnp.pad(x, ((0, 0), (self.padding, self.padding), (0, 0)))
        idx = np.arange(self._count(t))[:, None] * (self.stride or self.size) + np.arange(self.size)[None, :]
        return x[:, idx].reshape(n, idx.shape[0], self.size * d), state
