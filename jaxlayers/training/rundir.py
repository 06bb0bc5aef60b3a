"""The run directory: what ``jaxlayers train`` and ``fit(..., run_dir=)`` leave behind, written in one place.

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
import sys
import time
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import require
from jaxlayers.model import model_record
from jaxlayers.parallel import host_copy
from jaxlayers.training.checkpoint import (
    CHECKPOINT_NAME,
    RunDirError,
    RunExists,
    atomic_write,
    check_checkpoint_target,
    read_checkpoint_metadata,
)
from jaxlayers.training.config import TrainConfig
from jaxlayers.training.loop import check_resume_metadata, evaluate, fit_checked, preflight, run_info
from jaxlayers.training.loop import fit as _fit
from jaxlayers.training.plots import plot_history
from jaxlayers.training.results import EpochReport, FitResult, History, TrainingInterrupted
from jaxlayers.training.signals import DeferredSignals

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "RunDirError",
    "RunDirInUse",
    "RunDirLock",
    "RunExists",
    "fit",
    "prepare_run_dir",
    "remove_stale_temp_files",
    "train_run",
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


def _metrics_line(epoch: int, steps_per_epoch: int, loss: float, train_acc, val_acc, lr, seconds: float) -> str:
    return json.dumps(
        {
            "epoch": epoch,
            "step": epoch * steps_per_epoch,
            "loss": loss,
            "train_acc": float(train_acc),
            "val_acc": float(val_acc),
            "lr": float(lr),
            "epoch_time_s": float(seconds),
        }
    )


def _metrics_from_history(history: History, steps_per_epoch: int) -> str:
    lines = []
    for e in range(history.epochs):
        losses = np.asarray(history.loss[e * steps_per_epoch : (e + 1) * steps_per_epoch], np.float64)
        loss = float(losses.mean()) if losses.size else float("nan")
        lines.append(
            _metrics_line(
                e + 1,
                steps_per_epoch,
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


def train_run(
    model,
    data,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[EpochReport], None] | None = None,
    mesh=None,
    record: dict[str, Any] | None = None,
    on_start: Callable[[int], None] | None = None,
    where: str = "fit",
    optimizer=None,
    checked: bool = False,
) -> tuple[FitResult, dict[str, Any]]:
    """Train ``model`` with :func:`jaxlayers.training.loop.fit` and write the run directory's five files.

    In order, before anything is written: the run's checks
    (:func:`~jaxlayers.training.loop.preflight`: data, batch size, mesh,
    memory; a refused run creates no directory), then the directory is
    created and locked, stale temporary files are removed, and a resume is
    checked against the checkpoint (a refused resume writes nothing); a fresh
    run in a directory that holds a run is refused unless ``overwrite``
    (:func:`~jaxlayers.training.checkpoint.check_checkpoint_target`, the rule
    ``fit(checkpoint_dir=)`` follows too).

    Args:
      model, data, config, mesh, optimizer: as :func:`~jaxlayers.training.loop.fit`.
      run_dir: the run directory.
      resume: continue the checkpointed run there.
      overwrite: replace a run the directory holds (its five files are deleted first).
      callback: called after every epoch (after the metrics line's checkpoint was submitted).
      record: extra entries for ``config.json`` (the CLI's dataset name and command).
      on_start: called with the epoch training starts from, once the checks passed.
      where: the name in error messages.
      checked: the caller ran :func:`~jaxlayers.training.loop.preflight` on these
        arguments already (``data`` is its result); it is not run again.

    Returns:
      ``(result, summary)``: the :class:`FitResult` and the ``summary.json`` contents.

    Raises:
      RunDirError: the directory is locked by another process, or holds a run
        and neither ``resume`` nor ``overwrite`` was given.
      FileNotFoundError: ``resume`` and no checkpoint.
      CheckpointError: a checkpoint that is corrupt, foreign, or of another run.
      OSError: a file that cannot be written, naming it.
      TrainingInterrupted: SIGINT / SIGTERM (the metrics and checkpoint hold
        every completed epoch).
      and what :func:`~jaxlayers.training.loop.fit` raises.
    """
    t_start = time.perf_counter()
    if resume and overwrite:
        check_checkpoint_target(None, resume=resume, overwrite=overwrite, where=where)
    if not checked:
        data = preflight(model, data, config, mesh=mesh, where=where, optimizer=optimizer)
    out = prepare_run_dir(run_dir, where)
    ckpt = out / CHECKPOINT_NAME
    with RunDirLock(out):
        remove_stale_temp_files(out)
        _check_config_json(out)
        # A fresh run over a checkpoint needs overwrite; a resume needs one (files without a
        # checkpoint: a run stopped before its first epoch, nothing to keep).
        check_checkpoint_target(out, resume=resume, overwrite=overwrite, where=where)
        n_train = int(np.shape(data.y_train)[0])
        steps = n_train // config.batch_size
        history0 = None
        if resume:
            meta = read_checkpoint_metadata(ckpt)
            check_resume_metadata(meta, run_info("fit", [model], [config], data, optimizer))
            history0 = History.from_dict(meta["history"])
        else:
            present = [name for name in RUN_FILES if (out / name).exists()]
            derived = [name for name in DERIVED_FILES if (out / name).exists()]  # of the old run's model
            for name in present + derived:
                try:
                    (out / name).unlink()
                except OSError as e:
                    raise _os_error(e, out / name, "remove") from e
        start = history0.epochs if history0 is not None else 0
        if on_start is not None:
            on_start(start)

        devices = 1 if mesh is None else int(mesh.devices.size)
        run_config = {
            **(record or {}),
            "model": model_record(model),
            "train": config.to_dict(),
            **({} if optimizer is None else {"optimizer": "an optax optimizer given to fit (optimizer=)"}),
            "splits": {
                k: int(np.shape(getattr(data, f"y_{k}"))[0])
                for k in ("train", "val", "test")
                if hasattr(data, f"y_{k}")
            },
            "versions": {"jaxlayers": _version(), "jax": jax.__version__},
            "backend": jax.default_backend(),
            "devices": devices,
            "processes": jax.process_count(),
            "note": "a record of the run; the checkpoint, not this file, is read on resume",
        }
        _write(out / "config.json", (json.dumps(run_config, indent=2) + "\n").encode())
        metrics = out / "metrics.jsonl"
        _write(metrics, _metrics_from_history(history0, steps).encode() if history0 is not None else b"")

        def on_checkpoint(r: EpochReport) -> None:  # on the writer thread, once epoch r.epoch is on disk
            _append(metrics, _metrics_line(r.epoch, steps, r.loss, r.train_acc, r.val_acc, r.lr, r.epoch_time_s) + "\n")

        t_fit = time.perf_counter()
        result = fit_checked(
            model, data, config, checkpoint_dir=out, resume=resume, overwrite=not resume, callback=callback,
            mesh=mesh, on_checkpoint=on_checkpoint, optimizer=optimizer,
        )  # fmt: skip
        fit_time = time.perf_counter() - t_fit
        with DeferredSignals() as stop:  # no signal may raise while the evaluation below compiles
            summary = _finish(out, model, data, result, mesh, fit_time=fit_time, t_start=t_start, start=start)
        if stop.received is not None:
            raise TrainingInterrupted(
                f"{where}: signal {stop.received} received after training ended; the run directory is complete",
                signum=stop.received,
                epoch=summary["epochs"],
                checkpoint=ckpt,
            )
    return result, summary


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
    distributed=None,
    optimizer=None,
) -> FitResult:
    """:func:`jaxlayers.training.loop.fit`, plus a run directory and a progress bar.

    Args:
      run_dir: write the run directory there -- ``config.json``,
        ``metrics.jsonl``, ``curves.png``, ``checkpoint.safetensors``,
        ``summary.json`` -- exactly as ``jaxlayers train -o run_dir`` does
        (one implementation: :func:`train_run`). It takes the place of
        ``checkpoint_dir``.
      overwrite: replace a run that ``run_dir`` (or ``checkpoint_dir``) holds;
        without it a fresh run there is refused (:class:`RunExists`), as
        ``jaxlayers train`` refuses without ``--overwrite``.
      verbose: the CLI's progress bar (tqdm, on stderr), one step per epoch.
      model, data, config, checkpoint_dir, resume, callback, mesh, distributed: as
        :func:`jaxlayers.training.loop.fit`.

    Returns:
      The :class:`FitResult`.

    Raises:
      ValueError: ``run_dir`` together with ``checkpoint_dir``.
      RunDirError, OSError: as :func:`train_run`.

    And what :func:`jaxlayers.training.loop.fit` raises.
    """
    config = TrainConfig() if config is None else config
    bar = None
    user_callback = callback

    def start_bar(start: int) -> None:
        nonlocal bar
        if verbose and bar is None:
            from tqdm.auto import tqdm  # lazy: only verbose runs need it

            name = str(getattr(data, "name", "") or "fit") if not isinstance(data, dict) else "fit"
            bar = tqdm(total=config.epochs, initial=min(start, config.epochs), unit="epoch", desc=name, file=sys.stderr)

    def on_epoch(r: EpochReport) -> None:
        if bar is not None:
            bar.set_postfix(
                loss=f"{r.loss:.4f}", train_acc=f"{r.train_acc:.4f}", val_acc=f"{r.val_acc:.4f}", refresh=False
            )
            bar.update(1)
        if user_callback is not None:
            user_callback(r)

    try:
        if run_dir is not None:
            require(
                checkpoint_dir is None, "fit", "give run_dir or checkpoint_dir, not both (run_dir holds the checkpoint)"
            )
            require(
                distributed is None, "fit", "run_dir with distributed: use the CLI (--coordinator) or checkpoint_dir"
            )
            result, _ = train_run(
                model, data, config, run_dir, resume=resume, overwrite=overwrite, callback=on_epoch, mesh=mesh,
                on_start=start_bar, optimizer=optimizer,
            )  # fmt: skip
            return result
        if verbose and resume and checkpoint_dir is not None:
            with contextlib.suppress(Exception):  # the loop reports a bad checkpoint
                start_bar(read_checkpoint_metadata(Path(checkpoint_dir) / CHECKPOINT_NAME)["epoch"])
        start_bar(0)
        return _fit(
            model, data, config, checkpoint_dir=checkpoint_dir, resume=resume, overwrite=overwrite, callback=on_epoch,
            mesh=mesh, distributed=distributed, optimizer=optimizer,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
