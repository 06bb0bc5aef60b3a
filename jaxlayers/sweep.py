"""Many models trained at once: :func:`fit_many`, one compiled program per epoch.

A sweep trains ``K`` networks of one architecture that differ in any of
``seed``, ``weight_scale``, ``learning_rate``, ``dropout_rate`` and ``reg``.
Each model runs exactly :func:`jaxlayers.train.fit`'s epoch
(:func:`jaxlayers.train.make_epoch_fn`: shuffle, ``lax.scan`` over the
minibatches, test-mode accuracy), ``jax.vmap``-ped over the stack of the
models' :class:`~jaxlayers.train.TrainState`; the whole sweep's epoch is one
jit-compiled call, and the data are on device once, shared by every model.

How each swept setting reaches the vmapped program:

* ``seed``: the per-model PRNG key, a batched array. It seeds the
  initialisation, the data order and the dropout masks exactly as in
  :func:`~jaxlayers.train.fit`: **the data order is per model**, drawn from
  the model's own key, so models with the same seed see the same order.
* ``weight_scale``: used only by the initialisation. Every model is
  initialised (vmapped) by a unit-scale network and its weight matrices are
  multiplied by the model's standard deviation (``weight_scale``, or He's
  ``sqrt(2 / fan_in)`` for ``None``), a traced ``(K, L)`` array; the product
  is bitwise :meth:`FullyConnectedNet.init`'s.
* ``learning_rate``: a traced per-model scalar given to
  :func:`~jaxlayers.train.make_optimizer` (the schedule and the optimizer are
  built inside the vmapped function).
* ``reg``: a traced per-model scalar; the loss adds ``reg * 0.5 * sum_i
  sum(Wi**2)``. When all models of a group (below) share one ``reg`` it stays
  static in the network, as in ``fit``.
* ``dropout_rate``: static (it fixes how many random bits each mask element
  reads, see :mod:`jaxlayers.layers.dropout`). Models are **grouped by
  rate**: each distinct rate is one vmapped sub-program over the models that
  share it, and all groups run in the same compiled epoch, one after another.

Each model's result equals a separate ``fit`` with its settings up to
float32 rounding: a batched matmul may sum in another order than a single
one, so parameters agree to float32 tolerance, not bit for bit (about
``1e-7`` after a few epochs in the tests; ``1e-16`` in float64). Two cases
look worse after many steps, for any two summation orders, ``fit`` and
``fit_many`` included:

* Training that amplifies rounding -- batchnorm after weights of scale
  ``1e-4``, whose first steps are huge next to the weights -- drifts apart in
  float32 after tens of steps (in float64, runs at scales ``4e-4`` and
  ``1e-3`` stay within ``1e-11`` over 250 steps; at ``1e-4`` even float64
  drifts after about 100).
* A bias just before batchnorm has a zero gradient in exact arithmetic, so
  its gradient is rounding noise, which ``adam`` and ``rmsprop`` normalise
  into steps of the size of the learning rate: that bias (and the running
  mean that follows it) differs by ``O(learning_rate)``. It cancels in train
  mode and moves test-mode scores slightly. Under ``sgd`` and
  ``sgd_momentum`` the noise stays noise-sized.

:func:`grid` turns lists into the Cartesian product :func:`fit_many` takes.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers.models import FullyConnectedNet
from jaxlayers.train import (
    FitResult,
    History,
    TrainConfig,
    TrainState,
    _check_data,
    init_train_state,
    make_epoch_fn,
    make_optimizer,
)

__all__ = ["SWEPT", "SweepHistory", "SweepReport", "SweepResult", "fit_many", "grid"]

SWEPT = ("seeds", "weight_scales", "learning_rates", "dropout_rates", "regs")


def grid(**lists: Sequence) -> dict[str, list]:
    """The Cartesian product of per-setting lists, as :func:`fit_many`'s keyword arguments.

    Args:
      **lists: any of ``seeds, weight_scales, learning_rates, dropout_rates,
        regs``, each a sequence of values.

    Returns:
      The same keys, each a list of ``prod(len(v))`` values; the last key
      varies fastest. ``grid(dropout_rates=[0, 0.5], seeds=[0, 1])`` is
      ``{"dropout_rates": [0, 0, 0.5, 0.5], "seeds": [0, 1, 0, 1]}``.

    Raises:
      ValueError: an unknown key or no lists.
    """
    unknown = sorted(set(lists) - set(SWEPT))
    if unknown or not lists:
        raise ValueError(f"grid: give lists for some of {', '.join(SWEPT)}; got {unknown or 'none'}")
    rows = list(itertools.product(*(list(v) for v in lists.values())))
    return {name: [row[i] for row in rows] for i, name in enumerate(lists)}


@dataclasses.dataclass
class SweepHistory:
    """What :func:`fit_many` records, one row per model (in the order given).

    Attributes:
      loss: float64 ``(K, epochs * steps_per_epoch)``, every step's training
        loss (data + L2); ``nan``/``inf`` from the step a model diverged on.
      train_acc, val_acc: float64 ``(K, epochs)``, test-mode accuracy on the
        whole training / validation set after each epoch.
      lr: float64 ``(K, epochs)``, each epoch's learning rate.
      epoch_time_s: wall seconds of each epoch of the whole sweep (the first
        includes compilation), length ``epochs``.
    """

    loss: np.ndarray
    train_acc: np.ndarray
    val_acc: np.ndarray
    lr: np.ndarray
    epoch_time_s: list[float]


class SweepReport(NamedTuple):
    """Passed to :func:`fit_many`'s ``callback`` after each epoch.

    ``epoch`` counts from 1; ``loss`` (the epoch's mean step loss),
    ``train_acc`` and ``val_acc`` are float64 arrays of shape ``(K,)``.
    """

    epoch: int
    epochs: int
    loss: np.ndarray
    train_acc: np.ndarray
    val_acc: np.ndarray
    epoch_time_s: float


@dataclasses.dataclass
class SweepResult:
    """What :func:`fit_many` returns; model ``k`` is the ``k``-th value of every swept list.

    Attributes:
      nets: ``K`` networks, the base network with each model's
        ``weight_scale``, ``dropout_rate`` and ``reg``.
      configs: ``K`` training configurations, the base one with each model's
        ``seed`` and ``learning_rate``.
      state: the final :class:`~jaxlayers.train.TrainState` of every model,
        stacked: each leaf has a leading axis of size ``K``.
      best_params, best_model_state: stacked likewise, each model's
        parameters and running statistics at its best validation accuracy
        (the later epoch on ties, as ``fit``).
      best_val_acc: float64 ``(K,)``; best_epoch: int ``(K,)``, from 1.
      history: the :class:`SweepHistory`.
      steps_per_epoch: optimizer steps per epoch.
    """

    nets: tuple[FullyConnectedNet, ...]
    configs: tuple[TrainConfig, ...]
    state: TrainState
    best_params: dict
    best_model_state: dict
    best_val_acc: np.ndarray
    best_epoch: np.ndarray
    history: SweepHistory
    steps_per_epoch: int

    def __len__(self) -> int:
        return len(self.nets)

    @property
    def finite(self) -> np.ndarray:
        """bool ``(K,)``: the model's loss stayed finite at every step (``fit`` would not have raised)."""
        return np.all(np.isfinite(self.history.loss), axis=1)

    def settings(self, k: int) -> dict[str, Any]:
        """Model ``k``'s swept values: ``seed, weight_scale, learning_rate, dropout_rate, reg``."""
        net, config = self.nets[k], self.configs[k]
        return {
            "seed": config.seed,
            "weight_scale": net.weight_scale,
            "learning_rate": config.learning_rate,
            "dropout_rate": net.dropout_rate,
            "reg": net.reg,
        }

    def table(self) -> str:
        """A plain-text table, one row per model: its swept settings, the last epoch's mean
        loss and accuracies, and the best validation accuracy with its epoch."""
        spe = self.steps_per_epoch
        head = f"{'k':>3} {'seed':>5} {'w_scale':>8} {'lr':>9} {'dropout':>7} {'reg':>8} | "
        head += f"{'loss':>9} {'train':>6} {'val':>6} {'best val':>8} {'@ep':>4}"
        lines = [head, "-" * len(head)]
        for k in range(len(self)):
            st = self.settings(k)
            ws = "He" if st["weight_scale"] is None else f"{st['weight_scale']:.2e}"
            loss = float(np.mean(self.history.loss[k, -spe:]))
            lines.append(
                f"{k:>3} {st['seed']:>5} {ws:>8} {st['learning_rate']:>9.3g} {st['dropout_rate']:>7.3g} "
                f"{st['reg']:>8.2g} | {loss:>9.4g} {self.history.train_acc[k, -1]:>6.3f} "
                f"{self.history.val_acc[k, -1]:>6.3f} {self.best_val_acc[k]:>8.3f} {self.best_epoch[k]:>4}"
            )
        return "\n".join(lines)

    def fit_result(self, k: int) -> FitResult:
        """Model ``k`` as the :class:`~jaxlayers.train.FitResult` a separate ``fit`` returns.

        ``history.epoch_time_s`` is the whole sweep's (the models share each epoch).

        Raises:
          IndexError: ``k`` outside ``[-K, K)``.
        """
        k = range(len(self))[k]
        h = self.history
        pick = functools.partial(jax.tree.map, lambda a: a[k])
        return FitResult(
            state=pick(self.state),
            best_params=pick(self.best_params),
            best_model_state=pick(self.best_model_state),
            best_val_acc=float(self.best_val_acc[k]),
            best_epoch=int(self.best_epoch[k]),
            history=History(
                loss=[float(v) for v in h.loss[k]],
                train_acc=[float(v) for v in h.train_acc[k]],
                val_acc=[float(v) for v in h.val_acc[k]],
                lr=[float(v) for v in h.lr[k]],
                epoch_time_s=list(h.epoch_time_s),
            ),
            start_epoch=0,
            steps_per_epoch=self.steps_per_epoch,
        )


@dataclasses.dataclass(frozen=True)
class _TracedRegNet:
    """A network whose L2 strength is a traced scalar: ``net`` (built with
    ``reg=0``) plus ``reg * 0.5 * sum_i sum(Wi**2)``, the same penalty and
    rounding as ``FullyConnectedNet(reg=...)``. Used only inside
    :func:`fit_many`'s vmapped epoch, where ``make_epoch_fn`` calls its
    ``loss`` and ``apply``."""

    net: FullyConnectedNet
    reg: jax.Array

    def apply(self, *args, **kwargs):
        return self.net.apply(*args, **kwargs)

    def loss(self, params, state, x, y, *, key=None):
        loss, aux = self.net.loss(params, state, x, y, key=key)
        unit = dataclasses.replace(self.net, reg=1.0)
        return loss + self.reg * unit.l2_penalty(params).astype(loss.dtype), aux


class _Group(NamedTuple):
    """Models ``start:stop`` (in the internal, group-contiguous order) share ``net``;
    ``traced_reg``: their ``reg`` differs and comes in as an array."""

    start: int
    stop: int
    net: FullyConnectedNet
    traced_reg: bool


def _sweep_values(name: str, values, k_given: dict) -> list | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"fit_many: {name} must be a sequence of per-model values, got {type(values).__name__}")
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    if not values:
        raise ValueError(f"fit_many: {name} is empty; give one value per model")
    k_given[name] = len(values)
    return values


