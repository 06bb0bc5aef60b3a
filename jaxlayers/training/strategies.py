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

The compiled programs are cached by (strategy, model structure, optimizer,
steps, batch size[, mesh]) in :func:`_compiled`, the one cache of the training
side; traced values never enter the key.

A strategy is created by the loop with the models, then ``place(data)``,
``init(seeds, learning_rates)`` and, per epoch, ``epoch(state, best)``. The
state it hands the loop is opaque; ``to_host`` / ``from_host`` convert it to
and from the layout a checkpoint stores (one model: unstacked; ``K`` models:
stacked in the order given).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlayers.model import merge_model, split_model
from jaxlayers.parallel import as_auto_mesh, check_batch_size, host_copy, replicate
from jaxlayers.training.epoch import Best, count_correct, pad_eval, run_epoch
from jaxlayers.training.state import TrainState, jitted_init

__all__ = ["DataMesh", "ManyModels", "SingleDevice", "compiled_count"]


@functools.lru_cache(maxsize=16)
def _compiled(kind: str, statics: tuple, optimizer, steps: int, batch_size: int, mesh: Mesh | None = None):
    """The jitted epoch of one strategy: the training side's compile cache for epochs (inits are
    cached by :func:`jaxlayers.training.state.jitted_init`, shared with ``init_train_state``)."""

    def one(static, leaves, state, best, X, y, Xv, yv, constrain=None):
        kw = {} if constrain is None else {"constrain": constrain}
        return run_epoch(
            merge_model(static, leaves), optimizer, state, best, X, y, Xv, yv, steps=steps, batch_size=batch_size, **kw
        )

    if kind == "single":

        def epoch(leaves, state, best, X, y, Xv, yv):
            return one(statics[0], leaves, state, best, X, y, Xv, yv)

    elif kind == "many":

        def epoch(leaves, state, best, X, y, Xv, yv):
            outs = [
                jax.vmap(functools.partial(one, static), in_axes=(0, 0, 0, None, None, None, None))(
                    leaves[g], state[g], best[g], X, y, Xv, yv
                )
                for g, static in enumerate(statics)
            ]
            return tuple(zip(*outs, strict=True))

    else:  # mesh
        batch = NamedSharding(mesh, P(mesh.axis_names))

        def constrain(a):
            return jax.lax.with_sharding_constraint(a, batch)

        def epoch(leaves, state, best, X, y, Xv, yv):
            return one(statics[0], leaves, state, best, X, y, Xv, yv, constrain)

    return jax.jit(epoch, donate_argnums=(1, 2))


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

    def __init__(self, model, optimizer, *, steps: int, batch_size: int, eval_batch_size: int) -> None:
        self.model = model
        self._static, self._leaves = split_model(model)
        self.eval_batch_size = eval_batch_size
        self._init = jitted_init(self._static, optimizer)
        self._epoch = _compiled(self.kind, (self._static,), optimizer, steps, batch_size, *self._mesh_arg())

    def _mesh_arg(self) -> tuple:
        return ()

    def _put(self, host: np.ndarray, *, rows: bool = False) -> jax.Array:
        return jnp.asarray(host)

    def place(self, data) -> None:
        """Put the training set and the padded validation set on the device(s), once per run."""
        X, y = _arrays(data)
        Xv, yv = pad_eval(data.X_val, data.y_val, self.eval_batch_size, self._multiple())
        self._data = (self._put(X), self._put(y.astype(np.int32)), self._put(Xv, rows=True), self._put(yv, rows=True))

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

    def __init__(self, model, optimizer, *, steps: int, batch_size: int, eval_batch_size: int, mesh: Mesh) -> None:
        self.mesh = as_auto_mesh(mesh)
        check_batch_size(self.mesh, batch_size, "fit: batch_size")
        super().__init__(model, optimizer, steps=steps, batch_size=batch_size, eval_batch_size=eval_batch_size)

    def _mesh_arg(self) -> tuple:
        return (self.mesh,)

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

    def __init__(self, models, optimizer, *, steps: int, batch_size: int, eval_batch_size: int) -> None:
        self.models = tuple(models)
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
        self._epoch = _compiled(self.kind, self._statics, optimizer, steps, batch_size)
        self._order = np.array([k for members in self._members for k in members])

    def place(self, data) -> None:
        X, y = _arrays(data)
        Xv, yv = pad_eval(data.X_val, data.y_val, self.eval_batch_size)
        self._data = tuple(jnp.asarray(a) for a in (X, y.astype(np.int32), Xv, yv))

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
