"""Datasets for :mod:`jaxlayers.train`: train/val/test splits, standardised.

``load(name)`` understands these names; none of them downloads anything:

* ``"digits"`` -- scikit-learn's bundled 8x8 handwritten digits (1797
  examples, 64 features, 10 classes); the embedded default.
* ``"mnist1d"`` -- MNIST-1D (Greydanus 2020), built by the ``mnist1d``
  package's procedural generator with its default arguments (5000 examples,
  40 features, 10 classes; the package's own 4000/1000 train/test split).
* ``"mnist1d-seq"`` -- the same MNIST-1D signals read as sequences of 40
  steps of one value, ``(N, 40, 1)``, for recurrent models (the same numbers
  as ``"mnist1d"``, reshaped; :func:`load_mnist1d` with ``sequence=True``).
* ``"pydoc-chars"`` or ``"pydoc-chars:T"`` -- a character-level language-modelling
  corpus: the interpreter's own documentation (``pydoc_data.topics``, shipped
  with every CPython) split 90/5/5 by position and cut into windows of ``T``
  characters (default 100) with next-character targets (:func:`load_pydoc_chars`).
* ``"digit-captions"`` -- images of 2-4 of scikit-learn's digits side by side,
  captioned with the digits' names (:func:`load_digit_captions`; test images
  only from test digits).
* ``"mnist:DIR"`` -- MNIST from the four IDX files in ``DIR``
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; raw or ``.gz``).
* ``"cifar10:DIR"`` -- CIFAR-10, binary version: ``data_batch_1.bin`` ...
  ``data_batch_5.bin`` and ``test_batch.bin`` in ``DIR`` (or in
  ``DIR/cifar-10-batches-bin``). Never the pickled Python version.
* ``"npz:PATH"`` -- your own arrays in a NumPy ``.npz`` file (:func:`load_npz`):
  ``X_train, y_train, X_test, y_test``, optionally ``X_val, y_val``,
  ``class_names`` and ``image_shape``. From Python, :meth:`Dataset.from_arrays`
  takes the same arrays.

The classification sets give float32 features ``(N, D)`` (``"mnist1d-seq"``:
``(N, 40, 1)``) and int32 labels ``(N,)``; the token sets give int32 token
ids ``(N, T)`` (``"pydoc-chars"``) or float32 image features ``(N, D)``
(``"digit-captions"``), int32 target tokens ``(N, T)``, and a
:class:`Vocabulary` (``Dataset.vocab``) that a run stores to decode them. The
features are standardised per feature with the mean and standard deviation of
the TRAINING split only (the deviation floored at half the mean feature
deviation, see :func:`standardize`), so no statistic of the validation or
test data leaks into training.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import random
import zlib
from pathlib import Path

import numpy as np

from jaxlayers._checks import check_number
from jaxlayers._seqdata import (
    UNKNOWN_CHAR,
    Vocabulary,
    char_corpus,
    decode_captions,
    digit_caption_images,
    pydoc_text,
)

__all__ = [
    "DATASETS",
    "UNKNOWN_CHAR",
    "Dataset",
    "Vocabulary",
    "apply_standardization",
    "char_corpus",
    "decode_captions",
    "load",
    "load_digit_captions",
    "load_mnist1d",
    "load_npz",
    "load_pydoc_chars",
    "preprocessing_record",
    "pydoc_text",
    "read_cifar10_bin",
    "read_idx",
    "standardize",
]

DATASETS = (
    "digits",
    "mnist1d",
    "mnist1d-seq",
    "pydoc-chars[:T]",
    "digit-captions",
    "mnist:DIR",
    "cifar10:DIR",
    "npz:PATH",
)
PYDOC_SEQ_LEN = 100  # "pydoc-chars" without ":T"
NPZ_REQUIRED = ("X_train", "y_train", "X_test", "y_test")
NPZ_OPTIONAL = ("X_val", "y_val", "class_names", "image_shape")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits of a classification or sequence dataset.

    Attributes:
      X_train, X_val, X_test: float32 features, shape ``(N_split, D)``,
        standardised with training statistics (``"mnist1d-seq"``:
        ``(N_split, 40, 1)``); for ``"pydoc-chars"`` int32 token ids
        ``(N_split, T)``, not standardised.
      y_train, y_val, y_test: int32 labels in ``[0, num_classes)``, shape
        ``(N_split,)``; for the token sets (``vocab`` set) int32 target
        tokens ``(N_split, T)``: the next character of each input position
        (``"pydoc-chars"``), or the caption ``<START> w1 .. <END> <NULL>..``
        (``"digit-captions"``, ``T = 6``).
      name: the name :func:`load` was given.
      mean, std: the training statistics used, float64, shape ``(D,)``
        (``X = apply_standardization(X_raw, mean, std)``).
      image_shape: ``(C, H, W)`` of one example as an image (digits
        ``(1, 8, 8)``, MNIST ``(1, 28, 28)``, CIFAR-10 ``(3, 32, 32)``,
        MNIST-1D ``(1, 1, 40)``); ``D = C * H * W``. :meth:`as_images` gives the
        splits in that shape, for convolutional models; the flat ``(N, D)``
        features are what the fully connected net takes.
      class_names: the name of every class, index = label.
      digest: for your own arrays (:meth:`from_arrays`, ``npz:PATH``), a
        SHA-256 of the raw arrays; a checkpoint records it, and resuming on
        other data (same shapes, other values) is refused. ``None`` for the
        built-in datasets, except ``"pydoc-chars"``: a SHA-256 of its text
        (which differs slightly between Python versions) and of how it was
        cut and encoded, so a resume under another Python is refused.
      vocab: the token sets' :class:`Vocabulary` (``class_names`` then holds
        its tokens: label ``i`` is token ``i``); a run stores it
        (:func:`preprocessing_record`) so that generated ids can be decoded.
        ``None`` for the classification sets.
      provenance: JSON-ready facts about how the data were made, or ``None``:
        for ``"pydoc-chars"`` the text's SHA-256 (``text_sha256``), the
        Python version, the split positions; for ``"digit-captions"`` the
        digit split sizes and the generator's arguments.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str = ""
    mean: np.ndarray | None = dataclasses.field(default=None, repr=False)
    std: np.ndarray | None = dataclasses.field(default=None, repr=False)
    image_shape: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    digest: str | None = None
    vocab: Vocabulary | None = None
    provenance: dict | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_arrays(
        cls,
        X_train,
        y_train,
        X_test,
        y_test,
        *,
        X_val=None,
        y_val=None,
        class_names=None,
        image_shape=None,
        name: str = "arrays",
        val_fraction: float = 0.1,
        seed: int = 0,
        standardize: bool = True,
    ) -> Dataset:
        """Your own arrays as a :class:`Dataset`, prepared as the built-in datasets are.

        Without ``X_val``/``y_val`` a stratified ``val_fraction`` of the
        training arrays is held out for validation (seeded by ``seed``).
        Features are flattened to ``(N, D)`` and standardised with the
        training split's statistics (:func:`standardize`); the statistics are
        stored with a run, so ``load_run(...).predict`` takes raw inputs.

        Args:
          X_train, X_test, X_val: ``(N, ...)`` real features, one example
            shape for all splits; ``(N, C, H, W)`` examples set
            ``image_shape`` (for convolutional models).
          y_train, y_test, y_val: ``(N,)`` integer labels ``>= 0``.
          class_names: a name per class (at least ``max label + 1``).
          image_shape: ``(C, H, W)`` of one example, for flat features
            (``C * H * W = D``).
          name: the dataset's name in summaries and run records.
          val_fraction: in ``(0, 1)``, used without ``X_val``.
          seed: the train/validation split's seed.
          standardize: ``False``: use the features as given (nothing is stored).

        Returns:
          A :class:`Dataset` (float32 ``(N, D)`` features, int32 labels) with
          ``digest`` set.

        Raises:
          ValueError: shapes that disagree (naming the arrays and shapes),
            ``X_val`` without ``y_val`` or the reverse, negative labels, too
            few class names, an ``image_shape`` that does not hold ``D``.
          TypeError: non-integer labels or non-numeric features (naming the
            array and its dtype).
        """
        return _from_arrays(
            {
                "X_train": X_train,
                "y_train": y_train,
                "X_test": X_test,
                "y_test": y_test,
                "X_val": X_val,
                "y_val": y_val,
            },
            class_names=class_names,
            image_shape=image_shape,
            name=name,
            val_fraction=check_number(
                val_fraction, "Dataset.from_arrays", "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True
            ),
            seed=seed,
            scale=standardize,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example as stored, ``X_train.shape[1:]``."""
        return tuple(self.X_train.shape[1:])

    def as_images(self) -> Dataset:
        """The same splits with features reshaped to ``(N, *image_shape)`` (no copy), for conv models.

        Raises:
          ValueError: the dataset has no ``image_shape``.
        """
        if self.image_shape is None:
            raise ValueError(f"Dataset {self.name!r} has no image_shape; it cannot be given to a convolutional model")
        shape = tuple(self.image_shape)
        return dataclasses.replace(
            self,
            **{f"X_{s}": getattr(self, f"X_{s}").reshape(-1, *shape) for s in ("train", "val", "test")},
        )

    @property
    def num_features(self) -> int:
        """``D``, features per example (the product of the example shape)."""
        return int(np.prod(self.X_train.shape[1:]))

    @property
    def num_classes(self) -> int:
        """The vocabulary's size if there is one, else one more than the largest label in any split."""
        if self.vocab is not None:
            return len(self.vocab)
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def summary(self) -> str:
        """One line: name, split sizes, features (or steps), classes (or tokens)."""
        sizes = f"{self.name or 'dataset'}: train {len(self.y_train)}, val {len(self.y_val)}, test {len(self.y_test)}"
        if self.vocab is not None:
            steps = np.shape(self.y_train)[1:]
            return f"{sizes}; inputs {tuple(np.shape(self.X_train)[1:])}, targets {steps}, {len(self.vocab)} tokens"
        return f"{sizes}; {self.num_features} features, {self.num_classes} classes"


