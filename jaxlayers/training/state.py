"""The training state and the step: :class:`TrainState`, :func:`train_step`, :func:`init_train_state`.

Every compiled function here is built once per (model structure, optimizer)
and cached: a model's traced leaves (``reg``, ``weight_scale``; see
:mod:`jaxlayers.model`), the PRNG key and the learning rate (in the optimizer
state) are arguments, not constants, so new values of them reuse the program.

The flat update (:class:`FlatLayout`). An optax update over a dict of ``P``
parameter arrays compiles to about three small XLA kernels per array (Adam:
``mu``, ``nu``, the parameter), which for a small network is a fair share of a
step (``FullyConnectedNet`` at N = 50, 5 x 100 hidden: 16 arrays, 48 of the
step's ~220 kernels; see bench/RESULTS.md, issue 20). The same update on *one*
vector that holds every parameter (and an optimizer state over that vector)
is the same arithmetic element by element for every optimizer that acts
elementwise -- all of :func:`~jaxlayers.training.config.make_optimizer`'s --
in a handful of kernels. Only the small arrays are packed (at most
:data:`FLAT_MAX_SIZE` elements): a large one's update is worth its kernels,
and packing it would copy it every step. :func:`flat_layout` describes that packing,
:meth:`FlatLayout.flatten` / :meth:`FlatLayout.unflatten` convert a
:class:`TrainState` to and from it, and :func:`train_step` takes the layout to
step a packed state. ``make_train_step(..., flat=True)`` is the opt-in for the
bare step (8-10% less CPU per step for that network on a 2-core AMD EPYC);
``run_epoch(..., flat=True)`` packs a scanned epoch, which ``fit`` does not do:
inside the scan's loop body the packed step measured 3% slower there.
Checkpoints, ``FitResult`` and every public state hold the per-array pytrees.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxlayers.model import check_model, merge_model, split_model
from jaxlayers.training.config import ConfiguredOptimizer, with_learning_rate

__all__ = [
    "FLAT_MAX_SIZE",
    "FlatLayout",
    "FlatTrainStep",
    "StepMetrics",
    "TrainState",
    "count_right",
    "count_targets",
    "flat_layout",
    "flat_update_is_exact",
    "init_state",
    "init_train_state",
    "jitted_init",
    "make_train_step",
    "train_step",
]


class TrainState(NamedTuple):
    """Everything that changes during training, as one pytree.

    Attributes:
      params: the model's parameters (e.g. ``{"W1": ..., "b1": ..., ...}``).
      model_state: the model's running statistics (e.g. ``{"bn1": BatchNormState, ...}``).
      opt_state: the optax optimizer state; for a ``TrainConfig``'s optimizer it
        holds the base learning rate (``opt_state.hyperparams["learning_rate"]``).
      step: int32 scalar, optimizer steps taken.
      key: a typed PRNG key (``jax.random.key``); split for every shuffle
        and every dropout mask.
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class StepMetrics(NamedTuple):
    """One step's metrics: the scalar ``loss`` (data + L2) and ``correct``, the int32 count of the
    batch's train-mode predictions that equal the label, out of ``count`` (int32) counted labels
    (:func:`count_targets`: the batch size for class labels ``(B,)``, the non-padding steps for
    sequence labels ``(B, T)``)."""

    loss: jax.Array
    correct: jax.Array
    count: jax.Array


def count_targets(model, y):
    """The labels of ``y`` an accuracy counts (int32 scalar, traced or not): ``y.shape[0]`` for class
    labels ``(N,)``; ``model.target_count(y)`` (the labels ``>= 0``; negatives are padding) for a
    model with ``sequence_targets`` (labels ``(N, T)``)."""
    if getattr(model, "sequence_targets", False):
        return model.target_count(y)
    return jnp.asarray(y.shape[0], jnp.int32)


def count_right(model, scores, y):
    """How many labels of ``y`` the scores' argmax gets right (int32): over :func:`count_targets`'s labels
    only -- for a model with ``sequence_targets``, where ``model.target_mask(y)`` holds (a padding label
    (< 0) never counts, nor a label the model's mask leaves out, such as a caption's ``<NULL>``)."""
    right = jnp.argmax(scores, axis=-1) == y
    if getattr(model, "sequence_targets", False):
        right = right & model.target_mask(y)
    return jnp.sum(right, dtype=jnp.int32)


FLAT_MAX_SIZE = 1 << 16
"""Parameter arrays of at most this many elements go into the flat vector (:func:`flat_layout`); larger
ones keep their own buffers: their update already costs far more than a kernel launch, and copying
them into a vector every step (the gradient's concatenation) would cost memory traffic instead."""


