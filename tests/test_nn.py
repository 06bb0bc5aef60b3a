"""jaxlayers.nn: every layer's shapes and errors, the naming rule, Sequential as a model of the protocol
(fit, fit_many, run directories), a user layer defined here, records, summaries, and the three models
as declarations (identical to hand-written Sequentials, bitwise)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import jaxlayers as jl
from jaxlayers import cli, nn

KEY = jax.random.key(0)


@nn.register_layer
class Scale:
    """A user layer, not a jaxlayers subclass: ``x * s`` with one learnable scalar ``s`` (starts at ``init``)."""

    random_init = False
    random_apply = False

    def __init__(self, init: float = 1.0):
        self.init_value = float(init)

    def init(self, key, input_shape):
        return {"s": jnp.asarray(self.init_value)}, {}, tuple(input_shape)

    def apply(self, params, state, x, *, train, key=None):
        return x * params["s"], state

    def to_dict(self):
        return {"init": self.init_value}


CASES = [
    (nn.Affine(5), (3, 4), (5,), {"W": (12, 5), "b": (5,)}),
    (nn.Conv2d(4, 3, padding=1), (2, 6, 6), (4, 6, 6), {"W": (4, 2, 3, 3), "b": (4,)}),
    (nn.Conv2d(4, (3, 1), stride=2), (2, 7, 6), (4, 3, 3), {"W": (4, 2, 3, 1), "b": (4,)}),
    (nn.MaxPool2d(2), (3, 6, 5), (3, 3, 2), {}),
    (nn.MaxPool2d(3, stride=1), (3, 6, 5), (3, 4, 3), {}),
    (nn.BatchNorm(momentum=0.8), (7,), (7,), {"gamma": (7,), "beta": (7,)}),
    (nn.SpatialBatchNorm(), (3, 4, 4), (3, 4, 4), {"gamma": (3,), "beta": (3,)}),
    (nn.LayerNorm(eps=1e-3), (7,), (7,), {"gamma": (7,), "beta": (7,)}),
    (nn.GroupNorm(2), (4, 3, 3), (4, 3, 3), {"gamma": (4,), "beta": (4,)}),
    (nn.ReLU(), (2, 3), (2, 3), {}),
    (nn.Dropout(0.5), (6,), (6,), {}),
    (nn.Flatten(), (2, 3, 4), (24,), {}),
    (nn.Residual(nn.Conv2d(2, 3, padding="same"), nn.ReLU()), (2, 5, 5), (2, 5, 5), {"W1": (2, 2, 3, 3), "b1": (2,)}),
    # channels last: one example (H, W, C); the parameters keep their layout
    (nn.Conv2d(4, (3, 1), stride=2, data_format="NHWC"), (7, 6, 2), (3, 3, 4), {"W": (4, 2, 3, 1), "b": (4,)}),
    (nn.MaxPool2d(3, stride=1, data_format="NHWC"), (6, 5, 3), (4, 3, 3), {}),
    (nn.SpatialBatchNorm(data_format="NHWC"), (4, 4, 3), (4, 4, 3), {"gamma": (3,), "beta": (3,)}),
    (nn.GroupNorm(2, data_format="NHWC"), (3, 3, 4), (3, 3, 4), {"gamma": (4,), "beta": (4,)}),
    (nn.ChannelsLast(), (2, 3, 4), (3, 4, 2), {}),
    (nn.ChannelsFirst(), (3, 4, 2), (2, 3, 4), {}),
]


@pytest.mark.parametrize(("layer", "in_shape", "out_shape", "param_shapes"), CASES, ids=lambda v: repr(v)[:30])
def test_every_layer_init_and_apply_shapes(layer, in_shape, out_shape, param_shapes):
    params, state, out = layer.init(KEY, in_shape)
    assert out == out_shape
    assert {k: tuple(v.shape) for k, v in params.items()} == param_shapes
    x = jax.random.normal(jax.random.key(1), (4, *in_shape))
    for train in (True, False):
        y, new_state = layer.apply(params, state, x, train=train, key=jax.random.key(2))
        assert y.shape == (4, *out_shape)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert isinstance(layer, nn.Layer)
    json.dumps(nn.layer_record(layer))
    assert repr(nn.layer_from_record(nn.layer_record(layer))) == repr(layer)


def test_layers_match_their_ops():
    x = jax.random.normal(KEY, (3, 2, 6, 6))
    conv = nn.Conv2d(4, 3, stride=1, padding=1)
    p, s, _ = conv.init(KEY, (2, 6, 6))
    np.testing.assert_array_equal(conv.apply(p, s, x, train=True)[0], jl.conv2d(x, p["W"], p["b"], padding=1))
    bn = nn.SpatialBatchNorm(momentum=0.5)
    p, s, _ = bn.init(KEY, (2, 6, 6))
    want = jl.spatial_batchnorm(x, p["gamma"], p["beta"], s, train=True, momentum=0.5)
    got = bn.apply(p, s, x, train=True)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    y, _ = nn.Dropout(0.5).apply({}, {}, x, train=True, key=jax.random.key(3))
    np.testing.assert_array_equal(y, jl.dropout(x, jax.random.key(3), rate=0.5, train=True))
    assert nn.Dropout(0.5).apply({}, {}, x, train=False)[0] is x


def test_nhwc_layers_are_the_nchw_layers_transposed():
    """Each image layer built with data_format="NHWC", between ChannelsLast and ChannelsFirst, computes
    what the NCHW layer computes from the same parameters and state."""
    x = jax.random.normal(KEY, (3, 4, 6, 6))
    for make in (
        lambda f: nn.Conv2d(5, 3, stride=(1, 2), padding=1, data_format=f),
        lambda f: nn.MaxPool2d(2, data_format=f),
        lambda f: nn.SpatialBatchNorm(momentum=0.5, data_format=f),
        lambda f: nn.GroupNorm(2, data_format=f),
    ):
        nchw, nhwc = make("NCHW"), make("NHWC")
        p, s, out_shape = nchw.init(KEY, (4, 6, 6))
        p_t, s_t, out_shape_t = nhwc.init(KEY, (6, 6, 4))
        jax.tree.map(np.testing.assert_array_equal, (p, s), (p_t, s_t))
        assert out_shape_t == (*out_shape[1:], out_shape[0])
        for train in (True, False):
            y, new = nchw.apply(p, s, x, train=train)
            y_t, new_t = nhwc.apply(p, s, nn.ChannelsLast().apply({}, {}, x, train=train)[0], train=train)
            np.testing.assert_allclose(nn.ChannelsFirst().apply({}, {}, y_t, train=train)[0], y, rtol=1e-5, atol=1e-5)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new, new_t)
    with pytest.raises(ValueError, match=r"nn.Conv2d: data_format must be one of 'NCHW', 'NHWC', got 'CHW'"):
        nn.Conv2d(3, 3, data_format="CHW")
    with pytest.raises(ValueError, match=r"nn.GroupNorm: groups=3 must divide the 4 channels of the input \(2, 2, 4\)"):
        nn.GroupNorm(3, data_format="NHWC").init(KEY, (2, 2, 4))


def test_layer_argument_errors():
    with pytest.raises(ValueError, match=r"nn.Affine: features must be"):
        nn.Affine(0)
    with pytest.raises(TypeError, match=r"nn.Conv2d: kernel_size"):
        nn.Conv2d(3, 2.5)
    with pytest.raises(ValueError, match=r"nn.Dropout: rate"):
        nn.Dropout(1.0)
    with pytest.raises(ValueError, match=r"nn.Conv2d: padding='same' needs an odd kernel"):
        nn.Conv2d(3, 2, padding="same")
    with pytest.raises(ValueError, match=r"nn.GroupNorm: groups=3 must divide the 4 channels of the input \(4, 2, 2\)"):
        nn.GroupNorm(3).init(KEY, (4, 2, 2))
    with pytest.raises(ValueError, match=r"nn.BatchNorm: needs inputs of shape \(D,\).*got input shape \(3, 4, 4\)"):
        nn.BatchNorm().init(KEY, (3, 4, 4))


def test_sequential_errors_name_the_layer_and_the_shapes():
    with pytest.raises(
        ValueError,
        match=r"layers\[2\] \(Conv2d\(4, 3\)\) with input shape \(16,\): nn.Conv2d: needs inputs of shape \(C, H, W\)",
    ):
        nn.Sequential(nn.Flatten(), nn.Affine(16), nn.Conv2d(4, 3), nn.Affine(10), input_shape=(1, 4, 4))
    with pytest.raises(
        ValueError, match=r"layers\[1\] \(Residual\) must keep the shape of its input.*map \(4, 6, 6\) to \(8, 6, 6\)"
    ):
        nn.Sequential(
            nn.Conv2d(4, 3, padding=1),
            nn.Residual(nn.Conv2d(8, 3, padding=1)),
            nn.Flatten(),
            nn.Affine(10),
            input_shape=(1, 6, 6),
        )
    with pytest.raises(ValueError, match=r"Residual.*map \(3, 4, 4\) to \(5, 4, 4\)"):
        nn.Residual(nn.Conv2d(5, 1)).init(KEY, (3, 4, 4))
    with pytest.raises(ValueError, match=r"must output class scores \(C,\).*got output shape \(4, 4, 4\)"):
        nn.Sequential(nn.Conv2d(4, 1), input_shape=(1, 4, 4))
    with pytest.raises(TypeError, match=r"layers\[1\] \(int\) is not a layer"):
        nn.Sequential(nn.Affine(3), 5, input_shape=(2,))
    with pytest.raises(
        ValueError, match=r"layers\[3\] would name a parameter or state 'gamma1', already taken by layers\[1\]"
    ):
        nn.Sequential(nn.Affine(8), nn.BatchNorm(), nn.ReLU(), nn.LayerNorm(), nn.Affine(3), input_shape=(4,))
    model = nn.Sequential(nn.Affine(8), nn.Dropout(0.5), nn.Affine(3), input_shape=(4,))
    params, state = model.init(KEY)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\).*got \(2, 5\)"):
        model.apply(params, state, jnp.ones((2, 5)), train=False)
    with pytest.raises(ValueError, match=r"PRNG key is required for dropout \(layers\[1\] \(Dropout\(0.5\)\)\)"):
        model.apply(params, state, jnp.ones((2, 4)), train=True)
    with pytest.raises(ValueError, match=r"params do not match this model: missing \['W2'\]"):
        model.apply({k: v for k, v in params.items() if k != "W2"}, state, jnp.ones((2, 4)), train=False)


def test_naming_rule_through_residual_blocks_and_user_layers():
    model = nn.Sequential(
        nn.Conv2d(4, 3, padding=1),
        nn.SpatialBatchNorm(),
        nn.ReLU(),
        nn.Residual(nn.Conv2d(4, 3, padding=1), nn.GroupNorm(2), nn.ReLU(), Scale(0.5)),
        nn.MaxPool2d(2),
        nn.Flatten(),
        Scale(),
        nn.Affine(10),
        input_shape=(1, 6, 6),
    )
    params, state = model.init(KEY)
    assert list(model.param_shapes()) == [
        "W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "Scale_7['s']", "Scale_10['s']", "W3", "b3",
    ]  # fmt: skip
    assert sorted(params) == sorted(
        ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "Scale_7", "Scale_10", "W3", "b3"]
    )
    assert float(params["Scale_7"]["s"]) == 0.5 and set(state) == {"bn1"} == model.state_keys()
    assert model.weight_names() == ["W1", "W2", "W3"]


def test_keys_split_once_per_random_layer():
    """Only the weight layers draw init keys: inserting deterministic layers changes nothing."""
    a = nn.Sequential(nn.Affine(8), nn.Affine(3), input_shape=(4,))
    b = nn.Sequential(nn.Affine(8), nn.BatchNorm(), nn.ReLU(), nn.Affine(3), input_shape=(4,))
    pa, _ = a.init(KEY)
    pb, _ = b.init(KEY)
    _, k2 = jax.random.split(KEY, 2)
    np.testing.assert_array_equal(pa["W1"], pb["W1"])
    np.testing.assert_array_equal(pa["W2"], np.sqrt(2 / 8) * jax.random.normal(k2, (8, 3)))


def test_sequential_equals_fully_connected_net_bitwise():
    fc = jl.FullyConnectedNet(hidden_dims=(16, 12), input_dim=64, num_classes=10, normalization="batchnorm",
                              dropout_rate=0.2, reg=0.1, weight_scale=0.05)  # fmt: skip
    seq = nn.Sequential(
        nn.Affine(16, weight_scale=0.05), nn.BatchNorm(), nn.ReLU(), nn.Dropout(0.2),
        nn.Affine(12, weight_scale=0.05), nn.BatchNorm(), nn.ReLU(), nn.Dropout(0.2),
        nn.Affine(10, weight_scale=0.05),
        input_shape=(64,), reg=0.1,
    )  # fmt: skip
    p1, s1 = fc.init(KEY)
    p2, s2 = seq.init(KEY)
    jax.tree.map(np.testing.assert_array_equal, (p1, s1), (p2, s2))
    x, y = jax.random.normal(jax.random.key(1), (8, 64)), jnp.arange(8)
    k = jax.random.key(2)
    jax.tree.map(np.testing.assert_array_equal, fc.loss(p1, s1, x, y, key=k), seq.loss(p2, s2, x, y, key=k))
    jax.tree.map(np.testing.assert_array_equal, fc.apply(p1, s1, x, train=False), seq.apply(p2, s2, x, train=False))
    assert fc.param_shapes() == seq.param_shapes()


def _old_convnet_init(net, key):
    """Today's ConvNet.init before it became a declaration (kept as the reference)."""
    shapes = net.param_shapes()
    n_w = sum(1 for n in shapes if n.startswith("W"))
    keys = jax.random.split(key, n_w)
    params = {}
    for i in range(1, n_w + 1):
        shape = shapes[f"W{i}"]
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        std = np.sqrt(2.0 / fan_in) if net.weight_scale is None else jnp.asarray(net.weight_scale, net.dtype)
        params[f"W{i}"] = std * jax.random.normal(keys[i - 1], shape, net.dtype)
        params[f"b{i}"] = jnp.zeros(shapes[f"b{i}"], net.dtype)
        if f"gamma{i}" in shapes:
            params[f"gamma{i}"] = jnp.ones(shapes[f"gamma{i}"], net.dtype)
            params[f"beta{i}"] = jnp.zeros(shapes[f"beta{i}"], net.dtype)
    return params


