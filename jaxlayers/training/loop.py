"""The one host loop: :func:`fit` and :func:`fit_many`, from the arguments to the strategy's epoch.

``fit`` (one model, on one device or a mesh) and ``fit_many`` (``K`` models, vmapped) check their
arguments once (:func:`~jaxlayers.training.preflight.preflight`), build a strategy
(:mod:`jaxlayers.training.strategies`) and run the same loop, :func:`_train`: the callbacks are
entered (the run directory takes its lock), the checkpoint is checked and, on resume, compared and
loaded, once (:func:`~jaxlayers.training.resume.open_checkpoint`); then per epoch one compiled call,
one fetch of the per-step losses and counts, the history, the checkpoint (written on a background
thread) and the callbacks. The run directory, the progress bar and the metrics file are callbacks
(:mod:`jaxlayers.training.hooks`, :class:`~jaxlayers.training.rundir.RunDir`), not wrappers.

The two differ in what a non-finite loss does: ``fit`` stops with :class:`NonFiniteLossError` and
its last checkpoint intact; in a sweep the model is only marked (:attr:`FitResult.finite`) and the
others train on (:class:`_Tally` and :class:`_ManyTally` hold that difference, and the shapes of the
history and the report).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_instance, require
from jaxlayers.model import check_model
from jaxlayers.parallel import Distributed, host_copy, initialize_distributed, make_data_mesh
from jaxlayers.training.checkpoint import CheckpointWriter, checkpoint_tensors, load_checkpoint
from jaxlayers.training.config import (
    ConfiguredOptimizer,
    TrainConfig,
    learning_rate_schedule,
    make_optimizer,
    steps_per_epoch,
)
from jaxlayers.training.evaluation import evaluate
from jaxlayers.training.hooks import Callback, Callbacks, ProgressBar, RunStart
from jaxlayers.training.preflight import as_dataset, check_data, preflight
from jaxlayers.training.results import EpochReport, FitResult, History, NonFiniteLossError, TrainingInterrupted
from jaxlayers.training.resume import open_checkpoint, run_info
from jaxlayers.training.rundir import RunDir
from jaxlayers.training.signals import SIGNAL_NAMES, DeferredSignals
from jaxlayers.training.state import count_targets
from jaxlayers.training.strategies import DataMesh, ManyModels, SingleDevice

__all__ = [
    "SWEPT",
    "Callback",
    "as_dataset",
    "check_data",
    "evaluate",
    "fit",
    "fit_many",
    "grid",
    "preflight",
]

# fit_many's per-model lists: the keyword, and the field of the model (or of the TrainConfig) it sets.
SWEPT = {
    "seeds": ("config", "seed"),
    "weight_scales": ("model", "weight_scale"),
    "learning_rates": ("config", "learning_rate"),
    "dropout_rates": ("model", "dropout_rate"),
    "regs": ("model", "reg"),
}


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A checked run, as ``fit`` / ``fit_many`` hand it to :func:`_train`."""

    kind: str
    strategy: Any
    models: tuple
    configs: tuple
    data: Any
    optimizer: Any
    steps: int
    where: str
    mesh: Any = None
    per_model_lr: bool = False  # fit_many sweeps the rate of a given optimizer (in its injected state)

    @property
    def configured(self) -> bool:
        """The optimizer is the config's (its schedule gives the history's rates), not one given to ``fit``."""
        return isinstance(self.optimizer, ConfiguredOptimizer)


