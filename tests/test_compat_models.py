"""The course's model classes, Solver and update rules in jaxlayers.compat, used as its notebooks use them.

The cells below are transcriptions of the course's notebooks (two-layer net, fully connected nets,
batch normalization, dropout, convolutional networks): build a model, set ``params``, call ``loss``,
check the gradients numerically with the course's ``eval_numerical_gradient`` (which changes
``model.params[name]`` in place between calls), train with ``Solver``. Where the notebook prints a
reference number it is asserted; the analytic gradients are also compared with a NumPy
transcription of the course's models (built from the NumPy layers in ``seed_numpy*``) to 1e-9.
"""

# The course draws its weights, data and minibatches from NumPy's legacy global generator
# (np.random.seed / randn), and so do these transcriptions of its cells.
# ruff: noqa: NPY002

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import seed_numpy as seed
import seed_numpy_conv as seed_conv
import seed_numpy_norms as seed_norms
from _helpers import eval_numerical_gradient

import jaxlayers as jl
from jaxlayers import compat
from jaxlayers.compat import (
    CaptioningSolver,
    FullyConnectedNet,
    Solver,
    ThreeLayerConvNet,
    TwoLayerNet,
    adam,
    optim,
    rmsprop,
    sgd,
    sgd_momentum,
)

TOL = 1e-9


# --- the course's gradient-check helpers, transcribed (cs231n/gradient_check.py and the notebooks) ---


def rel_error(x, y):
    """returns relative error"""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def numeric_errors(model, X, y, h=1e-5):
    _, grads = model.loss(X, y)
    errors = {}
    for name in sorted(grads):

        def f(_):
            return model.loss(X, y)[0]

        grad_num = eval_numerical_gradient(f, model.params[name], verbose=False, h=h)
        errors[name] = rel_error(grad_num, grads[name])
    return errors


# --- a NumPy transcription of the course's fc_net.py / cnn.py losses, on the NumPy layers ---


def np_fc_loss(model, X, y):
    p, n, norm = model.params, model.num_layers, model.normalization
    bn_params = [dict(b) for b in model.bn_params]
    h, caches = X, []
    for i in range(1, n):
        h, fc = seed.affine_forward(h, p[f"W{i}"], p[f"b{i}"])
        nc = None
        if norm == "batchnorm":
            h, nc = seed.batchnorm_forward(h, p[f"gamma{i}"], p[f"beta{i}"], {**bn_params[i - 1], "mode": "train"})
        elif norm == "layernorm":
            h, nc = seed_norms.layernorm_forward(h, p[f"gamma{i}"], p[f"beta{i}"], {})
        h, rc = seed.relu_forward(h)
        caches.append((fc, nc, rc))
    scores, oc = seed.affine_forward(h, p[f"W{n}"], p[f"b{n}"])
    loss, dh = seed.softmax_loss(scores, y)
    grads = {}
    dh, grads[f"W{n}"], grads[f"b{n}"] = seed.affine_backward(dh, oc)
    for i in range(n - 1, 0, -1):
        fc, nc, rc = caches[i - 1]
        dh = seed.relu_backward(dh, rc)
        if norm == "batchnorm":
            dh, grads[f"gamma{i}"], grads[f"beta{i}"] = seed.batchnorm_backward(dh, nc)
        elif norm == "layernorm":
            dh, grads[f"gamma{i}"], grads[f"beta{i}"] = seed_norms.layernorm_backward(dh, nc)
        dh, grads[f"W{i}"], grads[f"b{i}"] = seed.affine_backward(dh, fc)
    for i in range(1, n + 1):
        loss += 0.5 * model.reg * np.sum(p[f"W{i}"] ** 2)
        grads[f"W{i}"] = grads[f"W{i}"] + model.reg * p[f"W{i}"]
    return loss, grads