@pytest.mark.parametrize("conv_norm", [None, "batchnorm", "groupnorm"])
def test_convnet_is_a_declaration_with_the_old_names_and_init(conv_norm):
    net = jl.ConvNet(input_dim=(1, 8, 8), conv_channels=(4, 8), conv_norm=conv_norm, groups=2, hidden_dims=(16,),
                     fc_norm="batchnorm", dropout_rate=0.1, num_classes=10)  # fmt: skip
    params, state = net.init(KEY)
    jax.tree.map(np.testing.assert_array_equal, params, _old_convnet_init(net, KEY))
    assert set(state) == ({"bn1", "bn2"} if conv_norm == "batchnorm" else set()) | {"bn3"}
    assert net.feature_shape() == (8, 2, 2)
    assert isinstance(net.net, nn.Sequential) and net.summary().splitlines()[-1].startswith("ConvNet: ")
    # the channels-first declaration: the same names and initial values
    nchw = jl.ConvNet(**{**net.to_dict(), "conv_layout": "NCHW"})
    jax.tree.map(np.testing.assert_array_equal, (params, state), nchw.init(KEY))


def test_sequential_trains_through_fit_and_fit_many():
    ds = jl.data.load("digits")
    model = nn.Sequential(nn.Affine(16), nn.LayerNorm(), nn.ReLU(), nn.Dropout(0.1), nn.Affine(10),
                          input_shape=(64,), reg=1e-3)  # fmt: skip
    config = jl.train.TrainConfig(epochs=2, batch_size=128, learning_rate=0.05)
    result = jl.train.fit(model, ds, config)
    acc = jl.train.evaluate(model, result.best_params, result.best_model_state, ds.X_test, ds.y_test)
    assert acc > 0.5
    many = jl.train.fit_many(model, ds, config, seeds=[0, 1])
    assert jax.tree.leaves(many.best_params)[0].shape[0] == 2


