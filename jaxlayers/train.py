"""Training, the public face: ``jl.train.fit``, ``fit_many``, ``evaluate`` and the pieces they are made of.

The pieces, smallest first (each in its own module of :mod:`jaxlayers.training`):

* :class:`TrainConfig`, :func:`make_optimizer` -- how to train; the optax
  optimizer keeps the learning rate in its state (``inject_hyperparams``).
* :class:`TrainState`, :func:`init_train_state`, :func:`make_train_step` --
  everything that changes while training, and one jit-compiled step; each
  compiled once per (model structure, optimizer). ``make_train_step(...,
  flat=True)`` (:class:`FlatTrainStep`, :class:`FlatLayout`) steps a packed
  state whose parameters and optimizer moments are one vector each: the same
  update in a few kernels (faster for small networks' bare steps).
* :func:`run_epoch` -- the one pure epoch function (shuffle, ``lax.scan`` of
  the step over the minibatches gathered on device, validation count, best
  epoch), which every strategy compiles: one device, ``K`` models vmapped
  (:func:`fit_many`), a device mesh (``fit(..., mesh=)``).
* :func:`fit`, :func:`fit_many`, :func:`evaluate` -- the one host loop in
  the manner of the course's ``Solver``: history, the best parameters by
  validation accuracy, a checkpoint after every epoch, bitwise-exact resume.
* :class:`Callback`, :class:`RunStart` -- what the loop calls around its
  epochs (``fit(..., callbacks=[...])``): ``on_start``, ``on_epoch``,
  ``on_checkpoint``, ``on_end``. The run directory ``jaxlayers train``
  writes (``fit(..., run_dir=)``, :class:`RunDir`) and the progress bar
  (``verbose=True``, :class:`ProgressBar`) are such callbacks.
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`atomic_write`,
  :func:`plot_history`.
* :func:`load_run` -- after training: a run back in one call, as a
  :class:`Run` that predicts and evaluates on raw inputs.

Any model of the model protocol (:mod:`jaxlayers.model`) trains here.
"""

from __future__ import annotations

from jaxlayers.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from jaxlayers.training.config import OPTIMIZERS, TrainConfig, make_optimizer
from jaxlayers.training.epoch import run_epoch
from jaxlayers.training.evaluation import bits_per_token, evaluate
from jaxlayers.training.hooks import Callback, ProgressBar, RunStart
from jaxlayers.training.loop import fit, fit_many
from jaxlayers.training.plots import plot_history
from jaxlayers.training.results import EpochReport, FitResult, History, NonFiniteLossError, TrainingInterrupted
from jaxlayers.training.run import Preprocessing, Run, load_run
from jaxlayers.training.rundir import RUN_FILES, RunDir, RunDirError
from jaxlayers.training.state import (
    FLAT_MAX_SIZE,
    FlatLayout,
    FlatTrainStep,
    TrainState,
    init_train_state,
    make_train_step,
)

__all__ = [
    "CHECKPOINT_NAME",
    "FLAT_MAX_SIZE",
    "OPTIMIZERS",
    "Callback",
    "CheckpointError",
    "EpochReport",
    "FlatLayout",
    "FlatTrainStep",
    "FitResult",
    "History",
    "NonFiniteLossError",
    "Preprocessing",
    "ProgressBar",
    "Run",
    "RUN_FILES",
    "RunDir",
    "RunDirError",
    "RunStart",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "atomic_write",
    "bits_per_token",
    "evaluate",
    "fit",
    "fit_many",
    "init_train_state",
    "load_checkpoint",
    "load_run",
    "make_optimizer",
    "make_train_step",
    "plot_history",
    "read_checkpoint_metadata",
    "run_epoch",
    "save_checkpoint",
]
