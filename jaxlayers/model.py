"""The model protocol: what a model gives the training loop, the CLI and checkpoints.

Any object with these five members trains through :func:`jaxlayers.train.fit`
(one device or a device mesh), :func:`jaxlayers.train.fit_many` (``K``
models vmapped), :func:`jaxlayers.train.evaluate`, checkpoints and resume;
jaxlayers' own models (:class:`~jaxlayers.FullyConnectedNet`, the conv nets)
are instances, not special cases:

``init(key) -> (params, model_state)``
    Fresh parameters (a pytree of float arrays) and running statistics (a
    pytree, ``{}`` if none) from a PRNG key.
``apply(params, model_state, x, *, train, key=None) -> (scores, new_model_state)``
    Class scores ``(N, C)`` for a batch ``x`` (``(N, ...)``). ``train`` is a
    static Python bool (batch statistics and dropout when ``True``); ``key``
    the dropout key. Examples must be independent in test mode
    (``train=False``): evaluation runs in batches of any size.
``loss(params, model_state, x, y, *, key=None) -> (loss, (new_model_state, scores))``
    The scalar training objective in train mode, shaped for
    ``jax.value_and_grad(model.loss, has_aux=True)``; ``scores`` are the
    train-mode scores (the loop counts the batch's correct predictions from
    them, so training accuracy costs no second pass).
``to_dict() -> dict`` and ``from_dict(d)`` (a classmethod)
    The configuration as JSON values, and back: checkpoints and run
    directories record it, resume compares it, :func:`model_from_record`
    rebuilds the model.

How the loop holds a model. A model is either

* a **pytree** (jaxlayers' models are: ``jax.tree_util`` flattens them), whose
  leaves -- numbers or arrays such as ``reg`` and ``weight_scale`` -- reach the
  compiled program as *traced* values: a second ``fit`` that changes only them
  compiles nothing, and ``fit_many`` stacks them over the models; its treedef
  (the rest of the configuration) keys the compilation cache; or
* any other **hashable** object (a frozen dataclass, say), which is static:
  every distinct value compiles its own program.

:func:`split_model` / :func:`merge_model` are that split, used by every
compiled function of the training side.

Predictions. :func:`predict` and :func:`predict_proba` work for any model of
the protocol: test-mode ``apply`` in fixed-size, jitted batches (the last one
padded), so any number of examples, ``N = 0`` included, runs one compiled
program per (model structure, batch size, example shape, dtype).

Records. :func:`model_record` is ``{"class": name, "config": to_dict()}``;
:func:`model_from_record` looks the class name up in a registry -- jaxlayers'
models are registered; register your own with :func:`register_model`. Nothing
is imported by a name read from a file.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_int, require

__all__ = [
    "DataclassRecord",
    "Model",
    "check_model",
    "merge_model",
    "model_from_record",
    "model_record",
    "predict",
    "predict_proba",
    "register_model",
    "registered_models",
    "split_model",
]


@runtime_checkable
class Model(Protocol):
    """The model protocol (see the module docstring for the contract of each member)."""

    def init(self, key: jax.Array) -> tuple[Any, Any]: ...

    def apply(self, params, model_state, x, *, train: bool, key: jax.Array | None = None) -> tuple[jax.Array, Any]: ...

    def loss(self, params, model_state, x, y, *, key: jax.Array | None = None) -> tuple[jax.Array, tuple[Any, Any]]: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Model: ...


_MEMBERS = ("init", "apply", "loss", "to_dict", "from_dict")


def check_model(model, where: str) -> None:
    """Raise ``TypeError`` unless ``model`` provides the protocol's members (naming the missing ones)."""
    missing = [m for m in _MEMBERS if not callable(getattr(model, m, None))]
    require(
        not missing,
        where,
        f"model must provide the model protocol (init, apply, loss, to_dict, from_dict; see jaxlayers.model); "
        f"{type(model).__name__} lacks {', '.join(missing)}",
        TypeError,
    )


class _Static:
    """The treedef stand-in for a model that is not a pytree: the model itself, hashed by value."""

    __slots__ = ("model",)

    def __init__(self, model) -> None:
        self.model = model

    def __hash__(self) -> int:
        return hash((type(self.model), self.model))

    def __eq__(self, other) -> bool:
        return isinstance(other, _Static) and type(other.model) is type(self.model) and other.model == self.model


