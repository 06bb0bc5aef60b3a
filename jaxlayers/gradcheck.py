"""Gradient checking: finite differences, relative error, and a three-way VJP report.

For every op this compares three gradients of ``<f(args), cotangent>``:

* ``custom``   -- the hand-derived ``custom_vjp`` rule (``jax.vjp`` of the op);
* ``autodiff`` -- ``jax.vjp`` of the op's plain-``jnp`` reference;
* ``numeric``  -- central finite differences of the op's forward pass.

All in float64: :func:`check_vjp` and :func:`main` switch JAX's x64 mode on
inside a ``jax.enable_x64(True)`` context, so importing jaxlayers never
changes the global setting. Run ``jaxlayers gradcheck`` for the table.

Source: ``rel_error`` and the central-difference gradient are the NumPy original
ecosystem's ``rel_error`` / ``eval_numerical_gradient_array`` (CS231n).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers.opinfo import OPS, OpInfo, Sample, get_opinfo

__all__ = [
    "TOLERANCES",
    "ArgReport",
    "check_vjp",
    "main",
    "norm_rel_error",
    "numerical_gradient",
    "rel_error",
    "report",
]

#: Default pass/fail tolerances of the report (float64, max relative error).
TOLERANCES = {"custom_vs_autodiff": 1e-9, "custom_vs_numeric": 1e-7, "autodiff_vs_numeric": 1e-7}


def _float64_pair(x, y, who: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{who}: shapes differ, {x.shape} vs {y.shape}")
    return x, y


def rel_error(x, y) -> float:
    """Max elementwise relative error ``|x - y| / max(1e-8, |x| + |y|)``.

    The NumPy original's ``rel_error``; 0 for two empty arrays. NaN anywhere
    (in one argument but not the other) gives ``inf``.
    """
    x, y = _float64_pair(x, y, "rel_error")
    if x.size == 0:
        return 0.0
    both_nan = np.isnan(x) & np.isnan(y)
    err = np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))
    err = np.where(both_nan, 0.0, err)
    err = np.where(np.isnan(err), np.inf, err)
    return float(np.max(err))


def norm_rel_error(x, y, scale: float | None = None) -> float:
    """Normwise relative error ``max|x - y| / scale``, ``scale = max(max|x|, max|y|)`` by default.

    The right yardstick for finite differences, whose absolute error is set by
    the scale of the whole function, not of each element: the elementwise
    :func:`rel_error` of a gradient element that is 1e-12 by chance measures
    only that round-off. Pass ``scale`` to measure against a larger whole (the
    gradient with respect to all arguments, say). 0 when the scale is 0;
    NaN anywhere gives ``inf``.
    """
    x, y = _float64_pair(x, y, "norm_rel_error")
    if x.size == 0:
        return 0.0
    if np.isnan(x).any() or np.isnan(y).any():
        return float("inf")
    if scale is None:
        scale = max(np.max(np.abs(x)), np.max(np.abs(y)))
    return 0.0 if scale == 0 else float(np.max(np.abs(x - y)) / scale)


def numerical_gradient(f: Callable[[Any], Any], x, cotangent=None, *, h: float = 1e-4) -> np.ndarray:
    """Finite-difference gradient of ``sum(f(x) * cotangent)`` with respect to ``x``.

    Fourth-order central differences::

        grad[i] = (-F(x + 2h e_i) + 8 F(x + h e_i) - 8 F(x - h e_i) + F(x - 2h e_i)) / (12 h)

    where ``F = sum(f(.) * cotangent)``. The truncation error is O(h**4), so
    ``h`` can be large enough that float64 round-off in ``F`` (about
    ``1e-16 * |F| / h``) stays small; it still grows with ``|F|``, so inputs
    with large offsets lose digits here that the analytic rules do not.
    Keep ``x`` at least ``2 h`` away from kinks. All ``4 * x.size``
    evaluations run as ``jax.vmap``-ed calls in one jit-compiled program, so ``f``
    must be a JAX-traceable function of one array. Use float64 (inside ``jax.enable_x64(True)``).

    Args:
      f: function of one array returning an array (or scalar).
      x: the point, any shape, floating dtype.
      cotangent: weights for ``f``'s output, same shape as ``f(x)``;
        ``None`` means ones (plain ``sum``).
      h: step, in the units of ``x``.

    Returns:
      NumPy array of ``x``'s shape.

    Raises:
      ValueError: if ``cotangent``'s shape differs from ``f(x)``'s.
    """
    x = jnp.asarray(x)
    out = jax.eval_shape(f, x)
    ct = jnp.ones(out.shape, out.dtype) if cotangent is None else jnp.asarray(cotangent, out.dtype)
    if ct.shape != out.shape:
        raise ValueError(f"numerical_gradient: cotangent shape {ct.shape} != output shape {out.shape}")

    # One compiled program (run op by op, the shifts, products and sums were ~10 small compiles per call).
    central_differences = jax.jit(lambda x, ct: _central_differences(f, x, ct, h))
    return np.asarray(central_differences(x, ct)).reshape(x.shape)


def _central_differences(f, x, ct, h):
    """:func:`numerical_gradient`'s formula, traceable: all ``4 * x.size`` evaluations of ``f`` ``vmap``-ed."""
    basis = (jnp.eye(x.size, dtype=x.dtype) * h).reshape((x.size, *x.shape))
    F = jax.vmap(lambda xp: jnp.sum(f(xp) * ct))
    # One vmap over the four shifts (one copy of f in the program: a quarter of the compile time).
    Fs = F(jnp.concatenate([x + 2 * basis, x + basis, x - basis, x - 2 * basis])).reshape(4, x.size)
    return (-Fs[0] + 8 * Fs[1] - 8 * Fs[2] + Fs[3]) / (12 * h)


