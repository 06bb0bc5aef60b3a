"""Checkpoints: one safetensors file per run, verified, written atomically.

The file holds tensors by name -- the training state and the best-so-far
parameters flattened with ``jax.tree_util`` key paths (``state.params['W1']``,
``best.params['W1']``, ...; PRNG keys as their uint32 key data) -- and, in the
safetensors metadata, the run's JSON description (format, models, configs,
data shapes, epoch, history, best epoch) and a SHA-256 digest over both. No
pickle anywhere. A load checks the header's size and tensor count before
parsing anything, then the digest, then the metadata, field by field
(:func:`check_run_metadata`). :func:`atomic_write` writes a temporary file in
the same directory, fsyncs it and renames it over the old one, so a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from jaxlayers.training.config import steps_per_epoch

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "CheckpointWriter",
    "RunDirError",
    "RunExists",
    "atomic_write",
    "check_checkpoint_target",
    "check_run_metadata",
    "checkpoint_tensors",
    "load_checkpoint",
    "load_checkpoint_trees",
    "read_checkpoint_metadata",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
FORMAT = "jaxlayers.train.checkpoint/2"

# Bounds checked on the raw header before anything is parsed, so that a hostile
# file cannot make a reader allocate gigabytes. The safetensors reader itself
# refuses headers over 100 MB; a run's header is the tensor table (about 100
# bytes a tensor) and the metadata (about 20 bytes a logged loss), a few MB
# for long sweeps. A network of L layers checkpoints about 20 L tensors (state,
# optimizer moments and best parameters), so no run comes near 100000.
MAX_HEADER_BYTES = 100_000_000
MAX_TENSORS = 100_000
KINDS = ("fit", "fit_many")
HISTORY_FIELDS = ("loss", "train_acc", "val_acc", "lr", "epoch_time_s")


class RunDirError(RuntimeError):
    """A run directory that this run may not write: in use by another process, or holding another run."""


class RunExists(RunDirError):
    """A fresh run was asked for in a directory that holds a run (neither resume nor overwrite)."""


def check_checkpoint_target(directory, *, resume: bool, overwrite: bool, where: str) -> Path | None:
    """The one rule for where a run may write its checkpoint (``fit``, ``fit_many``, ``jaxlayers train``).

    A fresh run does not replace a checkpoint that is there (a finished or
    resumable run) unless ``overwrite``; a resume needs one. Nothing is
    read beyond the checkpoint's epoch (for the message) and nothing is written.

    Args:
      directory: the checkpoint's directory, or ``None`` (no checkpoints: nothing to check but the flags).
      resume, overwrite: what the caller asked for; not both.
      where: the caller's name in messages; names starting with ``jaxlayers`` get
        the CLI's flags (``--resume``, ``--overwrite``) in them, others the keywords.

    Returns:
      The checkpoint's path (``None`` without ``directory``).

    Raises:
      ValueError: ``resume`` and ``overwrite`` together; ``resume`` without a directory.
      FileNotFoundError: ``resume`` and no checkpoint in ``directory``.
      RunExists: a fresh run, a checkpoint in ``directory`` and no ``overwrite``.
    """
    cli = where.startswith("jaxlayers")
    flag_resume, flag_overwrite = ("--resume", "--overwrite") if cli else ("resume=True", "overwrite=True")
    if resume and overwrite:
        raise ValueError(
            f"{where}: {flag_resume} continues the run and {flag_overwrite} replaces it; give one of them, not both"
        )
    if directory is None:
        if resume:
            raise ValueError(f"{where}: resume=True needs checkpoint_dir (or run_dir)")
        return None
    ckpt = Path(directory) / CHECKPOINT_NAME
    if resume:
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"{where}: {flag_resume}: no checkpoint at {ckpt}; run without {flag_resume} to start"
            )
    elif ckpt.exists() and not overwrite:  # a finished or resumable run
        try:
            held = f" (checkpoint at epoch {read_checkpoint_metadata(ckpt)['epoch']})"
        except Exception:  # a corrupt checkpoint is still a run to protect
            held = " (an unreadable checkpoint)"
        raise RunExists(
            f"{Path(directory)} already holds a run{held}; continue it with {flag_resume}, "
            f"or replace it with {flag_overwrite}"
        )
    return ckpt


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, tampered with, or for another run."""