class _Tally:
    """The host's record of one model's run: history, best epoch, the report; a non-finite loss stops it."""

    def __init__(self, plan: _Plan, checkpoint: Path | None) -> None:
        self.plan, self.checkpoint = plan, checkpoint
        K = len(plan.models)
        self.history = History.empty(K if self.many else None)
        self.best_val_acc, self.best_epoch = np.full(K, -1.0), np.zeros(K, np.int64)
        self.start_epoch = self.done = 0
        self.val_count = int(count_targets(plan.models[0], np.asarray(plan.data.y_val)))
        c = plan.configs
        self._schedules = (
            [learning_rate_schedule(plan.optimizer.spec, x.learning_rate) for x in c] if plan.configured else None
        )

    many = False

    def per_model(self, a):
        """A ``(K, ...)`` array as the history and the checkpoint hold it (one model: no model axis)."""
        return a[0]

    def scalar(self, a):
        """A ``(K,)`` array as the report gives it (one model: a float)."""
        return float(a[0])

    def resume(self, meta: dict[str, Any]) -> None:
        K = len(self.plan.models)
        self.history = History.from_dict(meta["history"])
        self.best_val_acc = np.asarray(meta["best_val_acc"], np.float64).reshape(K)
        self.best_epoch = np.asarray(meta["best_epoch"], np.int64).reshape(K)
        self.start_epoch = self.done = int(meta["epoch"])

    def check_finite(self, losses: np.ndarray, epoch: int, writer) -> None:
        """Raise :class:`NonFiniteLossError` naming the step and the last checkpoint (left intact)."""
        if np.all(np.isfinite(losses)):
            return
        i, steps, ckpt = int(np.argmax(~np.isfinite(losses[0]))), self.plan.steps, self.checkpoint
        if writer is not None:
            writer.wait()  # the previous epoch's checkpoint is complete before it is named
        last = (
            f"the last checkpoint, {ckpt} (epoch {epoch}), is left intact"
            if ckpt is not None and ckpt.exists()
            else "no checkpoint was written"
        )
        raise NonFiniteLossError(
            f"{self.plan.where}: the loss is {losses[0, i]} at step {epoch * steps + i + 1} (epoch {epoch + 1}, "
            f"iteration {i + 1} of {steps}); training stopped and {last}. Try a smaller learning rate."
        )

    def learning_rates(self, epoch: int, host) -> np.ndarray:
        """``(K,)``: the rates of the epoch's first step from the config's schedule, or the given optimizer's
        (the rate in its state)."""
        if self._schedules is not None:
            return np.array([float(f(epoch * self.plan.steps)) for f in self._schedules])
        return _injected_learning_rate(host[0].opt_state, len(self.plan.models))

    def add(self, epoch: int, losses: np.ndarray, out, lrs: np.ndarray, t0: float) -> EpochReport:
        """Record the epoch (its time measured from ``t0``) and return its report."""
        config, pm = self.plan.configs[0], self.per_model
        # per counted label: steps * batch_size for class labels, the non-padding steps for sequence labels
        train_acc = np.sum(out.correct, axis=1) / np.sum(np.asarray(out.count, np.int64), axis=1)
        val_acc = np.asarray(out.val_correct) / self.val_count
        improved = np.asarray(out.improved, bool)
        self.best_val_acc[improved] = val_acc[improved]
        self.best_epoch[improved] = epoch + 1
        self.history.append(pm(losses), pm(train_acc), pm(val_acc), pm(lrs), time.perf_counter() - t0)
        v = self.scalar
        return EpochReport(
            epoch=epoch + 1, epochs=config.epochs, steps=(epoch + 1) * self.plan.steps,
            loss=v(losses.mean(axis=1)), train_acc=v(train_acc), val_acc=v(val_acc),
            best_val_acc=v(self.best_val_acc.copy()), lr=v(lrs),
            epoch_time_s=float(self.history.epoch_time_s[-1]), history=self.history,
        )  # fmt: skip

    def metadata(self, info: dict[str, Any], epoch: int) -> dict[str, Any]:
        """The checkpoint's metadata after ``epoch`` epochs."""
        return {
            **info,
            "epoch": epoch,
            "history": self.history.to_dict(),
            "best_val_acc": self.per_model(self.best_val_acc).tolist(),
            "best_epoch": self.per_model(self.best_epoch).tolist(),
        }

    def result(self, state, best) -> FitResult:
        plan = self.plan
        return FitResult(
            models=tuple(plan.models), configs=tuple(plan.configs), state=state,
            best_params=best.params, best_model_state=best.model_state,
            best_val_acc=self.per_model(self.best_val_acc) if self.many else float(self.best_val_acc[0]),
            best_epoch=self.best_epoch if self.many else int(self.best_epoch[0]),
            history=self.history, start_epoch=self.start_epoch, steps_per_epoch=plan.steps, many=self.many,
        )  # fmt: skip