def split_model(model, where: str = "model") -> tuple[Any, list]:
    """``(static, leaves)``: the hashable part of ``model`` that keys compilation, and its traced leaves.

    A pytree model gives its treedef and leaves; any other object is all
    static (``leaves == []``) and must be hashable.

    Raises:
      TypeError: a non-pytree model that is not hashable.
    """
    leaves, treedef = jax.tree_util.tree_flatten(model)
    if len(leaves) == 1 and leaves[0] is model:  # not a pytree: the model is its own leaf
        try:
            static = _Static(model)
            hash(static)
        except TypeError:
            raise TypeError(
                f"{where}: {type(model).__name__} must be hashable (e.g. a frozen dataclass) or a pytree, "
                "so that its compiled training program can be cached"
            ) from None
        return static, []
    return treedef, leaves


def merge_model(static, leaves):
    """Inverse of :func:`split_model` (``leaves`` may be tracers)."""
    if isinstance(static, _Static):
        return static.model
    return jax.tree_util.tree_unflatten(static, leaves)


class Registry:
    """Classes by name, for records ``{"class": name, "config": ...}``: what a file names is looked up
    here, never imported. One for models (:func:`register_model`), one for ``jaxlayers.nn``'s layers."""

    def __init__(self, kind: str, register_as: str) -> None:
        self.kind, self.register_as = kind, register_as  # "model", "jaxlayers.model.register_model"
        self._classes: dict[str, type] = {}

    def register(self, cls: type, where: str) -> type:
        """Add ``cls`` under its name; ``ValueError`` if a different class already has that name."""
        name = cls.__name__
        require(
            self._classes.get(name, cls) is cls,
            where,
            f"a different class is already registered as {name!r} ({self._classes.get(name)!r})",
        )
        self._classes[name] = cls
        return cls

    def classes(self) -> dict[str, type]:
        """The registered classes by name (a copy)."""
        return dict(self._classes)

    def lookup(self, name, where: str) -> type:
        """The class registered as ``name``; ``ValueError`` naming the known ones otherwise."""
        require(
            name in self._classes,
            where,
            f"unknown {self.kind} class {name!r}; known: {', '.join(sorted(self._classes))} "
            f"(register your own with {self.register_as})",
        )
        return self._classes[name]