# ---------------------------------------------------------------------------
# Splitting and standardisation
# ---------------------------------------------------------------------------


def _stratified_split(X, y, fraction: float, seed: int):
    """Split off a stratified ``fraction`` of ``(X, y)``: ``(X_keep, y_keep, X_out, y_out)``.

    Falls back to a plain seeded random split when stratifying is impossible
    (a class with one example, or fewer held-out examples than classes: only
    tiny files do that).
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_out = math.ceil(fraction * n)
    if n < 2 or n_out >= n:
        raise ValueError(f"data.load: {n} examples are too few to split off a {fraction:.0%} validation/test part")
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and len(counts) <= n_out and len(counts) <= n - n_out else None
    X_keep, X_out, y_keep, y_out = train_test_split(X, y, test_size=n_out, stratify=stratify, random_state=seed)
    return X_keep, y_keep, X_out, y_out


def standardize(X_train: np.ndarray, *others: np.ndarray, std_floor: float = 0.5):
    """Standardise features with the training split's statistics only.

    ``X' = (X - mean) / s`` per feature, where ``mean`` and the standard
    deviation ``std`` are the training split's and ``s = max(std, std_floor *
    mean_j std_j)``: a feature whose training spread is far below the typical
    one (a corner pixel that is non-zero in 3 of 1293 digits) is scaled like a
    typical feature instead of being blown up into 20-sigma outliers. Every
    other feature gets mean 0 and standard deviation 1 in training. (On digits
    the floor is worth about 0.4 points of test accuracy; ``std_floor=0``
    gives plain z-scores.) A feature constant in training is only centred
    when the floor is 0 (or every feature is constant).

    Args:
      X_train: ``(N, D)`` training features, any real dtype.
      *others: more ``(M, D)`` arrays (validation, test) to transform with
        the same statistics.
      std_floor: the floor as a fraction of the mean feature std, ``>= 0``.

    Returns:
      ``(mean, s, X_train_std, *others_std)``: ``mean`` and the divisor ``s``
      float64 ``(D,)``; the arrays float32, ``(X - mean) / s``.
    """
    mean = np.mean(X_train, axis=0, dtype=np.float64)
    var = np.zeros_like(mean)
    for start in range(0, X_train.shape[0], 8192):  # chunked: no float64 copy of a big X
        chunk = X_train[start : start + 8192].astype(np.float64) - mean
        var += np.sum(chunk * chunk, axis=0)
    std = np.sqrt(var / max(X_train.shape[0], 1))
    std = np.maximum(std, std_floor * float(np.mean(std)) if std.size else 0.0)
    std = np.where(std > 1e-12, std, 1.0)
    return (mean, std, *(apply_standardization(X, mean, std) for X in (X_train, *others)))


def apply_standardization(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(X - mean) / std`` in float32, exactly as :func:`standardize` computes it.

    The arithmetic is fixed so that a model loaded back
    (:func:`jaxlayers.load_run`) sees bit for bit the inputs it was trained
    and evaluated on: ``X`` cast to float32, minus ``float32(mean)``, times
    ``float32(1 / std)``.

    Args:
      X: ``(N, *shape)`` raw features, any real dtype.
      mean, std: float64 statistics whose shape broadcasts against one
        example (``(D,)`` for ``(N, D)`` features); ``std > 0``.

    Returns:
      A new float32 array of ``X``'s shape.
    """
    Xs = np.array(X, dtype=np.float32, copy=True)
    Xs -= np.asarray(mean, np.float64).astype(np.float32)
    Xs *= (1.0 / np.asarray(std, np.float64)).astype(np.float32)
    return Xs


