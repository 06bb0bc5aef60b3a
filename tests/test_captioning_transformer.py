"""jl.CaptioningTransformer: the course's Transformer captioning model as a model of the protocol.

Its loss and every gradient against ``jax.grad`` of a plain-``jnp`` transcription of the course's formulas
(float64; post-norm and pre-norm), the causal mask (later words never change earlier scores), greedy
``sample`` under ``jit`` against the course's growing-prefix loop, dropout only in the loss, the record
round trip, a short ``fit`` / ``load_run`` and ``jaxlayers train --model captioning_transformer`` /
``evaluate``. Small dimensions throughout.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_captioning_model import WORDS, _captions, _reference_features

import jaxlayers as jl
from jaxlayers.captioning import CaptioningTransformer

# --- a plain-jnp transcription of the course's transformer_layers.py / classifiers/transformer.py ---


def _positional_encoding(T, D):
    """The course's PositionalEncoding table: pe[:, 0::2] = sin(t * 10000^(-i/D)), pe[:, 1::2] = cos(...)."""
    pe = np.zeros((T, D))
    position = np.arange(T)[:, None]
    div = 10000.0 ** (-np.arange(0, D, 2) / D)
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div)
    return jnp.asarray(pe)


def _mha(p, prefix, query, key, value, num_heads, attn_mask=None):
    """The course's MultiHeadAttention.forward (no dropout): W is (in, out) here, nn.Linear's W.T."""
    N, S, E = query.shape
    T = key.shape[1]
    H, d = num_heads, E // num_heads
    q = (query @ p[prefix + "Wq"] + p[prefix + "bq"]).reshape(N, S, H, d).transpose(0, 2, 1, 3)
    k = (key @ p[prefix + "Wk"] + p[prefix + "bk"]).reshape(N, T, H, d).transpose(0, 2, 1, 3)
    v = (value @ p[prefix + "Wv"] + p[prefix + "bv"]).reshape(N, T, H, d).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    if attn_mask is not None:
        scores = jnp.where(attn_mask == 0, -jnp.inf, scores)
    attn = jax.nn.softmax(scores, axis=-1)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(N, S, E)
    return out @ p[prefix + "Wo"] + p[prefix + "bo"]


