"""The one host loop: :func:`fit`, :func:`fit_many` and :func:`evaluate`.

``fit`` (one model, on one device or a mesh) and ``fit_many`` (``K`` models,
vmapped) are the same loop, :func:`_run`, over a strategy from
:mod:`jaxlayers.training.strategies`: per epoch one compiled call, one fetch
of the per-step losses and counts, the history, the checkpoint (written on a
background thread), the callback. They differ in what a non-finite loss does:
``fit`` stops with :class:`NonFiniteLossError` and its last checkpoint intact;
in a sweep the model is only marked (:attr:`FitResult.finite`) and the others
train on.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_instance, require
from jaxlayers.data import preprocessing_record
from jaxlayers.model import check_model, model_record, split_model
from jaxlayers.parallel import (
    Distributed,
    as_auto_mesh,
    check_batch_size,
    host_copy,
    initialize_distributed,
    make_data_mesh,
)
from jaxlayers.training.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    check_checkpoint_target,
    checkpoint_tensors,
    load_checkpoint,
    read_checkpoint_metadata,
)
from jaxlayers.training.config import ConfiguredOptimizer, TrainConfig, learning_rate_schedule, make_optimizer
from jaxlayers.training.epoch import pad_eval
from jaxlayers.training.memory import check_run_memory
from jaxlayers.training.results import EpochReport, FitResult, History, NonFiniteLossError, TrainingInterrupted
from jaxlayers.training.signals import SIGNAL_NAMES, DeferredSignals
from jaxlayers.training.strategies import DataMesh, ManyModels, SingleDevice, compiled_count

__all__ = ["SWEPT", "as_dataset", "check_data", "evaluate", "fit", "fit_many", "grid", "preflight"]

# fit_many's per-model lists: the keyword, and the field of the model (or of the TrainConfig) it sets.
SWEPT = {
    "seeds": ("config", "seed"),
    "weight_scales": ("model", "weight_scale"),
    "learning_rates": ("config", "learning_rate"),
    "dropout_rates": ("model", "dropout_rate"),
    "regs": ("model", "reg"),
}
_SPLITS = ("train", "val")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


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


def _num_classes(model, X, where: str, x_name: str) -> int:
    """The model's class count, from the abstract shape of its scores on one example (nothing runs)."""
    try:
        shapes = jax.eval_shape(model.init, jax.random.key(0))
        scores, _ = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=False), *shapes, X[:1])
    except (ValueError, TypeError) as e:
        raise type(e)(f"{where}: {x_name} has shape {X.shape}, which the model refuses: {e}") from None
    return int(scores.shape[-1])


