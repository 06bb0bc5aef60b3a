"""jaxlayers.train: the step, evaluation, fit, determinism, checkpoints and bitwise resume."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file

import jaxlayers as jl
from jaxlayers import train
from jaxlayers.training import checkpoint, strategies
from jaxlayers.training import state as state_module
from jaxlayers.training.epoch import pad_eval

# One small network and a small slice of digits keep every fit here to a
# couple of seconds; batchnorm and dropout are on so that resume has running
# statistics and dropout keys to get exactly right.
NET = jl.FullyConnectedNet(
    hidden_dims=(32, 16), input_dim=64, num_classes=10, normalization="batchnorm", dropout_rate=0.2
)
CONFIG = train.TrainConfig(epochs=4, batch_size=50, optimizer="adam", learning_rate=3e-3, lr_decay=0.9, seed=7)


@pytest.fixture(scope="module")
def small():
    ds = jl.data.load("digits")
    return dataclasses.replace(ds, X_train=ds.X_train[:400], y_train=ds.y_train[:400])


def _leaves(tree):
    def host(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.asarray(a)

    return [host(a) for a in jax.tree.leaves(tree)]


def assert_trees_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def assert_results_equal(r1, r2):
    assert_trees_bitwise_equal(r1.state, r2.state)
    assert_trees_bitwise_equal(r1.best_params, r2.best_params)
    assert_trees_bitwise_equal(r1.best_model_state, r2.best_model_state)
    for name in ("loss", "train_acc", "val_acc", "lr"):
        np.testing.assert_array_equal(getattr(r1.history, name), getattr(r2.history, name))
    assert (r1.best_epoch, r1.best_val_acc) == (r2.best_epoch, r2.best_val_acc)


# ---------------------------------------------------------------------------
# The step and evaluation
# ---------------------------------------------------------------------------


def test_train_step_lowers_the_loss_and_updates_everything(small):
    optimizer = train.make_optimizer(CONFIG, steps_per_epoch=8)
    step = train.make_train_step(NET, optimizer)
    state = train.init_train_state(NET, optimizer, jax.random.key(0))
    before = jax.tree.map(np.array, (state.params, state.model_state))  # copies: state is donated
    x, y = jnp.asarray(small.X_train[:50]), jnp.asarray(small.y_train[:50])
    losses = []
    for _ in range(5):
        state, metrics = step(state, x, y)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    assert int(state.step) == 5
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert not np.array_equal(state.params["W1"], before[0]["W1"])
    assert not np.array_equal(state.model_state["bn1"].mean, before[1]["bn1"].mean)


def test_evaluate_matches_a_direct_argmax_in_uneven_batches(small):
    params, model_state = NET.init(jax.random.key(1))
    X, y = small.X_val[:137], small.y_val[:137]  # 137 = 2 * 64 + 9: a smaller last batch
    scores, _ = NET.apply(params, model_state, X, train=False)
    expected = int(np.sum(np.argmax(np.asarray(scores), axis=1) == y)) / len(y)
    assert train.evaluate(NET, params, model_state, X, y, batch_size=64) == expected
    assert train.evaluate(NET, params, model_state, X, y, batch_size=1000) == expected
    with pytest.raises(ValueError, match="y must have shape"):
        train.evaluate(NET, params, model_state, X, y[:-1])


def test_learning_rate_decays_once_per_epoch():
    config = train.TrainConfig(learning_rate=0.1, lr_decay=0.5, optimizer="sgd")
    opt = train.make_optimizer(config, steps_per_epoch=3)
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    steps = []
    for _ in range(7):
        updates, state = opt.update({"w": jnp.ones(())}, state, params)
        steps.append(-float(updates["w"]))
    np.testing.assert_allclose(steps, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rtol=1e-6)


@pytest.mark.parametrize("optimizer", train.OPTIMIZERS)
def test_every_optimizer_trains(small, optimizer):
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    lr = {"sgd": 0.1, "sgd_momentum": 0.05, "rmsprop": 1e-2, "adam": 1e-2, "adamw": 1e-2}[optimizer]
    config = train.TrainConfig(epochs=2, batch_size=50, optimizer=optimizer, learning_rate=lr)
    result = train.fit(net, small, config)
    assert len(result.history.loss) == 2 * 8 and len(result.history.val_acc) == 2
    assert np.all(np.isfinite(result.history.loss))
    assert result.history.val_acc[-1] > 0.5


# ---------------------------------------------------------------------------
# The flat update (issue 20): make_train_step(flat=True) and fit's packed epoch
# ---------------------------------------------------------------------------

PLAIN_NET = jl.FullyConnectedNet(hidden_dims=(32, 16), input_dim=64, num_classes=10, dropout_rate=0.2)


def _batch(small):
    return jnp.asarray(small.X_train[:50]), jnp.asarray(small.y_train[:50])


def _five_steps(step, state, x, y):
    losses = []
    for _ in range(5):
        state, metrics = step(state, x, y)
        losses.append(float(metrics["loss"]))
    return state, np.array(losses)


def _kernels(compiled_text):
    entry = compiled_text[compiled_text.index("ENTRY") :]
    return sum(entry.count(f" {op}(") for op in ("fusion", "copy", "dot", "call", "concatenate"))


@pytest.mark.parametrize(
    "optimizer, clip_norm",
    [("sgd", None), ("sgd_momentum", None), ("rmsprop", None), ("adam", None), ("adamw", None), ("adam", 0.5)],
)
def test_flat_step_equals_the_per_array_step(small, optimizer, clip_norm):
    """Five steps of the flat update give the per-array steps' losses (1e-6 relative) and, unpacked,
    a state of the same structure, shapes and dtypes and the same values up to float rounding."""
    config = dataclasses.replace(CONFIG, optimizer=optimizer, clip_norm=clip_norm)
    opt = train.make_optimizer(config, steps_per_epoch=8)
    x, y = _batch(small)
    for net in (NET, PLAIN_NET):
        per_array = train.make_train_step(net, opt)
        flat = train.make_train_step(net, opt, flat=True)
        assert isinstance(flat, train.FlatTrainStep)
        a, losses_a = _five_steps(per_array, train.init_train_state(net, opt, jax.random.key(3)), x, y)
        packed = flat.flatten(train.init_train_state(net, opt, jax.random.key(3)))
        assert jax.tree.leaves(packed.params)[0].shape == (flat.layout.size,)
        b, losses_b = _five_steps(flat, packed, x, y)
        np.testing.assert_allclose(losses_b, losses_a, rtol=1e-6)
        b = flat.unflatten(b)
        assert jax.tree.structure(b) == jax.tree.structure(a)
        for u, v in zip(_leaves(a), _leaves(b), strict=True):
            assert u.dtype == v.dtype and u.shape == v.shape
        assert int(b.step) == 5
        np.testing.assert_array_equal(_leaves(b.key), _leaves(a.key))
        if net is PLAIN_NET:
            # Without batchnorm every gradient is far from zero, so Adam's m / sqrt(v) does not
            # magnify rounding: the parameters agree to float32 rounding. (With batchnorm, the
            # biases before it have a zero true gradient, and the sign of its rounding noise
            # decides their step: they differ by up to the learning rate, in both paths alike.)
            for u, v in zip(_leaves(a.params), _leaves(b.params), strict=True):
                np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-6)


def test_flat_layout_packs_params_and_moments_and_unpacks_bitwise():
    opt = train.make_optimizer(CONFIG, steps_per_epoch=8)
    state = train.init_train_state(NET, opt, jax.random.key(0))
    layout = state_module.flat_layout(state)
    n = sum(a.size for a in jax.tree.leaves(state.params))
    assert layout.size == n
    assert sum(layout.opt_packed) == 2  # Adam's mu and nu; counts and the injected rate stay as they are
    packed = layout.flatten(state)
    assert len(packed.params) == 1 and packed.params[0].shape == (n,)  # every array of NET is small
    np.testing.assert_array_equal(
        packed.params[0], np.concatenate([np.ravel(a) for a in jax.tree.leaves(state.params)])
    )
    assert_trees_bitwise_equal(layout.unflatten(packed), state)
    # arrays above max_size keep their own buffers, in leaf order after the vector
    big = state_module.flat_layout(state, max_size=600)
    large = [a for a in jax.tree.leaves(state.params) if a.size > 600]
    assert [a.shape for a in large] == [(64, 32)]
    packed = big.flatten(state)
    assert len(packed.params) == 2 and packed.params[0].shape == (n - 64 * 32,)
    np.testing.assert_array_equal(packed.params[1], large[0])
    assert_trees_bitwise_equal(big.unflatten(packed), state)
    # nothing to pack: one parameter array, or parameters of two dtypes
    one = state._replace(params={"w": jnp.zeros(3)})
    assert state_module.flat_layout(one) is None
    mixed = state._replace(params={"a": jnp.zeros(3), "b": jnp.zeros(3, jnp.float16)})
    assert state_module.flat_layout(mixed) is None


def test_flat_step_refuses_an_unpacked_or_unpackable_state(small):
    opt = train.make_optimizer(CONFIG, steps_per_epoch=8)
    step = train.make_train_step(NET, opt, flat=True)
    state = train.init_train_state(NET, opt, jax.random.key(0))
    x, y = _batch(small)
    with pytest.raises(ValueError, match=r"step\.flatten\(state\) first"):
        step(state, x, y)
    with pytest.raises(ValueError, match="at least two arrays"):
        step.flatten(state._replace(params={"w": jnp.zeros(3)}, opt_state=opt.init({"w": jnp.zeros(3)})))
    step.flatten(state)
    other = train.init_train_state(PLAIN_NET, opt, jax.random.key(0))
    with pytest.raises(ValueError, match="differ in structure"):
        step.flatten(other)


def test_flat_step_compiles_fewer_kernels(small):
    """The point of the flat update: the optimizer's per-array kernels (Adam: ~3 per array) become a few."""
    opt = train.make_optimizer(CONFIG, steps_per_epoch=8)
    x, y = _batch(small)
    per_array = train.make_train_step(NET, opt)
    flat = train.make_train_step(NET, opt, flat=True)
    state = train.init_train_state(NET, opt, jax.random.key(0))
    k_per_array = _kernels(per_array.func.lower(*per_array.args, state, x, y).compile().as_text())
    k_flat = _kernels(flat.lower(flat.flatten(state), x, y).compile().as_text())
    n_arrays = len(jax.tree.leaves(state.params))
    assert k_flat <= k_per_array - n_arrays, (k_flat, k_per_array)