def test_fit_many_sweeps_regs_and_weight_scales_of_a_sequential():
    ds = jl.data.load("digits")
    small = jl.data.Dataset(ds.X_train[:256], ds.y_train[:256], ds.X_val, ds.y_val, ds.X_test, ds.y_test)
    model = nn.Sequential(nn.Affine(16), nn.ReLU(), nn.Residual(nn.Affine(16), nn.ReLU()), Scale(0.5), nn.Affine(10),
                          input_shape=(64,))  # fmt: skip
    # replace: reg, and weight_scale on every Affine/Conv2d (through Residual), user layers untouched
    changed = model.replace(reg=1e-2, weight_scale=0.05)
    assert float(changed.reg) == 1e-2 and float(model.reg) == 0.0
    assert [layer.weight_scale for layer in (changed.layers[0], changed.layers[2].layers[0], changed.layers[4])] == [
        0.05
    ] * 3
    assert changed.layers[3] is model.layers[3] and model.layers[0].weight_scale is None
    with pytest.raises(TypeError, match=r"nn.Sequential.replace: changes reg and weight_scale only, not \['loss'\]"):
        model.replace(loss="svm")
    with pytest.raises(ValueError, match="reg"):
        model.replace(reg=-1.0)

    config = jl.train.TrainConfig(epochs=2, batch_size=64, learning_rate=0.05)
    regs, scales = [0.0, 1e-2, 1e-2], [None, 0.05, 0.1]
    many = jl.train.fit_many(model, small, config, regs=regs, weight_scales=scales)
    for k in range(3):
        model_k = model.replace(reg=regs[k], weight_scale=scales[k])
        one = jl.train.fit(model_k, small, config)
        np.testing.assert_allclose(many[k].history.loss, one.history.loss, rtol=1e-5)
        for name in one.best_params:
            np.testing.assert_allclose(
                jax.tree.leaves(many[k].best_params[name]), jax.tree.leaves(one.best_params[name]), rtol=2e-5, atol=2e-6
            )
    assert many.history.loss[0, 0] != many.history.loss[1, 0]  # the scales and regs took effect

    with pytest.raises(TypeError, match=r"fit_many: model 0: nn.Sequential.replace: .*\['dropout_rate'\]"):
        jl.train.fit_many(model, small, config, dropout_rates=[0.1, 0.2])
    with pytest.raises(ValueError, match="no Affine or Conv2d"):
        nn.Sequential(Scale(1.0), input_shape=(2,)).replace(weight_scale=0.1)