@dataclass(frozen=True)
class ArgReport:
    """Errors for one differentiable argument (float64).

    ``custom_vs_autodiff`` is the elementwise :func:`rel_error` (the NumPy original's,
    the strictest); the two comparisons with finite differences use
    :func:`norm_rel_error` relative to the largest element of the gradient
    with respect to all arguments, since finite differences carry an absolute
    error set by the function's scale. ``custom_vs_numeric`` and ``autodiff_vs_numeric`` are ``None`` when the
    sample sits on a kink (finite differences are not defined there).
    """

    op: str
    sample: str
    argument: int
    custom_vs_autodiff: float
    custom_vs_numeric: float | None
    autodiff_vs_numeric: float | None

    def ok(self, tolerances: dict[str, float] = TOLERANCES) -> bool:
        return all(
            v is None or v <= tolerances[k]
            for k, v in (
                ("custom_vs_autodiff", self.custom_vs_autodiff),
                ("custom_vs_numeric", self.custom_vs_numeric),
                ("autodiff_vs_numeric", self.autodiff_vs_numeric),
            )
        )


def _to_float64(a):
    if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating):
        return a.astype(jnp.float64)
    if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
        return jnp.asarray(a, jnp.float64)
    if isinstance(a, tuple) and hasattr(a, "_fields"):  # NamedTuple state
        return type(a)(*(_to_float64(v) for v in a))
    return a


def _check(info: OpInfo, sample: Sample, *, numeric: bool, h: float) -> list[ArgReport]:
    sample = Sample(sample.name, tuple(_to_float64(a) for a in sample.args), sample.kwargs, sample.smooth)
    f_custom = info.bind(sample)
    f_ref = info.bind(sample, reference=True)
    primals = tuple(info.diff_args(sample))
    out = jax.eval_shape(f_custom, *primals)
    ct = jnp.asarray(np.random.RandomState(0).randn(*out.shape), out.dtype)

    # The two VJPs, and the finite differences of every argument, each in one compiled program: run op by op,
    # the reference's primitives and the differences of each argument were many small compiles per sample.
    @jax.jit
    def vjps(primals, ct):
        _, vjp_custom = jax.vjp(f_custom, *primals)
        _, vjp_ref = jax.vjp(f_ref, *primals)
        return vjp_custom(ct), vjp_ref(ct)

    @jax.jit
    def differences(primals, ct):
        def f_k(a, k):
            return f_custom(*primals[:k], a, *primals[k + 1 :])

        return tuple(
            _central_differences(functools.partial(f_k, k=k), x, ct, h).reshape(x.shape) for k, x in enumerate(primals)
        )

    g_custom, g_ref = vjps(primals, ct)
    g_nums: list[np.ndarray | None] = [None] * len(primals)
    if numeric and sample.smooth:
        g_nums = [np.asarray(g) for g in differences(primals, ct)]
    # Finite differences are judged against the scale of the whole gradient.
    scale = max((float(np.max(np.abs(np.asarray(g)), initial=0.0)) for g in g_ref), default=0.0)
    rows = []
    for k, i in enumerate(info.diff_argnums):
        g_num = g_nums[k]
        rows.append(
            ArgReport(
                info.name,
                sample.name,
                i,
                rel_error(g_custom[k], g_ref[k]),
                None if g_num is None else norm_rel_error(g_custom[k], g_num, scale),
                None if g_num is None else norm_rel_error(g_ref[k], g_num, scale),
            )
        )
    return rows


