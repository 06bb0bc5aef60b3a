"""Shared argument checks: clear errors at trace time, naming the argument.

Every public op validates its inputs here before anything is traced, so a
wrong shape fails with ``ValueError: <op>: <arg> ...`` and the shapes seen,
never deep inside XLA.

Hostile input, handled once here for every op: :func:`as_array` (array-likes
in, arrays out, or a ``TypeError`` naming the argument), :func:`require_key`
(one PRNG key, not a batch), :func:`check_number` (the one real-number
check: finite static numbers, NumPy scalars included, optionally in an
interval), :func:`int_pair` (the one int-or-pair parser), :func:`check_fields` (the
fields of a configuration dataclass), :func:`require_batch` (``ValueError`` for N = 0 where
the op is undefined), :func:`as_index_labels` (labels widened before they meet
class indices), :func:`compute_dtype` / :func:`mean_scale` (half-precision
arithmetic in float32), :func:`flat_features` (no ``reshape(N, -1)``).
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
    """Raise ``exc(f"{op}: {message}")`` unless ``cond`` (just ``message`` when ``op`` is ``""``)."""
    if not cond:
        raise exc(f"{op}: {message}" if op else message)


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


# --------------------------------------------------------------------------
# Hostile input (issue 12): one mechanism every op calls.
# --------------------------------------------------------------------------

# Arrays passed through unchanged (tracers are jax.Array instances). Scalars:
# ``numbers.Number`` includes NumPy's (NumPy registers np.floating and
# np.integer with the ``numbers`` ABCs; ``np.bool_`` is listed separately).
_ARRAY_TYPES = (jax.Array, np.ndarray)


def as_array(x, op: str, name: str):
    """``x`` as an array the jitted op can take, or a ``TypeError`` naming it.

    Arrays (``jax.Array``, tracers, ``np.ndarray`` of numbers or bools) are
    returned unchanged. Python and NumPy scalars and (nested) lists or tuples
    of numbers are converted once, before tracing, with
    ``jnp.asarray(np.asarray(x))`` -- Python floats become JAX's default float
    dtype (float32 unless x64 is on), as ``jnp.asarray`` makes them; the
    jitted ``custom_vjp`` op only ever sees arrays. Anything else (strings,
    ``None``, dicts, ragged or object lists, lists of tracers) raises
    ``TypeError: <op>: <name> must be an array ..., got <type>`` -- never an
    error that prints the value.
    """
    what = "an array (jax.Array, numpy.ndarray) or a nested list of numbers"
    if isinstance(x, _ARRAY_TYPES) or hasattr(x, "__jax_array__"):
        dtype = getattr(x, "dtype", None)
        if isinstance(x, np.ndarray) and dtype.kind not in "biufc":
            raise TypeError(f"{op}: {name} must be {what}, got a numpy.ndarray of dtype {dtype}")
        return x
    kind = type(x).__name__
    if not isinstance(x, (numbers.Number, np.bool_, list, tuple)):
        raise TypeError(f"{op}: {name} must be {what}, got {kind}")
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists, lists of tracers, ...
        raise TypeError(
            f"{op}: {name} must be {what}, got a {kind} that does not convert ({type(err).__name__})"
        ) from None
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{op}: {name} must be {what}, got a {kind} of {arr.dtype.name} elements")
    return jnp.asarray(arr)


def _is_prng_dtype(dtype) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def require_key(key, op: str, name: str = "key"):
    """A single PRNG key, returned unchanged, or a clear error naming ``name``.

    Accepted: a typed key of shape ``()`` (``jax.random.key(seed)``) or a
    legacy uint32 key of shape ``(2,)`` (``jax.random.PRNGKey(seed)``).
    Raises ``TypeError`` for anything that is not a key and ``ValueError``
    for a batch of keys (``jax.random.split(key, 4)``: map the op over the
    keys with ``jax.vmap`` instead).
    """
    dtype = getattr(key, "dtype", None)
    shape = shape_of(key) if dtype is not None else None
    if dtype is not None and _is_prng_dtype(dtype):
        require(
            shape == (),
            op,
            f"{name} must be a single PRNG key (shape ()), got a key array of shape {shape}; "
            "to use one key per example, jax.vmap the op over the keys",
        )
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and shape[-1:] == (2,):
        require(
            shape == (2,),
            op,
            f"{name} must be a single PRNG key (a legacy uint32 key has shape (2,)), got a uint32 key array "
            f"of shape {shape}; to use one key per example, jax.vmap the op over the keys",
        )
        return key
    raise TypeError(
        f"{op}: {name} must be a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got "
        f"{type(key).__name__} with dtype {dtype} and shape {shape}"
    )


def compute_dtype(*arrays) -> jnp.dtype:
    """The dtype an op's arithmetic runs in: the arguments' promoted floating
    dtype, but at least float32. bfloat16/float16 inputs are computed (forward
    statistics and every backward product, sum and ``1/N`` factor) in float32
    and each result is cast to its primal's dtype once, at the end."""
    return stats_dtype(jnp.result_type(*arrays))


