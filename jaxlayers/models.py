"""Models built only from jaxlayers ops: :class:`FullyConnectedNet`.

Every gradient of a model here is a hand-derived ``custom_vjp`` rule: the
network is a composition of :func:`jaxlayers.affine`,
:func:`jaxlayers.batchnorm`, :func:`jaxlayers.relu`, :func:`jaxlayers.dropout`
and :func:`jaxlayers.softmax_loss` / :func:`jaxlayers.svm_loss`, and nothing
else but the L2 penalty.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_choice, check_float_dtype, check_int, check_number, require, stats_dtype
from jaxlayers.layers import BatchNormState, affine, batchnorm, batchnorm_state, dropout, relu
from jaxlayers.losses import softmax_loss, svm_loss
from jaxlayers.model import register_model

__all__ = ["FullyConnectedNet", "LayerModel", "init_std"]

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
        _set(self, "num_classes", check_int(self.num_classes, owner, "num_classes", minimum=2))
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
        _set(self, "reg", check_number(self.reg, owner, "reg (L2 strength)", low=0.0))
        check_choice(self.loss_type, owner, "loss_type", _LOSSES)
        if self.weight_scale is not None:
            scale = check_number(
                self.weight_scale, owner, "weight_scale", low=0.0, low_open=True, what="(or None: He init)"
            )
            _set(self, "weight_scale", scale)
        _set(self, "dtype", check_float_dtype(self.dtype, owner))

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