def _ln(x, g, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * g + b


def reference_scores(p, features, captions_in, model):
    """The course's CaptioningTransformer.forward: scores (N, T, V)."""
    T, heads = captions_in.shape[1], model.num_heads
    memory = (features @ p["W_proj"] + p["b_proj"])[:, None, :]
    x = p["W_embed"][captions_in] + _positional_encoding(T, model.wordvec_dim)
    tgt_mask = jnp.tril(jnp.ones((T, T)))
    for i in range(1, model.num_layers + 1):

        def mlp(a, i=i):
            return jnp.maximum(a @ p[f"W1_{i}"] + p[f"b1_{i}"], 0) @ p[f"W2_{i}"] + p[f"b2_{i}"]

        def ln(a, k, i=i):
            return _ln(a, p[f"gamma{i}_{k}"], p[f"beta{i}_{k}"])

        if model.norm == "post":  # the course's TransformerDecoderLayer.forward
            x = ln(x + _mha(p, f"self{i}_", x, x, x, heads, tgt_mask), 1)
            x = ln(x + _mha(p, f"cross{i}_", x, memory, memory, heads), 2)
            x = ln(x + mlp(x), 3)
        else:
            a = ln(x, 1)
            x = x + _mha(p, f"self{i}_", a, a, a, heads, tgt_mask)
            x = x + _mha(p, f"cross{i}_", ln(x, 2), memory, memory, heads)
            x = x + mlp(ln(x, 3))
    if model.norm == "pre":
        x = _ln(x, p["gamma_out"], p["beta_out"])
    return x @ p["W_vocab"] + p["b_vocab"]


def reference_loss(p, x, captions, model, stats=None):
    """Masked cross-entropy of captions[:, 1:] summed over time / N, + 0.5 reg sum(W**2) over every matrix
    but W_embed."""
    features = _reference_features(p, x, model.encoder_channels, stats) if model.encoder_channels else x
    scores = reference_scores(p, features, captions[:, :-1], model)
    cout = captions[:, 1:]
    picked = jnp.take_along_axis(jax.nn.log_softmax(scores, -1), cout[..., None], axis=-1)[..., 0]
    data = -jnp.sum(picked * (cout != model.null)) / x.shape[0]
    weights = [k for k in p if k != "W_embed" and (k.startswith("W") or "_W" in k)]
    return data + 0.5 * model.reg * sum(jnp.sum(p[k] ** 2) for k in weights)


def _model(**kw):
    base = dict(input_dim=(1, 4, 8), wordvec_dim=8, num_heads=2, num_layers=2, mlp_dim=12,
                encoder_channels=(3,), max_length=4, decoder_dropout=0.0)  # fmt: skip
    return CaptioningTransformer(WORDS, **{**base, **kw})


def _perturbed(model, seed=0, scale=0.1):
    params, state = model.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return {k: v + scale * rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}, state


@pytest.mark.parametrize(
    ("norm", "channels", "encoder_norm"),
    [("post", (3,), "batchnorm"), ("pre", (), "none")],
)  # the encoder with batch statistics and post-norm (the preset's), no encoder and pre-norm
def test_loss_and_gradients_match_autodiff_of_a_plain_jnp_reference(x64, norm, channels, encoder_norm):
    rng = np.random.default_rng(1)
    model = _model(norm=norm, encoder_channels=channels, encoder_norm=encoder_norm, reg=0.3, dtype=jnp.float64,
                   input_dim=(1, 4, 8) if channels else 32)  # fmt: skip
    params, state = _perturbed(model)
    x = rng.standard_normal((5, 1, 4, 8)) if channels else rng.standard_normal((5, 32))
    caps = _captions(rng, 5, 6)
    (loss, (_, scores)), grads = jax.value_and_grad(model.loss, has_aux=True)(params, state, x, caps)
    stats = "batch" if encoder_norm == "batchnorm" else None
    ref, ref_grads = jax.value_and_grad(reference_loss)(params, x, caps, model, stats)
    assert scores.shape == (5, 6, len(WORDS))
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    assert set(grads) == set(ref_grads) == set(model.param_shapes())
    for k in grads:
        assert grads[k].dtype == jnp.float64
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-7, atol=1e-10, err_msg=k)
    # the teacher-forced scores are the course's forward (the <START> row first)
    features = model.features(params, x, state=state) if encoder_norm == "none" else None
    if features is not None:
        want = reference_scores(params, features, caps[:, :-1], model)
        np.testing.assert_allclose(model.teacher_forced_scores(params, x, caps), want, rtol=1e-9, atol=1e-12)


def test_shapes_parameters_init_and_weight_names():
    model = _model(norm="pre", mlp_dim=16, num_layers=3)
    params, state = model.init(jax.random.key(0))
    assert state == {} and set(params) == set(model.param_shapes())
    assert params["W_proj"].shape == (model.feature_dim(), 8) and model.feature_dim() == 3 * 2 * 4
    assert params["self3_Wq"].shape == (8, 8) and params["cross1_bo"].shape == (8,)
    assert params["W1_2"].shape == (8, 16) and params["W2_2"].shape == (16, 8) and params["gamma_out"].shape == (8,)
    assert params["W_vocab"].shape == (8, len(WORDS)) and model.num_params() == sum(v.size for v in params.values())
    for k, v in params.items():
        if k.startswith(("gamma", "beta")) or "_b" in k or k.startswith("b"):
            np.testing.assert_array_equal(v, 1.0 if k.startswith("gamma") else 0.0, err_msg=k)
    unperturbed = np.concatenate([np.ravel(params[k]) for k in ("self1_Wk", "cross2_Wq", "W1_1", "W_vocab")])
    assert 0.015 < float(np.std(unperturbed)) < 0.025  # the course's N(0, 0.02**2)
    names = model.weight_names()
    assert "W_embed" not in names and {"W_conv1", "W_proj", "cross2_Wv", "W2_3", "W_vocab"} <= set(names)
    assert not any(n.startswith(("gamma", "beta", "b")) or "_b" in n for n in names)
    assert "CaptioningTransformer:" in model.summary()


