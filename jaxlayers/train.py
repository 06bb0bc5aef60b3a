"""Training: a jit-compiled optax step, a scanned epoch, evaluation, checkpoints.

The pieces, smallest first:

* :class:`TrainState` -- a pytree of everything that changes while training:
  ``params``, the model's running statistics ``model_state``, the optax
  ``opt_state``, the ``step`` count and the PRNG ``key``.
* :func:`make_train_step` -- one jit-compiled step: ``value_and_grad`` of
  :meth:`FullyConnectedNet.loss`, the optax update, the new running
  statistics, and the step's metrics.
* :func:`make_epoch_fn` -- a whole epoch in one jit-compiled call: shuffle
  with ``jax.random.permutation``, ``lax.scan`` the step over the minibatches
  (gathered on device from the data, which stays on device), then evaluate
  train and validation accuracy. The host sees one call and one fetch per
  epoch; there is no per-step host synchronisation.
* :func:`evaluate` -- test-mode accuracy, batched on device.
* :func:`fit` -- the epoch loop in the manner of the CS231n ``Solver``:
  optimizers by name, per-epoch learning-rate decay, history, the best
  parameters by validation accuracy, a checkpoint after every epoch and
  bitwise-exact resume.

Checkpoints are safetensors files (no pickle anywhere): the
:class:`TrainState` and the best parameters flattened to named tensors with
``jax.tree_util`` key paths, and the epoch, history and configurations as JSON
in the safetensors metadata, all covered by a SHA-256 digest. They are written
to a temporary file and renamed over the old one (``os.replace``), so a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxlayers.models import FullyConnectedNet

__all__ = [
    "OPTIMIZERS",
    "CheckpointError",
    "EpochReport",
    "FitResult",
    "History",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainState",
    "evaluate",
    "fit",
    "init_train_state",
    "atomic_write",
    "load_checkpoint",
    "plot_history",
    "read_checkpoint_metadata",
    "make_epoch_fn",
    "make_optimizer",
    "make_train_step",
    "save_checkpoint",
]

OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam")
CHECKPOINT_NAME = "checkpoint.safetensors"
_FORMAT = "jaxlayers.train.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, tampered with, or for another run."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the last checkpoint is left intact."""


# ---------------------------------------------------------------------------
# Configuration and state
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the network and the data).

    The defaults are ``jaxlayers train``'s, tuned on digits.

    Attributes:
      epochs: passes over the training data, ``>= 1``.
      batch_size: examples per step, ``>= 1`` and at most the training set
        size. Each epoch is ``N_train // batch_size`` steps over a fresh
        random permutation; the remainder of the permutation is skipped.
      optimizer: ``"sgd"``, ``"sgd_momentum"`` (``momentum``),
        ``"rmsprop"`` (decay 0.99, eps 1e-8) or ``"adam"`` (0.9, 0.999,
        1e-8); all optax.
      learning_rate: the initial step size, ``> 0``.
      lr_decay: multiplies the learning rate after every epoch (an optax
        ``exponential_decay`` schedule, staircase, ``transition_steps`` = steps
        per epoch), in ``(0, 1]``.
      momentum: for ``sgd_momentum``, in ``[0, 1)``.
      seed: seeds ``jax.random.key``: initialisation, shuffling and dropout.
        Same seed, same data, same config: bitwise the same result.
      eval_batch_size: batch size of the test-mode accuracy passes.
    """

    epochs: int = 80
    batch_size: int = 32
    optimizer: str = "sgd_momentum"
    learning_rate: float = 0.04
    lr_decay: float = 0.97
    momentum: float = 0.9
    seed: int = 0
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        def fail(msg):
            raise ValueError(f"TrainConfig: {msg}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                fail(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            fail(f"seed must be an int, got {self.seed!r}")
        if self.optimizer not in OPTIMIZERS:
            fail(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < math.inf):
            fail(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            fail(f"lr_decay must lie in (0, 1] (1 = no decay), got {self.lr_decay!r}")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            fail(f"momentum must lie in [0, 1), got {self.momentum!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
      params: the network's parameters, ``{"W1": ..., "b1": ..., ...}``.
      model_state: the network's running statistics, ``{"bn1": BatchNormState, ...}``.
      opt_state: the optax optimizer state.
      step: int32 scalar, optimizer steps taken.
      key: a typed PRNG key (``jax.random.key``); split for every shuffle
        and every dropout mask.
    """

    params: dict[str, jax.Array]
    model_state: dict[str, Any]
    opt_state: Any
    step: jax.Array
    key: jax.Array


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int, *, learning_rate: float | jax.Array | None = None
) -> optax.GradientTransformation:
    """The optax optimizer ``config.optimizer`` with per-epoch learning-rate decay.

    Args:
      config: the training configuration.
      steps_per_epoch: steps between two decays, ``>= 1``.
      learning_rate: replaces ``config.learning_rate`` when given; a float
        or a scalar array, which may be traced (:func:`fit_many` vmaps over
        it). Not validated: it must be finite and ``> 0``.

    Returns:
      An ``optax.GradientTransformation`` whose learning rate is
      ``learning_rate * lr_decay ** (step // steps_per_epoch)``.
    """
    schedule = optax.exponential_decay(
        init_value=config.learning_rate if learning_rate is None else learning_rate,
        transition_steps=max(int(steps_per_epoch), 1),
        decay_rate=config.lr_decay,
        staircase=True,
    )
    if config.optimizer == "sgd":
        return optax.sgd(schedule)
    if config.optimizer == "sgd_momentum":
        return optax.sgd(schedule, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return optax.rmsprop(schedule, decay=0.99, eps=1e-8)
    return optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)


