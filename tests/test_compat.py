"""jaxlayers.compat == an in-test NumPy transcription of the seed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import seed_numpy as seed
from _helpers import numeric_vjp

import jaxlayers._compat_layers
from jaxlayers import compat
from jaxlayers.gradcheck import norm_rel_error, rel_error

TOL = 1e-9


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def test_affine(rng, x64):
    x, w, b = rng.randn(4, 2, 3), rng.randn(6, 5), rng.randn(5)
    dout = rng.randn(4, 5)
    out, cache = compat.affine_forward(x, w, b)
    out_s, cache_s = seed.affine_forward(x, w, b)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert rel_error(out, out_s) <= TOL
    for g, g_s in zip(compat.affine_backward(dout, cache), seed.affine_backward(dout, cache_s), strict=True):
        assert g.shape == g_s.shape and rel_error(g, g_s) <= TOL


def test_relu(rng, x64):
    x = rng.randn(3, 4, 5)
    x[0, 0, :] = 0.0
    dout = rng.randn(3, 4, 5)
    out, cache = compat.relu_forward(x)
    out_s, cache_s = seed.relu_forward(x)
    assert rel_error(out, out_s) <= TOL
    assert rel_error(compat.relu_backward(dout, cache), seed.relu_backward(dout, cache_s)) <= TOL
    assert cache.dtype == np.bool_  # a mask, not a float copy of x


@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_forward_and_running_stats(rng, x64, mode):
    x = rng.randn(10, 4) * 3 + 2
    gamma, beta = rng.rand(4) + 0.5, rng.randn(4)
    params, params_s = {"mode": mode, "momentum": 0.8}, {"mode": mode, "momentum": 0.8}
    if mode == "test":
        for p in (params, params_s):
            p["running_mean"] = np.linspace(-1, 1, 4)
            p["running_var"] = np.linspace(0.5, 2, 4)
    out, _ = compat.batchnorm_forward(x, gamma, beta, params)
    out_s, _ = seed.batchnorm_forward(x, gamma, beta, params_s)
    assert rel_error(out, out_s) <= TOL
    # Updated in place, as the seed; running_var defaults to zeros, as the seed.
    assert rel_error(params["running_mean"], params_s["running_mean"]) <= TOL
    assert rel_error(params["running_var"], params_s["running_var"]) <= TOL


def test_batchnorm_backward_train_matches_seed(rng, x64):
    x = rng.randn(10, 4) * 3 + 2
    gamma, beta, dout = rng.rand(4) + 0.5, rng.randn(4), rng.randn(10, 4)
    _, cache = compat.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    _, cache_s = seed.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for g, g_s in zip(compat.batchnorm_backward(dout, cache), seed.batchnorm_backward(dout, cache_s), strict=True):
        assert rel_error(g, g_s) <= TOL


def test_batchnorm_backward_test_mode_is_the_correct_rule(rng, x64):
    """The seed's backward is only right in train mode; ours is right in test mode too."""
    x = rng.randn(6, 3)
    gamma, beta, dout = rng.rand(3) + 0.5, rng.randn(3), rng.randn(6, 3)
    rm, rv = rng.randn(3), rng.rand(3) + 0.5
    _, cache = compat.batchnorm_forward(x, gamma, beta, {"mode": "test", "running_mean": rm, "running_var": rv})
    dx, dgamma, dbeta = compat.batchnorm_backward(dout, cache)
    inv_std = 1 / np.sqrt(rv + 1e-5)
    assert rel_error(dx, dout * gamma * inv_std) <= TOL
    assert rel_error(dgamma, np.sum(dout * (x - rm) * inv_std, axis=0)) <= TOL
    assert rel_error(dbeta, dout.sum(0)) <= TOL


def test_batchnorm_invalid_mode():
    with pytest.raises(ValueError, match='Invalid forward batchnorm mode "eval"'):
        compat.batchnorm_forward(np.ones((2, 3), np.float32), np.ones(3), np.zeros(3), {"mode": "eval"})


def test_dropout_train_matches_seed_formula_for_its_mask(rng, x64):
    x = rng.randn(50, 40) + 5.0  # nonzero, so the mask can be read off the output
    dout = rng.randn(50, 40)
    param = {"mode": "train", "p": 0.75, "seed": 123}
    out, cache = compat.dropout_forward(x, param)
    mask = out != 0
    assert 0.7 < mask.mean() < 0.8  # keeps with probability p
    assert rel_error(out, seed.dropout_apply(x, mask, 0.75)) <= TOL
    assert rel_error(compat.dropout_backward(dout, cache), seed.dropout_apply(dout, mask, 0.75)) <= TOL
    # 'seed' makes it deterministic.
    np.testing.assert_array_equal(compat.dropout_forward(x, dict(param))[0], out)