def np_convnet_loss(model, X, y):
    p = model.params
    conv_param = {"stride": 1, "pad": (p["W1"].shape[2] - 1) // 2}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    h1, c1 = seed_conv.conv_relu_pool_forward(X, p["W1"], p["b1"], conv_param, pool_param)
    h2, c2 = seed_conv.affine_relu_forward(h1, p["W2"], p["b2"])
    scores, c3 = seed_conv.affine_forward(h2, p["W3"], p["b3"])
    loss, ds = seed.softmax_loss(scores, y)
    grads = {}
    dh2, grads["W3"], grads["b3"] = seed_conv.affine_backward(ds, c3)
    dh1, grads["W2"], grads["b2"] = seed_conv.affine_relu_backward(dh2, c2)
    _, grads["W1"], grads["b1"] = seed_conv.conv_relu_pool_backward(dh1, c1)
    for k in ("W1", "W2", "W3"):
        loss += 0.5 * model.reg * np.sum(p[k] ** 2)
        grads[k] = grads[k] + model.reg * p[k]
    return loss, grads


def assert_matches_numpy(loss, grads, loss_np, grads_np, params):
    assert abs(loss - loss_np) <= TOL * max(1.0, abs(loss_np))
    assert sorted(grads) == sorted(params) == sorted(grads_np)
    for k in params:
        assert isinstance(grads[k], np.ndarray) and grads[k].shape == params[k].shape
        assert grads[k].dtype == params[k].dtype
        assert rel_error(grads[k], grads_np[k]) <= TOL or np.abs(grads[k] - grads_np[k]).max() <= 1e-14, k


# --- two-layer net (the course's FullyConnectedNets notebook, "TwoLayerNet" cell) ---


def test_two_layer_net_notebook_cell(x64):
    np.random.seed(231)
    N, D, H, C = 3, 5, 50, 7
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=N)

    std = 1e-3
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)

    # Testing initialization
    W1_std = abs(model.params["W1"].std() - std)
    b1 = model.params["b1"]
    W2_std = abs(model.params["W2"].std() - std)
    b2 = model.params["b2"]
    assert W1_std < std / 10, "First layer weights do not seem right"
    assert np.all(b1 == 0), "First layer biases do not seem right"
    assert W2_std < std / 10, "Second layer weights do not seem right"
    assert np.all(b2 == 0), "Second layer biases do not seem right"

    # Testing test-time forward pass
    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    scores = model.loss(X)
    correct_scores = np.asarray(
        [
            [11.53165108, 12.2917344, 13.05181771, 13.81190102, 14.57198434, 15.33206765, 16.09215096],
            [12.05769098, 12.74614105, 13.43459113, 14.1230412, 14.81149128, 15.49994135, 16.18839143],
            [12.58373087, 13.20054771, 13.81736455, 14.43418138, 15.05099822, 15.66781506, 16.2846319],
        ]
    )
    scores_diff = np.abs(scores - correct_scores).sum()
    assert scores_diff < 1e-6, "Problem with test-time forward pass"
    assert scores.dtype == np.float64 and scores.flags.writeable

    # Testing training loss (no regularization)
    y = np.asarray([0, 5, 1])
    loss, _grads = model.loss(X, y)
    correct_loss = 3.4702243556
    assert abs(loss - correct_loss) < 1e-10, "Problem with training-time loss"

    model.reg = 1.0
    loss, _grads = model.loss(X, y)
    correct_loss = 26.5948426952
    assert abs(loss - correct_loss) < 1e-10, "Problem with regularization loss"

    # Errors should be around e-7 or less
    for reg in [0.0, 0.7]:
        model.reg = reg
        errors = numeric_errors(model, X, y)
        assert sorted(errors) == ["W1", "W2", "b1", "b2"]
        assert max(errors.values()) < 1e-6, errors


def test_two_layer_net_gradients_match_numpy(x64):
    np.random.seed(0)
    model = TwoLayerNet(input_dim=12, hidden_dim=9, num_classes=4, weight_scale=0.5, reg=0.3)
    X, y = np.random.randn(6, 3, 4), np.random.randint(4, size=6)
    loss, grads = model.loss(X, y)
    fc = FullyConnectedNet([9], input_dim=12, num_classes=4, reg=0.3, dtype=np.float64)
    fc.params = {k: model.params[k].copy() for k in ("W1", "b1", "W2", "b2")}
    assert_matches_numpy(loss, grads, *np_fc_loss(fc, X, y), model.params)


# --- fully connected nets: "initial loss and gradient check", both keyword spellings ---


def _fc_cell_data():
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    return X, y, (N, D, H1, H2, C)