def test_a_flat_epoch_equals_the_per_array_epoch(small):
    """run_epoch(flat=True) carries the packed state through its scan and returns the per-array state:
    the same structure, losses within 1e-6 and counts equal to the default epoch's; fit keeps the
    per-array update (its compiled epoch holds no parameter vector)."""
    opt = train.make_optimizer(CONFIG, steps_per_epoch=8)
    assert state_module.flat_update_is_exact(opt)
    assert not state_module.flat_update_is_exact(optax.GradientTransformation(opt.init, opt.update))
    X, y = jnp.asarray(small.X_train), jnp.asarray(small.y_train.astype(np.int32))
    Xv, yv = pad_eval(small.X_val, small.y_val, 1024)

    def epoch(flat):
        return jax.jit(lambda s, b: train.run_epoch(NET, opt, s, b, X, y, Xv, yv, steps=8, batch_size=50, flat=flat))

    outs, texts = [], []
    for flat in (True, False):
        state = train.init_train_state(NET, opt, jax.random.key(5))
        texts.append(epoch(flat).lower(state, strategies._fresh_best(state)).as_text())
        outs.append(epoch(flat)(state, strategies._fresh_best(state)))
    (s1, b1, e1), (s2, b2, e2) = outs
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    assert jax.tree.structure(b1) == jax.tree.structure(b2)
    np.testing.assert_allclose(e1.loss, e2.loss, rtol=1e-6)
    np.testing.assert_array_equal(e1.count, e2.count)
    n = sum(a.size for a in jax.tree.leaves(s1.params))
    assert f"tensor<{n}xf32>" in texts[0] and f"tensor<{n}xf32>" not in texts[1]


