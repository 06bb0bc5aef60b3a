"""A run's checkpoint before training: is it there, may it be replaced, does a resume match it.

:func:`open_checkpoint` is the one place these are decided (under the run directory's lock, when there is
one): :func:`~jaxlayers.training.checkpoint.check_checkpoint_target` (a fresh run does not replace a run
unless asked; a resume needs a checkpoint) and, for a resume, :func:`check_resume_metadata` of the
checkpoint's metadata against :func:`run_info` of this run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxlayers.data import preprocessing_record
from jaxlayers.model import model_record
from jaxlayers.training.checkpoint import CheckpointError, check_checkpoint_target, read_checkpoint_metadata
from jaxlayers.training.config import ConfiguredOptimizer, TrainConfig

__all__ = ["check_resume_metadata", "open_checkpoint", "optimizer_record", "run_info"]


def open_checkpoint(
    directory, info: dict[str, Any], *, resume: bool, overwrite: bool, where: str
) -> tuple[Path | None, dict[str, Any] | None]:
    """``(checkpoint path, metadata)``: where this run checkpoints (``None`` without ``directory``) and, for
    a resume, the checkpoint's metadata once it matched this run (else ``None``). Reads no tensors.

    Raises:
      ValueError, FileNotFoundError, RunExists: as :func:`~jaxlayers.training.checkpoint.check_checkpoint_target`.
      CheckpointError: a corrupt checkpoint, or one of another run (:func:`check_resume_metadata`).
    """
    ckpt = check_checkpoint_target(directory, resume=resume, overwrite=overwrite, where=where)
    if not resume:
        return ckpt, None
    meta = read_checkpoint_metadata(ckpt)
    check_resume_metadata(meta, info)
    return ckpt, meta


def run_info(kind: str, models, configs, data, optimizer=None) -> dict[str, Any]:
    """The description of a run that its checkpoint records and a resume must match (models, configs, data
    shapes, and an optimizer given to ``fit``), with the preprocessing ``load_run`` needs."""
    info = {
        "kind": kind,
        "models": [model_record(m) for m in models],
        "train_configs": [c.to_dict() for c in configs],
        "data": {
            "name": str(getattr(data, "name", "")),
            "shapes": {k: list(np.shape(getattr(data, k))) for k in ("X_train", "y_train", "X_val", "y_val")},
            # your own arrays (Dataset.from_arrays, npz:PATH): their SHA-256, so a resume on changed data is refused
            **({"digest": data.digest} if getattr(data, "digest", None) else {}),
        },
        # what load_run needs to apply the model to raw inputs (not compared on resume)
        "preprocessing": preprocessing_record(data),
    }
    if optimizer is not None and not isinstance(optimizer, ConfiguredOptimizer):
        info["optimizer"] = optimizer_record(models[0], optimizer)
    return info


def optimizer_record(model, optimizer) -> dict[str, Any]:
    """What a checkpoint records of an optax optimizer given to ``fit(..., optimizer=)``: its state's
    tree structure, shapes and dtypes (from ``jax.eval_shape``; nothing runs). A resume must pass an
    optimizer whose state matches."""
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    state = jax.eval_shape(optimizer.init, params)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {
        "given": True,
        "state": [f"{jax.tree_util.keystr(k)}: {v.dtype}{list(v.shape)}" for k, v in leaves],
    }


def check_resume_metadata(meta: dict[str, Any], run_info: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose run differs from this one.

    Args:
      meta: the checkpoint's metadata (``read_checkpoint_metadata``).
      run_info: this run's description (:func:`run_info`).

    Raises:
      CheckpointError: another kind of run (``fit`` / ``fit_many``), model,
        training configuration (``epochs`` may differ) or data shapes, naming
        every field that differs.
    """
    if meta.get("kind") != run_info["kind"]:
        raise CheckpointError(f"resume: the checkpoint is from {meta.get('kind')!r}, not {run_info['kind']!r}")
    _compare("model", meta.get("models"), run_info["models"])
    saved, now = meta.get("train_configs"), run_info["train_configs"]
    if isinstance(saved, list):  # fields added since the checkpoint was written take their defaults
        saved = [{**TrainConfig().to_dict(), **c} if isinstance(c, dict) else c for c in saved]
    # a cosine schedule spans all epochs: extending the run would change every step size
    cosine = any(c.get("schedule") == "cosine" for c in now)
    _compare("training config", saved, now, ignore=() if cosine else ("epochs",))
    _compare("data", meta.get("data"), run_info["data"])
    _compare_optimizers(meta.get("optimizer"), run_info.get("optimizer"))


def _compare_optimizers(saved, now) -> None:
    """Refuse to resume with another optimizer than the checkpoint's (given or the config's)."""
    if saved == now:
        return
    if saved is None:
        raise CheckpointError(
            "resume: the checkpoint was trained with the TrainConfig's optimizer, but this run passes "
            "optimizer=; resume without it"
        )
    if now is None:
        raise CheckpointError(
            "resume: the checkpoint was trained with an optimizer passed as fit(..., optimizer=); pass the same "
            "optimizer again to resume"
        )
    diff = sorted(set(saved.get("state", [])) ^ set(now.get("state", [])))
    raise CheckpointError(
        "resume: the optimizer's state differs from the checkpoint's (pass the optimizer the run was trained "
        f"with); entries in one but not the other: {diff[:6]}"
    )


def _compare(what: str, saved, now, ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointError` naming every field in which ``saved`` differs from ``now``."""
    now = json.loads(json.dumps(now))  # the checkpoint's side went through JSON
    if isinstance(saved, list) and isinstance(now, list):
        if len(saved) != len(now):
            raise CheckpointError(f"resume: the checkpoint holds {len(saved)} {what}s, this run {len(now)}")
        for k, (a, b) in enumerate(zip(saved, now, strict=True)):
            _compare(f"{what} {k}" if len(now) > 1 else what, a, b, ignore)
        return
    if not isinstance(saved, dict):
        raise CheckpointError(f"resume: the checkpoint's {what} is {saved!r}, not a record")
    flat_saved, flat_now = _flatten_dict(saved), _flatten_dict(now)
    keys = sorted((set(flat_saved) | set(flat_now)) - set(ignore))
    diffs = [
        f"{k}: checkpoint {flat_saved.get(k)!r}, now {flat_now.get(k)!r}"
        for k in keys
        if flat_saved.get(k) != flat_now.get(k)
    ]
    if diffs:
        raise CheckpointError(f"resume: the {what} differs from the checkpoint's ({'; '.join(diffs)})")


def _flatten_dict(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