def test_fc_net_initial_loss_and_gradient_check_cell(x64):
    """The FullyConnectedNets notebook's cell; its printed initial losses are the course's."""
    X, y, (_N, D, H1, H2, C) = _fc_cell_data()
    course_initial_loss = {0: 2.3004790897684924, 3.14: 7.052114776533016}
    for reg in [0, 3.14]:
        model = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, reg=reg, weight_scale=5e-2, dtype=np.float64)
        loss, grads = model.loss(X, y)
        assert abs(loss - course_initial_loss[reg]) < 1e-10
        assert_matches_numpy(loss, grads, *np_fc_loss(model, X, y), model.params)
        # "Most of the errors should be on the order of e-7 or smaller. NOTE: It is fine however to see
        # an error for W2 on the order of e-5 for the check when reg = 0.0" (a ReLU kink within h).
        errors = numeric_errors(model, X, y)
        assert sorted(errors) == ["W1", "W2", "W3", "b1", "b2", "b3"]
        for name, err in errors.items():
            assert err < (1e-4 if (reg == 0 and name == "W2") else 1e-6), (reg, name, err)


SPELLINGS = [
    # (newer spelling, older spelling) of the same network
    ({"normalization": "batchnorm"}, {"use_batchnorm": True}),
    ({"normalization": "batchnorm"}, {"normalization": "batchnorm", "dropout": 1}),
    ({"normalization": "layernorm"}, {"normalization": "layernorm", "dropout": 0}),
    ({"dropout_keep_ratio": 0.75, "seed": 123}, {"dropout": 0.75, "seed": 123}),
    ({}, {"dropout": 0, "use_batchnorm": False}),
]


@pytest.mark.parametrize(("new", "old"), SPELLINGS, ids=["bn", "bn-2018", "ln", "dropout", "plain-2017"])
def test_fc_net_both_spellings_give_the_course_network(x64, new, old):
    X, y, (_N, D, H1, H2, C) = _fc_cell_data()
    results = []
    for kwargs in (new, old):
        np.random.seed(0)
        model = FullyConnectedNet(
            [H1, H2], input_dim=D, num_classes=C, reg=3.14, weight_scale=5e-2, dtype=np.float64, **kwargs
        )
        results.append((model, *model.loss(X, y)))
    (m_new, loss_new, g_new), (m_old, loss_old, g_old) = results
    assert (m_new.normalization, m_new.use_dropout, m_new.use_batchnorm) == (
        m_old.normalization,
        m_old.use_dropout,
        m_old.use_batchnorm,
    )
    assert m_new.dropout_param == m_old.dropout_param
    assert loss_new == loss_old and all(np.array_equal(g_new[k], g_old[k]) for k in g_new)
    norm = m_new.normalization
    if norm is not None:
        assert {f"gamma{i}" for i in (1, 2)} | {f"beta{i}" for i in (1, 2)} <= set(m_new.params)
        assert np.all(m_new.params["gamma1"] == 1) and np.all(m_new.params["beta2"] == 0)
        assert len(m_new.bn_params) == 2
    if norm == "batchnorm":  # train mode set by loss(X, y), running statistics added in place
        assert all(
            b["mode"] == "train" and b["running_mean"].shape == (H1 if i == 0 else H2,)
            for i, b in enumerate(m_new.bn_params)
        )
    if norm == "layernorm":
        assert m_new.bn_params == [{}, {}]
    if m_new.use_dropout:
        assert m_new.dropout_param == {"mode": "train", "p": 0.75, "seed": 123}
    else:
        assert m_new.dropout_param == {}
        np.random.seed(0)
        assert_matches_numpy(loss_new, g_new, *np_fc_loss(m_new, X, y), m_new.params)


def test_fc_net_batchnorm_gradient_check_cell(x64):
    """The BatchNormalization notebook's cell (smaller hidden layers, to keep the suite quick)."""
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 6, 7, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    for reg in [0, 3.14]:
        model = FullyConnectedNet(
            [H1, H2],
            input_dim=D,
            num_classes=C,
            reg=reg,
            weight_scale=5e-2,
            dtype=np.float64,
            normalization="batchnorm",
        )
        _, grads = model.loss(X, y)
        errors = numeric_errors(model, X, y)
        # "You should expect losses between 1e-4~1e-10 for W, losses between 1e-08~1e-10 for b, and
        # losses between 1e-08~1e-09 for beta and gammas." b1, b2 feed a batchnorm: their true gradient
        # is zero, so their rel_error is noise / 1e-8; they are checked by value instead.
        for name, err in errors.items():
            if name in ("b1", "b2"):
                assert np.abs(grads[name]).max() < 1e-12
            else:
                assert err < (1e-3 if name.startswith("W") else 1e-6), (reg, name, err)


