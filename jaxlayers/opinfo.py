"""The op registry: one declaration per op, many generic checks.

Modelled on PyTorch's OpInfo. Each :class:`OpInfo` names the public op, its
plain-``jnp`` reference, which positional arguments are differentiable, how to
pick the differentiable output, and a function producing :class:`Sample`
inputs in a given dtype -- ordinary, odd shapes, ``N = 1``, exact kinks,
large offsets. ``jaxlayers gradcheck`` and the test suite both iterate over
:data:`OPS`; adding a layer means adding one declaration here: its samples
function, decorated with :func:`declare` (the op, its differentiable arguments
by name, and its options).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers.layers import (
    BatchNormState,
    affine,
    batchnorm,
    conv2d,
    dot_product_attention,
    dropout,
    groupnorm,
    gru,
    gru_step,
    layernorm,
    lstm,
    lstm_step,
    max_pool2d,
    relu,
    rnn,
    rnn_step,
    spatial_batchnorm,
    temporal_affine,
    word_embedding,
)
from jaxlayers.losses import softmax_loss, svm_loss, temporal_softmax_loss

__all__ = ["OPS", "OpInfo", "Sample", "declare", "get_opinfo"]


@dataclass(frozen=True)
class Sample:
    """One input to an op.

    Attributes:
      name: what the sample exercises ("ordinary", "N=1", "kink", ...).
      args: all positional arguments (arrays, keys, labels, states).
      kwargs: static keyword configuration (``train``, ``rate``, ...).
      smooth: False when an input sits exactly on a kink; finite differences
        are then meaningless and only custom-vs-autodiff is compared.
    """

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    smooth: bool = True


def _first(out):
    return out[0]


def _identity(out):
    return out


@dataclass(frozen=True)
class OpInfo:
    """Declaration of one op for the generic checks.

    Attributes:
      name: display name (may include a mode, e.g. ``"batchnorm[train]"``).
      op: the public ``custom_vjp`` op.
      reference: the plain-``jnp`` reference with the same signature.
      diff_argnums: positions of the differentiable (floating) arguments.
      samples: ``samples(dtype) -> list[Sample]`` building inputs in ``dtype``.
      output: picks the differentiable output from the op's result
        (batchnorm returns ``(out, new_state)``; the state has no gradient).
      random: the op draws from a PRNG key argument.
      stateful: the op returns updated state besides its output.
      batch_argnums: for ``vmap`` checks, the arguments that get a batch axis
        (the rest are shared); defaults to ``diff_argnums``.
      empty_batch: what the op does with an empty batch (N = 0): ``"empty"``
        -- an output of the right shape with a leading 0, and gradients of the
        right shapes (zeros for arguments without a batch axis) -- or
        ``"error"``, a ``ValueError`` whose message starts with the op's name
        (a mean over no examples, batch statistics of nothing).
      n_argnums: the arguments whose leading axis is the batch axis N (sliced
        to length 0 for the empty-batch check); ``(0,)`` for most ops, the
        losses add their labels.
    """

    name: str
    op: Callable[..., Any]
    reference: Callable[..., Any]
    diff_argnums: tuple[int, ...]
    samples: Callable[[Any], list[Sample]]
    output: Callable[[Any], Any] = _identity
    random: bool = False
    stateful: bool = False
    batch_argnums: tuple[int, ...] | None = None
    empty_batch: str = "empty"
    n_argnums: tuple[int, ...] = (0,)

    @property
    def op_name(self) -> str:
        """The op's name without its mode: ``"batchnorm"`` for ``"batchnorm[train]"``."""
        return self.name.split("[")[0]

    def bind(self, sample: Sample, *, reference: bool = False) -> Callable[..., Any]:
        """``f(*diff_args) -> differentiable output`` with the other arguments fixed."""
        fn = self.reference if reference else self.op
        args, kwargs = sample.args, sample.kwargs

        def f(*diff_args):
            full = list(args)
            for i, a in zip(self.diff_argnums, diff_args, strict=True):
                full[i] = a
            return self.output(fn(*full, **kwargs))

        return f

    def diff_args(self, sample: Sample) -> tuple[Any, ...]:
        return tuple(sample.args[i] for i in self.diff_argnums)


