"""How to train: :class:`TrainConfig`, its optax optimizer and its learning-rate schedule.

The learning rate's path, from ``TrainConfig.learning_rate`` to the step:
``make_optimizer(config, steps_per_epoch)`` wraps :func:`_transform` in
``optax.inject_hyperparams``, so the base learning rate is an *injected
hyperparameter*: it lives in the optimizer state
(``opt_state.hyperparams["learning_rate"]``), not in the compiled program. A
second run with another learning rate therefore reuses the compiled step, and
``fit_many`` gives every model its own rate by vmapping over the states.
Inside, :func:`learning_rate_schedule` turns that base rate into the optax
schedule of the step size (``constant``, ``exponential`` -- per epoch,
staircase -- or ``cosine``, each with an optional linear warmup); the training
loop reads the history's per-epoch rates from the same function, so the
schedule is written once.

The optimizer :func:`make_optimizer` returns compares (and hashes) equal for
two configurations that differ only in ``learning_rate``: compiled programs
are cached by the model's structure and the optimizer's :class:`OptimizerSpec`,
both visible values.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlayers._checks import check_choice, check_fields, check_int, check_number, optional, require

__all__ = [
    "AUGMENTATIONS",
    "OPTIMIZERS",
    "Augment",
    "SCHEDULES",
    "ConfiguredOptimizer",
    "OptimizerSpec",
    "TrainConfig",
    "parse_augment",
    "learning_rate_of",
    "learning_rate_schedule",
    "make_optimizer",
    "steps_per_epoch",
    "optimizer_key",
    "with_learning_rate",
]

OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "exponential", "cosine")
AUGMENTATIONS = ("shift",)
_OWNER = "TrainConfig"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the model and the data).

    The defaults are ``jaxlayers train``'s, tuned on digits; the CLI reads
    them from here (this is the one place they are set).

    Attributes:
      epochs: passes over the training data, ``>= 1``.
      batch_size: examples per step, ``>= 1`` and at most the training set
        size. Each epoch is ``N_train // batch_size`` steps over a fresh
        random permutation; the remainder of the permutation is skipped.
      optimizer: ``"sgd"``, ``"sgd_momentum"`` (``momentum``),
        ``"rmsprop"`` (decay 0.99, eps 1e-8), ``"adam"`` (0.9, 0.999,
        1e-8) or ``"adamw"`` (adam with decoupled ``weight_decay``); all optax.
        ``fit(..., optimizer=)`` takes any optax ``GradientTransformation``
        instead.
      learning_rate: the base step size, ``> 0`` (traced: changing it
        compiles nothing).
      lr_decay: for ``schedule="exponential"``: multiplies the learning rate
        after every epoch (``optax.exponential_decay``, staircase,
        ``transition_steps`` = steps per epoch), in ``(0, 1]``.
      momentum: for ``sgd_momentum``, in ``[0, 1)``.
      seed: in ``[0, 2**32)``; seeds ``jax.random.key``: initialisation, shuffling and dropout.
        Same seed, same data, same config: bitwise the same result.
      eval_batch_size: batch size of the test-mode validation passes.
      schedule: the step size over training (:func:`learning_rate_schedule`):
        ``"constant"``; ``"exponential"`` (``learning_rate * lr_decay **
        epoch``); ``"cosine"`` (``optax.warmup_cosine_decay_schedule`` from
        ``learning_rate`` to 0 over all ``epochs``: a resume cannot change
        ``epochs`` then).
      warmup_epochs: epochs of linear warmup from 0 to ``learning_rate``
        before the schedule (``optax.linear_schedule``), ``>= 0``, fewer than
        ``epochs``.
      weight_decay: for ``adamw``, the decoupled weight decay (optax's
        ``weight_decay``, applied to every parameter), ``>= 0``.
      clip_norm: clip the gradients to this global norm first
        (``optax.clip_by_global_norm``), ``> 0``; ``None``: no clipping.
      augment: data augmentation of the training minibatches, on device
        (:func:`parse_augment`): ``"shift:K"`` shifts every training image
        ``(C, H, W)`` by a random ``(dy, dx)``, each uniform in ``[-K, K]``
        pixels, filling with zeros (axes of size 1 are not shifted, so a
        ``(1, 1, L)`` signal is shifted along ``L``), or every training
        sequence ``(T, D)`` by a random ``dt`` in ``[-K, K]`` steps along
        ``T``; drawn from the run's
        key, so a seed gives the same run and a resume is bitwise. ``None``
        (or ``"none"``): no augmentation. Validation and test data are never
        augmented.

    Raises:
      TypeError, ValueError: a field of the wrong type or out of range,
        naming it. NumPy scalars are accepted where Python numbers are.
    """

    epochs: int = 80
    batch_size: int = 32
    optimizer: str = "sgd_momentum"
    learning_rate: float = 0.04
    lr_decay: float = 0.97
    momentum: float = 0.9
    seed: int = 0
    eval_batch_size: int = 1024
    schedule: str = "exponential"
    warmup_epochs: int = 0
    weight_decay: float = 1e-4
    clip_norm: float | None = None
    augment: str | None = None

    def __post_init__(self) -> None:
        positive, non_negative = partial(check_int, minimum=1), partial(check_int, minimum=0)
        check_fields(
            self,
            _OWNER,
            epochs=positive,
            batch_size=positive,
            eval_batch_size=positive,
            seed=non_negative,
            optimizer=partial(check_choice, choices=OPTIMIZERS),
            schedule=partial(check_choice, choices=SCHEDULES),
            learning_rate=partial(check_number, low=0.0, low_open=True),
            lr_decay=partial(check_number, low=0.0, high=1.0, low_open=True, what="(1 = no decay)"),
            momentum=partial(check_number, low=0.0, high=1.0, high_open=True),
            warmup_epochs=non_negative,
            weight_decay=partial(check_number, low=0.0),
            clip_norm=optional(partial(check_number, low=0.0, low_open=True, what="(or None)")),
        )
        # jax.random.key keeps only 32 bits of a seed with x64 off: 2**32 would silently equal 0.
        require(self.seed < 2**32, _OWNER, f"seed must be an int in [0, 2**32), got {self.seed}")
        require(
            self.warmup_epochs < self.epochs,
            _OWNER,
            f"warmup_epochs must be fewer than epochs ({self.epochs}), got {self.warmup_epochs}",
        )
        aug = parse_augment(self.augment)
        object.__setattr__(self, "augment", None if aug is None else f"shift:{aug.shift}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)

    def spec(self, steps_per_epoch: int) -> OptimizerSpec:
        """The optimizer this config describes, without its learning rate (see :class:`OptimizerSpec`)."""
        steps = check_int(steps_per_epoch, "make_optimizer", "steps_per_epoch", minimum=1)
        return OptimizerSpec(
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay if self.optimizer == "adamw" else 0.0,
            clip_norm=self.clip_norm,
            schedule=self.schedule,
            lr_decay=self.lr_decay if self.schedule == "exponential" else 1.0,
            warmup_steps=self.warmup_epochs * steps,
            steps_per_epoch=steps,
            total_steps=self.epochs * steps if self.schedule == "cosine" else 0,
        )


class Augment(NamedTuple):
    """A parsed :attr:`TrainConfig.augment` (hashable: compiled epochs are keyed on it).

    Attributes:
      shift: the largest shift, in pixels along each image axis or in steps along a sequence's time
        axis (``>= 1``).
    """

    shift: int


def parse_augment(spec: str | None) -> Augment | None:
    """``"shift:K"`` (``K`` an int ``>= 1``) as ``Augment(shift=K)``; ``None`` or ``"none"``: ``None``.

    Raises:
      ValueError: any other value, naming ``augment`` and the value seen.
    """
    if spec is None or spec == "none":
        return None
    kind, _, k = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    require(
        kind in AUGMENTATIONS and k.isascii() and k.isdigit() and int(k) >= 1,
        _OWNER,
        f"augment (the CLI's --augment) must be 'shift:K' (random shifts of up to K >= 1 pixels or steps) or None, got {spec!r}",
    )
    return Augment(shift=int(k))


class OptimizerSpec(NamedTuple):
    """Everything an optimizer of :func:`make_optimizer` is but its learning rate (hashable).

    Fields that do not act are normalised (``weight_decay`` 0 unless
    ``adamw``, ``lr_decay`` 1 unless ``exponential``, ``total_steps`` 0 unless
    ``cosine``), so configurations that train alike share compiled programs.
    """

    optimizer: str
    momentum: float
    weight_decay: float
    clip_norm: float | None
    schedule: str
    lr_decay: float
    warmup_steps: int
    steps_per_epoch: int
    total_steps: int


def learning_rate_schedule(spec: OptimizerSpec, learning_rate) -> optax.Schedule:
    """The step size of every step: an optax schedule of the step count, from base rate ``learning_rate``.

    ``spec.schedule``: ``"constant"`` (``optax.constant_schedule``),
    ``"exponential"`` (``optax.exponential_decay``: ``learning_rate * lr_decay
    ** (t // steps_per_epoch)``) or ``"cosine"`` (``optax.cosine_decay_schedule``
    from ``learning_rate`` to 0 at ``total_steps``, as
    ``optax.warmup_cosine_decay_schedule``); with ``warmup_steps``, a linear warmup from 0
    (``optax.linear_schedule``) comes first (``optax.join_schedules``). The device's optimizer and the host's
    history both call this function. ``learning_rate`` may be traced.
    """
    warm = spec.warmup_steps
    if spec.schedule == "cosine":  # optax.warmup_cosine_decay_schedule's shape; its pieces take a traced rate
        main = optax.cosine_decay_schedule(learning_rate, max(spec.total_steps - warm, 1))
    elif spec.schedule == "constant":
        main = optax.constant_schedule(learning_rate)
    else:
        main = optax.exponential_decay(learning_rate, spec.steps_per_epoch, spec.lr_decay, staircase=True)
    if warm == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warm), main], [warm])


