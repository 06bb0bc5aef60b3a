"""How much memory a run needs, before anything is allocated: :func:`estimate_memory`, :func:`check_memory`.

Everything is measured abstractly with ``jax.eval_shape``: the model's
``init`` (parameters and running statistics), the optimizer's ``init`` (its
state), and ``jax.vjp`` of the loss on one batch, whose closure holds exactly
the residuals the backward pass keeps (the activations). Nothing is compiled
or allocated, so a network that would not fit is refused at once instead of
swapping or hanging.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers.training.config import TrainConfig, make_optimizer, steps_per_epoch

__all__ = [
    "InsufficientMemoryError",
    "MemoryEstimate",
    "available_memory",
    "check_memory",
    "check_run_memory",
    "estimate_memory",
    "format_bytes",
]


class InsufficientMemoryError(MemoryError):
    """The run needs more memory than the device has available."""


def _bytes(tree) -> int:
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


def format_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB (one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run holds on its device(s).

    Attributes:
      num_params: parameters (scalars) per model.
      params: parameters and running statistics, with the gradient and the
        best-so-far copy (3x the parameters, 2x the statistics).
      optimizer: the optimizer state.
      activations: the residuals the backward pass keeps for one batch.
      data: the training and validation features and labels (kept on device).
      total: their sum (times the number of models).
    """

    num_params: int
    params: int
    optimizer: int
    activations: int
    data: int
    total: int

    def describe(self) -> str:
        """One line: parameter count and the estimate, part by part."""
        return (
            f"{self.num_params:,} parameters; estimated memory {format_bytes(self.total)} "
            f"(parameters, gradients and best copy {format_bytes(self.params)}, optimizer state "
            f"{format_bytes(self.optimizer)}, activations {format_bytes(self.activations)}, data {format_bytes(self.data)})"
        )


def estimate_memory(model, config: TrainConfig, data, *, num_models: int = 1, optimizer=None) -> MemoryEstimate:
    """The memory a run of ``model`` with ``config`` on ``data`` needs, measured with ``jax.eval_shape``.

    Args:
      model: a model of the model protocol.
      config: the training configuration (its optimizer and batch size).
      data: anything with ``X_train, y_train, X_val, y_val``.
      num_models: models trained at once (``fit_many``'s ``K``).
      optimizer: an optax optimizer given to ``fit`` (``None``: ``config``'s).

    Returns:
      A :class:`MemoryEstimate`.
    """
    params, model_state = jax.eval_shape(model.init, jax.random.key(0))
    if optimizer is None:
        optimizer = make_optimizer(config, max(steps_per_epoch(np.shape(data.y_train)[0], config.batch_size), 1))
    opt_state = jax.eval_shape(optimizer.init, params)
    feature_shape = tuple(np.shape(data.X_train)[1:])
    label_shape = tuple(np.shape(data.y_train)[1:])  # () for class labels, (T,) for sequence labels
    # token ids stay integers (an embedding refuses floats); any other features as float32
    x_dtype = jnp.int32 if np.issubdtype(np.asarray(data.X_train[:0]).dtype, np.integer) else jnp.float32

    def residuals(p, s, xb, yb):
        _, vjp = jax.vjp(lambda q: model.loss(q, s, xb, yb, key=jax.random.key(0))[0], p)
        return vjp  # a pytree whose leaves are the residuals the backward pass keeps

    def residual_bytes(n: int) -> int:
        x = jax.ShapeDtypeStruct((n, *feature_shape), x_dtype)
        y = jax.ShapeDtypeStruct((n, *label_shape), jnp.int32)
        return _bytes(jax.eval_shape(residuals, params, model_state, x, y))

    # The residuals include tensors that do not grow with the batch (the weights themselves, which are
    # counted with the parameters): the activations are the part that grows, per example times the batch.
    acts = max(residual_bytes(2) - residual_bytes(1), 0) * config.batch_size
    p, s, o = _bytes(params), _bytes(model_state), _bytes(opt_state)
    held = 3 * p + 2 * s
    data_bytes = sum(
        math.prod(np.shape(getattr(data, k))) * 4 for k in ("X_train", "y_train", "X_val", "y_val") if hasattr(data, k)
    )
    num = sum(math.prod(a.shape) for a in jax.tree.leaves(params))
    return MemoryEstimate(num, held, o, acts, data_bytes, num_models * (held + o + acts) + data_bytes)


def available_memory(device=None) -> tuple[int | None, str]:
    """``(bytes, where)``: memory available to a new run on ``device`` (default: the first device).

    An accelerator reports its own limit (``memory_stats``: ``bytes_limit -
    bytes_in_use``); on the CPU it is the host's ``MemAvailable``
    (``/proc/meminfo``), else ``SC_AVPHYS_PAGES``. ``None`` when unknown.
    """
    device = jax.devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # not every backend implements it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), f"{device.platform} device {device.id}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host (MemAvailable)"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host (free pages)"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def check_memory(estimate: MemoryEstimate, where: str, available: tuple[int | None, str] | None = None) -> None:
    """Refuse a run whose estimate exceeds the available memory.

    Raises:
      InsufficientMemoryError: naming the estimate, its parts and the available memory, after
        ``where + ": "`` (nothing for ``where=""``: the caller names the command).
    """
    free, source = available_memory() if available is None else available
    if free is not None and estimate.total > free:
        raise InsufficientMemoryError(
            f"{where + ': ' if where else ''}the run needs about {format_bytes(estimate.total)} but {source} has "
            f"{format_bytes(free)} available ({estimate.describe()}); use a smaller network or batch size"
        )


def check_run_memory(model, config: TrainConfig, data, where: str, *, num_models: int = 1, optimizer=None) -> None:
    """:func:`check_memory` of :func:`estimate_memory`, skipped when the parameters alone are clearly small.

    Raises:
      InsufficientMemoryError: as :func:`check_memory`.
    """
    free, source = available_memory()
    if free is None:
        return
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    data_bytes = sum(math.prod(np.shape(getattr(data, k))) * 4 for k in ("X_train", "X_val") if hasattr(data, k))
    if num_models * 8 * _bytes(params) + 2 * data_bytes < free // 4:  # far below: skip tracing the loss
        return
    estimate = estimate_memory(model, config, data, num_models=num_models, optimizer=optimizer)
    check_memory(estimate, where, (free, source))
