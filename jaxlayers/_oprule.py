"""One statement registers an op's hand-derived rule: :func:`custom_op`.

Every jaxlayers op is four functions with one signature -- ``<op>_reference``
(plain ``jnp``), ``<op>_fwd -> (out, residuals)``, ``<op>_bwd(residuals, g)
-> cotangents`` and the public op, which checks its arguments and calls the
registered rule. :func:`custom_op` ties the first three together, by argument
*names*, into the jitted ``jax.custom_vjp`` callable the public op calls::

    _conv2d = custom_op(conv2d_reference, conv2d_fwd, conv2d_bwd, static=("stride", "padding"))

    def conv2d(x, w, b, *, stride=1, padding=0):
        x, w, b, stride, padding, _ = check_conv2d(x, w, b, stride, padding)
        return _conv2d(x, w, b, stride=stride, padding=padding)

Numbered ``nondiff_argnums`` / ``static_argnums``, written twice by hand and
kept in step with the signature, are derived here from the reference's
signature instead (as ``jax.nn.relu`` registers its rule beside its function).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import jax

__all__ = ["custom_op"]


def custom_op(
    reference: Callable[..., Any],
    fwd: Callable[..., Any],
    bwd: Callable[..., Any],
    *,
    static: Iterable[str] = (),
    nondiff: Iterable[str] = (),
    primal: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """The jitted ``jax.custom_vjp`` op of a reference, a forward and a backward rule.

    Args:
      reference: the plain-``jnp`` reference; its signature is the op's. Traced
        arguments come first (positional), static ones after (keyword-only, as
        ``stride``, ``train``, ``eps``).
      fwd: ``fwd(*traced, **static) -> (out, residuals)``, with the
        reference's parameter names.
      bwd: ``bwd(residuals, g, **some_static) -> cotangents``: one cotangent
        per *differentiable* traced argument (those not in ``nondiff``), in
        signature order, as a tuple. ``g`` has the structure of ``out`` (a
        tuple ``(g_out, g_state)`` for an op returning its new state). Static
        arguments that ``bwd`` declares as keyword parameters (batchnorm's
        ``axis_name``) are passed to it by name; the rest are not.
      static: names of the static arguments: hashable Python values, part of
        the compilation key (``jax.jit`` ``static_argnames``) and no
        cotangent (``custom_vjp`` ``nondiff_argnums``).
      nondiff: names of traced arguments that get no cotangent (a PRNG key,
        integer labels, running statistics): ``bwd`` does not return one for
        them; ``None`` (a zero cotangent) is put in their place.
      primal: what undifferentiated calls compute, ``primal(*traced,
        **static) -> out``; by default ``fwd``'s output (the same forward code
        as differentiated calls; XLA drops the unused residuals).

    Returns:
      ``op(*traced, **static)``: the jitted ``custom_vjp`` function, with the
      reference's signature (statics may be passed by keyword or position).

    Raises:
      TypeError: at registration, if a name in ``static`` / ``nondiff`` is not
        a parameter of ``reference``, or a static parameter comes before a
        traced one; at trace time, if ``bwd`` returns the wrong number of
        cotangents (the message names the op and the arguments expected).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> def square_reference(x):
      ...     return x * x
      >>> def square_fwd(x):
      ...     return x * x, x
      >>> def square_bwd(x, g):
      ...     return (2 * x * g,)
      >>> square = custom_op(square_reference, square_fwd, square_bwd)
      >>> jax.grad(square)(3.0)
      Array(6., dtype=float32, weak_type=True)
    """
    sig = inspect.signature(reference)
    names = tuple(sig.parameters)
    static, nondiff = tuple(static), tuple(nondiff)
    op_name = getattr(reference, "__name__", "op").removesuffix("_reference")
    unknown = [n for n in (*static, *nondiff) if n not in names]
    if unknown:
        raise TypeError(f"custom_op({op_name}): {unknown} are not parameters of {op_name}_reference{sig}")
    traced = tuple(n for n in names if n not in static)
    if names[: len(traced)] != traced:
        raise TypeError(f"custom_op({op_name}): static arguments {static} must come after the traced ones in {sig}")
    static_names = names[len(traced) :]  # signature order, as custom_vjp passes them to rule_bwd
    static_argnums = tuple(range(len(traced), len(names)))
    diff = tuple(n for n in traced if n not in nondiff)
    bwd_params = inspect.signature(bwd).parameters
    bwd_static = tuple(n for n in static if n in bwd_params)
    run_primal = primal if primal is not None else (lambda *a, **k: fwd(*a, **k)[0])

    def split(args):
        return args[: len(traced)], dict(zip(static_names, args[len(traced) :], strict=True))

    @partial(jax.custom_vjp, nondiff_argnums=static_argnums)
    def rule(*args):
        arrays, kwargs = split(args)
        return run_primal(*arrays, **kwargs)

    def rule_fwd(*args):
        arrays, kwargs = split(args)
        return fwd(*arrays, **kwargs)

    def rule_bwd(*args):
        statics, residuals, g = args[:-2], args[-2], args[-1]
        kwargs = {n: v for n, v in zip(static_names, statics, strict=True) if n in bwd_static}
        cts = tuple(bwd(residuals, g, **kwargs))
        if len(cts) != len(diff):
            raise TypeError(
                f"{op_name}_bwd returned {len(cts)} cotangents; expected {len(diff)}, one for each of {diff}"
            )
        it = iter(cts)
        return tuple(None if n in nondiff else next(it) for n in traced)

    rule.defvjp(rule_fwd, rule_bwd)

    def call(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        return rule(*bound.arguments.values())

    call.__signature__ = sig
    call.__name__ = call.__qualname__ = f"_{op_name}"
    call.__doc__ = f"The registered ``custom_vjp`` rule of ``{op_name}`` (jitted; statics {static})."
    return jax.jit(call, static_argnames=static)