def _check_split(
    model, X, y, where: str, x_name: str = "X", y_name: str = "y", *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays ``X, y`` after the checks every split gets: shapes, integer labels in
    ``[0, C)``, finite features, a shape the model accepts."""
    X, y = np.asarray(X), np.asarray(y)
    xs = X.shape
    require(len(xs) >= 2, where, f"{x_name} must have shape (N, ...), got {xs}")
    require(y.shape == (xs[0],), where, f"{y_name} must have shape ({xs[0]},) to match {x_name} {xs}, got {y.shape}")
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
    num_classes = _num_classes(model, X, where, x_name)
    lo, hi = int(y.min()), int(y.max())
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
        _check_split(
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

    ``fit``, ``fit_many``, ``fit(run_dir=)`` and ``jaxlayers train`` / ``sweep`` call it first (the
    CLI, to report a failure as a usage error before it prints or creates anything). It traces
    abstractly (``jax.eval_shape``) and compiles, allocates and writes nothing.

    Checks: the data against the model and ``config`` (:func:`check_data`: kinds, shapes, label
    range, NaN/inf, ``batch_size`` at most the training set), ``batch_size`` a multiple of the mesh's
    device count, and the memory estimate (:func:`~jaxlayers.training.memory.check_run_memory`).

    Args:
      model, data, config: as :func:`fit`.
      mesh: the ``jax.sharding.Mesh`` the run will use, or ``None``.
      num_models: models trained at once (``fit_many``'s ``K``), for the memory estimate.
      optimizer: the optax optimizer given to ``fit`` (``None``: ``config``'s), for the memory estimate.
      where: the caller's name, first in every message.

    Returns:
      The dataset (``as_dataset(data)``).

    Raises:
      TypeError: data of the wrong kind, float labels, ``mesh`` not a ``Mesh``.
      ValueError: as :func:`check_data`; ``batch_size`` not a multiple of the mesh's device count.
      InsufficientMemoryError: the estimate exceeds the available memory.
    """
    data = check_data(model, data, config, where)
    if mesh is not None:
        check_batch_size(as_auto_mesh(mesh), config.batch_size, f"{where}: batch_size")
    check_run_memory(model, config, data, where, num_models=num_models, optimizer=optimizer)
    return data


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def evaluate(model, params, model_state, X, y, *, batch_size: int = 1024) -> float:
    """Test-mode classification accuracy, computed on device in batches.

    Args:
      model: any model of the model protocol.
      params, model_state: its parameters and running statistics.
      X: ``(N, ...)`` features the model accepts (cast to its dtype).
      y: ``(N,)`` integer labels in ``[0, num_classes)``.
      batch_size: examples per forward pass (the last batch is padded; padding never counts).

    Returns:
      The fraction of examples whose highest score is the label, a Python
      float in ``[0, 1]`` (``nan`` for ``N = 0``).

    Raises:
      ValueError: ``X``/``y`` shapes that disagree with each other or the
        model; labels outside ``[0, num_classes)``; NaN or infinite features.
      TypeError: non-integer labels; a model without the protocol.
    """
    check_model(model, "evaluate")
    X, y = _check_split(model, X, y, "evaluate", allow_empty=True)
    n = X.shape[0]
    if n == 0:
        return float("nan")
    Xp, yp = pad_eval(X, y, int(batch_size))
    static, leaves = split_model(model, "evaluate")
    return int(compiled_count(static)(leaves, params, model_state, Xp, yp)) / n


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def _run_info(kind: str, models, configs, data, optimizer=None) -> dict[str, Any]:
    info = {
        "kind": kind,
        "models": [model_record(m) for m in models],
        "train_configs": [c.to_dict() for c in configs],
        "data": {
            "name": str(getattr(data, "name", "")),
            "shapes": {k: list(np.shape(getattr(data, k))) for k in ("X_train", "y_train", "X_val", "y_val")},
            # your own arrays (Dataset.from_arrays, npz:PATH): their SHA-256, so a resume on changed data is refused
            **({"digest": data.digest} if getattr(data, "digest", None) else {}),
        },
        # what load_run needs to apply the model to raw inputs (not compared on resume)
        "preprocessing": preprocessing_record(data),
    }
    if optimizer is not None and not isinstance(optimizer, ConfiguredOptimizer):
        info["optimizer"] = optimizer_record(models[0], optimizer)
    return info


def optimizer_record(model, optimizer) -> dict[str, Any]:
    """What a checkpoint records of an optax optimizer given to ``fit(..., optimizer=)``: its state's
    tree structure, shapes and dtypes (from ``jax.eval_shape``; nothing runs). A resume must pass an
    optimizer whose state matches."""
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    state = jax.eval_shape(optimizer.init, params)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {
        "given": True,
        "state": [f"{jax.tree_util.keystr(k)}: {v.dtype}{list(v.shape)}" for k, v in leaves],
    }


def _check_optimizer(optimizer, where: str):
    """``optimizer`` if it has an optax ``GradientTransformation``'s ``init`` and ``update``."""
    require(
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)),
        where,
        f"optimizer must be an optax GradientTransformation (with init and update), e.g. optax.adamw(1e-3); "
        f"got {type(optimizer).__name__}",
        TypeError,
    )
    return optimizer


