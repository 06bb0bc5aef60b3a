"""``jaxlayers.nn``: compose networks from jaxlayers' ops, declaratively.

The ops (:mod:`jaxlayers.layers`, :mod:`jaxlayers.losses`) stay the core: every
gradient is still a hand-derived rule. ``nn`` only declares which op runs with
which parameters, as ``flax.linen`` and ``equinox.nn`` sit over ``jax.lax``::

    import jaxlayers as jl
    from jaxlayers import nn

    model = nn.Sequential(
        nn.Conv2d(16, 3, padding=1), nn.SpatialBatchNorm(), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(nn.Conv2d(16, 3, padding=1), nn.GroupNorm(4), nn.ReLU()),
        nn.Flatten(), nn.Affine(64), nn.ReLU(), nn.Dropout(0.2), nn.Affine(10),
        input_shape=(1, 8, 8), loss="softmax", reg=1e-4,
    )
    print(model.summary())
    result = jl.train.fit(model, jl.data.load("digits"), jl.train.TrainConfig(epochs=2))

The layer protocol
------------------
A **layer** is any object with

``init(key, input_shape) -> (params, state, output_shape)``
    ``input_shape`` and ``output_shape`` are one example's shape, *without the
    batch axis* (tuples of ints); ``params`` and ``state`` are pytrees of
    arrays (``{}`` when none): the trainable parameters, and the non-trainable
    state (running statistics). ``key`` is a PRNG key for the initialisation.
``apply(params, state, x, *, train, key=None) -> (out, new_state)``
    ``x`` is a batch ``(N, *input_shape)``, ``out`` is ``(N, *output_shape)``.
    ``train`` is a static Python bool (train or test mode); ``key`` is a PRNG
    key in train mode for a layer that draws random numbers (``None`` in test
    mode). It must be a pure function of its arguments (it runs under ``jit``
    and ``vmap``), and in test mode examples must be independent.
``to_dict() -> dict``
    Its configuration as JSON values. A way back: a classmethod
    ``from_dict(d)``, or else ``cls(**d)`` is used.

and a **registration**, :func:`register_layer` (a class decorator), so that a
run directory that records a model holding it rebuilds it by class name
(records are ``{"class": name, "config": to_dict()}``; nothing is ever
imported by a name read from a file: register the class before loading).

Optional members :class:`Sequential` reads when present:

``random_init`` / ``random_apply`` (bool class attributes, default ``True``)
    Whether ``init`` / train-mode ``apply`` draw random numbers. Only those
    layers get their own subkey (below), so inserting a deterministic layer
    does not change the other layers' keys.
``init(..., dtype=)``
    If ``init`` accepts ``dtype``, it gets the model's dtype; otherwise the
    floating leaves of the ``params`` it returns are cast to it.

A layer that is not a registered pytree is held as a static value of the
model (it must be hashable; the default identity hash is fine), so its
attributes are constants of the compiled program. jaxlayers' own layers are
pytrees whose ``weight_scale`` is traced.

Names: one flat dict per model
------------------------------
:class:`Sequential` (and :class:`Residual`) give every parameter a
deterministic name, so that the three models are declarations with the names
of the NumPy original (``W1, b1, gamma1, beta1, ...``):

* a **weight layer** (:class:`Affine`, :class:`Conv2d`) takes the next number
  ``i`` (from 1, in declaration order, through nested :class:`Residual`
  blocks) and names its parameters ``W{i}``, ``b{i}``;
* a **norm layer** (:class:`BatchNorm`, :class:`SpatialBatchNorm`,
  :class:`LayerNorm`, :class:`GroupNorm`) takes the number of the last weight
  layer before it (``0`` if none): ``gamma{i}``, ``beta{i}``, and its running
  statistics (batch norms) are the state entry ``bn{i}``. Two norm layers
  after the same weight layer would share names: refused, naming both;
* a **user layer** (any other object) gets the prefix ``{ClassName}_{p}``,
  ``p`` its 1-based position among the leaf layers in declaration order
  (Residual's layers counted, Residual itself not): its whole ``params``
  pytree is ``params["Scale_3"]``, its state ``state["Scale_3"]``; nothing if
  they are empty;
* parameter-free layers (:class:`ReLU`, :class:`MaxPool2d`, :class:`Flatten`,
  :class:`Dropout`) name nothing;
* sequence layers: :class:`TemporalAffine` is a weight layer (``W{i}``,
  ``b{i}``); :class:`Embedding` takes the next number too and names its table
  ``E{i}`` (outside the L2 penalty); the recurrent layers :class:`RNN`, :class:`LSTM`,
  :class:`GRU` are weight layers naming theirs ``Wx{i}``, ``Wh{i}``, ``b{i}``;
* attention layers: :class:`MultiHeadAttention` is a weight layer (``Wq{i}, bq{i}, Wk{i}, bk{i},
  Wv{i}, bv{i}, Wo{i}, bo{i}``), :class:`PositionalEmbedding` takes the next number for its table
  ``P{i}`` (outside the L2 penalty), :class:`TransformerBlock` holds its dict (``Wq, ..., W1, b1, W2, b2``) under the
  user-layer prefix ``TransformerBlock_{p}`` (outside the L2 penalty).

The L2 penalty ``0.5 * reg * sum(W**2)`` covers the ``W{i}``, ``Wx{i}``, ``Wh{i}`` and the
attention's ``Wq{i}``, ``Wk{i}``, ``Wv{i}``, ``Wo{i}`` only.

Keys
----
``Sequential.init(key)`` splits ``key`` once into one subkey per layer with
``random_init`` (Affine, Conv2d, user layers) and hands them out in
declaration order. ``apply(..., train=True, key=key)`` likewise splits
``key`` once into one subkey per layer with ``random_apply`` (Dropout, user
layers). Same declaration, same key: the same numbers.

The layers
----------
:class:`Affine`, :class:`Conv2d`, :class:`MaxPool2d`, :class:`BatchNorm`,
:class:`SpatialBatchNorm`, :class:`LayerNorm`, :class:`GroupNorm`,
:class:`ReLU`, :class:`Dropout`, :class:`Flatten`, and the layout changes
:class:`ChannelsLast` / :class:`ChannelsFirst` (the four image layers take
``data_format="NCHW"|"NHWC"``; ``ConvNet`` runs channels last between one
``ChannelsLast`` at its input and one ``ChannelsFirst`` before its first
affine layer); for sequences
:class:`Embedding`, :class:`TemporalAffine`, the recurrent
:class:`RNN`, :class:`LSTM`, :class:`GRU`, and the attention layers :class:`MultiHeadAttention`,
:class:`PositionalEncoding`, :class:`PositionalEmbedding`, :class:`TransformerBlock` with
:class:`SequencePool`, :class:`Patches` and :class:`Reshape` (a sequence classifier is
``nn.Sequential(nn.GRU(H), nn.Affine(C), input_shape=(T, D))``; a language model is an
``nn.Sequential(..., loss="temporal_softmax")``, see :class:`Sequential`); the combinators
:class:`Residual` (a layer: ``x + f(x)``) and :class:`Sequential` (a model of
the model protocol, :mod:`jaxlayers.model`). jaxlayers'
:class:`~jaxlayers.FullyConnectedNet`, :class:`~jaxlayers.ThreeLayerConvNet`
and :class:`~jaxlayers.ConvNet` are declarations of this module.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from jaxlayers.nn._attention import (
    MultiHeadAttention,
    Patches,
    PositionalEmbedding,
    PositionalEncoding,
    Reshape,
    SequencePool,
    TransformerBlock,
    sinusoidal_encoding,
)
from jaxlayers.nn._layers import (
    GRU,
    LSTM,
    RNN,
    Affine,
    BatchNorm,
    ChannelsFirst,
    ChannelsLast,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    LayerNorm,
    MaxPool2d,
    ReLU,
    SpatialBatchNorm,
    TemporalAffine,
    init_std,
)
from jaxlayers.nn._registry import layer_from_record, layer_record, register_layer, registered_layers
from jaxlayers.nn._sequential import Residual, Sequential

__all__ = [
    # sequence models (issue 18)
    "Embedding",
    "TemporalAffine",
    "RNN",
    "LSTM",
    "GRU",
    # attention (issue 19)
    "MultiHeadAttention",
    "PositionalEncoding",
    "PositionalEmbedding",
    "TransformerBlock",
    "SequencePool",
    "Reshape",
    "Patches",
    "sinusoidal_encoding",
    "Affine",
    "BatchNorm",
    "ChannelsFirst",
    "ChannelsLast",
    "Conv2d",
    "Dropout",
    "Flatten",
    "GroupNorm",
    "Layer",
    "LayerNorm",
    "MaxPool2d",
    "ReLU",
    "Residual",
    "Sequential",
    "SpatialBatchNorm",
    "init_std",
    "layer_from_record",
    "layer_record",
    "register_layer",
    "registered_layers",
]


@runtime_checkable
class Layer(Protocol):
    """The layer protocol (the contract of each member: the :mod:`jaxlayers.nn` docstring)."""

    def init(self, key: jax.Array, input_shape: tuple[int, ...]) -> tuple[Any, Any, tuple[int, ...]]: ...

    def apply(self, params, state, x, *, train: bool, key: jax.Array | None = None) -> tuple[jax.Array, Any]: ...

    def to_dict(self) -> dict[str, Any]: ...