def preprocessing_record(data) -> dict:
    """What a trained model needs to see new raw inputs as it saw its training data, JSON-ready.

    Checkpoints store it (:func:`jaxlayers.train.fit`), and
    :func:`jaxlayers.load_run` applies it: ``Run.predict(X_raw)`` standardises
    ``X_raw`` with ``mean`` and ``std`` by :func:`apply_standardization`.

    Args:
      data: a :class:`Dataset`, or any object with ``X_train`` (and
        optionally ``mean``, ``std``, ``class_names``, ``image_shape``).

    Returns:
      ``{"mean": nested lists or None, "std": ..., "input_shape": list,
      "image_shape": list or None, "class_names": list of str or None}``,
      plus ``"vocab": dict`` for the token sets;
      ``mean``/``std`` are ``None`` for data that carry no standardisation
      (the inputs are used as given), ``input_shape`` is ``X_train.shape[1:]``,
      ``vocab`` is :meth:`Vocabulary.to_record` of ``data.vocab``
      (``Vocabulary.from_record`` rebuilds it to decode a model's output).
    """
    mean, std = getattr(data, "mean", None), getattr(data, "std", None)
    names, image_shape = getattr(data, "class_names", None), getattr(data, "image_shape", None)
    as_list = lambda a: None if a is None else np.asarray(a, np.float64).tolist()  # noqa: E731
    return {
        "mean": as_list(mean) if std is not None else None,
        "std": as_list(std) if mean is not None else None,
        "input_shape": [int(d) for d in np.shape(data.X_train)[1:]],
        "image_shape": None if image_shape is None else [int(d) for d in image_shape],
        "class_names": None if names is None else [str(c) for c in names],
        **({"vocab": data.vocab.to_record()} if getattr(data, "vocab", None) is not None else {}),
    }


def _finish(name, X_train, y_train, X_val, y_val, X_test, y_test, *, image_shape, class_names=None) -> Dataset:
    mean, std, X_train, X_val, X_test = standardize(X_train, X_val, X_test)
    as_labels = lambda y: np.asarray(y, dtype=np.int32)  # noqa: E731
    return Dataset(
        X_train,
        as_labels(y_train),
        X_val,
        as_labels(y_val),
        X_test,
        as_labels(y_test),
        name=name,
        mean=mean,
        std=std,
        image_shape=tuple(image_shape),
        class_names=tuple(class_names) if class_names is not None else tuple(str(i) for i in range(10)),
    )