def test_dropout_test_mode_and_p_one(rng, x64):
    x, dout = rng.randn(4, 5), rng.randn(4, 5)
    out, cache = compat.dropout_forward(x, {"mode": "test", "p": 0.5})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(compat.dropout_backward(dout, cache), dout)
    out, cache = compat.dropout_forward(x, {"mode": "train", "p": 1.0, "seed": 0})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(compat.dropout_backward(dout, cache), dout)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5])
def test_dropout_invalid_p(p):
    with pytest.raises(ValueError, match=r"not in \(0,1\]"):
        compat.dropout_forward(np.ones((2, 2), np.float32), {"mode": "train", "p": p})


def test_dropout_invalid_mode():
    with pytest.raises(ValueError, match="Invalid dropout mode"):
        compat.dropout_forward(np.ones((2, 2), np.float32), {"mode": "eval", "p": 0.5})


@pytest.mark.parametrize("name", ["svm_loss", "softmax_loss"])
def test_losses(rng, x64, name):
    x = rng.randn(8, 5)
    y = rng.randint(0, 5, 8)
    loss, dx = getattr(compat, name)(x, y)
    loss_s, dx_s = getattr(seed, name)(x, y)
    assert rel_error(loss, loss_s) <= TOL
    assert rel_error(dx, dx_s) <= TOL


def test_svm_loss_at_exact_margin_zero_matches_seed(x64):
    x = np.array([[1.0, 0.0, 3.0], [2.0, 2.0, 1.0]])
    y = np.array([0, 1])  # x[0, 1] - x[0, 0] + 1 == 0 exactly: not counted
    loss, dx = compat.svm_loss(x, y)
    loss_s, dx_s = seed.svm_loss(x, y)
    assert loss == loss_s
    np.testing.assert_array_equal(dx, dx_s)


def test_softmax_loss_has_no_1e8_clamp(x64):
    """The seed caps each example's loss at -log(1e-8); jaxlayers is exact."""
    x = np.array([[0.0, 40.0]])
    y = np.array([0])
    loss, _ = compat.softmax_loss(x, y)
    loss_s, _ = seed.softmax_loss(x, y)
    assert loss_s == pytest.approx(-np.log(1e-8))
    assert loss == pytest.approx(40.0 + np.log1p(np.exp(-40.0)), rel=1e-12)