def _flatten_named(prefix: str, tree) -> dict[str, np.ndarray]:
    """``{prefix + keystr(path): host copy}``; typed PRNG keys become their uint32 key data."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[prefix + jax.tree_util.keystr(path)] = np.array(leaf, copy=True)
    return out


def _unflatten_named(prefix: str, template, tensors: dict[str, np.ndarray], where: str):
    """Fill ``template``'s structure from ``tensors``; every name, shape and dtype must match."""
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        name = prefix + jax.tree_util.keystr(path)
        if name not in tensors:
            raise CheckpointError(
                f"{where}: tensor {name!r} is missing (checkpoint of a different network or optimizer?)"
            )
        arr = tensors[name]
        is_key = jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        want = jax.random.key_data(leaf) if is_key else leaf
        if arr.shape != want.shape or arr.dtype != want.dtype:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {arr.shape} and dtype {arr.dtype}, "
                f"expected {want.shape} and {want.dtype} for this network and optimizer"
            )
        leaves.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(leaf)) if is_key else jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def _digest(meta_json: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(meta_json.encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"\0{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.reshape(-1).view(np.uint8))  # the bytes, without a copy
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, fsync, rename.

    Readers see the old file or the new one, never a part; a crash mid-write
    leaves the old file and no temporary behind (or, on a hard kill, a
    ``.<name>.*.tmp`` that nothing reads).

    Raises:
      OSError: the directory does not exist or is not writable.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)  # mkstemp makes 0600 files; give the result the usual umask-based mode
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | os.PathLike, state, best, metadata: dict[str, Any]) -> None:
    """Write a safetensors checkpoint atomically.

    Args:
      path: the file to write (replaced atomically; a crash mid-write leaves
        the previous file as it was).
      state: the training state pytree (copied to the host).
      best: the best-so-far pytree.
      metadata: JSON-serialisable run information, as :func:`check_run_metadata`
        describes it (kind, models, configs, data, epoch, history, best epoch).

    Raises:
      OSError: the file cannot be written.
      CheckpointError: ``metadata`` fails :func:`check_run_metadata` (nothing is written).
    """
    _write_checkpoint(Path(path), checkpoint_tensors(state, best), metadata)


def checkpoint_tensors(state, best) -> dict[str, np.ndarray]:
    """Host copies of everything a checkpoint holds, by name (taken before the buffers are donated)."""
    return {**_flatten_named("state", state), **_flatten_named("best", best)}


def _write_checkpoint(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    meta_json = json.dumps({"format": FORMAT, **metadata}, sort_keys=True, allow_nan=False)
    check_run_metadata(json.loads(meta_json), f"save_checkpoint {path}")  # never write what a load refuses
    blob = st_save(tensors, metadata={"jaxlayers": meta_json, "sha256": _digest(meta_json, tensors)})
    atomic_write(path, blob)


def _write_then(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any], then) -> None:
    _write_checkpoint(path, tensors, metadata)
    if then is not None:
        then()


