"""jl.CaptioningRNN: the course's captioning model as a model of the protocol.

Its loss and every gradient against ``jax.grad`` of a plain-``jnp`` transcription (float64), its
greedy sample under ``jit`` against a step-by-step NumPy loop, what the training loop counts, a short
``fit`` and ``load_run`` round trip, and ``jaxlayers train --model captioning`` / ``evaluate``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.captioning import CaptioningRNN

WORDS = ("<NULL>", "<START>", "<END>", "<UNK>", "a", "b", "c")


def _captions(rng, n, length):
    """``<START> w.. <END> <NULL>..`` rows of ``length`` ids, 1 to ``length - 2`` words each."""
    caps = np.zeros((n, length), np.int32)
    caps[:, 0] = 1
    for i in range(n):
        k = rng.integers(1, length - 1)
        caps[i, 1 : k + 1] = rng.integers(4, len(WORDS), k)
        caps[i, k + 1] = 2
    return caps


# --- a plain-jnp transcription of the model (the NumPy original's rnn.py loss, plus the conv encoder) ---


def _sigmoid(x):
    return 1 / (1 + jnp.exp(-x))


def _cell(cell_type, x, h, c, Wx, Wh, b):
    a = x @ Wx + b
    if cell_type == "rnn":
        return jnp.tanh(a + h @ Wh), c
    if cell_type == "lstm":
        a = a + h @ Wh
        H = h.shape[1]
        i, f, o, g = (
            _sigmoid(a[:, :H]),
            _sigmoid(a[:, H : 2 * H]),
            _sigmoid(a[:, 2 * H : 3 * H]),
            jnp.tanh(a[:, 3 * H :]),
        )
        c = f * c + i * g
        return o * jnp.tanh(c), c
    H = h.shape[1]
    ha = h @ Wh
    r, z = _sigmoid(a[:, :H] + ha[:, :H]), _sigmoid(a[:, H : 2 * H] + ha[:, H : 2 * H])
    n = jnp.tanh(a[:, 2 * H :] + r * ha[:, 2 * H :])
    return (1 - z) * n + z * h, c


def _reference_features(p, x, channels, stats=None):
    """The encoder; with ``stats`` (``"batch"`` or ``{"bn{i}": (mean, var)}``) batchnorm after each conv."""
    for i in range(1, len(channels) + 1):
        x = jax.lax.conv_general_dilated(x, p[f"W_conv{i}"], (1, 1), ((1, 1), (1, 1)))
        x = x + p[f"b_conv{i}"][None, :, None, None]
        if stats is not None:
            mean, var = (x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))) if stats == "batch" else stats[f"bn{i}"]
            x = (x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + 1e-5)
            x = x * p[f"gamma_conv{i}"][None, :, None, None] + p[f"beta_conv{i}"][None, :, None, None]
        x = jnp.maximum(x, 0)
        n, c, h, w = x.shape
        x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return x.reshape(x.shape[0], -1)


def reference_loss(p, x, captions, cell_type, channels, reg, null=0, stats=None):
    """The course's CaptioningRNN.loss, plain jnp: masked cross-entropy summed over time / N, + L2."""
    h = _reference_features(p, x, channels, stats) @ p["W_proj"] + p["b_proj"]
    c = jnp.zeros_like(h)
    cin, cout = captions[:, :-1], captions[:, 1:]
    total = 0.0
    for t in range(cin.shape[1]):
        h, c = _cell(cell_type, p["W_embed"][cin[:, t]], h, c, p["Wx"], p["Wh"], p["b"])
        scores = h @ p["W_vocab"] + p["b_vocab"]
        logp = jax.nn.log_softmax(scores, axis=1)
        picked = jnp.take_along_axis(logp, cout[:, t : t + 1], axis=1)[:, 0]
        total = total - jnp.sum(picked * (cout[:, t] != null))
    weights = [k for k in p if k.startswith("W_conv")] + ["W_proj", "Wx", "Wh", "W_vocab"]
    return total / x.shape[0] + 0.5 * reg * sum(jnp.sum(p[k] ** 2) for k in weights)