class _ManyTally(_Tally):
    """``K`` models: a model axis everywhere; a non-finite loss only marks its model."""

    many = True

    def per_model(self, a):
        return a

    def scalar(self, a):
        return a

    def check_finite(self, losses: np.ndarray, epoch: int, writer) -> None:
        return None


def _train(plan: _Plan, hooks: Callbacks, directory, *, resume: bool, overwrite: bool) -> FitResult:
    """The host loop (see the module docstring); SIGINT and SIGTERM stop it at the next epoch boundary
    (:class:`~jaxlayers.training.signals.DeferredSignals`, installed by ``fit`` / ``fit_many``): the
    running epoch finishes and is checkpointed, the writer is closed, and :class:`TrainingInterrupted`
    is raised."""
    stop = getattr(_SIGNALS, "active", None) or DeferredSignals()
    with hooks:
        info = run_info(plan.kind, plan.models, plan.configs, plan.data, plan.optimizer)
        ckpt, meta = open_checkpoint(directory, info, resume=resume, overwrite=overwrite, where=plan.where)
        tally = (_ManyTally if plan.kind == "fit_many" else _Tally)(plan, ckpt)
        state, best = _begin(plan, tally, meta)
        hooks.on_start(
            RunStart(
                plan.kind, plan.models, plan.configs, plan.data, plan.steps, tally.start_epoch,
                tally.history if meta is not None else None, ckpt, plan.mesh, not plan.configured,
            )
        )  # fmt: skip
        state, best = _epochs(plan, tally, state, best, hooks, stop, info)
        _raise_if_stopped(stop, tally, plan.where)
        result = tally.result(*plan.strategy.result(state, best))
        hooks.on_end(result)
        _raise_if_stopped(stop, tally, plan.where, ended=True)
    return result


def _begin(plan: _Plan, tally: _Tally, meta: dict[str, Any] | None):
    """``(state, best)`` on device: fresh from the seeds, or the checkpoint's (``meta``: a matching resume)."""
    strategy = plan.strategy
    strategy.place(plan.data)
    inject = plan.configured or plan.per_model_lr  # a given optimizer keeps its own rate unless fit_many sweeps it
    state, best = strategy.init(
        [c.seed for c in plan.configs], [c.learning_rate if inject else None for c in plan.configs]
    )
    if meta is not None:
        host_state, host_best, meta = load_checkpoint(tally.checkpoint, *strategy.to_host(state, best))
        state, best = strategy.from_host(jax.device_get(host_state), jax.device_get(host_best))
        tally.resume(meta)
    if tally.checkpoint is not None:
        tally.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return state, best


def _epochs(plan: _Plan, tally: _Tally, state, best, hooks: Callbacks, stop, info):
    """The epochs from ``tally.start_epoch`` until ``epochs`` or a signal; the final ``(state, best)``."""
    writer = CheckpointWriter() if tally.checkpoint is not None else None
    then = hooks.on_checkpoint if hooks.wants_checkpoints else None
    try:
        for epoch in range(tally.start_epoch, plan.configs[0].epochs):
            if stop.received is not None:
                break
            t0 = time.perf_counter()
            state, best, out = plan.strategy.epoch(state, best)
            losses = np.asarray(out.loss, np.float64)  # (K, steps)
            tally.check_finite(losses, epoch, writer)
            host = plan.strategy.to_host(state, best) if writer is not None or not plan.configured else None
            tensors = checkpoint_tensors(*host) if writer is not None else None
            report = tally.add(epoch, losses, out, tally.learning_rates(epoch, host), t0)
            if writer is not None:
                on_disk = None if then is None else functools.partial(then, report)
                writer.submit(tally.checkpoint, tensors, tally.metadata(info, epoch + 1), on_disk)
            tally.done = epoch + 1
            hooks.on_epoch(report)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close(raise_errors=False)  # finish the pending write; the original error wins
        raise
    return state, best