def check_resume_metadata(meta: dict[str, Any], run_info: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose run differs from this one.

    Args:
      meta: the checkpoint's metadata (``read_checkpoint_metadata``).
      run_info: this run's description (:func:`run_info`).

    Raises:
      CheckpointError: another kind of run (``fit`` / ``fit_many``), model,
        training configuration (``epochs`` may differ) or data shapes, naming
        every field that differs.
    """
    if meta.get("kind") != run_info["kind"]:
        raise CheckpointError(f"resume: the checkpoint is from {meta.get('kind')!r}, not {run_info['kind']!r}")
    _compare("model", meta.get("models"), run_info["models"])
    saved, now = meta.get("train_configs"), run_info["train_configs"]
    if isinstance(saved, list):  # fields added since the checkpoint was written take their defaults
        saved = [{**TrainConfig().to_dict(), **c} if isinstance(c, dict) else c for c in saved]
    # a cosine schedule spans all epochs: extending the run would change every step size
    cosine = any(c.get("schedule") == "cosine" for c in now)
    _compare("training config", saved, now, ignore=() if cosine else ("epochs",))
    _compare("data", meta.get("data"), run_info["data"])
    _compare_optimizers(meta.get("optimizer"), run_info.get("optimizer"))


def _compare_optimizers(saved, now) -> None:
    """Refuse to resume with another optimizer than the checkpoint's (given or the config's)."""
    if saved == now:
        return
    if saved is None:
        raise CheckpointError(
            "resume: the checkpoint was trained with the TrainConfig's optimizer, but this run passes "
            "optimizer=; resume without it"
        )
    if now is None:
        raise CheckpointError(
            "resume: the checkpoint was trained with an optimizer passed as fit(..., optimizer=); pass the same "
            "optimizer again to resume"
        )
    diff = sorted(set(saved.get("state", [])) ^ set(now.get("state", [])))
    raise CheckpointError(
        "resume: the optimizer's state differs from the checkpoint's (pass the optimizer the run was trained "
        f"with); entries in one but not the other: {diff[:6]}"
    )


def run_info(kind: str, models, configs, data, optimizer=None) -> dict[str, Any]:
    """The description of a run that its checkpoint records and a resume must match (models, configs, data
    shapes, and an optimizer given to ``fit``)."""
    return _run_info(kind, models, configs, data, optimizer)


def _compare(what: str, saved, now, ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointError` naming every field in which ``saved`` differs from ``now``."""
    now = json.loads(json.dumps(now))  # the checkpoint's side went through JSON
    if isinstance(saved, list) and isinstance(now, list):
        if len(saved) != len(now):
            raise CheckpointError(f"resume: the checkpoint holds {len(saved)} {what}s, this run {len(now)}")
        for k, (a, b) in enumerate(zip(saved, now, strict=True)):
            _compare(f"{what} {k}" if len(now) > 1 else what, a, b, ignore)
        return
    if not isinstance(saved, dict):
        raise CheckpointError(f"resume: the checkpoint's {what} is {saved!r}, not a record")
    flat_saved, flat_now = _flatten_dict(saved), _flatten_dict(now)
    keys = sorted((set(flat_saved) | set(flat_now)) - set(ignore))
    diffs = [
        f"{k}: checkpoint {flat_saved.get(k)!r}, now {flat_now.get(k)!r}"
        for k in keys
        if flat_saved.get(k) != flat_now.get(k)
    ]
    if diffs:
        raise CheckpointError(f"resume: the {what} differs from the checkpoint's ({'; '.join(diffs)})")


