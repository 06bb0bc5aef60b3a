"""batchnorm(axis_name=...): batch statistics, and their hand-derived
gradients, span the global batch across a mapped axis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.gradcheck import norm_rel_error
from jaxlayers.layers import batchnorm_reference

SCRIPT = Path(__file__).parent / "scripts" / "bn_shard_map_check.py"


def test_shard_map_on_8_devices_matches_single_device_and_reference():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    for mode in ("check_vma=True", "check_vma=False"):
        for name, err in result[mode].items():
            assert err <= 1e-10, (mode, name, err)


@pytest.mark.parametrize("op", [jl.batchnorm, batchnorm_reference])
def test_vmap_of_grad_with_axis_name_matches_the_whole_batch(op, x64):
    """vmap with an axis name plays the devices; gradients are taken inside the map."""
    rs = np.random.RandomState(1)
    shards, n, d = 4, 3, 5
    x = jnp.asarray(rs.randn(shards * n, d) * 2 + 3)
    gamma, beta = jnp.asarray(rs.rand(d) + 0.5), jnp.asarray(rs.randn(d))
    state = jl.batchnorm_state(d, jnp.float64)
    ct = jnp.asarray(rs.randn(shards * n, d))

    def local(x, ct):
        def f(x, gamma, beta):
            return jnp.sum(op(x, gamma, beta, state, train=True, axis_name="shards")[0] * ct)

        return op(x, gamma, beta, state, train=True, axis_name="shards"), jax.grad(f, argnums=(0, 1, 2))(x, gamma, beta)

    (out, new_state), (dx, dgamma, dbeta) = jax.vmap(local, axis_name="shards")(
        x.reshape(shards, n, d), ct.reshape(shards, n, d)
    )

    def whole(x, gamma, beta):
        return jnp.sum(jl.batchnorm(x, gamma, beta, state, train=True)[0] * ct)

    out1, state1 = jl.batchnorm(x, gamma, beta, state, train=True)
    g1 = jax.grad(whole, argnums=(0, 1, 2))(x, gamma, beta)
    assert norm_rel_error(out.reshape(-1, d), out1) <= 1e-12
    assert norm_rel_error(new_state.mean[0], state1.mean) <= 1e-12
    assert norm_rel_error(dx.reshape(-1, d), g1[0]) <= 1e-10
    # Per-shard shares of dgamma/dbeta (vmap's convention) sum to the whole-batch gradient.
    assert norm_rel_error(dgamma.sum(0), g1[1]) <= 1e-10
    assert norm_rel_error(dbeta.sum(0), g1[2]) <= 1e-10


def test_axis_name_is_ignored_in_test_mode(x64):
    x = jnp.asarray(np.random.RandomState(2).randn(2, 3, 4))
    state = jl.BatchNormState(jnp.full(4, 0.5), jnp.full(4, 2.0))

    def f(x):
        return jl.batchnorm(x, jnp.ones(4), jnp.zeros(4), state, train=False, axis_name="i")[0]

    out = jax.vmap(f, axis_name="i")(x)
    np.testing.assert_allclose(np.asarray(out), (np.asarray(x) - 0.5) / np.sqrt(2.0 + 1e-5), rtol=1e-12)


def test_bad_axis_name():
    with pytest.raises(TypeError, match="batchnorm: axis_name must be None"):
        jl.batchnorm(jnp.ones((2, 3)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True, axis_name=3)