# ---------------------------------------------------------------------------
# fit: history, best params, determinism, errors
# ---------------------------------------------------------------------------


def test_fit_history_best_params_and_determinism(small):
    reports = []
    r1 = train.fit(NET, small, CONFIG, callback=reports.append)
    steps_per_epoch = 400 // 50
    h = r1.history
    assert len(h.loss) == 4 * steps_per_epoch and r1.steps_per_epoch == steps_per_epoch
    assert len(h.train_acc) == len(h.val_acc) == len(h.lr) == len(h.epoch_time_s) == 4
    # the optax schedule's values, in the float32 the device steps with
    np.testing.assert_allclose(h.lr, [3e-3 * 0.9**e for e in range(4)], rtol=1e-6)
    assert int(r1.state.step) == 4 * steps_per_epoch
    assert [r.epoch for r in reports] == [1, 2, 3, 4] and reports[-1].steps == 32
    assert r1.best_val_acc == max(h.val_acc) and h.val_acc[r1.best_epoch - 1] == r1.best_val_acc
    assert r1.best_epoch == max(e + 1 for e, v in enumerate(h.val_acc) if v == r1.best_val_acc)  # latest on ties
    val = train.evaluate(NET, r1.best_params, r1.best_model_state, small.X_val, small.y_val)
    assert val == r1.best_val_acc
    final_val = train.evaluate(NET, r1.state.params, r1.state.model_state, small.X_val, small.y_val)
    assert final_val == h.val_acc[-1]

    r2 = train.fit(NET, small, CONFIG)
    assert_results_equal(r1, r2)  # same seed: bitwise the same run
    r3 = train.fit(NET, small, dataclasses.replace(CONFIG, seed=8))
    assert not np.array_equal(r3.history.loss, r1.history.loss)


