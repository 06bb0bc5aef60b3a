"""The run directory: what ``jaxlayers train`` and ``fit(..., run_dir=)`` leave behind, written by one
callback of the loop, :class:`RunDir`.

A run directory holds five files:

* ``config.json`` -- a record of the run (model, training configuration,
  data, versions, devices). It is never read back: on resume the checkpoint
  is the source of truth.
* ``metrics.jsonl`` -- one line per epoch, appended once that epoch's
  checkpoint is on disk, so it never lists an epoch the checkpoint lacks; on
  resume it is rewritten from the checkpoint's history first.
* ``curves.png``, ``summary.json`` -- written when training ends.
* ``checkpoint.safetensors`` -- :mod:`jaxlayers.training.checkpoint`.

One process writes a run directory at a time: :class:`RunDirLock` takes an
exclusive ``flock`` on ``.lock`` inside it (holding the owner's pid) and a
second writer is refused, naming that pid. A fresh run does not replace a
finished or resumable one unless asked (``overwrite=True``). Temporary files
that a killed atomic write left (``.<name>.*.tmp``) are removed on start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import require
from jaxlayers.model import model_record
from jaxlayers.parallel import host_copy
from jaxlayers.training.checkpoint import RunDirError, RunExists, atomic_write
from jaxlayers.training.evaluation import evaluate
from jaxlayers.training.hooks import Callback, RunStart
from jaxlayers.training.plots import plot_history
from jaxlayers.training.results import EpochReport, FitResult, History

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "RunDirError",
    "RunDirInUse",
    "RunDir",
    "RunDirLock",
    "RunExists",
    "prepare_run_dir",
    "remove_stale_temp_files",
]

RUN_FILES = ("config.json", "metrics.jsonl", "curves.png", "checkpoint.safetensors", "summary.json")
# Written into the run directory after training (`jaxlayers evaluate`); a fresh run removes them with the run.
DERIVED_FILES = ("confusion.png",)
LOCK_NAME = ".lock"


class RunDirInUse(RunDirError):
    """Another process holds the run directory's lock."""


def _version() -> str:
    try:
        return importlib_metadata.version("jaxlayers")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _os_error(e: OSError, path: Path, doing: str) -> OSError:
    """``e`` as an ``OSError`` of the same errno whose message names ``path`` and what was being done."""
    return OSError(e.errno, f"cannot {doing} {path}: {e.strerror or e}", str(path))


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as e:
        raise _os_error(e, path, "write") from e