def mean_scale(n: int, dtype) -> jax.Array:
    """``1/n`` as a 0-d array in ``compute_dtype(dtype)``: the mean factor,
    never rounded to a half-precision input dtype (at N = 1e5, float16's
    ``1/N`` is subnormal and off by ~0.6%)."""
    return jnp.asarray(1.0 / n, stats_dtype(dtype))


def require_batch(x, op: str, name: str, what: str) -> None:
    """``ValueError`` when ``x`` has an empty leading (batch) axis, for ops
    whose result is undefined on N = 0 (``what``: "the mean loss")."""
    shape = shape_of(x)
    require(
        len(shape) == 0 or shape[0] > 0,
        op,
        f"{what} over an empty batch is undefined: {name} has shape {shape}",
    )


def label_index_dtype(dtype) -> jnp.dtype:
    """The dtype labels are compared and indexed in: int32, or int64 for
    64-bit labels (x64 on). Narrow labels (int8, uint8, int16, uint16) widen
    exactly; uint32 / uint64 values too large for the signed type wrap to
    negative numbers, which are out of range anyway (NaN under ``jit``). Never
    ``jnp.arange(C, dtype=uint8)``, which wraps class 256 to 0."""
    return jnp.dtype(jnp.int64) if np.dtype(dtype).itemsize == 8 else jnp.dtype(jnp.int32)


def as_index_labels(y: jax.Array) -> jax.Array:
    """``y`` cast to :func:`label_index_dtype` -- call inside the op (forward
    and reference) before any comparison with class indices."""
    return y.astype(label_index_dtype(y.dtype))


def flat_features(shape: tuple[int, ...]) -> int:
    """``d1 * ... * dk`` for a shape ``(N, d1, ..., dk)``; use with
    ``x.reshape(N, D)``, never ``x.reshape(N, -1)``, which is ambiguous (a
    ``ZeroDivisionError``) when N = 0."""
    d = 1
    for s in shape[1:]:
        d *= int(s)
    return d


# ---------------------------------------------------------------------------
# Configuration values (models, TrainConfig, Distributed, the command line's
# flags): the same idiom as the ops -- ``require(cond, owner, message)`` -- so
# every error reads ``<Owner>: <field> must ..., got <value>``. Each check
# returns the normalised value; a frozen dataclass applies them with
# :func:`check_fields`, the CLI's argparse types call them (``owner`` "").
# NumPy scalars are accepted wherever a Python number is.
# ---------------------------------------------------------------------------


def is_int(value) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral | np.integer) and not isinstance(value, bool | np.bool_)


def is_real(value) -> bool:
    """A Python or NumPy real number, not a bool."""
    return isinstance(value, numbers.Real | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_fields(obj, owner: str, **checks) -> None:
    """Check and normalise fields of a frozen dataclass, in its ``__post_init__``: the one way configurations
    (models, :class:`~jaxlayers.train.TrainConfig`, :class:`~jaxlayers.parallel.Distributed`) check theirs.

    Each ``name=check`` sets ``obj.name = check(obj.name, owner, name)``, in order: ``check`` is one of this
    module's checks, with its options bound (``functools.partial(check_int, minimum=1)``), which raises naming
    ``owner`` and the field and returns the normalised value; :func:`optional` lets ``None`` through.
    """
    for name, check in checks.items():
        object.__setattr__(obj, name, check(getattr(obj, name), owner, name))


def optional(check):
    """``check`` that lets ``None`` through (for :func:`check_fields`: ``clip_norm=optional(...)``)."""
    return lambda value, owner, name: None if value is None else check(value, owner, name)


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

    The one real-number check of ops (``rate``, ``eps``, ``momentum``: static
    under ``jit``), models and configurations. Python and NumPy numbers pass;
    bools, strings and arrays (``jnp.float32(0.5)`` too) do not.

    Raises:
      TypeError: not a real number: ``<owner>: <name> must be a Python number ...,
        got <value> of type <type>``.
      ValueError: inf, NaN or outside the interval: ``<owner>: <name> must be a
        finite number <interval>, got <value>``.

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
    what = f" {what}" if what else ""
    message = f"{name} must be a finite number{interval}{what}, got {value!r}"
    static = " (a jax.Array cannot be static under jit)" if isinstance(value, jax.Array) else ""
    require(
        is_real(value),
        owner,
        f"{name} must be a Python number{interval}{what}, got {value!r} of type {type(value).__name__}{static}",
        TypeError,
    )
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    require(ok, owner, message)
    return v


def check_choice(value, owner: str, name: str, choices):
    """``value``; raise unless it is one of ``choices``. Where ``None`` is a choice, the text ``"none"`` (any
    case, as the command line spells it) is read as ``None``: the one place that conversion is made."""
    choices = tuple(choices)
    if None in choices and isinstance(value, str) and value.lower() == "none":
        value = None
    require(
        value in choices,
        owner,
        f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}",
    )
    return value


