"""The NumPy original's image-captioning models as models of the protocol: :class:`CaptioningRNN` and
:class:`CaptioningTransformer`.

Both share one base (:class:`_Captioner`): the vocabulary, the optional convolutional image encoder,
the teacher-forcing loss, greedy ``sample`` under ``jit``, ``caption_accuracy`` and what the training loop
counts; they differ in the decoder.

**CaptioningRNN.**
``h0 = features W_proj + b_proj``; the caption's words are embedded (``W_embed``), run through a
recurrent layer from ``h0`` (``Wx, Wh, b``) and every hidden state is scored over the vocabulary
(``W_vocab, b_vocab``). The NumPy original feeds it features of a pretrained CNN; here an optional
convolutional image encoder (``encoder_channels``) is part of the model and trained end to end with
it, so the model reads images. Every gradient is a jaxlayers hand-derived rule
(:func:`~jaxlayers.conv2d`, :func:`~jaxlayers.spatial_batchnorm`, :func:`~jaxlayers.relu`, :func:`~jaxlayers.max_pool2d`,
:func:`~jaxlayers.affine`, :func:`~jaxlayers.word_embedding`, :func:`~jaxlayers.rnn` /
:func:`~jaxlayers.lstm` / :func:`~jaxlayers.gru`, :func:`~jaxlayers.temporal_affine`,
:func:`~jaxlayers.temporal_softmax_loss`).

**CaptioningTransformer.** The image features, projected to the model width, are the memory; the words
are embedded, the sinusoidal positional encoding added, and ``num_layers`` decoder layers of causal
self-attention, cross-attention to the memory and an MLP (each with a residual and a layer norm) lead to
the scores over the vocabulary; its gradients compose :func:`~jaxlayers.multi_head_attention` (the
hand-derived :func:`~jaxlayers.dot_product_attention` and :func:`~jaxlayers.temporal_affine`),
:func:`~jaxlayers.layernorm`, :func:`~jaxlayers.relu`, :func:`~jaxlayers.dropout` and the ops above.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlayers._checks import (
    check_choice,
    check_fields,
    check_float_dtype,
    check_int,
    check_ints,
    check_number,
    require,
)
from jaxlayers.layers import (
    BatchNormState,
    affine,
    batchnorm_state,
    conv2d,
    dropout,
    gru,
    gru_step,
    layernorm,
    lstm,
    lstm_step,
    max_pool2d,
    multi_head_attention,
    relu,
    rnn,
    rnn_step,
    spatial_batchnorm,
    temporal_affine,
    word_embedding,
)
from jaxlayers.layers.mha import MHA_PARAMS
from jaxlayers.losses import temporal_softmax_loss
from jaxlayers.model import DataclassRecord, register_model
from jaxlayers.nn import sinusoidal_encoding

__all__ = ["CaptioningRNN", "CaptioningTransformer"]

CELL_TYPES = ("rnn", "lstm", "gru")
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_SEQUENCE = {"rnn": rnn, "lstm": lstm, "gru": gru}
SPECIAL_WORDS = ("<NULL>", "<START>", "<END>")
ENCODER_NORMS = ("none", "batchnorm")
NORM_POSITIONS = ("post", "pre")


def _rate(name: str):
    return lambda v, o, n: check_number(v, o, name, low=0.0, high=1.0, high_open=True)


def _words(value, owner: str, name: str) -> tuple[str, ...]:
    """The vocabulary as a tuple of words, index = id: from the NumPy original's ``word_to_idx`` dict,
    a sequence of words (``idx_to_word``) or a :class:`~jaxlayers.data.Vocabulary` (its ``tokens``)."""
    value = getattr(value, "tokens", value)
    if isinstance(value, dict):
        ids = sorted(value.values()) if all(isinstance(i, int | np.integer) for i in value.values()) else None
        require(
            ids == list(range(len(value))),
            owner,
            f"{name} (word -> index) must map its {len(value)} words onto 0..{len(value) - 1}, each once",
        )
        words = [None] * len(value)
        for w, i in value.items():
            words[int(i)] = w
        value = words
    require(
        not isinstance(value, str | bytes) and hasattr(value, "__iter__"),
        owner,
        f"{name} must be a dict word -> index, or the words in index order, got {type(value).__name__}",
        TypeError,
    )
    words = tuple(value)
    require(all(isinstance(w, str) for w in words), owner, f"{name} must hold strings", TypeError)
    require(len(set(words)) == len(words), owner, f"{name} holds a word twice")
    missing = [w for w in SPECIAL_WORDS if w not in words]
    require(not missing, owner, f"{name} must hold {', '.join(SPECIAL_WORDS)}; it lacks {', '.join(missing)}")
    return words


def _input_dim(value, owner: str, name: str):
    """``D`` (an int >= 1) or an image shape ``(C, H, W)`` (a tuple of ints >= 1)."""
    if isinstance(value, tuple | list):
        shape = check_ints(value, owner, name)
        require(len(shape) == 3, owner, f"{name} must be an int D or an image shape (C, H, W), got {value!r}")
        return shape
    return check_int(value, owner, name, minimum=1)


class _Captioner(DataclassRecord):
    """What :class:`CaptioningRNN` and :class:`CaptioningTransformer` share (a mixin of frozen dataclasses
    with the fields ``words``, ``input_dim``, ``encoder_channels``, ``encoder_norm``, ``max_length``,
    ``dropout_rate``, ``reg``, ``dtype``): the vocabulary, the image encoder, the loss, greedy sampling,
    the accuracies. A subclass gives :meth:`param_shapes`, :meth:`weight_names`, :meth:`param_init`,
    ``_teacher_forced`` (the scores of ``captions[:, 1:]``) and ``_greedy`` (the greedy caption)."""

    _OWNER: ClassVar[str] = "captioning model"
    sequence_targets: ClassVar[bool] = True

    def _check_encoder_fields(self) -> None:
        """The encoder's fields, after :func:`check_fields`: a norm needs convs, convs need an image that
        their pools do not shrink to nothing."""
        owner = self._OWNER
        require(
            self.encoder_norm == "none" or bool(self.encoder_channels),
            owner,
            f"encoder_norm={self.encoder_norm!r} normalises the image encoder's convs: it needs encoder_channels",
        )
        if self.encoder_channels:
            require(
                isinstance(self.input_dim, tuple),
                owner,
                f"an image encoder (encoder_channels={self.encoder_channels}) reads images: input_dim must be "
                f"(C, H, W), got {self.input_dim}",
            )
            _, h, w = self.input_dim
            for i, _c in enumerate(self.encoder_channels, 1):
                require(
                    h >= 2 and w >= 2,
                    owner,
                    f"encoder block {i}'s 2x2 pool shrinks the {self.input_dim[1:]} image to nothing "
                    f"({h}x{w} before it); use fewer encoder_channels",
                )
                h, w = h // 2, w // 2

    def _encoder_shapes(self) -> dict[str, tuple[int, ...]]:
        """The encoder's parameters: ``W_conv{i} (C_i, C_{i-1}, 3, 3)``, ``b_conv{i}``, with batchnorm
        ``gamma_conv{i}``, ``beta_conv{i}`` ``(C_i,)``."""
        shapes = {}
        c_in = self.input_shape[0]
        for i, c in enumerate(self.encoder_channels, 1):
            shapes[f"W_conv{i}"], shapes[f"b_conv{i}"] = (c, c_in, 3, 3), (c,)
            if self.encoder_norm == "batchnorm":
                shapes[f"gamma_conv{i}"], shapes[f"beta_conv{i}"] = (c,), (c,)
            c_in = c
        return shapes

    def _random_loss(self) -> bool:
        """Whether :meth:`loss` drops anything (and so needs a key)."""
        return self.dropout_rate > 0

    def _dropout_text(self) -> str:
        return f"dropout_rate={self.dropout_rate}"

    # ------------------------------------------------------------------ the vocabulary and shapes

    @property
    def word_to_idx(self) -> dict[str, int]:
        """The NumPy original's ``word_to_idx``: word -> id."""
        return {w: i for i, w in enumerate(self.words)}

    @property
    def idx_to_word(self) -> list[str]:
        """The word of each id (a list)."""
        return list(self.words)

    @property
    def vocab_size(self) -> int:
        """``V``."""
        return len(self.words)

    @property
    def num_classes(self) -> int:
        """``V``: scores are over the vocabulary."""
        return len(self.words)

    @property
    def null(self) -> int:
        return self.words.index("<NULL>")

    @property
    def start(self) -> int:
        return self.words.index("<START>")

    @property
    def end(self) -> int:
        return self.words.index("<END>")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: ``(D,)`` or ``(C, H, W)``."""
        return self.input_dim if isinstance(self.input_dim, tuple) else (self.input_dim,)

    def feature_dim(self) -> int:
        """``F``: the rows of ``W_proj`` (the encoder's output size, or ``D``)."""
        if not self.encoder_channels:
            return math.prod(self.input_shape)
        _, h, w = self.input_dim
        for _ in self.encoder_channels:
            h, w = h // 2, w // 2
        return self.encoder_channels[-1] * h * w

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def summary(self) -> str:
        """One line per parameter (name, shape, count) and a total line."""
        shapes = self.param_shapes()
        width = max(len(n) for n in shapes)
        lines = [f"{n.ljust(width)}  {str(s).ljust(16)}  {math.prod(s):>9,}" for n, s in shapes.items()]
        itemsize = np.dtype(self.dtype).itemsize
        total = f"{self.num_params():,} parameters, {self.num_params() * itemsize:,} bytes"
        lines.append(f"{type(self).__name__}: {total}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ the model protocol

    def _check_dtype_available(self) -> None:
        available = jax.dtypes.canonicalize_dtype(self.dtype)
        require(
            available == self.dtype,
            self._OWNER,
            f"dtype {self.dtype} is not available: JAX's x64 mode is off, so it would silently run in "
            f"{available}. Wrap the calls in `with jax.enable_x64(True):`",
            TypeError,
        )

    def uses_batchnorm(self) -> bool:
        """Whether the encoder has batchnorm (``encoder_norm='batchnorm'``), hence running statistics."""
        return self.encoder_norm == "batchnorm"

    def init_state(self) -> dict:
        """The initial running statistics: ``{"bn{i}": batchnorm_state(C_i)}`` (mean 0, var 1, float32) per
        conv block with ``encoder_norm='batchnorm'``, else ``{}``."""
        if not self.uses_batchnorm():
            return {}
        return {f"bn{i}": batchnorm_state(c) for i, c in enumerate(self.encoder_channels, 1)}

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """``(params, state)`` from ``key``: each parameter drawn as :meth:`param_init` says, one subkey of
        ``key`` per parameter in :meth:`param_shapes` order; ``state`` is :meth:`init_state` (``{}``
        without batchnorm).

        Raises:
          TypeError: ``dtype`` float64 with x64 off.
        """
        self._check_dtype_available()
        shapes = self.param_shapes()
        keys = iter(jax.random.split(key, len(shapes)))
        params = {}
        for name, shape in shapes.items():
            k, how = next(keys), self.param_init(name)
            if how in ("zeros", "ones"):
                params[name] = (jnp.zeros if how == "zeros" else jnp.ones)(shape, self.dtype)
            else:
                params[name] = (how * jax.random.normal(k, shape, jnp.float32)).astype(self.dtype)
        return params, self.init_state()

    def _encoder_init(self, name: str):
        """The encoder's parameters: ``W_conv{i} ~ N(0, 2 / fan_in)`` (He, ``fan_in = C_{i-1} * 9``),
        ``b_conv{i}``, ``beta_conv{i}`` 0, ``gamma_conv{i}`` 1; ``None`` for any other name."""
        if name.startswith("W_conv"):
            return math.sqrt(2.0 / math.prod(self.param_shapes()[name][1:]))
        if name.startswith(("b_conv", "beta_conv")):
            return "zeros"
        if name.startswith("gamma_conv"):
            return "ones"
        return None

    def _check_params(self, params, state) -> None:
        owner = self._OWNER
        require(
            isinstance(params, dict),
            owner,
            f"params must be a dict (from init), got {type(params).__name__}",
            TypeError,
        )
        want = self.param_shapes()
        missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
        require(
            not missing and not extra, owner, f"params do not match this model: missing {missing}, unexpected {extra}"
        )
        for name, shape in want.items():
            got = tuple(np.shape(params[name]))
            require(got == shape, owner, f"params[{name!r}] must have shape {shape}, got {got}")
        if not self.uses_batchnorm():
            require(
                state == {} or state is None,
                owner,
                f"this model has no running statistics: state must be {{}}, got {state!r}",
            )
            return
        want_state = self.init_state()
        require(
            isinstance(state, dict) and set(state) == set(want_state),
            owner,
            f"state must hold the encoder's running statistics {sorted(want_state)} (from init; sample and "
            f"caption_accuracy need state=), got {state!r:.200}",
        )
        for name, st in want_state.items():
            got = state[name]
            require(isinstance(got, BatchNormState), owner, f"state[{name!r}] must be a BatchNormState", TypeError)
            for field in ("mean", "var"):
                shape = tuple(np.shape(getattr(got, field)))
                require(shape == st.mean.shape, owner, f"state[{name!r}].{field} must be {st.mean.shape}, got {shape}")

    def _images(self, x) -> jax.Array:
        """``x`` checked and shaped: ``(N, *input_shape)`` (or flat ``(N, prod(input_shape))``), in ``dtype``."""
        shape = tuple(np.shape(x))
        want = self.input_shape
        d = math.prod(want)
        require(
            len(shape) >= 2 and (shape[1:] == want or shape[1:] == (d,)),
            self._OWNER,
            f"x must have shape (N, {', '.join(map(str, want))})"
            + (f" or flat (N, {d})" if len(want) > 1 else "")
            + f", got {shape}",
        )
        x = jnp.asarray(x)
        require(
            jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer),
            self._OWNER,
            f"x must be numeric, got dtype {x.dtype}",
            TypeError,
        )
        return x.reshape(x.shape[0], *want).astype(self.dtype)

    def _encode(self, params, state, x, train: bool):
        """``(features (N, F), new_state)``: the encoder's output, flattened, or ``x``; batchnorm with the
        batch statistics (``train``, updating ``state``) or the running ones."""
        x = self._images(x)
        updated = {}
        for i in range(1, len(self.encoder_channels) + 1):
            x = conv2d(x, params[f"W_conv{i}"], params[f"b_conv{i}"], padding=1)
            if self.uses_batchnorm():
                x, updated[f"bn{i}"] = spatial_batchnorm(
                    x, params[f"gamma_conv{i}"], params[f"beta_conv{i}"], state[f"bn{i}"], train=train
                )
            x = max_pool2d(relu(x), pool_size=(2, 2), stride=2)
        return x.reshape(x.shape[0], -1), ({**state, **updated} if train else state)

    def _need_state(self, state, where: str) -> dict:
        require(
            state is not None or not self.uses_batchnorm(),
            f"{self._OWNER}.{where}",
            "this model's encoder has batchnorm: pass state= (the running statistics, from init or training)",
        )
        return {} if state is None else state

    def features(self, params, x, *, state=None) -> jax.Array:
        """The image features ``(N, F)`` that ``W_proj`` reads: the encoder's output, flattened, or ``x``
        (test mode: batchnorm with the running statistics ``state``, required with batchnorm)."""
        return self._encode(params, self._need_state(state, "features"), x, False)[0]

    def _start_row(self, n: int, dtype) -> jax.Array:
        """Step 0's scores ``(n, 1, V)``: a one-hot row on ``<START>`` (given, never counted)."""
        return jnp.broadcast_to(jax.nn.one_hot(self.start, self.vocab_size, dtype=dtype), (n, 1, self.vocab_size))

    def _captions(self, y, where: str) -> jax.Array:
        y = jnp.asarray(y)
        require(
            jnp.issubdtype(y.dtype, jnp.integer),
            where,
            f"captions (y) must be integer word ids, got dtype {y.dtype}",
            TypeError,
        )
        require(y.ndim == 2 and y.shape[1] >= 2, where, f"captions (y) must be (N, L) with L >= 2, got {y.shape}")
        return y

    def teacher_forced_scores(self, params, x, captions, *, key=None, state=None) -> jax.Array:
        """Scores ``(N, L - 1, V)`` of ``captions[:, 1:]`` reading ``captions[:, :-1]`` (teacher forcing);
        ``key``: the dropout key (train mode: the model's dropout, see its ``dropout_rate``); batchnorm (if
        any) uses the running statistics ``state``."""
        state = self._need_state(state, "teacher_forced_scores")
        return self._teacher_forced(params, state, x, captions, train=False, key=key)[0]

    def l2_penalty(self, params) -> jax.Array:
        """``0.5 * reg * sum(W**2)`` over :meth:`weight_names`."""
        total = sum(jnp.vdot(params[n], params[n]) for n in self.weight_names())
        return 0.5 * jnp.asarray(self.reg, self.dtype) * total

    def loss(self, params, state, x, y, *, key=None):
        """The training loss (teacher forcing, as the NumPy original), for ``jax.value_and_grad(has_aux=True)``.

        Args:
          params, state: from :meth:`init` (``state``: ``{}``, or the running statistics with batchnorm,
            which this updates from the batch's).
          x: images or features, as :meth:`apply`.
          y: captions, int ``(N, L)``, ``L >= 2``: ``<START> w1 .. <END> <NULL> ..``.
          key: PRNG key of the dropout; required when the model drops anything in training
            (``dropout_rate > 0``, and for :class:`CaptioningTransformer` ``decoder_dropout > 0``).

        Returns:
          ``(loss, (new_state, scores))``: ``temporal_softmax_loss(scores of captions[:, 1:], captions[:, 1:],
          captions[:, 1:] != <NULL>)`` (summed over the steps, divided by ``N``) plus the L2 penalty; the
          teacher-forced scores ``(N, L, V)`` with the ``<START>`` row first (see the class docstring).

        Raises:
          ValueError: ``x`` or ``params`` of the wrong shape, captions not ``(N, L)`` with ``L >= 2`` or
            with another ``N`` (naming the shapes); no ``key`` when the model drops anything.
          TypeError: non-integer captions.
        """
        self._check_params(params, state)
        captions = self._captions(y, f"{self._OWNER}.loss")
        require(
            captions.shape[0] == np.shape(x)[0],
            f"{self._OWNER}.loss",
            f"captions (y) {captions.shape} and x {np.shape(x)} must have as many rows",
        )
        require(
            key is not None or not self._random_loss(),
            f"{self._OWNER}.loss",
            f"a PRNG key is required for the dropout ({self._dropout_text()}): pass key=",
        )
        scores, state = self._teacher_forced(params, state, x, captions, train=True, key=key)
        captions_out = captions[:, 1:]
        mask = captions_out != self.null
        data_loss = temporal_softmax_loss(scores, captions_out, mask)
        full = jnp.concatenate([self._start_row(scores.shape[0], scores.dtype), scores], axis=1)
        return data_loss + self.l2_penalty(params).astype(data_loss.dtype), (state, full)

    def sample(self, params, x, max_length: int = 30, *, state=None) -> jax.Array:
        """Greedy captions, as the NumPy original's ``sample``: from the image and ``<START>``, each step
        feeds the previous step's most likely word. Pure and jittable (``max_length`` static), one
        ``lax.scan`` over the steps.

        Args:
          params: from :meth:`init` (or training).
          x: images or features, as :meth:`apply`.
          max_length: ``T >= 1``, the words generated.
          state: the running statistics (from :meth:`init` or training); required with
            ``encoder_norm='batchnorm'``, else ``None`` or ``{}``.

        Returns:
          int32 ``(N, T)``: the words after ``<START>`` (not included). As the NumPy original, the steps
          after an ``<END>`` go on generating: read a caption up to its first ``<END>``
          (:func:`jaxlayers.data.decode_captions` does).

        Raises:
          ValueError: ``x``, ``params`` or ``state`` that do not match the model; ``max_length < 1``; no
            ``state`` with batchnorm.
        """
        max_length = check_int(max_length, f"{self._OWNER}.sample", "max_length", minimum=1)
        state = self._need_state(state, "sample")
        self._check_params(params, state)
        return self._greedy(params, x, max_length, state)[0]

    def apply(self, params, state, x, *, train: bool, key=None):
        """The greedy caption's scores ``(N, max_length + 1, V)`` (step 0 the ``<START>`` row) and ``state``.

        No dropout in either mode (``key`` is unused); with batchnorm, ``train=True`` normalises with the
        batch statistics and returns the updated running statistics, ``train=False`` uses ``state``'s. See the
        class docstring for why these scores: ``argmax(scores, -1)[:, 1:]`` is :meth:`sample`'s caption.

        Raises:
          ValueError: ``x``, ``params`` or ``state`` that do not match the model (naming the shapes).
          TypeError: a non-bool ``train``.
        """
        require(isinstance(train, bool), self._OWNER, f"train must be a Python bool, got {train!r}", TypeError)
        self._check_params(params, state)
        _, scores, new_state = self._greedy(params, x, self.max_length, state, train)
        return jnp.concatenate([self._start_row(scores.shape[0], scores.dtype), scores], axis=1), new_state

    # ------------------------------------------------------------------ what the loop counts

    def target_mask(self, y) -> jax.Array:
        """Which words of the captions ``y (N, L)`` an accuracy counts, bool ``(N, L)``: every word after
        ``<START>`` that is not ``<NULL>`` (the reference's words and its ``<END>``), and no negative
        (padding) label. Step 0 never counts."""
        y = jnp.asarray(y)
        mask = (y != self.null) & (y >= 0)
        return mask.at[:, 0].set(False)

    def target_count(self, y) -> jax.Array:
        """``sum(target_mask(y))`` (int32)."""
        return jnp.sum(self.target_mask(y), dtype=jnp.int32)

    def caption_accuracy(self, params, x, captions, *, state=None, batch_size: int = 1000) -> tuple[float, float]:
        """``(exact, per_word)`` of the greedy captions (:meth:`sample`, ``L - 1`` words) against ``captions``.

        ``exact``: the fraction of images whose caption is right word for word up to and including the
        reference's ``<END>``; ``per_word``: the fraction of those words (:meth:`target_mask`) that are
        right. Runs in jitted batches of ``batch_size`` (the last padded).

        Args:
          params: the trained parameters.
          x: images or features ``(N, ...)`` as :meth:`apply`.
          captions: int ``(N, L)``, the references.
          state: the running statistics; required with ``encoder_norm='batchnorm'`` (as :meth:`sample`).

        Returns:
          Two Python floats in ``[0, 1]`` (``nan`` for ``N = 0``).

        Raises:
          ValueError: shapes that do not fit (naming them).
        """
        captions = np.asarray(captions)
        where = f"{self._OWNER}.caption_accuracy"
        state = self._need_state(state, "caption_accuracy")
        self._check_params(params, state)
        self._captions(captions, where)
        n = captions.shape[0]
        require(np.shape(x)[0] == n, where, f"x {np.shape(x)} and captions {captions.shape} must have as many rows")
        if n == 0:
            return float("nan"), float("nan")
        batch_size = check_int(batch_size, where, "batch_size", minimum=1)
        x = np.asarray(x)
        run = _jitted_sample(self, captions.shape[1] - 1)
        sampled = []
        for s in range(0, n, batch_size):
            xb = x[s : s + batch_size]
            if xb.shape[0] < batch_size and n > batch_size:
                xb = np.concatenate([xb, np.zeros((batch_size - xb.shape[0], *xb.shape[1:]), xb.dtype)])
            sampled.append(run(params, state, xb))
        sampled = np.concatenate(jax.device_get(sampled))[:n]
        mask = np.asarray(self.target_mask(captions))[:, 1:]
        right = (sampled == captions[:, 1:]) | ~mask
        return float(right.all(axis=1).mean()), float((right & mask).sum() / max(mask.sum(), 1))


@register_model
@dataclasses.dataclass(frozen=True)
class CaptioningRNN(_Captioner):
    """The NumPy original's captioning model (``CaptioningRNN``), as a model of the protocol.

    A frozen, hashable configuration (static under ``jit``) with pure methods; parameters live in a flat
    dict under the NumPy original's names:

    * ``W_proj (F, H)``, ``b_proj (H,)``: image features to the initial hidden state ``h0``;
    * ``W_embed (V, W)``: the word vectors;
    * ``Wx (W, kH)``, ``Wh (H, kH)``, ``b (kH,)``: the recurrent layer (``k`` = 1 for ``'rnn'``, 4 for
      ``'lstm'``, gate order i, f, o, g; 3 for ``'gru'``, gate order r, z, n, see :func:`jaxlayers.gru`);
    * ``W_vocab (H, V)``, ``b_vocab (V,)``: hidden states to scores over the vocabulary;
    * with an image encoder, ``W_conv{i} (C_i, C_{i-1}, 3, 3)`` and ``b_conv{i} (C_i,)`` per conv block,
      and with ``encoder_norm='batchnorm'`` also ``gamma_conv{i}``, ``beta_conv{i}`` ``(C_i,)``.

    ``state``: ``{}``, or with ``encoder_norm='batchnorm'`` the running statistics
    ``{"bn{i}": BatchNormState}`` (float32 ``(C_i,)``) of each conv block. ``F`` is ``D``
    (``prod(input_dim)``) without an encoder, else the encoder's output size ``C_L * H / 2**L * W / 2**L``.

    **Image encoder** (beyond the NumPy original, which feeds features of a pretrained CNN):
    ``encoder_channels = (C_1, ..., C_L)`` puts ``L`` blocks ``conv 3x3 (stride 1, padding 1) - [spatial
    batchnorm] - ReLU - 2x2 max pool`` in front of ``W_proj``; the model then takes images ``(N, C, H, W)`` (or flat
    ``(N, C*H*W)``), and the encoder is trained end to end with the rest. ``()``: the NumPy original's
    model on given features ``(N, D)``.

    **Teacher forcing** (:meth:`loss`), exactly as the NumPy original: ``y`` are the captions ``(N, L)``,
    ``<START> w1 .. <END> <NULL> ..``; ``captions_in = y[:, :-1]`` are read, ``captions_out = y[:, 1:]``
    predicted, ``mask = captions_out != <NULL>``; the loss is :func:`jaxlayers.temporal_softmax_loss`
    (summed over the steps, divided by ``N``) plus ``0.5 * reg * sum(W**2)`` over ``W_proj, Wx, Wh,
    W_vocab`` and the ``W_conv{i}``.

    **Scores** (what :meth:`apply` and :meth:`loss` return, for the training loop's accuracies): ``(N,
    L, V)``, aligned with the captions ``y (N, L)``: step 0 is the given ``<START>`` (a one-hot row, never
    counted: :meth:`target_mask` is ``False`` there), step ``t >= 1`` the scores of word ``t``. In
    :meth:`loss` they are the teacher-forced scores (so the loop's training accuracy is the teacher-forced
    per-word accuracy); in :meth:`apply`, which has no captions, those of the greedy caption
    (:meth:`sample`), ``L = max_length + 1`` steps: the loop's validation/test accuracy, and
    :func:`jaxlayers.train.evaluate`, are then the greedy captions' **per-word accuracy**, word by word
    over each reference's words and its ``<END>`` (:meth:`target_mask`). :meth:`caption_accuracy` gives
    that and the exact-caption accuracy.

    Attributes:
      words: the vocabulary, index = word id; the constructor also takes the NumPy original's
        ``word_to_idx`` dict or a :class:`~jaxlayers.data.Vocabulary`. Must hold ``<NULL>`` (padding,
        masked), ``<START>`` and ``<END>``. :attr:`word_to_idx`, :attr:`idx_to_word` give both maps.
      input_dim: ``D`` (features per image) or an image shape ``(C, H, W)``; required ``(C, H, W)``
        with an encoder.
      wordvec_dim: ``W``, the word vectors' size.
      hidden_dim: ``H``, the recurrent layer's hidden size.
      cell_type: ``'rnn'`` (tanh), ``'lstm'`` or ``'gru'``.
      encoder_channels: the conv blocks' channels (see above); ``()``: none.
      max_length: the words :meth:`apply` generates after ``<START>``, so that its scores have
        ``max_length + 1`` steps, as many as the captions have words (``6 - 1`` for
        ``"digit-captions"``).
      dropout_rate: probability of dropping each image feature (the ``F`` inputs of ``W_proj``) in
        :meth:`loss` (train mode; inverted dropout, :func:`jaxlayers.dropout`), in ``[0, 1)``; ``0``
        (the NumPy original): none. :meth:`apply` and :meth:`sample` never drop.
      reg: L2 strength ``>= 0`` (the NumPy original has none: ``0``).
      dtype: parameter and compute dtype; float64 needs x64.
      encoder_norm: ``'none'`` or ``'batchnorm'``: :func:`jaxlayers.spatial_batchnorm` after each
        conv of the encoder (momentum 0.9, eps 1e-5): batch statistics in :meth:`loss` and in
        :meth:`apply` with ``train=True`` (which update the running statistics in ``state``), the
        running statistics elsewhere, so :meth:`sample` and :meth:`caption_accuracy` then need
        ``state=``. Needs ``encoder_channels``.

    Raises:
      ValueError, TypeError: at construction, naming the field: a vocabulary without the special
        words, an unknown ``cell_type`` or ``encoder_norm``, ``encoder_norm`` without an encoder, an encoder without an image ``input_dim`` or one whose pools
        shrink the image to nothing, non-positive sizes, a negative ``reg``.

    Example:
      >>> import jax, jaxlayers as jl
      >>> words = ["<NULL>", "<START>", "<END>", "one", "two"]
      >>> model = jl.CaptioningRNN(words, input_dim=(1, 8, 16), hidden_dim=16, wordvec_dim=8,
      ...                          cell_type="lstm", encoder_channels=(4,), max_length=3)
      >>> params, state = model.init(jax.random.key(0))
      >>> sorted(params)[:4]
      ['W_conv1', 'W_embed', 'W_proj', 'W_vocab']
      >>> model.sample(params, jax.numpy.zeros((2, 1, 8, 16)), max_length=3).shape
      (2, 3)
    """

    words: tuple[str, ...]
    input_dim: Any = 512
    wordvec_dim: int = 128
    hidden_dim: int = 128
    cell_type: str = "rnn"
    encoder_channels: tuple[int, ...] = ()
    max_length: int = 16
    dropout_rate: float = 0.0
    reg: float = 0.0
    dtype: Any = jnp.float32
    encoder_norm: str = "none"

    _OWNER: ClassVar[str] = "CaptioningRNN"

    def __post_init__(self) -> None:
        owner, positive = self._OWNER, partial(check_int, minimum=1)
        check_fields(
            self,
            owner,
            words=_words,
            input_dim=_input_dim,
            wordvec_dim=positive,
            hidden_dim=positive,
            cell_type=partial(check_choice, choices=CELL_TYPES),
            encoder_channels=check_ints,
            max_length=positive,
            dropout_rate=_rate("dropout_rate"),
            reg=lambda v, o, n: check_number(v, o, "reg (L2 strength)", low=0.0),
            dtype=check_float_dtype,
            encoder_norm=partial(check_choice, choices=ENCODER_NORMS),
        )
        self._check_encoder_fields()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape by name."""
        V, W, H, k = self.vocab_size, self.wordvec_dim, self.hidden_dim, _GATES[self.cell_type]
        shapes = self._encoder_shapes()
        shapes.update(W_proj=(self.feature_dim(), H), b_proj=(H,), W_embed=(V, W))
        shapes.update(Wx=(W, k * H), Wh=(H, k * H), b=(k * H,), W_vocab=(H, V), b_vocab=(V,))
        return shapes

    def weight_names(self) -> list[str]:
        """The parameters the L2 penalty covers: the ``W_conv{i}``, ``W_proj``, ``Wx``, ``Wh``, ``W_vocab``."""
        return [n for n in self.param_shapes() if n.startswith("W_conv")] + ["W_proj", "Wx", "Wh", "W_vocab"]

    def param_init(self, name: str):
        """How :meth:`init` draws parameter ``name``: the NumPy original's initialisation, ``W_embed ~
        N(0, 1) / 100``, ``W_proj``, ``Wx``, ``Wh``, ``W_vocab`` ``~ N(0, 1) / sqrt(fan_in)``, every bias 0;
        the encoder's ``W_conv{i} ~ N(0, 2 / fan_in)`` (He, ``fan_in = C_{i-1} * 9``), ``b_conv{i}`` and
        ``beta_conv{i}`` 0, ``gamma_conv{i}`` 1. Returns the normal's std, or ``"zeros"`` / ``"ones"``."""
        encoder = self._encoder_init(name)
        if encoder is not None:
            return encoder
        if name.startswith("b"):
            return "zeros"
        return 0.01 if name == "W_embed" else 1.0 / math.sqrt(self.param_shapes()[name][0])

    def _h0(self, params, state, x, *, train: bool, key=None):
        features, new_state = self._encode(params, state, x, train)
        if key is not None and self.dropout_rate > 0:
            features = dropout(features, key, rate=self.dropout_rate, train=True)
        return affine(features, params["W_proj"], params["b_proj"]), new_state

    def initial_state(self, params, x, *, key=None, state=None) -> jax.Array:
        """``h0 = features W_proj + b_proj`` ``(N, H)``; with ``key`` (train mode), the features first go
        through dropout of ``dropout_rate``. Batchnorm (if any) uses the running statistics ``state``."""
        return self._h0(params, self._need_state(state, "initial_state"), x, train=False, key=key)[0]

    def _teacher_forced(self, params, state, x, captions, *, train: bool, key=None):
        h0, new_state = self._h0(params, state, x, train=train, key=key)
        words = word_embedding(captions[:, :-1], params["W_embed"])
        h = _SEQUENCE[self.cell_type](words, h0, params["Wx"], params["Wh"], params["b"])
        return temporal_affine(h, params["W_vocab"], params["b_vocab"]), new_state

    def _greedy(self, params, x, max_length: int, state=None, train: bool = False):
        """``(words (N, T) int32, scores (N, T, V), new_state)`` of the greedy caption: one ``lax.scan``."""
        h, new_state = self._h0(params, state or {}, x, train=train)
        n = h.shape[0]
        p = params

        def step(carry, _):
            h, c, word = carry
            w = p["W_embed"][word]
            if self.cell_type == "lstm":
                h, c = lstm_step(w, h, c, p["Wx"], p["Wh"], p["b"])
            elif self.cell_type == "gru":
                h = gru_step(w, h, p["Wx"], p["Wh"], p["b"])
            else:
                h = rnn_step(w, h, p["Wx"], p["Wh"], p["b"])
            scores = affine(h, p["W_vocab"], p["b_vocab"])
            word = jnp.argmax(scores, axis=-1).astype(jnp.int32)
            return (h, c, word), (word, scores)

        carry = (h, jnp.zeros_like(h), jnp.full((n,), self.start, jnp.int32))
        _, (words, scores) = lax.scan(step, carry, None, length=max_length)
        return jnp.swapaxes(words, 0, 1), jnp.swapaxes(scores, 0, 1), new_state


def _local(name: str) -> str:
    """A Transformer parameter's name within its attention (``self2_Wq`` -> ``Wq``), else the name."""
    return name.split("_", 1)[1] if name.startswith(("self", "cross")) else name


@register_model
@dataclasses.dataclass(frozen=True)
class CaptioningTransformer(_Captioner):
    """The NumPy original's Transformer captioning model (``CaptioningTransformer``), as a model of the
    protocol: the same protocol, encoder, loss, sampling and accuracies as :class:`CaptioningRNN`.

    The decoder (``W = wordvec_dim``, ``M = mlp_dim``, ``L`` layers)::

        memory = (features W_proj + b_proj)[:, None, :]                  # (N, 1, W): one image token
        x = drop(W_embed[captions_in] + P[:T])                           # P: sinusoidal_encoding(T, W)
        for l in 1..L:                                                   # norm="post" (the NumPy original):
            x = LN1(x + drop(MHA_self(x, x, x, causal)))
            x = LN2(x + drop(MHA_cross(x, memory, memory)))
            x = LN3(x + drop(W2 drop(relu(W1 x + b1)) + b2))
        scores = x W_vocab + b_vocab                                     # (N, T, V)

    ``MHA`` is :func:`jaxlayers.multi_head_attention` with ``num_heads`` heads of ``W / num_heads``
    (the self-attention causal: word ``t`` reads words ``<= t``; its attention probabilities dropped at
    ``decoder_dropout`` in training, as the NumPy original's ``MultiHeadAttention``), ``LN`` layer norms
    (eps ``1e-5``), ``drop`` dropout of ``decoder_dropout`` (train mode only). The NumPy original's
    ``TransformerDecoderLayer`` is **post-norm** (each residual sum normalised), the default here
    (``norm="post"``). ``norm="pre"`` is the pre-norm variant (GPT-2's, :class:`jaxlayers.nn.TransformerBlock`'s:
    ``x = x + drop(sublayer(LN(x)))`` for the three sublayers, the memory read un-normalised, and one
    final layer norm ``gamma_out, beta_out`` before ``W_vocab``), which keeps an identity path from the
    scores to the embeddings and trains deep stacks without warm-up. The default and the CLI preset keep
    the NumPy original's post-norm: at two layers it trains without warm-up (96.3% exact captions on
    ``digit-captions``, ``bench/RESULTS.md``), and it is the model the course describes; ``"pre"`` is
    checked against the same reference formulas but was not measured on the digits.

    As the NumPy original the memory is ONE token (the whole image's features, projected): the
    cross-attention's softmax over one key is 1, so each layer adds ``((memory Wv + bv) Wo + bo)`` --
    image-dependent, the same at every step; the words' positions and the previous words (causal
    self-attention) pick what to read from it.

    Parameters (a flat dict; ``l = 1..L``): the encoder's (as :class:`CaptioningRNN`'s), ``W_proj (F,
    W)``, ``b_proj (W,)``, ``W_embed (V, W)``; per layer ``self{i}_Wq ... self{i}_bo`` and ``cross{i}_Wq
    ... cross{i}_bo`` (:data:`jaxlayers.layers.mha.MHA_PARAMS`, each ``W (W, W)``, ``b (W,)``),
    ``W1_{i} (W, M)``, ``b1_{i} (M,)``, ``W2_{i} (M, W)``, ``b2_{i} (W,)``, ``gamma{i}_{k}``,
    ``beta{i}_{k}`` ``(W,)`` for the layer norms ``k = 1, 2, 3``; with ``norm="pre"`` ``gamma_out``,
    ``beta_out``; ``W_vocab (W, V)``, ``b_vocab (V,)``. ``state``: as :class:`CaptioningRNN`'s.

    **Loss** (:meth:`loss`): teacher forcing as :class:`CaptioningRNN`: the scores of ``captions[:, 1:]``
    reading ``captions[:, :-1]`` under the causal mask, :func:`jaxlayers.temporal_softmax_loss` with the
    ``<NULL>`` mask (summed over the steps, divided by ``N``; the NumPy original's Transformer solver
    averages over ``N * T`` instead, the same loss times ``1 / T``) plus ``0.5 * reg * sum(W**2)`` over
    :meth:`weight_names`. **Sampling** (:meth:`sample`, :meth:`apply`): greedy, as the NumPy original's
    ``sample``, but in one ``lax.scan`` of ``T`` steps over a fixed buffer of ``T`` words (``<START>``
    then the words so far, ``<NULL>`` after them): step ``t`` runs the decoder on the whole buffer and
    reads position ``t``'s scores; the causal mask makes them those of the first ``t + 1`` words alone,
    which is what the NumPy original's growing ``partial_caption`` computes. Scores and accuracies as
    :class:`CaptioningRNN`'s.

    Attributes:
      words: the vocabulary, as :class:`CaptioningRNN`'s (the NumPy original's ``word_to_idx``).
      input_dim: ``D`` or an image shape ``(C, H, W)``, as :class:`CaptioningRNN`'s.
      wordvec_dim: ``W``, the model width (word vectors, memory, every layer), divisible by
        ``num_heads``.
      num_heads: attention heads (the NumPy original's default 4).
      num_layers: decoder layers ``L`` (default 2, the NumPy original's).
      max_length: the words :meth:`apply` generates (as :class:`CaptioningRNN`'s). The NumPy original's
        ``max_length`` (default 50) bounds its positional-encoding table; the sinusoidal encoding here is
        computed for any length, so :meth:`sample` takes any ``max_length``.
      mlp_dim: ``M``, the MLP's hidden width (the NumPy original's ``dim_feedforward``, 2048).
      decoder_dropout: probability of dropping in the decoder in train mode (:meth:`loss`): the
        positional encoding's output, each sublayer's output before its residual add, the MLP's hidden
        units and the attention probabilities, as the NumPy original's ``dropout`` (0.1); in ``[0, 1)``.
      norm: ``"post"`` (the NumPy original's layer, the default) or ``"pre"`` (see above).
      encoder_channels, encoder_norm, dropout_rate, reg, dtype: as :class:`CaptioningRNN`'s
        (``dropout_rate`` drops image features before ``W_proj``).
      init_scale: std of the normal init of every weight but the encoder's (the NumPy original's
        ``_init_weights``: 0.02); biases 0, layer norms' ``gamma`` 1 and ``beta`` 0, the encoder's convs He.

    Raises:
      ValueError, TypeError: at construction, naming the field: as :class:`CaptioningRNN`, and
        ``num_heads`` not dividing ``wordvec_dim``, an unknown ``norm``, a rate outside ``[0, 1)``.

    Example:
      >>> import jax, jaxlayers as jl
      >>> words = ["<NULL>", "<START>", "<END>", "one", "two"]
      >>> model = jl.CaptioningTransformer(words, input_dim=(1, 8, 16), wordvec_dim=16, num_heads=2,
      ...                                  num_layers=1, mlp_dim=32, encoder_channels=(4,), max_length=3)
      >>> params, state = model.init(jax.random.key(0))
      >>> params["self1_Wq"].shape, params["W1_1"].shape
      ((16, 16), (16, 32))
      >>> model.sample(params, jax.numpy.zeros((2, 1, 8, 16)), max_length=3).shape
      (2, 3)
    """

    words: tuple[str, ...]
    input_dim: Any = 512
    wordvec_dim: int = 128
    num_heads: int = 4
    num_layers: int = 2
    max_length: int = 16
    mlp_dim: int = 2048
    decoder_dropout: float = 0.1
    norm: str = "post"
    encoder_channels: tuple[int, ...] = ()
    encoder_norm: str = "none"
    dropout_rate: float = 0.0
    reg: float = 0.0
    init_scale: float = 0.02
    dtype: Any = jnp.float32

    _OWNER: ClassVar[str] = "CaptioningTransformer"

    def __post_init__(self) -> None:
        owner, positive = self._OWNER, partial(check_int, minimum=1)
        check_fields(
            self,
            owner,
            words=_words,
            input_dim=_input_dim,
            wordvec_dim=positive,
            num_heads=positive,
            num_layers=positive,
            max_length=positive,
            mlp_dim=positive,
            decoder_dropout=_rate("decoder_dropout"),
            norm=partial(check_choice, choices=NORM_POSITIONS),
            encoder_channels=check_ints,
            encoder_norm=partial(check_choice, choices=ENCODER_NORMS),
            dropout_rate=_rate("dropout_rate"),
            reg=lambda v, o, n: check_number(v, o, "reg (L2 strength)", low=0.0),
            init_scale=lambda v, o, n: check_number(v, o, "init_scale", low=0.0, low_open=True),
            dtype=check_float_dtype,
        )
        require(
            self.wordvec_dim % self.num_heads == 0,
            owner,
            f"num_heads={self.num_heads} must divide wordvec_dim={self.wordvec_dim} (the heads split the width)",
        )
        self._check_encoder_fields()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape by name (see the class docstring)."""
        V, W, M = self.vocab_size, self.wordvec_dim, self.mlp_dim
        shapes = self._encoder_shapes()
        shapes.update(W_proj=(self.feature_dim(), W), b_proj=(W,), W_embed=(V, W))
        for i in range(1, self.num_layers + 1):
            for part in ("self", "cross"):
                for n in MHA_PARAMS:
                    shapes[f"{part}{i}_{n}"] = (W, W) if n.startswith("W") else (W,)
            shapes.update({f"W1_{i}": (W, M), f"b1_{i}": (M,), f"W2_{i}": (M, W), f"b2_{i}": (W,)})
            for k in (1, 2, 3):
                shapes[f"gamma{i}_{k}"], shapes[f"beta{i}_{k}"] = (W,), (W,)
        if self.norm == "pre":
            shapes.update(gamma_out=(W,), beta_out=(W,))
        shapes.update(W_vocab=(W, V), b_vocab=(V,))
        return shapes

    def weight_names(self) -> list[str]:
        """The parameters the L2 penalty covers: every matrix but ``W_embed`` (the ``W_conv{i}``, ``W_proj``,
        the attentions' ``Wq, Wk, Wv, Wo``, the MLPs' ``W1_{i}, W2_{i}``, ``W_vocab``)."""
        return [n for n in self.param_shapes() if _local(n).startswith("W") and n != "W_embed"]

    def param_init(self, name: str):
        """How :meth:`init` draws parameter ``name``: the encoder's as :class:`CaptioningRNN`'s; layer
        norms' ``gamma`` 1, every bias and ``beta`` 0, every other weight ``N(0, init_scale**2)`` (the NumPy
        original's ``_init_weights``). Returns the normal's std, or ``"zeros"`` / ``"ones"``."""
        encoder = self._encoder_init(name)
        if encoder is not None:
            return encoder
        if _local(name).startswith("gamma"):
            return "ones"
        if _local(name).startswith("b"):
            return "zeros"
        return self.init_scale

    def _random_loss(self) -> bool:
        return self.dropout_rate > 0 or self.decoder_dropout > 0

    def _dropout_text(self) -> str:
        return f"dropout_rate={self.dropout_rate}, decoder_dropout={self.decoder_dropout}"

    # ------------------------------------------------------------------ the decoder

    def _memory(self, params, state, x, *, train: bool, key=None):
        """``(memory (N, 1, W), new_state)``: the projected features (dropped with ``key``)."""
        features, new_state = self._encode(params, state, x, train)
        if key is not None and self.dropout_rate > 0:
            features = dropout(features, key, rate=self.dropout_rate, train=True)
        return affine(features, params["W_proj"], params["b_proj"])[:, None, :], new_state

    def memory(self, params, x, *, key=None, state=None) -> jax.Array:
        """The image memory ``(N, 1, W)`` the cross-attention reads: ``features W_proj + b_proj`` (with
        ``key``, train mode: the features first dropped at ``dropout_rate``). Batchnorm (if any) uses the
        running statistics ``state``."""
        return self._memory(params, self._need_state(state, "memory"), x, train=False, key=key)[0]

    def _decode(self, params, memory, tokens, key=None) -> jax.Array:
        """Scores ``(N, T, V)`` of the next word at each position of ``tokens (N, T)`` (causal); with
        ``key`` (train mode), dropout of ``decoder_dropout``."""
        p, n, t = params, *tokens.shape
        W = self.wordvec_dim
        rate = self.decoder_dropout if key is not None else 0.0
        keys = iter(jax.random.split(key, 1 + 7 * self.num_layers)) if rate > 0 else None

        def drop(a):
            return dropout(a, next(keys), rate=rate, train=True) if rate > 0 else a

        def norm(a, name):
            return layernorm(a.reshape(n * t, W), p[f"gamma{name}"], p[f"beta{name}"]).reshape(n, t, W)

        def attend(part, i, q, kv, causal):
            return multi_head_attention(
                q, kv, kv, {m: p[f"{part}{i}_{m}"] for m in MHA_PARAMS}, num_heads=self.num_heads,
                is_causal=causal, dropout_rate=rate, dropout_key=next(keys) if rate > 0 else None,
            )  # fmt: skip

        def mlp(a, i):
            h = drop(relu(temporal_affine(a, p[f"W1_{i}"], p[f"b1_{i}"])))
            return temporal_affine(h, p[f"W2_{i}"], p[f"b2_{i}"])

        x = drop(word_embedding(tokens, p["W_embed"]) + sinusoidal_encoding(t, W, p["W_embed"].dtype))
        memory = memory.astype(x.dtype)
        for i in range(1, self.num_layers + 1):
            if self.norm == "post":
                x = norm(x + drop(attend("self", i, x, x, True)), f"{i}_1")
                x = norm(x + drop(attend("cross", i, x, memory, False)), f"{i}_2")
                x = norm(x + drop(mlp(x, i)), f"{i}_3")
            else:
                a = norm(x, f"{i}_1")
                x = x + drop(attend("self", i, a, a, True))
                x = x + drop(attend("cross", i, norm(x, f"{i}_2"), memory, False))
                x = x + drop(mlp(norm(x, f"{i}_3"), i))
        if self.norm == "pre":
            x = norm(x, "_out")
        return temporal_affine(x, p["W_vocab"], p["b_vocab"])

    def _teacher_forced(self, params, state, x, captions, *, train: bool, key=None):
        kf, kd = jax.random.split(key) if key is not None else (None, None)
        memory, new_state = self._memory(params, state, x, train=train, key=kf)
        return self._decode(params, memory, captions[:, :-1], key=kd), new_state

    def _greedy(self, params, x, max_length: int, state=None, train: bool = False):
        """``(words (N, T) int32, scores (N, T, V), new_state)`` of the greedy caption: one ``lax.scan`` of
        ``T`` steps over a buffer of ``T + 1`` words (step ``t`` reads positions ``<= t``, writes ``t + 1``)."""
        memory, new_state = self._memory(params, state or {}, x, train=train)
        n = memory.shape[0]
        buffer = jnp.full((n, max_length + 1), self.null, jnp.int32).at[:, 0].set(self.start)

        def step(buffer, t):
            scores = lax.dynamic_index_in_dim(self._decode(params, memory, buffer[:, :max_length]), t, 1, False)
            word = jnp.argmax(scores, axis=-1).astype(jnp.int32)
            return lax.dynamic_update_index_in_dim(buffer, word, t + 1, 1), (word, scores)

        _, (words, scores) = lax.scan(step, buffer, jnp.arange(max_length))
        return jnp.swapaxes(words, 0, 1), jnp.swapaxes(scores, 0, 1), new_state


@partial(jax.jit, static_argnums=(0, 1))
def _sample_jit(model: _Captioner, max_length: int, params, state, x):
    return model._greedy(params, x, max_length, state)[0]


def _jitted_sample(model: _Captioner, max_length: int):
    return partial(_sample_jit, model, max_length)