def _raise_if_stopped(stop, tally: _Tally, where: str, *, ended: bool = False) -> None:
    """:class:`TrainingInterrupted` if a signal was received (``ended``: after training and the callbacks'
    ``on_end``, so the run and its files are complete)."""
    if stop.received is None:
        return
    name = SIGNAL_NAMES.get(stop.received, f"signal {stop.received}")
    done, ckpt = tally.done, tally.checkpoint
    saved = ckpt if ckpt is not None and done > 0 else None
    if ended:
        message = f"{where}: {name} received after training ended; the run is complete"
    else:
        where_saved = f"; epoch {done} is checkpointed in {saved}" if saved is not None else ""
        message = f"{where}: {name} received; stopped after epoch {done} of {tally.plan.configs[0].epochs}{where_saved}"
    raise TrainingInterrupted(message, signum=stop.received, epoch=done, checkpoint=saved)


# ---------------------------------------------------------------------------
# fit and fit_many
# ---------------------------------------------------------------------------


_SIGNALS = threading.local()  # the DeferredSignals of the fit / fit_many running in this thread


def _stops_at_epoch_boundaries(function):
    """Run ``function`` (``fit``, ``fit_many``) with SIGINT/SIGTERM deferred from its first line to its
    return, so that no signal raises while JAX traces, compiles or runs; :func:`_train` stops on it."""

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
    run_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    verbose: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callback: Callable[[EpochReport], None] | None = None,
    mesh=None,
    distributed: Distributed | None = None,
    optimizer=None,
    callbacks: Sequence = (),
    record: dict[str, Any] | None = None,
    where: str = "fit",
) -> FitResult:
    """Train ``model`` on ``data`` for ``config.epochs`` epochs.

    Each epoch is one jit-compiled call (:func:`jaxlayers.training.epoch.run_epoch`):
    the training data stay on device, minibatches come from a permutation
    drawn from the state's key, and the per-step losses and correct counts
    are fetched once, at the end of the epoch. After every epoch the
    validation accuracy is measured (test mode), the parameters are kept if
    it is the best so far (ties: the later epoch), (with ``checkpoint_dir``
    or ``run_dir``) a checkpoint is written atomically, and the callbacks
    run. Learning rate, ``reg`` and ``weight_scale`` are traced: a second
    ``fit`` that changes only them compiles nothing. Every argument is checked
    once, before anything is compiled or written
    (:func:`~jaxlayers.training.preflight.preflight`); the checkpoint is
    checked (and a resume compared with it) once, after ``run_dir`` is locked.

    Args:
      model: any model of the model protocol (:mod:`jaxlayers.model`), e.g.
        :class:`jaxlayers.FullyConnectedNet`; it must accept the data's
        feature shape and have at least as many classes as the labels need.
      data: a :class:`jaxlayers.data.Dataset` (or anything with ``X_train,
        y_train, X_val, y_val``, or the course Solver's dict of them):
        features ``(N, ...)``, integer labels.
      config: the :class:`TrainConfig` (``None``: the defaults).
      run_dir: write the run directory there -- ``config.json``,
        ``metrics.jsonl``, ``curves.png``, ``checkpoint.safetensors``,
        ``summary.json`` -- exactly as ``jaxlayers train -o run_dir`` does
        (one implementation: the :class:`~jaxlayers.training.rundir.RunDir`
        callback). It takes the place of ``checkpoint_dir``.
      checkpoint_dir: a directory (created if needed) for
        ``checkpoint.safetensors``, rewritten after every epoch. ``None``:
        no checkpoints.
      resume: continue from the checkpoint in ``checkpoint_dir`` (or ``run_dir``). The model,
        data shapes and config must be those of the checkpointed run, except
        ``epochs``, which may grow; the run then ends bitwise equal to an
        uninterrupted one.
      overwrite: start afresh in a ``checkpoint_dir`` (``run_dir``) that holds a
        checkpoint, replacing it (else refused: :class:`~jaxlayers.training.checkpoint.RunExists`,
        as ``jaxlayers train`` refuses without ``--overwrite``).
      verbose: a progress bar (tqdm, on stderr), one step per epoch.
      callback: called with an :class:`EpochReport` after every epoch.
      callbacks: more of them: functions of the :class:`EpochReport`, or
        objects with ``on_start``, ``on_epoch``, ``on_checkpoint``
        (on the checkpoint writer's thread, once that epoch's checkpoint is
        on disk), ``on_end`` (:class:`~jaxlayers.training.hooks.Callback`).
      mesh: a ``jax.sharding.Mesh`` (e.g. ``jaxlayers.parallel.make_data_mesh(8)``):
        train data-parallel, the same epoch sharded over its devices
        (:class:`jaxlayers.training.strategies.DataMesh`); equal to the
        one-device run up to float rounding, bitwise on a one-device mesh.
      distributed: a ``jaxlayers.parallel.Distributed``: join a multi-process
        run first (before any JAX computation in this process) and, if
        ``mesh`` is ``None``, train on every device of every process. Every
        process calls ``fit`` with the same arguments.
      optimizer: any optax ``GradientTransformation`` (e.g.
        ``optax.adamw(optax.warmup_cosine_decay_schedule(...))``), used in
        place of the one ``config`` describes (whose ``optimizer``,
        ``learning_rate``, ``schedule``, ... are then unused). Its state is
        checkpointed; a resume must pass an optimizer with the same state
        structure (else :class:`CheckpointError`). The history's ``lr`` is
        the learning rate its state holds (an ``optax.inject_hyperparams``
        optimizer; the epoch's last step), else ``nan``. Passing the same
        object again reuses the compiled programs.
      record: extra entries for ``run_dir``'s ``config.json`` (the CLI's dataset and command).
      where: the name error messages start with (the CLI passes its command).

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
        ``checkpoint_dir``, ``resume`` with ``overwrite``, ``run_dir`` with
        ``checkpoint_dir`` or ``distributed``.
      DistributedInitError: the coordinator could not be reached.
      FileNotFoundError: ``resume`` with no checkpoint in ``checkpoint_dir``.
      RunExists: a checkpoint in ``checkpoint_dir``, and neither ``resume`` nor ``overwrite``.
      RunDirError, OSError: ``run_dir`` locked by another process, or a file
        there that cannot be written (:class:`~jaxlayers.training.rundir.RunDir`).
      CheckpointError: a checkpoint that is corrupt or from another run.
      NonFiniteLossError: a NaN or infinite loss; the message names the step
        and the last checkpoint, which is left intact.
      TrainingInterrupted: SIGINT or SIGTERM (see above).
      InsufficientMemoryError: parameters, optimizer state and activations
        (estimated with ``jax.eval_shape``, before anything is allocated)
        exceed the device's available memory.
    """
    config = _check_model_and_config([model], config, where)
    require(
        checkpoint_dir is None or run_dir is None,
        where,
        "give run_dir or checkpoint_dir, not both (run_dir holds the checkpoint)",
    )
    require(
        distributed is None or run_dir is None,
        where,
        "run_dir with distributed: use the CLI (--coordinator) or checkpoint_dir",
    )
    if distributed is not None:
        initialize_distributed(distributed)
        mesh = make_data_mesh() if mesh is None else mesh
    desc = str(getattr(data, "name", "") or "fit") if not isinstance(data, dict) else "fit"
    data = preflight(model, data, config, mesh=mesh, where=where, optimizer=optimizer)
    steps = steps_per_epoch(np.shape(data.y_train)[0], config.batch_size)
    optimizer = make_optimizer(config, steps) if optimizer is None else optimizer
    kw = {"steps": steps, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
          "augment": config.augment}  # fmt: skip
    strategy = SingleDevice(model, optimizer, **kw) if mesh is None else DataMesh(model, optimizer, mesh=mesh, **kw)
    plan = _Plan("fit", strategy, (model,), (config,), data, optimizer, steps, where, mesh)
    hooks = [
        None if run_dir is None else RunDir(run_dir, resume=resume, record=record, where=where),
        callback,
        *callbacks,
        ProgressBar(desc) if verbose else None,
    ]
    directory = run_dir if run_dir is not None else checkpoint_dir
    result = _train(plan, Callbacks(hooks, where), directory, resume=resume, overwrite=overwrite)
    if mesh is not None:  # best as local arrays, usable in any process
        result.best_params, result.best_model_state = jax.tree.map(
            jnp.asarray, host_copy((result.best_params, result.best_model_state))
        )
    return result


