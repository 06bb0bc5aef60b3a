"""Shared argument checks: clear errors at trace time, naming the argument.

Every public op validates its inputs here before anything is traced, so a
wrong shape fails with ``ValueError: <op>: <arg> ...`` and the shapes seen,
never deep inside XLA.
"""

from __future__ import annotations

import math
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


# ---------------------------------------------------------------------------
# Configuration values (models, TrainConfig, Distributed): the same idiom as the
# ops -- ``require(cond, owner, message)`` -- so every error reads
# ``<Owner>: <field> must ..., got <value>``. NumPy scalars are accepted
# wherever a Python number is.
# ---------------------------------------------------------------------------


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral | np.integer) and not isinstance(value, bool | np.bool_)


def is_real(value) -> bool:
    """A Python or NumPy real number, not a bool."""
    return isinstance(value, numbers.Real | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_int(value, owner: str, name: str, *, minimum: int | None = None) -> int:
    """``int(value)``; raise unless ``value`` is an integer ``>= minimum``."""
    bound = f" >= {minimum}" if minimum is not None else ""
    require(is_int(value), owner, f"{name} must be an int{bound}, got {value!r}", TypeError)
    require(minimum is None or value >= minimum, owner, f"{name} must be an int{bound}, got {value!r}")
    return int(value)


def check_number(
    value,
    owner: str,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "",
) -> float:
    """``float(value)``; raise unless ``value`` is a finite real number in the given interval.

    ``what`` (e.g. ``"(1 = no decay)"``) is appended to the message.
    """
    if low is not None and high is not None:
        interval = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        interval = f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        interval = f" {'<' if high_open else '<='} {high:g}"
    else:
        interval = ""
    message = f"{name} must be a finite number{interval}{' ' + what if what else ''}, got {value!r}"
    require(is_real(value), owner, message, TypeError)
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    require(ok, owner, message)
    return v


def check_choice(value, owner: str, name: str, choices) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    require(
        value in tuple(choices),
        owner,
        f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}",
    )


def check_instance(value, owner: str, name: str, cls, hint: str = "") -> None:
    """Raise ``TypeError`` unless ``isinstance(value, cls)``."""
    names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
    require(
        isinstance(value, cls),
        owner,
        f"{name} must be a {names}{hint}, got {type(value).__name__}",
        TypeError,
    )


def check_float_dtype(dtype, owner: str, name: str = "dtype") -> np.dtype:
    """``np.dtype(dtype)``; raise unless it is a floating dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    require(
        dt is not None and jnp.issubdtype(dt, jnp.floating),
        owner,
        f"{name} must be a floating dtype such as 'float32', got {dtype!r}",
        TypeError,
    )
    return dt


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