class RunDirLock:
    """An exclusive lock on a run directory: ``flock`` on its ``.lock`` file, which holds the owner's pid.

    A context manager; the lock file is removed on release. Taking it never
    blocks.

    Raises:
      RunDirError: another process holds the lock (the message names its pid).
      OSError: the lock file cannot be created (read-only file system, permissions).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise _os_error(e, self.path, "create the lock file") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise RunDirInUse(
                    f"{self.path.parent} is in use by another jaxlayers run (pid {pid}, lock {self.path}); "
                    "wait for it to finish or choose another output directory"
                ) from None
            # The holder before us may have removed the file after we opened it: lock the file that is there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)  # releases the flock
            self._fd = None


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed atomic write of a run file left in ``run_dir`` (``.<name>.*.tmp``).

    Only names of that pattern for the five run files are touched. Call it
    with the directory locked (a live writer's temporary file matches too).

    Returns:
      The removed paths.
    """
    removed = []
    for name in RUN_FILES:
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def prepare_run_dir(run_dir: str | os.PathLike, where: str = "run_dir") -> Path:
    """``run_dir`` as a ``Path``, created if needed.

    Raises:
      ValueError: an empty path.
      NotADirectoryError: the path, or a folder on the way to it, is a file.
      OSError: it cannot be created (permissions, read-only file system,
        no space), naming the path.
    """
    require(str(run_dir) != "", where, "the run directory is an empty path; give a directory such as runs/mine")
    out = Path(run_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{out} is a file, not a directory", str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error(e, out, "create the run directory") from e
    return out


def _metrics_line(epoch: int, steps: int, loss: float, train_acc, val_acc, lr, seconds: float) -> str:
    return json.dumps(
        {
            "epoch": epoch,
            "step": epoch * steps,
            "loss": loss,
            "train_acc": float(train_acc),
            "val_acc": float(val_acc),
            "lr": float(lr),
            "epoch_time_s": float(seconds),
        }
    )


def _metrics_from_history(history: History, steps: int) -> str:
    lines = []
    for e in range(history.epochs):
        losses = np.asarray(history.loss[e * steps : (e + 1) * steps], np.float64)
        loss = float(losses.mean()) if losses.size else float("nan")
        lines.append(
            _metrics_line(
                e + 1,
                steps,
                loss,
                history.train_acc[e],
                history.val_acc[e],
                history.lr[e],
                history.epoch_time_s[e],
            )
            + "\n"
        )
    return "".join(lines)


def _append(path: Path, text: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _os_error(e, path, "append to") from e


def _check_config_json(out: Path) -> None:
    if (out / "config.json").is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{out / 'config.json'} is a directory", str(out / "config.json"))


class RunDir(Callback):
    """The run directory as a callback of the loop: ``fit(..., run_dir=)`` and ``jaxlayers train`` add one.

    Entered (a context manager) before the loop looks at the checkpoint: the directory is created (a
    resume into a missing directory creates nothing; the loop then refuses it), locked
    (:class:`RunDirLock`) and cleared of stale temporary files. Then ``on_start`` removes the files of
    the run a fresh run replaces and writes ``config.json`` and ``metrics.jsonl`` (on resume, the
    checkpoint's epochs); ``on_checkpoint`` appends an epoch's metrics line once its checkpoint is on
    disk; ``on_end`` evaluates the best and last parameters and writes ``curves.png`` and
    ``summary.json`` (:attr:`summary`). The lock is released on exit, whatever happened.

    Args:
      path: the directory.
      resume: the run continues the checkpoint there.
      record: extra entries for ``config.json`` (the CLI's dataset name and command).
      where: the name in error messages.

    Raises:
      ValueError: an empty path.
      NotADirectoryError, IsADirectoryError: a file where the directory (or ``config.json``, a
        directory where the file) should be.
      RunDirInUse: another process holds the lock.
      OSError: a file that cannot be written, naming it.
    """

    def __init__(self, path, *, resume: bool = False, record: dict[str, Any] | None = None, where: str = "fit"):
        require(str(path) != "", where, "the run directory is an empty path; give a directory such as runs/mine")
        self.path, self.resume, self.record, self.where = Path(path), resume, record, where
        self.summary: dict[str, Any] | None = None
        self._lock: RunDirLock | None = None
        self._t_start = time.perf_counter()

    def __enter__(self) -> RunDir:
        self._t_fit = time.perf_counter()
        if self.resume and not self.path.is_dir():
            return self  # nothing to resume, nothing to create: the checkpoint check refuses it
        out = prepare_run_dir(self.path, self.where)
        self._lock = RunDirLock(out).__enter__()
        remove_stale_temp_files(out)
        _check_config_json(out)
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    def on_start(self, start: RunStart) -> None:
        out = self.path
        if not self.resume:  # the run it replaces (the loop allowed it: overwrite, or no checkpoint)
            for name in [n for n in RUN_FILES + DERIVED_FILES if (out / n).exists()]:
                try:
                    (out / name).unlink()
                except OSError as e:
                    raise _os_error(e, out / name, "remove") from e
        self._start, self._steps = start, start.steps_per_epoch
        _write(out / "config.json", (json.dumps(_run_config(start, self.record), indent=2) + "\n").encode())
        history = start.history
        self._metrics = out / "metrics.jsonl"
        _write(self._metrics, _metrics_from_history(history, self._steps).encode() if history is not None else b"")

    def on_checkpoint(self, r: EpochReport) -> None:  # on the writer thread, once epoch r.epoch is on disk
        line = _metrics_line(r.epoch, self._steps, r.loss, r.train_acc, r.val_acc, r.lr, r.epoch_time_s)
        _append(self._metrics, line + "\n")

    def on_end(self, result: FitResult) -> None:
        fit_time = time.perf_counter() - self._t_fit
        start = self._start
        self.summary = _finish(
            self.path, start.models[0], start.data, result, start.mesh,
            fit_time=fit_time, t_start=self._t_start, start=start.epoch,
        )  # fmt: skip


def _run_config(start: RunStart, record: dict[str, Any] | None) -> dict[str, Any]:
    """``config.json``: a record of the run (never read back)."""
    data = start.data
    return {
        **(record or {}),
        "model": model_record(start.models[0]),
        "train": start.configs[0].to_dict(),
        **({"optimizer": "an optax optimizer given to fit (optimizer=)"} if start.optimizer_given else {}),
        "splits": {
            k: int(np.shape(getattr(data, f"y_{k}"))[0]) for k in ("train", "val", "test") if hasattr(data, f"y_{k}")
        },
        "versions": {"jaxlayers": _version(), "jax": jax.__version__},
        "backend": jax.default_backend(),
        "devices": 1 if start.mesh is None else int(start.mesh.devices.size),
        "processes": jax.process_count(),
        "note": "a record of the run; the checkpoint, not this file, is read on resume",
    }


def _finish(out: Path, model, data, result: FitResult, mesh, *, fit_time: float, t_start: float, start: int) -> dict:
    """Evaluate, plot and write ``curves.png`` and ``summary.json``; the summary."""
    splits = [s for s in ("train", "val", "test") if hasattr(data, f"X_{s}") and hasattr(data, f"y_{s}")]
    accs = {
        s: evaluate(
            model, result.best_params, result.best_model_state, getattr(data, f"X_{s}"), getattr(data, f"y_{s}")
        )
        for s in splits
    }
    last = (result.state.params, result.state.model_state)
    if mesh is not None:  # arrays on the mesh (maybe spanning processes) -> this process's copy
        last = jax.tree.map(jnp.asarray, host_copy(last))
    final = splits[-1]
    final_acc = evaluate(model, *last, getattr(data, f"X_{final}"), getattr(data, f"y_{final}"))
    _plot(out, model, data, result)
    times = result.history.epoch_time_s
    summary = {
        **{f"{k}_acc": v for k, v in accs.items()},
        f"final_{final}_acc": final_acc,
        "best_epoch": result.best_epoch,
        "epochs": int(result.history.epochs),
        "steps": len(result.history.loss),
        "steps_per_second": result.steps_per_second(),
        "first_epoch_s": float(times[start]) if len(times) > start else float("nan"),
        "fit_time_s": fit_time,
        "wall_time_s": time.perf_counter() - t_start,
        "resumed_from_epoch": result.start_epoch,
    }
    summary = {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}  # NaN -> null
    _write(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _plot(out: Path, model, data, result: FitResult) -> None:
    """``curves.png``: the history, titled with the dataset, the layer sizes and the optimizer."""
    title = str(getattr(data, "name", "") or "")
    dims = getattr(model, "layer_dims", None)
    if dims is not None:
        title = f"{title}: {'-'.join(map(str, dims))}".lstrip(": ")
    try:
        plot_history(
            result.history,
            out / "curves.png",
            steps_per_epoch=result.steps_per_epoch,
            best_epoch=result.best_epoch,
            title=f"{title}, {result.configs[0].optimizer}",
        )
    except OSError as e:
        raise _os_error(e, out / "curves.png", "write") from e
