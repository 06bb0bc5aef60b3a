"""How to train: :class:`TrainConfig` and the optax optimizer it names.

The learning rate is an optax *injected hyperparameter*
(``optax.inject_hyperparams``): it lives in the optimizer state
(``opt_state.hyperparams["learning_rate"]``), not in the compiled program, so
a second run with another learning rate reuses the compiled step, and
``fit_many`` gives every model its own learning rate by vmapping over the
state. The per-epoch decay is an ``optax.exponential_decay`` schedule
(staircase) of that base rate.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxlayers._checks import check_choice, check_int, check_number, require

__all__ = ["OPTIMIZERS", "TrainConfig", "learning_rate_of", "make_optimizer", "with_learning_rate"]

OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam")
_OWNER = "TrainConfig"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the model and the data).

    The defaults are ``jaxlayers train``'s, tuned on digits; the CLI reads
    them from here.

    Attributes:
      epochs: passes over the training data, ``>= 1``.
      batch_size: examples per step, ``>= 1`` and at most the training set
        size. Each epoch is ``N_train // batch_size`` steps over a fresh
        random permutation; the remainder of the permutation is skipped.
      optimizer: ``"sgd"``, ``"sgd_momentum"`` (``momentum``),
        ``"rmsprop"`` (decay 0.99, eps 1e-8) or ``"adam"`` (0.9, 0.999,
        1e-8); all optax.
      learning_rate: the initial step size, ``> 0`` (traced: changing it
        compiles nothing).
      lr_decay: multiplies the learning rate after every epoch (an optax
        ``exponential_decay`` schedule, staircase, ``transition_steps`` = steps
        per epoch), in ``(0, 1]``.
      momentum: for ``sgd_momentum``, in ``[0, 1)``.
      seed: in ``[0, 2**32)``; seeds ``jax.random.key``: initialisation, shuffling and dropout.
        Same seed, same data, same config: bitwise the same result.
      eval_batch_size: batch size of the test-mode validation passes.

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

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            object.__setattr__(self, name, check_int(getattr(self, name), _OWNER, name, minimum=1))
        seed = check_int(self.seed, _OWNER, "seed", minimum=0)
        # jax.random.key keeps only 32 bits of a seed with x64 off: 2**32 would silently equal 0.
        require(seed < 2**32, _OWNER, f"seed must be an int in [0, 2**32), got {seed}")
        object.__setattr__(self, "seed", seed)
        check_choice(self.optimizer, _OWNER, "optimizer", OPTIMIZERS)
        lr = check_number(self.learning_rate, _OWNER, "learning_rate", low=0.0, low_open=True)
        object.__setattr__(self, "learning_rate", lr)
        decay = check_number(self.lr_decay, _OWNER, "lr_decay", low=0.0, high=1.0, low_open=True, what="(1 = no decay)")
        object.__setattr__(self, "lr_decay", decay)
        object.__setattr__(
            self, "momentum", check_number(self.momentum, _OWNER, "momentum", low=0.0, high=1.0, high_open=True)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dataclasses.asdict(self)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (from 0): ``learning_rate * lr_decay ** epoch``."""
        return self.learning_rate * self.lr_decay**epoch


def _transform(learning_rate, *, optimizer: str, momentum: float, lr_decay: float, steps_per_epoch: int):
    schedule = optax.exponential_decay(
        init_value=learning_rate, transition_steps=steps_per_epoch, decay_rate=lr_decay, staircase=True
    )
    if optimizer == "sgd":
        return optax.sgd(schedule)
    if optimizer == "sgd_momentum":
        return optax.sgd(schedule, momentum=momentum)
    if optimizer == "rmsprop":
        return optax.rmsprop(schedule, decay=0.99, eps=1e-8)
    return optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)


@functools.lru_cache(maxsize=64)
def _optimizer(optimizer: str, momentum: float, lr_decay: float, steps_per_epoch: int, learning_rate: float):
    return optax.inject_hyperparams(_transform, static_args=("optimizer", "momentum", "lr_decay", "steps_per_epoch"))(
        learning_rate=learning_rate,
        optimizer=optimizer,
        momentum=momentum,
        lr_decay=lr_decay,
        steps_per_epoch=steps_per_epoch,
    )


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int, *, learning_rate: float | None = None
) -> optax.GradientTransformation:
    """The optax optimizer ``config.optimizer`` with per-epoch learning-rate decay.

    The same arguments return the same object (cached), so
    :func:`~jaxlayers.training.state.init_train_state` and
    :func:`~jaxlayers.training.state.make_train_step`, which compile once per
    (model, optimizer), compile once per configuration.

    Args:
      config: the training configuration.
      steps_per_epoch: steps between two decays, ``>= 1``.
      learning_rate: replaces ``config.learning_rate`` as the initial value
        in the state (:func:`with_learning_rate` changes it later).

    Returns:
      An ``optax.inject_hyperparams`` transformation whose state holds the
      base learning rate; the step size of step ``t`` is ``learning_rate *
      lr_decay ** (t // steps_per_epoch)``.
    """
    steps = check_int(steps_per_epoch, "make_optimizer", "steps_per_epoch", minimum=1)
    lr = config.learning_rate if learning_rate is None else float(learning_rate)
    return _optimizer(config.optimizer, config.momentum, config.lr_decay, steps, lr)


def with_learning_rate(opt_state, learning_rate) -> Any:
    """``opt_state`` (of :func:`make_optimizer`) with base learning rate ``learning_rate`` (may be traced)."""
    hyper = dict(opt_state.hyperparams)
    old = hyper["learning_rate"]
    hyper["learning_rate"] = jnp.asarray(learning_rate, old.dtype).reshape(jnp.shape(old))
    return opt_state._replace(hyperparams=hyper)


def learning_rate_of(opt_state) -> jax.Array:
    """The base learning rate held in ``opt_state`` (of :func:`make_optimizer`)."""
    return opt_state.hyperparams["learning_rate"]
