"""jaxlayers.compat's normalisation layers == a NumPy transcription of the course's, and == finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import seed_numpy as seed
import seed_numpy_norms as course
from _helpers import numeric_vjp

from jaxlayers import compat
from jaxlayers.gradcheck import norm_rel_error, rel_error

TOL = 1e-9


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def _close(ours, theirs):
    for a, b in zip(ours, theirs, strict=True):
        assert isinstance(a, np.ndarray) and a.shape == np.shape(b)
        assert rel_error(a, b) <= TOL


def test_batchnorm_backward_alt_equals_backward_and_the_course(rng, x64):
    x = rng.randn(10, 4) * 3 + 2
    gamma, beta, dout = rng.rand(4) + 0.5, rng.randn(4), rng.randn(10, 4)
    _, cache = compat.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    _, cache_s = seed.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    alt = compat.batchnorm_backward_alt(dout, cache)
    _close(alt, compat.batchnorm_backward(dout, cache))
    _close(alt, course.batchnorm_backward_alt(dout, cache_s))
    _close(alt, seed.batchnorm_backward(dout, cache_s))


@pytest.mark.parametrize("mode", ["train", "test"])
def test_spatial_batchnorm(rng, x64, mode):
    x = rng.randn(3, 4, 2, 3) * 2 + 1
    gamma, beta, dout = rng.rand(4) + 0.5, rng.randn(4), rng.randn(3, 4, 2, 3)
    params = {"mode": mode, "momentum": 0.8}
    if mode == "test":
        params.update(running_mean=np.linspace(-1, 1, 4), running_var=np.linspace(0.5, 2, 4))
    params_s = dict(params)
    out, cache = compat.spatial_batchnorm_forward(x, gamma, beta, params)
    out_s, cache_s = course.spatial_batchnorm_forward(x, gamma, beta, params_s)
    _close(
        (out, params["running_mean"], params["running_var"]), (out_s, params_s["running_mean"], params_s["running_var"])
    )
    grads = compat.spatial_batchnorm_backward(dout, cache)
    if mode == "train":  # the course's backward is the train-mode rule; ours is right in test mode too
        _close(grads, course.spatial_batchnorm_backward(dout, cache_s))

    def f(x):
        return compat.spatial_batchnorm_forward(x, gamma, beta, dict(params))[0]

    assert norm_rel_error(grads[0], numeric_vjp(f, x.copy(), dout)) <= 1e-7


def test_layernorm(rng, x64):
    x = rng.randn(4, 7) * 3 + 5
    gamma, beta, dout = rng.rand(7) + 0.5, rng.randn(7), rng.randn(4, 7)
    out, cache = compat.layernorm_forward(x, gamma, beta, {"eps": 1e-4})
    out_s, cache_s = course.layernorm_forward(x, gamma, beta, {"eps": 1e-4})
    _close((out,), (out_s,))
    grads = compat.layernorm_backward(dout, cache)
    _close(grads, course.layernorm_backward(dout, cache_s))
    f = {
        0: lambda a: compat.layernorm_forward(a, gamma, beta, {"eps": 1e-4})[0],
        1: lambda a: compat.layernorm_forward(x, a, beta, {"eps": 1e-4})[0],
        2: lambda a: compat.layernorm_forward(x, gamma, a, {"eps": 1e-4})[0],
    }
    for k, arg in enumerate((x, gamma, beta)):
        assert norm_rel_error(grads[k], numeric_vjp(f[k], arg.copy(), dout)) <= 1e-7


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_spatial_groupnorm(rng, x64, groups):
    x = rng.randn(2, 6, 2, 3) * 2 - 1
    gamma, beta = rng.rand(1, 6, 1, 1) + 0.5, rng.randn(1, 6, 1, 1)
    dout = rng.randn(2, 6, 2, 3)
    out, cache = compat.spatial_groupnorm_forward(x, gamma, beta, groups, {})
    out_s, cache_s = course.spatial_groupnorm_forward(x, gamma, beta, groups, {})
    _close((out,), (out_s,))
    grads = compat.spatial_groupnorm_backward(dout, cache)
    assert grads[1].shape == (1, 6, 1, 1) and grads[2].shape == (1, 6, 1, 1)
    _close(grads, course.spatial_groupnorm_backward(dout, cache_s))

    def f(a):
        return compat.spatial_groupnorm_forward(a, gamma, beta, groups, {})[0]

    assert norm_rel_error(grads[0], numeric_vjp(f, x.copy(), dout)) <= 1e-7


def test_spatial_groupnorm_errors():
    x, ones, zeros = np.ones((2, 6, 2, 2), np.float32), np.ones(6, np.float32), np.zeros(6, np.float32)
    with pytest.raises(ValueError, match=r"gamma must have shape \(1, 6, 1, 1\)"):
        compat.spatial_groupnorm_forward(x, ones, zeros.reshape(1, 6, 1, 1), 2, {})
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        compat.spatial_groupnorm_forward(x, ones.reshape(1, 6, 1, 1), zeros.reshape(1, 6, 1, 1), 4, {})
    with pytest.raises(ValueError, match='Invalid forward batchnorm mode "eval"'):
        compat.spatial_batchnorm_forward(x, ones, zeros, {"mode": "eval"})


def test_star_import_gives_the_course_norm_names():
    namespace: dict = {}
    exec("from jaxlayers.compat import *", namespace)
    for name in [
        "batchnorm_backward_alt",
        "spatial_batchnorm_forward",
        "spatial_batchnorm_backward",
        "layernorm_forward",
        "layernorm_backward",
        "spatial_groupnorm_forward",
        "spatial_groupnorm_backward",
    ]:
        assert callable(namespace[name])
