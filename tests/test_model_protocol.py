"""The model protocol: a model defined here, not a subclass of anything in jaxlayers, trains through
fit, fit_many and a 2-device mesh, resumes bitwise; and the loop compiles nothing it need not."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import train


@jl.register_model
@dataclasses.dataclass(frozen=True)
class TinyMLP:
    """affine - relu - dropout - affine - softmax, from jaxlayers ops; a static (hashable) model."""

    input_dim: int = 64
    hidden: int = 12
    num_classes: int = 10
    dropout_rate: float = 0.1

    def init(self, key):
        k1, k2 = jax.random.split(key)
        params = {
            "W1": jax.random.normal(k1, (self.input_dim, self.hidden)) * np.sqrt(2.0 / self.input_dim),
            "b1": jnp.zeros(self.hidden),
            "W2": jax.random.normal(k2, (self.hidden, self.num_classes)) * np.sqrt(2.0 / self.hidden),
            "b2": jnp.zeros(self.num_classes),
        }
        return params, {}

    def apply(self, params, model_state, x, *, train, key=None):
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"TinyMLP: x has {x.shape[-1]} features, expected {self.input_dim}")
        h = jl.relu(jl.affine(x, params["W1"], params["b1"]))
        if train and self.dropout_rate > 0:
            h = jl.dropout(h, key, rate=self.dropout_rate, train=True)
        return jl.affine(h, params["W2"], params["b2"]), model_state

    def loss(self, params, model_state, x, y, *, key=None):
        scores, model_state = self.apply(params, model_state, x, train=True, key=key)
        return jl.softmax_loss(scores, y), (model_state, scores)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


MODEL = TinyMLP()
CONFIG = train.TrainConfig(epochs=3, batch_size=40, optimizer="adam", learning_rate=1e-2, seed=5)


@pytest.fixture(scope="module")
def small():
    ds = jl.data.load("digits")
    return dataclasses.replace(ds, X_train=ds.X_train[:400], y_train=ds.y_train[:400])


def _leaves(tree):
    return [
        np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a)
        for a in jax.tree.leaves(tree)
    ]


def test_a_model_of_the_protocol_trains_with_fit_and_resumes_bitwise(small, tmp_path):
    straight = train.fit(MODEL, small, CONFIG)
    assert straight.model is MODEL and straight.history.val_acc[-1] > 0.3  # chance: 0.1
    assert (
        train.evaluate(MODEL, straight.best_params, straight.best_model_state, small.X_val, small.y_val)
        == straight.best_val_acc
    )
    train.fit(MODEL, small, dataclasses.replace(CONFIG, epochs=2), checkpoint_dir=tmp_path)
    resumed = train.fit(MODEL, small, CONFIG, checkpoint_dir=tmp_path, resume=True)
    assert resumed.start_epoch == 2
    for a, b in zip(
        _leaves((straight.state, straight.best_params)), _leaves((resumed.state, resumed.best_params)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(straight.history.loss, resumed.history.loss)
    meta = train.read_checkpoint_metadata(tmp_path / train.CHECKPOINT_NAME)
    assert meta["models"] == [{"class": "TinyMLP", "config": MODEL.to_dict()}]
    assert jl.model.model_from_record(meta["models"][0]) == MODEL


def test_a_model_of_the_protocol_trains_with_fit_many_equal_to_fit(small, tmp_path):
    many = train.fit_many(MODEL, small, CONFIG, seeds=[5, 6], learning_rates=[1e-2, 3e-2], checkpoint_dir=tmp_path)
    assert len(many) == 2 and many.history.val_acc.shape == (2, 3)
    for k in range(2):
        one = train.fit(many.models[k], small, many.configs[k])
        for a, b in zip(_leaves(many[k].state), _leaves(one.state), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # fit_many checkpoints and resumes too: 2 epochs + 1 resumed == the 3 straight, bitwise.
    sub = tmp_path / "resume"
    train.fit_many(
        MODEL,
        small,
        dataclasses.replace(CONFIG, epochs=2),
        seeds=[5, 6],
        learning_rates=[1e-2, 3e-2],
        checkpoint_dir=sub,
    )
    resumed = train.fit_many(
        MODEL, small, CONFIG, seeds=[5, 6], learning_rates=[1e-2, 3e-2], checkpoint_dir=sub, resume=True
    )
    assert resumed.start_epoch == 2
    for a, b in zip(_leaves(many.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(many.history.loss, resumed.history.loss)


def test_models_without_the_protocol_are_refused_by_name(small):
    with pytest.raises(TypeError, match=r"fit: model must provide the model protocol .* lacks init, apply, loss"):
        train.fit(object(), small, CONFIG)
    with pytest.raises(TypeError, match="evaluate: model must provide"):
        train.evaluate(3, {}, {}, small.X_val, small.y_val)


MESH_SCRIPT = """
import dataclasses, json, sys, tempfile
sys.path.insert(0, {tests!r})
import jax, numpy as np
import jaxlayers as jl
from jaxlayers import parallel, train
import test_model_protocol as t
ds = jl.data.load("digits")
small = dataclasses.replace(ds, X_train=ds.X_train[:400], y_train=ds.y_train[:400])
ref = train.fit(t.MODEL, small, t.CONFIG)
mesh = parallel.make_data_mesh(2)
res = train.fit(t.MODEL, small, t.CONFIG, mesh=mesh)
err = max(float(np.max(np.abs(a - b))) for a, b in zip(t._leaves(parallel.host_copy(res.state.params)), t._leaves(ref.state.params)))
with tempfile.TemporaryDirectory() as d:
    train.fit(t.MODEL, small, dataclasses.replace(t.CONFIG, epochs=2), mesh=mesh, checkpoint_dir=d)
    resumed = train.fit(t.MODEL, small, t.CONFIG, mesh=mesh, checkpoint_dir=d, resume=True)
