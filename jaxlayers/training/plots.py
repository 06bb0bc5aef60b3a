"""Plots of a training history: :func:`plot_history` (matplotlib's object API, Agg canvas)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jaxlayers.training.checkpoint import atomic_write
from jaxlayers.training.results import History

__all__ = ["plot_history"]


def plot_history(
    history: History,
    path: str | os.PathLike | None = None,
    *,
    steps_per_epoch: int,
    best_epoch: int | None = None,
    title: str = "",
):
    """Two panels: the training loss per iteration, and train/val accuracy per epoch.

    Uses matplotlib's object API with the Agg canvas, so it needs no display
    and leaves pyplot's global state and backend alone.

    Args:
      history: a :class:`History` (e.g. ``fit(...).history``).
      path: where to save a PNG (written atomically); ``None``: do not save.
      steps_per_epoch: iterations per epoch (draws the per-epoch mean loss).
      best_epoch: marks this epoch (from 1; ``FitResult.best_epoch``); ``None``: no mark.
      title: a title above both panels.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    loss = np.asarray(history.loss, dtype=np.float64)
    its = np.arange(1, loss.size + 1)
    ax_loss.plot(its, loss, color="tab:blue", alpha=0.35, linewidth=0.8, label="per iteration")
    n_epochs = len(history.val_acc)
    if steps_per_epoch > 0 and n_epochs and loss.size >= n_epochs * steps_per_epoch:
        per_epoch = loss[: n_epochs * steps_per_epoch].reshape(n_epochs, steps_per_epoch).mean(axis=1)
        ax_loss.plot(
            np.arange(1, n_epochs + 1) * steps_per_epoch, per_epoch, color="tab:blue", marker=".", label="epoch mean"
        )
    if loss.size and np.all(loss > 0) and loss.max() / loss.min() > 50:
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (data + L2)")
    ax_loss.set_title("Training loss")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend()

    epochs = np.arange(1, n_epochs + 1)
    ax_acc.plot(epochs, history.train_acc, marker=".", label="train (running, train mode)")
    ax_acc.plot(epochs, history.val_acc, marker=".", label="validation")
    if best_epoch:
        ax_acc.axvline(best_epoch, color="gray", linestyle=":", label=f"best val (epoch {best_epoch})")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("Train / validation accuracy")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write(Path(path), buf.getvalue())
    return fig
