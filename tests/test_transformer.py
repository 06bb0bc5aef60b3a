"""nn attention layers and the Transformer models (issue 19): declarations, records, a plain-jnp reference of the
block, causality of the language model, the sinusoidal encoding against the course's formula, short CLI runs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import models, nn
from jaxlayers.model import model_from_record, model_record

T, D = 8, 16


def _classifier(**kw):
    return nn.Sequential(
        nn.Patches(4, stride=2, padding=1), nn.TemporalAffine(D), nn.PositionalEncoding(16, dropout=0.1),
        nn.PositionalEmbedding(8), nn.TransformerBlock(4, 32, dropout=0.1), nn.MultiHeadAttention(2, causal=True),
        nn.LayerNorm(), nn.SequencePool("mean"), nn.Affine(3), input_shape=(T, 2), **kw,
    )  # fmt: skip


def test_declaration_names_shapes_and_l2_penalty():
    model = _classifier(reg=0.1)
    shapes = model.param_shapes()
    assert shapes["W1"] == (8, D) and shapes["P2"] == (8, D)  # 4 steps x 2 features; 4 windows at stride 2
    assert shapes["Wq3"] == (D, D) and shapes["Wo3"] == (D, D) and shapes["bo3"] == (D,)
    assert shapes["gamma3"] == (D,) and shapes["W4"] == (D, 3)
    assert shapes["TransformerBlock_5['W1']"] == (D, 32) and shapes["TransformerBlock_5['gamma2']"] == (D,)
    assert model.weight_names() == ["W1", "Wq3", "Wk3", "Wv3", "Wo3", "W4"]
    rows = model.summary().splitlines()
    assert "Patches(4, stride=2, padding=1)" in rows[1] and "(N, 4, 8)" in rows[1]
    assert "MultiHeadAttention(2, causal=True)" in model.summary()


def test_init_apply_and_record_round_trip():
    model = _classifier()
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, T, 2))
    out, _ = model.apply(params, state, x, train=False)
    assert out.shape == (5, 3) and np.all(np.isfinite(out))
    key = jax.random.key(2)
    a, _ = model.apply(params, state, x, train=True, key=key)
    b, _ = model.apply(params, state, x, train=True, key=key)
    np.testing.assert_array_equal(a, b)  # seeded dropout
    assert not np.allclose(a, out)
    with pytest.raises(ValueError, match="PRNG key"):
        model.apply(params, state, x, train=True)
    again = model_from_record(model_record(model))
    assert again.to_dict() == model.to_dict()
    np.testing.assert_array_equal(again.apply(params, state, x, train=False)[0], out)
    for layer in model.layers:
        assert nn.layer_from_record(nn.layer_record(layer)).to_dict() == layer.to_dict()


def test_examples_are_independent_in_test_mode():
    model = _classifier()
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, T, 2))
    full, _ = model.apply(params, state, x, train=False)
    one, _ = model.apply(params, state, x[2:3], train=False)
    np.testing.assert_allclose(full[2:3], one, rtol=1e-5, atol=1e-6)


def _block_reference(p, x, num_heads, causal, eps=1e-5):
    def ln(h, g, b):
        mu = h.mean(-1, keepdims=True)
        return g * (h - mu) / jnp.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + eps) + b

    n, t, _ = x.shape
    hd = p["Wq"].shape[1] // num_heads
    a = ln(x, p["gamma1"], p["beta1"])
    q = (a @ p["Wq"] + p["bq"]).reshape(n, t, num_heads, hd)
    k = (a @ p["Wk"] + p["bk"]).reshape(n, t, num_heads, hd)
    v = (a @ p["Wv"] + p["bv"]).reshape(n, t, num_heads, hd)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(hd)
    if causal:
        logits = jnp.where(jnp.tril(jnp.ones((t, t), bool)), logits, -1e30)
    o = jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, -1), v).reshape(n, t, -1)
    h = x + o @ p["Wo"] + p["bo"]
    f = jnp.maximum(ln(h, p["gamma2"], p["beta2"]) @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
    return h + f


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_block_matches_a_plain_reference_float64(x64, causal):
    block = nn.TransformerBlock(2, 12, causal=causal)
    params, _, out_shape = block.init(jax.random.key(0), (6, 8), dtype=jnp.float64)
    assert out_shape == (6, 8)
    params = {k: v + 0.1 * jax.random.normal(jax.random.key(i), v.shape, v.dtype) for i, (k, v) in enumerate(params.items())}  # fmt: skip
    x = jax.random.normal(jax.random.key(9), (3, 6, 8), jnp.float64)
    out, _ = block.apply(params, {}, x, train=False)
    np.testing.assert_allclose(out, _block_reference(params, x, 2, causal), rtol=1e-10, atol=1e-10)
    g = jax.random.normal(jax.random.key(10), out.shape, jnp.float64)
    ours = jax.grad(lambda p, x: jnp.vdot(block.apply(p, {}, x, train=False)[0], g), (0, 1))(params, x)
    ref = jax.grad(lambda p, x: jnp.vdot(_block_reference(p, x, 2, causal), g), (0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_sinusoidal_encoding_is_the_courses_formula():
    """P[i, j] = sin(i * 10000^(-j/d)) for even j, cos(i * 10000^(-(j-1)/d)) for odd j (the course's
    PositionalEncoding); the layer adds it."""
    L, d = 11, 6
    want = np.zeros((L, d))
    for i in range(L):
        for j in range(d):
            want[i, j] = math.sin(i * 10000 ** (-j / d)) if j % 2 == 0 else math.cos(i * 10000 ** (-(j - 1) / d))
    np.testing.assert_allclose(nn.sinusoidal_encoding(L, d), want, rtol=1e-6, atol=1e-6)
    layer = nn.PositionalEncoding(20)
    x = jnp.ones((2, L, d))
    np.testing.assert_allclose(layer.apply({}, {}, x, train=False)[0], np.broadcast_to(1 + want, x.shape), atol=1e-6)
    with pytest.raises(ValueError, match="exceeds max_len=5"):
        nn.PositionalEncoding(5).init(None, (L, d))


def test_layer_errors():
    with pytest.raises(ValueError, match="num_heads=3 must divide the input width D = 16"):
        nn.MultiHeadAttention(3).init(jax.random.key(0), (T, D))
    with pytest.raises(ValueError, match=r"needs inputs of shape \(T, D\)"):
        nn.TransformerBlock(2, 8).init(jax.random.key(0), (D,))
    with pytest.raises(ValueError, match="dropout"):
        nn.TransformerBlock(2, 8, dropout=1.0)
    with pytest.raises(ValueError, match="mode"):
        nn.SequencePool("max")
    with pytest.raises(ValueError, match="cannot reshape"):
        nn.Reshape((3, 3)).init(None, (T, 2))


def test_sequence_pool_and_cross_attention():
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    assert np.array_equal(nn.SequencePool("first").apply({}, {}, x, train=False)[0], x[:, 0])
    assert np.array_equal(nn.SequencePool("last").apply({}, {}, x, train=False)[0], x[:, -1])
    np.testing.assert_allclose(nn.SequencePool().apply({}, {}, x, train=False)[0], x.mean(1))
    layer = nn.MultiHeadAttention(2, context_dim=5, features=6)
    params, _, shape = layer.init(jax.random.key(0), (3, 4))
    assert shape == (3, 6) and params["Wk"].shape == (5, 4)
    ctx = jax.random.normal(jax.random.key(1), (2, 7, 5))
    out = layer.attend(params, x, ctx, train=False)
    assert out.shape == (2, 3, 6)
    np.testing.assert_allclose(
        out, jl.multi_head_attention(x, ctx, ctx, params, num_heads=2), rtol=1e-6
    )  # the functional op with the layer's parameters
    with pytest.raises(ValueError, match="context_dim=5 is for cross-attention"):
        layer.apply(params, {}, x, train=False)


def test_char_transformer_is_causal():
    model = models.char_transformer(11, 9, dim=16, depth=2, num_heads=2)
    params, state = model.init(jax.random.key(0))
    x = np.random.default_rng(0).integers(0, 11, (2, 9)).astype(np.int32)
    scores, _ = model.apply(params, state, x, train=False)
    assert scores.shape == (2, 9, 11)
    for t in range(8):
        y = x.copy()
        y[:, t + 1 :] = (y[:, t + 1 :] + 3) % 11
        again, _ = model.apply(params, state, y, train=False)
        np.testing.assert_allclose(again[:, : t + 1], scores[:, : t + 1], rtol=1e-5, atol=1e-6)
        assert not np.allclose(again[:, t + 1 :], scores[:, t + 1 :])


def test_transformer_classifier_declaration():
    model = models.transformer_classifier((40, 1), 10, patch=8, stride=4, dim=16, depth=3, num_heads=2)
    assert model.input_shape == (40, 1) and model.num_classes == 10
    assert model.param_shapes()["W1"] == (8, 16) and model.param_shapes()["P2"] == (10, 16)  # 10 windows
    assert sum(isinstance(layer, nn.TransformerBlock) for layer in model.layers) == 3


def test_cli_trains_a_transformer_on_mnist1d_seq(tmp_path, capsys):
    from jaxlayers import cli

    out = tmp_path / "tr"
    args = ["train", "--model", "transformer", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "256"]
    assert cli.main([*args, "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    assert isinstance(run.model, nn.Sequential) and run.preprocessing.input_shape == (40, 1)
    assert run.train_config.optimizer == "adamw" and run.train_config.schedule == "cosine"  # the preset
    assert run.train_config.augment == "shift:2"  # the preset's random shifts of the (40, 1) training signals
    ds = jl.data.load("mnist1d-seq")
    acc = jl.train.evaluate(run.model, run.params, run.model_state, ds.X_test, ds.y_test)  # standardised already
    assert run.summary["test_acc"] == pytest.approx(acc, abs=1e-12)
    capsys.readouterr()
    bad = ["train", "--model", "transformer", "--hidden-dims", "8", "16", "--epochs", "1", "-o", str(tmp_path / "x")]
    assert cli.main(bad) != 0
    assert "the blocks share one width, got --hidden-dims [8, 16]" in capsys.readouterr().err


def test_cli_chartransformer_trains_evaluates_and_samples(tmp_path, capsys):
    from jaxlayers import cli

    out = tmp_path / "lm"
    args = ["train", "--model", "chartransformer", "--dataset", "pydoc-chars:400", "--hidden-dims", "8"]
    assert cli.main([*args, "--epochs", "1", "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    ds = jl.data.load("pydoc-chars:400")
    assert run.vocab == ds.vocab and run.model.sequence_targets and run.model.num_classes == len(ds.vocab)
    assert run.train_config.optimizer == "adamw"
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 0
    assert f"bits per character {run.bits_per_token(ds.X_test, ds.y_test):.4f}" in capsys.readouterr().out
    assert cli.main(["sample", str(out), "--length", "30", "--prompt", "def ", "--seed", "1"]) == 0
    text = capsys.readouterr().out[:-1]
    assert text.startswith("def ") and len(text) == 34 and set(text) <= set(ds.vocab.tokens)
    assert run.sample(30, "def ", seed=1) == text


def test_cli_reads_a_flat_dataset_as_sequences_so_the_presets_shifts_apply(tmp_path):
    from jaxlayers import cli

    out = tmp_path / "flat"
    args = ["train", "--model", "transformer", "--dataset", "digits", "--hidden-dims", "8", "--epochs", "1"]
    assert cli.main([*args, "--batch-size", "256", "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    assert run.train_config.augment == "shift:2" and run.preprocessing.input_shape == (64, 1)
    assert cli.main(["evaluate", str(out)]) == 0
