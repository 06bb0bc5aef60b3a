"""Models built only from jaxlayers ops: :class:`FullyConnectedNet`, :class:`ThreeLayerConvNet`, :class:`ConvNet`.

Every gradient of a model here is a hand-derived ``custom_vjp`` rule: each
network is a composition of jaxlayers' ops (affine, conv2d, max_pool2d,
batchnorm, spatial_batchnorm, layernorm, groupnorm, relu, dropout and the
softmax / SVM losses) and nothing else but the L2 penalty. All are instances of
the model protocol (:mod:`jaxlayers.model`) and pytrees whose ``reg`` and
``weight_scale`` are traced by the training loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import (
    check_choice,
    check_float_dtype,
    check_int,
    check_number,
    is_int,
    require,
    stats_dtype,
)
from jaxlayers.layers import (
    BatchNormState,
    affine,
    batchnorm,
    batchnorm_state,
    conv2d,
    dropout,
    groupnorm,
    layernorm,
    max_pool2d,
    relu,
    spatial_batchnorm,
)
from jaxlayers.losses import softmax_loss, svm_loss
from jaxlayers.model import PREDICT_BATCH_SIZE, predict, predict_proba, register_model

__all__ = ["ConvNet", "FullyConnectedNet", "LayerModel", "ThreeLayerConvNet", "init_std"]

_NORMALIZATIONS = (None, "batchnorm")
_LOSSES = ("softmax", "svm")

Params = dict[str, jax.Array]
State = dict[str, BatchNormState]


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def init_std(weight_scale, fan_in: int, dtype) -> jax.Array | float:
    """The standard deviation of a weight initialisation: ``weight_scale``, or He's ``sqrt(2 / fan_in)`` for ``None``.

    ``weight_scale`` may be traced (a model's pytree leaf); it is cast to
    ``dtype`` so the product with a ``dtype`` draw rounds the same way whether
    it came in as a Python float or an array (He, He et al. 2015).
    """
    if weight_scale is None:
        return math.sqrt(2.0 / fan_in)
    return jnp.asarray(weight_scale, dtype)


class LayerModel:
    """What jaxlayers' models share (a mixin for frozen dataclasses).

    * A **pytree**: the fields in ``_TRACED`` (``reg``, ``weight_scale``) are
      its leaves and reach compiled training programs as traced values (a new
      value compiles nothing; ``fit_many`` stacks them); every other field is
      static. ``weight_scale=None`` (He init) has no leaf.
    * ``to_dict`` / ``from_dict``, the L2 penalty over the ``W*`` parameters,
      and the checks of ``params`` / ``state`` against :meth:`param_shapes`.

    Subclasses define ``_OWNER`` (the name in error messages),
    ``param_shapes()`` and ``state_keys()``.
    """

    _TRACED: ClassVar[tuple[str, ...]] = ("reg", "weight_scale")
    _OWNER: ClassVar[str] = "model"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    def _tree_flatten(self):
        fields = [f.name for f in dataclasses.fields(self)]
        static = tuple((n, getattr(self, n)) for n in fields if n not in self._TRACED)
        return tuple(getattr(self, n) for n in self._TRACED), static

    @classmethod
    def _tree_unflatten(cls, static, leaves):
        obj = object.__new__(cls)  # no __post_init__: leaves may be tracers or vmapped arrays
        for name, value in static:
            _set(obj, name, value)
        for name, value in zip(cls._TRACED, leaves, strict=True):
            _set(obj, name, value)
        return obj

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
          ValueError / TypeError: unknown fields, or values the constructor refuses.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        require(isinstance(d, dict), cls.__name__, f"from_dict needs a dict, got {type(d).__name__}", TypeError)
        unknown = sorted(set(d) - names)
        require(not unknown, cls.__name__, f"from_dict: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def _check_shared_fields(self) -> None:
        """Validate (and normalise) the fields every jaxlayers model has: ``num_classes``, ``reg``,
        ``weight_scale``, ``loss_type``, ``dtype``; raise naming the field."""
        owner = self._OWNER
        _set(self, "num_classes", check_int(self.num_classes, owner, "num_classes", minimum=2))
        _set(self, "reg", check_number(self.reg, owner, "reg (L2 strength)", low=0.0))
        if self.weight_scale is not None:
            scale = check_number(
                self.weight_scale, owner, "weight_scale", low=0.0, low_open=True, what="(or None: He init)"
            )
            _set(self, "weight_scale", scale)
        check_choice(self.loss_type, owner, "loss_type", _LOSSES)
        _set(self, "dtype", check_float_dtype(self.dtype, owner))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def state_keys(self) -> set[str]:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def num_params(self) -> int:
        """The number of parameters (scalars) of the model."""
        return sum(math.prod(s) for s in self.param_shapes().values())

    def _layer_output_shape(self, weight_shape: tuple[int, ...]) -> str:
        """The output shape of the layer whose weight has ``weight_shape`` (``N`` for the batch).

        Affine ``(D, M)`` gives ``(N, M)``; a filter bank ``(F, C, HH, WW)`` gives
        ``(N, F, ...)`` -- a model that knows its spatial sizes overrides this.
        """
        if len(weight_shape) == 2:
            return f"(N, {weight_shape[1]})"
        return f"(N, {weight_shape[0]}, ...)" if weight_shape else "?"

    def summary(self) -> str:
        """A table of the model: one row per layer (its parameters, output shape, parameter count,
        bytes) and a total line; parameters are grouped into layers by their number (``W1, b1, gamma1``)."""
        itemsize = np.dtype(getattr(self, "dtype", np.float32)).itemsize
        layers: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
        for name, shape in self.param_shapes().items():
            number = name.lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") or name
            layers.setdefault(number, []).append((name, tuple(shape)))
        rows = [("layer", "parameters", "output", "params", "bytes")]
        total = 0
        for number, params in layers.items():
            count = sum(math.prod(shape) for _, shape in params)
            total += count
            weight = next((shape for name, shape in params if name.startswith("W")), ())
            rows.append(
                (
                    number,
                    ", ".join(f"{name} {shape}" for name, shape in params),
                    self._layer_output_shape(weight),
                    f"{count:,}",
                    _format_bytes(count * itemsize),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
        lines.append(f"{type(self).__name__}: {total:,} parameters, {_format_bytes(total * itemsize)}")
        return "\n".join(line.rstrip() for line in lines)

    def l2_penalty(self, params: Params) -> jax.Array:
        """``0.5 * reg * sum_i sum(Wi**2)`` over the weight tensors ``W*`` (a scalar in ``dtype``).

        ``reg`` may be traced; it is always applied (``reg = 0`` adds an exact 0).
        """
        # vdot(W, W), not sum(W**2): its VJP keeps W itself (an input), not a new 2*W array.
        names = [n for n in self.param_shapes() if n.startswith("W")]
        total = sum(jnp.vdot(params[n], params[n]) for n in names)
        return 0.5 * jnp.asarray(self.reg, self.dtype) * total

    def _check_dtype_available(self) -> None:
        available = jax.dtypes.canonicalize_dtype(self.dtype)
        require(
            available == self.dtype,
            self._OWNER,
            f"dtype {self.dtype} is not available: JAX's x64 mode is off, so it would silently run in "
            f"{available}. Wrap the calls in `with jax.enable_x64(True):`",
            TypeError,
        )

    def _check_params(self, params, state) -> None:
        owner = self._OWNER
        expected = self.param_shapes()
        require(
            isinstance(params, dict),
            owner,
            f"params must be a dict of arrays by name (from init), got {type(params).__name__}",
            TypeError,
        )
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        require(
            not missing and not extra,
            owner,
            f"params do not match this model ({self._describe()}): missing {missing}, unexpected {extra}",
        )
        for name, shape in expected.items():
            got = tuple(np.shape(params[name]))
            require(got == shape, owner, f"params[{name!r}] must have shape {shape} ({self._describe()}), got {got}")
        want_state = self.state_keys()
        got_state = sorted(state) if isinstance(state, dict) else type(state).__name__
        require(
            isinstance(state, dict) and set(state) == want_state,
            owner,
            f"state must be a dict with keys {sorted(want_state)} (from init), got {got_state}",
        )

    def _describe(self) -> str:
        return self._OWNER

    def _check_train_key(self, train, key, dropout_rate: float) -> bool:
        """Whether dropout is active; raise for a non-bool ``train`` or a missing key."""
        require(
            isinstance(train, bool | np.bool_),
            self._OWNER,
            f"train must be a Python bool (static), got {train!r}",
            TypeError,
        )
        use_dropout = bool(train) and dropout_rate > 0.0
        require(
            not (use_dropout and key is None),
            self._OWNER,
            f"a PRNG key is required for dropout (dropout_rate={dropout_rate}) in train mode: pass key=",
        )
        return use_dropout

    def predict(self, params: Params, state: State, x, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Predicted labels, int32 ``(N,)``: :func:`jaxlayers.model.predict` of this model.

        ``x`` as :meth:`apply` (standardised as in training); any ``N``,
        ``0`` included; jitted batches of ``batch_size``, the last padded.
        """
        return predict(self, params, state, x, batch_size=batch_size)

    def predict_proba(self, params: Params, state: State, x, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities ``(N, num_classes)``: :func:`jaxlayers.model.predict_proba` of this model.

        The softmax of the test-mode scores; with ``loss_type="svm"`` the
        softmax of the SVM scores, which is uncalibrated (a ranking, not a
        confidence).
        """
        return predict_proba(self, params, state, x, batch_size=batch_size)

    def _data_loss(self, scores, y):
        return softmax_loss(scores, y) if self.loss_type == "softmax" else svm_loss(scores, y)

    def loss(
        self,
        params: Params,
        state: State,
        x: jax.Array,
        y: jax.Array,
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[State, jax.Array]]:
        """Training objective: data loss (train mode) plus the L2 penalty.

        Shaped for ``jax.value_and_grad(model.loss, has_aux=True)``.

        Args:
          params, state: as :meth:`apply`.
          x: inputs, as :meth:`apply`.
          y: integer labels, shape ``(N,)``, each in ``[0, num_classes)``.
          key: PRNG key for dropout (required when ``dropout_rate > 0``).

        Returns:
          ``(loss, (new_state, scores))``: the scalar mean data loss plus
          ``0.5 * reg * sum(W**2)``; the updated running statistics; the
          train-mode scores ``(N, num_classes)``.

        Raises:
          ValueError: as :meth:`apply`; labels of the wrong shape; concrete
            labels outside ``[0, num_classes)`` (under ``jit`` the loss is NaN
            instead, see :func:`jaxlayers.softmax_loss`).
          TypeError: non-integer labels.
        """
        scores, new_state = self.apply(params, state, x, train=True, key=key)
        data_loss = self._data_loss(scores, y)
        return data_loss + self.l2_penalty(params).astype(data_loss.dtype), (new_state, scores)


@register_model
@dataclasses.dataclass(frozen=True)
class FullyConnectedNet(LayerModel):
    """A fully connected classifier: ``{affine - [batchnorm] - relu - [dropout]} x (L-1) - affine - loss``.

    A frozen, hashable configuration with pure methods; parameters and running
    statistics live outside it, in plain pytrees:

    * ``params``: a flat dict ``{"W1", "b1", "gamma1", "beta1", ..., "WL",
      "bL"}``; ``Wi`` has shape ``(fan_in, fan_out)``, ``bi``, ``gammai``,
      ``betai`` shape ``(fan_out,)``. ``gammai``/``betai`` exist only with
      ``normalization="batchnorm"`` and only for the hidden layers.
    * ``state``: ``{"bn1": BatchNormState, ..., "bn{L-1}": ...}`` with
      ``normalization="batchnorm"``, else ``{}``.

    Attributes:
      hidden_dims: widths of the ``L - 1`` hidden layers (a tuple; a list is
        converted). ``()`` gives a linear classifier.
      input_dim: features per example ``D``; inputs of shape ``(N, d1, ...,
        dk)`` are flattened to ``D = d1 * ... * dk``.
      num_classes: ``C``, the number of classes (scores are ``(N, C)``).
      normalization: ``None`` or ``"batchnorm"`` (after each hidden affine,
        before the ReLU; running statistics with momentum 0.9, eps 1e-5).
      dropout_rate: probability of DROPPING a hidden unit, in ``[0, 1)``;
        ``0`` disables dropout.
      reg: L2 strength; the loss adds ``0.5 * reg * sum_i sum(Wi**2)`` over
        the weight matrices only (no biases, no gamma/beta).
      loss_type: ``"softmax"`` (cross-entropy) or ``"svm"`` (multiclass
        hinge, margin 1). Named ``loss_type`` because ``loss`` is the method.
      weight_scale: standard deviation of the normal weight init, or ``None``
        for He init, ``std = sqrt(2 / fan_in)`` per layer. Biases and ``beta``
        start at 0, ``gamma`` at 1.
      dtype: parameter and compute dtype (inputs are cast to it); float64
        needs x64 (``with jax.enable_x64(True):``).

    Raises:
      ValueError / TypeError: at construction, for a config that cannot work
        (negative widths, unknown normalization or loss, rate outside
        ``[0, 1)``, negative reg, non-floating dtype, ...), naming the field.

    Example:
      >>> import jax, jaxlayers as jl
      >>> net = jl.FullyConnectedNet(hidden_dims=(32,), input_dim=64, num_classes=10)
      >>> params, state = net.init(jax.random.key(0))
      >>> sorted(params)
      ['W1', 'W2', 'b1', 'b2']
    """

    hidden_dims: tuple[int, ...] = (100, 100)
    input_dim: int = 3 * 32 * 32
    num_classes: int = 10
    normalization: str | None = None
    dropout_rate: float = 0.0
    reg: float = 0.0
    loss_type: str = "softmax"
    weight_scale: float | None = None
    dtype: Any = jnp.float32

    _OWNER: ClassVar[str] = "FullyConnectedNet"

    def __post_init__(self) -> None:
        owner = self._OWNER
        dims = self.hidden_dims
        require(
            not isinstance(dims, str | bytes) and hasattr(dims, "__iter__"),
            owner,
            f"hidden_dims must be a sequence of positive ints, got {dims!r}",
            TypeError,
        )
        dims = tuple(dims)
        _set(
            self, "hidden_dims", tuple(check_int(h, owner, f"hidden_dims[{i}]", minimum=1) for i, h in enumerate(dims))
        )
        _set(self, "input_dim", check_int(self.input_dim, owner, "input_dim", minimum=1))
        norm = self.normalization
        if isinstance(norm, str) and norm.lower() == "none":
            norm = None
        check_choice(norm, owner, "normalization", _NORMALIZATIONS)
        _set(self, "normalization", norm)
        rate = check_number(
            self.dropout_rate,
            owner,
            "dropout_rate (probability of dropping a unit)",
            low=0.0,
            high=1.0,
            high_open=True,
            what="; use 0 to disable dropout",
        )
        _set(self, "dropout_rate", rate)
        self._check_shared_fields()

    # ------------------------------------------------------------------ helpers

    @property
    def num_layers(self) -> int:
        """``L``: the number of affine layers (hidden layers + the output layer)."""
        return len(self.hidden_dims) + 1

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """``(input_dim, *hidden_dims, num_classes)``."""
        return (self.input_dim, *self.hidden_dims, self.num_classes)

    @property
    def use_batchnorm(self) -> bool:
        return self.normalization == "batchnorm"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every parameter, by name (``W1``, ``b1``, ``gamma1``, ...)."""
        dims = self.layer_dims
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(1, self.num_layers + 1):
            shapes[f"W{i}"] = (dims[i - 1], dims[i])
            shapes[f"b{i}"] = (dims[i],)
            if self.use_batchnorm and i < self.num_layers:
                shapes[f"gamma{i}"] = (dims[i],)
                shapes[f"beta{i}"] = (dims[i],)
        return shapes

    def state_keys(self) -> set[str]:
        """The keys of the running-statistics dict: ``bn1 .. bn{L-1}`` with batchnorm, else none."""
        return {f"bn{i}" for i in range(1, self.num_layers)} if self.use_batchnorm else set()

    def _describe(self) -> str:
        return f"layer dims {self.layer_dims}, normalization {self.normalization!r}"

    def _check_x(self, x) -> None:
        shape = tuple(np.shape(x))
        require(
            len(shape) >= 2,
            self._OWNER,
            f"x must have shape (N, {self.input_dim}) (or (N, d1, ..., dk) flattening to it), got {shape}",
        )
        d = math.prod(shape[1:])
        require(
            d == self.input_dim,
            self._OWNER,
            f"x has {d} features per example (shape {shape}) but the network was built with "
            f"input_dim={self.input_dim}; build it with input_dim={d} or fix the data",
        )

    # ------------------------------------------------------------------ API

    def init(self, key: jax.Array) -> tuple[Params, State]:
        """Initial parameters and running statistics.

        Args:
          key: a PRNG key (``jax.random.key(seed)``); one subkey per weight.

        Returns:
          ``(params, state)``: ``params`` a dict of arrays in ``dtype`` (shapes
          as :meth:`param_shapes`): ``Wi ~ N(0, s^2)`` with ``s =
          weight_scale`` or ``sqrt(2 / fan_in)`` (He), ``bi = betai = 0``,
          ``gammai = 1``; ``state`` ``{"bn<i>": BatchNormState(mean=0,
          var=1)}`` per hidden layer with batchnorm, else ``{}``.

        Raises:
          TypeError: ``dtype`` float64 with x64 off.
        """
        self._check_dtype_available()
        dims = self.layer_dims
        keys = jax.random.split(key, self.num_layers)
        params: Params = {}
        state: State = {}
        for i in range(1, self.num_layers + 1):
            fan_in, fan_out = dims[i - 1], dims[i]
            std = init_std(self.weight_scale, fan_in, self.dtype)
            params[f"W{i}"] = std * jax.random.normal(keys[i - 1], (fan_in, fan_out), self.dtype)
            params[f"b{i}"] = jnp.zeros((fan_out,), self.dtype)
            if self.use_batchnorm and i < self.num_layers:
                params[f"gamma{i}"] = jnp.ones((fan_out,), self.dtype)
                params[f"beta{i}"] = jnp.zeros((fan_out,), self.dtype)
                state[f"bn{i}"] = batchnorm_state(fan_out, stats_dtype(self.dtype))
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: jax.Array,
        *,
        train: bool,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        """Forward pass to class scores (logits).

        Args:
          params: from :meth:`init` (or training).
          state: running statistics, from :meth:`init` (or training).
          x: inputs, shape ``(N, input_dim)`` or ``(N, d1, ..., dk)`` with
            ``d1 * ... * dk = input_dim``; cast to ``dtype``.
          train: keyword, static. ``True``: batchnorm uses batch statistics
            (and updates the running ones), dropout is active. ``False``: test
            mode, deterministic.
          key: PRNG key for the dropout masks; required when ``train`` and
            ``dropout_rate > 0``, ignored otherwise.

        Returns:
          ``(scores, new_state)``: scores ``(N, num_classes)`` in ``dtype``;
          ``new_state`` the updated running statistics (train) or ``state``.

        Raises:
          ValueError: ``x``'s features differ from ``input_dim``; params or
            state do not match the network; no ``key`` when dropout needs one.
        """
        use_dropout = self._check_train_key(train, key, self.dropout_rate)
        self._check_x(x)
        self._check_params(params, state)
        x = jnp.asarray(x)
        h = x.reshape(x.shape[0], -1).astype(self.dtype)
        hidden = self.num_layers - 1
        keys = jax.random.split(key, hidden) if use_dropout and hidden else None
        new_state: State = {}
        for i in range(1, hidden + 1):
            h = affine(h, params[f"W{i}"], params[f"b{i}"])
            if self.use_batchnorm:
                h, new_state[f"bn{i}"] = batchnorm(
                    h, params[f"gamma{i}"], params[f"beta{i}"], state[f"bn{i}"], train=bool(train)
                )
            h = relu(h)
            if use_dropout:
                h = dropout(h, keys[i - 1], rate=self.dropout_rate, train=True)
        scores = affine(h, params[f"W{self.num_layers}"], params[f"b{self.num_layers}"])
        return scores, new_state


def _pair(value, owner: str, name: str) -> tuple[int, int]:
    """``(a, b)`` from an int or a pair of ints, each ``>= 1``."""
    pair = (value, value) if is_int(value) else tuple(value) if isinstance(value, tuple | list) else None
    require(
        pair is not None and len(pair) == 2, owner, f"{name} must be an int or a pair of ints, got {value!r}", TypeError
    )
    return tuple(check_int(v, owner, f"{name}[{i}]", minimum=1) for i, v in enumerate(pair))


def _image_shape(value, owner: str) -> tuple[int, int, int]:
    shape = tuple(value) if isinstance(value, tuple | list) else None
    require(shape is not None and len(shape) == 3, owner, f"input_dim must be (C, H, W), got {value!r}", TypeError)
    return tuple(check_int(v, owner, f"input_dim[{i}]", minimum=1) for i, v in enumerate(shape))


class _ImageModel(LayerModel):
    """Shared by the conv nets: image-shaped or flat inputs, ``(N, C, H, W)``."""

    def _images(self, x) -> jax.Array:
        """``x`` as ``(N, C, H, W)``: exactly that shape, or flat ``(N, C*H*W)`` (row-major, as
        ``images.reshape(N, -1)``). Any other layout is refused, even one with as many elements per
        example (``(N, H, W, C)`` would be silently scrambled by a reshape)."""
        shape = tuple(np.shape(x))
        c, h, w = self.input_dim
        require(
            (len(shape) == 2 and shape[1] == c * h * w) or (len(shape) == 4 and shape[1:] == (c, h, w)),
            self._OWNER,
            f"x must have shape (N, C, H, W) = (N, {c}, {h}, {w}) or flat (N, {c * h * w}), got {shape}"
            + (" (channels last? transpose it to channels first)" if len(shape) == 4 and shape[-1] == c else ""),
        )
        x = jnp.asarray(x)
        return x.reshape(x.shape[0], c, h, w).astype(self.dtype)

    def _conv_weight(self, key, shape, fan_in: int) -> jax.Array:
        return init_std(self.weight_scale, fan_in, self.dtype) * jax.random.normal(key, shape, self.dtype)


@register_model
@dataclasses.dataclass(frozen=True)
class ThreeLayerConvNet(_ImageModel):
    """The course's three-layer convolutional network: ``conv - relu - 2x2 max pool - affine - relu - affine - loss``.

    The convolution keeps the spatial size (stride 1, padding ``(filter_size - 1) // 2``);
    the pool halves it. Parameters (the NumPy original's names): ``W1`` ``(F, C, k, k)``
    and ``b1`` ``(F,)``; ``W2`` ``(F * H/2 * W/2, hidden_dim)``, ``b2``; ``W3``
    ``(hidden_dim, num_classes)``, ``b3``. No running statistics (``state == {}``). A
    pytree like :class:`FullyConnectedNet` (``reg``, ``weight_scale`` traced).

    Attributes:
      input_dim: ``(C, H, W)`` of one example; inputs ``(N, C, H, W)`` or flat ``(N, C*H*W)``.
      num_filters: ``F``.
      filter_size: ``k``, odd (so "same" padding keeps the size).
      hidden_dim: width of the hidden affine layer.
      num_classes: ``C_out >= 2``.
      weight_scale: std of the normal weight init (the course's ``1e-3``), or ``None`` for He init.
      reg: L2 strength, ``0.5 * reg * sum(W**2)`` over ``W1, W2, W3``.
      loss_type: ``"softmax"`` or ``"svm"``.
      dtype: parameter and compute dtype.

    Raises:
      ValueError / TypeError: at construction, naming the field.
    """

    input_dim: tuple[int, int, int] = (3, 32, 32)
    num_filters: int = 32
    filter_size: int = 7
    hidden_dim: int = 100
    num_classes: int = 10
    weight_scale: float | None = 1e-3
    reg: float = 0.0
    loss_type: str = "softmax"
    dtype: Any = jnp.float32

    _OWNER: ClassVar[str] = "ThreeLayerConvNet"

    def __post_init__(self) -> None:
        owner = self._OWNER
        _set(self, "input_dim", _image_shape(self.input_dim, owner))
        for name in ("num_filters", "filter_size", "hidden_dim"):
            _set(self, name, check_int(getattr(self, name), owner, name, minimum=1))
        require(self.filter_size % 2 == 1, owner, f"filter_size must be odd (same padding), got {self.filter_size}")
        _, h, w = self.input_dim
        require(h >= 2 and w >= 2, owner, f"input_dim {self.input_dim} is too small for a 2x2 pool")
        self._check_shared_fields()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        c, h, w = self.input_dim
        f, k = self.num_filters, self.filter_size
        flat = f * (h // 2) * (w // 2)
        return {
            "W1": (f, c, k, k),
            "b1": (f,),
            "W2": (flat, self.hidden_dim),
            "b2": (self.hidden_dim,),
            "W3": (self.hidden_dim, self.num_classes),
            "b3": (self.num_classes,),
        }

    def state_keys(self) -> set[str]:
        return set()

    def init(self, key: jax.Array) -> tuple[Params, State]:
        """Weights ``N(0, weight_scale^2)`` (or He), biases 0; ``state = {}``.

        Raises:
          TypeError: ``dtype`` float64 with x64 off.
        """
        self._check_dtype_available()
        shapes = self.param_shapes()
        k1, k2, k3 = jax.random.split(key, 3)
        c, _, _ = self.input_dim
        params = {
            "W1": self._conv_weight(k1, shapes["W1"], c * self.filter_size**2),
            "W2": self._conv_weight(k2, shapes["W2"], shapes["W2"][0]),
            "W3": self._conv_weight(k3, shapes["W3"], shapes["W3"][0]),
        }
        for b in ("b1", "b2", "b3"):
            params[b] = jnp.zeros(shapes[b], self.dtype)
        return params, {}

    def apply(self, params, state, x, *, train: bool, key=None):
        """Class scores ``(N, num_classes)`` and ``state`` (no running statistics).

        Raises:
          ValueError: ``x`` not ``(N, *input_dim)`` (or flat); params that do not match.
        """
        self._check_train_key(train, key, 0.0)
        h = self._images(x)
        self._check_params(params, state)
        h = conv2d(h, params["W1"], params["b1"], stride=1, padding=(self.filter_size - 1) // 2)
        h = max_pool2d(relu(h), pool_size=(2, 2), stride=2)
        h = relu(affine(h, params["W2"], params["b2"]))
        return affine(h, params["W3"], params["b3"]), state


_CONV_NORMS = (None, "batchnorm", "groupnorm")
_FC_NORMS = (None, "batchnorm", "layernorm")


@register_model
@dataclasses.dataclass(frozen=True)
class ConvNet(_ImageModel):
    """A configurable convolutional classifier for real use.

    ``[conv - (spatial_batchnorm | groupnorm | none) - relu - (max pool)] x L -
    [affine - (batchnorm | layernorm | none) - relu - dropout] x M - affine - loss``,
    every op a jaxlayers hand-derived rule.

    Parameters are numbered through the network as in the NumPy original: conv block
    ``i`` has ``W{i}`` ``(F_i, C_{i-1}, kh, kw)``, ``b{i}`` and, with a norm,
    ``gamma{i}``/``beta{i}`` ``(F_i,)``; affine layer ``j`` (numbered after the
    convs) has ``W{j}`` ``(fan_in, fan_out)``, ``b{j}`` and, with a norm,
    ``gamma{j}``/``beta{j}``. Running statistics ``{"bn{i}": BatchNormState}``
    (float32 for half-precision nets) for every batch-normalised layer.

    Attributes:
      input_dim: ``(C, H, W)``; inputs ``(N, C, H, W)`` or flat ``(N, C*H*W)``.
      conv_channels: ``(F_1, ..., F_L)``, the filters of each conv block (``()``: none).
      filter_size: int or ``(kh, kw)``, odd (each conv keeps the size: stride 1,
        padding ``(k - 1) // 2``).
      conv_norm: ``None``, ``"batchnorm"`` (spatial) or ``"groupnorm"``.
      groups: groups of ``groupnorm`` (must divide every ``F_i``).
      pool_size: int or ``(ph, pw)``: a VALID max pool of this size and stride
        after every conv block; ``1`` (or ``(1, 1)``) for none.
      hidden_dims: widths of the ``M`` hidden affine layers.
      fc_norm: ``None``, ``"batchnorm"`` or ``"layernorm"``.
      dropout_rate: probability of dropping a hidden affine unit, in ``[0, 1)``.
      num_classes: ``>= 2``.
      weight_scale: std of the normal init, or ``None`` for He init (``sqrt(2 / fan_in)``).
      reg: L2 strength over every ``W``.
      loss_type: ``"softmax"`` or ``"svm"``.
      dtype: parameter and compute dtype.

    Raises:
      ValueError / TypeError: at construction, naming the field (including a
        pool that shrinks the image below 1 pixel, and groups that do not divide
        the channels).
    """

    input_dim: tuple[int, int, int] = (3, 32, 32)
    conv_channels: tuple[int, ...] = (32, 64)
    filter_size: Any = 3
    conv_norm: str | None = "batchnorm"
    groups: int = 8
    pool_size: Any = 2
    hidden_dims: tuple[int, ...] = (256,)
    fc_norm: str | None = None
    dropout_rate: float = 0.0
    num_classes: int = 10
    weight_scale: float | None = None
    reg: float = 0.0
    loss_type: str = "softmax"
    dtype: Any = jnp.float32

    _OWNER: ClassVar[str] = "ConvNet"

    def __post_init__(self) -> None:
        owner = self._OWNER
        _set(self, "input_dim", _image_shape(self.input_dim, owner))
        for name in ("conv_channels", "hidden_dims"):
            v = getattr(self, name)
            require(
                not isinstance(v, str | bytes) and hasattr(v, "__iter__"),
                owner,
                f"{name} must be a sequence of positive ints, got {v!r}",
                TypeError,
            )
            _set(self, name, tuple(check_int(h, owner, f"{name}[{i}]", minimum=1) for i, h in enumerate(v)))
        fs = _pair(self.filter_size, owner, "filter_size")
        require(
            fs[0] % 2 == 1 and fs[1] % 2 == 1,
            owner,
            f"filter_size must be odd (same padding), got {self.filter_size!r}",
        )
        _set(self, "filter_size", fs)
        _set(self, "pool_size", _pair(self.pool_size, owner, "pool_size"))
        for name, choices in (("conv_norm", _CONV_NORMS), ("fc_norm", _FC_NORMS)):
            v = getattr(self, name)
            v = None if isinstance(v, str) and v.lower() == "none" else v
            check_choice(v, owner, name, choices)
            _set(self, name, v)
        _set(self, "groups", check_int(self.groups, owner, "groups", minimum=1))
        if self.conv_norm == "groupnorm":
            bad = [f for f in self.conv_channels if f % self.groups]
            require(not bad, owner, f"groups={self.groups} must divide every conv channel count, not {bad}")
        rate = check_number(
            self.dropout_rate, owner, "dropout_rate (probability of dropping a unit)", low=0.0, high=1.0, high_open=True
        )
        _set(self, "dropout_rate", rate)
        self._check_shared_fields()
        _, h, w = self.input_dim
        ph, pw = self.pool_size
        for i, _f in enumerate(self.conv_channels, 1):
            require(
                h // ph >= 1 and w // pw >= 1,
                owner,
                f"conv block {i}'s {ph}x{pw} pool shrinks the {h}x{w} image to nothing; use fewer blocks or pool_size=1",
            )
            h, w = h // ph, w // pw

    def feature_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` after the conv blocks."""
        c, h, w = self.input_dim
        ph, pw = self.pool_size
        for f in self.conv_channels:
            c, h, w = f, h // ph, w // pw
        return c, h, w

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        c = self.input_dim[0]
        kh, kw = self.filter_size
        i = 0
        for f in self.conv_channels:
            i += 1
            shapes[f"W{i}"], shapes[f"b{i}"] = (f, c, kh, kw), (f,)
            if self.conv_norm:
                shapes[f"gamma{i}"], shapes[f"beta{i}"] = (f,), (f,)
            c = f
        d = math.prod(self.feature_shape())
        for h in self.hidden_dims:
            i += 1
            shapes[f"W{i}"], shapes[f"b{i}"] = (d, h), (h,)
            if self.fc_norm:
                shapes[f"gamma{i}"], shapes[f"beta{i}"] = (h,), (h,)
            d = h
        i += 1
        shapes[f"W{i}"], shapes[f"b{i}"] = (d, self.num_classes), (self.num_classes,)
        return shapes

    def state_keys(self) -> set[str]:
        keys = set()
        if self.conv_norm == "batchnorm":
            keys |= {f"bn{i}" for i in range(1, len(self.conv_channels) + 1)}
        if self.fc_norm == "batchnorm":
            first = len(self.conv_channels) + 1
            keys |= {f"bn{i}" for i in range(first, first + len(self.hidden_dims))}
        return keys

    def _describe(self) -> str:
        return f"conv channels {self.conv_channels}, hidden dims {self.hidden_dims}"

    def init(self, key: jax.Array) -> tuple[Params, State]:
        """He (or ``weight_scale``) normal weights, zero biases and betas, unit gammas, running
        statistics ``mean=0, var=1``.

        Raises:
          TypeError: ``dtype`` float64 with x64 off.
        """
        self._check_dtype_available()
        shapes = self.param_shapes()
        n_w = sum(1 for n in shapes if n.startswith("W"))
        keys = jax.random.split(key, n_w)
        params: Params = {}
        for i in range(1, n_w + 1):
            shape = shapes[f"W{i}"]
            fan_in = math.prod(shape[1:]) if len(shape) == 4 else shape[0]
            params[f"W{i}"] = self._conv_weight(keys[i - 1], shape, fan_in)
            params[f"b{i}"] = jnp.zeros(shapes[f"b{i}"], self.dtype)
            if f"gamma{i}" in shapes:
                params[f"gamma{i}"] = jnp.ones(shapes[f"gamma{i}"], self.dtype)
                params[f"beta{i}"] = jnp.zeros(shapes[f"beta{i}"], self.dtype)
        state = {k: batchnorm_state(shapes[f"b{k[2:]}"][0], stats_dtype(self.dtype)) for k in sorted(self.state_keys())}
        return params, state

    def apply(self, params, state, x, *, train: bool, key=None):
        """Class scores ``(N, num_classes)`` and the new running statistics.

        Raises:
          ValueError: ``x`` not ``(N, *input_dim)`` (or flat); params or state that
            do not match; no ``key`` when dropout needs one.
        """
        use_dropout = self._check_train_key(train, key, self.dropout_rate)
        h = self._images(x)
        self._check_params(params, state)
        train = bool(train)
        kh, kw = self.filter_size
        new_state: State = {}
        i = 0
        for _ in self.conv_channels:
            i += 1
            h = conv2d(h, params[f"W{i}"], params[f"b{i}"], stride=1, padding=((kh - 1) // 2, (kw - 1) // 2))
            if self.conv_norm == "batchnorm":
                h, new_state[f"bn{i}"] = spatial_batchnorm(
                    h, params[f"gamma{i}"], params[f"beta{i}"], state[f"bn{i}"], train=train
                )
            elif self.conv_norm == "groupnorm":
                h = groupnorm(h, params[f"gamma{i}"], params[f"beta{i}"], groups=self.groups)
            h = relu(h)
            if self.pool_size != (1, 1):
                h = max_pool2d(h, pool_size=self.pool_size, stride=self.pool_size)
        keys = jax.random.split(key, len(self.hidden_dims)) if use_dropout and self.hidden_dims else None
        for j, _ in enumerate(self.hidden_dims):
            i += 1
            h = affine(h, params[f"W{i}"], params[f"b{i}"])
            if self.fc_norm == "batchnorm":
                h, new_state[f"bn{i}"] = batchnorm(
                    h, params[f"gamma{i}"], params[f"beta{i}"], state[f"bn{i}"], train=train
                )
            elif self.fc_norm == "layernorm":
                h = layernorm(h, params[f"gamma{i}"], params[f"beta{i}"])
            h = relu(h)
            if use_dropout:
                h = dropout(h, keys[j], rate=self.dropout_rate, train=True)
        i += 1
        return affine(h, params[f"W{i}"], params[f"b{i}"]), new_state
