"""The one epoch function, pure: shuffle, scan the step over the minibatches, count, keep the best.

:func:`run_epoch` is what every strategy (:mod:`jaxlayers.training.strategies`:
one device, ``K`` models vmapped, a device mesh) compiles; the three rules
that the bitwise-equality promises depend on are written here once each:

* the permutation-key rule, :func:`epoch_batches`;
* the accuracy count, :func:`count_correct` (and :func:`train_step`'s count of
  a batch's train-mode predictions);
* the best-epoch rule, :func:`is_better` (ties go to the later epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlayers.training.state import TrainState, train_step

__all__ = [
    "Best",
    "EpochOutput",
    "count_correct",
    "epoch_batches",
    "eval_layout",
    "is_better",
    "pad_eval",
    "run_epoch",
]


def _identity(a):
    return a


class Best(NamedTuple):
    """The best epoch so far: its ``params``, ``model_state`` and validation ``correct`` count
    (int32; ``-1`` before the first epoch)."""

    params: Any
    model_state: Any
    correct: jax.Array


class EpochOutput(NamedTuple):
    """What an epoch reports: per-step ``loss`` and ``correct`` (train mode, ``(steps,)``), the
    validation ``val_correct`` count (test mode) and whether this epoch became the best (``improved``)."""

    loss: jax.Array
    correct: jax.Array
    val_correct: jax.Array
    improved: jax.Array


def epoch_batches(key: jax.Array, n: int, steps: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The permutation-key rule: ``(key_for_the_steps, indices (steps, batch_size))``.

    ``key`` is split once per epoch; the second half draws a permutation of
    the ``n`` training examples, whose first ``steps * batch_size`` entries are
    the epoch's minibatches; the first half carries on into the steps.
    """
    key, perm_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, n)
    return key, perm[: steps * batch_size].reshape(steps, batch_size)


def is_better(val_correct, best_correct):
    """The best-epoch rule: at least as many correct validation predictions as the best so far.

    Ties go to the later epoch: it has trained longer at a smaller learning
    rate, and small validation sets tie often.
    """
    return val_correct >= best_correct


def eval_layout(n: int, eval_batch_size: int, multiple: int = 1) -> tuple[int, int]:
    """``(batches, rows)``: the fewest batches of at most ~``eval_batch_size`` examples that hold
    ``n``, each of ``rows`` examples, a multiple of ``multiple`` (the rest is padding)."""
    batches = math.ceil(n / max(1, min(eval_batch_size, n)))
    rows = math.ceil(math.ceil(n / batches) / multiple) * multiple
    return batches, rows


def pad_eval(X, y, eval_batch_size: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays ``(batches, rows, ...)`` and ``(batches, rows)`` for :func:`count_correct`.

    Padding rows are zeros with label ``-1``, which never counts as correct.
    """
    X, y = np.asarray(X), np.asarray(y, dtype=np.int32)
    n = X.shape[0]
    nb, rows = eval_layout(n, eval_batch_size, multiple)
    pad = nb * rows - n
    Xp = np.concatenate([X, np.zeros((pad, *X.shape[1:]), X.dtype)]) if pad else X
    yp = np.concatenate([y, np.full(pad, -1, np.int32)]) if pad else y
    return Xp.reshape(nb, rows, *X.shape[1:]), yp.reshape(nb, rows)


def count_correct(model, params, model_state, X, y, constrain: Callable = _identity) -> jax.Array:
    """The accuracy count: test-mode predictions equal to the label, over ``X (batches, rows, ...)``.

    Batches go through ``lax.map`` (one compiled forward pass); labels ``-1``
    (padding) never count. Test mode treats examples independently, so the
    batching does not change the result.
    """

    def batch(args):
        xb, yb = args
        scores, _ = model.apply(params, model_state, constrain(xb), train=False)
        return jnp.sum(jnp.argmax(scores, axis=-1) == constrain(yb), dtype=jnp.int32)

    return jnp.sum(lax.map(batch, (X, y)), dtype=jnp.int32)


def run_epoch(
    model,
    optimizer,
    state: TrainState,
    best: Best,
    X,
    y,
    X_val,
    y_val,
    *,
    steps: int,
    batch_size: int,
    constrain: Callable = _identity,
) -> tuple[TrainState, Best, EpochOutput]:
    """One epoch (pure): the minibatch steps, the validation count, the best-so-far update.

    Args:
      model, optimizer: as :func:`~jaxlayers.training.state.train_step`.
      state: the :class:`TrainState` at the start of the epoch.
      best: the :class:`Best` so far.
      X, y: the training set on device, ``(N, ...)`` and int ``(N,)``;
        minibatches are gathered from it by index (no shuffled copy).
      X_val, y_val: the validation set in :func:`pad_eval`'s layout.
      steps, batch_size: static; ``steps * batch_size <= N``.
      constrain: applied to every gathered batch (a mesh strategy shards it
        over its devices; identity otherwise).

    Returns:
      ``(state, best, EpochOutput)``.
    """
    key, idx = epoch_batches(state.key, X.shape[0], steps, batch_size)

    def body(st, i):
        i = constrain(i)
        return train_step(model, optimizer, st, constrain(X[i]), constrain(y[i]))

    state, metrics = lax.scan(body, state._replace(key=key), idx)
    val_correct = count_correct(model, state.params, state.model_state, X_val, y_val, constrain)
    improved = is_better(val_correct, best.correct)
    new = Best(state.params, state.model_state, val_correct)
    best = jax.tree.map(lambda a, b: jnp.where(improved, a, b), new, best)
    return state, best, EpochOutput(metrics.loss, metrics.correct, val_correct, improved)