@pytest.mark.parametrize("spelling", ["dropout_keep_ratio", "dropout"])
def test_fc_net_dropout_gradient_check_cell(x64, spelling):
    """The Dropout notebook's cell (smaller hidden layers): with a seed the mask is the same at every call.

    (Far fewer hidden units than the course's 20 and 30 would let dropout silence a whole row, putting the
    next pre-activation exactly on ReLU's kink at 0, where the finite difference sees half a slope.)
    """
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 10, 12, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    for keep in [1, 0.75, 0.5]:
        model = FullyConnectedNet(
            [H1, H2], input_dim=D, num_classes=C, weight_scale=5e-2, dtype=np.float64, seed=123, **{spelling: keep}
        )
        assert model.use_dropout == (keep != 1)
        loss, _ = model.loss(X, y)
        assert 2.0 < loss < 2.6  # "Initial loss" near log(10)
        errors = numeric_errors(model, X, y)
        # "Relative errors should be around e-6 or less; Note that it's fine if for
        # dropout_keep_ratio=1 you have W2 error be on the order of e-5."
        assert max(errors.values()) < 1e-4, errors
        if keep != 1:  # test mode: no dropout, the scores of the same net without it
            scores = model.loss(X)
            assert model.dropout_param["mode"] == "test"
            plain = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, dtype=np.float64)
            plain.params = model.params
            np.testing.assert_allclose(scores, plain.loss(X), rtol=1e-12)


def test_fc_net_batchnorm_test_mode_uses_running_statistics(x64):
    np.random.seed(1)
    model = FullyConnectedNet([5], input_dim=4, num_classes=3, normalization="batchnorm", dtype=np.float64)
    X, y = np.random.randn(8, 4) * 2 + 1, np.random.randint(3, size=8)
    model.loss(X, y)
    bn = model.bn_params[0]
    h = X @ model.params["W1"] + model.params["b1"]
    np.testing.assert_allclose(bn["running_mean"], 0.1 * h.mean(0), rtol=1e-10)  # momentum 0.9, from zeros
    scores = model.loss(X)
    assert bn["mode"] == "test"
    hn = (h - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-5)
    expected = np.maximum(hn, 0) @ model.params["W2"] + model.params["b2"]
    np.testing.assert_allclose(scores, expected, rtol=1e-10)


def test_fc_net_keyword_errors_and_the_2017_warning():
    with pytest.raises(TypeError, match="dropout_keep_ratio= or its older spelling dropout="):
        FullyConnectedNet([3], input_dim=2, dropout=0.5, dropout_keep_ratio=0.5)
    with pytest.raises(TypeError, match="normalization= or its older spelling use_batchnorm="):
        FullyConnectedNet([3], input_dim=2, use_batchnorm=True, normalization="batchnorm")
    with pytest.raises(ValueError, match="normalization must be None, 'batchnorm' or 'layernorm', got 'groupnorm'"):
        FullyConnectedNet([3], input_dim=2, normalization="groupnorm")
    with pytest.raises(ValueError, match=r"dropout_keep_ratio .* must be in \(0, 1\], got 1.5"):
        FullyConnectedNet([3], input_dim=2, dropout_keep_ratio=1.5)
    with pytest.raises(ValueError, match=r"dropout_keep_ratio .* must be in \(0, 1\], got 0.0"):
        FullyConnectedNet([3], input_dim=2, dropout_keep_ratio=0)
    with pytest.warns(UserWarning, match="probability of KEEPING"):
        m = FullyConnectedNet([3], input_dim=2, dropout=0.25, use_batchnorm=True)
    assert m.dropout_param["p"] == 0.25 and m.normalization == "batchnorm"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = FullyConnectedNet([3], 2, 10, 0.5, True)  # the 2017 positional order: dropout, use_batchnorm
    assert m.use_batchnorm and m.dropout_param["p"] == 0.5


def test_fc_net_dtype_float32_and_writable_params():
    np.random.seed(0)
    model = FullyConnectedNet([10, 10], input_dim=6, num_classes=3, normalization="layernorm")
    assert all(v.dtype == np.float32 and v.flags.writeable for v in model.params.values())
    X, y = np.random.randn(4, 6), np.array([0, 1, 2, 0])
    loss, grads = model.loss(X, y)
    assert all(grads[k].dtype == np.float32 and grads[k].flags.writeable for k in grads)
    assert model.loss(X).dtype == np.float32
    assert np.isfinite(loss) and 0.5 < loss < 2.0


