"""Classification losses over scores (logits): multiclass SVM and softmax.

Both take ``scores`` of shape ``(N, C)`` and integer labels ``y`` of shape
``(N,)`` and return the scalar MEAN loss over the batch, as the NumPy original's
``svm_loss`` / ``softmax_loss`` do. Each follows the four-part shape of the
layers: ``<loss>_reference``, ``<loss>_fwd``, ``<loss>_bwd`` and the public
``custom_vjp`` op.

Out-of-range labels: an eager call raises ``ValueError``; under ``jit`` the
labels cannot be inspected, so the loss (and its gradient) is NaN -- never a
silently wrong finite number. (Plain ``jnp`` indexing would clamp the label.)

Label dtypes: any integer dtype. Labels are widened to int32 (int64 for 64-bit
labels) before they meet class indices, so uint8 labels index class 256 of
257 correctly (``jnp.arange(257, dtype=uint8)`` would wrap it to 0).

Half precision: for bfloat16/float16 scores the loss, the probabilities and
the whole backward pass (``p - onehot``, the ``1/N`` factor, the cotangent
product) are float32; ``dscores`` is cast to the scores' dtype once, at the
end. Rounding the probabilities to bfloat16 first turns a target probability
of 0.99933 into 1 and its gradient into 0.

Empty batch (N = 0): a mean over no examples is undefined, so both losses
raise ``ValueError`` (``softmax_loss: the mean loss over an empty batch is
undefined: scores has shape (0, 5)``) rather than return NaN.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import (
    as_array,
    as_index_labels,
    check_label_range,
    mean_scale,
    require,
    require_batch,
    require_float,
    require_labels,
    require_rank,
    require_shape,
    shape_of,
    stats_dtype,
)
from jaxlayers._oprule import custom_op

__all__ = [
    "svm_loss",
    "svm_loss_reference",
    "svm_loss_fwd",
    "svm_loss_bwd",
    "softmax_loss",
    "softmax_loss_reference",
    "softmax_loss_fwd",
    "softmax_loss_bwd",
    "check_svm_loss",
    "check_softmax_loss",
    "SvmResiduals",
    "SoftmaxResiduals",
    # sequence models (issue 18)
    "temporal_softmax_loss",
    "temporal_softmax_loss_reference",
    "temporal_softmax_loss_fwd",
    "temporal_softmax_loss_bwd",
    "check_temporal_softmax_loss",
    "TemporalSoftmaxResiduals",
]


def _onehot(y: jax.Array, num_classes: int) -> jax.Array:
    return y[:, None] == jnp.arange(num_classes, dtype=y.dtype)


def _nan_unless_valid(y: jax.Array, num_classes: int, dtype) -> jax.Array:
    """1 when every label lies in ``[0, C)``, NaN otherwise (0-d, ``dtype``)."""
    valid = jnp.all((y >= 0) & (y < num_classes))
    return jnp.where(valid, jnp.ones((), dtype), jnp.full((), jnp.nan, dtype))


# --------------------------------------------------------------------------
# Multiclass SVM (hinge) loss
# --------------------------------------------------------------------------


class SvmResiduals(NamedTuple):
    """``positive``: bool (N, C), margins > 0 off the target; ``y``: labels
    (int32/int64); ``valid``: 0-d, 1 (NaN for out-of-range labels), in the
    scores' dtype -- the backward pass forms ``1/N`` itself, in float32 for
    half-precision scores, from the static N."""

    positive: jax.Array
    y: jax.Array
    valid: jax.Array


def _svm_margins(scores, y):
    sd = stats_dtype(scores.dtype)
    s = scores.astype(sd)
    onehot = _onehot(y, s.shape[1])
    correct = jnp.sum(jnp.where(onehot, s, jnp.zeros((), sd)), axis=1, keepdims=True)
    margins = s - correct + 1.0
    # A margin counts only when strictly positive (the NumPy original's subgradient);
    # ``not (m <= 0)`` keeps NaN margins, so NaN input gives NaN loss.
    positive = jnp.logical_not(onehot) & jnp.logical_not(margins <= 0)
    return margins, positive, sd


def svm_loss_reference(scores, y):
    """Plain-``jnp`` multiclass SVM loss (margin 1), differentiated by JAX."""
    n, c = scores.shape
    y = as_index_labels(y)
    margins, positive, sd = _svm_margins(scores, y)
    loss = jnp.sum(jnp.where(positive, margins, jnp.zeros((), sd))) / n
    return loss * _nan_unless_valid(y, c, sd)


def svm_loss_fwd(scores, y):
    """Forward pass: ``(loss, SvmResiduals)``."""
    n, c = scores.shape
    y = as_index_labels(y)
    margins, positive, sd = _svm_margins(scores, y)
    validity = _nan_unless_valid(y, c, sd)
    loss = jnp.sum(jnp.where(positive, margins, jnp.zeros((), sd))) / n * validity
    return loss, SvmResiduals(positive, y, validity.astype(scores.dtype))


def svm_loss_bwd(residuals: SvmResiduals, g):
    """Backward pass: ``(dscores,)`` (the labels get no cotangent).

    With ``P[i, j] = 1`` where the margin ``s[i, j] - s[i, y_i] + 1 > 0``
    (``j != y_i``)::

        dscores[i, j]   = g / N * P[i, j]                 (j != y_i)
        dscores[i, y_i] = -g / N * sum_j P[i, j]

    Labels get no cotangent. Computed in float32 for half-precision scores
    (``1/N`` included) and cast to the scores' dtype once.
    """
    positive, y, valid = residuals
    n, c = positive.shape
    acc = stats_dtype(valid.dtype)
    pos = positive.astype(acc)
    count = jnp.sum(pos, axis=1, keepdims=True)
    scale = g.astype(acc) * (valid.astype(acc) * mean_scale(n, acc))
    dscores = (pos - _onehot(y, c) * count) * scale
    return (dscores.astype(valid.dtype),)


_svm_loss = custom_op(svm_loss_reference, svm_loss_fwd, svm_loss_bwd, nondiff=("y",))


# --------------------------------------------------------------------------
# Softmax cross-entropy loss
# --------------------------------------------------------------------------


class SoftmaxResiduals(NamedTuple):
    """``probs``: softmax of the scores, (N, C), in float32 for half-precision
    scores (else the scores' dtype: rounding them to bfloat16 would lose the
    target's gradient); ``y``: labels (int32/int64); ``valid``: 0-d, 1 (NaN
    for out-of-range labels), in the scores' dtype; the backward pass forms
    ``1/N`` itself, in the probabilities' dtype, from the static N."""

    probs: jax.Array
    y: jax.Array
    valid: jax.Array