@pytest.mark.parametrize(
    ("cell_type", "channels"), [("rnn", (3, 4)), ("lstm", (3, 4)), ("gru", (3, 4)), ("gru", ())]
)  # no encoder with an LSTM: test_loss_is_the_compat_models_loss_on_the_same_parameters
def test_loss_and_gradients_match_autodiff_of_a_plain_jnp_reference(x64, cell_type, channels):
    rng = np.random.default_rng(0)
    image = (1, 4, 8)
    model = CaptioningRNN(
        WORDS,
        input_dim=image if channels else 32,
        wordvec_dim=5,
        hidden_dim=6,
        cell_type=cell_type,
        encoder_channels=channels,
        max_length=4,
        reg=0.3,
        dtype=jnp.float64,
    )
    params, state = model.init(jax.random.key(1))
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}  # nonzero biases
    x = rng.standard_normal((7, *image)) if channels else rng.standard_normal((7, 32))
    caps = _captions(rng, 7, 5)
    (loss, (new_state, scores)), grads = jax.value_and_grad(model.loss, has_aux=True)(params, state, x, caps)
    ref, ref_grads = jax.value_and_grad(reference_loss)(params, x, caps, cell_type, channels, 0.3)
    assert new_state == {} and scores.shape == (7, 5, len(WORDS))
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    assert set(grads) == set(ref_grads) == set(model.param_shapes())
    for k in grads:
        assert grads[k].dtype == jnp.float64
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_encoder_batchnorm_loss_gradients_running_statistics_and_sample(x64):
    """encoder_norm='batchnorm': the loss and every gradient (gamma, beta included) against autodiff of the
    plain-jnp encoder with batch statistics; the running statistics' update; test mode on them."""
    rng = np.random.default_rng(3)
    image, channels = (1, 4, 8), (3, 4)
    model = CaptioningRNN(WORDS, input_dim=image, wordvec_dim=5, hidden_dim=6, cell_type="lstm",
                          encoder_channels=channels, max_length=4, reg=0.3, dtype=jnp.float64,
                          encoder_norm="batchnorm")  # fmt: skip
    params, state = model.init(jax.random.key(1))
    assert set(state) == {"bn1", "bn2"} and state["bn2"].mean.shape == (4,)
    assert params["gamma_conv1"].tolist() == [1.0] * 3 and params["beta_conv2"].tolist() == [0.0] * 4
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    x, caps = rng.standard_normal((7, *image)), _captions(rng, 7, 5)
    (loss, (new_state, _)), grads = jax.value_and_grad(model.loss, has_aux=True)(params, state, x, caps)
    ref, ref_grads = jax.value_and_grad(reference_loss)(params, x, caps, "lstm", channels, 0.3, 0, "batch")
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    assert set(grads) == set(ref_grads) == set(model.param_shapes())
    for k in grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-7, atol=1e-10, err_msg=k)
    # running statistics: momentum 0.9 from (0, 1) towards the first conv's batch mean and (biased) variance
    conv1 = jax.lax.conv_general_dilated(x, params["W_conv1"], (1, 1), ((1, 1), (1, 1)))
    conv1 = conv1 + params["b_conv1"][None, :, None, None]
    np.testing.assert_allclose(new_state["bn1"].mean, 0.1 * conv1.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new_state["bn1"].var, 0.9 + 0.1 * conv1.var(axis=(0, 2, 3)), rtol=1e-5)
    # test mode (features, sample, apply(train=False)) normalises with the running statistics
    running = {k: (jnp.asarray(v.mean, jnp.float64), jnp.asarray(v.var, jnp.float64)) for k, v in new_state.items()}
    np.testing.assert_allclose(
        model.features(params, x, state=new_state), _reference_features(params, x, channels, running), rtol=1e-9
    )
    with pytest.raises(ValueError, match="pass state="):
        model.sample(params, x, 4)
    with pytest.raises(ValueError, match="running statistics"):
        model.sample(params, x, 4, state={})
    words = model.sample(params, x, 4, state=new_state)
    scores, same = model.apply(params, new_state, x, train=False)
    assert same is new_state
    np.testing.assert_array_equal(words, jnp.argmax(scores, -1)[:, 1:])
    _, updated = model.apply(params, new_state, x, train=True)  # batch statistics, updated running ones
    assert not np.allclose(updated["bn1"].mean, new_state["bn1"].mean)