def test_train_accuracy_is_the_running_accuracy_of_the_steps(small):
    # No dropout, no batchnorm and a learning rate too small to move any weight: train mode is
    # test mode and the parameters stay the initial ones, so the running accuracy of an epoch whose
    # 8 batches of 50 cover all 400 examples equals a test-mode pass over the training set.
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    config = train.TrainConfig(epochs=1, batch_size=50, optimizer="sgd", learning_rate=1e-30, seed=3)
    result = train.fit(net, small, config)
    init = train.init_train_state(net, train.make_optimizer(config, 8), jax.random.key(3))
    for name, w in init.params.items():  # moved by ~1e-30 at most
        np.testing.assert_allclose(result.state.params[name], w, rtol=0, atol=1e-25)
    expected = train.evaluate(net, init.params, init.model_state, small.X_train, small.y_train)
    assert result.history.train_acc[0] == expected


def test_fit_rejects_data_that_disagree_with_the_net(small):
    with pytest.raises(ValueError, match=r"batch_size 401 is larger than the 400 training examples"):
        train.fit(NET, small, dataclasses.replace(CONFIG, batch_size=401))
    wrong_features = dataclasses.replace(small, X_val=small.X_val[:, :63])
    with pytest.raises(ValueError, match=r"data.X_val has shape \(144, 63\), which the model refuses: .* input_dim=64"):
        train.fit(NET, wrong_features, CONFIG)
    wrong_labels = dataclasses.replace(small, y_train=np.where(small.y_train == 9, 10, small.y_train))
    with pytest.raises(ValueError, match=r"data.y_train holds labels in \[0, 10\] but the model has 10 classes"):
        train.fit(NET, wrong_labels, CONFIG)
    float_labels = dataclasses.replace(small, y_val=small.y_val.astype(np.float32))
    with pytest.raises(TypeError, match="integer class labels"):
        train.fit(NET, float_labels, CONFIG)
    with pytest.raises(ValueError, match="TrainConfig: optimizer"):
        train.TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="TrainConfig: lr_decay"):
        train.TrainConfig(lr_decay=0.0)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(small, tmp_path):
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10)
    config = dataclasses.replace(CONFIG, epochs=3)
    train.fit(net, small, dataclasses.replace(config, epochs=1), checkpoint_dir=tmp_path)
    before = (tmp_path / train.CHECKPOINT_NAME).read_bytes()
    X = small.X_train.copy()
    X[7] = 3e38  # finite, but every epoch's batches hold example 7: its scores overflow, the loss is NaN
    broken = dataclasses.replace(small, X_train=X)
    with pytest.raises(train.NonFiniteLossError, match=r"the loss is nan at step \d+ \(epoch 1, iteration \d+ of 8\)"):
        train.fit(net, broken, config)
    with pytest.raises(train.NonFiniteLossError, match=r"epoch 2.*last checkpoint.*\(epoch 1\), is left intact"):
        train.fit(net, broken, config, checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / train.CHECKPOINT_NAME).read_bytes() == before


