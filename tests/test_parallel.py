"""Data-parallel training (jaxlayers.parallel, fit(mesh=...), jaxlayers train --devices/--coordinator).

Several devices need JAX to start with them, so those checks run in
subprocesses (8 simulated CPU devices; or 2 processes on 127.0.0.1); this
test process keeps its single device. Every subprocess has a timeout.

Tolerances: N devices add the batch's partial sums in another order than one
device, so parameters agree to float32 rounding (measured ~3e-7 relative
after 3 epochs), asserted at 1e-5. One exception is by construction: a hidden
layer's bias ``b_i`` feeds batchnorm, which subtracts the batch mean, so its
exact gradient is 0 and its value is accumulated rounding noise (~3e-8); those
are compared absolutely, at 1e-6.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

import jaxlayers as jl
from jaxlayers import parallel, train

SCRIPT = Path(__file__).parent / "scripts" / "dp_fit_check.py"
NOISE_ONLY = ("params.b1", "params.b2")  # biases feeding batchnorm: exact gradient 0


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fit_on_8_devices_matches_one_device():
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    for n, m in result["meshes"].items():
        for name, err in m["errors"].items():
            if name in NOISE_ONLY:
                assert err * m["params_magnitude"][name] <= 1e-6, (n, name, err)
            else:
                assert err <= 1e-5, (n, name, err)
        assert m["loss"] <= 1e-5, n
        assert m["same_val_acc"], n
    assert result["explicit_mesh_max_error"] <= 1e-5
    assert result["resume_bitwise"]
    assert "batch_size 30 cannot be split evenly over the mesh's 8 devices" in result["indivisible_error"]
    # The partitioner reduces across devices (batch statistics, gradients,
    # counts) and never gathers the batch; dropout draws only its own shard's
    # words: 32 x 64 elements / 32 per word / 8 devices.
    assert set(result["hlo"]["ops"]) == {"all-reduce"}, result["hlo"]
    assert result["hlo"]["dropout_iota"] == [8], result["hlo"]


def _train_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxlayers.cli", "train", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


SMALL = ("--hidden-dims", "32", "32", "--epochs", "2", "--batch-size", "32", "--dropout", "0.5", "--seed", "3")


def _accuracy_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if " acc " in line]


@pytest.mark.slow
def test_cli_devices_8_prints_the_accuracy_of_devices_1(tmp_path):
    runs = {}
    for n in (1, 8):
        proc = _train_cli(*SMALL, "--devices", str(n), "-o", str(tmp_path / f"d{n}"), env=_env())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[n] = proc.stdout
    assert "devices: 8 cpu devices in 1 process, data-parallel (simulated CPU devices" in runs[8]
    assert _accuracy_lines(runs[8]) == _accuracy_lines(runs[1]) and len(_accuracy_lines(runs[1])) == 2
    assert json.loads((tmp_path / "d8" / "config.json").read_text())["devices"] == 8


def test_cli_devices_must_divide_the_batch(tmp_path):
    proc = _train_cli(*SMALL, "--batch-size", "30", "--devices", "8", "-o", str(tmp_path), env=_env(), timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""  # a usage error, before anything is printed or written
    assert "--batch-size 30 cannot be split evenly over the mesh's 8 devices" in proc.stderr


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """2 processes x 2 simulated devices, gloo over 127.0.0.1, vs this process's one-device fit."""
    coordinator = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "run"
    cli = (sys.executable, "-m", "jaxlayers.cli", "train", "-q", *SMALL, "--devices", "4", "-o", str(out))
    multi = ("--coordinator", coordinator, "--num-processes", "2", "--init-timeout", "60")
    procs = [
        subprocess.Popen(
            [*cli, *multi, "--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            outputs.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rc, stdout, stderr in outputs:
        assert rc == 0, stdout + stderr
    assert "devices: 4 cpu devices in 2 processes" in outputs[0][1]

    # The same run in this process, on its one device, from the run's own config.json.
    cfg = json.loads((out / "config.json").read_text())
    net = jl.FullyConnectedNet.from_dict(cfg["model"]["config"])
    config = train.TrainConfig(**cfg["train"])
    ds = jl.data.load(cfg["dataset"])
    ref = train.fit(net, ds, config)
    for ckpt in (out / "checkpoint.safetensors", out / "process-1" / "checkpoint.safetensors"):
        tensors = load_file(ckpt)
        for name, want in ref.state.params.items():
            got, want = tensors[f"state.params['{name}']"], np.asarray(want)
            if f"params.{name}" in NOISE_ONLY:
                assert np.max(np.abs(got - want)) <= 1e-6, name
            else:
                assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want)), name
    best_test = jl.train.evaluate(net, ref.best_params, ref.best_model_state, ds.X_test, ds.y_test)
    for _, stdout, _ in outputs:
        assert re.search(rf"test acc {best_test:.4f}\n", stdout), stdout


def test_unreachable_coordinator_fails_clearly(tmp_path):
    port = _free_port()  # nothing listens there
    proc = _train_cli(
        *SMALL,
        "-o",
        str(tmp_path),
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--init-timeout",
        "2",
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"process 1 of 2: could not reach the coordinator at 127.0.0.1:{port} within 2 s" in proc.stderr


def test_distributed_settings_are_checked():
    with pytest.raises(ValueError, match="coordinator must be 'HOST:PORT'"):
        parallel.Distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match="coordinator must be 'HOST:PORT' with a port"):
        parallel.Distributed("127.0.0.1:0", 2, 0)
    with pytest.raises(ValueError, match=r"process_id must lie in \[0, num_processes\) = \[0, 2\), got 2"):
        parallel.Distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="timeout_s"):
        parallel.Distributed("[::1]:1234", 2, 0, timeout_s=0)