@functools.lru_cache(maxsize=8)
def _compiled(
    net: FullyConnectedNet,
    groups: tuple[_Group, ...],
    config: TrainConfig,
    steps_per_epoch: int,
):
    """The jitted init (one model), stacking and sweep epoch, cached by their static configuration.

    The models are initialised one by one by a single compiled unit-scale
    init (vmapping it would compile the Threefry draws for the whole stack,
    about twice as long, to save a few milliseconds of running).
    """
    init_net = dataclasses.replace(net, weight_scale=1.0, dropout_rate=0.0, reg=0.0)
    init_optimizer = make_optimizer(config, steps_per_epoch)  # the learning rate does not enter the state
    init_fn = jax.jit(functools.partial(init_train_state, init_net, init_optimizer))

    def stack(states, stds):
        state = jax.tree.map(lambda *a: jnp.stack(a), *states)
        params = dict(state.params)
        for i in range(1, net.num_layers + 1):
            params[f"W{i}"] = params[f"W{i}"] * stds[:, i - 1, None, None]  # std * N(0, 1): bitwise net.init's
        return state._replace(params=params, opt_state=jax.vmap(init_optimizer.init)(params))

    def epoch(state, best, best_correct, lrs, regs, X_train, y_train, X_val, y_val):
        outs = []
        for g in groups:

            def one(st, lr, reg, X_train, y_train, X_val, y_val, g=g):
                optimizer = make_optimizer(config, steps_per_epoch, learning_rate=lr)
                model = _TracedRegNet(g.net, reg) if g.traced_reg else g.net
                run = make_epoch_fn(
                    model,
                    optimizer,
                    batch_size=config.batch_size,
                    steps_per_epoch=steps_per_epoch,
                    eval_batch_size=config.eval_batch_size,
                )
                return run(st, X_train, y_train, X_val, y_val)

            part = jax.tree.map(lambda a, g=g: a[g.start : g.stop], (state, lrs, regs))
            outs.append(jax.vmap(one, in_axes=(0, 0, 0, None, None, None, None))(*part, X_train, y_train, X_val, y_val))
        state, metrics, train_correct, val_correct = (
            outs[0] if len(outs) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
        )
        better = val_correct >= best_correct  # ties: the later, better-trained epoch, as fit

        def keep(new, old):
            return jnp.where(better.reshape(-1, *([1] * (new.ndim - 1))), new, old)

        best = jax.tree.map(keep, (state.params, state.model_state), best)
        best_correct = jnp.where(better, val_correct, best_correct)
        return state, best, best_correct, metrics["loss"], train_correct, val_correct

    return init_fn, jax.jit(stack), jax.jit(epoch, donate_argnums=(0, 1))