def _arrays_digest(arrays: dict) -> str:
    """SHA-256 over the named arrays' names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for key in sorted(k for k, v in arrays.items() if v is not None):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"\0{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _from_arrays(arrays: dict, *, class_names, image_shape, name: str, val_fraction: float, seed: int, scale: bool):
    """:meth:`Dataset.from_arrays` of ``{"X_train": ..., "y_train": ..., ...}`` (``X_val``/``y_val`` may be None)."""
    where = f"Dataset.from_arrays ({name})"
    if (arrays["X_val"] is None) != (arrays["y_val"] is None):
        given = "X_val" if arrays["X_val"] is not None else "y_val"
        raise ValueError(f"{where}: {given} is given without its partner; give both X_val and y_val, or neither")
    splits = ("train", "val", "test") if arrays["X_val"] is not None else ("train", "test")
    raw = {}
    for split in splits:
        X, y = np.asarray(arrays[f"X_{split}"]), np.asarray(arrays[f"y_{split}"])
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)) or X.dtype == np.bool_:
            raise TypeError(f"{where}: X_{split} must hold real numbers, got dtype {X.dtype} (shape {X.shape})")
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"{where}: X_{split} must have shape (N, ...) with N >= 1, got {X.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
            raise TypeError(
                f"{where}: y_{split} must hold integer class labels, got dtype {y.dtype} (shape {y.shape}); "
                "convert with y.astype(int) if the values are whole numbers"
            )
        if y.shape != (X.shape[0],):
            raise ValueError(f"{where}: y_{split} has shape {y.shape}, but X_{split} {X.shape} needs ({X.shape[0]},)")
        if y.min() < 0:
            raise ValueError(f"{where}: y_{split} holds label {int(y.min())}; labels must be >= 0")
        if X.shape[1:] != np.shape(arrays["X_train"])[1:]:
            raise ValueError(
                f"{where}: X_{split} has examples of shape {X.shape[1:]}, but X_train of {np.shape(arrays['X_train'])[1:]}"
            )
        raw[f"X_{split}"], raw[f"y_{split}"] = X, y
    digest = _arrays_digest(raw)
    example = raw["X_train"].shape[1:]
    D = math.prod(example)
    if image_shape is None and len(example) == 3:
        image_shape = example
    if image_shape is not None:
        image_shape = tuple(int(d) for d in np.asarray(image_shape).reshape(-1))
        if math.prod(image_shape) != D or len(image_shape) != 3:
            raise ValueError(f"{where}: image_shape {image_shape} must be (C, H, W) with C * H * W = {D} features")
    flat = {k: (v.reshape(v.shape[0], -1) if k.startswith("X") else v) for k, v in raw.items()}
    if "X_val" not in flat:
        flat["X_train"], flat["y_train"], flat["X_val"], flat["y_val"] = _stratified_split(
            flat["X_train"], flat["y_train"], val_fraction, seed
        )
    num_classes = int(max(flat[f"y_{s}"].max() for s in ("train", "val", "test"))) + 1
    if class_names is not None:
        class_names = tuple(str(c) for c in np.asarray(class_names).reshape(-1))
        if len(class_names) < num_classes:
            raise ValueError(f"{where}: {len(class_names)} class_names for labels up to {num_classes - 1}")
    Xs = [flat["X_train"], flat["X_val"], flat["X_test"]]
    if scale:
        mean, std, *Xs = standardize(*Xs)
    else:
        mean = std = None
        Xs = [np.asarray(X, np.float32) for X in Xs]
    as_labels = lambda y: np.asarray(y, dtype=np.int32)  # noqa: E731
    return Dataset(
        Xs[0],
        as_labels(flat["y_train"]),
        Xs[1],
        as_labels(flat["y_val"]),
        Xs[2],
        as_labels(flat["y_test"]),
        name=name,
        mean=mean,
        std=std,
        image_shape=image_shape,
        class_names=class_names,
        digest=digest,
    )


def load_npz(path: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Your own dataset from a NumPy ``.npz`` file (``np.savez(path, X_train=..., ...)``).

    Arrays: ``X_train, y_train, X_test, y_test`` (required), ``X_val, y_val``
    (optional: else a stratified ``val_fraction`` of the training arrays),
    ``class_names`` (optional strings) and ``image_shape`` (optional ``(C, H,
    W)`` for flat features). Read without pickle; prepared by
    :meth:`Dataset.from_arrays`; the name is ``"npz:PATH"``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an ``.npz`` file, a required array missing or an
        unknown one present (naming the arrays the file holds), and what
        :meth:`Dataset.from_arrays` raises.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            2, f"npz: no such file {path} (expected an .npz of X_train, y_train, X_test, y_test)", str(path)
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zlib.error) as e:
        raise ValueError(f"npz: {path} is not a readable .npz file without pickled objects ({e})") from None
    held = ", ".join(sorted(arrays)) or "none"
    missing = [k for k in NPZ_REQUIRED if k not in arrays]
    if missing:
        raise ValueError(
            f"npz: {path} lacks {', '.join(missing)}; it holds {held} (needs {', '.join(NPZ_REQUIRED)}; "
            f"optional {', '.join(NPZ_OPTIONAL)})"
        )
    unknown = sorted(set(arrays) - set(NPZ_REQUIRED) - set(NPZ_OPTIONAL))
    if unknown:
        raise ValueError(
            f"npz: {path} holds arrays jaxlayers does not read: {', '.join(unknown)} (it holds {held}; "
            f"expected {', '.join(NPZ_REQUIRED + NPZ_OPTIONAL)})"
        )
    return _from_arrays(
        {k: arrays.get(k) for k in ("X_train", "y_train", "X_test", "y_test", "X_val", "y_val")},
        class_names=arrays.get("class_names"),
        image_shape=arrays.get("image_shape"),
        name=f"npz:{path}",
        val_fraction=val_fraction,
        seed=seed,
        scale=True,
    )


# ---------------------------------------------------------------------------
# digits and mnist1d: generated or bundled, no files
# ---------------------------------------------------------------------------


def load_digits(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (no download).

    Split: a stratified ``test_fraction`` (20%: 360 examples) is held out for
    test, as in scikit-learn's usual 80/20 benchmark; a stratified
    ``val_fraction`` (10%) of the remaining 80% is carved out for validation.
    With the defaults: train 1293, val 144, test 360; 64 features (pixel
    intensities 0..16, standardised), 10 classes. ``seed`` fixes the split.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    X_rest, y_rest, X_test, y_test = _stratified_split(X, y, test_fraction, seed)
    X_train, y_train, X_val, y_val = _stratified_split(X_rest, y_rest, val_fraction, seed)
    return _finish("digits", X_train, y_train, X_val, y_val, X_test, y_test, image_shape=(1, 8, 8))


def load_mnist1d(*, val_fraction: float = 0.1, seed: int = 0, sequence: bool = False) -> Dataset:
    """MNIST-1D from the ``mnist1d`` package's procedural generator (no download).

    Calls ``mnist1d.data.make_dataset`` with the package's default arguments
    (5000 signals of length 40, the generator's own seed 42), never its
    download path. The generator seeds Python's and NumPy's global random
    state; both are saved before and restored after, so loading leaves no
    trace. Split: the package's 4000/1000 train/test split; a stratified
    ``val_fraction`` (10%) of the 4000 is carved out for validation, giving
    train 3600, val 400, test 1000.

    ``sequence=True`` (the name ``"mnist1d-seq"``) gives the same standardised
    numbers read as a sequence of 40 steps of one value, ``X`` float32
    ``(N, 40, 1)`` (batch-major, as the recurrent ops take ``x (N, T, D)``),
    for recurrent models; ``mean``/``std`` are then ``(40, 1)`` (per time
    step, the same statistics as the flat set) and ``image_shape`` is
    ``None``. Labels are the same ``(N,)`` classes.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("data.load('mnist1d') needs the mnist1d package: pip install mnist1d") from e

    # mnist1d seeds NumPy's legacy global generator; save and restore it (noqa: that is the point).
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    X, y = np.asarray(raw["x"], np.float64), np.asarray(raw["y"], np.int64)
    X_test, y_test = np.asarray(raw["x_test"], np.float64), np.asarray(raw["y_test"], np.int64)
    X_train, y_train, X_val, y_val = _stratified_split(X, y, val_fraction, seed)
    ds = _finish("mnist1d", X_train, y_train, X_val, y_val, X_test, y_test, image_shape=(1, 1, X.shape[1]))
    if not sequence:
        return ds
    steps = {f"X_{s}": getattr(ds, f"X_{s}")[:, :, None] for s in ("train", "val", "test")}
    return dataclasses.replace(
        ds, **steps, name="mnist1d-seq", mean=ds.mean[:, None], std=ds.std[:, None], image_shape=None
    )


# ---------------------------------------------------------------------------
# Token sets: the pydoc character corpus and the digit captions (made offline, see _seqdata)
# ---------------------------------------------------------------------------


def load_pydoc_chars(
    seq_len: int = PYDOC_SEQ_LEN,
    *,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    stride: int | None = None,
    min_count: int = 1,
) -> Dataset:
    """The interpreter's own documentation as a character-level language-modelling :class:`Dataset`.

    The text is :func:`pydoc_text` (``pydoc_data.topics``, shipped with every
    CPython: about 465,000 characters on Python 3.11), cut by
    :func:`char_corpus`: split BY POSITION 90/5/5 into train, validation and
    test (no window crosses a boundary), a vocabulary of the characters seen
    in training (about 100, sorted, then :data:`UNKNOWN_CHAR` as the last id
    for any other), windows of ``seq_len`` characters with the next character
    as target. With the defaults on Python 3.11: train 4185, val 232, test
    232 windows of 100.

    Args:
      seq_len: ``T``, characters per window (``load("pydoc-chars:T")``).
      val_fraction, test_fraction: the parts of the text, by position.
      stride: characters between window starts within a split (default ``T``).
      min_count: training occurrences a character needs for its own id.

    Returns:
      A :class:`Dataset` named ``"pydoc-chars:T"``: ``X_*`` int32 ``(N, T)``
      token ids, ``y_*`` int32 ``(N, T)`` with ``y[n, t]`` the character after
      ``X[n, t]``; ``vocab`` the character :class:`Vocabulary`
      (``vocab.decode(X[0])`` is the window's text) and ``class_names`` its
      tokens; no standardisation (``mean``/``std`` ``None``); ``digest`` a
      SHA-256 of the text and the cutting arguments; ``provenance`` with the
      text's ``text_sha256``, ``python`` version, ``bounds``.

    Raises:
      ValueError: as :func:`char_corpus`.
      ImportError: a Python without ``pydoc_data``.
    """
    c = char_corpus(seq_len, val_fraction=val_fraction, test_fraction=test_fraction, stride=stride, min_count=min_count)
    vocab = c["vocab"]
    cut = {"seq_len": int(seq_len), "stride": int(stride or seq_len), "min_count": int(min_count)}
    cut.update(val_fraction=float(val_fraction), test_fraction=float(test_fraction))
    digest = hashlib.sha256(
        json.dumps({"text_sha256": c["text_sha256"], "vocab": vocab.to_record(), **cut}, sort_keys=True).encode()
    ).hexdigest()
    provenance = {
        "text": "pydoc_data.topics.topics, sorted keys, joined by a newline",
        "text_sha256": c["text_sha256"],
        "python": c["python"],
        "bounds": list(c["bounds"]),
        **cut,
    }
    return Dataset(
        c["x_train"],
        c["y_train"],
        c["x_val"],
        c["y_val"],
        c["x_test"],
        c["y_test"],
        name=f"pydoc-chars:{int(seq_len)}",
        class_names=vocab.tokens,
        digest=digest,
        vocab=vocab,
        provenance=provenance,
    )


def load_digit_captions(
    num_train: int = 10000,
    num_val: int = 1000,
    num_test: int = 1000,
    *,
    min_digits: int = 2,
    max_digits: int = 4,
    width: int = 32,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    as_dataset: bool = False,
) -> dict | Dataset:
    """A captioning set from scikit-learn's bundled 8x8 digits, in the NumPy original's data layout.

    First the 1797 digits are split, stratified by class and seeded: a
    ``test_fraction`` (20%, 360) for test, then a ``val_fraction`` (10%, 144)
    of the rest for validation, 1293 for training (as :func:`jaxlayers.data.load`
    splits ``"digits"``). Then each image of a split is made ONLY from that
    split's digits: ``k`` digits (``k`` uniform in ``[min_digits, max_digits]``),
    drawn uniformly with replacement, placed side by side from the left on an
    8 x ``width`` canvas of zeros (pixel values 0..16, as sklearn's). Its
    caption is the digits' names, left to right: ``<START> three one four
    <END>``, padded with ``<NULL>`` to ``max_digits + 2`` words.

    The vocabulary (``idx_to_word``) is ``<NULL>, <START>, <END>, <UNK>`` (ids
    0..3, as the NumPy original; ``<UNK>`` never occurs) then ``zero`` ..
    ``nine`` (ids 4..13). The captioning model takes image FEATURES ``(N, D)``:
    here the image's pixels flattened row-major (``D = 8 * width``),
    standardised per pixel with the training images' statistics
    (:func:`jaxlayers.data.standardize`; ``mean``/``std`` are returned).

    Args:
      num_train, num_val, num_test: images per split, ``>= 1``.
      min_digits, max_digits: digits per image, ``1 <= min <= max``, and
        ``8 * max_digits <= width``.
      width: the canvas width in pixels.
      val_fraction, test_fraction: the digit split, as above.
      seed: seeds the digit split and the images; the same arguments give
        the same arrays.
      as_dataset: ``True``: a :class:`Dataset` for the training loop instead
        of the dict (``"digit-captions"`` is this with the defaults):
        ``X_*`` the features, ``y_*`` the captions, ``vocab`` the words.

    Returns:
      A dict with, for each split ``s`` in ``train, val, test``:
      ``s_captions`` int32 ``(N_s, max_digits + 2)``; ``s_image_idxs`` int32
      ``(N_s,)`` (caption ``i`` describes image ``s_image_idxs[i]``; one caption
      per image, so ``arange``); ``s_features`` float32 ``(N_s, 8 * width)``;
      ``s_images`` float32 ``(N_s, 8, width)`` (raw pixels); ``s_digits`` int32
      ``(N_s, max_digits)`` (the digits left to right, ``-1`` padding);
      ``s_sources`` int32 ``(N_s, max_digits)`` (each digit's index into
      ``sklearn.datasets.load_digits()``, ``-1`` padding); ``s_urls`` (a name
      per image, ``"digit-captions/s/000017"``: the NumPy original's
      ``sample_coco_minibatch`` reads ``urls``). And ``idx_to_word`` (list),
      ``word_to_idx`` (dict), ``vocab`` (the same as a :class:`Vocabulary`),
      ``mean``/``std`` (float64 ``(8 * width,)``), ``digit_splits`` (the
      source indices of each split's digits).

    Raises:
      ValueError: a bad count, digit range or width.
    """
    c = digit_caption_images(
        num_train,
        num_val,
        num_test,
        min_digits=min_digits,
        max_digits=max_digits,
        width=width,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    splits = ("train", "val", "test")
    mean, std, *feats = standardize(*(c[f"{s}_images"].reshape(len(c[f"{s}_images"]), -1) for s in splits))
    for s, f in zip(splits, feats, strict=True):
        c[f"{s}_features"] = f
    c["mean"], c["std"] = mean, std
    if not as_dataset:
        return c
    return Dataset(
        c["train_features"],
        c["train_captions"],
        c["val_features"],
        c["val_captions"],
        c["test_features"],
        c["test_captions"],
        name="digit-captions",
        mean=mean,
        std=std,
        image_shape=(1, 8, int(width)),
        class_names=tuple(c["idx_to_word"]),
        vocab=c["vocab"],
        provenance={
            "digits": {s: len(c["digit_splits"][s]) for s in splits},
            "num_images": {s: len(c[f"{s}_captions"]) for s in splits},
            "min_digits": int(min_digits),
            "max_digits": int(max_digits),
            "width": int(width),
            "seed": int(seed),
        },
    )


# ---------------------------------------------------------------------------
# MNIST: IDX files
# ---------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}
_IDX_DTYPES.update({0x0E: np.dtype(">f8")})


# Deflate (the compression inside gzip) expands at most 1032-fold: one 258-byte
# match per 2 bits. A gzip file of S bytes therefore cannot decompress to more
# than 1032 * S bytes, and a header declaring more is refused before anything
# is decompressed.
GZIP_MAX_RATIO = 1032


def _read_exact(stream, n: int, path: Path, what: str) -> bytes:
    """``n`` bytes from ``stream``, or a ``ValueError`` naming ``path`` and ``what`` was being read."""
    data = stream.read(n)
    if len(data) < n:
        raise ValueError(f"{path}: truncated IDX header: {len(data)} bytes where {what} needs {n}")
    return data


def _read_payload(stream, expected: int) -> tuple[np.ndarray, int]:
    """Up to ``expected + 1`` bytes from ``stream``: ``(buffer, count read)``.

    One preallocated buffer of ``expected + 1`` bytes, so memory never exceeds
    the declared size (a count of ``expected + 1`` means the stream holds more),
    whatever the stream would expand to.
    """
    buf = np.empty(expected + 1, np.uint8)  # untouched pages cost nothing until written
    view, got = memoryview(buf), 0
    while got <= expected:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return buf, got


def read_idx(path: str | os.PathLike, *, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (the MNIST format), raw or gzipped.

    The header is big-endian: two zero bytes, a type byte (0x08 = uint8),
    a byte giving the number of dimensions ``k``, then ``k`` uint32 sizes.
    MNIST image files have magic ``2051`` (uint8, 3 dims), label files
    ``2049`` (uint8, 1 dim).

    Args:
      path: the file.
      expect_magic: if given, the file's first four bytes read as a
        big-endian int must equal it.

    Returns:
      The data as a NumPy array of the header's shape and dtype.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a bad magic number, a truncated header, a payload whose
        size disagrees with the header, or a gzip file that is corrupt or
        would expand beyond the header's declared size (message names the
        file). Memory stays within the declared size (plus one byte, read to
        detect excess); a gzip file is never decompressed further.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            return _read_idx_stream(stream, path, size, gz, expect_magic)
        except (OSError, EOFError, zlib.error) as e:
            if not gz:
                raise
            raise ValueError(f"{path}: not a valid gzip file ({e}); expected a gzipped IDX file") from e


def _read_idx_stream(stream, path: Path, size: int, gz: bool, expect_magic: int | None) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: {len(head)} bytes is too short for an IDX header (expected at least 4)")
    magic = int.from_bytes(head, "big")
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(
            f"{path}: IDX magic number is {magic} (0x{magic:08x}), expected {expect_magic} (0x{expect_magic:08x})"
        )
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic 0x{magic:08x}; expected 0x0000TTNN with a known type TT)")
    dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
    header = 4 + 4 * ndim
    dims = _read_exact(stream, 4 * ndim, path, f"an IDX header of {header} bytes for {ndim} dimensions")
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: 2^31 x 2^31 x 4 does not overflow
    declared = f"IDX header says shape {shape} ({expected} bytes of data)"
    if not gz and size - header != expected:
        raise ValueError(
            f"{path}: {declared} but the file holds {size - header} bytes after the header (truncated or corrupt)"
        )
    if gz and expected > GZIP_MAX_RATIO * size:
        raise ValueError(
            f"{path}: {declared}, more than a {size}-byte gzip file can expand to "
            f"({GZIP_MAX_RATIO} x its size; truncated or corrupt)"
        )
    payload, got = _read_payload(stream, expected)
    if got != expected:
        held = f"more than {expected}" if got > expected else str(got)
        raise ValueError(f"{path}: {declared} but the file holds {held} bytes after the header (truncated or corrupt)")
    return payload[:expected].view(dtype).reshape(shape)


def _find(directory: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: missing {what}: expected one of {', '.join(names)}")


def _mnist_split(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    img_names = tuple(f"{prefix}-images{sep}idx3-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz"))
    lbl_names = tuple(f"{prefix}-labels{sep}idx1-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz"))
    img_path = _find(directory, img_names, f"MNIST {prefix} images (IDX, magic 2051)")
    lbl_path = _find(directory, lbl_names, f"MNIST {prefix} labels (IDX, magic 2049)")
    images = read_idx(img_path, expect_magic=2051)
    labels = read_idx(lbl_path, expect_magic=2049)
    if images.ndim != 3:
        raise ValueError(f"{img_path}: expected 3 dimensions (N, rows, cols), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{lbl_path}: holds {labels.shape[0] if labels.ndim else 0} labels but {img_path.name} holds "
            f"{images.shape[0]} images"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lbl_path}: labels must lie in [0, 9], found {int(labels.max())}")
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


def load_mnist(directory: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """MNIST from its four IDX files in ``directory`` (raw or ``.gz``).

    Features: the 28x28 pixels flattened row-major to 784, standardised.
    Split: the files' 60000/10000 train/test split; a stratified
    ``val_fraction`` (10%) of the training file is carved out for validation.

    Raises:
      FileNotFoundError: ``directory`` or one of the four files missing
        (names the file expected).
      ValueError: a malformed file (names it and what was expected).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"mnist: {directory} is not a directory (expected the four MNIST IDX files in it)")
    X_tr, y_tr = _mnist_split(directory, "train")
    X_test, y_test = _mnist_split(directory, "t10k")
    if X_tr.shape[1] != X_test.shape[1]:
        raise ValueError(f"{directory}: train images have {X_tr.shape[1]} pixels but test images {X_test.shape[1]}")
    X_train, y_train, X_val, y_val = _stratified_split(X_tr, y_tr, val_fraction, seed)
    side = math.isqrt(X_tr.shape[1])
    shape = (1, side, side) if side * side == X_tr.shape[1] else (1, 1, X_tr.shape[1])
    return _finish(f"mnist:{directory}", X_train, y_train, X_val, y_val, X_test, y_test, image_shape=shape)


# ---------------------------------------------------------------------------
# CIFAR-10: the binary version
# ---------------------------------------------------------------------------

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar10_bin(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file (never the pickled version).

    Each record is 3073 bytes: one label byte (0..9), then 3072 pixel bytes,
    the 32x32 red plane, then green, then blue (each row-major).

    Returns:
      ``(X, y)``: ``X`` uint8 ``(N, 3072)`` in that channel-major order,
      ``y`` int64 ``(N,)``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: empty, not a whole number of records, or labels > 9.
    """
    path = Path(path)

    def check_size(size: int) -> None:
        if size == 0 or size % CIFAR_RECORD:
            raise ValueError(
                f"{path}: {size} bytes is not a whole, positive number of {CIFAR_RECORD}-byte CIFAR-10 records "
                "(1 label byte + 3072 pixel bytes each); truncated, or not the binary version"
            )

    check_size(path.stat().st_size)  # before anything is read: a huge wrong file costs nothing
    data = path.read_bytes()
    check_size(len(data))  # the file may have changed in between
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = records[:, 0].astype(np.int64)
    if y.max() > 9:
        bad = int(np.argmax(y > 9))
        raise ValueError(f"{path}: record {bad} has label byte {int(y[bad])}, expected 0..9")
    return records[:, 1:], y


def load_cifar10(directory: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """CIFAR-10 from the binary batches in ``directory`` (or its ``cifar-10-batches-bin``).

    Features: 3072 values per image in the files' order (R plane, G plane, B
    plane), standardised. Split: ``data_batch_1..5.bin`` (50000) for training,
    of which a stratified ``val_fraction`` (10%) is carved out for validation;
    ``test_batch.bin`` (10000) for test.

    Raises:
      FileNotFoundError: the directory or any of the six files missing.
      ValueError: a malformed file (names it).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"cifar10: {directory} is not a directory (expected data_batch_1..5.bin and test_batch.bin in it)"
        )
    if not (directory / "data_batch_1.bin").exists() and (directory / "cifar-10-batches-bin").is_dir():
        directory = directory / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    for name in [*names, "test_batch.bin"]:
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name}: missing CIFAR-10 binary batch (expected data_batch_1..5.bin and "
                "test_batch.bin, the 'CIFAR-10 binary version'; the pickled Python version is not read)"
            )
    parts = [read_cifar10_bin(directory / n) for n in names]
    X_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    X_test, y_test = read_cifar10_bin(directory / "test_batch.bin")
    X_train, y_train, X_val, y_val = _stratified_split(X_tr, y_tr, val_fraction, seed)
    return _finish(
        f"cifar10:{directory}",
        X_train,
        y_train,
        X_val,
        y_val,
        X_test,
        y_test,
        image_shape=(3, 32, 32),
        class_names=CIFAR10_CLASSES,
    )


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def load(name: str = "digits", *, val_fraction: float | None = None, seed: int = 0) -> Dataset:
    """Load a dataset by name as train/val/test splits (standardised features, or token ids).

    Args:
      name: ``"digits"``, ``"mnist1d"``, ``"mnist1d-seq"``, ``"pydoc-chars"``
        (``"pydoc-chars:T"`` for windows of ``T`` characters), ``"digit-captions"``,
        ``"mnist:DIR"``, ``"cifar10:DIR"`` or ``"npz:PATH"`` (see the module
        docstring; nothing is downloaded). The returned ``Dataset.name``
        loads the same data again (``"pydoc-chars"`` is named ``"pydoc-chars:100"``).
      val_fraction: in ``(0, 1)``; ``None``: the dataset's default. For the
        classification sets the fraction of the training portion held out,
        stratified, for validation (default 0.1); for ``"pydoc-chars"`` the
        fraction of the text, by position, for validation (default 0.05); for
        ``"digit-captions"`` the fraction of the non-test digits whose
        validation images are made from (default 0.1).
      seed: seed of the (deterministic) train/val and, for digits and
        digit-captions, train/test splits (and the caption images). Does not
        affect MNIST-1D's generator; ``"pydoc-chars"`` has no randomness.

    Returns:
      A :class:`Dataset`: float32 features ``(N, D)`` (``(N, 40, 1)`` for
      ``"mnist1d-seq"``) standardised with training statistics only, int32
      labels ``(N,)``; for ``"pydoc-chars"`` int32 ids ``(N, T)`` and targets
      ``(N, T)``; for ``"digit-captions"`` float32 features ``(N, 256)`` and
      int32 captions ``(N, 6)``; both with ``vocab``.

    Raises:
      ValueError: an unknown name, a directory name without ``:DIR``, a bad
        ``:T``, or a malformed file (the message names the file and what
        was expected).
      FileNotFoundError: a missing directory or file (named).
    """
    if not isinstance(name, str):
        raise TypeError(f"data.load: name must be a string such as 'digits', got {name!r}")
    if val_fraction is not None:
        val_fraction = check_number(
            val_fraction, "data.load", "val_fraction", low=0.0, high=1.0, low_open=True, high_open=True
        )
    kind, sep, arg = name.partition(":")
    kind = kind.strip().lower()
    if kind == "pydoc-chars":
        T = arg.strip() or str(PYDOC_SEQ_LEN)
        if not T.isdigit() or int(T) < 1:
            raise ValueError(f"data.load: {name!r}: expected 'pydoc-chars' or 'pydoc-chars:T' with an integer T >= 1")
        return load_pydoc_chars(int(T), **({} if val_fraction is None else {"val_fraction": val_fraction}))
    if kind == "digit-captions" and not sep:
        return load_digit_captions(seed=seed, as_dataset=True, val_fraction=val_fraction or 0.1)
    val_fraction = 0.1 if val_fraction is None else val_fraction
    if kind == "digits" and not sep:
        return load_digits(val_fraction=val_fraction, seed=seed)
    if kind in ("mnist1d", "mnist1d-seq") and not sep:
        return load_mnist1d(val_fraction=val_fraction, seed=seed, sequence=kind == "mnist1d-seq")
    if kind in ("mnist", "cifar10"):
        if not arg:
            what = "the four MNIST IDX files" if kind == "mnist" else "the CIFAR-10 binary batches"
            raise ValueError(
                f"data.load: {kind!r} needs a directory, as '{kind}:DIR' with {what} in DIR (jaxlayers never downloads)"
            )
        loader = load_mnist if kind == "mnist" else load_cifar10
        return loader(os.path.expanduser(arg), val_fraction=val_fraction, seed=seed)
    if kind == "npz":
        if not arg:
            raise ValueError("data.load: 'npz' needs a file, as 'npz:PATH' (arrays X_train, y_train, X_test, y_test)")
        return load_npz(os.path.expanduser(arg), val_fraction=val_fraction, seed=seed)
    raise ValueError(f"data.load: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
