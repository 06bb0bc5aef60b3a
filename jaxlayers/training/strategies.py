"""How the one epoch function runs: :class:`SingleDevice`, :class:`ManyModels`, :class:`DataMesh`.

Each strategy compiles :func:`jaxlayers.training.epoch.run_epoch` -- the
same pure function -- with one transform:

* :class:`SingleDevice`: ``jax.jit``.
* :class:`ManyModels`: ``jax.jit(jax.vmap(...))`` over a stack of ``K``
  models' states and traced model leaves (``reg``, ``weight_scale``; the
  learning rate is in each state). Models whose static structure differs
  (``dropout_rate``, He vs an explicit scale, ...) form groups: one vmapped
  sub-program per group, all in the same compiled epoch.
* :class:`DataMesh`: ``jax.jit`` over a device mesh (GSPMD): every minibatch
  and validation batch is sharded over the devices (``constrain``), the
  training set, parameters, running statistics and optimizer state are
  replicated, so batch statistics and gradients are global-batch reductions
  (all-reduces) and the result is the one-device run's up to the order of
  floating-point additions; a one-device mesh is bitwise the plain run.
  Multi-process runs (``jax.distributed``) work the same: every process holds
  the data and places only its devices' shards.

The compiled epochs are cached by an :class:`EpochKey` -- (strategy, model
structure, optimizer spec, steps, batch size, augmentation, host loop or
scan, mesh), each a value a reader can print -- in ``_compiled``, the one
cache of epochs; traced values (learning rate, ``reg``, keys, data) never
enter the key.

On the CPU backend, an epoch of a model with a convolution runs its steps
from a host loop (:func:`use_host_loop`, :class:`_HostLoopEpoch`): XLA:CPU
runs a convolution inside a loop body 10-100x slower than at top level.
Every other epoch is one ``lax.scan``. Both run the same functions
(:func:`~jaxlayers.training.epoch.epoch_start`, ``epoch_step``,
``epoch_end``), but the compiler may round a convolution differently in the
two programs, so the two are not bitwise equal to each other; each is
deterministic, and fit, fit_many, the mesh and resume of one model always
take the same path.

A strategy is created by the loop with the models, then ``place(data)``,
``init(seeds, learning_rates)`` and, per epoch, ``epoch(state, best)``. The
state it hands the loop is opaque; ``to_host`` / ``from_host`` convert it to
and from the layout a checkpoint stores (one model: unstacked; ``K`` models:
stacked in the order given).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlayers._checks import require
from jaxlayers.model import merge_model, split_model
from jaxlayers.parallel import as_auto_mesh, check_batch_size, host_copy, replicate
from jaxlayers.training.config import Augment, optimizer_key, parse_augment
from jaxlayers.training.epoch import (
    Best,
    EpochOutput,
    count_correct,
    epoch_end,
    epoch_start,
    epoch_step,
    pad_eval,
    run_epoch,
)
from jaxlayers.training.state import TrainState, jitted_init

__all__ = ["DataMesh", "EpochKey", "ManyModels", "SingleDevice", "compiled_count", "use_host_loop"]


def _program(kind: str, statics: tuple, fn, axes: tuple, mesh: Mesh | None = None):
    """``fn(model, *args)`` as strategy ``kind`` runs it, as ``program(leaves, *args)``.

    ``"single"``: the one model. ``"mesh"``: the one model, ``fn`` given
    ``constrain=`` (shard a batch over the mesh). ``"many"``: per group of
    models with one static structure, ``jax.vmap`` over the leaves and the
    ``args`` whose entry in ``axes`` is 0 (tuples of per-group stacks; the
    others are shared); the outputs come back as tuples over the groups.
    """
    if kind == "many":

        def many(leaves, *args):
            outs = []
            for g, static in enumerate(statics):
                grouped = [a[g] if ax == 0 else a for a, ax in zip(args, axes, strict=True)]
                one = functools.partial(_merged, fn, static)
                outs.append(jax.vmap(one, in_axes=(0, *axes))(leaves[g], *grouped))
            return tuple(zip(*outs, strict=True))

        return many
    if kind == "mesh":
        batch = NamedSharding(mesh, P(mesh.axis_names))
        fn = functools.partial(fn, constrain=lambda a: jax.lax.with_sharding_constraint(a, batch))
    return functools.partial(_merged, fn, statics[0])


def _c(constrain) -> tuple:
    return () if constrain is None else (constrain,)


def _merged(fn, static, leaves, *args):
    return fn(merge_model(static, leaves), *args)


class _HostLoopEpoch:
    """``epoch(leaves, state, best, X, y, Xv, yv)`` as :func:`run_epoch`'s three parts, each jitted
    (:func:`epoch_start`, :func:`epoch_step` per minibatch from a Python loop, :func:`epoch_end`),
    the state and best donated, the data on device: the same functions as the scanned epoch, with
    every step a top-level program (on XLA:CPU a convolution in a loop body runs 10-100x slower; the
    compiler may round it differently there, so the two paths agree up to rounding, not bitwise)."""

    def __init__(self, kind: str, statics: tuple, optimizer, steps: int, batch_size: int, mesh, augment) -> None:
        self.steps, self.many = steps, kind == "many"

        def start(model, state, X, constrain=None):
            return epoch_start(state, X.shape[0], steps, batch_size)

        def step(model, state, X, y, idx, i, constrain=None):
            return epoch_step(model, optimizer, state, X, y, idx[i], *_c(constrain), augment=augment)

        def end(model, state, best, Xv, yv, constrain=None):
            return epoch_end(model, state, best, Xv, yv, *_c(constrain))

        self._start = jax.jit(_program(kind, statics, start, (0, None), mesh), donate_argnums=1)
        self._step = jax.jit(_program(kind, statics, step, (0, None, None, 0, None), mesh), donate_argnums=1)
        self._end = jax.jit(_program(kind, statics, end, (0, 0, None, None), mesh), donate_argnums=2)

    def __call__(self, leaves, state, best, X, y, Xv, yv):
        state, idx = self._start(leaves, state, X)
        metrics = []
        for i in range(self.steps):
            state, m = self._step(leaves, state, X, y, idx, np.int32(i))
            metrics.append(m)
        best, val_correct, improved = self._end(leaves, state, best, Xv, yv)
        if not self.many:
            loss, correct, count = (jnp.stack(a) for a in zip(*metrics, strict=True))
            return state, best, EpochOutput(loss, correct, val_correct, improved, count)
        outs = tuple(  # per group: (K_g, steps)
            EpochOutput(
                jnp.stack([m[g].loss for m in metrics], axis=-1),
                jnp.stack([m[g].correct for m in metrics], axis=-1),
                val_correct[g],
                improved[g],
                jnp.stack([m[g].count for m in metrics], axis=-1),
            )
            for g in range(len(state))
        )
        return state, best, outs


class EpochKey(NamedTuple):
    """What a compiled epoch is keyed on: every value its program depends on but the traced ones
    (model leaves such as ``reg``, the parameters, states, key, learning rate and data).

    Attributes:
      kind: the strategy, ``"single"``, ``"many"`` or ``"mesh"``.
      models: each group's static model structure (:func:`jaxlayers.model.split_model`: a pytree
        model's treedef, i.e. its class and declaration -- an ``nn.Sequential``'s layers and their
        options -- or a non-pytree model itself, compared by value).
      optimizer: :func:`~jaxlayers.training.config.optimizer_key` of the optimizer: a
        ``TrainConfig``'s optimizer is its :class:`~jaxlayers.training.config.OptimizerSpec` (the
        learning rate is in the optimizer state, not in the program); any other optax
        transformation is itself (by identity).
      steps, batch_size: the epoch's shape.
      augment: the training batches' :class:`~jaxlayers.training.config.Augment`, or ``None``.
      host_loop: the steps run from a host loop (:func:`use_host_loop`) or in one ``lax.scan``.
      mesh: the device mesh of ``"mesh"``, else ``None``.
    """

    kind: str
    models: tuple
    optimizer: Hashable
    steps: int
    batch_size: int
    augment: Augment | None
    host_loop: bool
    mesh: Mesh | None


class _Programs:
    """The compiled epochs by :class:`EpochKey`, the training side's one cache of epochs (inits are
    cached by :func:`jaxlayers.training.state.jitted_init`); ``cache_info().misses`` and
    ``cache_clear()`` as ``functools.lru_cache``'s."""

    def __init__(self, maxsize: int = 16) -> None:
        self._programs: dict[EpochKey, object] = {}
        self.maxsize, self.misses = maxsize, 0

    def __call__(self, key: EpochKey, optimizer):
        """The program of ``key``, built with ``optimizer`` (whose :func:`optimizer_key` is ``key.optimizer``)
        if there is none yet."""
        require(optimizer_key(optimizer) == key.optimizer, "EpochKey", "optimizer does not match key.optimizer")
        if key not in self._programs:
            self.misses += 1
            if len(self._programs) >= self.maxsize:
                self._programs.pop(next(iter(self._programs)))
            self._programs[key] = _build(key, optimizer)
        return self._programs[key]

    def cache_info(self) -> SimpleNamespace:
        return SimpleNamespace(misses=self.misses, currsize=len(self._programs), maxsize=self.maxsize)

    def cache_clear(self) -> None:
        self._programs.clear()
        self.misses = 0