def test_causal_mask_later_words_never_change_earlier_scores():
    model = _model()
    params, _ = _perturbed(model, scale=0.5)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 1, 4, 8)).astype(np.float32)
    caps = _captions(rng, 3, 7)
    base = np.asarray(model.teacher_forced_scores(params, x, caps))
    for k in range(1, 6):  # change the input word at position k: scores before k stay, scores from k move
        other = caps.copy()
        other[:, k] = np.where(caps[:, k] == 4, 5, 4)
        scores = np.asarray(model.teacher_forced_scores(params, x, other))
        np.testing.assert_array_equal(scores[:, :k], base[:, :k])
        assert not np.allclose(scores[:, k], base[:, k])


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_sample_under_jit_is_the_courses_growing_prefix_greedy_caption(norm):
    model = _model(norm=norm)
    params, _ = _perturbed(model, seed=3, scale=0.5)
    x = np.random.default_rng(3).standard_normal((4, 1, 4, 8)).astype(np.float32)
    got = jax.jit(model.sample, static_argnames="max_length")(params, x, max_length=6)
    assert got.shape == (4, 6) and got.dtype == jnp.int32
    # the course's sample: run the model on the partial caption, take the last position's argmax, append
    partial = np.full((4, 1), model.start)
    for _ in range(6):
        scores = model.teacher_forced_scores(params, x, np.concatenate([partial, partial[:, :1]], axis=1))
        partial = np.concatenate([partial, np.argmax(np.asarray(scores)[:, -1], axis=1)[:, None]], axis=1)
    np.testing.assert_array_equal(got, partial[:, 1:])
    # every step's scores are the teacher-forced scores of the caption so far
    scores, _ = model.apply(params, {}, x, train=False)
    forced = model.teacher_forced_scores(params, x, np.concatenate([partial[:, :1], got[:, :4]], axis=1))
    np.testing.assert_allclose(scores[:, 1:], forced, rtol=1e-5, atol=1e-6)
    # apply: the same words after the <START> row, max_length + 1 steps; deterministic in train mode too
    scores, state = model.apply(params, {}, x, train=False)
    assert scores.shape == (4, 5, len(WORDS)) and state == {}
    np.testing.assert_array_equal(np.argmax(scores, -1)[:, 0], model.start)
    np.testing.assert_array_equal(np.argmax(scores, -1)[:, 1:], got[:, :4])
    np.testing.assert_array_equal(model.apply(params, {}, x, train=True)[0], scores)
    # the jitted sample is one program: a scan, no Python loop per word (the jaxpr holds one scan)
    jaxpr = jax.make_jaxpr(lambda p, x: model.sample(p, x, max_length=6))(params, x)
    assert sum(e.primitive.name == "scan" for e in jaxpr.jaxpr.eqns) == 1


def test_dropout_only_in_the_loss_and_needs_a_key():
    model = _model(decoder_dropout=0.2, dropout_rate=0.3)
    plain = dataclasses.replace(model, decoder_dropout=0.0, dropout_rate=0.0)
    params, _ = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x, caps = rng.standard_normal((6, 1, 4, 8)).astype(np.float32), _captions(rng, 6, 5)
    with pytest.raises(ValueError, match=r"PRNG key is required.*decoder_dropout=0\.2"):
        model.loss(params, {}, x, caps)
    a = model.loss(params, {}, x, caps, key=jax.random.key(1))[0]
    b = model.loss(params, {}, x, caps, key=jax.random.key(2))[0]
    assert a != b and plain.loss(params, {}, x, caps)[0] not in (a, b)
    np.testing.assert_array_equal(model.apply(params, {}, x, train=True)[0], plain.apply(params, {}, x, train=False)[0])
    np.testing.assert_array_equal(model.sample(params, x, 4), plain.sample(params, x, 4))