bitwise = all(np.array_equal(a, b) for a, b in zip(t._leaves(parallel.host_copy(res.state.params)), t._leaves(parallel.host_copy(resumed.state.params))))
print(json.dumps({{"devices": len(mesh.devices.flat), "max_error": err, "resume_bitwise": bitwise,
                  "same_val_acc": bool(np.array_equal(res.history.val_acc, ref.history.val_acc))}}))
"""


def test_a_model_of_the_protocol_trains_on_a_2_device_mesh():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    code = MESH_SCRIPT.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["max_error"] <= 1e-5 and out["resume_bitwise"] and out["same_val_acc"]


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        msg = record.getMessage()
        if "Compiling" in msg or "Finished XLA compilation" in msg:
            self.messages.append(msg)


def _count_compiles(fn):
    handler = _Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(handler)
    return handler.messages


def test_a_second_fit_with_new_learning_rate_reg_or_weight_scale_compiles_nothing(small):
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10, weight_scale=0.1, reg=1e-3)
    config = train.TrainConfig(epochs=2, batch_size=50, learning_rate=0.01)
    assert _count_compiles(lambda: train.fit(net, small, config))  # the first fit compiles (the counter works)
    again = dataclasses.replace(net, weight_scale=0.05, reg=3e-3)
    assert (
        _count_compiles(lambda: train.fit(again, small, dataclasses.replace(config, learning_rate=0.05, seed=9))) == []
    )


def test_init_train_state_compiles_once_per_model_and_optimizer():
    import time

    net = jl.FullyConnectedNet(hidden_dims=(64, 64), input_dim=64, num_classes=10, normalization="batchnorm")
    opt = train.make_optimizer(train.TrainConfig(), 10)
    train.init_train_state(net, opt, jax.random.key(0))
    assert train.make_optimizer(train.TrainConfig(), 10) is opt  # the same configuration, the same optimizer
    t0 = time.perf_counter()
    messages = _count_compiles(lambda: train.init_train_state(net, opt, jax.random.key(1)))
    assert messages == [] and time.perf_counter() - t0 < 1.0  # bench/ measures it (~ms); this only rules out a compile


def test_a_model_of_the_protocol_loads_back_and_predicts(small, tmp_path):
    result = train.fit(MODEL, small, CONFIG, checkpoint_dir=tmp_path)
    run = jl.load_run(tmp_path)
    assert run.model == MODEL  # rebuilt from its record through the registry
    raw = small.X_test * small.std + small.mean  # raw features, as a loader would return them
    labels = run.predict(raw)
    assert labels.shape == (len(small.y_test),) and labels.dtype == np.int32
    ref = jl.model.predict(MODEL, result.best_params, result.best_model_state, small.X_test)
    assert np.mean(labels == ref) > 0.99  # raw rebuilt in float32: a rare near-tie may flip
    np.testing.assert_array_equal(jl.model.predict(MODEL, run.params, run.model_state, small.X_test), ref)
    assert jl.model.predict_proba(MODEL, run.params, run.model_state, small.X_test[:0]).shape == (0, 10)
