"""nn.RNN, nn.LSTM, nn.GRU (issue 18): the ops as layers, names, records, training, the CLI's recurrent models."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import cli, nn
from jaxlayers.model import model_from_record, model_record

T, D, H = 5, 3, 4
CELLS = [(nn.RNN, jl.rnn, 1), (nn.LSTM, jl.lstm, 4), (nn.GRU, jl.gru, 3)]


@pytest.mark.parametrize(("cls", "op", "gates"), CELLS)
def test_layer_is_its_op_with_zero_h0(cls, op, gates):
    x = jax.random.normal(jax.random.key(1), (2, T, D))
    for seq in (False, True):
        layer = cls(H, return_sequences=seq)
        params, state, out_shape = layer.init(jax.random.key(0), (T, D))
        assert {k: v.shape for k, v in params.items()} == {
            "Wx": (D, gates * H),
            "Wh": (H, gates * H),
            "b": (gates * H,),
        }
        assert state == {} and out_shape == ((T, H) if seq else (H,))
        out, _ = layer.apply(params, state, x, train=True)
        want = op(x, jnp.zeros((2, H)), params["Wx"], params["Wh"], params["b"])
        np.testing.assert_allclose(out, want if seq else want[:, -1], rtol=1e-6, atol=1e-6)


def test_init_orthogonal_recurrent_blocks_and_lstm_forget_bias():
    params, _, _ = nn.LSTM(H).init(jax.random.key(0), (T, D))
    for k in range(4):
        block = params["Wh"][:, k * H : (k + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    np.testing.assert_array_equal(params["b"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])  # i, f, o, g
    assert not np.any(nn.GRU(H).init(jax.random.key(0), (T, D))[0]["b"])


def test_names_l2_summary_and_record_round_trip():
    model = nn.Sequential(nn.LSTM(8, return_sequences=True), nn.GRU(6), nn.Affine(3), input_shape=(T, D), reg=0.1)
    assert model.param_shapes() == {
        "Wx1": (D, 32), "Wh1": (8, 32), "b1": (32,), "Wx2": (8, 18), "Wh2": (6, 18), "b2": (18,),
        "W3": (6, 3), "b3": (3,),
    }  # fmt: skip
    assert model.weight_names() == ["Wx1", "Wh1", "Wx2", "Wh2", "W3"]
    params, state = model.init(jax.random.key(0))
    want = 0.5 * 0.1 * sum(float(jnp.sum(params[n] ** 2)) for n in model.weight_names())
    np.testing.assert_allclose(model.l2_penalty(params), want, rtol=1e-6)
    rows = model.summary().splitlines()
    assert "LSTM(8, return_sequences=True)" in rows[1] and f"(N, {T}, 8)" in rows[1]
    assert "GRU(6)" in rows[2] and "(N, 6)" in rows[2]
    assert [r.split()[0] for r in model.summary(by="number").splitlines()[1:4]] == ["1", "2", "3"]
    again = model_from_record(json.loads(json.dumps(model_record(model))))
    assert again.to_dict() == model.to_dict()
    x = jax.random.normal(jax.random.key(2), (2, T, D))
    np.testing.assert_array_equal(
        again.apply(params, state, x, train=False)[0], model.apply(params, state, x, train=False)[0]
    )
    assert nn.GRU.from_dict(nn.GRU(5, return_sequences=True).to_dict()).return_sequences is True


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="hidden"):
        nn.GRU(0)
    with pytest.raises(TypeError, match="return_sequences"):
        nn.LSTM(4, return_sequences="yes")
    with pytest.raises(ValueError, match=r"nn.RNN.*\(T, D\)"):
        nn.Sequential(nn.RNN(4), nn.Affine(2), input_shape=(T,))


@pytest.mark.parametrize(("cls", "op", "gates"), CELLS)
def test_jit_vmap_and_grad(cls, op, gates):
    model = nn.Sequential(cls(H), nn.Affine(3), input_shape=(T, D), reg=1e-3)
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (6, T, D))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    eager = model.apply(params, state, x, train=False)[0]
    np.testing.assert_allclose(
        jax.jit(lambda p, x: model.apply(p, state, x, train=False)[0])(params, x), eager, atol=1e-6
    )
    per_example = jax.vmap(lambda xi: model.apply(params, state, xi[None], train=False)[0][0])(x)
    np.testing.assert_allclose(per_example, eager, atol=1e-6)
    grads = jax.grad(lambda p: model.loss(p, state, x, y)[0])(params)
    assert set(grads) == set(params) and all(
        bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0)) for g in grads.values()
    )


def test_a_small_gru_learns_mnist1d_seq_through_fit():
    ds = jl.data.load("mnist1d-seq")
    small = dataclasses.replace(ds, X_train=ds.X_train[:1024], y_train=ds.y_train[:1024])
    model = nn.Sequential(nn.GRU(32), nn.Affine(10), input_shape=(40, 1))
    config = jl.train.TrainConfig(epochs=2, batch_size=32, optimizer="adam", learning_rate=1e-2)
    result = jl.train.fit(model, small, config)
    loss = np.asarray(result.history.loss).reshape(-1)
    assert result.finite and loss.shape == (2 * (small.X_train.shape[0] // 32),)
    assert loss[-16:].mean() < loss[:16].mean() - 0.03  # it learns: the loss falls from ln(10) (2.36 -> 2.30)


def test_cli_trains_a_gru_on_mnist1d_seq_by_default(tmp_path, capsys):
    run_dir = tmp_path / "gru"
    argv = ["train", "--model", "gru", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "200", "--quiet"]
    assert cli.main([*argv, "--output-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "mnist1d-seq"
    assert config["model"]["class"] == "Sequential" and config["model"]["config"]["input_shape"] == [40, 1]
    assert [r["class"] for r in config["model"]["config"]["layers"]] == ["GRU", "Affine"]
    assert config["train"]["optimizer"] == cli.RECURRENT_PRESET["optimizer"]  # the preset fills flags not given
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 < summary["test_acc"] <= 1.0 and f"test acc {summary['test_acc']:.4f}" in out
    assert cli.main(["evaluate", str(run_dir)]) == 0


def test_cli_reads_a_flat_dataset_as_a_sequence_of_scalars():
    argv = ["train", "--model", "lstm", "--dataset", "mnist1d", "--epochs", "1"]
    opts = cli._resolve(cli.build_parser().parse_args(argv), cli._given(argv))
    assert (
        opts["dataset"] == "mnist1d"
        and opts["epochs"] == 1
        and opts["hidden_dims"] == cli.RECURRENT_PRESET["hidden_dims"]
    )
    net, _, _ = cli._net_and_config(opts, jl.data.load("mnist1d"))
    assert net.input_shape == (40, 1) and type(net.layers[0]).__name__ == "LSTM"


def test_cli_rnn_preset_clips_and_slows():
    argv = ["train", "--model", "rnn"]
    opts = cli._resolve(cli.build_parser().parse_args(argv), cli._given(argv))
    assert opts["dataset"] == "mnist1d-seq" and opts["clip_norm"] == 1.0 and opts["learning_rate"] == 1e-3