def _transform(learning_rate, *, spec: OptimizerSpec) -> optax.GradientTransformation:
    """The optax optimizer of ``spec`` with base rate ``learning_rate`` (injected, see the module docstring)."""
    lr = learning_rate_schedule(spec, learning_rate)
    if spec.optimizer == "sgd":
        tx = optax.sgd(lr)
    elif spec.optimizer == "sgd_momentum":
        tx = optax.sgd(lr, momentum=spec.momentum)
    elif spec.optimizer == "rmsprop":
        tx = optax.rmsprop(lr, decay=0.99, eps=1e-8)
    elif spec.optimizer == "adam":
        tx = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    else:
        tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=spec.weight_decay)
    return tx if spec.clip_norm is None else optax.chain(optax.clip_by_global_norm(spec.clip_norm), tx)


@dataclasses.dataclass(frozen=True)
class ConfiguredOptimizer:
    """The optax optimizer of a :class:`TrainConfig` (``init`` and ``update``, as an optax
    ``GradientTransformation``): ``optax.inject_hyperparams(_transform)`` of its ``spec``.

    Equal and hashed by ``spec`` alone: the compiled programs cached per
    (model structure, optimizer) serve every learning rate, which is read
    from the state (``opt_state.hyperparams["learning_rate"]``); ``init``
    puts ``learning_rate`` there.
    """

    spec: OptimizerSpec
    learning_rate: float = dataclasses.field(compare=False)

    def init(self, params):
        return _injected(self.spec, self.learning_rate).init(params)

    def update(self, updates, state, params=None, **extra):
        # the rate in the state, so the update is a function of ``spec`` alone (see optimizer_key)
        return _injected(self.spec, learning_rate_of(state)).update(updates, state, params, **extra)

    def schedule(self) -> optax.Schedule:
        """The step size per step count (:func:`learning_rate_schedule` of this optimizer)."""
        return learning_rate_schedule(self.spec, self.learning_rate)