# --- three-layer convnet (the course's ConvolutionalNetworks notebook) ---


def test_three_layer_convnet_sanity_check_loss(x64):
    """'Sanity check loss': log(C) for small weights, larger with regularization."""
    np.random.seed(231)
    model = ThreeLayerConvNet(input_dim=(3, 16, 16), num_filters=8, hidden_dim=20)
    N = 10
    X = np.random.randn(N, 3, 16, 16)
    y = np.random.randint(10, size=N)
    loss, grads = model.loss(X, y)
    assert sorted(grads) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert abs(loss - np.log(10)) < 1e-2, loss
    model.reg = 0.5
    loss_reg, _ = model.loss(X, y)
    assert loss_reg > loss
    assert model.params["W2"].shape == (8 * 8 * 8, 20)


def test_three_layer_convnet_gradient_check_cell(x64):
    num_inputs = 2
    input_dim = (3, 16, 16)
    reg = 0.0
    num_classes = 10
    np.random.seed(231)
    X = np.random.randn(num_inputs, *input_dim)
    y = np.random.randint(num_classes, size=num_inputs)

    model = ThreeLayerConvNet(
        num_filters=3, filter_size=3, input_dim=input_dim, hidden_dim=7, dtype=np.float64, reg=reg
    )
    loss, grads = model.loss(X, y)
    assert_matches_numpy(loss, grads, *np_convnet_loss(model, X, y), model.params)
    # "Errors should be small, but correct implementations may have relative errors up to the order of e-2"
    # (ReLU and max-pool kinks within h); W1 (243 entries) and the biases are checked here, W2 by the
    # NumPy transcription above.
    for param_name in ["W1", "W3", "b1", "b2", "b3"]:

        def f(_):
            return model.loss(X, y)[0]

        param_grad_num = eval_numerical_gradient(f, model.params[param_name], verbose=False, h=1e-6)
        e = rel_error(param_grad_num, grads[param_name])
        assert e < 1e-2, (param_name, e)


def test_three_layer_convnet_even_filter_and_reg_match_numpy(x64):
    np.random.seed(3)
    model = ThreeLayerConvNet(
        input_dim=(2, 7, 7),
        num_filters=4,
        filter_size=4,
        hidden_dim=5,
        num_classes=3,
        weight_scale=0.3,
        reg=0.2,
        dtype=np.float64,
    )
    X, y = np.random.randn(3, 2, 7, 7), np.random.randint(3, size=3)
    loss, grads = model.loss(X, y)
    assert_matches_numpy(loss, grads, *np_convnet_loss(model, X, y), model.params)


# --- the update rules (the course's FullyConnectedNets notebook cells) ---


def _wd():
    N, D = 4, 5
    w = np.linspace(-0.4, 0.6, num=N * D).reshape(N, D)
    dw = np.linspace(-0.6, 0.4, num=N * D).reshape(N, D)
    return N, D, w, dw