def softmax_loss_reference(scores, y):
    """Plain-``jnp`` softmax cross-entropy via ``jax.nn.logsumexp``, differentiated by JAX."""
    n, c = scores.shape
    y = as_index_labels(y)
    sd = stats_dtype(scores.dtype)
    s = scores.astype(sd)
    correct = jnp.sum(jnp.where(_onehot(y, c), s, jnp.zeros((), sd)), axis=1)
    loss = jnp.sum(jax.nn.logsumexp(s, axis=1) - correct) / n
    return loss * _nan_unless_valid(y, c, sd)


def softmax_loss_fwd(scores, y):
    """Forward pass: ``(loss, SoftmaxResiduals)`` through a stable log-sum-exp."""
    n, c = scores.shape
    y = as_index_labels(y)
    sd = stats_dtype(scores.dtype)
    s = scores.astype(sd)
    m = jnp.max(s, axis=1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), sd))  # rows of -inf: no inf - inf
    e = jnp.exp(s - m)
    sumexp = jnp.sum(e, axis=1, keepdims=True)
    lse = jnp.log(sumexp) + m
    correct = jnp.sum(jnp.where(_onehot(y, c), s, jnp.zeros((), sd)), axis=1, keepdims=True)
    validity = _nan_unless_valid(y, c, sd)
    loss = jnp.sum(lse - correct) / n * validity
    return loss, SoftmaxResiduals(e / sumexp, y, validity.astype(scores.dtype))


def softmax_loss_bwd(residuals: SoftmaxResiduals, g):
    """Backward pass: ``(dscores,)`` with ``dscores = g / N * (softmax(s) - onehot(y))``.

    Computed in the probabilities' dtype (float32 for half-precision scores),
    ``1/N`` included, and cast to the scores' dtype once.
    """
    probs, y, valid = residuals
    n, c = probs.shape
    acc = probs.dtype
    scale = g.astype(acc) * (valid.astype(acc) * mean_scale(n, acc))
    dscores = (probs - _onehot(y, c).astype(acc)) * scale
    return (dscores.astype(valid.dtype),)


