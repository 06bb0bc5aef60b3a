"""jaxlayers' own layers: each one op of :mod:`jaxlayers.layers` with its parameters declared.

Every class here follows the layer protocol of :mod:`jaxlayers.nn` and adds, as
optional extensions :class:`~jaxlayers.nn.Sequential` uses: ``init(..., dtype=)``,
the naming role ``naming`` (``"weight"``: takes the next number ``i`` and names
its parameters ``W{i}, b{i}``; ``"norm"``: takes the number of the last weight
layer, ``gamma{i}, beta{i}``, state ``bn{i}``; ``None``: no parameters) and the
flags ``random_init`` / ``random_apply`` (whether it draws random numbers).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_data_format, check_int, check_number, int_pair, require, stats_dtype
from jaxlayers.layers import (
    affine,
    batchnorm,
    batchnorm_state,
    conv2d,
    dropout,
    groupnorm,
    gru,
    layernorm,
    lstm,
    max_pool2d,
    relu,
    rnn,
    spatial_batchnorm,
    temporal_affine,
    word_embedding,
)
from jaxlayers.nn._registry import register_layer

__all__ = [
    "Affine",
    "BatchNorm",
    "ChannelsFirst",
    "ChannelsLast",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GroupNorm",
    "LayerNorm",
    "MaxPool2d",
    "ReLU",
    "SpatialBatchNorm",
    "init_std",
    # sequence models (issue 18)
    "Embedding",
    "TemporalAffine",
    "RNN",
    "LSTM",
    "GRU",
]


def init_std(weight_scale, fan_in: int, dtype) -> jax.Array | float:
    """The standard deviation of a weight initialisation: ``weight_scale``, or He's ``sqrt(2 / fan_in)`` for ``None``.

    ``weight_scale`` may be traced (a model's pytree leaf); it is cast to
    ``dtype`` so the product with a ``dtype`` draw rounds the same way whether
    it came in as a Python float or an array (He, He et al. 2015).
    """
    if weight_scale is None:
        return math.sqrt(2.0 / fan_in)
    return jnp.asarray(weight_scale, dtype)


def _shape(input_shape, owner: str, rank: int | None, what: str) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else None
    require(shape is not None, owner, f"input_shape must be a tuple of ints (no batch axis), got {input_shape!r}")
    require(
        rank is None or len(shape) == rank,
        owner,
        f"needs inputs of shape {what} (without the batch axis), got input shape {shape}",
    )
    return shape


def _json(v):
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    if isinstance(v, jax.Array | np.ndarray | np.generic):
        return float(v)
    return v


class _Layer:
    """What jaxlayers' layers share: a pytree (``_LEAVES`` traced), ``to_dict``/``from_dict``, a repr, the registry."""

    _ARGS: ClassVar[tuple[str, ...]] = ()  # positional constructor arguments, in order
    _KWARGS: ClassVar[tuple[str, ...]] = ()  # keyword-only ones
    _LEAVES: ClassVar[tuple[str, ...]] = ()  # traced when not None (weight_scale)
    naming: ClassVar[str | None] = None
    param_order: ClassVar[tuple[str, ...]] = ()  # the order of its parameter names (W before b, gamma before beta)
    random_init: ClassVar[bool] = False
    random_apply: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            jax.tree_util.register_pytree_node(cls, cls._flatten, cls._unflatten)
            register_layer(cls)

    def _fields(self):
        return (*self._ARGS, *self._KWARGS)

    def _flatten(self):
        traced = tuple(n for n in self._LEAVES if getattr(self, n) is not None)
        static = tuple((n, getattr(self, n)) for n in self._fields() if n not in traced)
        return tuple(getattr(self, n) for n in traced), (traced, static)

    @classmethod
    def _unflatten(cls, aux, leaves):
        traced, static = aux
        obj = object.__new__(cls)  # no validation: leaves may be tracers
        for n, v in (*static, *zip(traced, leaves, strict=True)):
            object.__setattr__(obj, n, v)
        return obj

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable (a layer is a configuration)")

    def _set(self, **values) -> None:
        for n, v in values.items():
            object.__setattr__(self, n, v)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as JSON values (tuples as lists)."""
        return {n: _json(getattr(self, n)) for n in self._fields()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict` (raises ``ValueError`` for unknown keys)."""
        require(isinstance(d, dict), cls.__name__, f"from_dict needs a dict, got {type(d).__name__}", TypeError)
        fields = (*cls._ARGS, *cls._KWARGS)
        unknown = sorted(set(d) - set(fields))
        require(not unknown, cls.__name__, f"from_dict: unknown fields {unknown}; known: {list(fields)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        args = [d.pop(n) for n in cls._ARGS if n in d]
        return cls(*args, **d)

    def __repr__(self) -> str:
        return self._describe(traced=True)

    def _describe(self, *, traced: bool) -> str:
        """The constructor call; without the traced fields (``weight_scale``) when ``traced`` is false (the
        title a model's structure holds, so that a new ``weight_scale`` compiles nothing)."""
        args = [repr(getattr(self, n)) for n in self._ARGS]
        defaults = {
            n: p.default
            for n, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not p.empty
        }
        for n in self._KWARGS:
            v = getattr(self, n)
            if n in self._LEAVES and not traced:
                continue
            if not (n in defaults and _same(v, defaults[n])):
                args.append(f"{n}={v!r}" if not isinstance(v, jax.Array) else f"{n}=<traced>")
        return f"{type(self).__name__}({', '.join(args)})"

    def init(self, key, input_shape, *, dtype=jnp.float32):  # pragma: no cover - each layer defines it
        raise NotImplementedError


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def _check_scale(weight_scale, owner: str):
    if weight_scale is None or isinstance(weight_scale, jax.Array):
        return weight_scale
    return check_number(weight_scale, owner, "weight_scale", low=0.0, low_open=True, what="(or None: He init)")


def _weight(key, shape, fan_in, weight_scale, dtype):
    return init_std(weight_scale, fan_in, dtype) * jax.random.normal(key, shape, dtype)


class Affine(_Layer):
    """A fully connected layer, :func:`jaxlayers.affine`: ``out = x.reshape(N, D) @ W + b``.

    Args:
      features: ``M``, the output width, ``>= 1``.
      weight_scale: std of the normal init of ``W``; ``None`` (default) for He, ``sqrt(2 / D)``.
        A pytree leaf (traced by the training loop).

    Input shape: any ``(d1, ..., dk)``, flattened to ``D = d1 * ... * dk``. Output: ``(M,)``.
    Parameters: ``W`` ``(D, M)`` (normal), ``b`` ``(M,)`` (zeros); no state.
    """

    _ARGS = ("features",)
    _KWARGS = ("weight_scale",)
    _LEAVES = ("weight_scale",)
    naming = "weight"
    param_order = ("W", "b")
    random_init = True

    def __init__(self, features: int, *, weight_scale: float | None = None) -> None:
        self._set(
            features=check_int(features, "nn.Affine", "features", minimum=1),
            weight_scale=_check_scale(weight_scale, "nn.Affine"),
        )

    def init(self, key, input_shape, *, dtype=jnp.float32):
        shape = _shape(input_shape, "nn.Affine", None, "(d1, ..., dk)")
        fan_in = math.prod(shape)
        require(fan_in >= 1, "nn.Affine", f"input shape {shape} has no features")
        w = _weight(key, (fan_in, self.features), fan_in, self.weight_scale, dtype)
        return {"W": w, "b": jnp.zeros((self.features,), dtype)}, {}, (self.features,)

    def apply(self, params, state, x, *, train, key=None):
        return affine(x, params["W"], params["b"]), state


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _image(input_shape, owner: str, data_format: str) -> tuple[int, int, int]:
    """One example's ``(C, H, W)`` from its shape in ``data_format`` (``(C, H, W)`` or ``(H, W, C)``)."""
    if data_format == "NHWC":
        h, w, c = _shape(input_shape, owner, 3, "(H, W, C) (data_format='NHWC')")
        return c, h, w
    return _shape(input_shape, owner, 3, "(C, H, W)")


def _layout(c: int, h: int, w: int, data_format: str) -> tuple[int, int, int]:
    """One example's shape in ``data_format`` from ``(C, H, W)``."""
    return (h, w, c) if data_format == "NHWC" else (c, h, w)


class Conv2d(_Layer):
    """A 2-D convolution (cross-correlation), :func:`jaxlayers.conv2d`, NCHW or NHWC.

    Args:
      features: ``F``, the number of filters.
      kernel_size: ``k`` or ``(kh, kw)``.
      stride: ``s`` or ``(sh, sw)``, ``>= 1``.
      padding: zero padding ``p`` or ``(ph, pw)``, or ``"same"`` (``(k - 1) // 2``: the size is
        kept for odd kernels and stride 1).
      weight_scale: std of the normal init, or ``None`` (He, ``sqrt(2 / (C kh kw))``). Traced.
      data_format: ``"NCHW"`` (default) or ``"NHWC"``: the layout of its input and output
        (channels last is the layout XLA's CPU convolutions run in).

    Input ``(C, H, W)`` (NHWC: ``(H, W, C)``); output ``(F, (H + 2 ph - kh) // sh + 1, (W + 2 pw -
    kw) // sw + 1)`` (NHWC: ``F`` last). Parameters: ``W`` ``(F, C, kh, kw)`` and ``b`` ``(F,)`` in
    either layout, so parameters (and checkpoints) do not depend on it.
    """

    _ARGS = ("features", "kernel_size")
    _KWARGS = ("stride", "padding", "weight_scale", "data_format")
    _LEAVES = ("weight_scale",)
    naming = "weight"
    param_order = ("W", "b")
    random_init = True

    def __init__(
        self, features: int, kernel_size, *, stride=1, padding=0, weight_scale=None, data_format="NCHW"
    ) -> None:
        owner = "nn.Conv2d"
        int_pair(kernel_size, owner, "kernel_size", minimum=1)
        int_pair(stride, owner, "stride", minimum=1)
        if padding == "same":
            kh, kw = int_pair(kernel_size, owner, "kernel_size", minimum=1)
            require(kh % 2 == 1 and kw % 2 == 1, owner, f"padding='same' needs an odd kernel, got {kernel_size!r}")
        else:
            int_pair(padding, owner, "padding", minimum=0)
        self._set(
            features=check_int(features, owner, "features", minimum=1),
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            weight_scale=_check_scale(weight_scale, owner),
            data_format=check_data_format(data_format, owner),
        )

    def _pads(self):
        kh, kw = int_pair(self.kernel_size, "nn.Conv2d", "kernel_size", minimum=1)
        if self.padding == "same":
            return ((kh - 1) // 2, (kw - 1) // 2)
        return self.padding

    def init(self, key, input_shape, *, dtype=jnp.float32):
        owner = "nn.Conv2d"
        c, h, w = _image(input_shape, owner, self.data_format)
        kh, kw = int_pair(self.kernel_size, owner, "kernel_size", minimum=1)
        sh, sw = int_pair(self.stride, owner, "stride", minimum=1)
        ph, pw = int_pair(self._pads(), owner, "padding", minimum=0)
        ho, wo = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
        require(
            ho >= 1 and wo >= 1,
            owner,
            f"kernel {kh}x{kw} does not fit the input {(c, h, w)} with padding {(ph, pw)}: the output would be empty",
        )
        shape = (self.features, c, kh, kw)
        params = {"W": _weight(key, shape, c * kh * kw, self.weight_scale, dtype), "b": jnp.zeros((shape[0],), dtype)}
        return params, {}, _layout(self.features, ho, wo, self.data_format)

    def apply(self, params, state, x, *, train, key=None):
        out = conv2d(
            x, params["W"], params["b"], stride=self.stride, padding=self._pads(), data_format=self.data_format
        )
        return out, state


class MaxPool2d(_Layer):
    """VALID max pooling, :func:`jaxlayers.max_pool2d`.

    Args:
      pool_size: ``p`` or ``(ph, pw)``.
      stride: ``s`` or ``(sh, sw)``; ``None`` (default): the pool size.
      data_format: ``"NCHW"`` (default) or ``"NHWC"``, the layout of its input and output.

    Input ``(C, H, W)`` (NHWC: ``(H, W, C)``); output ``(C, (H - ph) // sh + 1, (W - pw) // sw +
    1)`` (NHWC: ``C`` last); no parameters.
    """

    _ARGS = ("pool_size",)
    _KWARGS = ("stride", "data_format")

    def __init__(self, pool_size, *, stride=None, data_format="NCHW") -> None:
        int_pair(pool_size, "nn.MaxPool2d", "pool_size", minimum=1)
        if stride is not None:
            int_pair(stride, "nn.MaxPool2d", "stride", minimum=1)
        self._set(pool_size=pool_size, stride=stride, data_format=check_data_format(data_format, "nn.MaxPool2d"))

    def init(self, key, input_shape, *, dtype=jnp.float32):
        owner = "nn.MaxPool2d"
        c, h, w = _image(input_shape, owner, self.data_format)
        ph, pw = int_pair(self.pool_size, owner, "pool_size", minimum=1)
        sh, sw = int_pair(self.pool_size if self.stride is None else self.stride, owner, "stride", minimum=1)
        require(h >= ph and w >= pw, owner, f"pool {ph}x{pw} is larger than the input {tuple(input_shape)}")
        return {}, {}, _layout(c, (h - ph) // sh + 1, (w - pw) // sw + 1, self.data_format)

    def apply(self, params, state, x, *, train, key=None):
        stride = self.pool_size if self.stride is None else self.stride
        return max_pool2d(x, pool_size=self.pool_size, stride=stride, data_format=self.data_format), state


class _Norm(_Layer):
    _KWARGS = ("eps",)
    naming = "norm"
    param_order = ("gamma", "beta")
    _RANK: ClassVar[int] = 1
    _WHAT: ClassVar[str] = "(D,)"

    def _params(self, input_shape, dtype):
        owner = f"nn.{type(self).__name__}"
        if getattr(self, "data_format", "NCHW") == "NHWC":
            shape = _shape(input_shape, owner, self._RANK, "(H, W, C) (data_format='NHWC')")
            c = shape[-1]
        else:
            shape = _shape(input_shape, owner, self._RANK, self._WHAT)
            c = shape[0]
        return {"gamma": jnp.ones((c,), dtype), "beta": jnp.zeros((c,), dtype)}, shape

    def _channels(self, shape) -> int:
        return shape[-1] if getattr(self, "data_format", "NCHW") == "NHWC" else shape[0]


def _momentum_eps(momentum, eps, owner):
    return (
        check_number(momentum, owner, "momentum", low=0.0, high=1.0),
        check_number(eps, owner, "eps", low=0.0, low_open=True),
    )


class BatchNorm(_Norm):
    """Batch normalisation of features, :func:`jaxlayers.batchnorm`.

    Args:
      momentum: of the running statistics, ``running = momentum * running + (1 - momentum) * batch``.
      eps: added to the variance.

    Input ``(D,)``; output ``(D,)``. Parameters ``gamma`` (ones), ``beta`` (zeros) ``(D,)``;
    state a :class:`~jaxlayers.BatchNormState` (``mean=0, var=1``, at least float32). Train mode
    normalises with the batch's statistics and updates the running ones; test mode uses them.
    """

    _KWARGS = ("momentum", "eps")

    def __init__(self, *, momentum: float = 0.9, eps: float = 1e-5) -> None:
        m, e = _momentum_eps(momentum, eps, f"nn.{type(self).__name__}")
        self._set(momentum=m, eps=e)

    def init(self, key, input_shape, *, dtype=jnp.float32):
        params, shape = self._params(input_shape, dtype)
        return params, batchnorm_state(self._channels(shape), stats_dtype(dtype)), shape

    def apply(self, params, state, x, *, train, key=None):
        return batchnorm(
            x, params["gamma"], params["beta"], state, train=bool(train), momentum=self.momentum, eps=self.eps
        )


class SpatialBatchNorm(BatchNorm):
    """Batch normalisation per channel of images, :func:`jaxlayers.spatial_batchnorm`.

    As :class:`BatchNorm`, over ``(N, H, W)`` per channel: input ``(C, H, W)`` (``data_format="NHWC"``:
    ``(H, W, C)``), parameters and running statistics ``(C,)`` in either layout.

    Args:
      momentum, eps: as :class:`BatchNorm`.
      data_format: ``"NCHW"`` (default) or ``"NHWC"``, the layout of its input and output.
    """

    _KWARGS = ("momentum", "eps", "data_format")
    _RANK = 3
    _WHAT = "(C, H, W)"

    def __init__(self, *, momentum: float = 0.9, eps: float = 1e-5, data_format: str = "NCHW") -> None:
        super().__init__(momentum=momentum, eps=eps)
        self._set(data_format=check_data_format(data_format, "nn.SpatialBatchNorm"))

    def apply(self, params, state, x, *, train, key=None):
        return spatial_batchnorm(
            x,
            params["gamma"],
            params["beta"],
            state,
            train=bool(train),
            momentum=self.momentum,
            eps=self.eps,
            data_format=self.data_format,
        )


class LayerNorm(_Norm):
    """Layer normalisation over each example's features, :func:`jaxlayers.layernorm`.

    Args:
      eps: added to the variance.

    Input ``(D,)``, or any ``(..., D)`` (a sequence ``(T, D)``: each step normalised over its ``D``
    features, as the ``(N * T, D)`` rows of the op); output the same shape; ``gamma``, ``beta``
    ``(D,)``; no state (train = test).
    """

    _RANK = None
    _WHAT = "(..., D)"

    def __init__(self, *, eps: float = 1e-5) -> None:
        self._set(eps=check_number(eps, "nn.LayerNorm", "eps", low=0.0, low_open=True))

    def init(self, key, input_shape, *, dtype=jnp.float32):
        shape = _shape(input_shape, "nn.LayerNorm", None, self._WHAT)
        require(len(shape) >= 1, "nn.LayerNorm", f"needs inputs of shape (..., D), got input shape {shape}")
        d = shape[-1]
        return {"gamma": jnp.ones((d,), dtype), "beta": jnp.zeros((d,), dtype)}, {}, shape

    def apply(self, params, state, x, *, train, key=None):
        rows = x.reshape(-1, x.shape[-1])
        return layernorm(rows, params["gamma"], params["beta"], eps=self.eps).reshape(x.shape), state


class GroupNorm(_Norm):
    """Group normalisation of images, :func:`jaxlayers.groupnorm`.

    Args:
      groups: ``G``, dividing the channel count ``C``.
      eps: added to the variance.
      data_format: ``"NCHW"`` (default) or ``"NHWC"``, the layout of its input and output.

    Input ``(C, H, W)`` (NHWC: ``(H, W, C)``); output the same; ``gamma``, ``beta`` ``(C,)``; no state.
    """

    _ARGS = ("groups",)
    _KWARGS = ("eps", "data_format")
    _RANK = 3
    _WHAT = "(C, H, W)"

    def __init__(self, groups: int, *, eps: float = 1e-5, data_format: str = "NCHW") -> None:
        self._set(
            groups=check_int(groups, "nn.GroupNorm", "groups", minimum=1),
            eps=check_number(eps, "nn.GroupNorm", "eps", low=0.0, low_open=True),
            data_format=check_data_format(data_format, "nn.GroupNorm"),
        )

    def init(self, key, input_shape, *, dtype=jnp.float32):
        params, shape = self._params(input_shape, dtype)
        c = self._channels(shape)
        require(
            c % self.groups == 0,
            "nn.GroupNorm",
            f"groups={self.groups} must divide the {c} channels of the input {shape}",
        )
        return params, {}, shape

    def apply(self, params, state, x, *, train, key=None):
        out = groupnorm(
            x, params["gamma"], params["beta"], groups=self.groups, eps=self.eps, data_format=self.data_format
        )
        return out, state


class ReLU(_Layer):
    """``max(x, 0)``, :func:`jaxlayers.relu`; any input shape, kept; no parameters."""

    def __init__(self) -> None:
        pass

    def init(self, key, input_shape, *, dtype=jnp.float32):
        return {}, {}, _shape(input_shape, "nn.ReLU", None, "")

    def apply(self, params, state, x, *, train, key=None):
        return relu(x), state


class ChannelsLast(_Layer):
    """``(C, H, W) -> (H, W, C)``: one transpose of the batch, NCHW to NHWC; no parameters.

    Put before layers built with ``data_format="NHWC"`` (and :class:`ChannelsFirst` after them),
    so that a network fed channels-first images pays for one layout change at its input instead of
    a copy around every convolution. Its backward pass is the inverse transpose.
    """

    def __init__(self) -> None:
        pass

    def init(self, key, input_shape, *, dtype=jnp.float32):
        c, h, w = _shape(input_shape, "nn.ChannelsLast", 3, "(C, H, W)")
        return {}, {}, (h, w, c)

    def apply(self, params, state, x, *, train, key=None):
        return jnp.transpose(x, (0, 2, 3, 1)), state


class ChannelsFirst(_Layer):
    """``(H, W, C) -> (C, H, W)``: one transpose of the batch, NHWC to NCHW; no parameters.

    The inverse of :class:`ChannelsLast`: after the channels-last layers of a network, so that
    what follows (a :class:`Flatten`, an :class:`Affine`) sees the channels-first order.
    """

    def __init__(self) -> None:
        pass

    def init(self, key, input_shape, *, dtype=jnp.float32):
        h, w, c = _shape(input_shape, "nn.ChannelsFirst", 3, "(H, W, C)")
        return {}, {}, (c, h, w)

    def apply(self, params, state, x, *, train, key=None):
        return jnp.transpose(x, (0, 3, 1, 2)), state


class Flatten(_Layer):
    """``(d1, ..., dk) -> (d1 * ... * dk,)``; no parameters."""

    def __init__(self) -> None:
        pass

    def init(self, key, input_shape, *, dtype=jnp.float32):
        return {}, {}, (math.prod(_shape(input_shape, "nn.Flatten", None, "")),)

    def apply(self, params, state, x, *, train, key=None):
        return x.reshape(x.shape[0], -1), state


class Dropout(_Layer):
    """Inverted dropout, :func:`jaxlayers.dropout`: in train mode each unit is DROPPED with
    probability ``rate`` and the kept ones scaled by ``1 / (1 - rate)``; the identity in test mode.

    Args:
      rate: in ``[0, 1)``.

    Any input shape, kept; no parameters. Needs a PRNG ``key`` in train mode when ``rate > 0``
    (:class:`Sequential` gives each dropout layer its own subkey).
    """

    _ARGS = ("rate",)
    random_apply = True

    def __init__(self, rate: float) -> None:
        r = check_number(rate, "nn.Dropout", "rate (probability of dropping a unit)", low=0.0, high=1.0, high_open=True)
        self._set(rate=r)

    def init(self, key, input_shape, *, dtype=jnp.float32):
        return {}, {}, _shape(input_shape, "nn.Dropout", None, "")

    def apply(self, params, state, x, *, train, key=None):
        if not train or self.rate == 0.0:
            return x, state
        require(key is not None, "nn.Dropout", f"a PRNG key is required in train mode (rate={self.rate}): pass key=")
        return dropout(x, key, rate=self.rate, train=True), state


# --------------------------------------------------------------------------
# Sequence models (issue 18): nn.Embedding, nn.TemporalAffine
# --------------------------------------------------------------------------


class Embedding(_Layer):
    """A word embedding, :func:`jaxlayers.word_embedding`: ``out[t] = E[x[t]]``.

    Args:
      vocab: ``V``, the number of words (indices ``0 .. V - 1``), ``>= 1``.
      dim: ``D``, the length of each word's vector, ``>= 1``.
      scale: std of the normal init of ``E``; ``None`` (default): ``1 / sqrt(D)``
        (as ``flax.linen.Embed``; PyTorch's ``nn.Embedding`` uses 1, and so does
        :func:`jaxlayers.models.char_lm`, whose docstring says why). A static
        number (not traced).

    Input ``(T,)`` integer word indices (any integer dtype; the model keeps
    them integers: :class:`Sequential` does not cast an integer input to its
    dtype when its first layer is an Embedding). Output ``(T, D)``.
    Parameter ``E`` ``(V, D)`` (named ``E{i}``: it takes the next weight
    number, but the L2 penalty, which covers ``W{i}`` only, leaves it out).
    Indices outside ``[0, V)`` give NaN rows under ``jit`` (see the op).
    """

    _ARGS = ("vocab", "dim")
    _KWARGS = ("scale",)
    naming = "weight"
    param_order = ("E",)
    random_init = True
    integer_input = True  # Sequential: keep the (N, T) indices integers

    def __init__(self, vocab: int, dim: int, *, scale: float | None = None) -> None:
        owner = "nn.Embedding"
        if scale is not None:
            scale = check_number(scale, owner, "scale", low=0.0, low_open=True, what="(or None: 1 / sqrt(dim))")
        self._set(
            vocab=check_int(vocab, owner, "vocab", minimum=1),
            dim=check_int(dim, owner, "dim", minimum=1),
            scale=scale,
        )

    def init(self, key, input_shape, *, dtype=jnp.float32):
        (t,) = _shape(input_shape, "nn.Embedding", 1, "(T,) of word indices")
        std = 1.0 / math.sqrt(self.dim) if self.scale is None else self.scale
        E = jnp.asarray(std, dtype) * jax.random.normal(key, (self.vocab, self.dim), dtype)
        return {"E": E}, {}, (t, self.dim)

    def apply(self, params, state, x, *, train, key=None):
        return word_embedding(x, params["E"]), state


class TemporalAffine(_Layer):
    """One affine map at every time step, :func:`jaxlayers.temporal_affine`: ``out[t] = x[t] @ W + b``.

    Args:
      features: ``M``, the output width per step (the vocabulary, for a language model), ``>= 1``.
      weight_scale: std of the normal init of ``W``; ``None`` (default) for He, ``sqrt(2 / D)``.
        A pytree leaf (traced by the training loop).

    Input ``(T, D)``; output ``(T, M)``. Parameters ``W`` ``(D, M)`` (normal),
    ``b`` ``(M,)`` (zeros), named ``W{i}, b{i}`` as :class:`Affine`'s; no state.
    """

    _ARGS = ("features",)
    _KWARGS = ("weight_scale",)
    _LEAVES = ("weight_scale",)
    naming = "weight"
    param_order = ("W", "b")
    random_init = True

    def __init__(self, features: int, *, weight_scale: float | None = None) -> None:
        self._set(
            features=check_int(features, "nn.TemporalAffine", "features", minimum=1),
            weight_scale=_check_scale(weight_scale, "nn.TemporalAffine"),
        )

    def init(self, key, input_shape, *, dtype=jnp.float32):
        t, d = _shape(input_shape, "nn.TemporalAffine", 2, "(T, D)")
        w = _weight(key, (d, self.features), d, self.weight_scale, dtype)
        return {"W": w, "b": jnp.zeros((self.features,), dtype)}, {}, (t, self.features)

    def apply(self, params, state, x, *, train, key=None):
        return temporal_affine(x, params["W"], params["b"]), state


# --------------------------------------------------------------------------
# Recurrent layers (issue 18): nn.RNN, nn.LSTM, nn.GRU
# --------------------------------------------------------------------------


class _Recurrent(_Layer):
    """What the three recurrent layers share: ``(T, D) -> (H,)`` (the last hidden state) or ``(T, H)``.

    Parameters ``Wx (D, G H)``, ``Wh (H, G H)``, ``b (G H,)`` with ``G`` gate blocks, named
    ``Wx{i}, Wh{i}, b{i}`` (a weight layer: it takes the next number; the L2 penalty covers
    ``Wx{i}`` and ``Wh{i}``, not ``b{i}``). Init: ``Wx ~ N(0, 1 / D)``; each ``(H, H)`` gate
    block of ``Wh`` orthogonal (``jax.nn.initializers.orthogonal``: the recurrent map neither
    grows nor shrinks a state at init); ``b`` zeros (the LSTM's forget block ones).
    """

    _ARGS = ("hidden",)
    _KWARGS = ("return_sequences",)
    naming = "weight"
    param_order = ("Wx", "Wh", "b")
    random_init = True
    _GATES: ClassVar[int] = 1

    def __init__(self, hidden: int, *, return_sequences: bool = False) -> None:
        owner = f"nn.{type(self).__name__}"
        require(
            isinstance(return_sequences, bool | np.bool_),
            owner,
            f"return_sequences must be a bool, got {return_sequences!r}",
            TypeError,
        )
        self._set(hidden=check_int(hidden, owner, "hidden", minimum=1), return_sequences=bool(return_sequences))

    def _bias(self, dtype):
        return jnp.zeros((self._GATES * self.hidden,), dtype)

    def init(self, key, input_shape, *, dtype=jnp.float32):
        t, d = _shape(input_shape, f"nn.{type(self).__name__}", 2, "(T, D)")
        h, g = self.hidden, self._GATES
        kx, kh = jax.random.split(key)
        wx = jnp.asarray(1.0 / math.sqrt(d), dtype) * jax.random.normal(kx, (d, g * h), dtype)
        ortho = jax.nn.initializers.orthogonal()
        wh = jnp.concatenate([ortho(k, (h, h), dtype) for k in jax.random.split(kh, g)], axis=1)
        out = (t, h) if self.return_sequences else (h,)
        return {"Wx": wx, "Wh": wh, "b": self._bias(dtype)}, {}, out

    def _op(self, x, h0, params):  # pragma: no cover - each layer defines it
        raise NotImplementedError

    def apply(self, params, state, x, *, train, key=None):
        h0 = jnp.zeros((x.shape[0], self.hidden), jnp.result_type(x, params["Wx"]))
        hs = self._op(x, h0, params)
        return (hs if self.return_sequences else hs[:, -1]), state


class RNN(_Recurrent):
    """A vanilla (Elman) RNN over the sequence, :func:`jaxlayers.rnn`: ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``.

    Args:
      hidden: ``H``, the hidden width, ``>= 1``.
      return_sequences: ``False`` (default): output the last hidden state ``h_T`` ``(H,)`` (a
        sequence classifier: follow with :class:`Affine`); ``True``: every step's ``(T, H)`` (to
        stack recurrent layers, or follow with :class:`TemporalAffine`).

    Input ``(T, D)`` float, ``T >= 1``; ``h0`` zeros. Parameters ``Wx (D, H)``, ``Wh (H, H)``,
    ``b (H,)``, named ``Wx{i}, Wh{i}, b{i}``; ``Wx ~ N(0, 1/D)``, ``Wh`` orthogonal, ``b`` zeros.
    The L2 penalty covers ``Wx{i}`` and ``Wh{i}``. No state. Gradients: the op's hand-written
    backpropagation through time.
    """

    def _op(self, x, h0, params):
        return rnn(x, h0, params["Wx"], params["Wh"], params["b"])


class LSTM(_Recurrent):
    """An LSTM over the sequence, :func:`jaxlayers.lstm` (gate order **i, f, o, g**, as the NumPy original).

    Args:
      hidden: ``H``, the hidden width, ``>= 1``.
      return_sequences: ``False`` (default): the last hidden state ``(H,)``; ``True``: ``(T, H)``.

    Input ``(T, D)`` float, ``T >= 1``; ``h0`` and ``c0`` zeros. Parameters ``Wx (D, 4H)``,
    ``Wh (H, 4H)``, ``b (4H,)`` (column blocks i, f, o, g), named ``Wx{i}, Wh{i}, b{i}``;
    ``Wx ~ N(0, 1/D)``, each ``(H, H)`` block of ``Wh`` orthogonal, ``b`` zeros except the
    forget block, ones (Jozefowicz et al. 2015: the cell remembers by default at init). The L2
    penalty covers ``Wx{i}`` and ``Wh{i}``. No state.
    """

    _GATES = 4

    def _bias(self, dtype):
        h = self.hidden
        return jnp.zeros((4 * h,), dtype).at[h : 2 * h].set(1.0)

    def _op(self, x, h0, params):
        return lstm(x, h0, params["Wx"], params["Wh"], params["b"])


class GRU(_Recurrent):
    """A GRU over the sequence, :func:`jaxlayers.gru` (gate order **r, z, n**; PyTorch's variant, the reset
    gate applied after the recurrent matmul; one bias, on the input side).

    Args:
      hidden: ``H``, the hidden width, ``>= 1``.
      return_sequences: ``False`` (default): the last hidden state ``(H,)``; ``True``: ``(T, H)``.

    Input ``(T, D)`` float, ``T >= 1``; ``h0`` zeros. Parameters ``Wx (D, 3H)``, ``Wh (H, 3H)``,
    ``b (3H,)`` (column blocks r, z, n), named ``Wx{i}, Wh{i}, b{i}``; ``Wx ~ N(0, 1/D)``, each
    ``(H, H)`` block of ``Wh`` orthogonal, ``b`` zeros. The L2 penalty covers ``Wx{i}`` and
    ``Wh{i}``. No state.
    """

    _GATES = 3

    def _op(self, x, h0, params):
        return gru(x, h0, params["Wx"], params["Wh"], params["b"])