def init_train_state(net: FullyConnectedNet, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh :class:`TrainState`: ``key`` is split into an init key and the training key.

    Args:
      net: the network.
      optimizer: the optax optimizer (its state is initialised from the params).
      key: a typed PRNG key, ``jax.random.key(seed)``.
    """
    return jax.jit(partial(_init_train_state, net, optimizer))(key)  # one compilation, not one per op


def _init_train_state(net, optimizer, key) -> TrainState:
    init_key, train_key = jax.random.split(key)
    params, model_state = net.init(init_key)
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32), train_key)


# ---------------------------------------------------------------------------
# The step, the epoch, evaluation
# ---------------------------------------------------------------------------


def _step_fn(net: FullyConnectedNet, optimizer: optax.GradientTransformation):
    def step(state: TrainState, x: jax.Array, y: jax.Array):
        key, dropout_key = jax.random.split(state.key)
        grad_fn = jax.value_and_grad(net.loss, has_aux=True)
        (loss, (model_state, scores)), grads = grad_fn(state.params, state.model_state, x, y, key=dropout_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean((jnp.argmax(scores, axis=1) == y).astype(jnp.float32))
        new_state = TrainState(params, model_state, opt_state, state.step + 1, key)
        return new_state, {"loss": loss, "accuracy": accuracy}

    return step


def make_train_step(net: FullyConnectedNet, optimizer: optax.GradientTransformation):
    """One jit-compiled training step.

    Args:
      net: the network (its ``loss`` is differentiated; every gradient is a
        jaxlayers hand-derived rule).
      optimizer: an optax optimizer, e.g. from :func:`make_optimizer`.

    Returns:
      ``step(state, x, y) -> (new_state, metrics)``: ``x`` ``(B, input_dim)``,
      ``y`` int ``(B,)``; ``metrics`` holds the scalar ``loss`` (data loss +
      L2) and the batch's train-mode ``accuracy``. The key is split for the
      dropout masks and the running statistics are updated. ``state``'s
      buffers are donated: do not use the ``state`` passed in afterwards.
    """
    return jax.jit(_step_fn(net, optimizer), donate_argnums=0)


def _count_correct(net: FullyConnectedNet, params, model_state, X, y, batch_size: int) -> jax.Array:
    """Traced: the number of test-mode correct predictions, in batches.

    Full batches go through ``lax.map``; the remainder is one smaller batch
    (no padded copy of the data). Test mode treats examples independently,
    so the batch size does not change the result.
    """
    n = X.shape[0]
    X = X.reshape(n, -1)
    y = y.astype(jnp.int32)
    bs = max(1, min(batch_size, n))
    nb, rem = divmod(n, bs)

    def batch(args):
        xb, yb = args
        scores, _ = net.apply(params, model_state, xb, train=False)
        return jnp.sum(jnp.argmax(scores, axis=1) == yb, dtype=jnp.int32)

    total = jnp.zeros((), jnp.int32)
    if nb:
        full = (X[: nb * bs].reshape(nb, bs, X.shape[1]), y[: nb * bs].reshape(nb, bs))
        total = total + jnp.sum(lax.map(batch, full))
    if rem:
        total = total + batch((X[nb * bs :], y[nb * bs :]))
    return total


@partial(jax.jit, static_argnames=("net", "batch_size"))
def _count_correct_jit(net, params, model_state, X, y, batch_size):
    return _count_correct(net, params, model_state, X, y, batch_size)


def evaluate(net: FullyConnectedNet, params, model_state, X, y, *, batch_size: int = 1024) -> float:
    """Test-mode classification accuracy, computed on device in batches.

    Args:
      net: the network.
      params, model_state: its parameters and running statistics.
      X: ``(N, input_dim)`` features (any float dtype; cast to ``net.dtype``).
      y: ``(N,)`` integer labels.
      batch_size: examples per forward pass (the last batch may be smaller).

    Returns:
      The fraction of examples whose highest score is the label, a Python
      float in ``[0, 1]`` (``nan`` for ``N = 0``).

    Raises:
      ValueError: ``X``/``y`` shapes that disagree with each other or the net.
    """
    n = int(np.shape(X)[0])
    if np.shape(y) != (n,):
        raise ValueError(f"evaluate: y must have shape ({n},) to match X {np.shape(X)}, got {np.shape(y)}")
    if n == 0:
        return float("nan")
    correct = _count_correct_jit(net, params, model_state, X, y, int(batch_size))
    return int(correct) / n


def make_epoch_fn(
    net: FullyConnectedNet,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    steps_per_epoch: int,
    eval_batch_size: int = 1024,
):
    """One epoch of training plus its evaluation, as one jit-compiled call.

    Args:
      net, optimizer: as :func:`make_train_step`.
      batch_size: examples per step.
      steps_per_epoch: steps per epoch; at most ``N_train // batch_size``.
      eval_batch_size: batch size of the accuracy passes.

    Returns:
      ``epoch(state, X_train, y_train, X_val, y_val) -> (state, metrics,
      train_correct, val_correct)``: the state's key is split to draw a random
      permutation of the training set, ``lax.scan`` runs the step over
      ``steps_per_epoch`` minibatches gathered from the on-device data;
      ``metrics`` holds per-step arrays ``loss`` and ``accuracy``, shape
      ``(steps_per_epoch,)``; ``*_correct`` are the test-mode counts of
      correct predictions after the epoch (int32 scalars). ``state`` is
      donated.
    """
    step = _step_fn(net, optimizer)

    def epoch(state: TrainState, X_train, y_train, X_val, y_val):
        key, perm_key = jax.random.split(state.key)
        perm = jax.random.permutation(perm_key, X_train.shape[0])
        batches = perm[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

        def body(st, idx):
            return step(st, X_train[idx], y_train[idx])

        state, metrics = lax.scan(body, state._replace(key=key), batches)
        train_correct = _count_correct(net, state.params, state.model_state, X_train, y_train, eval_batch_size)
        val_correct = _count_correct(net, state.params, state.model_state, X_val, y_val, eval_batch_size)
        return state, metrics, train_correct, val_correct

    return jax.jit(epoch, donate_argnums=0)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


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


def save_checkpoint(path: str | os.PathLike, state: TrainState, best: dict, metadata: dict[str, Any]) -> None:
    """Write a safetensors checkpoint atomically.

    Args:
      path: the file to write (replaced atomically; a crash mid-write leaves
        the previous file as it was).
      state: the :class:`TrainState` (copied to the host).
      best: ``{"params": ..., "model_state": ...}``, the best-so-far pytree.
      metadata: JSON-serialisable run information (epoch, history, configs).

    Raises:
      OSError: the file cannot be written.
    """
    _write_checkpoint(Path(path), _checkpoint_tensors(state, best), metadata)


def _checkpoint_tensors(state: TrainState, best: dict) -> dict[str, np.ndarray]:
    """Host copies of everything a checkpoint holds, by name (taken before the buffers are donated)."""
    return {**_flatten_named("state", state), **_flatten_named("best", best)}


def _write_checkpoint(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    from safetensors.numpy import save as st_save

    meta_json = json.dumps({"format": _FORMAT, **metadata}, sort_keys=True, allow_nan=False)
    blob = st_save(tensors, metadata={"jaxlayers": meta_json, "sha256": _digest(meta_json, tensors)})
    atomic_write(path, blob)


class _CheckpointWriter:
    """Writes checkpoints on one background thread, one at a time, in order.

    The host copies are taken by the caller before the next epoch is
    dispatched; serialising, hashing and writing then overlap with that
    epoch. ``submit`` first waits for the previous write (and re-raises its
    error); ``close`` waits for the last one.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxlayers-checkpoint")
        self._pending = None

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def submit(self, path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        self.wait()
        self._pending = self._pool.submit(_write_checkpoint, path, tensors, metadata)

    def close(self, *, raise_errors: bool = True) -> None:
        try:
            self.wait()
        except BaseException:
            if raise_errors:
                raise
        finally:
            self._pool.shutdown(wait=True)


def _read_verified(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors.numpy import load as st_load

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
    if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
        got = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise CheckpointError(f"{where}: format {got!r}, expected {_FORMAT!r}")
    return tensors, metadata


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The run metadata of a checkpoint (``epoch``, ``history``, ``net``, ``train_config``, ``data``, ...).

    The whole file is verified (SHA-256) first.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: as :func:`load_checkpoint`.
    """
    return _read_verified(Path(path))[1]


def load_checkpoint(path: str | os.PathLike, state_template: TrainState, best_template: dict):
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


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class History:
    """What :func:`fit` records.

    Attributes:
      loss: training loss (data + L2) of every step, in order.
      train_acc, val_acc: test-mode accuracy on the full training and
        validation sets after every epoch.
      lr: the learning rate used in every epoch.
      epoch_time_s: wall seconds of every epoch (the first includes compilation).
    """

    loss: list[float] = dataclasses.field(default_factory=list)
    train_acc: list[float] = dataclasses.field(default_factory=list)
    val_acc: list[float] = dataclasses.field(default_factory=list)
    lr: list[float] = dataclasses.field(default_factory=list)
    epoch_time_s: list[float] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        return dataclasses.asdict(self)


class EpochReport(NamedTuple):
    """Passed to ``fit``'s ``callback`` after each epoch (and its checkpoint).

    ``epoch`` counts from 1; ``loss`` is the epoch's mean step loss;
    ``history`` is the whole history so far (do not mutate it).
    """

    epoch: int
    epochs: int
    steps: int
    loss: float
    train_acc: float
    val_acc: float
    best_val_acc: float
    lr: float
    epoch_time_s: float
    history: History


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      state: the final :class:`TrainState`.
      best_params, best_model_state: the parameters and running statistics
        of the epoch with the highest validation accuracy, as the CS231n
        ``Solver`` keeps them; on ties the later epoch (it has trained longer
        at a smaller learning rate; small validation sets tie often).
      best_val_acc, best_epoch: that accuracy and its epoch (from 1).
      history: the :class:`History` of the whole run (resumed epochs included).
      start_epoch: epochs already done when this call began (> 0 on resume).
      steps_per_epoch: optimizer steps per epoch.
    """

    state: TrainState
    best_params: dict
    best_model_state: dict
    best_val_acc: float
    best_epoch: int
    history: History
    start_epoch: int
    steps_per_epoch: int

    def steps_per_second(self) -> float:
        """Steady-state training throughput of this call: steps / wall time over the
        epochs after its first (which includes compilation); ``nan`` if there are none."""
        times = self.history.epoch_time_s[self.start_epoch + 1 :]
        return len(times) * self.steps_per_epoch / sum(times) if times and sum(times) > 0 else float("nan")


def _check_data(net: FullyConnectedNet, data, config: TrainConfig) -> None:
    for split in ("train", "val"):
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
        xs, ys = np.shape(X), np.shape(y)
        if len(xs) < 2 or math.prod(xs[1:]) != net.input_dim:
            raise ValueError(
                f"fit: data.X_{split} has shape {xs}, i.e. {math.prod(xs[1:]) if len(xs) >= 2 else '?'} features "
                f"per example, but the network has input_dim={net.input_dim}"
            )
        if ys != (xs[0],):
            raise ValueError(f"fit: data.y_{split} must have shape ({xs[0]},) to match data.X_{split}, got {ys}")
        if not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise TypeError(f"fit: data.y_{split} must hold integer class labels, got dtype {np.asarray(y).dtype}")
        if xs[0] == 0:
            raise ValueError(f"fit: data.X_{split} is empty")
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= net.num_classes:
            raise ValueError(
                f"fit: data.y_{split} holds labels in [{lo}, {hi}] but the network has num_classes={net.num_classes}; "
                f"labels must lie in [0, {net.num_classes})"
            )
    n = np.shape(data.X_train)[0]
    if config.batch_size > n:
        raise ValueError(
            f"fit: batch_size {config.batch_size} is larger than the {n} training examples; use batch_size <= {n}"
        )


def _compare(what: str, saved: dict, now: dict, ignore: tuple[str, ...] = ()) -> None:
    now = json.loads(json.dumps(now))  # the checkpoint's side went through JSON
    keys = sorted((set(saved) | set(now)) - set(ignore))
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]
    if diffs:
        raise CheckpointError(f"resume: the {what} differs from the checkpoint's ({'; '.join(diffs)})")


@functools.lru_cache(maxsize=8)
def _compiled(net: FullyConnectedNet, config: TrainConfig, steps_per_epoch: int):
    """The jitted init and epoch functions of a run, cached: fits that differ only in
    ``seed`` or ``epochs`` (resumes, reruns, tests) reuse one compilation."""
    optimizer = make_optimizer(config, steps_per_epoch)
    init_fn = jax.jit(partial(_init_train_state, net, optimizer))
    epoch_fn = make_epoch_fn(
        net,
        optimizer,
        batch_size=config.batch_size,
        steps_per_epoch=steps_per_epoch,
        eval_batch_size=config.eval_batch_size,
    )
    return init_fn, epoch_fn


def _host_copy(tree):
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def fit(
    net: FullyConnectedNet,
    data,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    callback: Callable[[EpochReport], None] | None = None,
    mesh=None,
    distributed=None,
) -> FitResult:
    """Train ``net`` on ``data`` for ``config.epochs`` epochs.

    Each epoch is one jit-compiled call (:func:`make_epoch_fn`): the training
    data stay on device, minibatches come from a permutation drawn from the
    state's key, and the per-step losses are fetched once, at the end of the
    epoch. After every epoch the train and validation accuracies are recorded,
    the parameters are kept if their validation accuracy is the best so far,
    and (with ``checkpoint_dir``) a checkpoint is written atomically.

    Args:
      net: the network; its ``input_dim`` and ``num_classes`` must fit the data.
      data: a :class:`jaxlayers.data.Dataset` (or anything with ``X_train,
        y_train, X_val, y_val``): features ``(N, input_dim)``, int labels.
      config: the :class:`TrainConfig`.
      checkpoint_dir: a directory (created if needed) for
        ``checkpoint.safetensors``, rewritten after every epoch. ``None``:
        no checkpoints.
      resume: continue from the checkpoint in ``checkpoint_dir``. The
        network, data shapes and config must be those of the checkpointed
        run, except ``epochs``, which may grow; the run then ends bitwise
        equal to an uninterrupted one.
      callback: called with an :class:`EpochReport` after every epoch (for
        progress display; it runs once per epoch, never per step).
      mesh: a ``jax.sharding.Mesh`` (e.g. ``jaxlayers.parallel.make_data_mesh(8)``):
        train data-parallel, every minibatch sharded over all its devices,
        parameters and optimizer state replicated, batchnorm statistics over
        the global batch; the result equals the one-device run's up to float
        rounding (see :mod:`jaxlayers.parallel`). ``None``: the default device.
      distributed: a ``jaxlayers.parallel.Distributed`` (coordinator, process
        count and id): join a multi-process run first (before any JAX
        computation in this process) and, if ``mesh`` is ``None``, train on
        every device of every process. Every process calls ``fit`` with the
        same arguments; each feeds only its slice of every global batch.

    Returns:
      A :class:`FitResult`. With ``mesh``, ``state`` holds arrays replicated
      on the mesh (``jaxlayers.parallel.host_copy`` gives host copies in any
      process); ``best_params`` and ``best_model_state`` are local arrays.

    Raises:
      ValueError: data that disagree with the network (feature count, label
        range, shapes), ``batch_size`` larger than the training set, or
        ``resume`` without ``checkpoint_dir``, or a ``batch_size`` that is not a
        multiple of ``mesh``'s device count.
      DistributedInitError: ``distributed`` given and the coordinator could
        not be reached within its timeout.
      FileNotFoundError: ``resume`` with no checkpoint in ``checkpoint_dir``.
      CheckpointError: a checkpoint that is corrupt or from another run.
      NonFiniteLossError: a NaN or infinite loss; the message names the step
        and the last checkpoint, which is left intact.
    """
    if not isinstance(net, FullyConnectedNet):
        raise TypeError(f"fit: net must be a FullyConnectedNet, got {type(net).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig, got {type(config).__name__}")
    if distributed is not None:
        from jaxlayers.parallel import initialize_distributed, make_data_mesh

        initialize_distributed(distributed)
        mesh = make_data_mesh() if mesh is None else mesh
    _check_data(net, data, config)
    n_train = int(np.shape(data.X_train)[0])
    steps_per_epoch = n_train // config.batch_size
    if mesh is not None:
        from jaxlayers.parallel import DataParallelEpochs

        parallel_epochs = DataParallelEpochs(mesh, net, config, steps_per_epoch, data)
    init_fn, epoch_fn = _compiled(net, dataclasses.replace(config, epochs=1, seed=0), steps_per_epoch)

    state = init_fn(jax.random.key(config.seed))
    best = {"params": _host_copy(state.params), "model_state": _host_copy(state.model_state)}
    history = History()
    best_val_acc, best_epoch, start_epoch = -1.0, 0, 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    run_info = {
        "net": net.to_dict(),
        "train_config": config.to_dict(),
        "data": {
            "name": str(getattr(data, "name", "")),
            "shapes": {k: list(np.shape(getattr(data, k))) for k in ("X_train", "y_train", "X_val", "y_val")},
        },
    }
    if resume:
        if ckpt_path is None:
            raise ValueError("fit: resume=True needs checkpoint_dir")
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"fit: resume=True but there is no checkpoint at {ckpt_path}")
        state, best, meta = load_checkpoint(ckpt_path, state, best)
        _compare("network", meta["net"], run_info["net"])
        _compare("training config", meta["train_config"], run_info["train_config"], ignore=("epochs",))
        _compare("data", meta["data"], run_info["data"])
        history = History(**meta["history"])
        best_val_acc, best_epoch, start_epoch = meta["best_val_acc"], meta["best_epoch"], meta["epoch"]
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    if mesh is not None:
        from jaxlayers.parallel import replicate

        epoch_fn, arrays, state = parallel_epochs, [], replicate(state, parallel_epochs.mesh)
    else:
        arrays = [jnp.asarray(getattr(data, k)) for k in ("X_train", "y_train", "X_val", "y_val")]
    n_val = int(np.shape(data.X_val)[0])

    writer = _CheckpointWriter() if ckpt_path is not None else None
    try:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            lr = config.learning_rate * config.lr_decay**epoch
            state, metrics, train_correct, val_correct = epoch_fn(state, *arrays)
            losses, train_correct, val_correct = jax.device_get((metrics["loss"], train_correct, val_correct))
            if not np.all(np.isfinite(losses)):
                i = int(np.argmax(~np.isfinite(losses)))
                if writer is not None:
                    writer.wait()  # the previous epoch's checkpoint is complete before it is named
                last = (
                    f"the last checkpoint, {ckpt_path} (epoch {epoch}), is left intact"
                    if ckpt_path is not None and ckpt_path.exists()
                    else "no checkpoint was written"
                )
                raise NonFiniteLossError(
                    f"fit: the loss is {losses[i]} at step {epoch * steps_per_epoch + i + 1} (epoch {epoch + 1}, "
                    f"iteration {i + 1} of {steps_per_epoch}); training stopped and {last}. "
                    "Try a smaller learning rate."
                )
            train_acc, val_acc = int(train_correct) / n_train, int(val_correct) / n_val
            history.loss.extend(float(v) for v in losses)
            history.train_acc.append(train_acc)
            history.val_acc.append(val_acc)
            history.lr.append(lr)
            if val_acc >= best_val_acc:  # ties: the later, better-trained epoch
                best_val_acc, best_epoch = val_acc, epoch + 1
                best = {"params": _host_copy(state.params), "model_state": _host_copy(state.model_state)}
            if writer is not None:
                meta = {
                    **run_info,
                    "epoch": epoch + 1,
                    "history": {**history.to_dict(), "epoch_time_s": [*history.epoch_time_s, time.perf_counter() - t0]},
                    "best_val_acc": best_val_acc,
                    "best_epoch": best_epoch,
                }
                writer.submit(ckpt_path, _checkpoint_tensors(state, best), meta)
            history.epoch_time_s.append(time.perf_counter() - t0)
            if callback is not None:
                callback(
                    EpochReport(
                        epoch=epoch + 1,
                        epochs=config.epochs,
                        steps=int((epoch + 1) * steps_per_epoch),
                        loss=float(np.mean(losses)),
                        train_acc=train_acc,
                        val_acc=val_acc,
                        best_val_acc=best_val_acc,
                        lr=lr,
                        epoch_time_s=history.epoch_time_s[-1],
                        history=history,
                    )
                )
    except BaseException:
        if writer is not None:
            writer.close(raise_errors=False)  # finish the pending write; the original error wins
        raise
    if writer is not None:
        writer.close()

    best_dev = jax.tree.map(jnp.asarray, best)
    return FitResult(
        state=state,
        best_params=best_dev["params"],
        best_model_state=best_dev["model_state"],
        best_val_acc=best_val_acc,
        best_epoch=best_epoch,
        history=history,
        start_epoch=start_epoch,
        steps_per_epoch=steps_per_epoch,
    )


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def plot_history(history: History, path: str | os.PathLike | None = None, *, steps_per_epoch: int, title: str = ""):
    """Two panels: the training loss per iteration, and train/val accuracy per epoch.

    Uses matplotlib's object API with the Agg canvas, so it needs no display
    and leaves pyplot's global state and backend alone.

    Args:
      history: a :class:`History` (e.g. ``fit(...).history``).
      path: where to save a PNG (written atomically); ``None``: do not save.
      steps_per_epoch: iterations per epoch (draws the per-epoch mean loss).
      title: a title above both panels.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

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
    ax_acc.plot(epochs, history.train_acc, marker=".", label="train")
    ax_acc.plot(epochs, history.val_acc, marker=".", label="validation")
    if n_epochs:
        best = int(np.argmax(np.asarray(history.val_acc)[::-1]))  # the latest maximum, as fit keeps
        best = n_epochs - 1 - best
        ax_acc.axvline(best + 1, color="gray", linestyle=":", label=f"best val (epoch {best + 1})")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (test mode)")
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


# fit_many lives in jaxlayers.sweep, which builds on this module; re-exported here.
from jaxlayers.sweep import fit_many as fit_many  # noqa: E402