def _check_model_and_config(models, config, where: str) -> TrainConfig:
    """``config`` (``None``: the defaults) once the models have the protocol and it is a ``TrainConfig``."""
    for m in models:
        check_model(m, where)
    config = TrainConfig() if config is None else config
    check_instance(config, where, "config", TrainConfig)
    return config


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


def _sweep_values(name: str, values, where: str) -> list | None:
    if values is None:
        return None
    require(
        not isinstance(values, str | bytes) and isinstance(values, Sequence | np.ndarray),
        where,
        f"{name} must be a sequence of per-model values, got {type(values).__name__}",
        TypeError,
    )
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    require(bool(values), where, f"{name} is empty; give one value per model")
    return values


def _replace_model(model, fields: dict, where: str):
    """``model`` with ``fields`` changed: ``dataclasses.replace`` for a dataclass (the built-in
    models), else the model's own ``replace(**fields)`` (:meth:`jaxlayers.nn.Sequential.replace`)."""
    if dataclasses.is_dataclass(model):
        require(
            all(f in {x.name for x in dataclasses.fields(model)} for f in fields),
            where,
            f"{type(model).__name__} has no field(s) {sorted(fields)} to sweep",
            TypeError,
        )
        return dataclasses.replace(model, **fields)
    replace = getattr(model, "replace", None)
    require(
        callable(replace),
        where,
        f"{type(model).__name__} has no field(s) {sorted(fields)} to sweep (it is neither a dataclass nor has "
        "a replace(**fields) method); pass a list of models instead",
        TypeError,
    )
    return replace(**fields)


