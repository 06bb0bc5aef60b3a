"""The one epoch function, pure: shuffle, scan the step over the minibatches, count, keep the best.

:func:`run_epoch` is what every strategy (:mod:`jaxlayers.training.strategies`:
one device, ``K`` models vmapped, a device mesh) compiles -- or, for a model
with a convolution on the CPU, its three parts (:func:`epoch_start`,
:func:`epoch_step` per minibatch, :func:`epoch_end`) driven from a host loop; the three rules
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

from jaxlayers._checks import require
from jaxlayers.training.config import Augment
from jaxlayers.training.state import FlatLayout, TrainState, count_right, flat_layout, train_step

__all__ = [
    "Best",
    "augment_batch",
    "EpochOutput",
    "count_correct",
    "epoch_batches",
    "epoch_end",
    "epoch_start",
    "epoch_step",
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
    validation ``val_correct`` count (test mode), whether this epoch became the best (``improved``),
    and the per-step ``count`` of labels the ``correct`` counts are out of (``(steps,)``)."""

    loss: jax.Array
    correct: jax.Array
    val_correct: jax.Array
    improved: jax.Array
    count: jax.Array


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
    """Host arrays ``(batches, rows, ...)`` and ``(batches, rows, ...)`` for :func:`count_correct`
    (labels ``(N,)`` or sequence labels ``(N, T)``: their trailing axes are kept).

    Padding rows are zeros with labels ``-1``, which never count as correct.
    """
    X, y = np.asarray(X), np.asarray(y, dtype=np.int32)
    n = X.shape[0]
    nb, rows = eval_layout(n, eval_batch_size, multiple)
    pad = nb * rows - n
    Xp = np.concatenate([X, np.zeros((pad, *X.shape[1:]), X.dtype)]) if pad else X
    yp = np.concatenate([y, np.full((pad, *y.shape[1:]), -1, np.int32)]) if pad else y
    return Xp.reshape(nb, rows, *X.shape[1:]), yp.reshape(nb, rows, *y.shape[1:])


def count_correct(model, params, model_state, X, y, constrain: Callable = _identity) -> jax.Array:
    """The accuracy count: test-mode predictions equal to the label, over ``X (batches, rows, ...)``
    (per label: for sequence labels ``(batches, rows, T)`` each step's argmax against its label).

    Batches go through ``lax.map`` (one compiled forward pass); negative labels
    (padding) never count. Test mode treats examples independently, so the
    batching does not change the result.
    """

    def batch(args):
        xb, yb = args
        scores, _ = model.apply(params, model_state, constrain(xb), train=False)
        return count_right(model, scores, constrain(yb))

    return jnp.sum(lax.map(batch, (X, y)), dtype=jnp.int32)


def epoch_start(state: TrainState, n: int, steps: int, batch_size: int) -> tuple[TrainState, jax.Array]:
    """``(state, indices (steps, batch_size))``: the epoch's minibatches drawn (:func:`epoch_batches`)
    and the state's key moved on to the one the steps split."""
    key, idx = epoch_batches(state.key, n, steps, batch_size)
    return state._replace(key=key), idx


def augment_batch(augment: Augment, key: jax.Array, x: jax.Array) -> jax.Array:
    """``x (B, C, H, W)`` with every image shifted by its own random ``(dy, dx)``, each uniform in
    ``[-augment.shift, augment.shift]``, zeros filling what comes in (a spatial axis of size 1 is
    not shifted); or ``x (B, T, D)`` (a batch of sequences) with every sequence shifted along its
    time axis ``T`` by its own random ``dt`` in the same range. Same shape and dtype.

    Raises:
      ValueError: ``x`` is neither images ``(B, C, H, W)`` nor sequences ``(B, T, D)`` (at trace time).
    """
    require(
        x.ndim in (3, 4),
        "TrainConfig",
        f"augment 'shift:{augment.shift}' shifts images (N, C, H, W) or sequences (N, T, D); "
        f"the training inputs are {tuple(x.shape)}",
    )
    k = augment.shift
    if x.ndim == 3:  # sequences: shift along T only
        b, t, d = x.shape
        offsets = jax.random.randint(key, (b,), 0, 2 * k + 1)
        padded = jnp.pad(x, ((0, 0), (k, k), (0, 0)))
        return jax.vmap(lambda seq, o: lax.dynamic_slice(seq, (o, 0), (t, d)))(padded, offsets)
    b, _, h, w = x.shape
    ky, kx = (k if h > 1 else 0), (k if w > 1 else 0)
    offsets = jax.random.randint(key, (b, 2), 0, 2 * k + 1)
    offsets = jnp.stack([offsets[:, 0] * (ky > 0), offsets[:, 1] * (kx > 0)], axis=1)
    padded = jnp.pad(x, ((0, 0), (0, 0), (ky, ky), (kx, kx)))

    def one(image, offset):
        return lax.dynamic_slice(image, (0, offset[0], offset[1]), (*image.shape[:1], h, w))

    return jax.vmap(one)(padded, offsets)