def test_loss_is_the_compat_models_loss_on_the_same_parameters(x64):
    """No encoder: exactly the NumPy original's model (compat.CaptioningRNN, the course's code path)."""
    rng = np.random.default_rng(2)
    words = {w: i for i, w in enumerate(WORDS)}
    np.random.seed(0)  # noqa: NPY002 (compat draws its weights as the course)
    course = jl.compat.CaptioningRNN(
        words, input_dim=10, wordvec_dim=4, hidden_dim=5, cell_type="lstm", dtype=np.float64
    )
    model = CaptioningRNN(words, input_dim=10, wordvec_dim=4, hidden_dim=5, cell_type="lstm", dtype=jnp.float64)
    x, caps = rng.standard_normal((6, 10)), _captions(rng, 6, 5)
    loss, course_grads = course.loss(x, caps)
    params = {k: jnp.asarray(v) for k, v in course.params.items()}
    ours, grads = jax.value_and_grad(lambda p: model.loss(p, {}, x, caps)[0])(params)
    np.testing.assert_allclose(ours, loss, rtol=1e-12)
    for k, g in course_grads.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-9, atol=1e-13, err_msg=k)
    # and the greedy captions are the course's sample's
    np.testing.assert_array_equal(model.sample(params, x, 7), course.sample(x, max_length=7))