_softmax_loss = custom_op(softmax_loss_reference, softmax_loss_fwd, softmax_loss_bwd, nondiff=("y",))


def _check(scores, y, *, op: str):
    scores, y = as_array(scores, op, "scores"), as_array(y, op, "y")
    require_rank(scores, op, "scores", rank=2)
    require_float(scores, op, "scores")
    n, c = shape_of(scores)
    require_labels(y, op, n)
    require_batch(scores, op, "scores", "the mean loss")
    check_label_range(y, c, op)
    return scores, y


#: ``(scores, y)`` as arrays, or the error :func:`svm_loss` raises (see its Raises).
check_svm_loss = partial(_check, op="svm_loss")
#: ``(scores, y)`` as arrays, or the error :func:`softmax_loss` raises (see its Raises).
check_softmax_loss = partial(_check, op="softmax_loss")


def svm_loss(scores: jax.Array, y: jax.Array) -> jax.Array:
    """Multiclass SVM (hinge) loss with margin 1, mean over the batch.

    ``L = 1/N sum_i sum_{j != y_i} max(0, s[i, j] - s[i, y_i] + 1)``

    Args:
      scores: shape ``(N, C)``, floating dtype; ``scores[i, j]`` is the score
        of class ``j`` for example ``i``.
      y: labels, shape ``(N,)``, each in ``[0, C)``, any integer dtype
        (uint8 labels of 257 classes work: they are widened before indexing).

    Returns:
      The scalar mean loss, in ``scores``' dtype (float32 for half inputs).

    Raises:
      ValueError: ``scores`` not 2-D, ``y.shape != (N,)``, an empty batch
        (N = 0: the mean over no examples is undefined), or (eagerly) labels
        outside ``[0, C)``. Under ``jit`` out-of-range labels give NaN.
      TypeError: non-floating scores, non-integer labels, or an argument that
        is neither an array nor a (nested) list of numbers. Lists and NumPy
        scalars are accepted and converted with ``jnp.asarray`` first.

    Backward (``custom_vjp``): with ``P[i, j] = [margin > 0]`` (strictly, the
    seed's subgradient at the kink), ``ds[i, j] = P[i, j] / N`` off the target
    and ``ds[i, y_i] = -sum_j P[i, j] / N``. Residual: the boolean ``P``
    (1 byte/element) and the labels. Half-precision scores: the backward runs
    in float32 (``1/N`` included) and is cast to the scores' dtype once.

    Source: the NumPy original's ``svm_loss`` (Weston & Watkins / Crammer & Singer
    multiclass hinge, as in CS231n).
    """
    scores, y = check_svm_loss(scores, y)
    return _svm_loss(scores, y)


def softmax_loss(scores: jax.Array, y: jax.Array) -> jax.Array:
    """Softmax cross-entropy, mean over the batch, via a stable log-sum-exp.

    ``L = 1/N sum_i (logsumexp_j s[i, j] - s[i, y_i])``

    Deviation from the NumPy original: the NumPy original clamps the target probability at 1e-8,
    capping each example's loss at ``-log(1e-8) ~= 18.4`` while its gradient is
    not capped, so loss and gradient disagree for confident mistakes. Here the
    loss is exact (computed from log-sum-exp, never from ``log(prob)``) and
    consistent with its gradient; logits of +-1e4 give the exact finite loss,
    and ``-inf`` in non-target logits contributes probability 0 (no NaN).

    Args:
      scores: logits, shape ``(N, C)``, floating dtype.
      y: labels, shape ``(N,)``, each in ``[0, C)``, any integer dtype
        (uint8 labels of 257 classes work: they are widened before indexing).

    Returns:
      The scalar mean loss (nats), in ``scores``' dtype (float32 for half).

    Raises:
      ValueError: ``scores`` not 2-D, ``y.shape != (N,)``, an empty batch
        (N = 0: the mean over no examples is undefined), or (eagerly) labels
        outside ``[0, C)``. Under ``jit`` out-of-range labels give NaN.
      TypeError: non-floating scores, non-integer labels, or an argument that
        is neither an array nor a (nested) list of numbers. Lists and NumPy
        scalars are accepted and converted with ``jnp.asarray`` first.

    Backward (``custom_vjp``): ``ds = (softmax(s) - onehot(y)) / N``.
    Residual: the probabilities (N x C; scores' dtype, float32 for half-precision
    scores, whose backward runs in float32 and is cast to the scores' dtype
    once) and the labels.

    Source: the NumPy original's ``softmax_loss``; log-sum-exp as in
    ``optax.softmax_cross_entropy_with_integer_labels``.
    """
    scores, y = check_softmax_loss(scores, y)
    return _softmax_loss(scores, y)


