"""The training state and the step: :class:`TrainState`, :func:`train_step`, :func:`init_train_state`.

Every compiled function here is built once per (model structure, optimizer)
and cached: a model's traced leaves (``reg``, ``weight_scale``; see
:mod:`jaxlayers.model`), the PRNG key and the learning rate (in the optimizer
state) are arguments, not constants, so new values of them reuse the program.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlayers.model import check_model, merge_model, split_model
from jaxlayers.training.config import ConfiguredOptimizer, with_learning_rate

__all__ = [
    "StepMetrics",
    "TrainState",
    "count_right",
    "count_targets",
    "init_state",
    "init_train_state",
    "jitted_init",
    "make_train_step",
    "train_step",
]


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
      params: the model's parameters (e.g. ``{"W1": ..., "b1": ..., ...}``).
      model_state: the model's running statistics (e.g. ``{"bn1": BatchNormState, ...}``).
      opt_state: the optax optimizer state; for a ``TrainConfig``'s optimizer it
        holds the base learning rate (``opt_state.hyperparams["learning_rate"]``).
      step: int32 scalar, optimizer steps taken.
      key: a typed PRNG key (``jax.random.key``); split for every shuffle
        and every dropout mask.
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class StepMetrics(NamedTuple):
    """One step's metrics: the scalar ``loss`` (data + L2) and ``correct``, the int32 count of the
    batch's train-mode predictions that equal the label, out of ``count`` (int32) counted labels
    (:func:`count_targets`: the batch size for class labels ``(B,)``, the non-padding steps for
    sequence labels ``(B, T)``)."""

    loss: jax.Array
    correct: jax.Array
    count: jax.Array


def count_targets(model, y):
    """The labels of ``y`` an accuracy counts (int32 scalar, traced or not): ``y.shape[0]`` for class
    labels ``(N,)``; ``model.target_count(y)`` (the labels ``>= 0``; negatives are padding) for a
    model with ``sequence_targets`` (labels ``(N, T)``)."""
    if getattr(model, "sequence_targets", False):
        return model.target_count(y)
    return jnp.asarray(y.shape[0], jnp.int32)


def count_right(model, scores, y):
    """How many labels of ``y`` the scores' argmax gets right (int32): over :func:`count_targets`'s labels
    only -- for a model with ``sequence_targets``, where ``model.target_mask(y)`` holds (a padding label
    (< 0) never counts, nor a label the model's mask leaves out, such as a caption's ``<NULL>``)."""
    right = jnp.argmax(scores, axis=-1) == y
    if getattr(model, "sequence_targets", False):
        right = right & model.target_mask(y)
    return jnp.sum(right, dtype=jnp.int32)


def train_step(model, optimizer: optax.GradientTransformation, state: TrainState, x, y):
    """One optimizer step (pure; trace it inside ``jit``, ``vmap`` or ``lax.scan``).

    The key is split for the dropout masks; ``value_and_grad`` of
    ``model.loss`` (every gradient a hand-derived jaxlayers rule for
    jaxlayers' models); the optax update; the new running statistics.

    Returns:
      ``(new_state, StepMetrics)``.
    """
    key, dropout_key = jax.random.split(state.key)
    grad_fn = jax.value_and_grad(model.loss, has_aux=True)
    (loss, (model_state, scores)), grads = grad_fn(state.params, state.model_state, x, y, key=dropout_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = count_right(model, scores, y)
    metrics = StepMetrics(loss, correct, count_targets(model, y))
    return TrainState(params, model_state, opt_state, state.step + 1, key), metrics


def init_state(model, optimizer: optax.GradientTransformation, key: jax.Array, learning_rate=None) -> TrainState:
    """A fresh :class:`TrainState` (pure): ``key`` is split into the init key and the training key.

    ``learning_rate`` (may be traced) replaces the optimizer's initial base rate.
    """
    init_key, train_key = jax.random.split(key)
    params, model_state = model.init(init_key)
    opt_state = optimizer.init(params)
    if learning_rate is not None:
        opt_state = with_learning_rate(opt_state, learning_rate)
    return TrainState(params, model_state, opt_state, jnp.zeros((), jnp.int32), train_key)


@functools.lru_cache(maxsize=32)
def jitted_init(static, optimizer):
    """``init(leaves, key, learning_rate=None) -> TrainState``, jitted, cached per (model structure, optimizer).

    ``static``/``leaves`` are :func:`jaxlayers.model.split_model`'s; the
    training loops and :func:`init_train_state` share this cache.
    """

    def init(leaves, key, learning_rate=None):
        return init_state(merge_model(static, leaves), optimizer, key, learning_rate)

    return jax.jit(init)


def init_train_state(model, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh :class:`TrainState`, compiled once per (model structure, optimizer).

    Args:
      model: any model of the model protocol (:mod:`jaxlayers.model`).
      optimizer: the optax optimizer (e.g. :func:`~jaxlayers.train.make_optimizer`;
        its state is initialised from the params).
      key: a typed PRNG key, ``jax.random.key(seed)``.

    Raises:
      TypeError: ``model`` lacks the protocol, or is neither a pytree nor hashable.
    """
    check_model(model, "init_train_state")
    static, leaves = split_model(model, "init_train_state")
    # a TrainConfig's optimizer: the compiled init serves every learning rate, so pass this one's
    learning_rate = optimizer.learning_rate if isinstance(optimizer, ConfiguredOptimizer) else None
    return jitted_init(static, optimizer)(leaves, key, learning_rate)


@functools.lru_cache(maxsize=32)
def _jitted_step(static, optimizer):
    def step(leaves, state, x, y):
        model = merge_model(static, leaves)
        state, metrics = train_step(model, optimizer, state, x, y)
        count = metrics.count if getattr(model, "sequence_targets", False) else y.shape[0]
        return state, {"loss": metrics.loss, "accuracy": metrics.correct / count}

    return jax.jit(step, donate_argnums=1)


def make_train_step(model, optimizer: optax.GradientTransformation):
    """One jit-compiled training step (compiled once per model structure and optimizer).

    Args:
      model: any model of the model protocol (its ``loss`` is differentiated).
      optimizer: an optax optimizer, e.g. from :func:`~jaxlayers.train.make_optimizer`.

    Returns:
      ``step(state, x, y) -> (new_state, metrics)``: ``x`` a batch the model
      accepts, ``y`` int ``(B,)`` (or ``(B, T)`` for a model with ``sequence_targets``,
      negatives padding); ``metrics`` holds the scalar ``loss`` (data
      loss + L2) and the batch's train-mode ``accuracy`` (per counted label). ``state``'s buffers
      are donated: do not use the ``state`` passed in afterwards.

    Raises:
      TypeError: ``model`` lacks the protocol.
    """
    check_model(model, "make_train_step")
    static, leaves = split_model(model, "make_train_step")
    fn = _jitted_step(static, optimizer)
    return functools.partial(fn, leaves)