SEQ_RECORDS = {
    "flat": lambda: nn.Sequential(nn.Flatten(), nn.Affine(16), nn.ReLU(), nn.Affine(10), input_shape=(64,)),
    "conv": lambda: nn.Sequential(
        nn.Conv2d(4, 3, padding=1),
        nn.GroupNorm(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Residual(nn.Conv2d(4, 3, padding=1), nn.ReLU()),
        nn.Flatten(),
        nn.Affine(10),
        input_shape=(1, 8, 8),
    ),
}


@pytest.mark.parametrize("kind", sorted(SEQ_RECORDS))
def test_cli_trains_resumes_evaluates_and_predicts_a_sequential_record(tmp_path, capsys, kind):
    model = SEQ_RECORDS[kind]()
    path = tmp_path / "seq.json"
    path.write_text(json.dumps(jl.model.model_record(model)))
    out = tmp_path / "run"
    args = ["train", "--model", str(path), "--epochs", "1", "--batch-size", "64", "-q", "-o", str(out)]
    assert cli.main(args) == 0  # digits, the default dataset: (N, 64) features reshaped to the model's input
    assert cli.main(["train", "--resume", "--epochs", "2", "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    assert run.epochs == 2 and isinstance(run.model, nn.Sequential)
    assert run.model.to_dict() == model.to_dict() and run.model.summary() == model.summary()
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 0
    assert f"accuracy {run.summary['test_acc']:.4f}" in capsys.readouterr().out
    raw = load_digits().data[:7]  # raw pixels, as the dataset loader reads them
    np.save(tmp_path / "x.npy", raw)
    assert cli.main(["predict", str(out), str(tmp_path / "x.npy"), "-o", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    want = run.predict(raw if kind == "flat" else raw.reshape(-1, 1, 8, 8))
    np.testing.assert_array_equal([int(r.split(",")[1]) for r in rows], want)


def test_user_layer_trains_and_round_trips_through_a_run_directory(tmp_path):
    ds = jl.data.load("digits")
    model = nn.Sequential(nn.Affine(16), nn.ReLU(), Scale(0.5), nn.Affine(10), input_shape=(64,))
    result = jl.train.fit(model, ds, jl.train.TrainConfig(epochs=1, batch_size=128), run_dir=tmp_path / "run")
    assert float(result.best_params["Scale_3"]["s"]) != 0.5  # it learned
    run = jl.load_run(tmp_path / "run")
    assert isinstance(run.model, nn.Sequential) and isinstance(run.model.layers[2], Scale)
    x = ds.X_test[:50]
    want = model.predict(result.best_params, result.best_model_state, run.standardize(x))
    np.testing.assert_array_equal(run.predict(x), want)


def test_records_are_json_and_round_trip():
    model = nn.Sequential(
        nn.Conv2d(4, (3, 3), padding="same", weight_scale=0.1), nn.GroupNorm(2), nn.ReLU(),
        nn.Residual(nn.Conv2d(4, 3, padding=1), nn.ReLU()), nn.MaxPool2d(2, stride=2), nn.Flatten(),
        Scale(2.0), nn.Dropout(0.3), nn.Affine(10), input_shape=(1, 6, 6), loss="svm", reg=0.5,
    )  # fmt: skip
    d = json.loads(json.dumps(model.to_dict()))
    again = nn.Sequential.from_dict(d)
    assert again.to_dict() == d and again.summary() == model.summary()
    rebuilt = jl.model.model_from_record(jl.model.model_record(model))
    jax.tree.map(np.testing.assert_array_equal, rebuilt.init(KEY), model.init(KEY))
    with pytest.raises(ValueError, match="unknown layer class 'Nope'"):
        nn.Sequential.from_dict({**d, "layers": [{"class": "Nope", "config": {}}]})


def test_summary_one_row_per_layer():
    model = nn.Sequential(nn.Conv2d(4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Affine(10), input_shape=(1, 4, 4))
    lines = model.summary().splitlines()
    assert lines[0].split() == ["layer", "parameters", "output", "params", "bytes"]
    assert len(lines) == 1 + 4 + 1
    assert "Conv2d(4, 3, padding=1)" in lines[1] and "W1 (4, 1, 3, 3)" in lines[1] and "(N, 4, 4, 4)" in lines[1]
    assert "Flatten()" in lines[3] and "(N, 64)" in lines[3]
    assert lines[-1] == f"Sequential: {model.num_params():,} parameters, {model.num_params() * 4 / 1024:.1f} KiB"


def test_jit_and_vmap_over_traced_reg():
    model = nn.Sequential(nn.Affine(8), nn.ReLU(), nn.Affine(3), input_shape=(4,), reg=0.5)
    leaves, treedef = jax.tree.flatten(model)
    assert leaves == [0.5]
    params, state = model.init(KEY)
    x, y = jnp.ones((2, 4)), jnp.array([0, 1])

    def loss(reg):
        m = jax.tree.unflatten(treedef, [reg])
        return m.loss(params, state, x, y)[0]

    losses = jax.jit(jax.vmap(loss))(jnp.array([0.0, 1.0]))
    penalty = 0.5 * sum(float(jnp.vdot(params[n], params[n])) for n in ("W1", "W2"))
    np.testing.assert_allclose(losses[1] - losses[0], penalty, rtol=1e-5)