def fit_many(
    net: FullyConnectedNet,
    data,
    config: TrainConfig | None = None,
    *,
    seeds: Sequence[int] | None = None,
    weight_scales: Sequence[float | None] | None = None,
    learning_rates: Sequence[float] | None = None,
    dropout_rates: Sequence[float] | None = None,
    regs: Sequence[float] | None = None,
    callback: Callable[[SweepReport], None] | None = None,
) -> SweepResult:
    """Train ``K`` variants of ``net`` at once, one compiled program per epoch, vmapped over the models.

    Model ``k`` is ``net`` with ``weight_scales[k]``, ``dropout_rates[k]``
    and ``regs[k]``, trained with ``config`` with ``seeds[k]`` and
    ``learning_rates[k]``; a list not given takes ``net``'s or ``config``'s
    value for every model. Each model's result equals ``fit(net_k, data,
    config_k)`` to float32 tolerance: the same initialisation, data order
    (per model, from its seed), dropout masks, steps, accuracies and best
    epoch. See the module docstring for how each setting is swept; in short,
    seeds, weight scales, learning rates and regs are traced per-model
    arrays, and models are grouped by dropout rate (one vmapped sub-program
    per distinct rate, all in one compiled epoch).

    Unlike ``fit``, a model whose loss turns non-finite is not an error: its
    history holds ``nan``/``inf`` from that step on, :attr:`SweepResult.finite`
    is ``False`` for it, and the other models train on. There are no
    checkpoints; a sweep is short, rerun it.

    Args:
      net: the base network (architecture, normalization, loss, dtype are
        shared by all models).
      data: a :class:`jaxlayers.data.Dataset` (or anything with ``X_train,
        y_train, X_val, y_val``): features ``(N, input_dim)``, int labels.
      config: the base :class:`~jaxlayers.train.TrainConfig` (epochs, batch
        size, optimizer, decay, momentum are shared); ``None``: the defaults.
      seeds: ints, one per model.
      weight_scales: positive floats or ``None`` (He init), one per model.
      learning_rates: floats ``> 0``, one per model.
      dropout_rates: floats in ``[0, 1)``, one per model.
      regs: floats ``>= 0``, one per model.
      callback: called with a :class:`SweepReport` after every epoch.

    Returns:
      A :class:`SweepResult`; ``result.fit_result(k)`` is model ``k`` as a
      :class:`~jaxlayers.train.FitResult`.

    Raises:
      ValueError: no list given, lists of different lengths, an empty list,
        a value ``FullyConnectedNet`` or ``TrainConfig`` rejects (the message
        names the field), or data that disagree with the network (as ``fit``).
      TypeError: ``net``/``config`` of the wrong type, a list that is not a
        sequence.

    Example:
      >>> import jaxlayers as jl
      >>> ds = jl.data.load("digits")
      >>> net = jl.FullyConnectedNet(hidden_dims=(64,), input_dim=64, num_classes=10)
      >>> sweep = jl.train.fit_many(net, ds, jl.train.TrainConfig(epochs=3),
      ...                           learning_rates=[0.01, 0.03, 0.1])
      >>> sweep.history.val_acc.shape
      (3, 3)
    """
    if not isinstance(net, FullyConnectedNet):
        raise TypeError(f"fit_many: net must be a FullyConnectedNet, got {type(net).__name__}")
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit_many: config must be a TrainConfig, got {type(config).__name__}")
    given: dict[str, int] = {}
    swept = {
        name: _sweep_values(name, values, given)
        for name, values in zip(SWEPT, (seeds, weight_scales, learning_rates, dropout_rates, regs), strict=True)
    }
    if not given:
        raise ValueError(f"fit_many: give at least one of {', '.join(SWEPT)} (one value per model)")
    if len(set(given.values())) > 1:
        raise ValueError(f"fit_many: the swept lists must have one length, got {given}")
    K = next(iter(given.values()))

    def value(name: str, k: int, default):
        return default if swept[name] is None else swept[name][k]

    nets, configs = [], []
    for k in range(K):
        try:
            nets.append(
                dataclasses.replace(
                    net,
                    weight_scale=value("weight_scales", k, net.weight_scale),
                    dropout_rate=value("dropout_rates", k, net.dropout_rate),
                    reg=value("regs", k, net.reg),
                )
            )
            configs.append(
                dataclasses.replace(
                    config,
                    seed=value("seeds", k, config.seed),
                    learning_rate=value("learning_rates", k, config.learning_rate),
                )
            )
        except (ValueError, TypeError) as e:
            raise type(e)(f"fit_many: model {k}: {e}") from e
    _check_data(net, data, config)

    # Group by dropout rate (static); internally the models are ordered group by group.
    rates = list(dict.fromkeys(n.dropout_rate for n in nets))
    order = [k for r in rates for k in range(K) if nets[k].dropout_rate == r]
    groups, start = [], 0
    for r in rates:
        members = [k for k in order if nets[k].dropout_rate == r]
        group_regs = {nets[k].reg for k in members}
        traced = len(group_regs) > 1
        gnet = dataclasses.replace(net, weight_scale=None, dropout_rate=r, reg=0.0 if traced else group_regs.pop())
        groups.append(_Group(start, start + len(members), gnet, traced))
        start += len(members)

    n_train = int(np.shape(data.X_train)[0])
    n_val = int(np.shape(data.X_val)[0])
    steps_per_epoch = n_train // config.batch_size
    base_net = dataclasses.replace(net, weight_scale=None, dropout_rate=0.0, reg=0.0)
    base_config = dataclasses.replace(config, epochs=1, seed=0, learning_rate=1.0)
    init_fn, stack_fn, epoch_fn = _compiled(base_net, tuple(groups), base_config, steps_per_epoch)

    dims = net.layer_dims
    stds = np.array(
        [
            [n.weight_scale if n.weight_scale is not None else math.sqrt(2.0 / dims[i]) for i in range(net.num_layers)]
            for n in (nets[k] for k in order)
        ],
        dtype=net.dtype,
    )
    # float32 even with x64 on, as in fit: optax's step count is int32, so the schedule's decay power is
    # float32, and fit's Python-float learning rate adopts that dtype.
    lrs = jnp.asarray([configs[k].learning_rate for k in order], jnp.float32)
    regs_arr = jnp.asarray([nets[k].reg for k in order], net.dtype)
    # Each model's key and unit-scale init exactly as fit's: init_train_state(key(seed)).
    state = stack_fn([init_fn(jax.random.key(configs[k].seed)) for k in order], jnp.asarray(stds))
    best = jax.tree.map(jnp.copy, (state.params, state.model_state))
    best_correct = jnp.full((K,), -1, jnp.int32)
    arrays = [jnp.asarray(getattr(data, k)) for k in ("X_train", "y_train", "X_val", "y_val")]

    E = config.epochs
    loss = np.empty((K, E * steps_per_epoch))
    train_acc, val_acc, best_val_acc = np.empty((K, E)), np.empty((K, E)), np.full(K, -1.0)
    best_epoch = np.zeros(K, dtype=np.int64)
    epoch_times: list[float] = []
    for epoch in range(E):
        t0 = time.perf_counter()
        state, best, best_correct, losses, train_correct, val_correct = epoch_fn(
            state, best, best_correct, lrs, regs_arr, *arrays
        )
        losses, train_correct, val_correct = jax.device_get((losses, train_correct, val_correct))
        loss[order, epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch] = losses
        train_acc[order, epoch] = train_correct / n_train
        val_acc[order, epoch] = val_correct / n_val
        improved = val_acc[:, epoch] >= best_val_acc
        best_val_acc[improved] = val_acc[improved, epoch]
        best_epoch[improved] = epoch + 1
        epoch_times.append(time.perf_counter() - t0)
        if callback is not None:
            window = loss[:, epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
            callback(
                SweepReport(epoch + 1, E, window.mean(axis=1), train_acc[:, epoch], val_acc[:, epoch], epoch_times[-1])
            )

    inverse = np.argsort(order)
    if not np.array_equal(order, np.arange(K)):
        state, best = jax.tree.map(lambda a: a[inverse], (state, best))
    lr_decay = np.asarray([config.lr_decay**e for e in range(E)])
    return SweepResult(
        nets=tuple(nets),
        configs=tuple(configs),
        state=state,
        best_params=best[0],
        best_model_state=best[1],
        best_val_acc=best_val_acc,
        best_epoch=best_epoch,
        history=SweepHistory(
            loss=loss,
            train_acc=train_acc,
            val_acc=val_acc,
            lr=np.asarray([[c.learning_rate * d for d in lr_decay] for c in configs]),
            epoch_time_s=epoch_times,
        ),
        steps_per_epoch=steps_per_epoch,
    )