def test_float64_without_x64_warns_once(monkeypatch):
    monkeypatch.setattr(jaxlayers._compat_layers, "_warned_float64", False)
    x = np.ones((2, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = compat.affine_forward(x, np.ones((3, 2)), np.zeros(2))
        compat.relu_forward(x)
    ours = [w for w in caught if "computed in float32" in str(w.message)]
    assert len(ours) == 1
    assert out.dtype == np.float32


def test_seed_style_code_runs_unchanged(x64):
    """A two-layer net written against the seed's API (as its layer_utils and
    classifiers do), with only the import changed, gives the seed's numbers."""

    def two_layer_loss(lib, X, y, params):
        h, cache1 = lib.affine_forward(X, params["W1"], params["b1"])
        a, cache_r = lib.relu_forward(h)
        scores, cache2 = lib.affine_forward(a, params["W2"], params["b2"])
        loss, dscores = lib.softmax_loss(scores, y)
        da, dW2, db2 = lib.affine_backward(dscores, cache2)
        dh = lib.relu_backward(da, cache_r)
        _, dW1, db1 = lib.affine_backward(dh, cache1)
        grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
        for k in ("W1", "W2"):  # the seed ecosystem's L2 convention, in NumPy
            loss += 0.5 * 0.1 * np.sum(params[k] ** 2)
            grads[k] = grads[k] + 0.1 * params[k]
        return loss, grads

    rng = np.random.RandomState(1)
    X, y = rng.randn(7, 3, 4), rng.randint(0, 3, 7)
    params = {"W1": rng.randn(12, 6) * 0.3, "b1": rng.randn(6), "W2": rng.randn(6, 3) * 0.3, "b2": rng.randn(3)}
    loss, grads = two_layer_loss(compat, X, y, params)
    loss_s, grads_s = two_layer_loss(seed, X, y, params)
    assert rel_error(loss, loss_s) <= TOL
    for k in params:
        assert rel_error(grads[k], grads_s[k]) <= TOL
    # The results are NumPy arrays: seed-style in-place updates work.
    params["W1"] -= 1e-3 * grads["W1"]


def test_star_import_gives_the_seed_names():
    namespace: dict = {}
    exec("from jaxlayers.compat import *", namespace)
    for name in [
        "affine_forward",
        "affine_backward",
        "relu_forward",
        "relu_backward",
        "batchnorm_forward",
        "batchnorm_backward",
        "dropout_forward",
        "dropout_backward",
        "svm_loss",
        "softmax_loss",
    ]:
        assert callable(namespace[name])


# --------------------------------------------------------------------------
# issue 11, convolutional networks: compat == a NumPy transcription of the
# course's naive loops (tests/seed_numpy_conv.py), plus finite differences.
# --------------------------------------------------------------------------

import seed_numpy_conv as naive  # noqa: E402

CONV_CASES = [
    ((2, 3, 5, 5), (4, 3, 3, 3), {"stride": 1, "pad": 1}),
    ((2, 2, 7, 6), (3, 2, 3, 3), {"stride": 2, "pad": 0}),  # bottom row never read
    ((1, 2, 6, 7), (2, 2, 2, 3), {"stride": 2, "pad": 2}),
]
POOL_CASES = [
    ((2, 3, 4, 6), {"pool_height": 2, "pool_width": 2, "stride": 2}),
    ((2, 2, 7, 7), {"pool_height": 3, "pool_width": 3, "stride": 2}),  # overlapping
    ((1, 2, 5, 7), {"pool_height": 2, "pool_width": 3, "stride": 2}),  # H, W not divisible
]


@pytest.mark.parametrize(("xs", "ws", "conv_param"), CONV_CASES)
def test_conv_matches_naive_loops(rng, x64, xs, ws, conv_param):
    x, w, b = rng.randn(*xs), rng.randn(*ws), rng.randn(ws[0])
    out, cache = compat.conv_forward_naive(x, w, b, conv_param)
    out_s, cache_s = naive.conv_forward_naive(x, w, b, conv_param)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == out_s.shape
    assert rel_error(out, out_s) <= TOL
    dout = rng.randn(*out.shape)
    for g, g_s in zip(compat.conv_backward_naive(dout, cache), naive.conv_backward_naive(dout, cache_s), strict=True):
        assert isinstance(g, np.ndarray) and g.shape == g_s.shape and rel_error(g, g_s) <= TOL
    # The "fast" names are the same layer.
    out_f, cache_f = compat.conv_forward_fast(x, w, b, conv_param)
    np.testing.assert_array_equal(out_f, out)
    np.testing.assert_array_equal(
        compat.conv_backward_fast(dout, cache_f)[1], compat.conv_backward_naive(dout, cache)[1]
    )


@pytest.mark.parametrize(("xs", "pool_param"), POOL_CASES)
def test_max_pool_matches_naive_loops(rng, x64, xs, pool_param):
    x = rng.randn(*xs)
    out, cache = compat.max_pool_forward_naive(x, pool_param)
    out_s, cache_s = naive.max_pool_forward_naive(x, pool_param)
    assert out.shape == out_s.shape and rel_error(out, out_s) <= TOL
    dout = rng.randn(*out.shape)
    dx = compat.max_pool_backward_naive(dout, cache)
    assert dx.shape == x.shape and rel_error(dx, naive.max_pool_backward_naive(dout, cache_s)) <= TOL
    out_f, cache_f = compat.max_pool_forward_fast(x, pool_param)
    np.testing.assert_array_equal(out_f, out)
    np.testing.assert_array_equal(compat.max_pool_backward_fast(dout, cache_f), dx)


def test_max_pool_ties_go_to_the_first_maximum_like_np_argmax(rng, x64):
    x = rng.randint(0, 2, size=(2, 2, 6, 6)).astype(np.float64)  # windows full of equal maxima
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = compat.max_pool_forward_naive(x, param)
    dout = rng.randn(*out.shape)
    _, cache_s = naive.max_pool_forward_naive(x, param)
    np.testing.assert_array_equal(
        compat.max_pool_backward_naive(dout, cache), naive.max_pool_backward_naive(dout, cache_s)
    )


def test_conv_and_pool_numeric_gradients(rng, x64):
    x, w, b = rng.randn(2, 2, 5, 5), rng.randn(3, 2, 3, 3), rng.randn(3)
    conv_param = {"stride": 2, "pad": 1}
    out, cache = compat.conv_forward_naive(x, w, b, conv_param)
    dout = rng.randn(*out.shape)
    dx, dw, db = compat.conv_backward_naive(dout, cache)
    assert norm_rel_error(dx, numeric_vjp(lambda a: naive.conv_forward_naive(a, w, b, conv_param)[0], x, dout)) <= 1e-8
    assert norm_rel_error(dw, numeric_vjp(lambda a: naive.conv_forward_naive(x, a, b, conv_param)[0], w, dout)) <= 1e-8
    assert norm_rel_error(db, numeric_vjp(lambda a: naive.conv_forward_naive(x, w, a, conv_param)[0], b, dout)) <= 1e-8
    xp = rng.permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) / 10.0  # distinct values, no ties
    pool_param = {"pool_height": 3, "pool_width": 3, "stride": 2}
    out, cache = compat.max_pool_forward_naive(xp, pool_param)
    dout = rng.randn(*out.shape)
    num = numeric_vjp(lambda a: naive.max_pool_forward_naive(a, pool_param)[0], xp, dout)
    assert norm_rel_error(compat.max_pool_backward_naive(dout, cache), num) <= 1e-8


def test_sandwich_layers_match_the_course(rng, x64):
    x, w, b = rng.randn(3, 2, 4), rng.randn(8, 5), rng.randn(5)
    out, cache = compat.affine_relu_forward(x, w, b)
    out_s, cache_s = naive.affine_relu_forward(x, w, b)
    assert rel_error(out, out_s) <= TOL
    dout = rng.randn(*out.shape)
    for g, g_s in zip(compat.affine_relu_backward(dout, cache), naive.affine_relu_backward(dout, cache_s), strict=True):
        assert g.shape == g_s.shape and rel_error(g, g_s) <= TOL

    x, w, b = rng.randn(2, 3, 8, 8), rng.randn(3, 3, 3, 3), rng.randn(3)
    conv_param, pool_param = {"stride": 1, "pad": 1}, {"pool_height": 2, "pool_width": 2, "stride": 2}
    for fwd, bwd, extra in (
        ("conv_relu_forward", "conv_relu_backward", (conv_param,)),
        ("conv_relu_pool_forward", "conv_relu_pool_backward", (conv_param, pool_param)),
    ):
        out, cache = getattr(compat, fwd)(x, w, b, *extra)
        out_s, cache_s = getattr(naive, fwd)(x, w, b, *extra)
        assert isinstance(out, np.ndarray) and rel_error(out, out_s) <= TOL
        dout = rng.randn(*out.shape)
        grads = getattr(compat, bwd)(dout, cache)
        for g, g_s in zip(grads, getattr(naive, bwd)(dout, cache_s), strict=True):
            assert g.shape == g_s.shape and rel_error(g, g_s) <= TOL
        num = numeric_vjp(lambda a, fwd=fwd, extra=extra: getattr(naive, fwd)(x, a, b, *extra)[0], w, dout)
        assert norm_rel_error(grads[1], num) <= 1e-8


def test_conv_compat_errors_name_the_shapes():
    x, w, b = np.ones((2, 3, 5, 5), np.float32), np.ones((4, 2, 3, 3), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"conv2d: w has 2 input channels but x has 3"):
        compat.conv_forward_naive(x, w, b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r"max_pool2d: pool_size \(6, 2\) is larger"):
        compat.max_pool_forward_naive(x, {"pool_height": 6, "pool_width": 2, "stride": 2})


def test_star_import_gives_the_conv_names():
    namespace: dict = {}
    exec("from jaxlayers.compat import *", namespace)
    for name in [
        "conv_forward_naive",
        "conv_backward_naive",
        "conv_forward_fast",
        "conv_backward_fast",
        "max_pool_forward_naive",
        "max_pool_backward_naive",
        "max_pool_forward_fast",
        "max_pool_backward_fast",
        "affine_relu_forward",
        "affine_relu_backward",
        "conv_relu_forward",
        "conv_relu_backward",
        "conv_relu_pool_forward",
        "conv_relu_pool_backward",
    ]:
        assert callable(namespace[name])
