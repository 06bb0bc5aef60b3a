"""Test-mode accuracy of a trained model: :func:`evaluate` (on device, in padded batches)."""

from __future__ import annotations

from jaxlayers.model import check_model, split_model
from jaxlayers.training.epoch import pad_eval
from jaxlayers.training.preflight import check_split
from jaxlayers.training.state import count_targets
from jaxlayers.training.strategies import compiled_count

__all__ = ["evaluate"]


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