def test_caption_accuracy_exact_and_per_word():
    model = _model()
    params, _ = _perturbed(model, scale=0.5)
    x = np.random.default_rng(0).standard_normal((4, 1, 4, 8)).astype(np.float32)
    sampled = np.asarray(model.sample(params, x, 3))
    caps = np.zeros((4, 4), np.int32)
    caps[:, 0], caps[:, 1:] = 1, sampled
    caps[1, 1] = 4 if sampled[1, 0] != 4 else 5  # one word wrong in caption 1
    exact, per_word = model.caption_accuracy(params, x, caps, batch_size=3)
    counted = np.asarray(model.target_mask(caps)).sum()
    assert exact == 0.75 and per_word == pytest.approx((counted - 1) / counted)


def test_record_round_trip_and_construction_errors():
    model = _model(norm="pre", encoder_norm="batchnorm", reg=0.1)
    record = jl.model.model_record(model)
    assert record["class"] == "CaptioningTransformer" and record["config"]["norm"] == "pre"
    assert jl.model.model_from_record(record) == model
    assert CaptioningTransformer.from_dict(model.to_dict()) == model
    assert CaptioningTransformer({w: i for i, w in enumerate(WORDS)}, input_dim=4).words == WORDS
    with pytest.raises(ValueError, match="num_heads=3 must divide wordvec_dim=8"):
        _model(num_heads=3)
    with pytest.raises(ValueError, match="norm"):
        _model(norm="sandwich")
    with pytest.raises(ValueError, match="decoder_dropout"):
        _model(decoder_dropout=1.0)
    with pytest.raises(ValueError, match="lacks <END>"):
        CaptioningTransformer(("<NULL>", "<START>", "a"))
    with pytest.raises(ValueError, match="it needs encoder_channels"):
        CaptioningTransformer(WORDS, encoder_norm="batchnorm")
    params, _ = _model().init(jax.random.key(0))
    with pytest.raises(ValueError, match="params\\['cross1_Wk'\\] must have shape"):
        _model().apply({**params, "cross1_Wk": params["cross1_Wk"][:1]}, {}, np.zeros((2, 32)), train=False)


def test_fit_load_run_and_cli_train_evaluate(tmp_path, monkeypatch, capsys):
    from jaxlayers import cli
    from jaxlayers import data as jl_data

    load = jl_data.load

    def small(name, **kw):  # the preset's dataset, fewer training images (the CLI loads it by name)
        ds = load(name, **kw)
        return dataclasses.replace(ds, X_train=ds.X_train[:200], y_train=ds.y_train[:200])

    monkeypatch.setattr(jl_data, "load", small)
    out = tmp_path / "capxf"
    args = ["train", "--model", "captioning_transformer", "--hidden-dims", "8", "--conv-channels", "4"]
    assert cli.main([*args, "--epochs", "1", "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    assert isinstance(run.model, CaptioningTransformer) and run.model.encoder_channels == (4,)
    assert run.model.wordvec_dim == 8 and run.model.num_layers == 1 and run.model.mlp_dim == 32
    assert run.model.num_heads == 4 and run.model.max_length == 5 and run.model.norm == "post"
    assert run.model.decoder_dropout == 0.1 and run.model.dropout_rate == 0.5  # the preset
    assert run.train_config.optimizer == "adamw" and run.train_config.schedule == "cosine"
    assert run.model.encoder_norm == "batchnorm" and set(run.model_state) == {"bn1"}
    ds = small("digit-captions").as_images()
    exact, per_word = run.caption_accuracy(ds.X_test, ds.y_test, standardized=True)
    assert run.summary["test_acc"] == pytest.approx(per_word, abs=1e-12)
    assert 0 <= exact <= per_word <= 1
    assert run.captions(ds.X_test[:3], standardized=True).shape == (3, 5)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"exact-caption accuracy {exact:.4f}; per-word accuracy {per_word:.4f}" in text
    assert text.count("reference: ") == 3
    assert cli.main([*args[:3], "--hidden-dims", "8", "16", "--epochs", "1", "-q", "-o", str(tmp_path / "bad")]) == 2
    assert "the decoder layers share one width, got --hidden-dims [8, 16]" in capsys.readouterr().err
    assert cli.main([*args[:3], "--hidden-dims", "10", "--epochs", "1", "-q", "-o", str(tmp_path / "bad2")]) == 2
    assert "--hidden-dims 10 must be a multiple of the decoder's 4 attention heads" in capsys.readouterr().err
