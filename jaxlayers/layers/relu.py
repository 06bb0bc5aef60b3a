"""Rectified linear unit: ``out = max(x, 0)`` with ``relu'(0) = 0``.

Source of the maths: the NumPy original's ``relu_forward`` / ``relu_backward``
(``dx = dout * (x > 0)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlayers._checks import as_array, require_float
from jaxlayers._oprule import custom_op

__all__ = ["relu", "relu_reference", "relu_fwd", "relu_bwd", "check_relu"]


def _keep(x: jax.Array) -> jax.Array:
    # ``not (x <= 0)`` rather than ``x > 0``: identical for numbers, but a NaN
    # input is kept (and propagates) instead of being silently zeroed.
    return jnp.logical_not(x <= 0)


def relu_reference(x: jax.Array) -> jax.Array:
    """Plain-``jnp`` ReLU. ``jnp.where`` (not ``jnp.maximum``, whose JAX
    derivative at 0 is 0.5) pins the NumPy original's subgradient ``relu'(0) = 0``."""
    return jnp.where(_keep(x), x, jnp.zeros((), x.dtype))


def relu_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward pass; the residual is the boolean mask ``x > 0`` (1 byte/element)."""
    keep = _keep(x)
    return jnp.where(keep, x, jnp.zeros((), x.dtype)), keep


def relu_bwd(mask: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    """Backward pass: ``dx = g * (x > 0)``, as the NumPy original."""
    return (jnp.where(mask, g, jnp.zeros((), g.dtype)),)


_relu = custom_op(relu_reference, relu_fwd, relu_bwd)


def check_relu(x):
    """``x`` as an array (:func:`~jaxlayers._checks.as_array`), or the error :func:`relu` raises."""
    x = as_array(x, "relu", "x")
    require_float(x, "relu", "x")
    return x


def relu(x: jax.Array) -> jax.Array:
    """ReLU with a hand-derived backward pass.

    Args:
      x: any shape, floating dtype.

    Returns:
      ``max(x, 0)``, same shape and dtype as ``x``; NaN stays NaN. Empty
      input (N = 0) gives an empty output, and an empty gradient.

    Raises:
      TypeError: if ``x`` is not floating point, or is neither an array nor a
        (nested) list of numbers (lists and NumPy scalars are converted with
        ``jnp.asarray`` before tracing).

    Backward (``custom_vjp``): ``dx = g * (x > 0)``, so ``relu'(0) = 0`` as in
    the NumPy original. Residual: a boolean mask (1 byte per element), not a float copy
    of ``x`` (4 bytes in float32). The backward pass is a select, exact in
    every dtype (half precision included).

    Source: the NumPy original's ``relu_forward`` / ``relu_backward``.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.relu(jnp.array([-1.0, 0.0, 2.0]))
      Array([0., 0., 2.], dtype=float32)
    """
    x = check_relu(x)
    return _relu(x)
