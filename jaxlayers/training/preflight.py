"""Every check a run can fail before it trains, in one place: :func:`preflight`.

``fit`` and ``fit_many`` (and so ``jaxlayers train`` / ``sweep``) call :func:`preflight` once, before
anything is written or compiled: the data against the model and the config (:func:`check_data`), the
optimizer, the mesh's device count, the memory estimate. The checks that need the run directory's lock
(is there a checkpoint, does it match this run) come after it is taken, in
:mod:`jaxlayers.training.resume`.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import numpy as np

from jaxlayers._checks import require
from jaxlayers.parallel import as_auto_mesh, check_batch_size
from jaxlayers.training.config import TrainConfig
from jaxlayers.training.memory import check_run_memory

__all__ = ["as_dataset", "check_data", "check_optimizer", "check_split", "preflight"]

_SPLITS = ("train", "val")


def as_dataset(data, where: str):
    """``data`` itself if it has ``X_train, y_train, X_val, y_val`` attributes; the course
    ``Solver``'s dict ``{'X_train', 'y_train', 'X_val', 'y_val'}`` as such an object.

    Raises:
      TypeError: neither.
    """
    keys = ("X_train", "y_train", "X_val", "y_val")
    if isinstance(data, dict):
        missing = [k for k in keys if k not in data]
        require(not missing, where, f"the data dict lacks {missing} (it needs {', '.join(keys)})", TypeError)
        return SimpleNamespace(**{k: data[k] for k in keys}, name=str(data.get("name", "")))
    missing = [k for k in keys if not hasattr(data, k)]
    require(
        not missing,
        where,
        f"data must be a jaxlayers.data.Dataset, or any object or dict with {', '.join(keys)}; "
        f"{type(data).__name__} lacks {missing}",
        TypeError,
    )
    return data


def _score_shape(model, X, where: str, x_name: str) -> tuple[int, ...]:
    """The shape of the model's scores on one example, abstractly (nothing runs): ``(1, C)``, or
    ``(1, T, V)`` for per-step scores."""
    try:
        shapes = jax.eval_shape(model.init, jax.random.key(0))
        scores, _ = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=False), *shapes, X[:1])
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: {x_name} has shape {X.shape}, which the model refuses: {e}") from None
    return tuple(int(d) for d in scores.shape)


def check_split(
    model, X, y, where: str, x_name: str = "X", y_name: str = "y", *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays ``X, y`` after the checks every split gets: shapes, integer labels in
    ``[0, C)``, finite features, a shape the model accepts.

    Labels are ``(N,)``; for a model with ``sequence_targets`` they are ``(N, T)`` with ``T`` the
    model's output steps, the negative ones padding (only the others must lie in ``[0, V)``)."""
    X, y = np.asarray(X), np.asarray(y)
    xs = X.shape
    seq = bool(getattr(model, "sequence_targets", False))
    require(len(xs) >= 2, where, f"{x_name} must have shape (N, ...), got {xs}")
    if seq:
        require(
            y.ndim == 2 and y.shape[0] == xs[0],
            where,
            f"{y_name} must hold sequence labels of shape ({xs[0]}, T) to match {x_name} {xs}, got {y.shape}",
        )
    else:
        require(
            y.shape == (xs[0],), where, f"{y_name} must have shape ({xs[0]},) to match {x_name} {xs}, got {y.shape}"
        )
    require(
        np.issubdtype(y.dtype, np.integer),
        where,
        f"{y_name} must hold integer class labels, got dtype {y.dtype}",
        TypeError,
    )
    require(
        np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer),
        where,
        f"{x_name} must be numeric, got dtype {X.dtype}",
        TypeError,
    )
    if xs[0] == 0:
        require(allow_empty, where, f"{x_name} is empty")
        return X, y
    if np.issubdtype(X.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(X.reshape(xs[0], -1)).all(axis=1))
        require(
            bad.size == 0,
            where,
            f"{x_name} holds NaN or infinite values ({bad.size} example(s), the first at index {bad[:1].tolist()})",
        )
    shape = _score_shape(model, X, where, x_name)
    num_classes = shape[-1]
    if seq:
        require(
            shape[1:-1] == y.shape[1:],
            where,
            f"{y_name} has {y.shape[1]} steps per example but the model scores {shape[1:-1]} steps "
            f"(scores {shape} for one example)",
        )
        y_counted = y[y >= 0]
        if y_counted.size == 0:
            return X, y
    else:
        y_counted = y
    lo, hi = int(y_counted.min()), int(y_counted.max())
    require(
        lo >= 0 and hi < num_classes,
        where,
        f"{y_name} holds labels in [{lo}, {hi}] but the model has {num_classes} classes; "
        f"labels must lie in [0, {num_classes})",
    )
    return X, y