# --------------------------------------------------------------------------
# Sequence models (issue 18): temporal softmax loss, masked, summed over time
# --------------------------------------------------------------------------


class TemporalSoftmaxResiduals(NamedTuple):
    """``probs``: softmax of the scores over the vocabulary, (N, T, V), float32
    for half-precision scores (else the scores' dtype); ``y``: labels
    (int32/int64); ``mask``: bool (N, T); ``valid``: 0-d, 1 (NaN for an
    out-of-range label at an unmasked position), in the scores' dtype."""

    probs: jax.Array
    y: jax.Array
    mask: jax.Array
    valid: jax.Array


def _temporal_parts(x, y, mask):
    v = x.shape[-1]
    y = as_index_labels(y)
    sd = stats_dtype(x.dtype)
    s = x.astype(sd)
    onehot = y[..., None] == jnp.arange(v, dtype=y.dtype)
    correct = jnp.sum(jnp.where(onehot, s, jnp.zeros((), sd)), axis=-1)
    in_range = (y >= 0) & (y < v)
    validity = jnp.where(jnp.all(in_range | ~mask), jnp.ones((), sd), jnp.full((), jnp.nan, sd))
    return y, sd, s, onehot, correct, validity


def temporal_softmax_loss_reference(x, y, mask):
    """Plain-``jnp`` masked softmax cross-entropy summed over time, divided by N
    (``jax.nn.logsumexp``), differentiated by JAX."""
    n = x.shape[0]
    y, sd, s, _, correct, validity = _temporal_parts(x, y, mask)
    per_step = jax.nn.logsumexp(s, axis=-1) - correct
    loss = jnp.sum(jnp.where(mask, per_step, jnp.zeros((), sd))) / n
    return loss * validity


def temporal_softmax_loss_fwd(x, y, mask):
    """Forward pass: ``(loss, TemporalSoftmaxResiduals)`` through a stable log-sum-exp."""
    n = x.shape[0]
    y, sd, s, _, correct, validity = _temporal_parts(x, y, mask)
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), sd))  # rows of -inf: no inf - inf
    e = jnp.exp(s - m)
    sumexp = jnp.sum(e, axis=-1, keepdims=True)
    lse = jnp.log(sumexp[..., 0]) + m[..., 0]
    loss = jnp.sum(jnp.where(mask, lse - correct, jnp.zeros((), sd))) / n * validity
    return loss, TemporalSoftmaxResiduals(e / sumexp, y, mask, validity.astype(x.dtype))


def temporal_softmax_loss_bwd(residuals: TemporalSoftmaxResiduals, g):
    """Backward pass: ``(dx,)`` with ``dx[n, t] = g / N * mask[n, t] * (softmax(x[n, t]) - onehot(y[n, t]))``.

    Computed in the probabilities' dtype (float32 for half-precision scores),
    ``1/N`` included, and cast to the scores' dtype once. Labels and mask get no cotangent.
    """
    probs, y, mask, valid = residuals
    n, _, v = probs.shape
    acc = probs.dtype
    onehot = (y[..., None] == jnp.arange(v, dtype=y.dtype)).astype(acc)
    scale = g.astype(acc) * (valid.astype(acc) * mean_scale(n, acc))
    dx = jnp.where(mask[..., None], probs - onehot, jnp.zeros((), acc)) * scale
    return (dx.astype(valid.dtype),)


_temporal_softmax_loss = custom_op(
    temporal_softmax_loss_reference,
    temporal_softmax_loss_fwd,
    temporal_softmax_loss_bwd,
    nondiff=("y", "mask"),
)


