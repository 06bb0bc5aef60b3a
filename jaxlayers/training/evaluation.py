"""Test-mode accuracy of a trained model: :func:`evaluate` (on device, in padded batches); for a
sequence model, the cross-entropy per counted label in bits: :func:`bits_per_token`."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import require
from jaxlayers.losses import temporal_softmax_loss
from jaxlayers.model import check_model, merge_model, split_model
from jaxlayers.training.epoch import pad_eval
from jaxlayers.training.preflight import check_split
from jaxlayers.training.state import count_targets
from jaxlayers.training.strategies import compiled_count

__all__ = ["bits_per_token", "evaluate"]


def evaluate(model, params, model_state, X, y, *, batch_size: int = 1024) -> float:
    """Test-mode classification accuracy, computed on device in batches.

    Args:
      model: any model of the model protocol.
      params, model_state: its parameters and running statistics.
      X: ``(N, ...)`` features the model accepts (cast to its dtype).
      y: ``(N,)`` integer labels in ``[0, num_classes)``; for a model with ``sequence_targets``
        ``(N, T)``, negatives padding (not counted).
      batch_size: examples per forward pass (the last batch is padded; padding never counts).

    Returns:
      The fraction of examples (of counted sequence labels) whose highest score is the label, a
      Python float in ``[0, 1]`` (``nan`` for ``N = 0`` or no counted label).

    Raises:
      ValueError: ``X``/``y`` shapes that disagree with each other or the
        model; labels outside ``[0, num_classes)``; NaN or infinite features.
      TypeError: non-integer labels; a model without the protocol.
    """
    check_model(model, "evaluate")
    X, y = check_split(model, X, y, "evaluate", allow_empty=True)
    n = int(count_targets(model, y)) if X.shape[0] else 0
    if n == 0:
        return float("nan")
    Xp, yp = pad_eval(X, y, int(batch_size))
    static, leaves = split_model(model, "evaluate")
    return int(compiled_count(static)(leaves, params, model_state, Xp, yp)) / n


@functools.lru_cache(maxsize=16)
def _compiled_nats(static):
    """``nats(leaves, params, model_state, X, y)``, jitted: the summed test-mode cross-entropy (nats) of the
    counted labels over :func:`~jaxlayers.training.epoch.pad_eval`'s batches."""

    def nats(leaves, params, model_state, X, y):
        model = merge_model(static, leaves)

        def batch(args):
            xb, yb = args
            scores, _ = model.apply(params, model_state, xb, train=False)
            # temporal_softmax_loss sums over time and divides by N: times N, the batch's summed cross-entropy
            return temporal_softmax_loss(scores, yb, model.target_mask(yb)).astype(jnp.float32) * xb.shape[0]

        return jnp.sum(lax.map(batch, (X, y)))

    return jax.jit(nats)


def bits_per_token(model, params, model_state, X, y, *, batch_size: int = 1024) -> float:
    """Test-mode cross-entropy of a sequence model, in bits per counted label (bits per character for a
    character model): ``sum over non-padding steps of -log2 softmax(scores)[y] / their count``, i.e.
    ``temporal_softmax_loss * N / count / ln 2`` (the loss sums over time and divides by ``N``).

    Args:
      model: a model with ``sequence_targets`` (``loss="temporal_softmax"``).
      params, model_state: its parameters and running statistics.
      X: ``(N, T)`` token ids; y: int ``(N, T)`` next-token labels, negatives padding.
      batch_size: examples per forward pass.

    Returns:
      A Python float ``>= 0`` (``nan`` when no label counts); ``log2(V)`` for uniform scores.

    Raises:
      ValueError: a model without sequence targets; shapes or labels as :func:`evaluate`.
    """
    check_model(model, "bits_per_token")
    require(
        getattr(model, "sequence_targets", False),
        "bits_per_token",
        f"the model ({type(model).__name__}) does not score sequences (it needs loss='temporal_softmax')",
    )
    X, y = check_split(model, X, y, "bits_per_token", allow_empty=True)
    n = int(count_targets(model, y)) if X.shape[0] else 0
    if n == 0:
        return float("nan")
    Xp, yp = pad_eval(X, y, int(batch_size))
    static, leaves = split_model(model, "bits_per_token")
    return float(_compiled_nats(static)(leaves, params, model_state, Xp, yp)) / n / math.log(2)
