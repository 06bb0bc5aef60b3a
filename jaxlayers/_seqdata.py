"""Sequence data built offline: vocabularies, the pydoc character corpus, the digit-captioning set.

Everything here is made from what every install already has -- the text of
CPython's own documentation (:mod:`pydoc_data.topics`) and scikit-learn's
bundled 8x8 digits -- so nothing is ever downloaded. :mod:`jaxlayers.data`
re-exports the public names and wraps the arrays into
:class:`jaxlayers.data.Dataset` objects (this module sits one floor below it
and knows nothing of ``Dataset``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
from collections import Counter

import numpy as np

__all__ = [
    "CAPTION_SPECIAL",
    "DIGIT_WORDS",
    "UNKNOWN_CHAR",
    "Vocabulary",
    "char_corpus",
    "decode_captions",
    "digit_caption_images",
    "pydoc_text",
]

UNKNOWN_CHAR = "\ufffd"
"""The character vocabulary's unknown symbol (U+FFFD REPLACEMENT CHARACTER, printed as ``�``)."""

CAPTION_SPECIAL = ("<NULL>", "<START>", "<END>", "<UNK>")
"""The captioning vocabulary's first four words, at indices 0..3, as in the NumPy original."""

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""The word for each digit 0..9 in the captions."""


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """A token vocabulary: token ``i`` is ``tokens[i]``; encode text to ids and decode ids to text.

    Two kinds: characters (``separator=""``: every character is a token, the
    pydoc corpus) and words (``separator=" "``: tokens are whitespace-separated
    words, the captions). A run stores it (:meth:`to_record`, in the
    checkpoint's ``preprocessing.vocab``) so that a loaded model can decode
    what it generates: :meth:`from_record` rebuilds it.

    Attributes:
      tokens: the tokens, index = id; distinct non-empty strings (single
        characters for a character vocabulary).
      unknown: the id that tokens outside the vocabulary encode to, or
        ``None`` (encoding one is then an error).
      separator: ``""`` (characters) or ``" "`` (words); :meth:`decode` joins
        tokens with it.

    Raises:
      ValueError: (on construction) duplicate or empty tokens, a character
        vocabulary with a multi-character token, ``unknown`` out of range, a
        separator other than ``""`` or ``" "``.

    Example:
      >>> v = Vocabulary(("a", "b", "c", UNKNOWN_CHAR), unknown=3)
      >>> v.encode("cab!").tolist()
      [2, 0, 1, 3]
      >>> v.decode([2, 0, 1])
      'cab'
    """

    tokens: tuple[str, ...]
    unknown: int | None = None
    separator: str = ""

    def __post_init__(self):
        tokens = tuple(str(t) for t in self.tokens)
        object.__setattr__(self, "tokens", tokens)
        if self.separator not in ("", " "):
            raise ValueError(f"Vocabulary: separator must be '' (characters) or ' ' (words), got {self.separator!r}")
        if len(set(tokens)) != len(tokens) or any(not t for t in tokens):
            dup = [t for t, n in Counter(tokens).items() if n > 1 or not t]
            raise ValueError(f"Vocabulary: tokens must be distinct and non-empty; repeated or empty: {dup[:5]!r}")
        if self.separator == "" and any(len(t) != 1 for t in tokens):
            bad = next(t for t in tokens if len(t) != 1)
            raise ValueError(f"Vocabulary: a character vocabulary (separator '') holds the token {bad!r}")
        if self.separator == " " and any(t != t.strip() or " " in t for t in tokens):
            bad = next(t for t in tokens if t != t.strip() or " " in t)
            raise ValueError(f"Vocabulary: a word vocabulary (separator ' ') holds the token {bad!r} with spaces")
        if self.unknown is not None:
            if not isinstance(self.unknown, (int, np.integer)) or not 0 <= int(self.unknown) < len(tokens):
                raise ValueError(
                    f"Vocabulary: unknown must be an id in [0, {len(tokens)}) or None, got {self.unknown!r}"
                )
            object.__setattr__(self, "unknown", int(self.unknown))

    def __len__(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """``{token: id}`` (the NumPy original's ``word_to_idx`` for words)."""
        return {t: i for i, t in enumerate(self.tokens)}

    def split(self, text: str) -> list[str]:
        """``text`` as tokens: its characters, or its whitespace-separated words."""
        return list(text) if self.separator == "" else text.split()

    def encode(self, text) -> np.ndarray:
        """Token ids of ``text``, int32 ``(L,)``.

        Args:
          text: a string (split by :meth:`split`) or a sequence of tokens.

        Raises:
          ValueError: a token outside the vocabulary when ``unknown`` is
            ``None`` (naming the token and its position).
        """
        tokens = self.split(text) if isinstance(text, str) else [str(t) for t in text]
        index, unk = self.index, self.unknown
        ids = np.empty(len(tokens), np.int32)
        for i, t in enumerate(tokens):
            j = index.get(t, unk)
            if j is None:
                raise ValueError(f"Vocabulary.encode: token {t!r} at position {i} is not in the vocabulary")
            ids[i] = j
        return ids

    def decode(self, ids) -> str:
        """The text of token ids: the tokens joined by ``separator``.

        ``decode(encode(s)) == s`` for a character vocabulary and any ``s``
        of its characters; for words, up to whitespace (joined by one space).

        Args:
          ids: integer ids ``(L,)`` (any integer array, list or a JAX array).

        Raises:
          ValueError: an id outside ``[0, len(tokens))``, or ids not 1-D.
          TypeError: non-integer ids.
        """
        a = np.asarray(ids)
        if a.ndim != 1:
            raise ValueError(f"Vocabulary.decode: ids must be 1-D, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"Vocabulary.decode: ids must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= len(self.tokens)):
            bad = int(a[(a < 0) | (a >= len(self.tokens))][0])
            raise ValueError(f"Vocabulary.decode: id {bad} is outside [0, {len(self.tokens)})")
        return self.separator.join(self.tokens[int(i)] for i in a)

    def to_record(self) -> dict:
        """JSON-ready: ``{"tokens": [...], "unknown": int or None, "separator": str}``."""
        return {"tokens": list(self.tokens), "unknown": self.unknown, "separator": self.separator}

    @classmethod
    def from_record(cls, record: dict) -> Vocabulary:
        """The vocabulary :meth:`to_record` wrote.

        Raises:
          ValueError: a record that is not such a dict (and what the constructor raises).
        """
        if not isinstance(record, dict) or not isinstance(record.get("tokens"), list):
            raise ValueError(f"Vocabulary.from_record: expected {{'tokens': [...], ...}}, got {record!r:.80}")
        return cls(tuple(record["tokens"]), record.get("unknown"), record.get("separator", ""))


# ---------------------------------------------------------------------------
# The pydoc character corpus
# ---------------------------------------------------------------------------


def pydoc_text() -> str:
    """The text of the running interpreter's own documentation topics, deterministically ordered.

    ``pydoc_data.topics.topics`` (shipped with every CPython; what ``help("if")``
    prints) is a dict of topic name to text; the corpus is the texts in sorted
    key order joined by ``"\\n"`` (each text already ends in a newline, so
    topics are separated by a blank line). About 465,000 characters and 100
    distinct characters on Python 3.11 (79 topics). The text differs slightly
    between Python versions: :func:`char_corpus` records its SHA-256.

    Raises:
      ImportError: an interpreter built without ``pydoc_data`` (some minimal
        distributions strip it).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # pragma: no cover - depends on the interpreter
        raise ImportError(
            "data.load('pydoc-chars') needs the standard library's pydoc_data package, which this Python lacks"
        ) from e
    return "\n".join(topics[k] for k in sorted(topics))


def _check_fractions(val_fraction: float, test_fraction: float, where: str) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(f, (int, float)) and 0.0 < f < 1.0):
            raise ValueError(f"{where}: {name} must lie in (0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"{where}: val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")


def _windows(ids: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``ids[s : s+T]`` and next-token targets ``ids[s+1 : s+T+1]`` for ``s = 0, stride, ...``."""
    n = (len(ids) - 1 - seq_len) // stride + 1 if len(ids) > seq_len else 0
    starts = np.arange(n, dtype=np.int64)[:, None] * stride + np.arange(seq_len)[None, :]
    return ids[starts].astype(np.int32), ids[starts + 1].astype(np.int32)


def char_corpus(
    seq_len: int = 100,
    *,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    stride: int | None = None,
    min_count: int = 1,
    text: str | None = None,
) -> dict:
    """A character-level language-modelling set cut from one text (by default :func:`pydoc_text`).

    The text's characters are split BY POSITION: the first ``1 - val_fraction
    - test_fraction`` (90%) for training, the next ``val_fraction`` (5%) for
    validation, the last ``test_fraction`` (5%) for test; no window reaches
    across a boundary, so no character of one split is an input or a target of
    another. The vocabulary is the sorted set of characters occurring at least
    ``min_count`` times in the TRAINING part, then :data:`UNKNOWN_CHAR` (the last
    id), which every other character (rare, or seen only in validation/test)
    encodes to. Each split is cut into windows of ``seq_len`` characters every
    ``stride`` (default ``seq_len``: disjoint windows), with the next
    character as target: ``y[n, t] = x[n, t + 1]`` within a window, and
    ``y[n, T-1]`` the character after it.

    Args:
      seq_len: ``T``, characters per window, ``>= 1``.
      val_fraction, test_fraction: in ``(0, 1)``, summing below 1.
      stride: characters between window starts, ``>= 1`` (``< seq_len``
        overlaps windows, only within a split).
      min_count: training occurrences a character needs to get its own id, ``>= 1``.
      text: the text to use instead of :func:`pydoc_text`.

    Returns:
      A dict: ``x_train, y_train, x_val, y_val, x_test, y_test`` int32
      ``(N_split, T)`` token ids; ``vocab`` (a :class:`Vocabulary` of
      characters); ``text_sha256`` (hex SHA-256 of the text's UTF-8 bytes);
      ``bounds`` (the character positions ``(0, a, b, L)`` of the three
      parts: train ``[0, a)``, validation ``[a, b)``, test ``[b, L)``);
      ``starts_train``/``_val``/``_test`` int64 ``(N_split,)``, each window's first
      position in the text; ``python`` (the interpreter version that made the
      default text).

    Raises:
      ValueError: a bad ``seq_len``, ``stride``, ``min_count`` or fraction;
        a text too short to give every split one window.
    """
    where = "data.char_corpus"
    stride = seq_len if stride is None else stride
    for name, v in (("seq_len", seq_len), ("stride", stride), ("min_count", min_count)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{where}: {name} must be an integer >= 1, got {v!r}")
    _check_fractions(val_fraction, test_fraction, where)
    text = pydoc_text() if text is None else str(text)
    L = len(text)
    a = round(L * (1.0 - val_fraction - test_fraction))
    b = round(L * (1.0 - test_fraction))
    counts = Counter(text[:a])
    chars = sorted(c for c, n in counts.items() if n >= min_count and c != UNKNOWN_CHAR)
    vocab = Vocabulary((*chars, UNKNOWN_CHAR), unknown=len(chars))
    lookup = np.full(max(map(ord, text), default=0) + 1, vocab.unknown, np.int32)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")]
    out = {
        "vocab": vocab,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "bounds": (0, a, b, L),
        "python": ".".join(map(str, sys.version_info[:3])),
    }
    for split, lo, hi in (("train", 0, a), ("val", a, b), ("test", b, L)):
        x, y = _windows(ids[lo:hi], int(seq_len), int(stride))
        if len(x) == 0:
            raise ValueError(
                f"{where}: the {split} part holds {hi - lo} characters, too few for one window of "
                f"seq_len {seq_len} plus its target; use a shorter seq_len or a longer text"
            )
        out[f"x_{split}"], out[f"y_{split}"] = x, y
        out[f"starts_{split}"] = lo + np.arange(len(x), dtype=np.int64) * int(stride)
    return out


# ---------------------------------------------------------------------------
# Digit captions
# ---------------------------------------------------------------------------


def decode_captions(captions, idx_to_word):
    """Captions as strings, as the NumPy original's ``decode_captions``: ``<NULL>`` skipped, up to ``<END>``.

    Args:
      captions: int ``(N, T)`` or one caption ``(T,)``.
      idx_to_word: the word of each id (a list, or a :class:`Vocabulary`).

    Returns:
      A list of ``N`` strings (``"<START> three one <END>"``), or one string for ``(T,)``.
    """
    words = idx_to_word.tokens if isinstance(idx_to_word, Vocabulary) else idx_to_word
    a = np.asarray(captions)
    single = a.ndim == 1
    out = []
    for row in np.atleast_2d(a):
        kept = []
        for i in row:
            w = words[int(i)]
            if w != "<NULL>":
                kept.append(w)
            if w == "<END>":
                break
        out.append(" ".join(kept))
    return out[0] if single else out


def _split_digits(X, y, val_fraction: float, test_fraction: float, seed: int):
    """Indices of sklearn's digits in train/val/test, stratified by class and seeded."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def digit_caption_images(
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
) -> dict:
    """The images, captions and vocabulary of :func:`jaxlayers.data.load_digit_captions` (which adds
    the standardised features; see its docstring for the arguments and layout)."""
    from sklearn.datasets import load_digits as sk_load_digits

    where = "data.load_digit_captions"
    for name, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{where}: {name} must be an integer >= 1, got {v!r}")
    if not (isinstance(min_digits, int) and isinstance(max_digits, int) and 1 <= min_digits <= max_digits):
        raise ValueError(f"{where}: need integers 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if 8 * max_digits > width:
        raise ValueError(
            f"{where}: {max_digits} digits of 8 pixels do not fit a width of {width} (need >= {8 * max_digits})"
        )
    _check_fractions(val_fraction, test_fraction, where)

    bunch = sk_load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    splits = _split_digits(images, labels, val_fraction, test_fraction, seed)
    idx_to_word = [*CAPTION_SPECIAL, *DIGIT_WORDS]
    word_to_idx = {w: i for i, w in enumerate(idx_to_word)}
    first_digit = len(CAPTION_SPECIAL)
    T = max_digits + 2
    rng = np.random.default_rng([seed, 0x5EC])
    out: dict = {}
    for split, n in (("train", num_train), ("val", num_val), ("test", num_test)):
        pool = splits[split]
        k = rng.integers(min_digits, max_digits + 1, size=n)
        sources = np.where(np.arange(max_digits)[None, :] < k[:, None], rng.choice(pool, size=(n, max_digits)), -1)
        digits = np.where(sources >= 0, labels[np.maximum(sources, 0)], -1)
        canvas = np.zeros((n, 8, width), np.float32)
        for j in range(max_digits):
            used = sources[:, j] >= 0
            canvas[used, :, 8 * j : 8 * j + 8] = images[sources[used, j]]
        captions = np.full((n, T), word_to_idx["<NULL>"], np.int32)
        captions[:, 0] = word_to_idx["<START>"]
        captions[:, 1 : max_digits + 1] = np.where(digits >= 0, digits + first_digit, word_to_idx["<NULL>"])
        captions[np.arange(n), k + 1] = word_to_idx["<END>"]
        out[f"{split}_captions"] = captions
        out[f"{split}_image_idxs"] = np.arange(n, dtype=np.int32)
        out[f"{split}_images"] = canvas
        out[f"{split}_digits"] = digits.astype(np.int32)
        out[f"{split}_sources"] = sources.astype(np.int32)
        out[f"{split}_urls"] = np.array([f"digit-captions/{split}/{i:06d}" for i in range(n)])
    out.update(
        idx_to_word=idx_to_word,
        word_to_idx=word_to_idx,
        vocab=Vocabulary(tuple(idx_to_word), unknown=word_to_idx["<UNK>"], separator=" "),
        digit_splits=splits,
    )
    return out
