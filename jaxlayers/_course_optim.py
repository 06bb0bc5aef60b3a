"""The course's first-order update rules (its ``optim.py``), on NumPy arrays.

Re-exported by :mod:`jaxlayers.compat` (as functions and as the namespace
``compat.optim``); :class:`jaxlayers.compat.Solver` looks an ``update_rule``
name up here.

Every rule has the course's signature ``rule(w, dw, config=None) -> (next_w,
config)``: ``w`` and ``dw`` are NumPy arrays of one shape, ``config`` a dict
of hyperparameters and of the rule's state (``velocity``, ``cache``, ``m``,
``v``, ``t``), filled with the defaults on first use and returned (the same
dict, updated). The state arrays have ``w``'s shape and dtype; a float64
``w`` is updated in float64.

They stay NumPy, one parameter at a time, because the course's ``Solver``
keeps its parameters and per-parameter configs as NumPy arrays in dicts, and
its notebooks check these exact formulas (the momentum velocity includes the
learning rate; RMSProp's and Adam's ``epsilon`` is added to the square root,
not under it -- ``optax.rmsprop`` adds it under the root). For JAX training
use :func:`jaxlayers.train.fit`, whose optimizers are optax's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adam", "rmsprop", "sgd", "sgd_momentum"]


def _check(rule: str, w, dw) -> None:
    if np.shape(w) != np.shape(dw):
        raise ValueError(f"{rule}: w and dw must have the same shape, got w {np.shape(w)} and dw {np.shape(dw)}")


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: ``w -= learning_rate * dw``.

    Args:
      w: NumPy array of weights (updated IN PLACE, as the course's ``sgd``
        does, and returned).
      dw: gradient of the loss with respect to ``w``, same shape.
      config: dict; ``learning_rate`` (default ``1e-2``).

    Returns:
      ``(w, config)``.

    Raises:
      ValueError: ``w`` and ``dw`` of different shapes.
    """
    if config is None:
        config = {}
    _check("sgd", w, dw)
    config.setdefault("learning_rate", 1e-2)
    w -= config["learning_rate"] * dw
    return w, config


def sgd_momentum(w, dw, config=None):
    """Stochastic gradient descent with momentum.

    ``v = momentum * v - learning_rate * dw``; ``next_w = w + v``.

    Args:
      w, dw: NumPy arrays of one shape (``w`` is not modified).
      config: dict; ``learning_rate`` (``1e-2``), ``momentum`` (``0.9``; 0
        is plain SGD), ``velocity`` (``v``, default zeros like ``w``).

    Returns:
      ``(next_w, config)`` with ``config['velocity']`` the new ``v``.

    Raises:
      ValueError: ``w`` and ``dw`` of different shapes.
    """
    if config is None:
        config = {}
    _check("sgd_momentum", w, dw)
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    v = config.get("velocity", np.zeros_like(w))
    v = config["momentum"] * v - config["learning_rate"] * dw
    next_w = w + v
    config["velocity"] = v
    return next_w, config


def rmsprop(w, dw, config=None):
    """RMSProp: a moving average of squared gradients sets per-parameter step sizes.

    ``cache = decay_rate * cache + (1 - decay_rate) * dw**2``;
    ``next_w = w - learning_rate * dw / (sqrt(cache) + epsilon)``.

    Args:
      w, dw: NumPy arrays of one shape (``w`` is not modified).
      config: dict; ``learning_rate`` (``1e-2``), ``decay_rate`` (``0.99``),
        ``epsilon`` (``1e-8``), ``cache`` (default zeros like ``w``).

    Returns:
      ``(next_w, config)`` with ``config['cache']`` updated.

    Raises:
      ValueError: ``w`` and ``dw`` of different shapes.
    """
    if config is None:
        config = {}
    _check("rmsprop", w, dw)
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("cache", np.zeros_like(w))
    cache = config["decay_rate"] * config["cache"] + (1 - config["decay_rate"]) * dw**2
    next_w = w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"])
    config["cache"] = cache
    return next_w, config


def adam(w, dw, config=None):
    """Adam: moving averages of the gradient and its square, bias-corrected.

    ``t += 1``; ``m = beta1 m + (1 - beta1) dw``; ``v = beta2 v + (1 - beta2) dw**2``;
    ``next_w = w - learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)``.

    Args:
      w, dw: NumPy arrays of one shape (``w`` is not modified).
      config: dict; ``learning_rate`` (``1e-3``, the course's default for
        Adam), ``beta1`` (``0.9``), ``beta2`` (``0.999``), ``epsilon``
        (``1e-8``), ``m`` and ``v`` (default zeros like ``w``), ``t`` (the
        step count, default 0; incremented before use, as the course).

    Returns:
      ``(next_w, config)`` with ``m``, ``v``, ``t`` updated.

    Raises:
      ValueError: ``w`` and ``dw`` of different shapes.
    """
    if config is None:
        config = {}
    _check("adam", w, dw)
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("m", np.zeros_like(w))
    config.setdefault("v", np.zeros_like(w))
    config.setdefault("t", 0)
    beta1, beta2 = config["beta1"], config["beta2"]
    config["t"] += 1
    t = config["t"]
    m = beta1 * config["m"] + (1 - beta1) * dw
    v = beta2 * config["v"] + (1 - beta2) * dw**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    next_w = w - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"])
    config["m"], config["v"] = m, v
    return next_w, config
