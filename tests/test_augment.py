"""TrainConfig(augment="shift:K"): seeded random shifts of the training minibatches, on device, only there."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import cli, nn, train
from jaxlayers.training import epoch, strategies
from jaxlayers.training import state as state_module
from jaxlayers.training.config import Augment, parse_augment

# A small conv net on a slice of digits (as images): batchnorm and dropout on, so a resume has running
# statistics and dropout keys to get exactly right as well as the augmentation's shifts.
NET = nn.Sequential(
    nn.Conv2d(4, 3, padding="same"),
    nn.SpatialBatchNorm(),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Dropout(0.2),
    nn.Affine(10),
    input_shape=(1, 8, 8),
)
CONFIG = train.TrainConfig(epochs=3, batch_size=50, optimizer="adam", learning_rate=3e-3, seed=5, augment="shift:2")


@pytest.fixture(scope="module")
def small():
    ds = jl.data.load("digits").as_images()
    return dataclasses.replace(ds, X_train=ds.X_train[:300], y_train=ds.y_train[:300])


def _host(tree):
    return [np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a) for a in tree]


def assert_same_run(r1, r2):
    for a, b in zip(_host(jax.tree.leaves(r1.state)), _host(jax.tree.leaves(r2.state)), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(r1.best_params), jax.tree.leaves(r2.best_params), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("loss", "train_acc", "val_acc"):
        np.testing.assert_array_equal(getattr(r1.history, name), getattr(r2.history, name))


@pytest.mark.parametrize("spec", ["shift", "shift:0", "shift:-1", "shift:x", "flip:1", "shift:1.5", 3, ""])
def test_a_bad_spec_is_refused_naming_the_field(spec):
    with pytest.raises(ValueError, match=r"TrainConfig: augment \(the CLI's --augment\) must be 'shift:K'.*got"):
        train.TrainConfig(augment=spec)


def test_specs_parse_and_normalise():
    assert parse_augment("shift:3") == Augment(shift=3)
    assert parse_augment(None) is None and parse_augment("none") is None
    assert train.TrainConfig(augment="none").augment is None
    assert train.TrainConfig(augment="shift:2").to_dict()["augment"] == "shift:2"  # recorded with the run


def test_a_bad_spec_on_the_command_line_names_the_flag(tmp_path, capsys):
    code = cli.main(["train", "--augment", "shift:zero", "--epochs", "1", "-q", "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code != 0 and "--augment) must be 'shift:K'" in err and "'shift:zero'" in err


def _shifted(image, dy, dx):
    """``image (C, H, W)`` moved by ``(dy, dx)`` pixels (content at ``(i, j)`` comes from ``(i+dy, j+dx)``), zero fill."""
    _, h, w = image.shape
    out = np.zeros_like(image)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[:, i, j] = image[:, i + dy, j + dx]
    return out


def test_every_image_is_its_own_random_shift_with_zero_fill_and_the_shape_is_kept():
    x = jax.random.normal(jax.random.key(0), (16, 2, 6, 7)) + 3.0  # no zeros inside an image
    out = epoch.augment_batch(Augment(shift=2), jax.random.key(1), x)
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = set()
    for n in range(x.shape[0]):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(np.asarray(out[n]), _shifted(np.asarray(x[n]), dy, dx))
        ]
        assert len(found) == 1, n
        shifts.add(found[0])
    assert len(shifts) > 3  # shifts differ between the images of a batch


def test_a_signal_of_height_one_is_shifted_along_its_length_only():
    x = jnp.arange(1.0, 33.0).reshape(4, 1, 1, 8)
    out = np.asarray(epoch.augment_batch(Augment(shift=3), jax.random.key(2), x))
    assert out.shape == x.shape
    for n in range(4):
        assert any(np.array_equal(out[n], _shifted(np.asarray(x[n]), 0, dx)) for dx in range(-3, 4))


def test_every_sequence_is_its_own_random_shift_along_time_with_zero_fill():
    x = jax.random.normal(jax.random.key(0), (16, 10, 2)) + 3.0  # (B, T, D), no zeros inside a sequence
    out = np.asarray(epoch.augment_batch(Augment(shift=2), jax.random.key(1), x))
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = set()
    for n in range(x.shape[0]):
        # a (T, D) sequence is a (1, T, D) image shifted along T only
        seq = np.asarray(x[n])[None]
        found = [dt for dt in range(-2, 3) if np.array_equal(out[n][None], _shifted(seq, dt, 0))]
        assert len(found) == 1, n
        shifts.add(found[0])
    assert len(shifts) > 2  # shifts differ between the sequences of a batch


def test_the_shifts_are_a_function_of_the_key():
    x = jax.random.normal(jax.random.key(0), (32, 1, 8, 8))
    a = epoch.augment_batch(Augment(shift=1), jax.random.key(3), x)
    np.testing.assert_array_equal(a, epoch.augment_batch(Augment(shift=1), jax.random.key(3), x))
    assert not np.array_equal(a, epoch.augment_batch(Augment(shift=1), jax.random.key(4), x))


def test_flat_inputs_are_refused_at_trace_time_naming_the_shapes():
    with pytest.raises(
        ValueError,
        match=r"augment 'shift:1' shifts images \(N, C, H, W\) or sequences \(N, T, D\); the training inputs are \(5, 64\)",
    ):
        epoch.augment_batch(Augment(shift=1), jax.random.key(0), jnp.zeros((5, 64)))


def test_a_seed_gives_one_run_and_augmentation_changes_only_the_training_batches(small):
    r1, r2 = train.fit(NET, small, CONFIG), train.fit(NET, small, CONFIG)
    assert_same_run(r1, r2)
    plain = train.fit(NET, small, dataclasses.replace(CONFIG, augment=None))
    assert not np.array_equal(plain.history.loss, r1.history.loss)  # the training batches differ
    other_seed = train.fit(NET, small, dataclasses.replace(CONFIG, seed=6))
    assert not np.array_equal(other_seed.history.loss, r1.history.loss)
    # the validation pass sees the data as given: the last epoch's validation accuracy is evaluate's
    val = train.evaluate(NET, r1.state.params, r1.state.model_state, small.X_val, small.y_val)
    assert val == r1.history.val_acc[-1]


def test_the_scanned_epoch_augments_as_well(small, monkeypatch):
    monkeypatch.setattr(strategies, "use_host_loop", lambda *a: False)  # the GPU's path: one lax.scan
    strategies._compiled.cache_clear()
    config = dataclasses.replace(CONFIG, epochs=1)
    r1, r2 = train.fit(NET, small, config), train.fit(NET, small, config)
    assert_same_run(r1, r2)
    assert not np.array_equal(
        train.fit(NET, small, dataclasses.replace(config, augment=None)).history.loss, r1.history.loss
    )
    strategies._compiled.cache_clear()


class _Stop(Exception):
    pass


def test_resume_with_augmentation_is_bitwise_equal_to_a_straight_run(small, tmp_path):
    straight = train.fit(NET, small, CONFIG)

    def stop_after_epoch_1(report):
        if report.epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, callback=stop_after_epoch_1)
    strategies._compiled.cache_clear()  # as in a fresh process
    state_module.jitted_init.cache_clear()
    resumed = train.fit(NET, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert resumed.start_epoch == 1
    assert_same_run(straight, resumed)
    with pytest.raises(train.CheckpointError, match=r"augment: checkpoint 'shift:2', now 'shift:1'"):
        train.fit(NET, small, dataclasses.replace(CONFIG, augment="shift:1"), checkpoint_dir=tmp_path, resume=True)