class FlatLayout(NamedTuple):
    """How a :class:`TrainState`'s parameters and optimizer state pack into flat vectors (static, hashable).

    The packed parameters are a tuple ``(vector, *large)``: ``vector`` holds
    the small parameter arrays (``in_vector``; one floating dtype), raveled
    and concatenated in ``jax.tree`` order as ``jax.flatten_util.ravel_pytree``
    orders them, and ``large`` the others (more than
    :data:`FLAT_MAX_SIZE` elements) as they are, in the same order. In the
    optimizer state every subtree shaped like the parameters (Adam's ``mu``
    and ``nu``, a momentum trace, ...) is packed the same way; everything
    else (step counts, injected learning rates) is kept as it is.

    Attributes:
      params: the parameters' treedef.
      shapes: each parameter leaf's shape.
      in_vector: per parameter leaf, whether it goes into the vector.
      dtype: the vector's dtype.
      opt_outer: the optimizer state's treedef with each parameter-shaped subtree as one leaf.
      opt_packed: per leaf of ``opt_outer``, whether it is a parameter-shaped subtree.
    """

    params: Any
    shapes: tuple
    in_vector: tuple
    dtype: Any
    opt_outer: Any
    opt_packed: tuple

    @property
    def size(self) -> int:
        """Elements in the flat vector."""
        return sum(math.prod(s) for s, v in zip(self.shapes, self.in_vector, strict=True) if v)

    def _is_param_tree(self, t) -> bool:
        if jax.tree.structure(t) != self.params:
            return False
        return tuple(tuple(jnp.shape(leaf)) for leaf in jax.tree.leaves(t)) == self.shapes

    def ravel(self, tree) -> tuple:
        """A parameter-shaped pytree packed: ``(vector, *large)`` (see the class docstring)."""
        leaves = jax.tree.leaves(tree)
        small = [jnp.ravel(a) for a, v in zip(leaves, self.in_vector, strict=True) if v]
        return (jnp.concatenate(small), *(a for a, v in zip(leaves, self.in_vector, strict=True) if not v))

    def unravel(self, packed: tuple):
        """The inverse of :meth:`ravel`: the parameter pytree (slices of the vector, the large arrays)."""
        vector, large = packed[0], iter(packed[1:])
        leaves, start = [], 0
        for shape, v in zip(self.shapes, self.in_vector, strict=True):
            if v:
                n = math.prod(shape)
                leaves.append(lax.slice_in_dim(vector, start, start + n).reshape(shape))
                start += n
            else:
                leaves.append(next(large))
        return jax.tree.unflatten(self.params, leaves)

    def flatten(self, state: TrainState) -> TrainState:
        """``state`` packed: ``params`` and each parameter-shaped optimizer subtree as :meth:`ravel` packs them.

        Raises:
          ValueError: an optimizer state of another structure than the layout's.
        """
        nodes, outer = jax.tree.flatten(state.opt_state, is_leaf=self._is_param_tree)
        if outer != self.opt_outer:
            raise ValueError(f"FlatLayout.flatten: an optimizer state of another structure than the layout's: {outer}")
        opt = [self.ravel(n) if packed else n for n, packed in zip(nodes, self.opt_packed, strict=True)]
        return state._replace(params=self.ravel(state.params), opt_state=self.opt_outer.unflatten(opt))

    def unflatten(self, state: TrainState) -> TrainState:
        """The inverse of :meth:`flatten`: the per-array :class:`TrainState` (as checkpoints hold it)."""
        nodes = self.opt_outer.flatten_up_to(state.opt_state)
        opt = [self.unravel(n) if packed else n for n, packed in zip(nodes, self.opt_packed, strict=True)]
        return state._replace(params=self.unravel(state.params), opt_state=self.opt_outer.unflatten(opt))


def flat_layout(state: TrainState, max_size: int = FLAT_MAX_SIZE) -> FlatLayout | None:
    """The :class:`FlatLayout` of ``state`` (arrays, tracers or ``ShapeDtypeStruct`` leaves): the parameter
    arrays of at most ``max_size`` elements go into the vector. ``None`` where packing has nothing to
    gain or cannot be exact: fewer than two such arrays, or of more than one dtype (a concatenation
    would promote them), or not floating."""
    leaves, treedef = jax.tree.flatten(state.params)
    in_vector = tuple(math.prod(leaf.shape) <= max_size for leaf in leaves)
    dtypes = {jnp.dtype(leaf.dtype) for leaf, v in zip(leaves, in_vector, strict=True) if v}
    if sum(in_vector) < 2 or len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        return None
    shapes = tuple(tuple(leaf.shape) for leaf in leaves)
    probe = FlatLayout(treedef, shapes, in_vector, next(iter(dtypes)), None, ())
    nodes, outer = jax.tree.flatten(state.opt_state, is_leaf=probe._is_param_tree)
    packed = tuple(probe._is_param_tree(n) for n in nodes)
    return probe._replace(opt_outer=outer, opt_packed=packed)