@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "gru"])
def test_sample_under_jit_is_the_greedy_step_by_step_caption(cell_type):
    rng = np.random.default_rng(3)
    model = CaptioningRNN(WORDS, input_dim=(1, 4, 8), wordvec_dim=5, hidden_dim=6, cell_type=cell_type,
                          encoder_channels=(3,), max_length=4)  # fmt: skip
    params, _ = model.init(jax.random.key(0))
    params = {k: v + 0.3 * rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    x = rng.standard_normal((5, 1, 4, 8)).astype(np.float32)
    got = jax.jit(model.sample, static_argnames="max_length")(params, x, max_length=6)
    assert got.shape == (5, 6) and got.dtype == jnp.int32
    # step by step with the public step ops, one word at a time
    h = np.asarray(model.initial_state(params, x))
    c, word, want = np.zeros_like(h), np.full(5, model.start), []
    for _ in range(6):
        w = params["W_embed"][word]
        if cell_type == "lstm":
            h, c = jl.lstm_step(w, h, c, params["Wx"], params["Wh"], params["b"])
        else:
            h = (jl.rnn_step if cell_type == "rnn" else jl.gru_step)(w, h, params["Wx"], params["Wh"], params["b"])
        word = np.argmax(np.asarray(h @ params["W_vocab"] + params["b_vocab"]), axis=1)
        want.append(word)
    np.testing.assert_array_equal(got, np.stack(want, axis=1))
    # apply: the same words after the <START> row, max_length + 1 steps
    scores, state = model.apply(params, {}, x, train=False)
    assert scores.shape == (5, 5, len(WORDS)) and state == {}
    np.testing.assert_array_equal(np.argmax(scores, -1)[:, 0], model.start)
    np.testing.assert_array_equal(np.argmax(scores, -1)[:, 1:], got[:, :4])


def test_target_mask_counts_the_words_and_end_only():
    model = CaptioningRNN(WORDS, input_dim=3, max_length=4)
    caps = np.array([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [-1, -1, -1, -1, -1]])
    mask = np.asarray(model.target_mask(caps))
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    assert int(model.target_count(caps)) == 5
    # the loop's count of right words is over the mask only: a <NULL> predicted where the caption has
    # <NULL>, or <START> at step 0, does not count
    scores = jax.nn.one_hot(np.array([[1, 4, 6, 2, 0], [1, 6, 2, 0, 0], [0, 0, 0, 0, 0]]), len(WORDS))
    from jaxlayers.training.state import count_right

    assert int(count_right(model, scores, caps)) == 4


def test_caption_accuracy_exact_and_per_word():
    model = CaptioningRNN(WORDS, input_dim=2, hidden_dim=4, wordvec_dim=3, max_length=3)
    params, _ = model.init(jax.random.key(0))
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    sampled = np.asarray(model.sample(params, x, 3))
    caps = np.zeros((4, 4), np.int32)
    caps[:, 0], caps[:, 1:] = 1, sampled
    caps[1, 1] = 4 if sampled[1, 0] != 4 else 5  # one word wrong in caption 1
    exact, per_word = model.caption_accuracy(params, x, caps, batch_size=3)
    counted = np.asarray(model.target_mask(caps)).sum()
    assert exact == 0.75 and per_word == pytest.approx((counted - 1) / counted)


def test_construction_errors_name_the_field():
    with pytest.raises(ValueError, match="lacks <END>"):
        CaptioningRNN(("<NULL>", "<START>", "a"))
    with pytest.raises(ValueError, match="cell_type"):
        CaptioningRNN(WORDS, cell_type="transformer")
    with pytest.raises(ValueError, match="input_dim must be \\(C, H, W\\)"):
        CaptioningRNN(WORDS, input_dim=64, encoder_channels=(8,))
    with pytest.raises(ValueError, match="encoder_norm"):
        CaptioningRNN(WORDS, input_dim=(1, 4, 8), encoder_channels=(4,), encoder_norm="groupnorm")
    with pytest.raises(ValueError, match="it needs encoder_channels"):
        CaptioningRNN(WORDS, encoder_norm="batchnorm")
    with pytest.raises(ValueError, match="shrinks"):
        CaptioningRNN(WORDS, input_dim=(1, 2, 8), encoder_channels=(4, 4))
    model = CaptioningRNN(WORDS, input_dim=(1, 4, 8), encoder_channels=(3,), hidden_dim=4, wordvec_dim=3)
    params, _ = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 4, 8\) or flat \(N, 32\), got \(2, 31\)"):
        model.apply(params, {}, np.zeros((2, 31)), train=False)
    with pytest.raises(ValueError, match="captions \\(y\\) must be \\(N, L\\) with L >= 2"):
        model.loss(params, {}, np.zeros((2, 32)), np.ones((2, 1), np.int32))
    with pytest.raises(ValueError, match="params\\['Wh'\\] must have shape"):
        model.apply({**params, "Wh": params["Wh"][:1]}, {}, np.zeros((2, 32)), train=False)


def test_feature_dropout_only_in_the_loss():
    model = CaptioningRNN(WORDS, input_dim=(1, 4, 8), encoder_channels=(3,), hidden_dim=4, wordvec_dim=3,
                          max_length=4, dropout_rate=0.5)  # fmt: skip
    plain = dataclasses.replace(model, dropout_rate=0.0)
    params, _ = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x, caps = rng.standard_normal((6, 1, 4, 8)).astype(np.float32), _captions(rng, 6, 5)
    with pytest.raises(ValueError, match="PRNG key is required"):
        model.loss(params, {}, x, caps)
    a = model.loss(params, {}, x, caps, key=jax.random.key(1))[0]
    b = model.loss(params, {}, x, caps, key=jax.random.key(2))[0]
    assert a != b and plain.loss(params, {}, x, caps)[0] not in (a, b)
    # the features' dropout, by hand: the same mask through the plain model's h0
    feats = model.features(params, x)
    dropped = jl.dropout(feats, jax.random.key(1), rate=0.5, train=True)
    np.testing.assert_allclose(
        model.initial_state(params, x, key=jax.random.key(1)), dropped @ params["W_proj"] + params["b_proj"], rtol=1e-6
    )
    np.testing.assert_array_equal(model.apply(params, {}, x, train=True)[0], plain.apply(params, {}, x, train=False)[0])