class CheckpointWriter:
    """Writes checkpoints on one background thread, one at a time, in order.

    The host copies are taken by the caller before the next epoch is
    dispatched; serialising, hashing and writing then overlap with that
    epoch. ``submit`` first waits for the previous write (and re-raises its
    error); ``close`` waits for the last one.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxlayers-checkpoint")
        self._pending = None

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def submit(
        self,
        path: Path,
        tensors: dict[str, np.ndarray],
        metadata: dict[str, Any],
        then: Callable[[], None] | None = None,
    ) -> None:
        """Write a checkpoint in the background; ``then()`` runs on the writer thread once it is on disk."""
        self.wait()
        self._pending = self._pool.submit(_write_then, path, tensors, metadata, then)

    def close(self, *, raise_errors: bool = True) -> None:
        try:
            self.wait()
        except BaseException:
            if raise_errors:
                raise
        finally:
            self._pool.shutdown(wait=True)


# ---------------------------------------------------------------------------
# The run metadata: a schema checked on every load (and before every write)
# ---------------------------------------------------------------------------


def _fail(where: str, field: str, problem: str):
    raise CheckpointError(f"{where}: metadata field {field!r} {problem}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _int_field(where: str, field: str, v, lo: int, hi: int | None = None) -> int:
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        _fail(where, field, f"is {v!r}, expected an int in [{lo}, {'inf' if hi is None else hi}]")
    return v


def _record(where: str, field: str, v, keys: tuple[str, ...] = ()) -> dict:
    """``v`` must be a JSON object holding ``keys``; ``field`` is its name (``""``: the metadata itself)."""
    if not isinstance(v, dict):
        _fail(where, field or "metadata", f"is {type(v).__name__} {v!r:.80}, expected a JSON object")
    for k in keys:
        if k not in v:
            _fail(where, f"{field}.{k}" if field else k, "is missing")
    return v


def _number_field(where: str, field: str, v, lo: float, hi: float) -> None:
    if not (_is_number(v) and lo <= v <= hi):
        _fail(where, field, f"is {v!r}, expected a finite number in [{lo}, {hi}]")


def _numbers(where: str, field: str, v, length: int, lo: float, hi: float, *, allow_none: bool = False) -> None:
    """``v`` must be a list of ``length`` finite numbers in ``[lo, hi]`` (``None`` too if ``allow_none``)."""
    if not isinstance(v, list) or len(v) != length:
        got = f"a list of {len(v)}" if isinstance(v, list) else type(v).__name__
        _fail(where, field, f"is {got}, expected a list of {length} (from the epoch and steps per epoch)")
    number = (int, float)  # exact types: no bools; one pass in a generator (a sweep's history has millions)
    if all((type(x) in number and math.isfinite(x) and lo <= x <= hi) or (x is None and allow_none) for x in v):
        return
    for i, x in enumerate(v):  # name the first bad entry
        if not (x is None and allow_none):
            _number_field(where, f"{field}[{i}]", x, lo, hi)


def check_run_metadata(meta: dict[str, Any], where: str = "checkpoint") -> None:
    """Check a checkpoint's run metadata field by field (types, ranges and consistent lengths).

    The SHA-256 proves only that the file is as written by whoever wrote it;
    these checks refuse metadata that no run writes, before anything acts on
    it (an edited ``epoch`` would otherwise train the wrong number of epochs).
    Fields: ``kind`` (``"fit"`` or ``"fit_many"``); ``models`` (a non-empty
    list of ``{"class": str, "config": {...}}``, one for ``"fit"``);
    ``train_configs`` (one object per model with ``epochs`` and ``batch_size``
    ints >= 1); ``data`` (``name`` and the four split ``shapes``); ``epoch``
    (an int in ``[0, epochs]``); ``history`` (``loss`` of ``epoch * steps``
    numbers or ``None``, where ``steps = N_train // batch_size``;
    ``train_acc``, ``val_acc`` in [0, 1] and ``lr`` of ``epoch`` numbers
    (``lr`` also ``None``: an optimizer given to ``fit`` that holds no rate), each
    per model for ``"fit_many"``; ``epoch_time_s`` of ``epoch`` numbers >= 0);
    ``best_val_acc`` in [-1, 1] and ``best_epoch`` in ``[0, epoch]`` (a list of
    one per model for ``"fit_many"``); optional ``preprocessing`` (an object:
    ``input_shape``/``image_shape`` lists of sizes >= 1, ``class_names``
    strings, ``mean`` finite numbers and ``std`` numbers > 0, in nested
    lists; each may be ``None`` or absent).
    Other keys are ignored.

    Args:
      meta: the parsed metadata.
      where: what to name in the error (the file).

    Raises:
      CheckpointError: naming the first field that is missing, of the wrong
        type, out of range, or inconsistent with the others.
    """
    _record(where, "", meta, ("kind", "models", "train_configs", "data", "epoch", "history"))
    kind = meta["kind"]
    if kind not in KINDS:
        _fail(where, "kind", f"is {kind!r}, expected one of {list(KINDS)}")
    many = kind == "fit_many"
    K, configs = _check_models_and_configs(where, meta["models"], meta["train_configs"], many)
    steps = _check_data_record(where, meta["data"], configs[0]["batch_size"])
    epoch = _int_field(where, "epoch", meta["epoch"], 0, configs[0]["epochs"])
    _check_history(where, meta["history"], epoch, steps, K if many else None)
    _check_best(where, meta, epoch, K if many else None)
    if "preprocessing" in meta:
        _check_preprocessing(where, _record(where, "preprocessing", meta["preprocessing"]))


def _check_models_and_configs(where: str, models, configs, many: bool) -> tuple[int, list]:
    """``(K, configs)``: the model records (one for ``fit``) and one training config per model."""
    if not isinstance(models, list) or not models or (not many and len(models) != 1):
        _fail(
            where, "models", f"is {models!r:.80}, expected a list of {'one or more' if many else 'one'} model records"
        )
    for k, m in enumerate(models):
        _record(where, f"models[{k}]", m, ("class", "config"))
        if not isinstance(m["class"], str) or not m["class"]:
            _fail(where, f"models[{k}].class", f"is {m['class']!r}, expected a class name")
        _record(where, f"models[{k}].config", m["config"])
    K = len(models)
    if not isinstance(configs, list) or len(configs) != K:
        _fail(where, "train_configs", f"is {configs!r:.80}, expected a list of {K} (one per model)")
    for k, c in enumerate(configs):
        _record(where, f"train_configs[{k}]", c, ("epochs", "batch_size"))
        _int_field(where, f"train_configs[{k}].epochs", c["epochs"], 1)
        _int_field(where, f"train_configs[{k}].batch_size", c["batch_size"], 1)
    return K, configs


def _check_data_record(where: str, data, batch_size: int) -> int:
    """The data record's name and split shapes; the steps per epoch they give (at least one)."""
    data = _record(where, "data", data, ("name", "shapes"))
    if not isinstance(data["name"], str):
        _fail(where, "data.name", f"is {data['name']!r}, expected a string")
    shapes = _record(where, "data.shapes", data["shapes"], ("X_train", "y_train", "X_val", "y_val"))
    for split, shape in shapes.items():
        if not isinstance(shape, list) or not shape or not all(_is_int(d) and d >= 0 for d in shape):
            _fail(where, f"data.shapes.{split}", f"is {shape!r:.80}, expected a list of sizes >= 0")
    steps = steps_per_epoch(shapes["y_train"][0], batch_size)
    if steps < 1:
        _fail(where, "data.shapes.y_train", f"is {shapes['y_train']}: fewer examples than one batch")
    return steps