def _injected(spec: OptimizerSpec, learning_rate) -> optax.GradientTransformation:
    return optax.inject_hyperparams(_transform, static_args=("spec",))(learning_rate=learning_rate, spec=spec)


def optimizer_key(optimizer):
    """What compiled programs are keyed on for ``optimizer`` (hashable, printable).

    A :class:`ConfiguredOptimizer` (a ``TrainConfig``'s): its :class:`OptimizerSpec`, every field
    of the optimizer but the learning rate, which its update reads from the optimizer state; any
    other optax ``GradientTransformation``: the object itself (compared by identity).
    """
    return optimizer.spec if isinstance(optimizer, ConfiguredOptimizer) else optimizer


@functools.lru_cache(maxsize=64)
def _configured(spec: OptimizerSpec, learning_rate: float) -> ConfiguredOptimizer:
    return ConfiguredOptimizer(spec, learning_rate)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """The steps of one epoch: ``n_train // batch_size`` (the last partial batch is dropped; each epoch
    draws a fresh permutation). The one place this is computed (the loop, the memory estimate, the
    checkpoint's metadata check, the metrics file)."""
    return int(n_train) // int(batch_size)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> ConfiguredOptimizer:
    """The optax optimizer ``config`` describes, with its learning-rate schedule.

    Args:
      config: the training configuration (``optimizer``, ``learning_rate``,
        ``schedule``, ``lr_decay``, ``warmup_epochs``, ``momentum``,
        ``weight_decay``, ``clip_norm``; ``epochs`` for the cosine schedule).
      steps_per_epoch: steps between two decays, ``>= 1``.

    Returns:
      A :class:`ConfiguredOptimizer` (the same object for the same
      arguments) whose state holds the base learning rate; the step size of
      step ``t`` is ``learning_rate_schedule(spec, learning_rate)(t)``.
    """
    return _configured(config.spec(steps_per_epoch), config.learning_rate)


def with_learning_rate(opt_state, learning_rate) -> Any:
    """``opt_state`` (of an ``optax.inject_hyperparams`` optimizer, as :func:`make_optimizer`'s) with
    base learning rate ``learning_rate`` (may be traced).

    Raises:
      TypeError: an optimizer state with no injected ``learning_rate`` (an optax optimizer made without
        ``optax.inject_hyperparams``).
    """
    hyper = getattr(opt_state, "hyperparams", None)
    require(
        isinstance(hyper, dict) and "learning_rate" in hyper,
        "fit",
        "per-model learning rates need an optimizer whose state holds the learning rate: "
        "build it with optax.inject_hyperparams, e.g. optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3)",
        TypeError,
    )
    hyper = dict(hyper)
    old = hyper["learning_rate"]
    hyper["learning_rate"] = jnp.asarray(learning_rate, old.dtype).reshape(jnp.shape(old))
    return opt_state._replace(hyperparams=hyper)


def learning_rate_of(opt_state) -> jax.Array:
    """The learning rate held in ``opt_state`` (of an ``optax.inject_hyperparams`` optimizer)."""
    return opt_state.hyperparams["learning_rate"]