# ---------------------------------------------------------------------------
# Checkpoints and resume
# ---------------------------------------------------------------------------


class _Stop(Exception):
    pass


def test_resume_after_an_interruption_is_bitwise_equal_to_a_straight_run(small, tmp_path):
    straight = train.fit(NET, small, CONFIG)

    def stop_after_epoch_2(report):
        if report.epoch == 2:
            raise _Stop  # as if the process died right after epoch 2's checkpoint

    with pytest.raises(_Stop):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, callback=stop_after_epoch_2)
    assert train.read_checkpoint_metadata(tmp_path / train.CHECKPOINT_NAME)["epoch"] == 2
    strategies._compiled.cache_clear()  # as in a fresh process: the resumed run compiles anew
    state_module.jitted_init.cache_clear()
    resumed = train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert resumed.start_epoch == 2
    assert_results_equal(straight, resumed)
    # The final checkpoint holds the final state and the best parameters, bitwise.
    tensors = load_file(tmp_path / train.CHECKPOINT_NAME)
    for name, value in straight.state.params.items():
        np.testing.assert_array_equal(tensors[f"state.params['{name}']"], value)
        np.testing.assert_array_equal(tensors[f"best.params['{name}']"], straight.best_params[name])
    np.testing.assert_array_equal(tensors["state.key"], jax.random.key_data(straight.state.key))
    meta = train.read_checkpoint_metadata(tmp_path / train.CHECKPOINT_NAME)
    assert meta["epoch"] == 4 and meta["history"]["loss"] == straight.history.loss.tolist()


def test_resume_can_extend_a_finished_run(small, tmp_path):
    straight = train.fit(NET, small, CONFIG)
    train.fit(NET, small, dataclasses.replace(CONFIG, epochs=3), checkpoint_dir=tmp_path)
    resumed = train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert_results_equal(straight, resumed)
    done = train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)  # nothing left to do
    assert done.start_epoch == 4
    np.testing.assert_array_equal(done.history.loss, straight.history.loss)