def _check_history(where: str, history, epoch: int, steps: int, K: int | None) -> None:
    """``loss`` of ``epoch * steps`` numbers, the accuracies and ``lr`` of ``epoch`` (per model for ``K``)."""
    history = _record(where, "history", history, HISTORY_FIELDS)
    per_model = {"loss": (epoch * steps, -math.inf, math.inf), "train_acc": (epoch, 0, 1), "val_acc": (epoch, 0, 1)}
    per_model["lr"] = (epoch, -math.inf, math.inf)
    for name, (length, lo, hi) in per_model.items():
        rows = history[name]
        if K is not None and (not isinstance(rows, list) or len(rows) != K):
            _fail(where, f"history.{name}", f"is {type(rows).__name__}, expected a list of {K} (one per model)")
        for k, row in enumerate(rows if K is not None else [rows]):
            field = f"history.{name}[{k}]" if K is not None else f"history.{name}"
            _numbers(where, field, row, length, lo, hi, allow_none=name in ("loss", "lr"))
    _numbers(where, "history.epoch_time_s", history["epoch_time_s"], epoch, 0, math.inf)


def _check_best(where: str, meta: dict, epoch: int, K: int | None) -> None:
    """``best_val_acc`` in [-1, 1] and ``best_epoch`` in ``[0, epoch]`` (lists of ``K`` for ``fit_many``)."""
    for name, check in (
        ("best_val_acc", lambda f, v: _number_field(where, f, v, -1, 1)),
        ("best_epoch", lambda f, v: _int_field(where, f, v, 0, epoch)),
    ):
        values = _record(where, "", meta, (name,))[name]
        if K is not None and (not isinstance(values, list) or len(values) != K):
            _fail(where, name, f"is {values!r:.80}, expected a list of {K} (one per model)")
        for k, v in enumerate(values if K is not None else [values]):
            check(f"{name}[{k}]" if K is not None else name, v)


