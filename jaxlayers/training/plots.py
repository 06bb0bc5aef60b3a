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

__all__ = ["confusion_matrix", "plot_confusion", "plot_history"]


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
    _plot_loss(ax_loss, history, steps_per_epoch)
    _plot_accuracy(ax_acc, history, best_epoch)
    if title:
        fig.suptitle(title)
    _save_png(fig, path)
    return fig


def _plot_loss(ax, history: History, steps_per_epoch: int) -> None:
    """The loss per iteration and its per-epoch mean (a log scale when it spans more than 50x)."""
    loss = np.asarray(history.loss, dtype=np.float64)
    its = np.arange(1, loss.size + 1)
    ax.plot(its, loss, color="tab:blue", alpha=0.35, linewidth=0.8, label="per iteration")
    n_epochs = len(history.val_acc)
    if steps_per_epoch > 0 and n_epochs and loss.size >= n_epochs * steps_per_epoch:
        per_epoch = loss[: n_epochs * steps_per_epoch].reshape(n_epochs, steps_per_epoch).mean(axis=1)
        ax.plot(
            np.arange(1, n_epochs + 1) * steps_per_epoch, per_epoch, color="tab:blue", marker=".", label="epoch mean"
        )
    if loss.size and np.all(loss > 0) and loss.max() / loss.min() > 50:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (data + L2)")
    ax.set_title("Training loss")
    ax.grid(True, alpha=0.3)
    ax.legend()


def _plot_accuracy(ax, history: History, best_epoch: int | None) -> None:
    """Train and validation accuracy per epoch, the best epoch marked."""
    epochs = np.arange(1, len(history.val_acc) + 1)
    ax.plot(epochs, history.train_acc, marker=".", label="train (running, train mode)")
    ax.plot(epochs, history.val_acc, marker=".", label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="gray", linestyle=":", label=f"best val (epoch {best_epoch})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("Train / validation accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")


def _save_png(fig, path) -> None:
    """``fig`` as a PNG at ``path``, written atomically (nothing for ``None``)."""
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write(Path(path), buf.getvalue())


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: row = true label, column = predicted label.

    Raises:
      ValueError: labels outside ``[0, num_classes)`` or arrays of different lengths.
    """
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: {y_true.size} labels but {y_pred.size} predictions")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"confusion_matrix: {name} holds labels in [{y.min()}, {y.max()}], not in [0, {num_classes})"
            )
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def plot_confusion(matrix, path: str | os.PathLike | None = None, *, class_names=None, title: str = ""):
    """The confusion matrix as an image with counts (rows: true label, columns: predicted).

    Args:
      matrix: ``(C, C)`` counts (:func:`confusion_matrix`).
      path: where to save a PNG (written atomically); ``None``: do not save.
      class_names: a name per class for the axes, or ``None`` (the labels).
      title: a title.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    m = np.asarray(matrix)
    c = m.shape[0]
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
    size = min(3 + 0.45 * c, 14)
    fig = Figure(figsize=(size + 1, size), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if c <= 30:
        ax.set_xticks(range(c), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right")
        ax.set_yticks(range(c), names)
        threshold = m.max() / 2 if m.size else 0
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > threshold else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    _save_png(fig, path)
    return fig
