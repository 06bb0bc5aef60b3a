"""What the one host loop calls around its epochs: the :class:`Callback` protocol, :class:`RunStart`,
:class:`ProgressBar`.

``fit`` and ``fit_many`` take ``callbacks=[...]``; each item is a plain function of the
:class:`~jaxlayers.training.results.EpochReport` (called after every epoch) or an object with any of
these methods (subclass :class:`Callback` for no-op defaults):

* ``on_start(start: RunStart)`` -- every check passed (data, memory, checkpoint, resume); nothing has
  trained yet. ``start.epoch`` is the epoch training starts from (the checkpoint's on resume).
* ``on_epoch(report: EpochReport)`` -- after each epoch, once its checkpoint was handed to the writer.
* ``on_checkpoint(report: EpochReport)`` -- on the checkpoint writer's thread, once that epoch's
  checkpoint is on disk (needs a checkpoint directory).
* ``on_end(result: FitResult)`` -- training ended normally (not on an error or a signal).

An item that is also a context manager is entered before the loop looks at the checkpoint, and exited
when ``fit`` returns or raises (the run directory holds its lock that way; the progress bar closes).
The run directory (:class:`jaxlayers.training.rundir.RunDir`), the progress bar and the metrics file
are callbacks of this protocol, not wrappers around the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jaxlayers.training.results import EpochReport, FitResult, History

__all__ = ["Callback", "Callbacks", "ProgressBar", "RunStart"]


@dataclasses.dataclass(frozen=True)
class RunStart:
    """What ``on_start`` receives: the run, once every check passed.

    Attributes:
      kind: ``"fit"`` or ``"fit_many"``.
      models, configs: the models and their ``TrainConfig``s (one each for ``fit``).
      data: the checked dataset.
      steps_per_epoch: ``N_train // batch_size``.
      epoch: the epoch training starts from (0, or the checkpoint's on resume).
      history: the checkpoint's history on resume, else ``None``.
      checkpoint: the checkpoint's path, or ``None`` (no checkpoints).
      mesh: the device mesh, or ``None``.
      optimizer_given: an optax optimizer was passed as ``optimizer=``.
    """

    kind: str
    models: tuple
    configs: tuple
    data: Any
    steps_per_epoch: int
    epoch: int
    history: History | None
    checkpoint: Path | None
    mesh: Any
    optimizer_given: bool


class Callback:
    """A base class with no-op hooks; override the ones you need (see the module docstring)."""

    def on_start(self, start: RunStart) -> None:
        """Every check passed; training starts from ``start.epoch``."""

    def on_epoch(self, report: EpochReport) -> None:
        """After each epoch."""

    def on_checkpoint(self, report: EpochReport) -> None:
        """On the checkpoint writer's thread, once the checkpoint of ``report.epoch`` is on disk."""

    def on_end(self, result: FitResult) -> None:
        """Training ended normally."""


class _EveryEpoch(Callback):
    def __init__(self, function: Callable[[EpochReport], None]) -> None:
        self.on_epoch = function


class Callbacks:
    """The loop's callbacks in order, called as one; a context manager entering those that are.

    Raises:
      TypeError: an item that is neither callable nor has any hook method.
    """

    _HOOKS = ("on_start", "on_epoch", "on_checkpoint", "on_end")

    def __init__(self, items: Iterable, where: str = "fit") -> None:
        self.items = [self._adopt(c, where) for c in items if c is not None]
        self._stack = contextlib.ExitStack()

    @classmethod
    def _adopt(cls, item, where: str):
        if any(callable(getattr(item, h, None)) for h in cls._HOOKS):
            return item
        if callable(item):
            return _EveryEpoch(item)
        raise TypeError(
            f"{where}: a callback must be a function of the EpochReport or have on_start, on_epoch, "
            f"on_checkpoint or on_end; got {type(item).__name__}"
        )

    def __enter__(self) -> Callbacks:
        with contextlib.ExitStack() as stack:
            for c in self.items:
                if hasattr(c, "__enter__") and hasattr(c, "__exit__"):
                    stack.enter_context(c)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._stack.__exit__(*exc)

    def _call(self, hook: str, arg) -> None:
        for c in self.items:
            f = getattr(c, hook, None)
            if callable(f):
                f(arg)

    def on_start(self, start: RunStart) -> None:
        self._call("on_start", start)

    def on_epoch(self, report: EpochReport) -> None:
        self._call("on_epoch", report)

    def on_end(self, result: FitResult) -> None:
        self._call("on_end", result)

    def on_checkpoint(self, report: EpochReport) -> None:
        self._call("on_checkpoint", report)

    @property
    def wants_checkpoints(self) -> bool:
        """Whether any item overrides ``on_checkpoint`` (else the writer has nothing to call)."""
        return any(
            callable(getattr(c, "on_checkpoint", None))
            and getattr(type(c), "on_checkpoint", None) is not Callback.on_checkpoint
            for c in self.items
        )


def _fit_postfix(r: EpochReport) -> dict[str, str]:
    return {"loss": f"{r.loss:.4f}", "train_acc": f"{r.train_acc:.4f}", "val_acc": f"{r.val_acc:.4f}"}


class ProgressBar(Callback):
    """A tqdm progress bar on stderr, one step per epoch (``fit(verbose=True)``, ``jaxlayers train``).

    Args:
      desc: the bar's label (the dataset's name).
      postfix: ``report -> {name: text}`` shown after the bar (default: loss, train and validation
        accuracy of one model).
    """

    def __init__(self, desc: str, postfix: Callable[[EpochReport], dict[str, str]] | None = None) -> None:
        self.desc = desc
        self.postfix = _fit_postfix if postfix is None else postfix
        self.bar = None

    def on_start(self, start: RunStart) -> None:
        from tqdm.auto import tqdm  # lazy: only runs that show a bar need it

        epochs = start.configs[0].epochs
        self.bar = tqdm(total=epochs, initial=min(start.epoch, epochs), unit="epoch", desc=self.desc, file=sys.stderr)

    def on_epoch(self, report: EpochReport) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**self.postfix(report), refresh=False)
            self.bar.update(1)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