def flat_update_is_exact(optimizer) -> bool:
    """Whether ``optimizer``'s update on the packed vector is known to be its per-array update element
    by element: a :class:`~jaxlayers.training.config.ConfiguredOptimizer`
    (``TrainConfig``'s sgd, momentum, rmsprop, adam, adamw are elementwise; ``clip_norm``'s global norm
    sums the same squares in another order, a float rounding). Any other optax transformation may act
    per array (``optax.masked``, LARS/LAMB trust ratios): ``False``."""
    return isinstance(optimizer, ConfiguredOptimizer)


def train_step(
    model, optimizer: optax.GradientTransformation, state: TrainState, x, y, layout: FlatLayout | None = None
):
    """One optimizer step (pure; trace it inside ``jit``, ``vmap`` or ``lax.scan``).

    The key is split for the dropout masks; ``value_and_grad`` of
    ``model.loss`` (every gradient a hand-derived jaxlayers rule for
    jaxlayers' models); the optax update; the new running statistics.

    With ``layout`` (:func:`flat_layout`), ``state`` is packed
    (:meth:`FlatLayout.flatten`) and so is the state returned: the loss sees
    the parameters unraveled (slices of the vector), the gradients are raveled
    into one vector and the optimizer updates that vector in a few kernels
    instead of a few per parameter array. For an elementwise optimizer the
    result is the unpacked step's, up to float rounding.

    Returns:
      ``(new_state, StepMetrics)``.
    """
    key, dropout_key = jax.random.split(state.key)
    grad_fn = jax.value_and_grad(model.loss, has_aux=True)
    params_tree = state.params if layout is None else layout.unravel(state.params)
    (loss, (model_state, scores)), grads = grad_fn(params_tree, state.model_state, x, y, key=dropout_key)
    if layout is not None:
        grads = layout.ravel(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = count_right(model, scores, y)
    metrics = StepMetrics(loss, correct, count_targets(model, y))
    return TrainState(params, model_state, opt_state, state.step + 1, key), metrics


def init_state(model, optimizer: optax.GradientTransformation, key: jax.Array, learning_rate=None) -> TrainState:
    """A fresh :class:`TrainState` (pure): ``key`` is split into the init key and the training key.

    ``learning_rate`` (may be traced) replaces the optimizer's initial base rate.
    """
    init_key, train_key = jax.random.split(key)
    params, model_state = model.init(init_key)
    opt_state = optimizer.init(params)
    if learning_rate is not None:
        opt_state = with_learning_rate(opt_state, learning_rate)
    return TrainState(params, model_state, opt_state, jnp.zeros((), jnp.int32), train_key)


@functools.lru_cache(maxsize=32)
def jitted_init(static, optimizer):
    """``init(leaves, key, learning_rate=None) -> TrainState``, jitted, cached per (model structure, optimizer).

    ``static``/``leaves`` are :func:`jaxlayers.model.split_model`'s; the
    training loops and :func:`init_train_state` share this cache.
    """

    def init(leaves, key, learning_rate=None):
        return init_state(merge_model(static, leaves), optimizer, key, learning_rate)

    return jax.jit(init)


def init_train_state(model, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh :class:`TrainState`, compiled once per (model structure, optimizer).

    Args:
      model: any model of the model protocol (:mod:`jaxlayers.model`).
      optimizer: the optax optimizer (e.g. :func:`~jaxlayers.train.make_optimizer`;
        its state is initialised from the params).
      key: a typed PRNG key, ``jax.random.key(seed)``.

    Raises:
      TypeError: ``model`` lacks the protocol, or is neither a pytree nor hashable.
    """
    check_model(model, "init_train_state")
    static, leaves = split_model(model, "init_train_state")
    # a TrainConfig's optimizer: the compiled init serves every learning rate, so pass this one's
    learning_rate = optimizer.learning_rate if isinstance(optimizer, ConfiguredOptimizer) else None
    return jitted_init(static, optimizer)(leaves, key, learning_rate)


@functools.lru_cache(maxsize=32)
def _jitted_step(static, optimizer):
    def step(leaves, state, x, y, layout=None):
        model = merge_model(static, leaves)
        state, metrics = train_step(model, optimizer, state, x, y, layout)
        count = metrics.count if getattr(model, "sequence_targets", False) else y.shape[0]
        return state, {"loss": metrics.loss, "accuracy": metrics.correct / count}

    return jax.jit(step, donate_argnums=1, static_argnames="layout")


@functools.lru_cache(maxsize=32)
def _jitted_packing(layout: FlatLayout):
    return jax.jit(layout.flatten), jax.jit(layout.unflatten)


class FlatTrainStep:
    """``make_train_step(..., flat=True)``: the step on a packed state (see :class:`FlatLayout`).

    ``flat = step.flatten(state)`` packs a :class:`TrainState` (``init_train_state``'s, a checkpoint's),
    ``flat, metrics = step(flat, x, y)`` steps it (donating it, as the unpacked step does), and
    ``step.unflatten(flat)`` gives the per-array :class:`TrainState` back: same parameters, running
    statistics, optimizer state, step count and key as the unpacked steps give, up to float rounding.
    The step is compiled once per (model structure, optimizer, layout).
    """

    def __init__(self, static, leaves, optimizer) -> None:
        self._fn, self._leaves, self._layout = _jitted_step(static, optimizer), leaves, None

    @property
    def layout(self) -> FlatLayout | None:
        """The layout of the last :meth:`flatten`, or ``None`` before it."""
        return self._layout

    def flatten(self, state: TrainState) -> TrainState:
        """``state`` packed (new buffers; ``state`` stays usable).

        Raises:
          ValueError: ``state``'s parameters have fewer than two small arrays of one dtype (nothing to pack;
            use ``make_train_step(..., flat=False)``), or another structure than an earlier flatten's.
        """
        layout = flat_layout(state)
        if layout is None:
            raise ValueError(
                "make_train_step(flat=True): the state's params must hold at least two arrays of one floating "
                f"dtype of at most FLAT_MAX_SIZE = {FLAT_MAX_SIZE} elements to pack, got {jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), state.params)}"
            )
        if self._layout is not None and layout != self._layout:
            raise ValueError(
                "make_train_step(flat=True): this state's params or optimizer state differ in structure or shape "
                "from the state flattened before; make a new step for it"
            )
        self._layout = layout
        return _jitted_packing(layout)[0](state)

    def unflatten(self, state: TrainState) -> TrainState:
        """The per-array :class:`TrainState` of a packed ``state`` (new buffers)."""
        return _jitted_packing(self._require_layout())[1](state)

    def _require_layout(self) -> FlatLayout:
        if self._layout is None:
            raise ValueError("make_train_step(flat=True): pack the state with step.flatten(state) first")
        return self._layout

    def __call__(self, state: TrainState, x, y):
        return self._fn(self._leaves, state, x, y, layout=self._require_layout())

    def lower(self, state: TrainState, x, y):
        """``jax.jit``'s ``lower`` of the step for these arguments (``.compile().as_text()`` shows its kernels)."""
        return self._fn.lower(self._leaves, state, x, y, layout=self._require_layout())


def make_train_step(model, optimizer: optax.GradientTransformation, *, flat: bool = False):
    """One jit-compiled training step (compiled once per model structure and optimizer).

    Args:
      model: any model of the model protocol (its ``loss`` is differentiated).
      optimizer: an optax optimizer, e.g. from :func:`~jaxlayers.train.make_optimizer`.
      flat: keyword. ``False`` (default): the step takes and returns a :class:`TrainState` of
        per-array pytrees. ``True``: a :class:`FlatTrainStep`, whose state holds the small parameter arrays
        (at most :data:`FLAT_MAX_SIZE` elements) and the optimizer's state for them as one vector
        each (:class:`FlatLayout`; large arrays keep their own buffers), so the optimizer update
        is a few XLA kernels rather than a few per parameter array -- for small
        networks, whose steps are dominated by per-kernel overhead, a faster step. Pack with
        ``step.flatten(state)``, unpack with ``step.unflatten(state)``. Exact (up to float
        rounding) for an optimizer that acts elementwise (all of
        :func:`~jaxlayers.train.make_optimizer`'s, with or without ``clip_norm``); not for one
        that treats parameter arrays differently (``optax.masked``, per-layer trust ratios).

    Returns:
      ``step(state, x, y) -> (new_state, metrics)``: ``x`` a batch the model
      accepts, ``y`` int ``(B,)`` (or ``(B, T)`` for a model with ``sequence_targets``,
      negatives padding); ``metrics`` holds the scalar ``loss`` (data
      loss + L2) and the batch's train-mode ``accuracy`` (per counted label). ``state``'s buffers
      are donated: do not use the ``state`` passed in afterwards.

    Raises:
      TypeError: ``model`` lacks the protocol.
    """
    check_model(model, "make_train_step")
    static, leaves = split_model(model, "make_train_step")
    if flat:
        return FlatTrainStep(static, leaves, optimizer)
    fn = _jitted_step(static, optimizer)
    return functools.partial(fn, leaves)
