"""Shared argument checks: clear errors at trace time, naming the argument.

Every public op validates its inputs here before anything is traced, so a
wrong shape fails with ``ValueError: <op>: <arg> ...`` and the shapes seen,
never deep inside XLA.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def require(cond: bool, op: str, message: str, exc: type[Exception] = ValueError) -> None:
    """Raise ``exc(f"{op}: {message}")`` unless ``cond``."""
    if not cond:
        raise exc(f"{op}: {message}")


def require_float(x, op: str, name: str) -> None:
    dtype = jnp.result_type(x)
    require(
        jnp.issubdtype(dtype, jnp.floating),
        op,
        f"{name} must have a floating dtype, got {dtype} (shape {shape_of(x)})",
        TypeError,
    )


def require_rank(x, op: str, name: str, rank: int | None = None, min_rank: int | None = None):
    shape = shape_of(x)
    if rank is not None:
        require(len(shape) == rank, op, f"{name} must be {rank}-D, got shape {shape}")
    if min_rank is not None:
        require(
            len(shape) >= min_rank,
            op,
            f"{name} must have at least {min_rank} dimensions, got shape {shape}",
        )


def require_shape(x, op: str, name: str, expected: tuple[int, ...], why: str = "") -> None:
    shape = shape_of(x)
    suffix = f" ({why})" if why else ""
    require(shape == tuple(expected), op, f"{name} must have shape {tuple(expected)}{suffix}, got {shape}")


def require_bool(value, op: str, name: str) -> None:
    require(
        isinstance(value, (bool, np.bool_)),
        op,
        f"{name} must be a Python bool (static under jit), got {value!r} of type {type(value).__name__}",
        TypeError,
    )


def require_real(value, op: str, name: str) -> float:
    require(
        isinstance(value, numbers.Real) and not isinstance(value, bool),
        op,
        f"{name} must be a Python number (static under jit), got {value!r} of type {type(value).__name__}",
        TypeError,
    )
    return float(value)


def require_labels(y, op: str, n: int, name: str = "y") -> None:
    """Labels: integer dtype, shape ``(n,)``."""
    dtype = jnp.result_type(y)
    require(
        jnp.issubdtype(dtype, jnp.integer),
        op,
        f"{name} must have an integer dtype (class indices), got {dtype}",
        TypeError,
    )
    require_shape(y, op, name, (n,), "one label per row of scores")


def check_label_range(y, num_classes: int, op: str, name: str = "y") -> None:
    """Eagerly raise if concrete labels fall outside ``[0, num_classes)``.

    Under ``jit`` the labels are tracers and cannot be inspected; the losses
    then return NaN for out-of-range labels instead (see ``losses.py``).
    """
    if isinstance(y, jax.core.Tracer):
        return
    y_np = np.asarray(y)
    if y_np.size == 0:
        return
    lo, hi = int(y_np.min()), int(y_np.max())
    require(
        lo >= 0 and hi < num_classes,
        op,
        f"{name} holds labels in [{lo}, {hi}] but scores have {num_classes} classes; "
        f"labels must lie in [0, {num_classes})",
    )


def stats_dtype(dtype) -> jnp.dtype:
    """The dtype to accumulate statistics in: at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def int_pair(value) -> tuple[int, int]:
    """An int or a pair of ints -> ``(vertical, horizontal)``; no checks (see :func:`require_int_pair`)."""
    if isinstance(value, tuple | list):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def require_int_pair(value, op: str, name: str, minimum: int) -> tuple[int, int]:
    """A static window parameter (stride, padding, pool size): a Python int or a
    pair of ints, each ``>= minimum``; returns the pair."""
    items = tuple(value) if isinstance(value, tuple | list) else (value, value)
    require(
        len(items) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items),
        op,
        f"{name} must be a Python int or a pair of ints (static under jit), got {value!r}",
        TypeError,
    )
    require(all(v >= minimum for v in items), op, f"{name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])
