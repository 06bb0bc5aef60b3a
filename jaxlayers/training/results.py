"""What training returns and reports: :class:`History`, :class:`EpochReport`, :class:`FitResult`.

One set of types for one model (``fit``) and for ``K`` models (``fit_many``):
with several models every per-model field has a leading model axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["EpochReport", "FitResult", "History", "NonFiniteLossError", "TrainingInterrupted"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the last checkpoint is left intact."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at an epoch boundary on SIGINT (Ctrl-C) or SIGTERM.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C keeps doing so. It is
    raised from ordinary Python code after the running epoch finished, its
    checkpoint was written and the checkpoint writer was shut down: no
    compiled computation or writer thread is left running.

    Attributes:
      signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
      epoch: the last completed epoch (0: none).
      checkpoint: the checkpoint file holding ``epoch``, or ``None`` (no
        ``checkpoint_dir``, or no epoch completed).
    """

    def __init__(self, message: str, *, signum: int, epoch: int, checkpoint=None) -> None:
        super().__init__(message)
        self.signum, self.epoch, self.checkpoint = signum, epoch, checkpoint


@dataclasses.dataclass
class History:
    """What training records (float64 NumPy arrays; with ``K`` models, a leading model axis).

    Attributes:
      loss: ``(steps,)`` / ``(K, steps)``: the training loss (data + L2) of
        every step, in order; ``nan``/``inf`` from the step a model of a sweep
        diverged on.
      train_acc: ``(epochs,)`` / ``(K, epochs)``: the **running training
        accuracy**: the fraction of each epoch's minibatch examples that the
        model classified correctly *in train mode, at the step that trained
        on them* (dropout active, batch statistics), as Keras and Lightning
        report it. It costs nothing (the step's own scores), and trails a
        test-mode pass over the training set (``evaluate``) early in training.
      val_acc: ``(epochs,)`` / ``(K, epochs)``: test-mode accuracy on the
        whole validation set after each epoch.
      lr: ``(epochs,)`` / ``(K, epochs)``: each epoch's learning rate.
      epoch_time_s: ``(epochs,)``: wall seconds of each epoch (the first of a
        call includes compilation; a sweep's models share each epoch).
    """

    loss: np.ndarray
    train_acc: np.ndarray
    val_acc: np.ndarray
    lr: np.ndarray
    epoch_time_s: np.ndarray

    @classmethod
    def empty(cls, k: int | None = None) -> History:
        """No epochs yet; ``k``: a model axis of ``k`` (``None``: one model, no axis)."""
        lead = () if k is None else (k,)
        z = np.zeros((*lead, 0))
        return cls(z, z.copy(), z.copy(), z.copy(), np.zeros(0))

    def append(self, loss, train_acc, val_acc, lr, epoch_time_s: float) -> None:
        """Append one epoch (per-model arrays with the model axis where the history has one)."""
        axis = self.loss.ndim - 1
        self.loss = np.concatenate([self.loss, np.asarray(loss, np.float64)], axis=axis)
        for name, v in (("train_acc", train_acc), ("val_acc", val_acc), ("lr", lr)):
            setattr(self, name, np.concatenate([getattr(self, name), np.asarray(v, np.float64)[..., None]], axis=axis))
        self.epoch_time_s = np.append(self.epoch_time_s, float(epoch_time_s))

    @property
    def epochs(self) -> int:
        return self.val_acc.shape[-1]

    def to_dict(self) -> dict[str, list]:
        """JSON-ready lists (non-finite losses as ``None``)."""

        def clean(a):
            return [clean(r) for r in a] if a.ndim > 1 else [float(v) if np.isfinite(v) else None for v in a]

        return {f.name: clean(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> History:
        """Inverse of :meth:`to_dict`."""

        def arr(v):
            return np.asarray(np.array(v, dtype=object).astype(np.float64), np.float64)

        return cls(**{f.name: arr(d[f.name]) for f in dataclasses.fields(cls)})

    def select(self, k: int) -> History:
        """Model ``k``'s history (no model axis)."""
        return History(self.loss[k], self.train_acc[k], self.val_acc[k], self.lr[k], self.epoch_time_s.copy())


class EpochReport(NamedTuple):
    """Passed to the ``callback`` of ``fit`` / ``fit_many`` after each epoch (and its checkpoint).

    ``epoch`` counts from 1; ``loss`` is the epoch's mean step loss; with
    ``K`` models ``loss``, ``train_acc``, ``val_acc``, ``best_val_acc`` and
    ``lr`` are ``(K,)`` arrays, else floats; ``history`` is the whole history
    so far (do not mutate it).
    """

    epoch: int
    epochs: int
    steps: int
    loss: Any
    train_acc: Any
    val_acc: Any
    best_val_acc: Any
    lr: Any
    epoch_time_s: float
    history: History


@dataclasses.dataclass
class FitResult:
    """What ``fit`` (one model) and ``fit_many`` (``K`` models, a leading model axis) return.

    Attributes:
      models: the trained models, one per model (``fit``: one).
      configs: each model's ``TrainConfig`` (its own ``seed`` and ``learning_rate``).
      state: the final ``TrainState`` (stacked over the models for ``fit_many``).
      best_params, best_model_state: the parameters and running statistics
        of the epoch with the highest validation accuracy, as the course's
        ``Solver`` keeps them; on ties the later epoch.
      best_val_acc, best_epoch: that accuracy and its epoch (from 1); arrays
        ``(K,)`` for ``fit_many``.
      history: the :class:`History` of the whole run (resumed epochs included).
      start_epoch: epochs already done when this call began (> 0 on resume).
      steps_per_epoch: optimizer steps per epoch.
      many: whether the fields have a model axis (``fit_many``).
    """

    models: tuple
    configs: tuple
    state: Any
    best_params: Any
    best_model_state: Any
    best_val_acc: Any
    best_epoch: Any
    history: History
    start_epoch: int
    steps_per_epoch: int
    many: bool = False

    @property
    def model(self):
        """The model (``fit``), or the first model (``fit_many``)."""
        return self.models[0]

    def __len__(self) -> int:
        return len(self.models)

    @property
    def finite(self):
        """Whether every step's loss was finite (``(K,)`` bool for ``fit_many``)."""
        ok = np.all(np.isfinite(self.history.loss), axis=-1)
        return ok if self.many else bool(ok)

    def __getitem__(self, k: int) -> FitResult:
        """Model ``k`` of a ``fit_many`` result, as the result a separate ``fit`` returns.

        Raises:
          TypeError: on a ``fit`` result (it has no model axis).
          IndexError: ``k`` outside ``[-K, K)``.
        """
        if not self.many:
            raise TypeError("FitResult: indexing selects a model of a fit_many result; this is a single fit")
        k = range(len(self))[k]
        pick = lambda tree: jax.tree.map(lambda a: a[k], tree)  # noqa: E731
        return FitResult(
            models=(self.models[k],),
            configs=(self.configs[k],),
            state=pick(self.state),
            best_params=pick(self.best_params),
            best_model_state=pick(self.best_model_state),
            best_val_acc=float(self.best_val_acc[k]),
            best_epoch=int(self.best_epoch[k]),
            history=self.history.select(k),
            start_epoch=self.start_epoch,
            steps_per_epoch=self.steps_per_epoch,
        )

    def steps_per_second(self) -> float:
        """Steady-state throughput of this call (model-steps per second for ``fit_many``): steps /
        wall time over the epochs after its first (which includes compilation); ``nan`` if none."""
        times = self.history.epoch_time_s[self.start_epoch + 1 :]
        total = float(np.sum(times))
        return len(times) * self.steps_per_epoch * len(self) / total if len(times) and total > 0 else float("nan")

    def settings(self, k: int = 0) -> dict[str, Any]:
        """Model ``k``'s swept settings: ``seed``, ``learning_rate`` and, where the model has them,
        ``weight_scale``, ``dropout_rate``, ``reg``."""
        model, config = self.models[k], self.configs[k]
        out = {"seed": config.seed, "learning_rate": config.learning_rate}
        for name in ("weight_scale", "dropout_rate", "reg"):
            if hasattr(model, name):
                out[name] = getattr(model, name)
        return out

    def table(self) -> str:
        """One row per model: its settings, last-epoch loss and accuracies, best validation accuracy."""
        spe = self.steps_per_epoch
        loss = self.history.loss.reshape(len(self), -1)
        train = self.history.train_acc.reshape(len(self), -1)
        val = self.history.val_acc.reshape(len(self), -1)
        best_acc = np.atleast_1d(self.best_val_acc)
        best_ep = np.atleast_1d(self.best_epoch)
        head = f"{'k':>3} {'seed':>5} {'w scale':>8} {'lr':>9} {'dropout':>7} {'reg':>8} | "
        head += f"{'loss':>9} {'train':>6} {'val':>6} {'best val':>8} {'@ep':>4}"
        lines = [head, "-" * len(head)]
        for k in range(len(self)):
            st = self.settings(k)
            ws = st.get("weight_scale")
            ws = "He" if ws is None else f"{ws:.2e}"
            lines.append(
                f"{k:>3} {st['seed']:>5} {ws:>8} {st['learning_rate']:>9.3g} {st.get('dropout_rate', 0.0):>7.3g} "
                f"{st.get('reg', 0.0):>8.2g} | {float(np.mean(loss[k, -spe:])):>9.4g} {train[k, -1]:>6.3f} "
                f"{val[k, -1]:>6.3f} {best_acc[k]:>8.3f} {best_ep[k]:>4}"
            )
        return "\n".join(lines)