def test_sgd_momentum_cell():
    N, D, w, dw = _wd()
    v = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    config = {"learning_rate": 1e-3, "velocity": v}
    next_w, _ = sgd_momentum(w, dw, config=config)
    expected_next_w = np.asarray(
        [
            [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
            [0.47454737, 0.54133684, 0.60812632, 0.67491579, 0.74170526],
            [0.80849474, 0.87528421, 0.94207368, 1.00886316, 1.07565263],
            [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096],
        ]
    )
    expected_velocity = np.asarray(
        [
            [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158],
            [0.61138947, 0.62554737, 0.63970526, 0.65386316, 0.66802105],
            [0.68217895, 0.69633684, 0.71049474, 0.72465263, 0.73881053],
            [0.75296842, 0.76712632, 0.78128421, 0.79544211, 0.8096],
        ]
    )
    # Should see relative errors around e-8 or less
    assert rel_error(next_w, expected_next_w) < 1e-6
    assert rel_error(expected_velocity, config["velocity"]) < 1e-6


def test_rmsprop_cell():
    N, D, w, dw = _wd()
    cache = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    config = {"learning_rate": 1e-2, "cache": cache}
    next_w, _ = rmsprop(w, dw, config=config)
    expected_next_w = np.asarray(
        [
            [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
            [-0.132737, -0.08078555, -0.02881884, 0.02316247, 0.07515774],
            [0.12716641, 0.17918792, 0.23122175, 0.28326742, 0.33532447],
            [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619],
        ]
    )
    expected_cache = np.asarray(
        [
            [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321],
            [0.67329252, 0.68859723, 0.70395734, 0.71937285, 0.73484377],
            [0.75037008, 0.7659518, 0.78158892, 0.79728144, 0.81302936],
            [0.82883269, 0.84469141, 0.86060554, 0.87657507, 0.8926],
        ]
    )
    # You should see relative errors around e-7 or less
    assert rel_error(expected_next_w, next_w) < 1e-6
    assert rel_error(expected_cache, config["cache"]) < 1e-6


def test_adam_cell():
    N, D, w, dw = _wd()
    m = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    v = np.linspace(0.7, 0.5, num=N * D).reshape(N, D)
    config = {"learning_rate": 1e-2, "m": m, "v": v, "t": 5}
    next_w, _ = adam(w, dw, config=config)
    expected_next_w = np.asarray(
        [
            [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
            [-0.1380274, -0.08544591, -0.03286534, 0.01971428, 0.0722929],
            [0.1248705, 0.17744702, 0.23002243, 0.28259667, 0.33516969],
            [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459],
        ]
    )
    expected_v = np.asarray(
        [
            [0.69966, 0.68908382, 0.67851319, 0.66794809, 0.65738853],
            [0.64683452, 0.63628604, 0.6257431, 0.61520571, 0.60467385],
            [0.59414753, 0.58362676, 0.57311152, 0.56260183, 0.55209767],
            [0.54159906, 0.53110598, 0.52061845, 0.51013645, 0.49966],
        ]
    )
    expected_m = np.asarray(
        [
            [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
            [0.57736842, 0.59684211, 0.61631579, 0.63578947, 0.65526316],
            [0.67473684, 0.69421053, 0.71368421, 0.73315789, 0.75263158],
            [0.77210526, 0.79157895, 0.81105263, 0.83052632, 0.85],
        ]
    )
    # You should see relative errors around e-7 or less
    assert rel_error(expected_next_w, next_w) < 1e-6
    assert rel_error(expected_v, config["v"]) < 1e-6
    assert rel_error(expected_m, config["m"]) < 1e-6
    assert config["t"] == 6


def test_update_rule_defaults_and_namespace():
    w, dw = np.ones(3), np.full(3, 2.0)
    _, c = sgd(w.copy(), dw)
    assert c == {"learning_rate": 1e-2}
    _, c = sgd_momentum(w, dw)
    assert (c["learning_rate"], c["momentum"]) == (1e-2, 0.9)
    _, c = rmsprop(w, dw)
    assert (c["learning_rate"], c["decay_rate"], c["epsilon"]) == (1e-2, 0.99, 1e-8)
    _, c = adam(w, dw)
    assert (c["learning_rate"], c["beta1"], c["beta2"], c["epsilon"], c["t"]) == (1e-3, 0.9, 0.999, 1e-8, 1)
    # sgd updates in place, as the course's; the others return a new array
    w2 = w.copy()
    out, _ = sgd(w2, dw, {"learning_rate": 0.5})
    assert out is w2 and np.all(w2 == 0)
    assert optim.adam is adam and optim.sgd_momentum is sgd_momentum and compat.optim.rmsprop is rmsprop
    with pytest.raises(ValueError, match=r"adam: w and dw must have the same shape, got w \(3,\) and dw \(2,\)"):
        adam(w, np.ones(2))


# --- Solver ---


@pytest.fixture(scope="module")
def digits():
    return jl.data.load("digits")


def test_solver_overfits_50_digits(x64, digits):
    """'Overfit a small dataset': 50 training examples to 100% training accuracy, the course's Solver cell."""
    num_train = 50
    small_data = {
        "X_train": digits.X_train[:num_train],
        "y_train": digits.y_train[:num_train],
        "X_val": digits.X_val,
        "y_val": digits.y_val,
    }
    np.random.seed(231)
    weight_scale = 1e-1
    learning_rate = 1e-1
    model = FullyConnectedNet([100, 100], input_dim=64, weight_scale=weight_scale, dtype=np.float64)
    solver = Solver(
        model,
        small_data,
        print_every=10,
        num_epochs=20,
        batch_size=25,
        update_rule="sgd",
        optim_config={"learning_rate": learning_rate},
        verbose=False,
    )
    solver.train()
    assert len(solver.loss_history) == 20 * 2
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 21  # first step, then every epoch
    assert solver.train_acc_history[-1] == 1.0
    assert solver.check_accuracy(small_data["X_train"], small_data["y_train"]) == 1.0
    assert solver.best_val_acc == max(solver.val_acc_history) > 0.5
    assert model.params is solver.best_params
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]


@pytest.mark.parametrize("update_rule", ["sgd_momentum", "rmsprop", "adam"])
def test_solver_update_rules_train_a_two_layer_net(x64, digits, update_rule, capsys):
    """The course's TwoLayerNet Solver cell (lr_decay, print_every), on digits: each rule learns."""
    data = {"X_train": digits.X_train, "y_train": digits.y_train, "X_val": digits.X_val, "y_val": digits.y_val}
    np.random.seed(0)
    model = TwoLayerNet(input_dim=64, hidden_dim=50, weight_scale=1e-1)
    lr = {"sgd_momentum": 5e-2, "rmsprop": 5e-3, "adam": 5e-3}[update_rule]
    solver = Solver(
        model,
        data,
        update_rule=update_rule,
        optim_config={"learning_rate": lr},
        lr_decay=0.95,
        num_epochs=3,
        batch_size=100,
        print_every=10,
    )
    solver.train()
    out = capsys.readouterr().out
    assert "(Iteration 1 / 36) loss:" in out and "(Epoch 3 / 3) train acc:" in out
    assert solver.best_val_acc >= 0.85, solver.val_acc_history
    assert all(abs(c["learning_rate"] - lr * 0.95**3) < 1e-15 for c in solver.optim_configs.values())
    assert all(c is not solver.optim_config for c in solver.optim_configs.values())


def halve_step(w, dw, config):
    """A custom update rule (module level: the checkpoint pickles the solver's rule with the model)."""
    config["n"] = config.get("n", 0) + 1
    return w - 0.5 * dw, config


def test_solver_callable_rule_checkpoints_and_errors(x64, tmp_path):
    np.random.seed(0)
    X = np.random.randn(40, 6)
    y = (X[:, 0] > 0).astype(np.int64)
    data = {"X_train": X[:30], "y_train": y[:30], "X_val": X[30:], "y_val": y[30:]}
    model = TwoLayerNet(input_dim=6, hidden_dim=8, num_classes=2, weight_scale=0.1)
    name = str(tmp_path / "ckpt")
    solver = Solver(
        model,
        data,
        update_rule=halve_step,
        num_epochs=2,
        batch_size=10,
        checkpoint_name=name,
        verbose=False,
        num_train_samples=None,
    )
    solver.train()
    assert all(solver.optim_configs[k]["n"] == 2 * 3 for k in model.params)  # epochs * steps per epoch
    with open(f"{name}_epoch_2.pkl", "rb") as f:
        ckpt = pickle.load(f)
    assert ckpt["epoch"] == 2 and len(ckpt["loss_history"]) == 6 and isinstance(ckpt["model"], TwoLayerNet)
    assert set(ckpt["model"].params) == {"W1", "b1", "W2", "b2"}

    solver._reset()
    assert solver.loss_history == [] and solver.best_val_acc == 0 and solver.epoch == 0
    solver._step()
    assert len(solver.loss_history) == 1

    # check_accuracy: batches, num_samples, an empty split
    acc = solver.check_accuracy(X, y, batch_size=7)
    assert acc == np.mean(np.argmax(model.loss(X), 1) == y)
    assert 0 <= solver.check_accuracy(X, y, num_samples=5) <= 1

    with pytest.raises(ValueError, match='Unrecognized arguments "learning_rate"'):
        Solver(model, data, learning_rate=1e-3)
    with pytest.raises(ValueError, match='Invalid update_rule "adagrad"'):
        Solver(model, data, update_rule="adagrad")


# --- CaptioningSolver, with a stand-in of the course's captioning-model interface ---


class BagOfWordsCaptioner:
    """A stand-in for the course's CaptioningRNN interface: params dict, loss(features, captions).

    Predicts every word of the caption after <START> from the image features alone (softmax of
    features @ W_vocab + b_vocab), with the compat layer functions; <NULL> words are masked out.
    """

    def __init__(self, word_to_idx, input_dim, dtype=np.float64):
        self.word_to_idx = word_to_idx
        self._null = word_to_idx["<NULL>"]
        V = len(word_to_idx)
        self.params = {"W_vocab": np.random.randn(input_dim, V).astype(dtype) * 0.01, "b_vocab": np.zeros(V, dtype)}

    def loss(self, features, captions):
        captions_out = captions[:, 1:]
        mask = captions_out != self._null
        scores, cache = compat.affine_forward(features, self.params["W_vocab"], self.params["b_vocab"])
        N, T = captions_out.shape
        rows = np.repeat(np.arange(N), T)[mask.ravel()]
        loss, dx = compat.softmax_loss(scores[rows], captions_out.ravel()[mask.ravel()])
        dscores = np.zeros_like(scores)
        np.add.at(dscores, rows, dx)
        _, dW, db = compat.affine_backward(dscores, cache)
        return loss, {"W_vocab": dW, "b_vocab": db}


def test_captioning_solver_trains_a_stand_in_model(x64, capsys):
    words = ["<NULL>", "<START>", "<END>", "zero", "one", "two"]
    word_to_idx = {w: i for i, w in enumerate(words)}
    np.random.seed(0)
    num_images, D = 12, 8
    labels = np.random.randint(3, size=num_images)
    features = np.random.randn(num_images, D) + 3 * np.eye(3, D)[labels]
    image_idxs = np.repeat(np.arange(num_images), 2)  # two captions per image, as COCO has several
    captions = np.stack([[1, 3 + labels[i], 2, 0] for i in image_idxs])
    data = {
        "train_captions": captions,
        "train_image_idxs": image_idxs,
        "train_features": features,
        "idx_to_word": words,
        "word_to_idx": word_to_idx,
    }
    captions_mb, features_mb, urls = compat.sample_coco_minibatch(data, batch_size=5)
    assert captions_mb.shape == (5, 4) and features_mb.shape == (5, D) and urls is None

    model = BagOfWordsCaptioner(word_to_idx, input_dim=D)
    solver = CaptioningSolver(
        model,
        data,
        update_rule="adam",
        num_epochs=30,
        batch_size=8,
        optim_config={"learning_rate": 5e-2},
        lr_decay=0.99,
        verbose=True,
        print_every=20,
    )
    solver.train()
    assert "(Iteration 1 / 90) loss:" in capsys.readouterr().out
    assert len(solver.loss_history) == 30 * 3 and solver.epoch == 30
    assert np.mean(solver.loss_history[-10:]) < 0.5 * np.mean(solver.loss_history[:3])
    assert abs(solver.optim_configs["W_vocab"]["learning_rate"] - 5e-2 * 0.99**30) < 1e-12
    with pytest.raises(ValueError, match='Unrecognized arguments "num_train_samples"'):
        CaptioningSolver(model, data, num_train_samples=10)


def test_float64_params_without_x64_give_float64_grads():
    """x64 off: float64 is computed in float32 (compat warns, once per process); the gradients keep the
    parameters' dtype, so the Solver's updates stay float64."""
    np.random.seed(0)
    model = TwoLayerNet(input_dim=4, hidden_dim=3, num_classes=2, weight_scale=0.5)
    X, y = np.random.randn(5, 4), np.array([0, 1, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss, grads = model.loss(X, y)
        scores = model.loss(X)
    assert all(grads[k].dtype == np.float64 and grads[k].flags.writeable for k in grads)
    assert scores.shape == (5, 2) and np.isfinite(loss)


def test_shape_errors_name_the_layer_and_shapes():
    model = FullyConnectedNet([4], input_dim=6, num_classes=3)
    with pytest.raises(ValueError, match=r"w has 6 rows but x flattens to 5 features \(x shape \(2, 5\)"):
        model.loss(np.zeros((2, 5)), np.array([0, 1]))
    conv = ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=2, filter_size=3, hidden_dim=4)
    with pytest.raises(ValueError, match=r"conv2d: w has 1 input channels but x has 3 \(data_format 'NCHW': x shape"):
        conv.loss(np.zeros((2, 3, 8, 8), np.float32))
