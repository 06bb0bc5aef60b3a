"""Run in a subprocess with 8 host devices (XLA_FLAGS set by the caller):
batchnorm(axis_name=...) under shard_map == the single-device op on the whole
batch, and == jax.grad of the reference with the same axis reductions.
Prints one JSON line of max relative errors."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

jax.config.update("jax_enable_x64", True)  # this process only exists for the float64 check

import jaxlayers as jl  # noqa: E402
from jaxlayers.layers import batchnorm_reference  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main(check_vma: bool) -> dict:
    ndev = len(jax.devices())
    mesh = jax.make_mesh((ndev,), ("data",))
    rs = np.random.RandomState(0)
    n, d = 4 * ndev, 5
    x = jnp.asarray(rs.randn(n, d) * 3 + 7)
    gamma, beta = jnp.asarray(rs.rand(d) + 0.5), jnp.asarray(rs.randn(d))
    state = jl.BatchNormState(jnp.asarray(rs.randn(d)), jnp.asarray(rs.rand(d) + 0.5))
    ct = jnp.asarray(rs.randn(n, d))
    shard = NamedSharding(mesh, P("data"))
    repl = NamedSharding(mesh, P())
    xs, cts = jax.device_put(x, shard), jax.device_put(ct, shard)
    gs, bs, ss = jax.device_put((gamma, beta, state), repl)

    def sharded(fn):
        def loss(x, gamma, beta, state, ct):
            def local(x, gamma, beta, state, ct):
                out, new_state = fn(x, gamma, beta, state, train=True, axis_name="data")
                return jax.lax.psum(jnp.sum(out * ct), "data"), out, new_state

            return jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P("data"), P(), P(), P(), P("data")),
                out_specs=(P(), P("data"), P()),
                check_vma=check_vma,
            )(x, gamma, beta, state, ct)

        def value_and_grads(*args):
            (value, (out, new_state)), grads = jax.value_and_grad(
                lambda x, g, b, s, c: (lambda r: (r[0], r[1:]))(loss(x, g, b, s, c)), argnums=(0, 1, 2), has_aux=True
            )(*args)
            return value, out, new_state, grads

        return jax.jit(value_and_grads)(xs, gs, bs, ss, cts)

    def single(x, gamma, beta):
        out, new_state = jl.batchnorm(x, gamma, beta, state, train=True)
        return jnp.sum(out * ct), (out, new_state)

    (v1, (out1, st1)), g1 = jax.value_and_grad(single, argnums=(0, 1, 2), has_aux=True)(x, gamma, beta)
    v_c, out_c, st_c, g_c = sharded(jl.batchnorm)
    _, out_r, _, g_r = sharded(batchnorm_reference)
    errs = {
        "out_vs_single": rel(out_c, out1),
        "state_vs_single": max(rel(st_c.mean, st1.mean), rel(st_c.var, st1.var)),
        "loss_vs_single": rel(v_c, v1),
        "grads_vs_single": max(rel(a, b) for a, b in zip(g_c, g1, strict=True)),
        "grads_vs_reference": max(rel(a, b) for a, b in zip(g_c, g_r, strict=True)),
        "out_vs_reference": rel(out_c, out_r),
    }
    return errs


if __name__ == "__main__":
    result = {f"check_vma={vma}": main(vma) for vma in (True, False)}
    result["devices"] = len(jax.devices())
    print(json.dumps(result))
    sys.exit(0)