def check_data(model, data, config: TrainConfig, where: str = "fit"):
    """Check ``data`` against ``model`` and ``config`` (as ``fit`` does before compiling anything).

    Returns:
      The dataset (``as_dataset(data)``).

    Raises:
      TypeError: data of the wrong kind; float labels.
      ValueError: an empty split, NaN/inf features, labels outside
        ``[0, num_classes)``, a feature shape the model refuses, or a
        ``batch_size`` larger than the training set.
    """
    data = as_dataset(data, where)
    for split in _SPLITS:
        check_split(
            model, getattr(data, f"X_{split}"), getattr(data, f"y_{split}"), where, f"data.X_{split}", f"data.y_{split}"
        )
    n = np.shape(data.y_train)[0]
    require(
        config.batch_size <= n,
        where,
        f"batch_size {config.batch_size} is larger than the {n} training examples; use batch_size <= {n}",
    )
    return data


def preflight(model, data, config: TrainConfig, *, mesh=None, num_models: int = 1, where: str = "fit", optimizer=None):
    """Every check a run can fail before it trains, in one place, run before anything is written or compiled.

    ``fit`` and ``fit_many`` (so ``fit(run_dir=)`` and ``jaxlayers train`` / ``sweep`` too) call it
    first, once; the CLI reports a failure here as a usage error, before it prints or creates
    anything. It traces abstractly (``jax.eval_shape``) and compiles, allocates and writes nothing.

    Checks: the data against the model and ``config`` (:func:`check_data`: kinds, shapes, label
    range, NaN/inf, ``batch_size`` at most the training set), an ``optimizer`` with optax's ``init``
    and ``update``, ``batch_size`` a multiple of the mesh's device count, and the memory estimate
    (:func:`~jaxlayers.training.memory.check_run_memory`).

    Args:
      model, data, config: as :func:`~jaxlayers.training.loop.fit`.
      mesh: the ``jax.sharding.Mesh`` the run will use, or ``None``.
      num_models: models trained at once (``fit_many``'s ``K``), for the memory estimate.
      optimizer: the optax optimizer given to ``fit`` (``None``: ``config``'s), for the memory estimate.
      where: the caller's name, first in every message.

    Returns:
      The dataset (``as_dataset(data)``).

    Raises:
      TypeError: data of the wrong kind, float labels, ``mesh`` not a ``Mesh``, ``optimizer``
        without ``init`` and ``update``.
      ValueError: as :func:`check_data`; ``batch_size`` not a multiple of the mesh's device count.
      InsufficientMemoryError: the estimate exceeds the available memory.
    """
    if optimizer is not None:
        check_optimizer(optimizer, where)
    data = check_data(model, data, config, where)
    if mesh is not None:
        check_batch_size(as_auto_mesh(mesh), config.batch_size, f"{where}: batch_size")
    check_run_memory(model, config, data, where, num_models=num_models, optimizer=optimizer)
    return data


def check_optimizer(optimizer, where: str):
    """``optimizer`` if it has an optax ``GradientTransformation``'s ``init`` and ``update``."""
    require(
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)),
        where,
        f"optimizer must be an optax GradientTransformation (with init and update), e.g. optax.adamw(1e-3); "
        f"got {type(optimizer).__name__}",
        TypeError,
    )
    return optimizer
