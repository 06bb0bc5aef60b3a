"""Checkpoints: one safetensors file per run, verified, written atomically.

The file holds tensors by name -- the training state and the best-so-far
parameters flattened with ``jax.tree_util`` key paths (``state.params['W1']``,
``best.params['W1']``, ...; PRNG keys as their uint32 key data) -- and, in the
safetensors metadata, the run's JSON description (format, models, configs,
data shapes, epoch, history, best epoch) and a SHA-256 digest over both. No
pickle anywhere. :func:`atomic_write` writes a temporary file in the same
directory, fsyncs it and renames it over the old one, so a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
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

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "CheckpointWriter",
    "atomic_write",
    "checkpoint_tensors",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
FORMAT = "jaxlayers.train.checkpoint/2"


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
      metadata: JSON-serialisable run information (epoch, history, configs).

    Raises:
      OSError: the file cannot be written.
    """
    _write_checkpoint(Path(path), checkpoint_tensors(state, best), metadata)


def checkpoint_tensors(state, best) -> dict[str, np.ndarray]:
    """Host copies of everything a checkpoint holds, by name (taken before the buffers are donated)."""
    return {**_flatten_named("state", state), **_flatten_named("best", best)}


def _write_checkpoint(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    meta_json = json.dumps({"format": FORMAT, **metadata}, sort_keys=True, allow_nan=False)
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


def _read_verified(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    data = path.read_bytes()
    where = f"checkpoint {path}"
    if len(data) < 8:
        raise CheckpointError(f"{where}: {len(data)} bytes, too short for a safetensors file (truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise CheckpointError(f"{where}: header of {n} bytes does not fit in the {len(data)}-byte file (truncated?)")
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
    return tensors, metadata


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The run metadata of a checkpoint (``epoch``, ``history``, ``net``, ``train_config``, ``data``, ...).

    The whole file is verified (SHA-256) first.

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
      CheckpointError: the file is truncated, not a safetensors file, fails
        its SHA-256 check (tampered or corrupt), or holds tensors that do not
        match the templates. Nothing is half-loaded.
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