def _flatten_dict(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _run(
    strategy,
    models: Sequence,
    configs: Sequence[TrainConfig],
    data,
    *,
    kind: str,
    checkpoint_dir,
    resume: bool,
    overwrite: bool = False,
    callback: Callable[[EpochReport], None] | None,
    where: str,
    optimizer,
    on_checkpoint: Callable[[EpochReport], None] | None = None,
    per_model_lr: bool = False,
) -> FitResult:
    """The host loop shared by ``fit`` and ``fit_many`` (see the module docstring).

    ``on_checkpoint(report)`` runs on the checkpoint writer's thread once the
    checkpoint of ``report.epoch`` is on disk (the run directory appends its
    metrics line there, so ``metrics.jsonl`` never lists an epoch that the
    checkpoint lacks). SIGINT and SIGTERM stop the loop at the next epoch
    boundary (:class:`~jaxlayers.training.signals.DeferredSignals`): the
    running epoch finishes and is checkpointed, the writer is closed, and
    :class:`TrainingInterrupted` is raised.
    """
    many = kind == "fit_many"
    K = len(models)
    config = configs[0]
    n_train, n_val = int(np.shape(data.y_train)[0]), int(np.shape(data.y_val)[0])
    steps = n_train // config.batch_size
    ckpt_path = check_checkpoint_target(checkpoint_dir, resume=resume, overwrite=overwrite, where=where)
    run_info = _run_info(kind, models, configs, data, optimizer)

    strategy.place(data)
    configured = isinstance(optimizer, ConfiguredOptimizer)
    inject = configured or per_model_lr  # a given optimizer keeps its own rate unless fit_many sweeps it
    state, best = strategy.init([c.seed for c in configs], [c.learning_rate if inject else None for c in configs])
    # the history's learning rates: the optimizer's own schedule (a given optimizer: the rate in its state)
    schedules = [learning_rate_schedule(optimizer.spec, c.learning_rate) for c in configs] if configured else None
    history = History.empty(K if many else None)
    best_val_acc, best_epoch, start_epoch = np.full(K, -1.0), np.zeros(K, np.int64), 0
    if resume:
        host_state, host_best = strategy.to_host(state, best)
        try:
            host_state, host_best, meta = load_checkpoint(ckpt_path, host_state, host_best)
        except CheckpointError:  # tensors of another run: name what differs, if the metadata can
            check_resume_metadata(read_checkpoint_metadata(ckpt_path), run_info)
            raise
        check_resume_metadata(meta, run_info)
        state, best = strategy.from_host(jax.device_get(host_state), jax.device_get(host_best))
        history = History.from_dict(meta["history"])
        best_val_acc = np.asarray(meta["best_val_acc"], np.float64).reshape(K)
        best_epoch = np.asarray(meta["best_epoch"], np.int64).reshape(K)
        start_epoch = int(meta["epoch"])
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    def per_model(a):
        return a if many else a[0]

    writer = CheckpointWriter() if ckpt_path is not None else None
    stop = getattr(_SIGNALS, "active", None) or DeferredSignals()
    done = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            if stop.received is not None:
                break
            t0 = time.perf_counter()
            state, best, out = strategy.epoch(state, best)
            losses = np.asarray(out.loss, np.float64)  # (K, steps)
            if not many and not np.all(np.isfinite(losses)):
                i = int(np.argmax(~np.isfinite(losses[0])))
                if writer is not None:
                    writer.wait()  # the previous epoch's checkpoint is complete before it is named
                last = (
                    f"the last checkpoint, {ckpt_path} (epoch {epoch}), is left intact"
                    if ckpt_path is not None and ckpt_path.exists()
                    else "no checkpoint was written"
                )
                raise NonFiniteLossError(
                    f"{where}: the loss is {losses[0, i]} at step {epoch * steps + i + 1} (epoch {epoch + 1}, "
                    f"iteration {i + 1} of {steps}); training stopped and {last}. Try a smaller learning rate."
                )
            train_acc = np.sum(out.correct, axis=1) / (steps * config.batch_size)
            val_acc = np.asarray(out.val_correct) / n_val
            improved = np.asarray(out.improved, bool)
            best_val_acc[improved] = val_acc[improved]
            best_epoch[improved] = epoch + 1
            host = strategy.to_host(state, best) if writer is not None or not configured else None
            if configured:
                lrs = np.array([float(f(epoch * steps)) for f in schedules])
            else:
                lrs = _injected_learning_rate(host[0].opt_state, K)
            history.append(per_model(losses), per_model(train_acc), per_model(val_acc), per_model(lrs), 0.0)
            tensors = checkpoint_tensors(*host) if writer is not None else None
            history.epoch_time_s[-1] = time.perf_counter() - t0
            report = EpochReport(
                epoch=epoch + 1,
                epochs=config.epochs,
                steps=(epoch + 1) * steps,
                loss=per_model(losses.mean(axis=1)) if many else float(losses.mean()),
                train_acc=per_model(train_acc) if many else float(train_acc[0]),
                val_acc=per_model(val_acc) if many else float(val_acc[0]),
                best_val_acc=best_val_acc.copy() if many else float(best_val_acc[0]),
                lr=lrs if many else float(lrs[0]),
                epoch_time_s=float(history.epoch_time_s[-1]),
                history=history,
            )
            if writer is not None:
                meta = {
                    **run_info,
                    "epoch": epoch + 1,
                    "history": history.to_dict(),
                    "best_val_acc": per_model(best_val_acc).tolist(),
                    "best_epoch": per_model(best_epoch).tolist(),
                }
                then = None if on_checkpoint is None else functools.partial(on_checkpoint, report)
                writer.submit(ckpt_path, tensors, meta, then)
            done = epoch + 1
            if callback is not None:
                callback(report)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close(raise_errors=False)  # finish the pending write; the original error wins
        raise
    if stop.received is not None:
        name = SIGNAL_NAMES.get(stop.received, f"signal {stop.received}")
        saved = ckpt_path if ckpt_path is not None and done > 0 else None
        where_saved = f"; epoch {done} is checkpointed in {saved}" if saved is not None else ""
        raise TrainingInterrupted(
            f"{where}: {name} received; stopped after epoch {done} of {config.epochs}{where_saved}",
            signum=stop.received,
            epoch=done,
            checkpoint=saved,
        )

    state, best = strategy.result(state, best)
    return FitResult(
        models=tuple(models),
        configs=tuple(configs),
        state=state,
        best_params=best.params,
        best_model_state=best.model_state,
        best_val_acc=best_val_acc if many else float(best_val_acc[0]),
        best_epoch=best_epoch if many else int(best_epoch[0]),
        history=history,
        start_epoch=start_epoch,
        steps_per_epoch=steps,
        many=many,
    )


# ---------------------------------------------------------------------------
# fit and fit_many
# ---------------------------------------------------------------------------


_SIGNALS = threading.local()  # the DeferredSignals of the fit / fit_many running in this thread


def _stops_at_epoch_boundaries(function):
    """Run ``function`` (``fit``, ``fit_many``) with SIGINT/SIGTERM deferred from its first line to its
    return, so that no signal raises while JAX traces, compiles or runs; :func:`_run` stops on it."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        outer = getattr(_SIGNALS, "active", None)
        with DeferredSignals() as stop:
            _SIGNALS.active = stop
            try:
                return function(*args, **kwargs)
            finally:
                _SIGNALS.active = outer

    return wrapper


def _injected_learning_rate(opt_state, k: int) -> np.ndarray:
    """``(k,)``: the learning rate an ``optax.inject_hyperparams`` optimizer holds in its (host) state
    (the last step's, for a schedule), or ``nan`` where the state holds none."""
    hyper = getattr(opt_state, "hyperparams", None)
    if isinstance(hyper, dict) and "learning_rate" in hyper:
        return np.broadcast_to(np.asarray(hyper["learning_rate"], np.float64).reshape(-1), (k,)).copy()
    for part in opt_state if isinstance(opt_state, tuple) else ():
        found = _injected_learning_rate(part, k)
        if not np.all(np.isnan(found)):
            return found
    return np.full(k, np.nan)


@_stops_at_epoch_boundaries
def fit(
    model,
    data,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[EpochReport], None] | None = None,
    mesh=None,
    distributed: Distributed | None = None,
    on_checkpoint: Callable[[EpochReport], None] | None = None,
    optimizer=None,
) -> FitResult:
    """Train ``model`` on ``data`` for ``config.epochs`` epochs.

    Each epoch is one jit-compiled call (:func:`jaxlayers.training.epoch.run_epoch`):
    the training data stay on device, minibatches come from a permutation
    drawn from the state's key, and the per-step losses and correct counts
    are fetched once, at the end of the epoch. After every epoch the
    validation accuracy is measured (test mode), the parameters are kept if
    it is the best so far (ties: the later epoch), and (with
    ``checkpoint_dir``) a checkpoint is written atomically. Learning rate,
    ``reg`` and ``weight_scale`` are traced: a second ``fit`` that changes only
    them compiles nothing.

    Args:
      model: any model of the model protocol (:mod:`jaxlayers.model`), e.g.
        :class:`jaxlayers.FullyConnectedNet`; it must accept the data's
        feature shape and have at least as many classes as the labels need.
      data: a :class:`jaxlayers.data.Dataset` (or anything with ``X_train,
        y_train, X_val, y_val``, or the course Solver's dict of them):
        features ``(N, ...)``, integer labels.
      config: the :class:`TrainConfig` (``None``: the defaults).
      checkpoint_dir: a directory (created if needed) for
        ``checkpoint.safetensors``, rewritten after every epoch. ``None``:
        no checkpoints.
      resume: continue from the checkpoint in ``checkpoint_dir``. The model,
        data shapes and config must be those of the checkpointed run, except
        ``epochs``, which may grow; the run then ends bitwise equal to an
        uninterrupted one.
      overwrite: start afresh in a ``checkpoint_dir`` that holds a checkpoint,
        replacing it (else refused: :class:`~jaxlayers.training.checkpoint.RunExists`).
      callback: called with an :class:`EpochReport` after every epoch.
      mesh: a ``jax.sharding.Mesh`` (e.g. ``jaxlayers.parallel.make_data_mesh(8)``):
        train data-parallel, the same epoch sharded over its devices
        (:class:`jaxlayers.training.strategies.DataMesh`); equal to the
        one-device run up to float rounding, bitwise on a one-device mesh.
      distributed: a ``jaxlayers.parallel.Distributed``: join a multi-process
        run first (before any JAX computation in this process) and, if
        ``mesh`` is ``None``, train on every device of every process. Every
        process calls ``fit`` with the same arguments.
      on_checkpoint: called with the epoch's :class:`EpochReport` on the
        checkpoint writer's thread once that epoch's checkpoint is on disk
        (needs ``checkpoint_dir``).
      optimizer: any optax ``GradientTransformation`` (e.g.
        ``optax.adamw(optax.warmup_cosine_decay_schedule(...))``), used in
        place of the one ``config`` describes (whose ``optimizer``,
        ``learning_rate``, ``schedule``, ... are then unused). Its state is
        checkpointed; a resume must pass an optimizer with the same state
        structure (else :class:`CheckpointError`). The history's ``lr`` is
        the learning rate its state holds (an ``optax.inject_hyperparams``
        optimizer; the epoch's last step), else ``nan``. Passing the same
        object again reuses the compiled programs.

    SIGINT (Ctrl-C) and SIGTERM, while ``fit`` runs in the main thread, stop
    it at the end of the running epoch, after that epoch's checkpoint is
    written: it raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``)
    naming the epoch and checkpoint. A second signal acts at once.

    Returns:
      A :class:`FitResult` (no model axis). With ``mesh``, ``state`` holds
      arrays replicated on the mesh (``jaxlayers.parallel.host_copy`` gives
      host copies in any process); ``best_params`` and ``best_model_state``
      are local arrays.

    Raises:
      TypeError: a model without the protocol, a config that is not a
        ``TrainConfig``, data of the wrong kind or float labels.
      ValueError: data that disagree with the model (feature shape, label
        range), NaN/inf features, ``batch_size`` larger than the training set
        or not a multiple of the mesh's device count, ``resume`` without
        ``checkpoint_dir``, ``resume`` with ``overwrite``.
      DistributedInitError: the coordinator could not be reached.
      FileNotFoundError: ``resume`` with no checkpoint in ``checkpoint_dir``.
      RunExists: a checkpoint in ``checkpoint_dir``, and neither ``resume`` nor ``overwrite``.
      CheckpointError: a checkpoint that is corrupt or from another run.
      NonFiniteLossError: a NaN or infinite loss; the message names the step
        and the last checkpoint, which is left intact.
      TrainingInterrupted: SIGINT or SIGTERM (see above).
      InsufficientMemoryError: parameters, optimizer state and activations
        (estimated with ``jax.eval_shape``, before anything is allocated)
        exceed the device's available memory.
    """
    check_model(model, "fit")
    config = TrainConfig() if config is None else config
    check_instance(config, "fit", "config", TrainConfig)
    if distributed is not None:
        initialize_distributed(distributed)
        mesh = make_data_mesh() if mesh is None else mesh
    if optimizer is not None:
        optimizer = _check_optimizer(optimizer, "fit")
    data = preflight(model, data, config, mesh=mesh, where="fit", optimizer=optimizer)
    return fit_checked(
        model, data, config, checkpoint_dir=checkpoint_dir, resume=resume, overwrite=overwrite, callback=callback,
        mesh=mesh, on_checkpoint=on_checkpoint, optimizer=optimizer,
    )  # fmt: skip


@_stops_at_epoch_boundaries
def fit_checked(
    model,
    data,
    config: TrainConfig,
    *,
    checkpoint_dir=None,
    resume: bool = False,
    overwrite: bool = False,
    callback=None,
    mesh=None,
    on_checkpoint=None,
    optimizer=None,
    where: str = "fit",
) -> FitResult:
    """:func:`fit` after :func:`preflight` passed on these arguments (``data`` is its result): for callers
    that ran the checks themselves, earlier (``fit(run_dir=)``, ``jaxlayers train``), so they run once."""
    steps = int(np.shape(data.y_train)[0]) // config.batch_size
    optimizer = make_optimizer(config, steps) if optimizer is None else optimizer
    kw = {"steps": steps, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size}
    kw["augment"] = config.augment  # the training minibatches' augmentation (strategies, epoch.augment_batch)
    strategy = SingleDevice(model, optimizer, **kw) if mesh is None else DataMesh(model, optimizer, mesh=mesh, **kw)
    result = _run(
        strategy,
        [model],
        [config],
        data,
        kind="fit",
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
        callback=callback,
        where=where,
        optimizer=optimizer,
        on_checkpoint=on_checkpoint,
    )
    if mesh is not None:  # best as local arrays, usable in any process
        result.best_params, result.best_model_state = jax.tree.map(
            jnp.asarray, host_copy((result.best_params, result.best_model_state))
        )
    return result


def grid(**lists: Sequence) -> dict[str, list]:
    """The Cartesian product of per-setting lists, as :func:`fit_many`'s keyword arguments.

    Args:
      **lists: any of ``seeds, weight_scales, learning_rates, dropout_rates,
        regs``, each a sequence of values.

    Returns:
      The same keys, each a list of ``prod(len(v))`` values; the last key
      varies fastest. ``grid(dropout_rates=[0, 0.5], seeds=[0, 1])`` is
      ``{"dropout_rates": [0, 0, 0.5, 0.5], "seeds": [0, 1, 0, 1]}``.

    Raises:
      ValueError: an unknown key or no lists.
    """
    unknown = sorted(set(lists) - set(SWEPT))
    require(bool(lists) and not unknown, "grid", f"give lists for some of {', '.join(SWEPT)}; got {unknown or 'none'}")
    rows = list(itertools.product(*(list(v) for v in lists.values())))
    return {name: [row[i] for row in rows] for i, name in enumerate(lists)}


def _sweep_values(name: str, values) -> list | None:
    if values is None:
        return None
    require(
        not isinstance(values, str | bytes) and isinstance(values, Sequence | np.ndarray),
        "fit_many",
        f"{name} must be a sequence of per-model values, got {type(values).__name__}",
        TypeError,
    )
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    require(bool(values), "fit_many", f"{name} is empty; give one value per model")
    return values


def _replace_model(model, fields: dict):
    """``model`` with ``fields`` changed: ``dataclasses.replace`` for a dataclass (the built-in
    models), else the model's own ``replace(**fields)`` (:meth:`jaxlayers.nn.Sequential.replace`)."""
    if dataclasses.is_dataclass(model):
        require(
            all(f in {x.name for x in dataclasses.fields(model)} for f in fields),
            "fit_many",
            f"{type(model).__name__} has no field(s) {sorted(fields)} to sweep",
            TypeError,
        )
        return dataclasses.replace(model, **fields)
    replace = getattr(model, "replace", None)
    require(
        callable(replace),
        "fit_many",
        f"{type(model).__name__} has no field(s) {sorted(fields)} to sweep (it is neither a dataclass nor has "
        "a replace(**fields) method); pass a list of models instead",
        TypeError,
    )
    return replace(**fields)


@_stops_at_epoch_boundaries
def fit_many(
    model,
    data,
    config: TrainConfig | None = None,
    *,
    seeds: Sequence[int] | None = None,
    weight_scales: Sequence[float | None] | None = None,
    learning_rates: Sequence[float] | None = None,
    dropout_rates: Sequence[float] | None = None,
    regs: Sequence[float] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[EpochReport], None] | None = None,
    optimizer=None,
) -> FitResult:
    """Train ``K`` variants of ``model`` at once: one compiled program per epoch, vmapped over the models.

    Model ``k`` is ``model`` with ``weight_scales[k]``, ``dropout_rates[k]``
    and ``regs[k]`` (fields of the model, set with ``dataclasses.replace``,
    or with the model's ``replace`` method: :meth:`jaxlayers.nn.Sequential.replace`
    sets ``reg`` and every weight layer's ``weight_scale``; a Sequential's
    dropout rates are layers: pass a list of models),
    trained with ``config`` with ``seeds[k]`` and ``learning_rates[k]``; a
    list not given takes the model's or config's value for every model.
    ``model`` may also be a sequence of ``K`` models of one architecture.
    Each model runs exactly ``fit``'s epoch, vmapped over the stacked states:
    the same initialisation, data order (per model, from its seed), dropout
    masks, steps and best-epoch rule, so model ``k`` equals ``fit(model_k,
    data, config_k)`` up to the summation order of batched matmuls (float32
    rounding; ``1e-12`` in float64). Seeds, learning rates (in each state),
    weight scales and regs (the models' traced leaves) are per-model arrays;
    models whose static structure differs (dropout rate, He init vs an
    explicit scale) run as separate vmapped groups inside the one compiled
    epoch.

    Unlike ``fit``, a model whose loss turns non-finite is not an error: its
    history holds ``nan``/``inf`` from that step on, :attr:`FitResult.finite`
    is ``False`` for it, and the other models train on.

    Args:
      model: the base model (or a sequence of models).
      data: as :func:`fit`.
      config: the base :class:`TrainConfig` (epochs, batch size, optimizer,
        decay and momentum are shared); ``None``: the defaults.
      seeds, weight_scales, learning_rates, dropout_rates, regs: per-model
        values, one list length ``K`` for all given.
      checkpoint_dir, resume, overwrite: as :func:`fit`: a checkpoint of all ``K``
        models after every epoch; resume continues the sweep bitwise.
      callback: called with an :class:`EpochReport` (``(K,)`` arrays) after every epoch.
      optimizer: as :func:`fit`, shared by the models; ``learning_rates``
        then needs an ``optax.inject_hyperparams`` optimizer (each model's
        rate goes into its state).

    Returns:
      A :class:`FitResult` with a leading model axis; ``result[k]`` is model
      ``k`` as the result of a separate ``fit``.

    Raises:
      ValueError: no list given (and no sequence of models), lists of
        different lengths, an empty list, a value the model or
        ``TrainConfig`` rejects (naming the model and field), models of
        different architectures, or data that disagree with the model.
      TypeError: as :func:`fit`; a list that is not a sequence; a swept field
        the model does not have.

    Example:
      >>> import jaxlayers as jl
      >>> ds = jl.data.load("digits")
      >>> net = jl.FullyConnectedNet(hidden_dims=(64,), input_dim=64, num_classes=10)
      >>> sweep = jl.train.fit_many(net, ds, jl.train.TrainConfig(epochs=3), learning_rates=[0.01, 0.03, 0.1])
      >>> sweep.history.val_acc.shape
      (3, 3)
    """
    base_models = list(model) if isinstance(model, list | tuple) else [model]
    for m in base_models:
        check_model(m, "fit_many")
    config = TrainConfig() if config is None else config
    check_instance(config, "fit_many", "config", TrainConfig)
    lists = {
        name: _sweep_values(name, v)
        for name, v in zip(SWEPT, (seeds, weight_scales, learning_rates, dropout_rates, regs), strict=True)
    }
    given = {name: len(v) for name, v in lists.items() if v is not None}
    if len(base_models) > 1:
        given = {"models": len(base_models), **given}
    require(
        bool(given), "fit_many", f"give at least one of {', '.join(SWEPT)} (one value per model), or a list of models"
    )
    require(len(set(given.values())) == 1, "fit_many", f"the swept lists must have one length, got {given}")
    K = next(iter(given.values()))
    models, configs = [], []
    for k in range(K):
        m = base_models[k if len(base_models) > 1 else 0]
        model_fields, config_fields = {}, {}
        for name, (target, field) in SWEPT.items():
            if lists[name] is not None:
                (model_fields if target == "model" else config_fields)[field] = lists[name][k]
        try:
            if model_fields:
                m = _replace_model(m, model_fields)
            configs.append(dataclasses.replace(config, **config_fields))
        except (ValueError, TypeError) as e:
            raise type(e)(f"fit_many: model {k}: {e}") from None
        models.append(m)
    if optimizer is not None:
        optimizer = _check_optimizer(optimizer, "fit_many")
    data = preflight(models[0], data, config, num_models=K, where="fit_many", optimizer=optimizer)
    steps = int(np.shape(data.y_train)[0]) // config.batch_size
    optimizer = make_optimizer(config, steps) if optimizer is None else optimizer
    strategy = ManyModels(
        models,
        optimizer,
        steps=steps,
        batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        augment=config.augment,
    )
    return _run(
        strategy,
        models,
        configs,
        data,
        kind="fit_many",
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
        callback=callback,
        where="fit_many",
        optimizer=optimizer,
        per_model_lr=learning_rates is not None,
    )