def check_vjp(
    op: Callable[..., Any],
    *args: Any,
    reference: Callable[..., Any] | None = None,
    argnums: tuple[int, ...] | None = None,
    output: Callable[[Any], Any] | None = None,
    numeric: bool = True,
    h: float = 1e-4,
    **kwargs: Any,
) -> list[ArgReport]:
    """Compare ``op``'s custom VJP with autodiff of its reference and with finite differences.

    Everything runs in float64 (floating arguments are cast; x64 is switched
    on for the duration of the call only). The cotangent is a fixed standard
    normal draw of the output's shape, so no structural zero hides an error.

    Args:
      op: a jaxlayers op (registered in :data:`jaxlayers.opinfo.OPS`) or any
        function, then with ``reference=``.
      *args: the op's positional arguments.
      reference: the plain-``jnp`` reference; looked up in the registry if
        omitted.
      argnums: the differentiable positions; by default the registry's, else
        every floating array argument.
      output: picks the differentiable output (default: the registry's, else
        the whole result).
      numeric: also compare with central differences (skip on kinks).
      h: finite-difference step (see :func:`numerical_gradient`).
      **kwargs: the op's static keyword arguments (``train=``, ``rate=``...).

    Returns:
      One :class:`ArgReport` per differentiable argument.

    Raises:
      KeyError: ``op`` unregistered and no ``reference`` given.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> rows = jl.gradcheck.check_vjp(jl.relu, jnp.array([[-1.0, 2.0]]))
      >>> rows[0].custom_vs_autodiff
      0.0
    """
    with jax.enable_x64(True):
        if reference is None:
            info = get_opinfo(op)
            info = OpInfo(
                info.name,
                op,
                info.reference,
                argnums if argnums is not None else info.diff_argnums,
                info.samples,
                output if output is not None else info.output,
            )
        else:
            if argnums is None:
                argnums = tuple(
                    i
                    for i, a in enumerate(args)
                    if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating) and a.ndim > 0
                )
            info = OpInfo(
                getattr(op, "__name__", "op"),
                op,
                reference,
                argnums,
                lambda dtype: [],
                output if output is not None else (lambda o: o),
            )
        return _check(info, Sample("given", tuple(args), dict(kwargs)), numeric=numeric, h=h)


def report(ops: tuple[OpInfo, ...] = OPS, *, h: float = 1e-4) -> list[ArgReport]:
    """Run :func:`check_vjp`'s comparison on every sample of every registered op (float64)."""
    rows: list[ArgReport] = []
    with jax.enable_x64(True):
        for info in ops:
            for sample in info.samples(jnp.float64):
                rows.extend(_check(info, sample, numeric=True, h=h))
    return rows


def _fmt(v: float | None) -> str:
    return "     (kink)" if v is None else f"{v:11.2e}"


def select_ops(names=None) -> tuple[OpInfo, ...]:
    """The registry entries named by ``names`` (an op's name, e.g. ``"batchnorm"`` selects both of its
    modes, or a full entry name such as ``"batchnorm[train]"``); ``None``: every op.

    Raises:
      ValueError: a name that matches no op, listing the names there are.
    """
    if not names:
        return OPS
    picked = [info for info in OPS if info.name in names or info.name.split("[")[0] in names]
    known = {info.name.split("[")[0] for info in OPS} | {info.name for info in OPS}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"gradcheck: no op named {', '.join(unknown)}; the ops are {', '.join(sorted(known))}")
    return tuple(picked)


def main(verbose: bool = False, out=None, ops=None) -> int:
    """Print the gradient-check table of ``ops`` (names, see :func:`select_ops`; ``None``: every op);
    return 0 if every error is within :data:`TOLERANCES`.

    Raises:
      ValueError: an unknown op name.
    """
    out = out or sys.stdout
    rows = report(select_ops(ops))
    print(
        "jaxlayers gradcheck: relative error of each op's VJP, float64, worst over samples and arguments.\n"
        f"custom/autodiff: elementwise max relative error, tolerance {TOLERANCES['custom_vs_autodiff']:.0e}; "
        f"*/numeric: normwise vs 4th-order central differences, tolerance {TOLERANCES['custom_vs_numeric']:.0e}\n",
        file=out,
    )
    header = f"{'op':24} {'sample':28} {'arg':>3} {'custom/autodiff':>15} {'custom/numeric':>15} {'autodiff/numeric':>16}  ok"
    print(header, file=out)
    print("-" * len(header), file=out)
    groups: dict[tuple[str, ...], list[ArgReport]] = {}
    for r in rows:
        key = (r.op, r.sample, str(r.argument)) if verbose else (r.op,)
        groups.setdefault(key, []).append(r)
    for key, group in groups.items():

        def worst(attr, group=group):
            vals = [getattr(r, attr) for r in group if getattr(r, attr) is not None]
            return max(vals) if vals else None

        sample = key[1] if verbose else f"{len({r.sample for r in group})} samples"
        arg = key[2] if verbose else "all"
        ok = all(r.ok() for r in group)
        print(
            f"{key[0]:24} {sample:28} {arg:>3} {_fmt(worst('custom_vs_autodiff')):>15} "
            f"{_fmt(worst('custom_vs_numeric')):>15} {_fmt(worst('autodiff_vs_numeric')):>16}  {'ok' if ok else 'FAIL'}",
            file=out,
        )
    failed = [r for r in rows if not r.ok()]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed", file=out)
    return 1 if failed else 0