def check_ints(value, owner: str, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``tuple(value)`` of Python ints; raise unless ``value`` is a sequence (not a string) of ints
    ``>= minimum``, naming the entry (``hidden_dims[1]``)."""
    require(
        not isinstance(value, str | bytes) and hasattr(value, "__iter__"),
        owner,
        f"{name} must be a sequence of ints >= {minimum}, got {value!r}",
        TypeError,
    )
    return tuple(check_int(v, owner, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value))


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


def int_pair(value, owner: str, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """``(a, a)`` from an int ``a``, ``(a, b)`` from a pair: the one parser of 2-D sizes, strides and paddings.

    Equinox's ``_ntuple(2)`` with the checks: used by the ops (``stride``,
    ``padding``, ``pool_size``), the models (``filter_size``, ``pool_size``)
    and the command line (``--filter-size 1,5``).

    Args:
      value: a Python or NumPy int (not a bool), a tuple or list of two, or
        command-line text: ``"3"``, ``"1,5"`` or ``"1x5"``.
      owner: the op, class or function checking (the message's prefix; ``""``: none).
      name: the argument's name, for the message.
      minimum: the smallest allowed entry (1 for sizes and strides, 0 for padding).

    Returns:
      ``(vertical, horizontal)`` as Python ints.

    Raises:
      TypeError: ``<owner>: <name> must be a Python int or a pair of ints, got <value>``.
      ValueError: ``<owner>: <name> must be >= <minimum>, got <value>`` (``... in each
        entry`` for a pair).

    Example:
      >>> int_pair(3, "conv2d", "stride"), int_pair([1, 5], "ConvNet", "filter_size"), int_pair("1x5", "", "K")
      ((3, 3), (1, 5), (1, 5))
    """
    items = value
    if isinstance(value, str):
        try:
            items = tuple(int(t) for t in value.replace("x", ",").split(","))
        except ValueError:
            items = None
        if items is not None and len(items) == 1:
            items = items[0]
    single = is_int(items)
    if single:
        items = (items, items)
    elif isinstance(items, tuple | list) and len(items) == 2 and all(is_int(v) for v in items):
        items = tuple(items)
    else:
        kind = (
            " (text: K, KH,KW or KHxKW)"
            if isinstance(value, str)
            else ""
            if isinstance(value, tuple | list)
            else f" of type {type(value).__name__}"
        )
        require(False, owner, f"{name} must be a Python int or a pair of ints, got {value!r}{kind}", TypeError)
    each = "" if single else " in each entry"
    require(all(v >= minimum for v in items), owner, f"{name} must be >= {minimum}{each}, got {value!r}")
    return int(items[0]), int(items[1])


#: The image layouts the convolutional ops take: channels first (the NumPy
#: original's) and channels last (XLA's CPU kernels').
DATA_FORMATS = ("NCHW", "NHWC")


def check_data_format(value, op: str) -> str:
    """``value`` if it is ``"NCHW"`` or ``"NHWC"``; else ``ValueError: <op>: data_format must be
    one of 'NCHW', 'NHWC', got <value>`` (static: a Python string, checked before tracing)."""
    require(
        isinstance(value, str) and value in DATA_FORMATS,
        op,
        f"data_format must be one of {', '.join(map(repr, DATA_FORMATS))}, got {value!r}",
    )
    return value


def channel_axis(data_format: str) -> int:
    """The channel axis of a 4-D image batch: 1 for ``"NCHW"``, 3 for ``"NHWC"``."""
    return 1 if data_format == "NCHW" else 3


def spatial_axes(data_format: str) -> tuple[int, int]:
    """The ``(H, W)`` axes of a 4-D image batch: ``(2, 3)`` for ``"NCHW"``, ``(1, 2)`` for ``"NHWC"``."""
    return (2, 3) if data_format == "NCHW" else (1, 2)