_DECLARED: list[OpInfo] = []


def declare(op: Callable[..., Any], diff: tuple[str, ...], *, name: str | None = None, **options: Any):
    """Decorator: the samples function it decorates declares ``op``, one entry of :data:`OPS`.

    Args:
      op: the public op. Its reference is ``<op>_reference`` of the op's
        module (the naming every op module follows).
      diff: the differentiable arguments, by name (``("x", "w", "b")``).
      name: the display name, default ``op.__name__`` (``"batchnorm[train]"``
        for one mode of an op).
      options: the other :class:`OpInfo` fields; ``batch`` and ``n_args``
        (argument names) give ``batch_argnums`` and ``n_argnums``.
    """
    reference = getattr(sys.modules[op.__module__], f"{op.__name__}_reference")
    params = tuple(inspect.signature(reference).parameters)

    def argnums(names):
        return tuple(params.index(n) for n in names)

    if "batch" in options:
        options["batch_argnums"] = argnums(options.pop("batch"))
    if "n_args" in options:
        options["n_argnums"] = argnums(options.pop("n_args"))

    def register(samples: Callable[[Any], list[Sample]]) -> Callable[[Any], list[Sample]]:
        _DECLARED.append(OpInfo(name or op.__name__, op, reference, argnums(diff), samples, **options))
        return samples

    return register


def _declare_batch_stats(op, samples: Callable[[bool], Callable[[Any], list[Sample]]]) -> None:
    """An op with running statistics (batchnorm, spatial_batchnorm), once per mode: its samples
    carry ``train``; only ``out`` is differentiated; train mode refuses an empty batch."""
    for train in (True, False):
        declare(
            op,
            ("x", "gamma", "beta"),
            name=f"{op.__name__}[{'train' if train else 'test'}]",
            output=_first,
            stateful=True,
            batch=("x",),
            empty_batch="error" if train else "empty",  # no batch statistics of nothing
        )(samples(train))


def _nhwc(samples: list[Sample]) -> list[Sample]:
    """Channels-last copies of image samples: ``x`` (the first argument) transposed from NCHW to
    NHWC, ``data_format="NHWC"`` added, the name prefixed ``NHWC``; the other arguments as they are
    (weights, ``gamma``, ``beta`` and states do not depend on the layout)."""
    return [
        Sample(
            f"NHWC {s.name}",
            (jnp.transpose(s.args[0], (0, 2, 3, 1)), *s.args[1:]),
            {**s.kwargs, "data_format": "NHWC"},
            s.smooth,
        )
        for s in samples
    ]