def _check_preprocessing(where: str, pre: dict) -> None:
    """The optional preprocessing record: shapes of ints >= 1, class names, finite mean and std > 0 (any may be None)."""
    for key in ("input_shape", "image_shape"):
        shape = pre.get(key)
        if shape is not None and not (isinstance(shape, list) and all(_is_int(d) and d >= 1 for d in shape)):
            _fail(where, f"preprocessing.{key}", f"is {shape!r:.80}, expected a list of sizes >= 1")
    names = pre.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        _fail(where, "preprocessing.class_names", f"is {names!r:.80}, expected a list of strings")
    for key, lo in (("mean", -math.inf), ("std", 0.0)):
        values = pre.get(key)
        if values is None:
            continue
        if not isinstance(values, list):
            _fail(where, f"preprocessing.{key}", f"is {values!r:.80}, expected (nested) lists of numbers")
        flat, stack = [], [values]
        while stack:  # nested lists of numbers, of any depth
            v = stack.pop()
            (stack.extend if isinstance(v, list) else flat.append)(v)
        bad = [v for v in flat if not (_is_number(v) and v > lo)]
        if bad:
            _fail(where, f"preprocessing.{key}", f"holds {bad[0]!r:.80}, expected finite numbers > {lo}")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, after its header length and tensor count are checked against the bounds.

    Reads the 8-byte header length and the header first; the rest of the file
    is read only if both are within :data:`MAX_HEADER_BYTES` and
    :data:`MAX_TENSORS`. The tensor count is bounded from above without
    parsing: every tensor entry is a JSON object, and an object cannot be
    written without a literal ``{`` (a run's metadata adds a few dozen more).
    """
    where = f"checkpoint {path}"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        first = f.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{where}: {len(first)} bytes, too short for a safetensors file (truncated?)")
        n = int.from_bytes(first, "little")
        if n > size - 8:
            raise CheckpointError(f"{where}: header of {n} bytes does not fit in the {size}-byte file (truncated?)")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(
                f"{where}: header of {n} bytes, more than the {MAX_HEADER_BYTES} any checkpoint holds (not a run's file)"
            )
        objects, left = 0, n
        while left and objects <= MAX_TENSORS:  # 1 MB at a time: no copy of a huge header
            chunk = f.read(min(left, 1 << 20))
            objects, left = objects + chunk.count(b"{"), left - len(chunk)
        if objects > MAX_TENSORS:
            raise CheckpointError(
                f"{where}: its header holds more than {MAX_TENSORS} JSON objects, one per tensor; "
                "no run checkpoints that many tensors (not a run's file)"
            )
        f.seek(0)
        return f.read()


def _read_verified(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    data = _read_bounded(path)
    where = f"checkpoint {path}"
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + n])
        info = header["__metadata__"]
        meta_json, digest = info["jaxlayers"], info["sha256"]
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type; json, KeyError, TypeError...
        raise CheckpointError(
            f"{where}: not a readable jaxlayers safetensors checkpoint ({type(e).__name__}: {e})"
        ) from e
    if _digest(meta_json, tensors) != digest:
        raise CheckpointError(f"{where}: SHA-256 check failed: the file was modified or corrupted after it was written")
    try:
        metadata = json.loads(meta_json)
    except ValueError as e:
        raise CheckpointError(f"{where}: metadata is not valid JSON ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        got = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise CheckpointError(f"{where}: format {got!r}, expected {FORMAT!r}")
    check_run_metadata(metadata, where)
    return tensors, metadata


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The run metadata of a checkpoint (``kind``, ``models``, ``train_configs``, ``data``, ``epoch``, ``history``, ...).

    The whole file is verified (bounds, SHA-256, :func:`check_run_metadata`) first.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: as :func:`load_checkpoint`.
    """
    return _read_verified(Path(path))[1]


def load_checkpoint(path: str | os.PathLike, state_template, best_template):
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Args:
      path: the checkpoint file.
      state_template, best_template: pytrees of the expected structure,
        shapes and dtypes (e.g. a freshly initialised state).

    Returns:
      ``(state, best, metadata)``: arrays on the default device; the run
      metadata dict.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: the file is truncated, not a safetensors file, has a
        header over :data:`MAX_HEADER_BYTES` or more than :data:`MAX_TENSORS`
        tensors (refused before parsing), fails its SHA-256 check (tampered
        or corrupt), holds metadata that :func:`check_run_metadata` refuses
        (naming the field), or holds tensors that do not match the
        templates. Nothing is half-loaded.
    """
    path = Path(path)
    tensors, metadata = _read_verified(path)
    where = f"checkpoint {path}"
    names = set(tensors)
    state = _unflatten_named("state", state_template, tensors, where)
    best = _unflatten_named("best", best_template, tensors, where)
    expected = set(_flatten_named("state", state_template)) | set(_flatten_named("best", best_template))
    if names != expected:
        raise CheckpointError(f"{where}: unexpected tensors {sorted(names - expected)}")
    return state, best, metadata


def load_checkpoint_trees(
    path: str | os.PathLike, templates: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify a checkpoint, and rebuild only some of its trees (no optimizer state needed).

    Args:
      path: the checkpoint file.
      templates: ``{prefix: template}``, e.g. ``{"best.params": params_shapes}``,
        or a function of the verified metadata returning it (to build the
        templates from the model the file records, reading the file once):
        each template a pytree of arrays or ``jax.ShapeDtypeStruct`` (from
        ``jax.eval_shape(model.init, key)``, say) whose leaves are stored as
        ``prefix + keystr(path)``. The file's other tensors are verified
        but not loaded.

    Returns:
      ``({prefix: tree of arrays on the default device}, metadata)``.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: as :func:`load_checkpoint`, or a tensor a template
        names that is missing or has another shape or dtype.
    """
    path = Path(path)
    tensors, metadata = _read_verified(path)
    where = f"checkpoint {path}"
    if callable(templates):
        templates = templates(metadata)
    return {prefix: _unflatten_named(prefix, t, tensors, where) for prefix, t in templates.items()}, metadata
