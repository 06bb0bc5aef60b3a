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
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers.layers import BatchNormState, affine, batchnorm, batchnorm_state, dropout, relu
from jaxlayers.losses import softmax_loss, svm_loss

__all__ = ["FullyConnectedNet"]

_NORMALIZATIONS = (None, "batchnorm")
_LOSSES = ("softmax", "svm")

Params = dict[str, jax.Array]
State = dict[str, BatchNormState]


def _fail(message: str, exc: type[Exception] = ValueError):
    raise exc(f"FullyConnectedNet: {message}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class FullyConnectedNet:
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

    def __post_init__(self) -> None:
        dims = self.hidden_dims
        if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
            _fail(f"hidden_dims must be a sequence of positive ints, got {dims!r}", TypeError)
        dims = tuple(dims)
        for i, h in enumerate(dims):
            if not _is_int(h) or h <= 0:
                _fail(f"hidden_dims[{i}] must be a positive int, got {h!r} (hidden_dims={dims!r})")
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in dims))
        if not _is_int(self.input_dim) or self.input_dim <= 0:
            _fail(f"input_dim must be a positive int, got {self.input_dim!r}")
        if not _is_int(self.num_classes) or self.num_classes < 2:
            _fail(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        object.__setattr__(self, "input_dim", int(self.input_dim))
        object.__setattr__(self, "num_classes", int(self.num_classes))
        norm = self.normalization
        if isinstance(norm, str) and norm.lower() == "none":
            norm = None
        if norm not in _NORMALIZATIONS:
            _fail(f"normalization must be None or 'batchnorm', got {self.normalization!r}")
        object.__setattr__(self, "normalization", norm)
        if not _is_real(self.dropout_rate) or not 0.0 <= self.dropout_rate < 1.0:
            _fail(
                f"dropout_rate (probability of dropping a unit) must lie in [0, 1), got {self.dropout_rate!r}; "
                "use 0 to disable dropout"
            )
        object.__setattr__(self, "dropout_rate", float(self.dropout_rate))
        if not _is_real(self.reg) or not (self.reg >= 0.0 and math.isfinite(self.reg)):
            _fail(f"reg (L2 strength) must be a finite number >= 0, got {self.reg!r}")
        object.__setattr__(self, "reg", float(self.reg))
        if self.loss_type not in _LOSSES:
            _fail(f"loss_type must be 'softmax' or 'svm', got {self.loss_type!r}")
        if self.weight_scale is not None:
            if not _is_real(self.weight_scale) or not (self.weight_scale > 0.0 and math.isfinite(self.weight_scale)):
                _fail(f"weight_scale must be a positive number or None (He init), got {self.weight_scale!r}")
            object.__setattr__(self, "weight_scale", float(self.weight_scale))
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            _fail(f"dtype must be a floating dtype such as 'float32', got {self.dtype!r}", TypeError)
        if not jnp.issubdtype(dtype, jnp.floating):
            _fail(f"dtype must be a floating dtype, got {dtype}", TypeError)
        object.__setattr__(self, "dtype", dtype)

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

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values (``dtype`` by name)."""
        d = dataclasses.asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["dtype"] = self.dtype.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FullyConnectedNet:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "hidden_dims": tuple(d["hidden_dims"])})

    def _check_dtype_available(self) -> None:
        available = jax.dtypes.canonicalize_dtype(self.dtype)
        if available != self.dtype:
            _fail(
                f"dtype {self.dtype} is not available: JAX's x64 mode is off, so it would silently run in "
                f"{available}. Wrap the calls in `with jax.enable_x64(True):`",
                TypeError,
            )

    def _check_params(self, params, state) -> None:
        expected = self.param_shapes()
        if not isinstance(params, dict):
            _fail(f"params must be a dict of arrays by name (from init), got {type(params).__name__}", TypeError)
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        if missing or extra:
            _fail(
                f"params do not match this network (layer dims {self.layer_dims}, normalization "
                f"{self.normalization!r}): missing {missing}, unexpected {extra}"
            )
        for name, shape in expected.items():
            got = tuple(np.shape(params[name]))
            if got != shape:
                _fail(f"params[{name!r}] must have shape {shape} for layer dims {self.layer_dims}, got {got}")
        want_state = {f"bn{i}" for i in range(1, self.num_layers)} if self.use_batchnorm else set()
        if not isinstance(state, dict) or set(state) != want_state:
            got_state = sorted(state) if isinstance(state, dict) else type(state).__name__
            _fail(f"state must be a dict with keys {sorted(want_state)} (from init), got {got_state}")

    def _check_x(self, x) -> None:
        shape = tuple(np.shape(x))
        if len(shape) < 2:
            _fail(f"x must have shape (N, {self.input_dim}) (or (N, d1, ..., dk) flattening to it), got {shape}")
        d = math.prod(shape[1:])
        if d != self.input_dim:
            _fail(
                f"x has {d} features per example (shape {shape}) but the network was built with "
                f"input_dim={self.input_dim}; build it with input_dim={d} or fix the data"
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
            std = self.weight_scale if self.weight_scale is not None else math.sqrt(2.0 / fan_in)
            params[f"W{i}"] = std * jax.random.normal(keys[i - 1], (fan_in, fan_out), self.dtype)
            params[f"b{i}"] = jnp.zeros((fan_out,), self.dtype)
            if self.use_batchnorm and i < self.num_layers:
                params[f"gamma{i}"] = jnp.ones((fan_out,), self.dtype)
                params[f"beta{i}"] = jnp.zeros((fan_out,), self.dtype)
                state[f"bn{i}"] = batchnorm_state(fan_out, self.dtype)
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
        if not isinstance(train, (bool, np.bool_)):
            _fail(f"train must be a Python bool (static), got {train!r}", TypeError)
        self._check_x(x)
        self._check_params(params, state)
        use_dropout = bool(train) and self.dropout_rate > 0.0
        if use_dropout and key is None:
            _fail(f"a PRNG key is required for dropout (dropout_rate={self.dropout_rate}) in train mode: pass key=")
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

    def l2_penalty(self, params: Params) -> jax.Array:
        """``0.5 * reg * sum_i sum(Wi**2)`` over the weight matrices (a scalar in ``dtype``)."""
        if self.reg == 0.0:  # static: no pass over the weights and no saved copy of them in the step
            return jnp.zeros((), self.dtype)
        # vdot(W, W), not sum(W**2): its VJP keeps W itself (an input), not a new 2*W array.
        total = sum(jnp.vdot(params[f"W{i}"], params[f"W{i}"]) for i in range(1, self.num_layers + 1))
        return 0.5 * self.reg * total

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

        Shaped for ``jax.value_and_grad(net.loss, has_aux=True)``.

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
        data_loss = softmax_loss(scores, y) if self.loss_type == "softmax" else svm_loss(scores, y)
        return data_loss + self.l2_penalty(params).astype(data_loss.dtype), (new_state, scores)