def _rng(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def _arr(a, dtype):
    return jnp.asarray(np.asarray(a), dtype)


@declare(affine, ("x", "w", "b"))
def _affine_samples(dtype) -> list[Sample]:
    r = _rng(0)

    def s(name, xshape, m, offset=0.0):
        d = int(np.prod(xshape[1:]))
        return Sample(
            name,
            (
                _arr(r.randn(*xshape) + offset, dtype),
                _arr(r.randn(d, m) / np.sqrt(d), dtype),
                _arr(r.randn(m), dtype),
            ),
        )

    return [
        s("ordinary", (4, 6), 5),
        s("odd shape (N, d1, d2, d3)", (3, 2, 3, 4), 7),
        s("N=1", (1, 5), 3),
        s("large offset", (4, 6), 5, offset=1e3),
    ]


@declare(relu, ("x",))
def _relu_samples(dtype) -> list[Sample]:
    r = _rng(1)
    kink = r.randn(4, 6)
    kink[:, ::2] = 0.0  # exact zeros: relu'(0) = 0
    return [
        Sample("ordinary", (_arr(r.randn(5, 7), dtype),)),
        Sample("odd shape (N, d1, d2, d3)", (_arr(r.randn(2, 3, 4, 5), dtype),)),
        Sample("N=1", (_arr(r.randn(1, 6), dtype),)),
        Sample("kink x == 0", (_arr(kink, dtype),), smooth=False),
        Sample("large magnitude", (_arr(r.randn(4, 6) * 1e4, dtype),)),
    ]


def _bn_samples(train: bool) -> Callable[[Any], list[Sample]]:
    def samples(dtype) -> list[Sample]:
        r = _rng(2)

        def s(name, n, d, offset=0.0, scale=1.0):
            state = BatchNormState(_arr(r.randn(d) * scale + offset, dtype), _arr(r.rand(d) * scale**2 + 0.5, dtype))
            return Sample(
                name,
                (
                    _arr(r.randn(n, d) * scale + offset, dtype),
                    _arr(r.rand(d) + 0.5, dtype),
                    _arr(r.randn(d), dtype),
                    state,
                ),
                {"train": train},
            )

        samples = [s("ordinary", 8, 5), s("N=1", 1, 4), s("large offset", 6, 3, offset=100.0, scale=3.0)]
        if not train:
            samples.append(s("D=1", 5, 1))
        return samples

    return samples


_declare_batch_stats(batchnorm, _bn_samples)


@declare(dropout, ("x",), random=True, batch=("x", "key"))
def _dropout_samples(dtype) -> list[Sample]:
    r = _rng(3)
    key = jax.random.key(7)
    return [
        Sample("ordinary, rate 0.5", (_arr(r.randn(6, 8), dtype), key), {"rate": 0.5, "train": True}),
        Sample("odd shape, rate 0.3", (_arr(r.randn(2, 3, 4), dtype), key), {"rate": 0.3, "train": True}),
        Sample("N=1, rate 0.9", (_arr(r.randn(1, 9), dtype), key), {"rate": 0.9, "train": True}),
        Sample("test mode", (_arr(r.randn(3, 4), dtype), key), {"rate": 0.5, "train": False}),
    ]


def _labels(r, n, c):
    return jnp.asarray(r.randint(0, c, size=n), jnp.int32)


@declare(svm_loss, ("scores",), batch=("scores", "y"), empty_batch="error", n_args=("scores", "y"))
def _svm_samples(dtype) -> list[Sample]:
    r = _rng(4)
    y = _labels(r, 6, 5)
    kink = r.randn(6, 5)
    kink[np.arange(6), (np.asarray(y) + 1) % 5] = kink[np.arange(6), np.asarray(y)] - 1.0  # margin exactly 0
    return [
        Sample("ordinary", (_arr(r.randn(6, 5), dtype), y)),
        Sample("N=1", (_arr(r.randn(1, 4), dtype), _labels(r, 1, 4))),
        Sample("kink margin == 0", (_arr(kink, dtype), y), smooth=False),
        Sample("large offset", (_arr(r.randn(6, 5) + 1e3, dtype), y)),
    ]


@declare(softmax_loss, ("scores",), batch=("scores", "y"), empty_batch="error", n_args=("scores", "y"))
def _softmax_samples(dtype) -> list[Sample]:
    r = _rng(5)
    y = _labels(r, 6, 5)
    return [
        Sample("ordinary", (_arr(r.randn(6, 5), dtype), y)),
        Sample("N=1", (_arr(r.randn(1, 4), dtype), _labels(r, 1, 4))),
        Sample("large logits", (_arr(r.randn(6, 5) * 30 + 1e3, dtype), y)),
        Sample("two classes", (_arr(r.randn(5, 2), dtype), _labels(r, 5, 2))),
    ]


# issue 11, convolutional networks: conv2d and max_pool2d samples (tiny: the
# float64 finite differences cost 4 evaluations per input element).


@declare(conv2d, ("x", "w", "b"))
def _conv_samples(dtype) -> list[Sample]:
    r = _rng(11)

    def s(name, xshape, wshape, offset=0.0, **kwargs):
        fan_in = int(np.prod(wshape[1:]))
        return Sample(
            name,
            (
                _arr(r.randn(*xshape) + offset, dtype),
                _arr(r.randn(*wshape) / np.sqrt(fan_in), dtype),
                _arr(r.randn(wshape[0]), dtype),
            ),
            kwargs,
        )

    nchw = [
        s("ordinary 3x3", (2, 2, 5, 5), (3, 2, 3, 3)),
        s("stride 2, rows unread", (2, 2, 6, 6), (2, 2, 3, 3), stride=2),
        s("stride (1,2), padding (2,1)", (2, 2, 5, 6), (2, 2, 3, 3), stride=(1, 2), padding=(2, 1)),
        s("non-square kernel 2x3", (2, 2, 5, 6), (3, 2, 2, 3), padding=(0, 1)),
        s("N=1, padding 1", (1, 2, 4, 4), (2, 2, 3, 3), padding=1),
        s("large offset", (2, 2, 5, 5), (2, 2, 3, 3), offset=1e3),
        # 16+ input channels: dw by chunked im2col matrix products on Intel CPUs (conv.dw_method;
        # tests/test_conv_pool.py checks both choices on any machine).
        s("16 channels, padding 1", (2, 16, 4, 4), (3, 16, 3, 3), padding=1),
        s("16 channels, stride 2, rows unread", (1, 16, 6, 5), (2, 16, 3, 2), stride=2),
    ]
    # channels last (data_format="NHWC"): the same inputs transposed, every stride/padding case
    return nchw + _nhwc([nchw[i] for i in (0, 1, 2, 3, 6, 7)])


@declare(max_pool2d, ("x",))
def _pool_samples(dtype) -> list[Sample]:
    r = _rng(12)

    def distinct(*shape):
        # Values 0.02 apart or more: every window's maximum is unique and stays
        # the maximum under the finite differences' steps.
        n = int(np.prod(shape))
        return _arr((r.permutation(n) / n * 4.0 - 2.0).reshape(shape), dtype)

    def ties(*shape):
        return _arr(r.randint(0, 3, size=shape).astype(np.float64), dtype)  # many equal maxima

    nchw = [
        Sample("2x2 stride 2", (distinct(2, 2, 4, 4),), {"pool_size": (2, 2), "stride": 2}),
        Sample("overlapping 3x3 stride 2", (distinct(2, 2, 7, 7),), {"pool_size": 3, "stride": 2}),
        Sample("H, W not divisible", (distinct(2, 2, 5, 7),), {"pool_size": (2, 2), "stride": 2}),
        Sample("2x3 stride (3,2), gaps", (distinct(2, 2, 7, 8),), {"pool_size": (2, 3), "stride": (3, 2)}),
        Sample("N=1, 2x3 stride (2,3)", (distinct(1, 3, 4, 6),), {"pool_size": (2, 3), "stride": (2, 3)}),
        Sample("ties 2x2 stride 2", (ties(2, 2, 6, 6),), {"pool_size": (2, 2), "stride": 2}, smooth=False),
        Sample("ties overlapping 3x3 stride 1", (ties(2, 2, 6, 6),), {"pool_size": 3, "stride": 1}, smooth=False),
    ]
    return nchw + _nhwc(nchw)  # channels last: every case again


# --- normalisation layers (issue 11): spatial_batchnorm, layernorm, groupnorm ---


def _spatial_bn_samples(train: bool) -> Callable[[Any], list[Sample]]:
    def samples(dtype) -> list[Sample]:
        r = _rng(6)

        def s(name, shape, offset=0.0, scale=1.0, constant_channel=False):
            c = shape[1]
            x = r.randn(*shape) * scale + offset
            if constant_channel:
                x[:, 1] = 0.1 + offset
            state = BatchNormState(_arr(r.randn(c) * scale + offset, dtype), _arr(r.rand(c) * scale**2 + 0.5, dtype))
            return Sample(
                name,
                (_arr(x, dtype), _arr(r.rand(c) + 0.5, dtype), _arr(r.randn(c), dtype), state),
                {"train": train},
            )

        nchw = [
            s("ordinary", (2, 3, 3, 4)),
            s("N=1", (1, 2, 3, 3)),
            s("large offset", (3, 2, 2, 3), offset=100.0, scale=3.0),
            s("constant channel", (2, 3, 2, 2), constant_channel=True),
        ]
        # channels last: every case but the constant channel, whose NHWC reference sums its 0.1s in
        # another order and leaves dgamma 1.7e-14 where the rule's (and NCHW's) is exactly 0
        # (tests/test_norms.py checks the constant channel channels last against NCHW instead)
        return nchw + _nhwc(nchw[:3])

    return samples


_declare_batch_stats(spatial_batchnorm, _spatial_bn_samples)


@declare(layernorm, ("x", "gamma", "beta"))
def _layernorm_samples(dtype) -> list[Sample]:
    r = _rng(7)

    def s(name, n, d, offset=0.0, scale=1.0, constant_row=False):
        x = r.randn(n, d) * scale + offset
        if constant_row:
            x[1] = 0.1
        return Sample(name, (_arr(x, dtype), _arr(r.rand(d) + 0.5, dtype), _arr(r.randn(d), dtype)))

    return [
        s("ordinary", 4, 6),
        s("N=1", 1, 5),
        s("large offset", 3, 4, offset=1e3, scale=3.0),
        s("constant example", 3, 5, constant_row=True),
    ]


@declare(groupnorm, ("x", "gamma", "beta"))
def _groupnorm_samples(dtype) -> list[Sample]:
    r = _rng(8)

    def s(name, shape, groups, offset=0.0, scale=1.0, constant_group=False):
        c = shape[1]
        x = r.randn(*shape) * scale + offset
        if constant_group:
            x[0, : c // groups] = -0.3
        return Sample(
            name,
            (_arr(x, dtype), _arr(r.rand(c) + 0.5, dtype), _arr(r.randn(c), dtype)),
            {"groups": groups},
        )

    nchw = [
        s("ordinary, groups=2", (2, 4, 2, 3), 2),
        s("groups=1", (2, 3, 2, 2), 1),
        s("groups=C", (2, 3, 2, 2), 3),
        s("N=1", (1, 4, 3, 2), 2),
        s("large offset", (2, 4, 2, 2), 2, offset=1e3, scale=3.0),
        s("constant group", (2, 4, 2, 2), 2, constant_group=True),
    ]
    return nchw + _nhwc(nchw)  # channels last: every case again


# --- sequence models (issue 18): word_embedding, temporal_affine, temporal_softmax_loss ---


@declare(word_embedding, ("W",), batch=("x", "W"))
def _word_embedding_samples(dtype) -> list[Sample]:
    r = _rng(18)

    def s(name, n, t, v, d, scale=1.0):
        x = jnp.asarray(r.randint(0, v, size=(n, t)), jnp.int32)
        return Sample(name, (x, _arr(r.randn(v, d) * scale, dtype)))

    return [
        s("ordinary", 3, 4, 7, 5),
        s("repeated words (scatter-add)", 4, 6, 3, 2),
        s("N=1", 1, 5, 6, 3),
        s("T=1", 3, 1, 5, 4),
        s("large magnitude", 2, 3, 4, 3, scale=1e4),
    ]


@declare(temporal_affine, ("x", "w", "b"))
def _temporal_affine_samples(dtype) -> list[Sample]:
    r = _rng(19)

    def s(name, n, t, d, m, offset=0.0):
        return Sample(
            name,
            (
                _arr(r.randn(n, t, d) + offset, dtype),
                _arr(r.randn(d, m) / np.sqrt(d), dtype),
                _arr(r.randn(m), dtype),
            ),
        )

    return [
        s("ordinary", 3, 4, 5, 6),
        s("N=1", 1, 3, 4, 2),
        s("T=1", 4, 1, 3, 5),
        s("large offset", 2, 3, 4, 3, offset=1e3),
    ]


@declare(
    temporal_softmax_loss,
    ("x",),
    batch=("x",),  # y shared: rolling it alone would move padding labels onto unmasked steps
    empty_batch="error",
    n_args=("x", "y", "mask"),
)
def _temporal_softmax_samples(dtype) -> list[Sample]:
    r = _rng(20)

    def s(name, n, t, v, mask="random", scale=1.0, offset=0.0, pad=False):
        y = r.randint(0, v, size=(n, t))
        m = {"random": r.rand(n, t) > 0.4, "all": np.ones((n, t), bool), "none": np.zeros((n, t), bool)}[mask]
        if pad:
            y = np.where(m, y, -1)  # labels at masked steps are ignored
        x = r.randn(n, t, v) * scale + offset
        return Sample(name, (_arr(x, dtype), jnp.asarray(y, jnp.int32), jnp.asarray(m)))

    return [
        s("ordinary, random mask", 3, 5, 6),
        s("mask all True", 2, 4, 5, mask="all"),
        s("mask all False", 2, 3, 4, mask="none"),
        s("padding labels -1 at masked steps", 3, 4, 5, pad=True),
        s("N=1", 1, 4, 3),
        s("T=1", 3, 1, 4, mask="all"),
        s("large logits", 2, 3, 5, scale=30.0, offset=1e3),
    ]


# --- recurrent layers (issue 18): rnn_step, rnn, lstm_step, lstm, gru_step, gru ---
# Tiny (N <= 3, T <= 4, D, H <= 4): the float64 finite differences cost 4 evaluations per input element.


def _recurrent_samples(seed: int, gates: int, *, sequence: bool, cell: bool = False):
    """Samples ``(x, h, [c,] Wx, Wh, b)`` (step ops) or ``(x, h0, Wx, Wh, b, [c0])`` (sequence ops)."""

    def samples(dtype) -> list[Sample]:
        r = _rng(seed)

        def s(name, n, t, d, h, x_scale=1.0, w_scale=1.0, offset=0.0):
            xshape = (n, t, d) if sequence else (n, d)
            x = _arr(r.randn(*xshape) * x_scale + offset, dtype)
            h0 = _arr(r.randn(n, h) * 0.5, dtype)
            c0 = _arr(r.randn(n, h), dtype)
            wx = _arr(r.randn(d, gates * h) * w_scale / np.sqrt(d), dtype)
            wh = _arr(r.randn(h, gates * h) * w_scale / np.sqrt(h), dtype)
            b = _arr(r.randn(gates * h) * 0.5, dtype)
            if not cell:
                return Sample(name, (x, h0, wx, wh, b))
            return Sample(name, (x, h0, c0, wx, wh, b) if not sequence else (x, h0, wx, wh, b, c0))

        out = [s("ordinary", 3, 4, 3, 4), s("N=1", 1, 3, 2, 3), s("D != H", 2, 3, 4, 2)]
        if sequence:
            out.append(s("T=1", 2, 1, 3, 3))
        # Nearly saturated gates: pre-activations up to ~+-6 (tanh' ~ 1e-5). Deeper saturation is exact in
        # both rules but not comparable elementwise: tanh' = 1 - h**2 from a rounded h near +-1 carries a
        # relative error of eps / (1 - h**2) in either (tests/test_rnn_ops.py checks saturation instead).
        out.append(s("nearly saturating", 2, 3, 3, 3, x_scale=2.5, w_scale=1.5))
        return out

    return samples


def _h_and_c(out):
    """The step LSTM's two outputs as one array ``[next_h, next_c]`` (both differentiated)."""
    return jnp.concatenate(out, axis=-1)


_STEP = ("x", "prev_h")
declare(rnn_step, (*_STEP, "Wx", "Wh", "b"), n_args=_STEP)(_recurrent_samples(20, 1, sequence=False))
declare(rnn, ("x", "h0", "Wx", "Wh", "b"), n_args=("x", "h0"))(_recurrent_samples(21, 1, sequence=True))
declare(lstm_step, (*_STEP, "prev_c", "Wx", "Wh", "b"), output=_h_and_c, n_args=(*_STEP, "prev_c"))(
    _recurrent_samples(22, 4, sequence=False, cell=True)
)
declare(lstm, ("x", "h0", "Wx", "Wh", "b", "c0"), n_args=("x", "h0", "c0"))(
    _recurrent_samples(23, 4, sequence=True, cell=True)
)
declare(gru_step, (*_STEP, "Wx", "Wh", "b"), n_args=_STEP)(_recurrent_samples(24, 3, sequence=False))
declare(gru, ("x", "h0", "Wx", "Wh", "b"), n_args=("x", "h0"))(_recurrent_samples(25, 3, sequence=True))


# --- attention (issue 19): dot_product_attention, without and with a differentiated bias ---
# Tiny (B <= 2, T, S <= 5, H <= 3): one block each; tests/test_attention.py forces several blocks.


def _attention_samples(seed: int, *, with_bias: bool):
    def samples(dtype) -> list[Sample]:
        r = _rng(seed)

        def s(name, b, t, sk, n, k, h, *, bias_shape=None, mask=None, q_scale=1.0, **kwargs):
            args = [
                _arr(r.randn(b, t, n, h) * q_scale, dtype),
                _arr(r.randn(b, sk, k, h), dtype),
                _arr(r.randn(b, sk, k, h), dtype),
                _arr(r.randn(*bias_shape), dtype) if bias_shape is not None else None,
                None if mask is None else jnp.asarray(mask),
            ]
            return Sample(name, tuple(args), kwargs)

        full_row_masked = np.ones((2, 1, 3, 4), bool)
        full_row_masked[0, 0, 1] = False  # query 1 of example 0 sees no key
        full_row_masked[1, 0, :, 2] = False
        bias = (lambda shape: shape) if with_bias else (lambda shape: None)
        return [
            s("ordinary", 2, 3, 4, 2, 2, 3, bias_shape=bias((1, 2, 3, 4))),
            s("grouped-query N=4 K=2, T != S", 2, 3, 5, 4, 2, 2, bias_shape=bias((2, 1, 1, 5))),
            s("multi-query K=1, causal T > S", 1, 5, 3, 2, 1, 3, bias_shape=bias((1, 2, 5, 3)), is_causal=True),
            s("causal T < S", 2, 2, 4, 2, 2, 2, bias_shape=bias((2, 2, 1, 4)), is_causal=True),
            s("mask, a fully masked row", 2, 3, 4, 2, 2, 2, bias_shape=bias((2, 2, 3, 4)), mask=full_row_masked),
            s("T = S = 1", 2, 1, 1, 2, 2, 3, bias_shape=bias((1, 1, 1, 1))),
            s("larger logits, scale 0.9", 1, 3, 4, 2, 2, 3, bias_shape=bias((1, 2, 3, 4)), q_scale=3.0, scale=0.9),
        ]

    return samples


declare(
    dot_product_attention, ("query", "key", "value"), batch=("query", "key", "value"), n_args=("query", "key", "value")
)(_attention_samples(30, with_bias=False))
declare(
    dot_product_attention,
    ("query", "key", "value", "bias"),
    name="dot_product_attention[bias]",
    n_args=("query", "key", "value"),
)(_attention_samples(31, with_bias=True))


#: Every declared op, in declaration order.
OPS: tuple[OpInfo, ...] = tuple(_DECLARED)


def get_opinfo(op: Callable[..., Any]) -> OpInfo:
    """The first registry entry whose ``op`` is ``op``.

    Raises:
      KeyError: if ``op`` is not registered (pass ``reference=`` instead).
    """
    for info in OPS:
        if info.op is op:
            return info
    raise KeyError(f"{getattr(op, '__name__', op)!r} is not in jaxlayers.opinfo.OPS; pass reference= explicitly")
