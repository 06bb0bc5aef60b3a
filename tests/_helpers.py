"""Helpers shared by the op-registry tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlayers.gradcheck import numerical_gradient
from jaxlayers.opinfo import OPS, OpInfo, Sample


def op_sample_params(ops=OPS, smooth: bool | None = None):
    """``pytest.mark.parametrize`` values ``(info, sample_index)`` with readable ids.

    ``smooth=True`` keeps only samples off kinks, ``False`` only kink samples.
    """
    import pytest

    params = []
    for info in ops:
        for i, s in enumerate(info.samples(jnp.float32)):
            if smooth is None or s.smooth == smooth:
                params.append(pytest.param(info, i, id=f"{info.name}-{s.name}"))
    return params


def is_key(a) -> bool:
    return hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def cotangent_like(out, seed: int = 0):
    return jnp.asarray(np.random.RandomState(seed).randn(*np.shape(out)), out.dtype)


def vjp_of(info: OpInfo, sample: Sample, ct, *, reference: bool = False, jit: bool = False):
    """Gradient of ``<f(diff_args), ct>`` with respect to the differentiable arguments.

    ``jit=True`` computes it in one compiled program. Run eagerly, a plain-``jnp`` reference's
    VJP compiles each of its primitives (forward, JVP and transpose) separately: about six times
    the compiles, twice the CPU time over the registry. The value is the same up to rounding (the
    checks that compare bit for bit keep ``jit=False``).
    """
    if jit:  # every argument passed in (none baked into the program as a constant), the keywords static

        def program(args, ct):
            s = Sample(sample.name, args, sample.kwargs, sample.smooth)
            return jax.vjp(info.bind(s, reference=reference), *info.diff_args(s))[1](ct)

        return jax.jit(program)(sample.args, ct)
    f = info.bind(sample, reference=reference)
    _, vjp = jax.vjp(f, *info.diff_args(sample))
    return vjp(ct)


def jit_call(fn, sample: Sample):
    """``fn(*sample.args, **sample.kwargs)`` in one compiled program (the arguments passed in, the keywords static).

    For the plain-``jnp`` references, which run eagerly compile each primitive on its own."""
    return jax.jit(lambda args: fn(*args, **sample.kwargs))(sample.args)


def batched_args(info: OpInfo, sample: Sample, b: int):
    """Stack ``b`` distinct variants of the batched arguments (others shared).

    Returns ``(stacked_args, in_axes, per_item_args)``.
    """
    batch = info.batch_argnums if info.batch_argnums is not None else info.diff_argnums
    per_item = [list(sample.args) for _ in range(b)]
    stacked = list(sample.args)
    in_axes = [None] * len(sample.args)
    for i in batch:
        a = sample.args[i]
        if is_key(a):
            items = list(jax.random.split(a, b))
        elif jnp.issubdtype(a.dtype, jnp.integer):
            items = [jnp.roll(a, k) for k in range(b)]
        else:
            items = [a * (1.0 + 0.25 * k) - 0.1 * k for k in range(b)]
        for k in range(b):
            per_item[k][i] = items[k]
        stacked[i] = jnp.stack(items)
        in_axes[i] = 0
    return tuple(stacked), tuple(in_axes), [tuple(p) for p in per_item]


def value_and_vjp(info: OpInfo, args, kwargs, ct):
    """``(out, grads)``: the op's output at ``args`` and the VJP of ``ct`` with respect to its differentiable args."""
    f = info.bind(Sample("args", tuple(args), kwargs))
    out, vjp = jax.vjp(f, *(args[j] for j in info.diff_argnums))
    return out, vjp(ct)


def call(info: OpInfo, args, kwargs):
    return info.output(info.op(*args, **kwargs))


def tree_allclose(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def numeric_vjp(f, x, dout, h=1e-5):
    """Central differences of ``sum(f(x) * dout)`` with respect to the NumPy array ``x`` (float64),
    one element at a time (the course's ``eval_numerical_gradient_array``). ``x`` is restored.

    Compare normwise (``norm_rel_error``): its absolute round-off is set by ``|f|``, not by each element.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.sum(f(x) * dout)
        x[i] = old - h
        minus = np.sum(f(x) * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def model_loss_gradients(net, params, state, x, y, key):
    """``(grads, numeric)``: ``jax.grad`` of ``net.loss`` (the hand-derived rules) and its fourth-order
    central differences, both by parameter name. All parameters go through one flat vector: one
    compiled, vmapped finite-difference pass."""
    grads, _ = jax.jit(jax.grad(net.loss, has_aux=True))(params, state, x, y, key=key)
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def loss_of_flat(v, state, x, y, key):
        return net.loss(unravel(v), state, x, y, key=key)[0]

    return grads, unravel(numerical_gradient(lambda v: loss_of_flat(v, state, x, y, key), flat, h=1e-4))


def eval_numerical_gradient(f, x, verbose=True, h=0.00001):
    """The course's naive numerical gradient of f at x (its gradient_check.py): changes x in place, restores it."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        fxph = f(x)
        x[ix] = oldval - h
        fxmh = f(x)
        x[ix] = oldval
        grad[ix] = (fxph - fxmh) / (2 * h)
        it.iternext()
    return grad