def test_initialize_after_jax_started_is_refused():
    jax.devices()  # this process's backend is running
    with pytest.raises(parallel.DistributedInitError, match="before any JAX computation"):
        parallel.initialize_distributed(parallel.Distributed("127.0.0.1:1234", 2, 1, timeout_s=1))


def test_models_are_built_before_jax_starts():
    """fit(..., distributed=) joins the run first, so building the model and loading the data must not start
    a JAX backend (a model's abstract init once made its key eagerly, and every distributed fit failed)."""
    code = """if True:
        from jax._src import xla_bridge
        import jaxlayers as jl
        from jaxlayers import nn
        from jaxlayers.model import check_model
        jl.data.load("digits")
        models = [
            jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10, normalization="batchnorm"),
            jl.ConvNet(input_dim=(1, 8, 8), conv_channels=(2,), hidden_dims=(4,), num_classes=10),
            jl.ThreeLayerConvNet(input_dim=(1, 8, 8), num_filters=2, filter_size=3, hidden_dim=4, num_classes=10),
            nn.Sequential(nn.Affine(4), nn.BatchNorm(), nn.ReLU(), nn.Dropout(0.5), nn.Affine(10), input_shape=64),
        ]
        for m in models:
            check_model(m, "fit")
        assert not xla_bridge.backends_are_initialized(), "a JAX backend was started"
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_mesh_larger_than_the_machine_says_how_to_simulate():
    with pytest.raises(ValueError, match="jax_num_cpu_devices"):
        parallel.make_data_mesh(len(jax.devices()) + 1)
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        train.fit(
            jl.FullyConnectedNet(hidden_dims=(), input_dim=64, num_classes=10),
            jl.data.load("digits"),
            train.TrainConfig(epochs=1),
            mesh=8,
        )


def test_one_device_mesh_in_this_process_equals_plain_fit():
    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(
        hidden_dims=(16,), input_dim=64, num_classes=10, normalization="batchnorm", dropout_rate=0.5
    )
    config = train.TrainConfig(epochs=2, batch_size=64)
    ref = train.fit(net, ds, config)
    res = train.fit(net, ds, config, mesh=parallel.make_data_mesh(1))
    np.testing.assert_allclose(np.asarray(res.history.loss), np.asarray(ref.history.loss), rtol=1e-6)
    for name, want in ref.state.params.items():
        np.testing.assert_allclose(np.asarray(res.state.params[name]), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.history.val_acc, ref.history.val_acc)
