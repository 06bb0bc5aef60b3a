"""The rough edges a newcomer hit (issue 16, section 5), each fixed as a class and checked here.

Checks before training (one usage-error line, nothing written), the help, unknown flags, `predict`'s
output, a closed pipe, the input shapes of a loaded run, image layouts, integer inputs to compat, a fresh
run over an existing checkpoint, an unreachable coordinator, and `--version`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers import cli
from jaxlayers import compat as jlc
from jaxlayers.training import memory
from jaxlayers.training.checkpoint import RunExists

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden-dims", "16", "--epochs", "1", "--batch-size", "100", "--lr", "0.01", "-q"]


def _main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_usage_line(err: str, command: str, message: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line, nothing glued to a progress bar
    assert err.startswith(f"jaxlayers {command}: error: "), err
    assert message in err, err


def _cli(*argv, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxlayers.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# ---------------------------------------------------------------------------
# 1. Every check that can fail before training: exit 2, one line, nothing written or created
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--batch-size", "5000"],
            "--batch-size 5000 is larger than the 1293 training examples; use --batch-size <= 1293",
        ),
        (["--resume"], "--resume: no checkpoint at"),
        (["--resume", "--overwrite"], "--resume continues the run and --overwrite replaces it; give one of them"),
        (["--coordinator", "127.0.0.1:1"], "--coordinator, --num-processes and --process-id go together"),
        (["--epochs", "0"], "epochs"),
        (["--model", "threelayer", "--filter-size", "3,5"], "--model threelayer takes a square --filter-size"),
    ],
)
def test_train_checks_fail_before_anything_is_written(tmp_path, capsys, argv, message):
    run = tmp_path / "new" / "run"
    code, out, err = _main(capsys, "train", *SMALL, *argv, "-o", str(run))
    assert code == 2 and out == ""
    _one_usage_line(err, "train", message)
    assert not (tmp_path / "new").exists()  # no run directory created


def test_a_run_that_does_not_fit_in_memory_is_a_usage_error_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda device=None: (1000, "test device"))
    code, out, err = _main(capsys, "train", *SMALL, "-o", str(tmp_path / "run"))
    assert code == 2 and out == ""
    _one_usage_line(err, "train", "the run needs about")
    assert "but test device has 1000 B available" in err
    assert not (tmp_path / "run").exists()


def test_batch_size_that_does_not_split_over_the_devices_fails_before_the_run_dir():
    """In a fresh process: --devices 3 must set up 3 CPU devices before JAX starts."""
    with __import__("tempfile").TemporaryDirectory() as d:
        p = _cli("train", *SMALL, "--devices", "3", "--batch-size", "100", "-o", f"{d}/run")
        assert p.returncode == 2 and p.stdout == "", p.stderr
        assert p.stderr == (
            "jaxlayers train: error: --batch-size 100 cannot be split evenly over the mesh's 3 devices; "
            "data parallelism needs a multiple of 3 (e.g. 99 or 102)\n"
        )
        assert not Path(d, "run").exists()


def test_sweep_checks_fail_before_the_progress_bar(tmp_path, capsys):
    code, out, err = _main(capsys, "sweep", *SMALL, "--seeds", "0,1", "--batch-size", "5000", "-o", str(tmp_path))
    assert code == 2 and out == ""
    _one_usage_line(err, "sweep", "--batch-size 5000 is larger than the 1293 training examples")


def test_python_fit_checks_before_creating_the_run_dir(tmp_path):
    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10)
    with pytest.raises(ValueError, match=r"^fit: batch_size 5000 is larger than the 1293 training examples"):
        jl.train.fit(net, ds, jl.train.TrainConfig(batch_size=5000, epochs=1), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        jl.train.fit(net, ds, jl.train.TrainConfig(epochs=1), run_dir=tmp_path / "run", mesh="8 devices")
    assert not (tmp_path / "run").exists()
    # one shared function: the CLI, fit, fit(run_dir=) and fit_many call it
    from jaxlayers.training.loop import preflight

    assert preflight(net, ds, jl.train.TrainConfig(batch_size=64), mesh=mesh) is ds


# ---------------------------------------------------------------------------
# 7. A fresh run does not replace a checkpointed one unless asked: fit(run_dir=), fit(checkpoint_dir=), fit_many
# ---------------------------------------------------------------------------


def test_fit_refuses_to_replace_a_run_unless_overwrite(tmp_path):
    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(hidden_dims=(8,), input_dim=64, num_classes=10)
    config = jl.train.TrainConfig(epochs=1, batch_size=100)
    for kw in ({"run_dir": tmp_path / "rd"}, {"checkpoint_dir": tmp_path / "ck"}):
        first = jl.train.fit(net, ds, config, **kw)
        target = next(iter(kw.values()))
        stamp = (target / "checkpoint.safetensors").stat().st_mtime_ns
        with pytest.raises(RunExists, match=r"already holds a run \(checkpoint at epoch 1\); continue it with "
                                            r"resume=True, or replace it with overwrite=True"):  # fmt: skip
            jl.train.fit(net, ds, config, **kw)
        assert (target / "checkpoint.safetensors").stat().st_mtime_ns == stamp  # untouched
        with pytest.raises(ValueError, match="resume=True continues the run and overwrite=True replaces it"):
            jl.train.fit(net, ds, config, resume=True, overwrite=True, **kw)
        again = jl.train.fit(net, ds, config, overwrite=True, **kw)
        assert again.best_val_acc == first.best_val_acc  # the same run, replaced
    jl.train.fit_many(net, ds, config, seeds=[0, 1], checkpoint_dir=tmp_path / "many")
    with pytest.raises(RunExists, match="already holds a run"):
        jl.train.fit_many(net, ds, config, seeds=[0, 1], checkpoint_dir=tmp_path / "many")


# ---------------------------------------------------------------------------
# 2. Help: the chosen model's defaults, the real output directory, no markup, suggestions for unknown flags
# ---------------------------------------------------------------------------


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_train_help_shows_the_chosen_models_defaults_and_output_dir(capsys):
    fc = _help(capsys, "train")
    assert "optax optimizer (default: sgd_momentum)" in fc and "(default: 0.04)" in fc
    assert "(default: runs/digits)" in fc
    conv = _help(capsys, "train", "--model", "convnet")
    assert "optax optimizer (default: adam)" in conv and "base step size (default: 0.002)" in conv
    assert "extend the run (default: 30)" in conv and "(default: runs/digits-convnet)" in conv
    mnist1d = _help(capsys, "train", "--model", "convnet", "--dataset", "mnist1d")
    assert (
        "(default: 25)" in mnist1d and "(default: [1, 5])" in mnist1d and "(default: runs/mnist1d-convnet)" in mnist1d
    )
    assert "(default: runs/mnist1d-threelayer-sweep)" in _help(
        capsys, "sweep", "--model", "threelayer", "--dataset", "mnist1d"
    )


def test_top_level_help_has_no_markup(capsys):
    text = _help(capsys)
    assert "``" not in text and "The jaxlayers command: train, sweep, evaluate, predict, sample and gradcheck." in text


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (
            ["train", "--epoch", "3"],
            "jaxlayers train: error: unrecognized arguments: --epoch 3 (did you mean --epochs?)",
        ),
        (["sweep", "--learning-rate", "0.1", "--seeds", "0,1", "--gird"], "(did you mean --grid?)"),
        (
            ["evaluate", "runs/x", "--splt", "val"],
            "jaxlayers evaluate: error: unrecognized arguments: --splt val (did you mean --split?)",
        ),
        (["predict", "runs/x", "in.npy", "--overwrit"], "(did you mean --overwrite?)"),
        (["gradcheck", "--verbos"], "(did you mean --verbose?)"),
    ],
)
def test_an_unknown_flag_suggests_the_nearest(capsys, argv, suggestion):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert suggestion in capsys.readouterr().err


def test_version_names_jax_jaxlib_and_the_backend(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("jaxlayers ") and out.count("\n") == 1
    assert f"jax {jax.__version__}, jaxlib " in out and f"default backend {jax.default_backend()}" in out


# ---------------------------------------------------------------------------
# 3. predict's output, a closed pipe, .npz inputs
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fc_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fc") / "run"
    assert cli.main(["train", *SMALL, "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "run"
    argv = ["train", "--model", "convnet", "--conv-channels", "4", "--hidden-dims", "8", "--epochs", "1", "-q"]
    assert cli.main([*argv, "-o", str(out)]) == 0
    return out


def test_a_resume_that_differs_from_the_checkpoint_fails_before_anything_is_printed(fc_run, capsys):
    files = {p.name: p.stat().st_mtime_ns for p in fc_run.iterdir()}
    code, out, err = _main(capsys, "train", "--resume", "--epochs", "2", "--batch-size", "64", "-o", str(fc_run))
    assert code == 2 and out == ""
    _one_usage_line(
        err, "train", "the training config differs from the checkpoint's (--batch-size: checkpoint 100, now 64)"
    )
    assert {p.name: p.stat().st_mtime_ns for p in fc_run.iterdir()} == files  # nothing written


def test_predict_to_stdout_and_no_silent_overwrite(fc_run, tmp_path, capsys):
    from sklearn.datasets import load_digits

    np.save(tmp_path / "x.npy", load_digits().data[:4])
    code, out, err = _main(capsys, "predict", str(fc_run), str(tmp_path / "x.npy"), "-o", "-")
    assert code == 0 and out.splitlines()[0].startswith("index,label,") and len(out.splitlines()) == 5
    assert err.startswith("wrote 4 predictions") and "standard output" in err
    target = tmp_path / "p.csv"
    target.write_text("keep me\n")
    code, out, err = _main(capsys, "predict", str(fc_run), str(tmp_path / "x.npy"), "-o", str(target))
    assert code == 2 and target.read_text() == "keep me\n"
    _one_usage_line(err, "predict", f"--output {target} exists; give --overwrite to replace it")
    code, out, err = _main(capsys, "predict", str(fc_run), str(tmp_path / "x.npy"), "-o", str(target), "--overwrite")
    assert code == 0 and target.read_text().startswith("index,label,")


def test_predict_npz_without_X_lists_its_arrays(fc_run, tmp_path, capsys):
    np.savez(tmp_path / "two.npz", features=np.zeros((2, 64)), labels=np.zeros(2))
    code, _, err = _main(capsys, "predict", str(fc_run), str(tmp_path / "two.npz"), "-o", str(tmp_path / "p.csv"))
    assert code == 2
    _one_usage_line(err, "predict", "two.npz: holds arrays ['features', 'labels']; name the inputs X")


class _ClosedPipe:
    """A standard output whose reader has gone."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise ValueError("no file descriptor")