def test_resume_refuses_another_run(small, tmp_path):
    train.fit(NET, small, dataclasses.replace(CONFIG, epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(
        train.CheckpointError, match=r"training config differs .*learning_rate: checkpoint 0.003, now 0.01"
    ):
        train.fit(NET, small, dataclasses.replace(CONFIG, learning_rate=0.01), checkpoint_dir=tmp_path, resume=True)
    other = dataclasses.replace(NET, dropout_rate=0.3)
    with pytest.raises(train.CheckpointError, match=r"model differs .*config.dropout_rate"):
        train.fit(other, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        train.fit(NET, small, CONFIG, resume=True)


def test_corrupt_checkpoints_are_refused(small, tmp_path):
    train.fit(NET, small, dataclasses.replace(CONFIG, epochs=1), checkpoint_dir=tmp_path)
    path = tmp_path / train.CHECKPOINT_NAME
    good = path.read_bytes()
    assert b"pickle" not in good and good[8:9] == b"{"  # safetensors: a JSON header, raw tensor bytes

    def refused(blob, match):
        path.write_bytes(blob)
        with pytest.raises(train.CheckpointError, match=match):
            train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)

    refused(good[: len(good) // 2], "checkpoint .*checkpoint.safetensors")  # truncated
    refused(good[:5], "too short")
    refused(good[:-1] + bytes([good[-1] ^ 1]), "SHA-256 check failed")  # one flipped bit in a tensor
    header_len = int.from_bytes(good[:8], "little")
    tampered = good.replace(b'\\"epoch\\": 1', b'\\"epoch\\": 3')
    assert tampered != good and len(tampered) == len(good)
    refused(tampered, "SHA-256 check failed")  # edited metadata
    refused(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + good[8 + header_len :], "not a readable")
    refused(os.urandom(256), "checkpoint")


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one(small, tmp_path, monkeypatch):
    train.fit(NET, small, dataclasses.replace(CONFIG, epochs=2), checkpoint_dir=tmp_path)
    path = tmp_path / train.CHECKPOINT_NAME
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and the rename

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [train.CHECKPOINT_NAME]  # no temporary left behind
    straight = train.fit(NET, small, CONFIG)
    assert_results_equal(straight, train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True))


def test_checkpoint_metadata_is_json_with_the_run(small, tmp_path):
    train.fit(NET, small, dataclasses.replace(CONFIG, epochs=1), checkpoint_dir=tmp_path)
    meta = train.read_checkpoint_metadata(tmp_path / train.CHECKPOINT_NAME)
    assert meta["kind"] == "fit"
    assert meta["models"] == [{"class": "FullyConnectedNet", "config": json.loads(json.dumps(NET.to_dict()))}]
    assert meta["train_configs"][0]["seed"] == 7 and meta["epoch"] == 1
    assert meta["data"]["shapes"]["X_train"] == [400, 64]


def test_plot_history_writes_a_png(small, tmp_path):
    history = train.History.empty()
    history.append([2.0, 1.0], 0.5, 0.4, 1e-3, 0.1)
    history.append([0.5, 0.4], 0.8, 0.7, 9e-4, 0.1)
    fig = train.plot_history(history, tmp_path / "curves.png", steps_per_epoch=2, best_epoch=2, title="t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_xlabel() == "iteration" and acc_ax.get_xlabel() == "epoch"
    labels = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert labels == ["train (running, train mode)", "validation", "best val (epoch 2)"]


def test_nan_features_and_bad_labels_are_refused_by_fit_and_evaluate(small):
    X_val = small.X_val.copy()
    X_val[3, 5] = np.nan
    with pytest.raises(
        ValueError, match=r"fit: data.X_val holds NaN or infinite values \(1 example\(s\), the first at index \[3\]\)"
    ):
        train.fit(NET, dataclasses.replace(small, X_val=X_val), CONFIG)
    params, model_state = NET.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"evaluate: X holds NaN"):
        train.evaluate(NET, params, model_state, X_val, small.y_val)
    with pytest.raises(ValueError, match=r"evaluate: y holds labels in \[1, 12\] but the model has 10 classes"):
        train.evaluate(NET, params, model_state, small.X_val, np.where(small.y_val == 0, 12, small.y_val))
    with pytest.raises(ValueError, match=r"evaluate: y holds labels in \[-1, 9\]"):
        train.evaluate(NET, params, model_state, small.X_val, np.where(small.y_val == 0, -1, small.y_val))
    with pytest.raises(TypeError, match=r"evaluate: y must hold integer class labels, got dtype float32"):
        train.evaluate(NET, params, model_state, small.X_val, small.y_val.astype(np.float32))


def test_numpy_scalars_configure_like_python_numbers():
    config = train.TrainConfig(learning_rate=np.float32(0.01), epochs=np.int64(3), momentum=np.float64(0.5))
    assert config.learning_rate == pytest.approx(0.01) and config.epochs == 3 and type(config.epochs) is int
    with pytest.raises(ValueError, match=r"TrainConfig: learning_rate must be a finite number > 0, got inf"):
        train.TrainConfig(learning_rate=float("inf"))
    with pytest.raises(ValueError, match=r"TrainConfig: seed must be an int in \[0, 2\*\*32\)"):
        train.TrainConfig(seed=2**32)
