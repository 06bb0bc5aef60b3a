"""Models built only from jaxlayers ops: :class:`FullyConnectedNet`, :class:`ThreeLayerConvNet`, :class:`ConvNet`.

Every gradient of a model here is a hand-derived ``custom_vjp`` rule: each
network is a composition of jaxlayers' ops (affine, conv2d, max_pool2d,
batchnorm, spatial_batchnorm, layernorm, groupnorm, relu, dropout and the
softmax / SVM losses) and nothing else but the L2 penalty. All are instances of
the model protocol (:mod:`jaxlayers.model`) and pytrees whose ``reg`` and
``weight_scale`` are traced by the training loop.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers import nn
from jaxlayers._checks import (
    check_choice,
    check_fields,
    check_float_dtype,
    check_int,
    check_ints,
    check_number,
    int_pair,
    optional,
    require,
)
from jaxlayers.layers import BatchNormState
from jaxlayers.model import DataclassRecord, register_model
from jaxlayers.nn import init_std
from jaxlayers.nn._sequential import Classifier, _forward, _leaf_layers

__all__ = [
    "CHARLM_CELLS",
    "ConvNet",
    "FullyConnectedNet",
    "LayerModel",
    "ThreeLayerConvNet",
    "char_lm",
    "char_transformer",
    "init_std",
    "transformer_classifier",
]

# char_lm's recurrent layer by name: the nn class (looked up when the model is built), or None for none.
CHARLM_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "none": None}


def char_lm(
    vocab_size: int,
    seq_len: int,
    *,
    embed_dim: int = 64,
    hidden: int = 256,
    cell: str = "lstm",
    embed_scale: float = 1.0,
    reg: float = 0.0,
) -> nn.Sequential:
    """A character (token) language model, ``jaxlayers train --model charlm``: ``nn.Sequential(
    nn.Embedding(vocab_size, embed_dim, scale=embed_scale), <cell>(hidden, return_sequences=True),
    nn.TemporalAffine(vocab_size), input_shape=(seq_len,), loss="temporal_softmax")``.

    Inputs int ``(N, seq_len)`` token ids; scores ``(N, seq_len, vocab_size)`` of the next token at every
    step; labels ``(N, seq_len)`` (negatives padding). ``cell`` picks the recurrent layer from
    :data:`CHARLM_CELLS` (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``); ``"none"`` leaves it out (a bigram
    model: each step's scores see only its own token).

    **The embedding's init** is ``E ~ N(0, embed_scale**2)``, by default ``N(0, 1)`` (std 1, as
    PyTorch's ``nn.Embedding``), not :class:`~jaxlayers.nn.Embedding`'s own default std
    ``1 / sqrt(embed_dim)`` (Flax's ``Embed``'s scale). The recurrent layer's input weights are drawn
    ``N(0, 1 / embed_dim)``, so with unit embeddings its input pre-activations start at std about 1;
    with std ``1 / sqrt(embed_dim)`` embeddings they start ``sqrt(embed_dim)`` times smaller (std 0.125
    at 64) and the gates barely see the input at first. Measured on ``pydoc-chars:64`` (``bench/charlm.py``,
    ``Embedding(104, 64) -> LSTM(128)``, 1000 Adam steps, seeds 0-2): validation 2.11 bits per character
    with std 1 against 2.34 with std ``1 / sqrt(64)`` (PyTorch's ``nn.LSTM`` with its own init: 2.23).
    Only this builder changes the scale: :func:`char_transformer` adds a learned position to the
    embedding and normalises before each block, and :class:`~jaxlayers.CaptioningRNN` keeps the NumPy
    original's ``N(0, 1) / 100`` word vectors. ``embed_scale`` is a static number ``> 0``.

    Raises:
      ValueError: an unknown ``cell``, or one whose layer this build of ``jaxlayers.nn`` lacks; an
        ``embed_scale`` that is not finite and ``> 0``; sizes as the layers raise.
      TypeError: an ``embed_scale`` that is not a Python number.
    """
    check_choice(cell, "char_lm", "cell", tuple(CHARLM_CELLS))
    embed_scale = check_number(embed_scale, "char_lm", "embed_scale", low=0.0, low_open=True)
    layers = [nn.Embedding(vocab_size, embed_dim, scale=embed_scale)]
    if CHARLM_CELLS[cell] is not None:
        layer = getattr(nn, CHARLM_CELLS[cell], None)
        require(layer is not None, "char_lm", f"cell {cell!r} needs nn.{CHARLM_CELLS[cell]}, which this build lacks")
        layers.append(layer(hidden, return_sequences=True))
    layers.append(nn.TemporalAffine(vocab_size))
    return nn.Sequential(*layers, input_shape=(seq_len,), loss="temporal_softmax", reg=reg)


def transformer_classifier(
    input_shape,
    num_classes: int,
    *,
    patch: int = 4,
    stride: int | None = None,
    dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    position: str = "learned",
    reg: float = 0.0,
) -> nn.Sequential:
    """A Transformer sequence classifier, ``jaxlayers train --model transformer``: the ``(T, D)`` input cut
    into windows of ``patch`` steps every ``stride`` (:class:`~jaxlayers.nn.Patches`, zero-padded by
    ``(patch - stride) // 2`` at each end), each embedded by one affine map, plus a learned position;
    ``depth`` pre-norm blocks; a final layer norm, the mean over the patches, the class scores::

        nn.Sequential(nn.Patches(patch, stride=stride, padding=(patch - stride) // 2), nn.TemporalAffine(dim),
                      nn.PositionalEmbedding(P), *[nn.TransformerBlock(num_heads, mlp_dim, dropout=dropout)] * depth,
                      nn.LayerNorm(), nn.SequencePool("mean"), nn.Affine(num_classes), input_shape=(T, D))

    ``stride`` defaults to ``patch`` (disjoint patches), ``mlp_dim`` to ``2 * dim``; ``P`` is the number
    of windows. ``position="sinusoidal"`` adds the fixed :class:`~jaxlayers.nn.PositionalEncoding` instead
    of the learned :class:`~jaxlayers.nn.PositionalEmbedding`.

    Raises:
      ValueError: an ``input_shape`` that is not ``(T, D)``; sizes the layers refuse.
    """
    owner = "transformer_classifier"
    shape = tuple(int(d) for d in (input_shape if isinstance(input_shape, tuple | list) else (input_shape, 1)))
    require(len(shape) == 2, owner, f"input_shape must be (T, D), got {input_shape!r}")
    patch = check_int(patch, owner, "patch", minimum=1)
    stride = patch if stride is None else check_int(stride, owner, "stride", minimum=1)
    patches = nn.Patches(patch, stride=stride, padding=max(patch - stride, 0) // 2)
    n = patches.init(None, shape)[2][0]
    check_choice(position, owner, "position", ("learned", "sinusoidal"))
    pos = nn.PositionalEmbedding(n) if position == "learned" else nn.PositionalEncoding(n)
    blocks = [nn.TransformerBlock(num_heads, mlp_dim or 2 * dim, dropout=dropout) for _ in range(depth)]
    return nn.Sequential(
        patches, nn.TemporalAffine(dim), pos, *blocks,
        nn.LayerNorm(), nn.SequencePool("mean"), nn.Affine(num_classes), input_shape=shape, reg=reg,
    )  # fmt: skip


def char_transformer(
    vocab_size: int,
    seq_len: int,
    *,
    dim: int = 128,
    depth: int = 2,
    num_heads: int = 4,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    reg: float = 0.0,
) -> nn.Sequential:
    """A character (token) Transformer language model, ``jaxlayers train --model chartransformer``
    (GPT's shape, small)::

        nn.Sequential(nn.Embedding(vocab_size, dim), nn.PositionalEmbedding(seq_len),
                      *[nn.TransformerBlock(num_heads, mlp_dim, dropout=dropout, causal=True)] * depth,
                      nn.LayerNorm(), nn.TemporalAffine(vocab_size), input_shape=(seq_len,), loss="temporal_softmax")

    Causal: the scores at step ``t`` see tokens ``0..t`` only, so ``jaxlayers sample`` can feed it a
    window filled from the left. ``mlp_dim`` defaults to ``4 * dim``. Inputs, scores and labels as
    :func:`char_lm`.

    Raises:
      ValueError: sizes the layers refuse (``num_heads`` not dividing ``dim``).
    """
    blocks = [nn.TransformerBlock(num_heads, mlp_dim or 4 * dim, dropout=dropout, causal=True) for _ in range(depth)]
    return nn.Sequential(
        nn.Embedding(vocab_size, dim), nn.PositionalEmbedding(seq_len), *blocks, nn.LayerNorm(),
        nn.TemporalAffine(vocab_size), input_shape=(seq_len,), loss="temporal_softmax", reg=reg,
    )  # fmt: skip


_NORMALIZATIONS = (None, "batchnorm")
_LOSSES = ("softmax", "svm")

Params = dict[str, jax.Array]
State = dict[str, BatchNormState]


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def _check_rate(rate, owner: str, name: str) -> float:
    what = "; use 0 to disable dropout"
    return check_number(
        rate, owner, f"{name} (probability of dropping a unit)", low=0.0, high=1.0, high_open=True, what=what
    )


class LayerModel(DataclassRecord, Classifier):
    """What jaxlayers' models share (a mixin for frozen dataclasses).

    * A **pytree**: the fields in ``_TRACED`` (``reg``, ``weight_scale``) are
      its leaves and reach compiled training programs as traced values (a new
      value compiles nothing; ``fit_many`` stacks them); every other field is
      static. ``weight_scale=None`` (He init) has no leaf.
    * ``to_dict`` / ``from_dict``, the L2 penalty over the ``W*`` parameters,
      and the checks of ``params`` / ``state`` against :meth:`param_shapes`.

    * An :mod:`jaxlayers.nn` **declaration**: a subclass writes its
      architecture once, in :meth:`layers` (from its fields); the
      :class:`~jaxlayers.nn.Sequential` built from it (:attr:`net`, built once
      per model) gives ``init``, the forward pass, :meth:`param_shapes`,
      :meth:`state_keys`, :meth:`summary` and so the memory estimate. Every
      weight layer gets the model's ``weight_scale``.

    Subclasses define ``_OWNER`` (the name in error messages), :meth:`layers`
    and :meth:`input_shape`.
    """

    _TRACED: ClassVar[tuple[str, ...]] = ("reg", "weight_scale")
    _OWNER: ClassVar[str] = "model"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    def _tree_flatten(self):
        fields = [f.name for f in dataclasses.fields(self)]
        static = tuple((n, getattr(self, n)) for n in fields if n not in self._TRACED)
        return tuple(getattr(self, n) for n in self._TRACED), (static, self._net_def)

    @classmethod
    def _tree_unflatten(cls, aux, leaves):
        static, net_def = aux
        obj = object.__new__(cls)  # no __post_init__: leaves may be tracers or vmapped arrays
        for name, value in static:
            _set(obj, name, value)
        for name, value in zip(cls._TRACED, leaves, strict=True):
            _set(obj, name, value)
        # the declaration's leaves: reg, then every weight layer's weight_scale (none for He init)
        n_scales = net_def.num_leaves - 1
        _set(obj, "_net_def", net_def)
        _set(obj, "net", jax.tree_util.tree_unflatten(net_def, [obj.reg, *[obj.weight_scale] * n_scales]))
        return obj

    # ------------------------------------------------------------------ the declaration

    def layers(self) -> tuple:  # pragma: no cover - defined by subclasses
        """The architecture, as :mod:`jaxlayers.nn` layers (written once, here)."""
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:  # pragma: no cover - defined by subclasses
        """One example's shape, without the batch axis (as ``nn.Sequential.input_shape``)."""
        raise NotImplementedError

    def _declare(self) -> None:
        """Build :attr:`net` from the (validated) fields; called at the end of ``__post_init__``."""
        net = nn.Sequential(
            *self.layers(), input_shape=self.input_shape, loss=self.loss_type, reg=self.reg, dtype=self.dtype
        )
        _set(self, "net", net)
        _set(self, "_net_def", jax.tree_util.tree_structure(net))

    def init(self, key: jax.Array) -> tuple[Params, State]:
        """Initial ``(params, state)``: the declaration's ``init``.

        ``key`` (``jax.random.key(seed)``) is split into one subkey per weight layer, in order. ``params``: a
        dict of arrays in ``dtype`` (shapes as :meth:`param_shapes`): ``Wi ~ N(0, s^2)`` with ``s =
        weight_scale`` or ``sqrt(2 / fan_in)`` (He), ``bi = betai = 0``, ``gammai = 1``; ``state``:
        ``{"bn<i>": BatchNormState(mean=0, var=1)}`` per batch-normalised layer, else ``{}``.

        Raises:
          TypeError: ``dtype`` float64 with x64 off.
        """
        self.net._check_dtype_available(self._OWNER)
        return self.net.init(key)

    def apply(
        self, params: Params, state: State, x: jax.Array, *, train: bool, key: jax.Array | None = None
    ) -> tuple[jax.Array, State]:
        """Forward pass to class scores (logits) ``(N, num_classes)`` in ``dtype``, and the new state.

        Args:
          params, state: from :meth:`init` (or training).
          x: inputs, cast to ``dtype``: ``(N, input_dim)`` or ``(N, d1, ..., dk)`` flattening to it for
            :class:`FullyConnectedNet`; ``(N, C, H, W)`` or flat ``(N, C*H*W)`` for the conv nets.
          train: keyword, static. ``True``: batchnorm uses batch statistics (and updates the running
            ones), dropout is active. ``False``: test mode, deterministic (``new_state`` is ``state``).
          key: PRNG key for the dropout masks; required when ``train`` and ``dropout_rate > 0``.

        Raises:
          ValueError: ``x`` of another shape; params or state that do not match the network (naming
            them and the shapes seen); no ``key`` when dropout needs one.
          TypeError: a non-bool ``train``.
        """
        x = self.net._check_inputs(params, state, self._input(x), train, key, self._OWNER)
        return _forward(self.net._plan, _leaf_layers(self.net.layers), params, state, x, train=bool(train), key=key)

    def _input(self, x) -> jax.Array:  # pragma: no cover - defined by subclasses
        """``x`` checked against the model's input (a message in the model's terms) and shaped for the net."""
        raise NotImplementedError

    def _check_shared_fields(self) -> None:
        """Validate (and normalise) the fields every jaxlayers model has: ``num_classes``, ``reg``,
        ``weight_scale``, ``loss_type``, ``dtype``; raise naming the field."""
        check_fields(
            self,
            self._OWNER,
            num_classes=partial(check_int, minimum=2),
            reg=lambda v, owner, _: check_number(v, owner, "reg (L2 strength)", low=0.0),
            weight_scale=optional(partial(check_number, low=0.0, low_open=True, what="(or None: He init)")),
            loss_type=partial(check_choice, choices=_LOSSES),
            dtype=check_float_dtype,
            **({"dropout_rate": _check_rate} if hasattr(self, "dropout_rate") else {}),
        )

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every parameter, by name (``W1``, ``b1``, ``gamma1``, ...), from the declaration."""
        return self.net.param_shapes()

    def state_keys(self) -> set[str]:
        """The keys of the running-statistics dict (``bn{i}`` per batch-normalised layer)."""
        return self.net.state_keys()

    def num_params(self) -> int:
        """The number of parameters (scalars) of the model."""
        return self.net.num_params()

    def summary(self) -> str:
        """A table of the model: one row per parameter number (``W1, b1, gamma1`` together: the
        output shape of that weight layer, parameter count, bytes) and a total line; see
        ``self.net.summary()`` for one row per layer."""
        return self.net.summary(by="number", title=type(self).__name__)

    def weight_names(self) -> list[str]:
        """The parameters the L2 penalty covers (``W1, W2, ...``), from the declaration."""
        return self.net.weight_names()


@register_model
@dataclasses.dataclass(frozen=True)
class FullyConnectedNet(LayerModel):
    """A fully connected classifier: ``{affine - [batchnorm] - relu - [dropout]} x (L-1) - affine - loss``.

    A frozen, hashable configuration with pure methods; parameters and running
    statistics live outside it, in plain pytrees:

    * ``params``: a flat dict ``{"W1", "b1", "gamma1", "beta1", ..., "WL",
      "bL"}``; ``Wi`` has shape ``(fan_in, fan_out)``, ``bi``, ``gammai``,
      ``betai`` shape ``(fan_out,)``. ``gammai``/``betai`` exist only with
      ``normalization="batchnorm"`` and only for the hidden layers.
    * ``state``: ``{"bn1": BatchNormState, ..., "bn{L-1}": ...}`` with
      ``normalization="batchnorm"``, else ``{}``.

    Attributes:
      hidden_dims: widths of the ``L - 1`` hidden layers (a tuple; a list is
        converted). ``()`` gives a linear classifier.
      input_dim: features per example ``D``; inputs of shape ``(N, d1, ...,
        dk)`` are flattened to ``D = d1 * ... * dk``.
      num_classes: ``C``, the number of classes (scores are ``(N, C)``).
      normalization: ``None`` or ``"batchnorm"`` (after each hidden affine,
        before the ReLU; running statistics with momentum 0.9, eps 1e-5).
      dropout_rate: probability of DROPPING a hidden unit, in ``[0, 1)``;
        ``0`` disables dropout.
      reg: L2 strength; the loss adds ``0.5 * reg * sum_i sum(Wi**2)`` over
        the weight matrices only (no biases, no gamma/beta).
      loss_type: ``"softmax"`` (cross-entropy) or ``"svm"`` (multiclass
        hinge, margin 1). Named ``loss_type`` because ``loss`` is the method.
      weight_scale: standard deviation of the normal weight init, or ``None``
        for He init, ``std = sqrt(2 / fan_in)`` per layer. Biases and ``beta``
        start at 0, ``gamma`` at 1.
      dtype: parameter and compute dtype (inputs are cast to it); float64
        needs x64 (``with jax.enable_x64(True):``).

    Raises:
      ValueError, TypeError: at construction, for a config that cannot work
        (negative widths, unknown normalization or loss, rate outside
        ``[0, 1)``, negative reg, non-floating dtype, ...), naming the field.

    Example:
      >>> import jax, jaxlayers as jl
      >>> net = jl.FullyConnectedNet(hidden_dims=(32,), input_dim=64, num_classes=10)
      >>> params, state = net.init(jax.random.key(0))
      >>> sorted(params)
      ['W1', 'W2', 'b1', 'b2']
    """

    hidden_dims: tuple[int, ...] = (100, 100)
    input_dim: int = 3 * 32 * 32
    num_classes: int = 10
    normalization: str | None = None
    dropout_rate: float = 0.0
    reg: float = 0.0
    loss_type: str = "softmax"
    weight_scale: float | None = None
    dtype: Any = jnp.float32

    _OWNER: ClassVar[str] = "FullyConnectedNet"

    def __post_init__(self) -> None:
        check_fields(
            self,
            self._OWNER,
            hidden_dims=check_ints,
            input_dim=partial(check_int, minimum=1),
            normalization=partial(check_choice, choices=_NORMALIZATIONS),
        )
        self._check_shared_fields()
        self._declare()

    # ------------------------------------------------------------------ helpers

    @property
    def num_layers(self) -> int:
        """``L``: the number of affine layers (hidden layers + the output layer)."""
        return len(self.hidden_dims) + 1

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """``(input_dim, *hidden_dims, num_classes)``."""
        return (self.input_dim, *self.hidden_dims, self.num_classes)

    @property
    def use_batchnorm(self) -> bool:
        return self.normalization == "batchnorm"

    def layers(self) -> tuple:
        """``{Affine - [BatchNorm] - ReLU - [Dropout]} x (L-1) - Affine``."""
        ws = self.weight_scale
        hidden = []
        for h in self.hidden_dims:
            hidden += [nn.Affine(h, weight_scale=ws), *([nn.BatchNorm()] if self.use_batchnorm else []), nn.ReLU()]
            hidden += [nn.Dropout(self.dropout_rate)] if self.dropout_rate > 0 else []
        return (*hidden, nn.Affine(self.num_classes, weight_scale=ws))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.input_dim,)

    def _input(self, x) -> jax.Array:
        shape = tuple(np.shape(x))
        require(
            len(shape) >= 2,
            self._OWNER,
            f"x must have shape (N, {self.input_dim}) (or (N, d1, ..., dk) flattening to it), got {shape}",
        )
        d = math.prod(shape[1:])
        require(
            d == self.input_dim,
            self._OWNER,
            f"x has {d} features per example (shape {shape}) but the network was built with "
            f"input_dim={self.input_dim}; build it with input_dim={d} or fix the data",
        )
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], d)


def _image_shape(value, owner: str, name: str = "input_dim") -> tuple[int, int, int]:
    """``(C, H, W)`` as ints >= 1."""
    shape = tuple(value) if isinstance(value, tuple | list) else None
    require(shape is not None and len(shape) == 3, owner, f"input_dim must be (C, H, W), got {value!r}", TypeError)
    return tuple(check_int(v, owner, f"input_dim[{i}]", minimum=1) for i, v in enumerate(shape))


class _ImageModel(LayerModel):
    """Shared by the conv nets: image-shaped or flat inputs, ``(N, C, H, W)``."""

    def _input(self, x) -> jax.Array:
        """``x`` as ``(N, C, H, W)``: exactly that shape, or flat ``(N, C*H*W)`` (row-major, as
        ``images.reshape(N, -1)``). Any other layout is refused, even one with as many elements per
        example (``(N, H, W, C)`` would be silently scrambled by a reshape)."""
        shape = tuple(np.shape(x))
        c, h, w = self.input_dim
        require(
            (len(shape) == 2 and shape[1] == c * h * w) or (len(shape) == 4 and shape[1:] == (c, h, w)),
            self._OWNER,
            f"x must have shape (N, C, H, W) = (N, {c}, {h}, {w}) or flat (N, {c * h * w}), got {shape}"
            + (" (channels last? transpose it to channels first)" if len(shape) == 4 and shape[-1] == c else ""),
        )
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], c, h, w)


@register_model
@dataclasses.dataclass(frozen=True)
class ThreeLayerConvNet(_ImageModel):
    """The course's three-layer convolutional network: ``conv - relu - 2x2 max pool - affine - relu - affine - loss``.

    The convolution keeps the spatial size (stride 1, padding ``(filter_size - 1) // 2``);
    the pool halves it. Parameters (the NumPy original's names): ``W1`` ``(F, C, k, k)``
    and ``b1`` ``(F,)``; ``W2`` ``(F * H/2 * W/2, hidden_dim)``, ``b2``; ``W3``
    ``(hidden_dim, num_classes)``, ``b3``. No running statistics (``state == {}``). A
    pytree like :class:`FullyConnectedNet` (``reg``, ``weight_scale`` traced).

    Attributes:
      input_dim: ``(C, H, W)`` of one example; inputs ``(N, C, H, W)`` or flat ``(N, C*H*W)``.
      num_filters: ``F``.
      filter_size: ``k``, odd (so "same" padding keeps the size).
      hidden_dim: width of the hidden affine layer.
      num_classes: ``C_out >= 2``.
      weight_scale: std of the normal weight init (the course's ``1e-3``), or ``None`` for He init.
      reg: L2 strength, ``0.5 * reg * sum(W**2)`` over ``W1, W2, W3``.
      loss_type: ``"softmax"`` or ``"svm"``.
      dtype: parameter and compute dtype.

    Raises:
      ValueError, TypeError: at construction, naming the field.
    """

    input_dim: tuple[int, int, int] = (3, 32, 32)
    num_filters: int = 32
    filter_size: int = 7
    hidden_dim: int = 100
    num_classes: int = 10
    weight_scale: float | None = 1e-3
    reg: float = 0.0
    loss_type: str = "softmax"
    dtype: Any = jnp.float32

    _OWNER: ClassVar[str] = "ThreeLayerConvNet"

    def __post_init__(self) -> None:
        owner, positive = self._OWNER, partial(check_int, minimum=1)
        check_fields(
            self, owner, input_dim=_image_shape, num_filters=positive, filter_size=positive, hidden_dim=positive
        )
        require(self.filter_size % 2 == 1, owner, f"filter_size must be odd (same padding), got {self.filter_size}")
        _, h, w = self.input_dim
        require(h >= 2 and w >= 2, owner, f"input_dim {self.input_dim} is too small for a 2x2 pool")
        self._check_shared_fields()
        self._declare()

    def layers(self) -> tuple:
        """``Conv2d (same) - ReLU - 2x2 MaxPool - Affine - ReLU - Affine``."""
        ws, k = self.weight_scale, self.filter_size
        return (
            nn.Conv2d(self.num_filters, k, padding=(k - 1) // 2, weight_scale=ws),
            nn.ReLU(),
            nn.MaxPool2d((2, 2), stride=2),
            nn.Affine(self.hidden_dim, weight_scale=ws),
            nn.ReLU(),
            nn.Affine(self.num_classes, weight_scale=ws),
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_dim


_CONV_NORMS = (None, "batchnorm", "groupnorm")
_FC_NORMS = (None, "batchnorm", "layernorm")


@register_model
@dataclasses.dataclass(frozen=True)
class ConvNet(_ImageModel):
    """A configurable convolutional classifier for real use.

    ``[conv - (spatial_batchnorm | groupnorm | none) - relu - (max pool)] x L -
    [affine - (batchnorm | layernorm | none) - relu - dropout] x M - affine - loss``,
    every op a jaxlayers hand-derived rule.

    Parameters are numbered through the network as in the NumPy original: conv block
    ``i`` has ``W{i}`` ``(F_i, C_{i-1}, kh, kw)``, ``b{i}`` and, with a norm,
    ``gamma{i}``/``beta{i}`` ``(F_i,)``; affine layer ``j`` (numbered after the
    convs) has ``W{j}`` ``(fan_in, fan_out)``, ``b{j}`` and, with a norm,
    ``gamma{j}``/``beta{j}``. Running statistics ``{"bn{i}": BatchNormState}``
    (float32 for half-precision nets) for every batch-normalised layer.

    Attributes:
      input_dim: ``(C, H, W)``; inputs ``(N, C, H, W)`` or flat ``(N, C*H*W)``.
      conv_channels: ``(F_1, ..., F_L)``, the filters of each conv block (``()``: none).
      filter_size: int or ``(kh, kw)``, odd (each conv keeps the size: stride 1,
        padding ``(k - 1) // 2``).
      conv_norm: ``None``, ``"batchnorm"`` (spatial) or ``"groupnorm"``.
      groups: groups of ``groupnorm`` (must divide every ``F_i``).
      pool_size: int or ``(ph, pw)``: a VALID max pool of this size and stride
        after every conv block; ``1`` (or ``(1, 1)``) for none.
      hidden_dims: widths of the ``M`` hidden affine layers.
      fc_norm: ``None``, ``"batchnorm"`` or ``"layernorm"``.
      dropout_rate: probability of dropping a hidden affine unit, in ``[0, 1)``.
      num_classes: ``>= 2``.
      weight_scale: std of the normal init, or ``None`` for He init (``sqrt(2 / fan_in)``).
      reg: L2 strength over every ``W``.
      loss_type: ``"softmax"`` or ``"svm"``.
      dtype: parameter and compute dtype.
      conv_layout: ``"NHWC"`` (default) or ``"NCHW"``: the layout the conv blocks run in
        *inside* the network. Inputs are ``(N, C, H, W)`` either way and the parameters
        the same (``W{i}`` ``(F_i, C_{i-1}, kh, kw)``, the first affine ``W`` rows in
        ``(C, H, W)`` flattening order), so data, checkpoints and predictions do not
        depend on it; only the speed does. ``"NHWC"`` transposes the batch once at the
        input (``nn.ChannelsLast``), runs every conv, norm, relu and pool channels last
        -- the layout XLA's CPU convolutions use, so no copy around each of them -- and
        transposes the (smallest, pooled) features back once before the first affine
        layer (``nn.ChannelsFirst``), so the flattening order is the NumPy original's.
        ``"NCHW"`` is the layer-by-layer channels-first network. (:meth:`summary` shows
        the conv blocks' output shapes in the layout they run in.)

    Raises:
      ValueError, TypeError: at construction, naming the field (including a
        pool that shrinks the image below 1 pixel, and groups that do not divide
        the channels).
    """

    input_dim: tuple[int, int, int] = (3, 32, 32)
    conv_channels: tuple[int, ...] = (32, 64)
    filter_size: Any = 3
    conv_norm: str | None = "batchnorm"
    groups: int = 8
    pool_size: Any = 2
    hidden_dims: tuple[int, ...] = (256,)
    fc_norm: str | None = None
    dropout_rate: float = 0.0
    num_classes: int = 10
    weight_scale: float | None = None
    reg: float = 0.0
    loss_type: str = "softmax"
    dtype: Any = jnp.float32
    conv_layout: str = "NHWC"

    _OWNER: ClassVar[str] = "ConvNet"

    def __post_init__(self) -> None:
        owner = self._OWNER
        check_fields(
            self,
            owner,
            input_dim=_image_shape,
            conv_channels=check_ints,
            hidden_dims=check_ints,
            filter_size=int_pair,
            pool_size=int_pair,
            conv_norm=partial(check_choice, choices=_CONV_NORMS),
            fc_norm=partial(check_choice, choices=_FC_NORMS),
            groups=partial(check_int, minimum=1),
            conv_layout=partial(check_choice, choices=("NHWC", "NCHW")),
        )
        kh, kw = self.filter_size
        require(kh % 2 == 1 and kw % 2 == 1, owner, f"filter_size must be odd (same padding), got {self.filter_size}")
        if self.conv_norm == "groupnorm":
            bad = [f for f in self.conv_channels if f % self.groups]
            require(not bad, owner, f"groups={self.groups} must divide every conv channel count, not {bad}")
        self._check_shared_fields()
        _, h, w = self.input_dim
        ph, pw = self.pool_size
        for i, _f in enumerate(self.conv_channels, 1):
            require(
                h // ph >= 1 and w // pw >= 1,
                owner,
                f"conv block {i}'s {ph}x{pw} pool shrinks the {h}x{w} image to nothing; use fewer blocks or pool_size=1",
            )
            h, w = h // ph, w // pw
        self._declare()

    def feature_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` after the conv blocks (the input shape of the first affine layer)."""
        conv_blocks = len(self.layers()) - len(self._fc_layers())
        return self.net.layer_table()[conv_blocks - 1][2] if conv_blocks else self.input_dim

    def _conv_layers(self) -> list:
        kh, kw = self.filter_size
        ws, out, fmt = self.weight_scale, [], self.conv_layout
        norm = {
            None: [],
            "batchnorm": [nn.SpatialBatchNorm(data_format=fmt)],
            "groupnorm": [nn.GroupNorm(self.groups, data_format=fmt)],
        }
        for f in self.conv_channels:
            out += [nn.Conv2d(f, (kh, kw), padding=((kh - 1) // 2, (kw - 1) // 2), weight_scale=ws, data_format=fmt)]
            out += [*norm[self.conv_norm], nn.ReLU()]
            out += (
                [nn.MaxPool2d(self.pool_size, stride=self.pool_size, data_format=fmt)]
                if self.pool_size != (1, 1)
                else []
            )
        if out and fmt == "NHWC":
            # One transpose in, one back before the first affine layer (the smallest activation, after
            # every pool), so that Affine flattens (C, H, W) as the NCHW network and the NumPy
            # original do: the same W rows, checkpoints and predictions in either layout.
            out = [nn.ChannelsLast(), *out, nn.ChannelsFirst()]
        return out

    def _fc_layers(self) -> list:
        ws, out = self.weight_scale, []
        norm = {None: [], "batchnorm": [nn.BatchNorm()], "layernorm": [nn.LayerNorm()]}
        for h in self.hidden_dims:
            out += [nn.Affine(h, weight_scale=ws), *norm[self.fc_norm], nn.ReLU()]
            out += [nn.Dropout(self.dropout_rate)] if self.dropout_rate > 0 else []
        return [*out, nn.Affine(self.num_classes, weight_scale=ws)]

    def layers(self) -> tuple:
        """``[Conv2d (same) - (SpatialBatchNorm | GroupNorm) - ReLU - (MaxPool2d)] x L -
        [Affine - (BatchNorm | LayerNorm) - ReLU - (Dropout)] x M - Affine``; with
        ``conv_layout="NHWC"`` the conv blocks sit between ``ChannelsLast`` and ``ChannelsFirst``."""
        return (*self._conv_layers(), *self._fc_layers())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_dim