def _sweep_models(base_models: list, config: TrainConfig, lists: dict, where: str) -> tuple[list, list]:
    """The ``K`` models and configs of a sweep: base model (or model ``k``) and ``config`` with each list's
    ``k``-th value set."""
    given = {name: len(v) for name, v in lists.items() if v is not None}
    if len(base_models) > 1:
        given = {"models": len(base_models), **given}
    require(bool(given), where, f"give at least one of {', '.join(SWEPT)} (one value per model), or a list of models")
    require(len(set(given.values())) == 1, where, f"the swept lists must have one length, got {given}")
    models, configs = [], []
    for k in range(next(iter(given.values()))):
        m = base_models[k if len(base_models) > 1 else 0]
        fields = {"model": {}, "config": {}}
        for name, (target, field) in SWEPT.items():
            if lists[name] is not None:
                fields[target][field] = lists[name][k]
        try:
            if fields["model"]:
                m = _replace_model(m, fields["model"], where)
            configs.append(dataclasses.replace(config, **fields["config"]))
        except (ValueError, TypeError) as e:
            raise type(e)(f"{where}: model {k}: {e}") from None
        models.append(m)
    return models, configs


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
    callbacks: Sequence = (),
    where: str = "fit_many",
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
      callbacks, where: as :func:`fit`.
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
    config = _check_model_and_config(base_models, config, where)
    values = (seeds, weight_scales, learning_rates, dropout_rates, regs)
    lists = {name: _sweep_values(name, v, where) for name, v in zip(SWEPT, values, strict=True)}
    models, configs = _sweep_models(base_models, config, lists, where)
    data = preflight(models[0], data, config, num_models=len(models), where=where, optimizer=optimizer)
    steps = steps_per_epoch(np.shape(data.y_train)[0], config.batch_size)
    optimizer = make_optimizer(config, steps) if optimizer is None else optimizer
    kw = {"steps": steps, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
          "augment": config.augment}  # fmt: skip
    strategy = ManyModels(models, optimizer, **kw)
    plan = _Plan("fit_many", strategy, tuple(models), tuple(configs), data, optimizer, steps, where,
                 per_model_lr=learning_rates is not None)  # fmt: skip
    hooks = Callbacks([callback, *callbacks], where)
    return _train(plan, hooks, checkpoint_dir, resume=resume, overwrite=overwrite)
