"""JAX peers: (b) plain ``jnp`` + ``jax.grad``, (c) Flax linen; plus helpers
shared with the jaxlayers peer (residual counting, compile timing).

Every step is ``jit``-compiled with the arrays as *arguments* (never captured
constants), takes and returns its whole carry ``(params, bn_state, opt_state,
key)`` and draws a fresh dropout key inside the step.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import Workload

EPS = 1e-5
MOMENTUM = 0.9


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def nbytes(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize


def residual_bytes(loss_fn: Callable, params, *args) -> dict[str, Any]:
    """Residuals that ``jax.vjp`` of ``params -> loss_fn(params, *args)`` saves.

    Traced once with :func:`jax.make_jaxpr`; a residual that *is* one of the
    function's inputs (a parameter, the minibatch) costs no new memory and is
    counted apart from the new intermediates the backward pass keeps alive. So
    is a reshape of an input (``jnp.vdot`` ravels its operands, a model's flat
    view of an image batch): XLA lowers a row-major reshape to a bitcast of the
    same buffer, no copy.

    Returns ``{"new": bytes, "args": bytes, "count": n, "items": [(shape, dtype, is_arg)]}``.
    """

    def vjp_residuals(params, *args):
        _, vjp_fn, _ = jax.vjp(lambda p: loss_fn(p, *args), params, has_aux=True)
        return jax.tree.leaves(vjp_fn)

    closed = jax.make_jaxpr(vjp_residuals)(params, *args)
    jaxpr = closed.jaxpr
    aliases = _input_aliases(jaxpr, {v: v for v in (*jaxpr.invars, *jaxpr.constvars)})
    items = []
    seen = set()
    for v in jaxpr.outvars:
        # An input, or a view of one, counts once: the same buffer.
        key = aliases.get(v, v) if not isinstance(v, jex_core.Literal) else None
        if key is None or key in seen:
            continue
        seen.add(key)
        items.append((tuple(v.aval.shape), str(v.aval.dtype), v in aliases))
    new = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d, a in items if not a)
    arg = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d, a in items if a)
    return {"new": new, "args": arg, "count": len(items), "items": items}


_VIEWS = {"reshape", "squeeze", "expand_dims"}


def _input_aliases(jaxpr, roots: dict) -> dict:
    """``{var: input}`` for the variables of ``jaxpr`` that are reshapes (possibly inside nested jits) of an
    input in ``roots`` (``{var: input}``): the same buffer in XLA."""
    alias = dict(roots)
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        src = eqn.invars[0] if eqn.invars else None
        if name in _VIEWS or (name == "convert_element_type" and eqn.params["new_dtype"] == src.aval.dtype):
            if not isinstance(src, jex_core.Literal) and src in alias:
                alias[eqn.outvars[0]] = alias[src]
        elif name in ("pjit", "jit") and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"].jaxpr
            inner_roots = {
                iv: alias[ov]
                for iv, ov in zip(inner.invars, eqn.invars, strict=True)
                if not isinstance(ov, jex_core.Literal) and ov in alias
            }
            inner_alias = _input_aliases(inner, inner_roots)
            for iv, ov in zip(inner.outvars, eqn.outvars, strict=True):
                if not isinstance(iv, jex_core.Literal) and iv in inner_alias:
                    alias[ov] = inner_alias[iv]
    return alias


def compile_seconds(jitted, *args) -> float:
    """Seconds to trace, lower and compile ``jitted`` for ``args``."""
    if isinstance(jitted, functools.partial):  # make_train_step: partial(jitted step, model leaves)
        jitted, args = jitted.func, (*jitted.args, *args)
    # make_train_step(..., flat=True): a FlatTrainStep, whose lower() takes the packed state
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - t0


class JaxStepper:
    """Holds a jitted ``step(carry, x, y) -> (carry, loss)`` and its carry; ``()`` runs one step."""

    def __init__(self, step, carry, x, y, donate: bool = False):
        self.jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
        self.carry, self.x, self.y = carry, x, y
        self.compile_s = compile_seconds(self.jitted, carry, x, y)

    def __call__(self):
        self.carry, loss = self.jitted(self.carry, self.x, self.y)
        loss.block_until_ready()
        return loss


def softmax_xent(scores, y):
    return optax.softmax_cross_entropy_with_integer_labels(scores, y).mean()


# --------------------------------------------------------------------------
# (b) plain jnp, differentiated by jax.grad
# --------------------------------------------------------------------------


def autodiff_loss(params, state, x, y, key, *, w: Workload):
    """The network in plain ``jnp`` as one would write it; ``jax.grad`` differentiates it."""
    n_hidden = len(w.hidden)
    keys = jax.random.split(key, n_hidden)
    keep = 1.0 - w.rate
    h = x
    new_state = {}
    for i in range(1, n_hidden + 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        mean = jnp.mean(h, axis=0)
        var = jnp.mean(jnp.square(h - mean), axis=0)
        h = (h - mean) / jnp.sqrt(var + EPS) * params[f"gamma{i}"] + params[f"beta{i}"]
        new_state[f"mean{i}"] = MOMENTUM * state[f"mean{i}"] + (1 - MOMENTUM) * mean
        new_state[f"var{i}"] = MOMENTUM * state[f"var{i}"] + (1 - MOMENTUM) * var
        h = jax.nn.relu(h)
        mask = jax.random.bernoulli(keys[i - 1], keep, h.shape)
        h = jnp.where(mask, h / keep, 0.0)
    scores = h @ params[f"W{n_hidden + 1}"] + params[f"b{n_hidden + 1}"]
    return softmax_xent(scores, y), (jax.lax.stop_gradient(new_state), scores)


def autodiff_peer(w: Workload, params_np, x_np, y_np, donate: bool = False) -> tuple[JaxStepper, dict]:
    params = {k: jnp.asarray(v) for k, v in params_np.items()}
    state = {}
    for i, h in enumerate(w.hidden, start=1):
        state[f"mean{i}"] = jnp.zeros(h, jnp.float32)
        state[f"var{i}"] = jnp.ones(h, jnp.float32)
    opt = optax.adam(w.lr)

    def loss_fn(p, s, x, y, k):
        return autodiff_loss(p, s, x, y, k, w=w)

    def step(carry, x, y):
        params, state, opt_state, key = carry
        key, sub = jax.random.split(key)
        (loss, (new_state, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y, sub)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, new_state, opt_state, key), loss

    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    carry = (params, state, opt.init(params), jax.random.key(0))
    res = residual_bytes(loss_fn, params, state, x, y, jax.random.key(1))
    return JaxStepper(step, carry, x, y, donate), res


# --------------------------------------------------------------------------
# (c) Flax linen
# --------------------------------------------------------------------------


def flax_peer(w: Workload, params_np, x_np, y_np, donate: bool = False) -> tuple[JaxStepper, dict]:
    import flax.linen as nn

    class MLP(nn.Module):
        hidden: tuple[int, ...]
        classes: int
        rate: float

        @nn.compact
        def __call__(self, x, train: bool):
            for h in self.hidden:
                x = nn.Dense(h)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=EPS)(x)
                x = nn.relu(x)
                x = nn.Dropout(self.rate, deterministic=not train)(x)
            return nn.Dense(self.classes)(x)

    model = MLP(w.hidden, w.classes, w.rate)
    n_hidden = len(w.hidden)
    p: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for i in range(1, n_hidden + 2):
        p[f"Dense_{i - 1}"] = {"kernel": jnp.asarray(params_np[f"W{i}"]), "bias": jnp.asarray(params_np[f"b{i}"])}
        if i <= n_hidden:
            p[f"BatchNorm_{i - 1}"] = {
                "scale": jnp.asarray(params_np[f"gamma{i}"]),
                "bias": jnp.asarray(params_np[f"beta{i}"]),
            }
            stats[f"BatchNorm_{i - 1}"] = {
                "mean": jnp.zeros(w.hidden[i - 1], jnp.float32),
                "var": jnp.ones(w.hidden[i - 1], jnp.float32),
            }
    # Same tree as model.init would give (checked once, cheaply, by shape).
    ref = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, w.input_dim)), train=False))
    assert jax.tree.structure(ref["params"]) == jax.tree.structure(p)
    opt = optax.adam(w.lr)

    def loss_fn(params, batch_stats, x, y, key):
        scores, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        return softmax_xent(scores, y), (updates["batch_stats"], scores)

    def step(carry, x, y):
        params, batch_stats, opt_state, key = carry
        key, sub = jax.random.split(key)
        (loss, (new_stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, y, sub)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, new_stats, opt_state, key), loss

    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    carry = (p, stats, opt.init(p), jax.random.key(0))
    res = residual_bytes(loss_fn, p, stats, x, y, jax.random.key(1))
    return JaxStepper(step, carry, x, y, donate), res


# --------------------------------------------------------------------------
# float32 matmul rate
# --------------------------------------------------------------------------


def matmul_rate(n: int = 2048, repeats: int = 15) -> float:
    """Measured float32 FLOP/s of a large ``jnp.dot`` (``n x n @ n x n``), median of ``repeats``."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 2.0 * n**3 / float(np.median(ts))
