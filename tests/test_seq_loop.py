"""The training loop on sequence labels (issue 18): ``fit`` / ``evaluate`` / ``load_run`` with labels
``(N, T)``, padding (negative labels) left out of the loss and of every accuracy's denominator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import nn
from jaxlayers.data import Dataset, Vocabulary
from jaxlayers.training.epoch import pad_eval
from jaxlayers.training.preflight import check_split
from jaxlayers.training.state import count_targets, init_train_state, make_train_step

V, T, D = 7, 6, 8


def _model():
    return nn.Sequential(nn.Embedding(V, D), nn.TemporalAffine(V), input_shape=(T,), loss="temporal_softmax")


def _tokens(n, seed):
    """Next token = (token + 1) % V (learnable without recurrence); each row's last ``k`` steps padding
    (``k`` in 0..3, so the rows count different numbers of labels)."""
    rng = np.random.RandomState(seed)
    x = rng.randint(0, V, size=(n, T)).astype(np.int32)
    y = ((x + 1) % V).astype(np.int32)
    pad = rng.randint(0, 4, size=n)
    y[np.arange(T)[None, :] >= T - pad[:, None]] = -1
    return x, y


def _data():
    (Xt, yt), (Xv, yv), (Xs, ys) = _tokens(96, 0), _tokens(30, 1), _tokens(20, 2)
    vocab = Vocabulary(tuple("abcdefg"))
    return Dataset(Xt, yt, Xv, yv, Xs, ys, name="tokens", class_names=vocab.tokens, vocab=vocab)


def _per_token_acc(model, params, state, X, y):
    scores, _ = model.apply(params, state, jnp.asarray(X), train=False)
    hit = (np.asarray(jnp.argmax(scores, -1)) == y) & (y >= 0)
    return hit.sum() / (y >= 0).sum()


def test_fit_counts_accuracy_per_counted_token():
    data, model = _data(), _model()
    config = jl.train.TrainConfig(epochs=3, batch_size=32, learning_rate=2e-2, eval_batch_size=7)
    result = jl.train.fit(model, data, config)
    h = result.history
    n_val = int((data.y_val >= 0).sum())
    assert n_val < data.y_val.size  # padding present: a per-example or per-slot denominator would differ
    # every validation accuracy is a count of correct tokens over the counted tokens
    assert np.allclose(np.asarray(h.val_acc) * n_val, np.round(np.asarray(h.val_acc) * n_val))
    best = _per_token_acc(model, result.best_params, result.best_model_state, data.X_val, data.y_val)
    assert result.best_val_acc == pytest.approx(best, abs=1e-12)
    # evaluate agrees, whatever its batch size (its padding rows never count)
    for bs in (4, 1024):
        acc = jl.train.evaluate(
            model, result.best_params, result.best_model_state, data.X_val, data.y_val, batch_size=bs
        )
        assert acc == pytest.approx(best, abs=1e-12)
    assert h.train_acc[-1] > 0.5 and h.val_acc[-1] > 0.5  # it learns the shift
    assert all(0.0 <= a <= 1.0 for a in h.train_acc)


def test_train_accuracy_denominator_is_the_counted_tokens():
    model = _model()
    x, y = _tokens(16, 3)
    step = make_train_step(model, jl.train.make_optimizer(jl.train.TrainConfig(learning_rate=1e-2), 1))
    state = init_train_state(
        model, jl.train.make_optimizer(jl.train.TrainConfig(learning_rate=1e-2), 1), jax.random.key(0)
    )
    params = jax.tree.map(jnp.copy, state.params)
    scores, _ = model.apply(params, state.model_state, jnp.asarray(x), train=True)
    hits = int(((np.asarray(jnp.argmax(scores, -1)) == y) & (y >= 0)).sum())
    _, metrics = step(state, jnp.asarray(x), jnp.asarray(y))
    assert float(metrics["accuracy"]) == pytest.approx(hits / int((y >= 0).sum()), abs=1e-6)
    assert int(count_targets(model, y)) == int((y >= 0).sum())
    assert int(count_targets(jl.FullyConnectedNet([4], input_dim=3, num_classes=2), np.zeros(5, np.int32))) == 5


def test_pad_eval_keeps_the_time_axis_and_pads_with_minus_one():
    x, y = _tokens(10, 4)
    Xp, yp = pad_eval(x, y, 4)
    assert Xp.shape == (3, 4, T) and yp.shape == (3, 4, T)
    assert (yp.reshape(12, T)[10:] == -1).all() and (yp.reshape(12, T)[:10] == y).all()


def test_check_split_on_sequence_labels():
    model = _model()
    x, y = _tokens(8, 5)
    check_split(model, x, y, "fit")  # padding (-1) is not a label out of range
    with pytest.raises(ValueError, match=r"y must hold sequence labels of shape \(8, T\).*got \(8,\)"):
        check_split(model, x, y[:, 0], "fit")
    with pytest.raises(ValueError, match=r"y has 5 steps per example but the model scores \(6,\) steps"):
        check_split(model, x, y[:, :5], "fit")
    bad = y.copy()
    bad[0, 0] = V
    with pytest.raises(ValueError, match=rf"labels in \[\d, {V}\] but the model has {V} classes"):
        check_split(model, x, bad, "fit")


def test_resume_equals_an_uninterrupted_run(tmp_path):
    data, model = _data(), _model()
    cfg = lambda e: jl.train.TrainConfig(epochs=e, batch_size=32, learning_rate=2e-2)  # noqa: E731
    whole = jl.train.fit(model, data, cfg(4))
    jl.train.fit(model, data, cfg(2), checkpoint_dir=tmp_path)
    resumed = jl.train.fit(model, data, cfg(4), checkpoint_dir=tmp_path, resume=True)
    assert resumed.start_epoch == 2
    for a, b in zip(jax.tree.leaves(whole.state.params), jax.tree.leaves(resumed.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(whole.history.val_acc, resumed.history.val_acc)
    np.testing.assert_array_equal(whole.history.train_acc, resumed.history.train_acc)


def test_load_run_gives_back_the_vocabulary_and_the_accuracy(tmp_path):
    data, model = _data(), _model()
    result = jl.train.fit(
        model, data, jl.train.TrainConfig(epochs=2, batch_size=32, learning_rate=2e-2), run_dir=tmp_path
    )
    run = jl.load_run(tmp_path)
    assert run.vocab == data.vocab and run.vocab.decode(data.X_test[0]) == data.vocab.decode(data.X_test[0])
    assert run.evaluate(data.X_val, data.y_val) == pytest.approx(result.best_val_acc, abs=1e-12)
    assert jl.load_run(tmp_path).preprocessing.vocab.tokens == tuple("abcdefg")


def test_fit_many_on_sequence_labels():
    data, model = _data(), _model()
    sweep = jl.train.fit_many(model, data, jl.train.TrainConfig(epochs=2, batch_size=32), seeds=[0, 1])
    for k in range(2):
        params = jax.tree.map(lambda a, k=k: a[k], sweep.best_params)
        state = jax.tree.map(lambda a, k=k: a[k], sweep.best_model_state)
        assert sweep.best_val_acc[k] == pytest.approx(_per_token_acc(model, params, state, data.X_val, data.y_val))


def _bits_by_hand(model, params, state, X, y):
    scores, _ = model.apply(params, state, jnp.asarray(X), train=False)
    logp = np.asarray(jax.nn.log_softmax(np.asarray(scores, np.float64), axis=-1))
    mask = y >= 0
    picked = np.take_along_axis(logp, np.where(mask, y, 0)[..., None], axis=-1)[..., 0]
    return -picked[mask].sum() / mask.sum() / np.log(2)


def test_bits_per_token_is_the_mean_cross_entropy_in_bits():
    data, model = _data(), _model()
    result = jl.train.fit(model, data, jl.train.TrainConfig(epochs=1, batch_size=32, learning_rate=1e-2))
    p, s = result.best_params, result.best_model_state
    want = _bits_by_hand(model, p, s, data.X_val, data.y_val)
    for bs in (7, 1024):  # padding rows of the last batch add nothing
        assert jl.train.bits_per_token(model, p, s, data.X_val, data.y_val, batch_size=bs) == pytest.approx(want, 1e-5)
    uniform = jax.tree.map(jnp.zeros_like, p)  # all-zero scores: log2(V) bits
    assert jl.train.bits_per_token(model, uniform, s, data.X_val, data.y_val) == pytest.approx(np.log2(V), 1e-6)
    with pytest.raises(ValueError, match="does not score sequences"):
        fc = jl.FullyConnectedNet([4], input_dim=T, num_classes=V)
        jl.train.bits_per_token(fc, *fc.init(jax.random.key(0)), data.X_val.astype(np.float32), data.y_val[:, 0])


def test_char_lm_builds_the_named_cell_or_refuses_clearly():
    m = jl.models.char_lm(V, T, embed_dim=D, cell="none")
    assert m.sequence_targets and m.param_shapes() == {"E1": (V, D), "W2": (D, V), "b2": (V,)}
    with pytest.raises(ValueError, match="cell"):
        jl.models.char_lm(V, T, cell="transformer")
    if not hasattr(nn, "LSTM"):  # the recurrent nn layers land separately: until then the error names it
        with pytest.raises(ValueError, match=r"needs nn\.LSTM"):
            jl.models.char_lm(V, T)
    else:
        assert jl.models.char_lm(V, T, hidden=5).sequence_targets


def test_char_lm_embedding_starts_standard_normal_as_pytorch_and_says_so():
    """char_lm's embedding is N(0, 1) (PyTorch's nn.Embedding), not nn.Embedding's own N(0, 1/E): 262,144
    draws, so the sample std is within ~0.0014 of the true one (one standard error)."""

    def table(model):
        return np.asarray(model.init(jax.random.key(0))[0]["E1"], np.float64)

    E = table(jl.models.char_lm(4096, T, embed_dim=64, cell="none"))
    assert E.shape == (4096, 64)
    assert abs(E.mean()) < 0.01 and abs(E.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(E)) - np.sqrt(2 / np.pi)) < 0.01  # normal, not uniform (E|x| = sqrt(2/pi) sigma)
    assert jl.models.char_lm(V, T, embed_dim=D, cell="none").layers[0].scale == 1.0  # the CLI's charlm too
    doc = " ".join(jl.models.char_lm.__doc__.split())
    assert "N(0, 1)" in doc and "PyTorch's ``nn.Embedding``" in doc
    # The old init stays reachable; nn.Embedding's own default (and so char_transformer's) is unchanged.
    assert abs(table(jl.models.char_lm(4096, T, embed_dim=64, cell="none", embed_scale=0.125)).std() - 0.125) < 2e-3
    plain = nn.Sequential(nn.Embedding(4096, 64), nn.TemporalAffine(V), input_shape=(T,), loss="temporal_softmax")
    assert abs(table(plain).std() - 0.125) < 2e-3
    with pytest.raises(ValueError, match="embed_scale"):
        jl.models.char_lm(V, T, embed_scale=0.0)
    with pytest.raises(TypeError, match="embed_scale"):
        jl.models.char_lm(V, T, embed_scale="1")


def test_cli_evaluate_reports_bits_per_character_and_sample_prints_text(tmp_path, capsys):
    import dataclasses

    from jaxlayers import cli

    full = jl.data.load("pydoc-chars")
    ds = dataclasses.replace(
        full, X_train=full.X_train[:64], y_train=full.y_train[:64]
    )  # same name: the CLI reloads it
    model = jl.models.char_lm(len(full.vocab), full.input_shape[0], embed_dim=16, cell="none")
    run_dir = tmp_path / "run"
    jl.train.fit(
        model, ds, jl.train.TrainConfig(epochs=1, batch_size=32, optimizer="adam", learning_rate=1e-2), run_dir=run_dir
    )
    run = jl.load_run(run_dir)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir), "--split", "val"]) == 0
    out = capsys.readouterr().out
    bits = _bits_by_hand(run.model, run.params, run.model_state, full.X_val, full.y_val)
    assert (
        f"bits per character {bits:.4f}" in out
        and f"({len(full.y_val)} sequences, {full.y_val.size} characters)" in out
    )
    assert f"accuracy {run.evaluate(full.X_val, full.y_val):.4f} per character" in out

    assert cli.main(["sample", str(run_dir), "--length", "60", "--prompt", "def ", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert cli.main(["sample", str(run_dir), "--length", "60", "--prompt", "def ", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first  # seeded
    text = first[:-1]  # print's newline
    assert text.startswith("def ") and len(text) == 64 and set(text) <= set(full.vocab.tokens)
    # greedy: for this bigram model each next character is the argmax of the scores of the last one alone
    greedy = run.sample(20, "def ", temperature=0)
    ids = list(full.vocab.encode("def "))
    for _ in range(20):
        window = np.full((1, full.input_shape[0]), ids[-1], np.int32)
        scores, _ = run.model.apply(run.params, run.model_state, jnp.asarray(window), train=False)
        ids.append(int(jnp.argmax(scores[0, 0])))
    assert greedy == full.vocab.decode(ids)
    assert cli.main(["sample", str(run_dir), "--length", "-1"]) == 2


def test_cli_train_model_charlm_wires_vocabulary_window_and_preset(tmp_path, monkeypatch, capsys):
    """`--model charlm` end to end. Until the recurrent nn layers are in this build, the cell is swapped
    for none (the wiring under test is the CLI's: vocabulary size, window length, preset, run files)."""
    from jaxlayers import cli, models

    if not hasattr(nn, "LSTM"):
        monkeypatch.setitem(models.CHARLM_CELLS, "lstm", None)
    out = tmp_path / "lm"
    args = ["train", "--model", "charlm", "--dataset", "pydoc-chars:400", "--hidden-dims", "8", "--epochs", "1"]
    assert cli.main([*args, "-q", "-o", str(out)]) == 0
    run = jl.load_run(out)
    ds = jl.data.load("pydoc-chars:400")
    assert run.vocab == ds.vocab and run.preprocessing.input_shape == (400,)
    assert run.model.num_classes == len(ds.vocab) and run.model.sequence_targets
    assert run.train_config.optimizer == "adam" and run.train_config.clip_norm == 5.0  # the preset
    assert run.summary["test_acc"] == pytest.approx(run.evaluate(ds.X_test, ds.y_test), abs=1e-12)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out)]) == 0
    assert f"bits per character {run.bits_per_token(ds.X_test, ds.y_test):.4f}" in capsys.readouterr().out