def epoch_step(
    model,
    optimizer,
    state: TrainState,
    X,
    y,
    rows,
    constrain: Callable = _identity,
    augment: Augment | None = None,
    layout: FlatLayout | None = None,
):
    """One minibatch step of the epoch: :func:`~jaxlayers.training.state.train_step` on the
    examples ``rows`` (int ``(batch_size,)``) of ``X, y`` gathered on device, augmented by
    :func:`augment_batch` when ``augment`` is given (its key split off the state's first); with
    ``layout``, ``state`` is packed (:class:`~jaxlayers.training.state.FlatLayout`).
    Returns ``(state, StepMetrics)``."""
    rows = constrain(rows)
    x = X[rows]
    if augment is not None:
        key, augment_key = jax.random.split(state.key)
        state = state._replace(key=key)
        x = augment_batch(augment, augment_key, x)
    return train_step(model, optimizer, state, constrain(x), constrain(y[rows]), layout)


def epoch_end(model, state: TrainState, best: Best, X_val, y_val, constrain: Callable = _identity):
    """``(best, val_correct, improved)``: the validation count of ``state`` and the best-so-far update."""
    val_correct = count_correct(model, state.params, state.model_state, X_val, y_val, constrain)
    improved = is_better(val_correct, best.correct)
    new = Best(state.params, state.model_state, val_correct)
    best = jax.tree.map(lambda a, b: jnp.where(improved, a, b), new, best)
    return best, val_correct, improved


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
    augment: Augment | None = None,
    flat: bool = False,
) -> tuple[TrainState, Best, EpochOutput]:
    """One epoch (pure): the minibatch steps in one ``lax.scan``, the validation count, the best-so-far update.

    :func:`epoch_start`, ``steps`` times :func:`epoch_step`, :func:`epoch_end`;
    a strategy that runs the steps from the host instead (see
    :mod:`jaxlayers.training.strategies`) calls the same three functions.

    With ``flat=True`` the scan carries the state packed
    (:class:`~jaxlayers.training.state.FlatLayout`: the small parameter arrays and the optimizer's
    state for them one vector each, packed after :func:`epoch_start` and unpacked before
    :func:`epoch_end`), as ``make_train_step(..., flat=True)`` steps it; the state returned is the
    per-array one, equal to the unpacked scan's up to float rounding. Exact only for an optimizer
    whose update is elementwise (:func:`~jaxlayers.training.state.flat_update_is_exact`). Off by
    default, and ``fit`` leaves it off: inside the scan's loop body the packed step measured 3%
    *slower* than the per-array one on a 2-core AMD EPYC (bench/RESULTS.md, issue 20), where the
    bare top-level step is 8-10% faster packed.

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
      augment: the training minibatches' augmentation (:func:`augment_batch`), or ``None``.
      flat: keyword, static: step a packed state (see above).

    Returns:
      ``(state, best, EpochOutput)``.

    Raises:
      ValueError: ``flat=True`` for a state with nothing to pack (:func:`~jaxlayers.training.state.flat_layout`).
    """
    state, idx = epoch_start(state, X.shape[0], steps, batch_size)
    layout = flat_layout(state) if flat else None
    require(not flat or layout is not None, "run_epoch", "flat=True: the state's params have nothing to pack")
    if layout is not None:
        state = layout.flatten(state)

    def body(st, rows):
        return epoch_step(model, optimizer, st, X, y, rows, constrain, augment, layout)

    state, metrics = lax.scan(body, state, idx)
    if layout is not None:
        state = layout.unflatten(state)
    best, val_correct, improved = epoch_end(model, state, best, X_val, y_val, constrain)
    return state, best, EpochOutput(metrics.loss, metrics.correct, val_correct, improved, metrics.count)
