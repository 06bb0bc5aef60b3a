"""After training: load a run back in one call, then predict and evaluate on raw inputs.

:func:`load_run` reads a run directory (or its ``checkpoint.safetensors``)
written by ``jaxlayers train`` or ``fit(..., checkpoint_dir=)`` and returns a
:class:`Run`: the model rebuilt from its record
(:func:`jaxlayers.model.model_from_record`), the best or the last epoch's
parameters and running statistics, the preprocessing the training data went
through (standardisation mean and std, input shape, class names), the
training configuration and history, and ``summary.json`` / ``config.json``
when the directory has them. It needs neither the training data nor a
compiled training program: the parameter shapes come from an abstract
``model.init`` (``jax.eval_shape``), and only the four trees a prediction
needs are read from the verified file.

``Run.predict(X_raw)``, ``Run.predict_proba(X_raw)`` and ``Run.evaluate(X_raw,
y)`` take inputs as the dataset's loader reads them, before standardisation,
and apply the stored standardisation with the arithmetic the loader used
(:func:`jaxlayers.data.apply_standardization`), so a loaded run reproduces the
accuracies the run reported, exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_int, require
from jaxlayers.data import Vocabulary, apply_standardization
from jaxlayers.model import PREDICT_BATCH_SIZE, model_from_record, predict, predict_proba
from jaxlayers.training.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint_trees
from jaxlayers.training.config import TrainConfig
from jaxlayers.training.evaluation import bits_per_token, evaluate
from jaxlayers.training.results import History

__all__ = ["WHICH", "Preprocessing", "Run", "load_run"]

WHICH = ("best", "last")


def _stat(values, input_shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    """A stored mean or std as a float64 array that broadcasts against one example of ``input_shape``:
    its own shape if it does, the example's shape if it has as many values, or one value per
    channel (the first axis) of an image."""
    a = np.asarray(values, np.float64)
    if a.shape == input_shape or a.size == 1:
        return a
    if a.size == math.prod(input_shape):
        return a.reshape(input_shape)
    if a.ndim == 1 and len(input_shape) > 1 and a.shape[0] == input_shape[0]:
        return a.reshape((a.shape[0],) + (1,) * (len(input_shape) - 1))
    raise CheckpointError(f"{where}: the stored {name} has shape {a.shape}, which does not fit inputs {input_shape}")


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessing:
    """What a run's model expects of an input, and how to get there from a raw one.

    Attributes:
      input_shape: the shape of one example, ``X_train.shape[1:]`` of the
        training data (``(64,)`` for digits).
      mean, std: float64 standardisation statistics of the training split,
        broadcasting against ``input_shape``; ``None`` when the training data
        carried none (the model then takes its inputs as given).
      class_names: a name per label, or ``None``.
      image_shape: ``(C, H, W)`` of one example as an image, if the dataset
        had one (``Dataset.image_shape``), else ``None``.
      stored: ``False`` for a checkpoint written before jaxlayers stored the
        preprocessing: ``mean``/``std`` are then unknown, and inputs must be
        standardised already.
      vocab: the token sets' :class:`~jaxlayers.data.Vocabulary` (ids to text), or ``None``.
    """

    input_shape: tuple[int, ...]
    mean: np.ndarray | None = dataclasses.field(default=None, repr=False)
    std: np.ndarray | None = dataclasses.field(default=None, repr=False)
    class_names: tuple[str, ...] | None = None
    image_shape: tuple[int, ...] | None = None
    stored: bool = True
    vocab: Vocabulary | None = None

    @property
    def standardizes(self) -> bool:
        """Whether raw inputs are standardised (``mean`` and ``std`` known)."""
        return self.mean is not None and self.std is not None

    def accepted_shapes(self) -> list[tuple[int, ...]]:
        """The per-example shapes :meth:`as_input` takes: ``input_shape``; flat ``(prod(input_shape),)``;
        with an image shape ``(C, H, W)`` (the dataset's, or a 3-D ``input_shape``): ``(C, H, W)``, and
        ``(H, W)`` when ``C == 1`` (e.g. scikit-learn's ``load_digits().images``)."""
        shapes = [tuple(self.input_shape), (math.prod(self.input_shape),)]
        image = self.image_shape or (tuple(self.input_shape) if len(self.input_shape) == 3 else None)
        if image is not None and math.prod(image) == math.prod(self.input_shape):
            shapes.append(tuple(image))
            if image[0] == 1:
                shapes.append(tuple(image[1:]))
        return list(dict.fromkeys(shapes))

    def as_input(self, X, where: str = "Run.predict") -> np.ndarray:
        """``X`` reshaped to ``(N, *input_shape)``: the one place where a run's inputs are reshaped
        (``Run.predict``/``predict_proba``/``evaluate``/``standardize`` and ``jaxlayers predict`` /
        ``evaluate`` go through it).

        Accepts the per-example shapes of :meth:`accepted_shapes`; every reshape is row-major, the
        order in which a dataset's flat features are its images (``Dataset.as_images``).

        Raises:
          ValueError: any other shape (one line naming the shapes accepted and the shape seen).
        """
        X = np.asarray(X)
        want = tuple(self.input_shape)
        if X.ndim >= 1 and X.shape[1:] == want:
            return X
        accepted = self.accepted_shapes()
        if X.ndim >= 1 and X.shape[1:] in accepted:
            return X.reshape((X.shape[0], *want))
        shapes = " or ".join("(N, " + ", ".join(map(str, a)) + ")" for a in accepted)
        raise ValueError(
            f"{where}: X has shape {X.shape}, but this run's model takes inputs of shape {shapes} "
            f"({'raw, as the dataset loader reads them' if self.standardizes else 'as in training'})"
        )

    def __call__(self, X, where: str = "Run.standardize") -> np.ndarray:
        """``X`` reshaped (:meth:`as_input`) and standardised (float32), or as given if there is
        nothing to apply.

        Raises:
          ValueError: ``X`` of a shape :meth:`as_input` refuses.
          TypeError: non-numeric ``X``.
        """
        X = self.as_input(X, where)
        require(
            np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_,
            where,
            f"X must be numeric, got dtype {X.dtype} (shape {X.shape})",
            TypeError,
        )
        return apply_standardization(X, self.mean, self.std) if self.standardizes else X

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], where: str) -> Preprocessing:
        """From a checkpoint's metadata (``preprocessing``; older checkpoints: the data shapes only)."""
        record = meta.get("preprocessing")
        if record is None:
            shape = tuple(int(d) for d in meta["data"]["shapes"]["X_train"][1:])
            return cls(input_shape=shape, stored=False)
        shape = tuple(int(d) for d in record["input_shape"])
        mean, std = record.get("mean"), record.get("std")
        if mean is not None and std is not None:
            mean, std = _stat(mean, shape, "mean", where), _stat(std, shape, "std", where)
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
                raise CheckpointError(f"{where}: the stored standardisation has non-finite values or std <= 0")
        else:
            mean = std = None
        names, image, vocab = record.get("class_names"), record.get("image_shape"), record.get("vocab")
        if vocab is not None:
            try:
                vocab = Vocabulary.from_record(vocab)
            except (ValueError, TypeError) as e:
                raise CheckpointError(f"{where}: the stored vocabulary is unreadable: {e}") from None
        return cls(
            shape,
            mean,
            std,
            class_names=None if names is None else tuple(str(c) for c in names),
            image_shape=None if image is None else tuple(int(d) for d in image),
            vocab=vocab,
        )


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class Run:
    """A trained run, loaded back by :func:`load_run`.

    Attributes:
      model: the model, rebuilt from the checkpoint's record (any registered
        model of the protocol).
      params, model_state: the ``which`` parameters and running statistics
        (pytrees of arrays on the default device).
      which: ``"best"`` (the epoch of the highest validation accuracy) or
        ``"last"``.
      epoch: the epoch (from 1) these parameters are from.
      epochs: the epochs the run has trained.
      best_epoch, best_val_acc: the best epoch and its validation accuracy.
      preprocessing: the :class:`Preprocessing` the inputs need.
      train_config: the :class:`~jaxlayers.train.TrainConfig` it trained with.
      history: its :class:`~jaxlayers.train.History` (per-step losses,
        per-epoch accuracies).
      summary: ``summary.json`` of the run directory (``jaxlayers train``
        writes it: ``test_acc`` with the best parameters, ``final_test_acc``
        with the last, ...), or ``None``.
      config: ``config.json`` of the run directory, or ``None``.
      path: the checkpoint file read.
      metadata: the checkpoint's whole run metadata.
    """

    model: Any
    params: Any
    model_state: Any
    which: str
    epoch: int
    epochs: int
    best_epoch: int
    best_val_acc: float
    preprocessing: Preprocessing
    train_config: TrainConfig
    history: History
    summary: dict[str, Any] | None
    config: dict[str, Any] | None
    path: Path
    metadata: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        """The run directory (the checkpoint's folder)."""
        return self.path.parent

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """A name per label (``run.class_names[label]``), or ``None``."""
        return self.preprocessing.class_names

    @property
    def vocab(self) -> Vocabulary | None:
        """The vocabulary of a run on a token set (``run.vocab.decode(ids)`` is the text), or ``None``."""
        return self.preprocessing.vocab

    def __repr__(self) -> str:
        pre = self.preprocessing
        inputs = (
            f"raw inputs {pre.input_shape}, standardised on the way in"
            if pre.standardizes
            else f"inputs {pre.input_shape} as given"
        )
        return (
            f"Run({str(self.run_dir)!r}, {type(self.model).__name__}, {self.which} parameters: epoch {self.epoch} "
            f"of {self.epochs}, best validation accuracy {self.best_val_acc:.4f} at epoch {self.best_epoch}; {inputs})"
        )

    def standardize(self, X) -> np.ndarray:
        """Raw inputs ``(N, *input_shape)`` as the model saw its training data (float32).

        Raises:
          ValueError: a shape other than ``(N, *input_shape)``.
          TypeError: non-numeric ``X``.
        """
        return self.preprocessing(X, "Run.standardize")

    def predict(self, X, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Labels for raw inputs: standardise, then :func:`jaxlayers.model.predict`.

        Args:
          X: raw inputs (as the dataset's loader reads them, e.g.
            scikit-learn's ``load_digits().data``): ``(N, *input_shape)``, flat
            ``(N, prod(input_shape))``, or images ``(N, C, H, W)`` / ``(N, H, W)``
            for a one-channel dataset (``load_digits().images``), whichever the
            model trained on (:meth:`Preprocessing.as_input`); any ``N``, ``0`` included.
          batch_size: examples per compiled call.

        Returns:
          int32 ``(N,)`` labels (``run.class_names[label]`` names them).

        Raises:
          ValueError: ``X`` of another shape (one line naming the shapes accepted and the one seen).
          TypeError: non-numeric ``X``.
        """
        X = self.preprocessing(X, "Run.predict")
        return predict(self.model, self.params, self.model_state, X, batch_size=batch_size)

    def predict_proba(self, X, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities ``(N, C)`` for raw inputs: :func:`jaxlayers.model.predict_proba`
        after standardising (for an SVM-loss model, the uncalibrated softmax of its scores).

        Raises:
          As :meth:`predict`.
        """
        X = self.preprocessing(X, "Run.predict_proba")
        return predict_proba(self.model, self.params, self.model_state, X, batch_size=batch_size)

    def evaluate(self, X, y, *, batch_size: int = 1024) -> float:
        """Test-mode accuracy on raw inputs: :func:`jaxlayers.train.evaluate` after standardising.

        Returns:
          The fraction of ``X`` classified as ``y``, a float in ``[0, 1]``
          (``nan`` for ``N = 0``); on the run's own test split it equals the
          ``test_acc`` (best) or ``final_test_acc`` (last) of ``summary.json``.

        Raises:
          ValueError: ``X`` of another shape; ``y`` not ``(N,)`` or labels
            outside ``[0, C)``.
          TypeError: non-numeric ``X``, non-integer ``y``.
        """
        X = self.preprocessing(X, "Run.evaluate")
        return evaluate(self.model, self.params, self.model_state, X, y, batch_size=batch_size)

    def bits_per_token(self, X, y, *, batch_size: int = 1024) -> float:
        """Bits per counted label (bits per character for a character model) of a sequence model on
        ``X (N, T)``, ``y (N, T)``: :func:`jaxlayers.train.bits_per_token` with this run's parameters.

        Raises:
          ValueError: a model without sequence targets; shapes or labels it refuses.
        """
        X = self.preprocessing.as_input(X, "Run.bits_per_token")
        return bits_per_token(self.model, self.params, self.model_state, X, y, batch_size=batch_size)

    def _caption_inputs(self, X, standardized: bool, where: str) -> np.ndarray:
        require(
            hasattr(self.model, "caption_accuracy"),
            where,
            f"this run's model ({type(self.model).__name__}) is not a captioning model "
            "(jaxlayers.CaptioningRNN or CaptioningTransformer)",
        )
        return self.preprocessing.as_input(X, where) if standardized else self.preprocessing(X, where)

    def captions(self, X, max_length: int | None = None, *, standardized: bool = False) -> np.ndarray:
        """A captioning run's greedy captions (:meth:`jaxlayers.CaptioningRNN.sample`) of images ``X``.

        Args:
          X: raw images as the dataset's loader reads them (standardised here with the stored
            statistics), or already standardised ones with ``standardized=True`` (a ``Dataset``'s).
          max_length: words per caption (``None``: the model's ``max_length``).

        Returns:
          int32 NumPy ``(N, max_length)``, the words after ``<START>``; decode them with
          :func:`jaxlayers.data.decode_captions` and ``self.vocab``.

        Raises:
          ValueError: a run whose model is not a captioning model; ``X`` of another shape.
        """
        X = self._caption_inputs(X, standardized, "Run.captions")
        n = self.model.max_length if max_length is None else max_length
        return np.asarray(self.model.sample(self.params, X, n, state=self.model_state))

    def caption_accuracy(self, X, captions, *, standardized: bool = False) -> tuple[float, float]:
        """``(exact, per_word)``: a captioning run's greedy captions of ``X`` (as :meth:`captions`) against
        the reference ``captions (N, L)`` (:meth:`jaxlayers.CaptioningRNN.caption_accuracy`).

        Raises:
          ValueError: a run whose model is not a captioning model; shapes that do not fit.
        """
        X = self._caption_inputs(X, standardized, "Run.caption_accuracy")
        return self.model.caption_accuracy(self.params, X, captions, state=self.model_state)

    def sample(self, length: int = 300, prompt: str = "", *, temperature: float = 1.0, seed: int = 0) -> str:
        """Text generated by a token model (``jaxlayers sample``): ``length`` tokens after ``prompt``.

        Each token is drawn from ``softmax(scores / temperature)`` at the last position of the text so
        far (``temperature=0``: the argmax, greedy), ``seed`` fixing the draws. The model sees the last
        ``T`` tokens (its ``input_shape``, the training windows' length), a shorter text at the start of
        the window (the model is causal: later positions do not change earlier scores), so it never
        sees more context than in training. An empty prompt starts from the vocabulary's first token.

        Returns:
          ``prompt`` followed by the generated text (``vocab.decode``).

        Raises:
          ValueError: a run without a vocabulary or sequence targets; ``length < 0``;
            ``temperature < 0``; a prompt with tokens outside the vocabulary (and no unknown id).
        """
        where = "Run.sample"
        require(self.vocab is not None, where, "this run's data had no vocabulary (train on a token set)")
        require(getattr(self.model, "sequence_targets", False), where, "this run's model does not score sequences")
        require(
            not hasattr(self.model, "caption_accuracy"),
            where,
            "this run's model captions images; use Run.captions(images) (or `jaxlayers evaluate`)",
        )
        length = check_int(length, where, "length", minimum=0)
        require(float(temperature) >= 0, where, f"temperature must be >= 0, got {temperature}")
        ids = [int(i) for i in self.vocab.encode(prompt)] if prompt else [0]
        T = int(self.preprocessing.input_shape[0])
        window = np.zeros((1, T), np.int32)
        key = jax.random.key(int(seed))
        step = _next_token(self.model)
        for _ in range(length):
            ctx = ids[-T:]
            window[0, : len(ctx)] = ctx
            key, sub = jax.random.split(key)
            nxt = step(self.params, self.model_state, jnp.asarray(window), len(ctx) - 1, sub, float(temperature))
            ids.append(int(nxt))
        return (prompt or self.vocab.tokens[0]) + self.vocab.decode(ids[-length:] if length else [])


def _next_token(model):
    """``next(params, model_state, window (1, T), position, key, temperature) -> id``, jitted: the token
    after ``window[0, position]``, greedy for ``temperature == 0`` else drawn from the softmax."""

    @jax.jit
    def step(params, model_state, window, position, key, temperature):
        scores, _ = model.apply(params, model_state, window, train=False)
        logits = scores[0, position].astype(jnp.float32)
        drawn = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
        return jnp.where(temperature > 0, drawn, jnp.argmax(logits))

    return step


def _read_json(path: Path) -> dict[str, Any] | None:
    """A run directory's JSON file, or ``None`` (missing; unreadable: with a warning)."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warnings.warn(f"load_run: ignoring {path}: not readable JSON ({e})", stacklevel=3)
        return None
    return value if isinstance(value, dict) else None


def _rebuild(record, where: str):
    """The model of a checkpoint's record; a class or config it cannot rebuild is a CheckpointError."""
    try:
        return model_from_record(record)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: the recorded model cannot be rebuilt: {e}") from e


def _rebuild_config(record, where: str) -> TrainConfig:
    try:
        return TrainConfig(**record)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: the recorded training config cannot be rebuilt: {e}") from e


def load_run(run_dir: str | os.PathLike, which: str = "best", *, index: int = 0) -> Run:
    """Load a trained run in one call: model, parameters, preprocessing, configuration, history.

    Args:
      run_dir: a run directory holding ``checkpoint.safetensors`` (``jaxlayers
        train -o DIR``, ``fit(..., checkpoint_dir=DIR)``), or the checkpoint
        file itself.
      which: ``"best"``: the parameters and running statistics of the epoch
        with the highest validation accuracy (what ``jaxlayers train``
        reports as ``test_acc``); ``"last"``: those of the last epoch
        trained.
      index: for a ``fit_many`` checkpoint, which of its models (from 0).

    Returns:
      A :class:`Run`; ``run.predict(X_raw)``, ``run.predict_proba(X_raw)``
      and ``run.evaluate(X_raw, y)`` apply its standardisation first. A
      checkpoint written before jaxlayers stored the preprocessing loads
      with a ``UserWarning``: its model expects standardised inputs, which
      ``Run`` then passes on unchanged.

    Raises:
      FileNotFoundError: no such directory, or no checkpoint in it (naming
        the path).
      CheckpointError: a truncated, corrupt or tampered file, metadata it
        cannot use, or tensors that do not fit the recorded model.
      ValueError: ``which`` not ``"best"``/``"last"``; ``index`` outside the
        checkpoint's models.
      TypeError: a float64 model loaded with JAX's x64 mode off (the model's
        own error; wrap the call in ``with jax.enable_x64(True):``).
    """
    require(which in WHICH, "load_run", f"which must be 'best' or 'last', got {which!r}")
    index = check_int(index, "load_run", "index", minimum=0)
    path = _checkpoint_path(run_dir)
    where = f"load_run: checkpoint {path}"
    prefix = "best" if which == "best" else "state"
    parts: dict[str, Any] = {}

    def templates(meta: dict[str, Any]) -> dict[str, Any]:
        parts.update(_run_parts(meta, index, where))
        return _templates(parts, prefix)

    trees, meta = load_checkpoint_trees(path, templates)
    params, model_state = trees[f"{prefix}.params"], trees[f"{prefix}.model_state"]
    many, history, k = parts["many"], parts["history"], index if parts["many"] else 0
    if many:
        params, model_state = jax.tree.map(lambda a: a[index], (params, model_state))
        history = history.select(index)
    preprocessing, epochs = parts["preprocessing"], parts["epochs"]
    if not preprocessing.stored:
        _warn_unknown_preprocessing(path)
    best_epoch = int(parts["best_epoch"][k])
    return Run(
        model=parts["model"],
        params=params,
        model_state=model_state,
        which=which,
        epoch=best_epoch if which == "best" else epochs,
        epochs=epochs,
        best_epoch=best_epoch,
        best_val_acc=float(parts["best_val_acc"][k]),
        preprocessing=preprocessing,
        train_config=parts["train_config"],
        history=history,
        summary=_read_json(path.parent / "summary.json"),
        config=_read_json(path.parent / "config.json"),
        path=path,
        metadata=meta,
    )


def _warn_unknown_preprocessing(path: Path) -> None:
    """A ``UserWarning``: a checkpoint from before the preprocessing was stored (inputs pass on unchanged)."""
    warnings.warn(
        f"load_run: {path} was written before checkpoints stored the preprocessing, so the "
        "standardisation of its training data is unknown: Run.predict/predict_proba/evaluate pass inputs on "
        "unchanged, and the model expects them standardised as in training (e.g. jaxlayers.data.load(name).X_test). "
        "Retrain (or resume) with this version to store it.",
        UserWarning,
        stacklevel=3,
    )


def _checkpoint_path(run_dir) -> Path:
    """The checkpoint file of ``run_dir`` (a run directory or the file itself).

    Raises:
      FileNotFoundError: no such directory or file, or no checkpoint in it.
    """
    path = given = Path(run_dir)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        where = "no such directory or file" if not given.exists() else "no checkpoint"
        raise FileNotFoundError(
            f"load_run: {where}: {path} (expected a run directory with {CHECKPOINT_NAME}, "
            "from `jaxlayers train -o DIR` or fit(..., checkpoint_dir=DIR))"
        )
    return path


def _run_parts(meta: dict[str, Any], index: int, where: str) -> dict[str, Any]:
    """Model ``index`` of the verified metadata: the model rebuilt, its config, history, best epoch and
    accuracy, epochs and preprocessing.

    Raises:
      ValueError: ``index`` outside the checkpoint's models.
      CheckpointError: metadata that is incomplete or malformed.
    """
    try:
        records = meta["models"]
        require(
            index < len(records),
            "load_run",
            f"index {index} is out of range: the checkpoint holds {len(records)} model(s)",
        )
        return {
            "many": meta.get("kind") == "fit_many",
            "k_models": len(records),
            "model": _rebuild(records[index], where),
            "train_config": _rebuild_config(meta["train_configs"][index], where),
            "history": History.from_dict(meta["history"]),
            "best_epoch": np.asarray(meta["best_epoch"], np.int64).reshape(-1),
            "best_val_acc": np.asarray(meta["best_val_acc"], np.float64).reshape(-1),
            "epochs": int(meta["epoch"]),
            "preprocessing": Preprocessing.from_metadata(meta, where),
        }
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{where}: its run metadata is incomplete or malformed ({type(e).__name__}: {e})") from e


def _templates(parts: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The tensors to read, shaped by an abstract init of the rebuilt model (``jax.eval_shape``: nothing
    is compiled or run); stacked over the models of a ``fit_many`` checkpoint."""
    shapes = jax.eval_shape(parts["model"].init, jax.random.key(0))
    if parts["many"]:
        k = parts["k_models"]
        shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct((k, *s.shape), s.dtype), shapes)
    return {f"{prefix}.params": shapes[0], f"{prefix}.model_state": shapes[1]}