class DataclassRecord:
    """``to_dict``/``from_dict`` for a dataclass model whose fields are its configuration (a mixin).

    ``to_dict`` writes each field as a JSON value: tuples as lists, a NumPy ``dtype`` by name;
    ``from_dict`` turns lists back into tuples and calls the constructor, which validates.
    jaxlayers' models and :class:`jaxlayers.CaptioningRNN` share it.
    """

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values (tuples as lists, ``dtype`` by name)."""
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.name if isinstance(v, np.dtype) else list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`.

        Raises:
          ValueError, TypeError: unknown fields, or values the constructor refuses.
        """
        require(isinstance(d, dict), cls.__name__, f"from_dict needs a dict, got {type(d).__name__}", TypeError)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        require(not unknown, cls.__name__, f"from_dict: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def record_of(obj) -> dict[str, Any]:
    """``{"class": type name, "config": obj.to_dict()}``, JSON-ready: a model's or a layer's record."""
    return {"class": type(obj).__name__, "config": obj.to_dict()}


_MODELS = Registry("model", "jaxlayers.model.register_model")


def register_model(cls: type) -> type:
    """Register a model class so checkpoints and run directories can rebuild it by name (a decorator).

    Raises:
      ValueError: another class is registered under the same name.
    """
    return _MODELS.register(cls, "register_model")


def registered_models() -> dict[str, type]:
    """The registered model classes by name."""
    return _MODELS.classes()


def model_record(model) -> dict[str, Any]:
    """``{"class": type name, "config": model.to_dict()}``, JSON-ready."""
    return record_of(model)


def model_from_record(record: dict[str, Any]):
    """Rebuild a model from :func:`model_record`'s output.

    Raises:
      ValueError: an unregistered class name (register it with
        :func:`register_model`), or a config its ``from_dict`` refuses.
    """
    name = record.get("class") if isinstance(record, dict) else None
    return _MODELS.lookup(name, "model_from_record").from_dict(record["config"])


# ---------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------

PREDICT_BATCH_SIZE = 1024


def _predict_fn(leaves, params, model_state, x, *, static, proba: bool):
    """One batch in test mode: labels (int32 ``(B,)``) or softmax probabilities (``(B, C)``)."""
    scores, _ = merge_model(static, leaves).apply(params, model_state, x, train=False)
    if proba:
        return jax.nn.softmax(scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=-1)
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


_predict_batch = jax.jit(_predict_fn, static_argnames=("static", "proba"))


def _batched(model, params, model_state, x, batch_size, *, proba: bool, where: str) -> np.ndarray:
    check_model(model, where)
    batch_size = check_int(batch_size, where, "batch_size", minimum=1)
    x = np.asarray(x)
    require(x.ndim >= 1, where, f"x must have shape (N, ...), one row per example, got shape {x.shape}")
    require(
        np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_,
        where,
        f"x must be numeric, got dtype {x.dtype} (shape {x.shape})",
        TypeError,
    )
    static, leaves = split_model(model, where)
    n, example = x.shape[0], x.shape[1:]
    # Abstract evaluation on x's own shape (nothing runs): the model refuses a wrong shape naming
    # the shape given, not the padded batch's; and N = 0 gets its output shape and dtype.
    spec = jax.ShapeDtypeStruct((max(n, 1), *example), x.dtype)
    out = jax.eval_shape(functools.partial(_predict_fn, static=static, proba=proba), leaves, params, model_state, spec)
    if n == 0:
        return np.zeros((0, *out.shape[1:]), out.dtype)
    run = functools.partial(_predict_batch, static=static, proba=proba)
    outs = []
    for start in range(0, n, batch_size):  # every call has the same shapes: one compiled program
        xb = x[start : start + batch_size]
        if xb.shape[0] < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - xb.shape[0], *example), x.dtype)])
        outs.append(run(leaves, params, model_state, xb))  # dispatched asynchronously
    return np.concatenate(jax.device_get(outs))[:n]


def predict(model, params, model_state, x, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Predicted class labels: the argmax of ``model``'s test-mode scores.

    Works for any model of the protocol. The examples run in jitted batches
    of exactly ``batch_size`` (the last padded with zeros, which are
    discarded; test mode treats examples independently), so every ``N``
    reuses one compiled program.

    Args:
      model: any model of the model protocol.
      params, model_state: its parameters and running statistics.
      x: ``(N, ...)`` inputs the model accepts (for jaxlayers' models
        already standardised as in training; :func:`jaxlayers.load_run`'s
        ``Run.predict`` takes raw inputs). ``N = 0`` gives an empty result.
      batch_size: examples per compiled call, ``>= 1``.

    Returns:
      int32 NumPy array ``(N,)`` of labels in ``[0, C)`` (ties: the lowest
      label; a NaN input row gives label 0).

    Raises:
      ValueError: ``x`` without a batch axis, a shape the model refuses
        (the model's error, naming the shapes), ``batch_size < 1``.
      TypeError: non-numeric ``x``; a model without the protocol.
    """
    return _batched(model, params, model_state, x, batch_size, proba=False, where="predict")


def predict_proba(model, params, model_state, x, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Class probabilities: the softmax of ``model``'s test-mode scores, batched as :func:`predict`.

    For a model trained with the softmax (cross-entropy) loss these are the
    model's probabilities. For one trained with the multiclass SVM (hinge)
    loss they are the softmax of the SVM scores: they sum to 1 and their
    argmax is :func:`predict`'s label, but they are **uncalibrated** (the
    hinge loss fits margins, not probabilities), so read them as a ranking,
    not as confidences.

    Args:
      model, params, model_state, x, batch_size: as :func:`predict`.

    Returns:
      NumPy array ``(N, C)`` in the scores' dtype (at least float32), rows
      summing to 1; ``(0, C)`` for ``N = 0``.

    Raises:
      As :func:`predict`.
    """
    return _batched(model, params, model_state, x, batch_size, proba=True, where="predict_proba")