def test_a_closed_pipe_ends_quietly_with_141(fc_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["evaluate", str(fc_run), "-o", os.devnull]) == 141
    assert capsys.readouterr().err == ""  # no "Broken pipe" line, no traceback


@pytest.mark.parametrize("command", ["predict", "help"])
def test_a_closed_pipe_in_a_real_process_ends_quietly(command, fc_run, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3000, 64)))
    argv = ["predict", str(fc_run), str(tmp_path / "x.npy"), "-o", "-"] if command == "predict" else ["--help"]
    p = subprocess.Popen(
        [sys.executable, "-m", "jaxlayers.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    p.stdout.close()  # the reader leaves before anything is written (`| head -0`)
    err = p.stderr.read().decode()
    p.stderr.close()
    code = p.wait(timeout=120)
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err
    # argparse's --help swallows a failed write itself (exit 0); the commands' own output stops with 141
    assert code == (141 if command == "predict" else 0) and err == ""


# ---------------------------------------------------------------------------
# 4. Run.predict and `jaxlayers predict` take the same shapes, by one function
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["fc_run", "conv_run"])
def test_run_predict_and_cli_predict_take_the_same_shapes(which, request, tmp_path, capsys):
    from sklearn.datasets import load_digits

    run_dir = request.getfixturevalue(which)
    capsys.readouterr()  # the fixture's training output
    run = jl.load_run(run_dir)
    digits = load_digits()
    flat, images = digits.data[:6], digits.images[:6]
    expected = run.predict(flat)
    for X in (flat, images, images[:, None]):  # (N, 64), (N, 8, 8), (N, 1, 8, 8)
        np.testing.assert_array_equal(run.predict(X), expected)
        np.testing.assert_allclose(run.predict_proba(X), run.predict_proba(flat))
        np.save(tmp_path / "x.npy", X)
        code, out, _ = _main(capsys, "predict", str(run_dir), str(tmp_path / "x.npy"), "-o", "-")
        assert code == 0 and [int(r.split(",")[1]) for r in out.splitlines()[1:]] == expected.tolist()
    assert run.evaluate(images, digits.target[:6]) == run.evaluate(flat, digits.target[:6])
    nhwc = images[:, :, :, None]  # channels last: as many numbers, another layout
    with pytest.raises(ValueError, match=r"X has shape \(6, 8, 8, 1\), but this run's model takes inputs of shape"):
        run.predict(nhwc)
    np.save(tmp_path / "x.npy", nhwc)
    code, _, err = _main(capsys, "predict", str(run_dir), str(tmp_path / "x.npy"), "-o", "-")
    assert code == 2
    _one_usage_line(err, "predict", "x.npy: X has shape (6, 8, 8, 1), but this run's model takes inputs of shape")


# ---------------------------------------------------------------------------
# 5. An image model refuses another layout with as many numbers (no silent reshape)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "net",
    [
        jl.ConvNet(input_dim=(3, 4, 4), conv_channels=(2,), hidden_dims=(4,), num_classes=3),
        jl.ThreeLayerConvNet(input_dim=(3, 4, 4), num_filters=2, filter_size=3, hidden_dim=4, num_classes=3),
    ],
    ids=["ConvNet", "ThreeLayerConvNet"],
)
def test_image_models_refuse_channels_last(net):
    params, state = net.init(jax.random.key(0))
    nchw = np.random.default_rng(0).normal(size=(6, 3, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    scores, _ = net.apply(params, state, nchw, train=False)
    flat_scores, _ = net.apply(params, state, nchw.reshape(6, -1), train=False)  # flat stays accepted
    np.testing.assert_array_equal(scores, flat_scores)
    name = type(net).__name__
    message = rf"{name}: x must have shape \(N, C, H, W\) = \(N, 3, 4, 4\) or flat \(N, 48\), got \(\d+, 4, 4, 3\)"
    for bad in (nchw.transpose(0, 2, 3, 1), nchw.reshape(6, 3, 16)):
        with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\) = \(N, 3, 4, 4\)"):
            net.apply(params, state, bad, train=False)
    nhwc = nchw.transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match=message):
        net.apply(params, state, jnp.asarray(nhwc), train=False)
    with pytest.raises(ValueError, match=message):
        net.predict(params, state, nhwc)
    with pytest.raises(ValueError, match=message):
        jl.train.evaluate(net, params, state, nhwc, y)
    data = {"X_train": nhwc, "y_train": y, "X_val": nhwc, "y_val": y}
    with pytest.raises(ValueError, match=message):
        jl.train.fit(net, data, jl.train.TrainConfig(epochs=1, batch_size=2))