def _build(key: EpochKey, optimizer):
    """``host_loop`` False: :func:`run_epoch` (its steps in one ``lax.scan``) jitted as one program;
    True: :class:`_HostLoopEpoch`."""
    kind, statics, _, steps, batch_size, augment, host_loop, mesh = key
    if host_loop:
        return _HostLoopEpoch(kind, statics, optimizer, steps, batch_size, mesh, augment)

    def epoch(model, state, best, X, y, Xv, yv, constrain=None):
        kw = {} if constrain is None else {"constrain": constrain}
        return run_epoch(
            model, optimizer, state, best, X, y, Xv, yv, steps=steps, batch_size=batch_size, augment=augment, **kw
        )

    program = _program(kind, statics, epoch, (0, 0, None, None, None, None), mesh)
    return jax.jit(program, donate_argnums=(1, 2))


_compiled = _Programs()


def use_host_loop(model, x_shape: tuple, dtype) -> bool:
    """Whether an epoch of ``model`` runs its steps from a host loop rather than in ``lax.scan``: on
    the CPU backend, when its forward pass on a batch ``x_shape`` holds a convolution
    (``conv_general_dilated``), which XLA:CPU runs 10-100x slower inside a loop body than at top level
    (bench/RESULTS.md, "scan_conv"). Elsewhere, and for models without convolutions, one scanned program
    saves the per-step dispatch."""
    if jax.default_backend() != "cpu":
        return False
    params, model_state = jax.eval_shape(model.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct(x_shape, dtype)
    jaxpr = jax.make_jaxpr(lambda p, s, x: model.apply(p, s, x, train=False))(params, model_state, x)
    return _has_primitive(jaxpr.jaxpr, "conv_general_dilated")


def _has_primitive(jaxpr, name: str) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            return True
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            if _has_primitive(sub, name):
                return True
    return False


@functools.lru_cache(maxsize=16)
def compiled_count(static):
    """``count(leaves, params, model_state, X, y)``, jitted: :func:`~jaxlayers.training.epoch.count_correct`
    of the model ``merge_model(static, leaves)`` (``evaluate``'s program)."""

    def count(leaves, params, model_state, X, y):
        return count_correct(merge_model(static, leaves), params, model_state, X, y)

    return jax.jit(count)


def _fresh_best(state) -> Best:
    return Best(
        jax.tree.map(jnp.copy, state.params), jax.tree.map(jnp.copy, state.model_state), jnp.array(-1, jnp.int32)
    )


def _arrays(data) -> list[np.ndarray]:
    return [np.asarray(getattr(data, k)) for k in ("X_train", "y_train")]


class SingleDevice:
    """Train one model on the default device."""

    kind = "single"

    def __init__(
        self, model, optimizer, *, steps: int, batch_size: int, eval_batch_size: int, augment: str | None = None
    ) -> None:
        self.model = model
        self._static, self._leaves = split_model(model)
        self.eval_batch_size = eval_batch_size
        self._init = jitted_init(self._static, optimizer)
        self._optimizer, self._steps, self._batch_size = optimizer, steps, batch_size
        self._augment = parse_augment(augment)

    def _mesh_arg(self):
        return None

    def _put(self, host: np.ndarray, *, rows: bool = False) -> jax.Array:
        return jnp.asarray(host)

    def place(self, data) -> None:
        """Put the training set and the padded validation set on the device(s), once per run."""
        X, y = _arrays(data)
        Xv, yv = pad_eval(data.X_val, data.y_val, self.eval_batch_size, self._multiple())
        self._data = (self._put(X), self._put(y.astype(np.int32)), self._put(Xv, rows=True), self._put(yv, rows=True))
        host_loop = use_host_loop(self.model, Xv.shape[1:], Xv.dtype)
        key = EpochKey(
            self.kind,
            (self._static,),
            optimizer_key(self._optimizer),
            self._steps,
            self._batch_size,
            self._augment,
            host_loop,
            self._mesh_arg(),
        )
        self._epoch = _compiled(key, self._optimizer)

    def _multiple(self) -> int:
        return 1

    def init(self, seeds, learning_rates):
        """``(state, best)`` from the seed and learning rate (one model: lists of one)."""
        state = self._init(self._leaves, jax.random.key(seeds[0]), learning_rates[0])
        self._impl = jax.random.key_impl(state.key)
        return state, _fresh_best(state)

    def epoch(self, state, best):
        """One epoch; the outputs come back as host arrays with a model axis of 1."""
        state, best, out = self._epoch(self._leaves, state, best, *self._data)
        return state, best, jax.tree.map(lambda a: np.asarray(a)[None], self._fetch(out))

    def _fetch(self, tree):
        return jax.device_get(tree)

    def to_host(self, state, best):
        """Host copies: the checkpoint layout (the key as its uint32 key data)."""
        self._impl = jax.random.key_impl(state.key)
        return host_copy((_with_key_data(state), best))

    def from_host(self, state, best):
        return _on_device(state, self._impl), jax.tree.map(jnp.asarray, best)

    def result(self, state, best):
        """The final ``(state, best)`` as ``fit`` returns them."""
        return state, best


def _with_key_data(state: TrainState) -> TrainState:
    return state._replace(key=jax.random.key_data(state.key))


def _on_device(host_state: TrainState, impl) -> TrainState:
    state = jax.tree.map(jnp.asarray, host_state)
    return state._replace(key=jax.random.wrap_key_data(state.key, impl=impl))


class DataMesh(SingleDevice):
    """Train one model data-parallel over the devices of ``mesh`` (see the module docstring).

    Raises:
      TypeError: ``mesh`` is not a ``jax.sharding.Mesh``.
      ValueError: ``batch_size`` is not a multiple of the mesh's device count.
    """

    kind = "mesh"

    def __init__(self, model, optimizer, *, mesh: Mesh, **kw) -> None:
        self.mesh = as_auto_mesh(mesh)
        check_batch_size(self.mesh, kw["batch_size"], "fit: batch_size")
        super().__init__(model, optimizer, **kw)

    def _mesh_arg(self):
        return self.mesh

    def _multiple(self) -> int:
        return self.mesh.devices.size

    def _put(self, host: np.ndarray, *, rows: bool = False) -> jax.Array:
        spec = P(None, self.mesh.axis_names) if rows else P()
        return jax.make_array_from_callback(host.shape, NamedSharding(self.mesh, spec), lambda index: host[index])

    def init(self, seeds, learning_rates):
        state, best = super().init(seeds, learning_rates)
        self._impl = jax.random.key_impl(state.key)
        return replicate((state, best), self.mesh)

    def _fetch(self, tree):
        return host_copy(tree)

    def from_host(self, state, best):
        return replicate(super().from_host(state, best), self.mesh)


class ManyModels:
    """Train ``K`` models at once, vmapped (grouped by static structure; see the module docstring).

    Raises:
      ValueError: models whose parameters or states differ in structure or shape.
    """

    kind = "many"

    def __init__(
        self, models, optimizer, *, steps: int, batch_size: int, eval_batch_size: int, augment: str | None = None
    ) -> None:
        self.models = tuple(models)
        self._augment = parse_augment(augment)
        self.eval_batch_size = eval_batch_size
        split = [split_model(m) for m in self.models]
        statics = list(dict.fromkeys(s for s, _ in split))
        self._members = [[k for k, (s, _) in enumerate(split) if s == st] for st in statics]
        self._leaves = tuple(
            jax.tree.map(lambda *a: jnp.stack([jnp.asarray(v) for v in a]), *[split[k][1] for k in members])
            if split[members[0]][1]
            else []
            for members in self._members
        )
        self._split = split
        self._statics = tuple(statics)
        self._optimizer = optimizer
        self._steps, self._batch_size = steps, batch_size
        self._order = np.array([k for members in self._members for k in members])

    def place(self, data) -> None:
        X, y = _arrays(data)
        Xv, yv = pad_eval(data.X_val, data.y_val, self.eval_batch_size)
        self._data = tuple(jnp.asarray(a) for a in (X, y.astype(np.int32), Xv, yv))
        host_loop = use_host_loop(self.models[0], Xv.shape[1:], Xv.dtype)
        key = EpochKey(
            self.kind,
            self._statics,
            optimizer_key(self._optimizer),
            self._steps,
            self._batch_size,
            self._augment,
            host_loop,
            None,
        )
        self._epoch = _compiled(key, self._optimizer)

    def init(self, seeds, learning_rates):
        """Each model initialised exactly as a separate ``fit`` would (same compiled init), then stacked."""
        states = []
        for k, (static, leaves) in enumerate(self._split):
            init = jitted_init(static, self._optimizer)  # the init fit compiles for this model
            states.append(init(leaves, jax.random.key(seeds[k]), learning_rates[k]))
        self._impl = jax.random.key_impl(states[0].key)
        self._check_same_structure(states)
        state = self._group(jax.tree.map(lambda *a: jnp.stack(a), *states))
        state = tuple(state)
        best = tuple(_fresh_best_stacked(s) for s in state)
        return state, best

    def _check_same_structure(self, states) -> None:
        shapes = [jax.tree.map(lambda a: (a.shape, a.dtype), (s.params, s.model_state)) for s in states]
        for k, s in enumerate(shapes[1:], 1):
            if s != shapes[0]:
                raise ValueError(
                    f"fit_many: model {k} has parameters or running statistics of another structure or shape "
                    "than model 0; fit_many trains models of one architecture"
                )

    def _group(self, stacked):
        """A tuple of per-group stacks from a stack in model order."""
        return tuple(jax.tree.map(lambda a, m=m: a[np.asarray(m)], stacked) for m in self._members)

    def _ungroup(self, groups):
        """The stack in model order (host arrays) from per-group stacks of host arrays."""
        inverse = np.argsort(self._order)
        return jax.tree.map(lambda *a: np.concatenate(a)[inverse], *groups)

    def epoch(self, state, best):
        state, best, out = self._epoch(self._leaves, state, best, *self._data)
        return state, best, self._ungroup(jax.device_get(out))

    def to_host(self, state, best):
        """Host copies in model order: the checkpoint layout (keys as their uint32 key data)."""
        return self._ungroup(host_copy([_with_key_data(s) for s in state])), self._ungroup(host_copy(best))

    def result(self, state, best):
        """The final ``(state, best)`` stacked in model order, on device."""
        host_state, host_best = self.to_host(state, best)
        return _on_device(host_state, self._impl), jax.tree.map(jnp.asarray, host_best)

    def from_host(self, state, best):
        groups = self._group(state)
        return tuple(_on_device(g, self._impl) for g in groups), self._group(jax.tree.map(jnp.asarray, best))


def _fresh_best_stacked(state) -> Best:
    k = jax.tree.leaves(state.params)[0].shape[0]
    return Best(
        jax.tree.map(jnp.copy, state.params), jax.tree.map(jnp.copy, state.model_state), jnp.full((k,), -1, jnp.int32)
    )