def _small_data(n_train=300, seed=0):
    full = jl.data.load("digit-captions", seed=seed)
    return dataclasses.replace(full, X_train=full.X_train[:n_train], y_train=full.y_train[:n_train]).as_images()


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_fit_checkpoints_and_load_run_round_trip(tmp_path, norm):
    ds = _small_data()
    model = CaptioningRNN(ds.vocab, input_dim=ds.image_shape, wordvec_dim=8, hidden_dim=16, cell_type="gru",
                          encoder_channels=(4,), max_length=ds.y_train.shape[1] - 1, encoder_norm=norm)  # fmt: skip
    config = jl.train.TrainConfig(epochs=2, batch_size=50, optimizer="adam", learning_rate=1e-2)
    result = jl.train.fit(model, ds, config, run_dir=tmp_path / "run")
    assert np.all(np.isfinite(result.history.loss))
    run = jl.load_run(tmp_path / "run")
    assert run.model == model and jl.model.model_from_record(jl.model.model_record(model)) == model
    for k, v in result.best_params.items():
        np.testing.assert_array_equal(run.params[k], v)
    assert jax.tree.structure(run.model_state) == jax.tree.structure(result.best_model_state)
    # the loop's test accuracy is the greedy captions' per-word accuracy, reproduced from the run
    exact, per_word = run.caption_accuracy(ds.X_test, ds.y_test, standardized=True)
    assert run.summary["test_acc"] == pytest.approx(per_word, abs=1e-12)
    assert 0 <= exact <= per_word <= 1
    caps = run.captions(ds.X_test[:4], standardized=True)
    assert caps.shape == (4, model.max_length)
    with pytest.raises(ValueError, match="captions images"):
        run.sample(5)


def test_cli_train_model_captioning_preset_and_evaluate(tmp_path, monkeypatch, capsys):
    from jaxlayers import cli
    from jaxlayers import data as jl_data

    load = jl_data.load

    def small(name, **kw):  # the preset's dataset, fewer training images (the CLI loads it by name)
        ds = load(name, **kw)
        return dataclasses.replace(ds, X_train=ds.X_train[:200], y_train=ds.y_train[:200])

    monkeypatch.setattr(jl_data, "load", small)
    out = tmp_path / "cap"
    args = ["train", "--model", "captioning", "--hidden-dims", "16", "--conv-channels", "4", "--epochs", "1"]
    assert cli.main([*args, "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    assert isinstance(run.model, CaptioningRNN) and run.model.encoder_channels == (4,)
    assert run.model.hidden_dim == 16 and run.model.cell_type == "lstm" and run.model.max_length == 5
    assert run.train_config.optimizer == "adamw" and run.train_config.batch_size == 100  # the preset
    assert run.model.dropout_rate == 0.5 and run.train_config.weight_decay == 0.3
    assert run.train_config.schedule == "cosine"
    assert run.model.encoder_norm == "batchnorm" and set(run.model_state) == {"bn1"}
    ds = small("digit-captions").as_images()
    exact, per_word = run.caption_accuracy(ds.X_test, ds.y_test, standardized=True)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"exact-caption accuracy {exact:.4f}; per-word accuracy {per_word:.4f}" in text
    assert text.count("reference: ") == 3