# ---------------------------------------------------------------------------
# 6. compat refuses non-float arrays before any cast
# ---------------------------------------------------------------------------


def test_conv_forward_naive_refuses_integer_x_before_promoting():
    x = np.full((1, 1, 3, 3), 2049, np.int32)  # as float16, 2049 would silently become 2048
    w, b = np.ones((1, 1, 1, 1), np.float16), np.zeros(1, np.float16)
    with pytest.raises(
        TypeError, match=r"^conv_forward_naive: x must have a floating dtype, got int32 \(shape \(1, 1, 3, 3\)\)$"
    ):
        jlc.conv_forward_naive(x, w, b, {"stride": 1, "pad": 0})
    with pytest.raises(TypeError, match="conv_forward_naive: w must have a floating dtype, got int32"):
        jlc.conv_forward_naive(x.astype(np.float16), w.astype(np.int32), b, {"stride": 1, "pad": 0})
    out, _ = jlc.conv_forward_naive(x.astype(np.float32), w, b, {"stride": 1, "pad": 0})  # floats still promote
    assert out.dtype == np.float32 and out[0, 0, 0, 0] == 2049


def test_compat_functions_without_an_op_check_refuse_integers():
    xi = np.arange(6, dtype=np.int32).reshape(2, 3)
    for mode in ("train", "test"):
        with pytest.raises(TypeError, match="dropout_forward: x must have a floating dtype, got int32"):
            jlc.dropout_forward(xi, {"mode": mode, "p": 0.5, "seed": 0})
    x = np.ones((2, 3), np.float32)
    _, relu_cache = jlc.relu_forward(x)
    _, fc_cache = jlc.affine_forward(x, np.ones((3, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="relu_backward: dout must have a floating dtype, got int32"):
        jlc.relu_backward(xi, relu_cache)
    with pytest.raises(TypeError, match="affine_backward: dout must have a floating dtype, got int32"):
        jlc.affine_backward(np.ones((2, 2), np.int32), fc_cache)


# ---------------------------------------------------------------------------
# 8. An unreachable coordinator or a run whose processes never register: one line, exit 1, no abort
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_closed_coordinator_port_is_one_line_and_exit_1(tmp_path):
    port = _free_port()  # nothing listens there
    p = _cli("train", *SMALL, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
             "--init-timeout", "1", "-o", str(tmp_path / "run"))  # fmt: skip
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"jaxlayers train: error: process 1 of 2: could not reach the coordinator at 127.0.0.1:{port}"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("process_id", [0, 1])
def test_processes_that_never_register_end_with_one_line_not_an_abort(tmp_path, process_id):
    """Process 0 waits for a process 1 that never comes; process 1 reaches a port that is no coordinator.
    JAX's client aborts the process (SIGABRT, 134) in both cases unless jaxlayers turns it into an error."""
    with socket.socket() as listener:  # for process 1: something accepts TCP connections, but speaks no gRPC
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1] if process_id == 1 else _free_port()
        p = _cli("train", *SMALL, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", str(process_id), "--init-timeout", "1", "-o", str(tmp_path / "run"))  # fmt: skip
    assert p.returncode == 1, p.stderr[-2000:]
    assert "Check failure stack trace" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == (
        f"jaxlayers train: error: process {process_id} of 2: the 2 processes did not all register with the "
        f"coordinator at 127.0.0.1:{port} within 1 s. Start every process with the same coordinator address and "
        "process count, or raise the timeout (--init-timeout, Distributed.timeout_s)."
    )