def check_temporal_softmax_loss(x, y, mask):
    """``(x, y, mask)`` as arrays, or the error :func:`temporal_softmax_loss` raises (see its Raises)."""
    op = "temporal_softmax_loss"
    x, y, mask = as_array(x, op, "x"), as_array(y, op, "y"), as_array(mask, op, "mask")
    require_rank(x, op, "x", rank=3)
    require_float(x, op, "x")
    n, t, v = shape_of(x)
    ydtype = jnp.result_type(y)
    require(
        jnp.issubdtype(ydtype, jnp.integer),
        op,
        f"y must have an integer dtype (class indices), got {ydtype}",
        TypeError,
    )
    require_shape(y, op, "y", (n, t), f"one label per time step of x {shape_of(x)}")
    mdtype = jnp.result_type(mask)
    require(
        mdtype == jnp.bool_,
        op,
        f"mask must have dtype bool (True: the step counts), got {mdtype}; pass e.g. `mask != 0`",
        TypeError,
    )
    require_shape(mask, op, "mask", (n, t), f"one flag per time step of x {shape_of(x)}")
    require(v >= 1, op, f"x must score at least one class (V >= 1), got shape {shape_of(x)}")
    require_batch(x, op, "x", "the loss (summed over time, divided by N)")
    if not isinstance(y, jax.core.Tracer) and not isinstance(mask, jax.core.Tracer):
        counted = np.asarray(y)[np.asarray(mask)]
        check_label_range(counted, v, op, "y (at unmasked steps)")
    return x, y, mask


def temporal_softmax_loss(x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked softmax cross-entropy over sequences: SUMMED over time, divided by N (the NumPy original's).

    ``L = 1/N sum_n sum_t mask[n, t] * (logsumexp_v x[n, t, v] - x[n, t, y[n, t]])``

    The normalisation is the NumPy original's (``temporal_softmax_loss`` of
    its recurrent-network layers): the sum over the unmasked time steps of each
    sequence, averaged over the N sequences -- NOT the mean over tokens that
    most peers use (``optax``'s per-token losses averaged, PyTorch's
    ``cross_entropy(..., ignore_index=)``); divide by the average number of
    unmasked steps per sequence to get that. Computed from a stable
    log-sum-exp (no 1e-8 clamp): logits of +-1e4 give the exact finite loss.

    Args:
      x: scores, shape ``(N, T, V)``, floating dtype.
      y: labels, shape ``(N, T)``, any integer dtype; each in ``[0, V)`` where
        ``mask`` is True (labels at masked steps are ignored: padding such as
        ``-1`` is fine there).
      mask: bool, shape ``(N, T)``; True where the step counts.

    Returns:
      The scalar loss (nats per sequence), in ``x``'s dtype (float32 for half
      inputs). An all-False mask gives loss 0 and a zero gradient; ``T = 0``
      gives 0.

    Raises:
      ValueError: ``x`` not 3-D or with ``V = 0``, ``y`` / ``mask`` not of
        shape ``(N, T)``, an empty batch (N = 0: the division by N is undefined,
        as for :func:`softmax_loss`), or (eagerly) an unmasked label outside
        ``[0, V)``. Under ``jit`` such a label gives NaN.
      TypeError: non-floating ``x``, non-integer ``y``, a ``mask`` that is not
        bool, or an argument that is neither an array nor a (nested) list.

    Backward (``custom_vjp``)::

        dx[n, t] = mask[n, t] * (softmax(x[n, t]) - onehot(y[n, t])) / N

    Residuals: the probabilities (N x T x V; float32 for half-precision
    scores), the labels and the mask. ``y`` and ``mask`` get no cotangent.

    Source: the NumPy original's ``temporal_softmax_loss``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> x = jnp.zeros((2, 3, 4))
      >>> y = jnp.zeros((2, 3), jnp.int32)
      >>> mask = jnp.array([[True, True, False], [True, False, False]])
      >>> float(jl.temporal_softmax_loss(x, y, mask))  # 3 steps * log(4) / 2
      2.0794...
    """
    x, y, mask = check_temporal_softmax_loss(x, y, mask)
    return _temporal_softmax_loss(x, y, mask)
