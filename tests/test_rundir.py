"""The run directory (jaxlayers.training.rundir) through the CLI and fit(run_dir=): one-line errors, the lock,
--overwrite, stale temporary files, metrics after the checkpoint, refused resumes, and SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jaxlayers as jl
from jaxlayers import cli, train
from jaxlayers.training import rundir

SMALL = ["--hidden-dims", "24", "--epochs", "1", "--batch-size", "100", "--dropout-rate", "0.1", "--lr", "0.01", "-q"]
REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
    code = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A finished one-epoch run; tests copy it."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    assert cli.main(["train", *SMALL, "-o", str(run_dir)]) == 0
    return run_dir


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _one_line_error(err: str, text: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxlayers train: error:") and text in lines[0], err


# ---------------------------------------------------------------------------
# Errors a user can cause: one line, exit 1 (runtime) or 2 (usage)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (b"\x00" * 5, 1, "5 bytes, too short for a safetensors file (truncated?)"),
        (b"not a checkpoint at all, just some text", 1, "checkpoint"),
        (None, 1, "not a readable jaxlayers safetensors checkpoint (KeyError: '__metadata__')"),  # a foreign file
    ],
)
def test_resume_from_a_corrupt_truncated_or_foreign_checkpoint_is_one_line(tmp_path, capsys, content, code, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ckpt = run_dir / train.CHECKPOINT_NAME
    if content is None:  # a valid safetensors file that jaxlayers did not write
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(3, np.float32)}, str(ckpt))
    else:
        ckpt.write_bytes(content)
    before = sorted(p.name for p in run_dir.iterdir())
    got, _, err = _run(capsys, "--resume", "-q", "-o", str(run_dir))
    assert got == code
    _one_line_error(err, message)
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written


def test_refused_resume_writes_nothing(tmp_path, capsys, one_epoch):
    run_dir = _copy(one_epoch, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code, out, err = _run(capsys, "--resume", "--epochs", "2", "--lr", "0.5", "-q", "-o", str(run_dir))
    assert code == 2 and out == ""  # a check before training: a usage error, before anything is printed
    _one_line_error(err, "--learning-rate: checkpoint 0.01, now 0.5")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_no_space_left_names_the_file(tmp_path, capsys, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "atomic_write", full)
    code, _, err = _run(capsys, *SMALL, "-o", str(tmp_path / "run"))
    assert code == 1
    _one_line_error(err, f"cannot write {tmp_path / 'run' / 'config.json'}: No space left on device")


def test_permission_denied_and_read_only_name_the_path(tmp_path, capsys, monkeypatch):
    # root ignores permission bits, so the refusal of the file system is simulated
    for number, text in ((errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")):

        def refuse(self, *args, _n=number, _t=text, **kwargs):
            raise OSError(_n, _t, str(self))

        monkeypatch.setattr(Path, "mkdir", refuse)
        code, _, err = _run(capsys, *SMALL, "-o", str(tmp_path / "ro" / "run"))
        assert code == 1
        _one_line_error(err, f"cannot create the run directory {tmp_path / 'ro' / 'run'}: {text}")


def test_output_dir_that_is_a_file_or_passes_through_one(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = _run(capsys, *SMALL, "-o", str(f))
    assert code == 1
    _one_line_error(err, f"{f} is a file, not a directory")
    code, _, err = _run(capsys, *SMALL, "-o", str(f / "run"))
    assert code == 1
    _one_line_error(err, f"cannot create the run directory {f / 'run'}: Not a directory")


def test_config_json_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "run" / "config.json").mkdir(parents=True)
    code, _, err = _run(capsys, *SMALL, "-o", str(tmp_path / "run"))
    assert code == 1
    _one_line_error(err, f"{tmp_path / 'run' / 'config.json'} is a directory")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", str(2**32)], "seed must be an int in [0, 2**32), got 4294967296"),
        (["--seed", "-1"], "seed"),
        (["-o", ""], "--output-dir is an empty path; give a directory such as runs/mine"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, argv, message):
    argv = [*SMALL, "-o", str(tmp_path / "run"), *argv]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    _one_line_error(err, message)


def test_ctrl_c_during_start_up(tmp_path, capsys, monkeypatch):
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(jl.data, "load", interrupted)
    code, _, err = _run(capsys, *SMALL, "-o", str(tmp_path / "run"))
    assert code == 130
    assert err.strip() == "jaxlayers: SIGINT during start-up; nothing was trained"


# ---------------------------------------------------------------------------
# The lock, --overwrite, stale temporary files, metrics.jsonl
# ---------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with rundir.RunDirLock(run_dir):
        assert (run_dir / ".lock").read_text().strip() == str(os.getpid())
        code, _, err = _run(capsys, *SMALL, "-o", str(run_dir))
    assert code == 1
    _one_line_error(err, f"{run_dir} is in use by another jaxlayers run (pid {os.getpid()}")
    assert not (run_dir / ".lock").exists()  # released and removed
    assert list(run_dir.iterdir()) == []


def test_a_fresh_run_does_not_replace_a_run_without_overwrite(tmp_path, capsys, one_epoch):
    run_dir = _copy(one_epoch, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code, _, err = _run(capsys, *SMALL, "--seed", "5", "-o", str(run_dir))
    assert code == 2
    _one_line_error(err, f"{run_dir} already holds a run (checkpoint at epoch 1)")
    assert "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    code, _, _ = _run(capsys, *SMALL, "--seed", "5", "--overwrite", "-o", str(run_dir))
    assert code == 0
    assert json.loads((run_dir / "config.json").read_text())["train"]["seed"] == 5
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(cli.RUN_FILES)


def test_files_of_a_run_stopped_before_its_first_epoch_are_replaced(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"old": true}')
    (run_dir / "metrics.jsonl").write_text("")
    code, _, err = _run(capsys, *SMALL, "-o", str(run_dir))
    assert code == 0, err
    assert "old" not in json.loads((run_dir / "config.json").read_text())


def test_stale_temp_files_are_removed_on_start_and_resume(tmp_path, capsys, one_epoch):
    run_dir = _copy(one_epoch, tmp_path / "run")
    stale = [run_dir / ".checkpoint.safetensors.k2j3h4.tmp", run_dir / ".metrics.jsonl.abc.tmp"]
    keep = [run_dir / ".notes.x.tmp", run_dir / "mine.tmp"]
    for p in stale + keep:
        p.write_bytes(b"x" * 100)
    code, _, _ = _run(capsys, "--resume", "--epochs", "2", "-q", "-o", str(run_dir))
    assert code == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_metrics_are_rebuilt_from_the_checkpoint_on_resume(tmp_path, capsys, one_epoch):
    run_dir = _copy(one_epoch, tmp_path / "run")
    metrics = run_dir / "metrics.jsonl"
    first = metrics.read_text().splitlines()[0]
    # a kill after the metrics line but before the checkpoint of epoch 2 (the old order) left an extra line
    metrics.write_text(first + "\n" + first.replace('"epoch": 1', '"epoch": 2') + "\n")
    code, _, _ = _run(capsys, "--resume", "--epochs", "3", "-q", "-o", str(run_dir))
    assert code == 0
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    assert json.dumps(lines[0]) == json.dumps(json.loads(first))  # epoch 1 as the checkpoint's history has it
    history = train.read_checkpoint_metadata(run_dir / train.CHECKPOINT_NAME)["history"]
    assert [m["val_acc"] for m in lines] == history["val_acc"]


def test_the_metrics_line_follows_its_checkpoint(tmp_path):
    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    seen = []

    class OnDisk(train.Callback):  # on the checkpoint writer's thread, once the epoch's checkpoint is on disk
        def on_checkpoint(self, r):
            seen.append((r.epoch, train.read_checkpoint_metadata(tmp_path / train.CHECKPOINT_NAME)["epoch"]))

    train.fit(net, ds, train.TrainConfig(epochs=3, batch_size=200), checkpoint_dir=tmp_path, callbacks=[OnDisk()])
    assert seen == [(1, 1), (2, 2), (3, 3)]


# ---------------------------------------------------------------------------
# fit(run_dir=, verbose=): the CLI's files and progress bar from Python
# ---------------------------------------------------------------------------


def test_fit_run_dir_writes_the_five_files_and_verbose_shows_the_bar(tmp_path, capsys):
    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    config = train.TrainConfig(epochs=2, batch_size=200)
    result = train.fit(net, ds, config, run_dir=tmp_path / "run", verbose=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "epoch" in err  # tqdm's bar
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(train.RUN_FILES)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["best_epoch"] == result.best_epoch
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(rundir.RunExists, match="already holds a run"):
        train.fit(net, ds, config, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="run_dir or checkpoint_dir, not both"):
        train.fit(net, ds, config, run_dir=tmp_path / "a", checkpoint_dir=tmp_path / "b")


# ---------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------


def test_abbreviations_are_refused_and_help_shows_the_defaults(capsys):
    for flag in ("--epoch", "--hidden-dim"):
        with pytest.raises(SystemExit) as exc:
            cli.main(["train", flag, "2"])
        assert exc.value.code == 2 and f"unrecognized arguments: {flag} 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 80)" in text and "(default: runs/digits)" in text and "(default: sgd_momentum)" in text
    assert "(default " not in text  # no hand-written defaults
    assert "130" in text and "143" in text and "exit status" in text
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert " --resume" not in text and " --devices" not in text and " --overwrite" not in text
    assert "(default: runs/digits-sweep)" in text


def test_version_and_python_dash_m():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxlayers", "--version"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith("jaxlayers ")


def test_sweep_writes_to_its_default_output_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "200", "-q", "--seeds", "0,1"]
    assert cli.main(argv) == 0
    assert (tmp_path / "runs" / "digits-sweep" / "sweep.json").is_file()


# ---------------------------------------------------------------------------
# SIGINT and SIGTERM: a real process, signalled while it compiles and while it trains
# ---------------------------------------------------------------------------


def _signal_run(run_dir: Path, signum: int, when: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-u", "-m", "jaxlayers.cli", "train", "-q", "-o", str(run_dir)]
    argv += ["--hidden-dims", "16", "--epochs", "5000", "--batch-size", "200"]
    # A process inherits an ignored (or blocked) SIGINT from its parent, and then ignores Ctrl-C, as under
    # nohup (documented: DeferredSignals leaves SIG_IGN alone). A test worker may have had SIGINT ignored
    # by a library it ran before (a kernel launcher, say), so start the CLI from a clean disposition: this
    # small launcher restores SIGINT's default and execs the command in the same process (same pid).
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    launch = [sys.executable, "-c", launcher, *argv]
    proc = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out = ""
        while not out.startswith("train:"):
            out = proc.stdout.readline()
            assert out, proc.stderr.read()
        deadline = time.monotonic() + 120
        if when == "training":  # after the first epoch's metrics line
            metrics = run_dir / "metrics.jsonl"
            while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:  # while the first epoch compiles
            time.sleep(0.5)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("when", ["first epoch", "training"])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_cleanly_with_their_exit_code(tmp_path, capsys, signum, code, when):
    run_dir = tmp_path / "run"
    proc = _signal_run(run_dir, signum, when)
    name = signal.Signals(signum).name
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / ".lock").exists()
    ckpt = run_dir / train.CHECKPOINT_NAME
    if not ckpt.exists():
        assert f"{name}: interrupted before the first epoch ended; there is nothing to resume." in proc.stderr
        return
    epoch = train.read_checkpoint_metadata(ckpt)["epoch"]
    assert f"{name}: stopped; epoch {epoch} is checkpointed in {ckpt}. Continue with:" in proc.stderr
    assert f"jaxlayers train --resume --output-dir {run_dir}" in proc.stderr
    # metrics.jsonl lists exactly the checkpointed epochs, and the run resumes from them
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == epoch
    assert cli.main(["train", "--resume", "--epochs", str(epoch + 1), "-q", "-o", str(run_dir)]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == epoch + 1


# ---------------------------------------------------------------------------
# Memory: the estimate before compiling, and the refusal of a network that cannot fit
# ---------------------------------------------------------------------------


def test_a_network_too_large_for_memory_is_refused_before_compiling(tmp_path, capsys):
    t0 = time.perf_counter()
    code, out, err = _run(capsys, "--hidden-dims", "200000", "200000", "-q", "-o", str(tmp_path / "run"))
    assert code == 2 and time.perf_counter() - t0 < 60  # a usage error, before anything is printed
    assert out == ""
    _one_line_error(err, "jaxlayers train: error: the run needs about")
    assert "40,016,000,010 parameters; estimated memory" in err
    assert "available" in err and "use a smaller network or batch size" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_memory_estimate_parts_and_fit_refusal(monkeypatch):
    from jaxlayers.training import memory

    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(hidden_dims=(100,), input_dim=64, num_classes=10, normalization="batchnorm")
    config = train.TrainConfig(batch_size=50, optimizer="adam")
    est = memory.estimate_memory(net, config, ds)
    n = 64 * 100 + 100 + 100 * 10 + 10 + 2 * 100  # W1 b1 W2 b2 gamma1 beta1
    assert est.num_params == n
    assert est.params == 3 * 4 * n + 2 * 4 * 200  # params, grads, best copy; running mean/var twice
    assert est.optimizer >= 2 * 4 * n  # adam: two moments
    assert 0 < est.activations < 50 * 4 * 1000  # a few (50, 100) tensors
    assert est.total == est.params + est.optimizer + est.activations + est.data
    monkeypatch.setattr(memory, "available_memory", lambda device=None: (1000, "test device"))
    with pytest.raises(memory.InsufficientMemoryError, match=r"fit: the run needs about .* but test device has 1000 B"):
        train.fit(net, ds, config)


def test_model_summary_lists_layers_outputs_and_bytes():
    net = jl.FullyConnectedNet(hidden_dims=(32,), input_dim=64, num_classes=10, normalization="batchnorm")
    lines = net.summary().splitlines()
    assert lines[0].split() == ["layer", "parameters", "output", "params", "bytes"]
    assert lines[1].startswith("1 ") and "W1 (64, 32)" in lines[1] and "gamma1 (32,)" in lines[1]
    assert "(N, 32)" in lines[1] and "2,144" in lines[1]  # 64*32 + 3*32
    assert "(N, 10)" in lines[2] and "330" in lines[2]
    assert lines[-1] == f"FullyConnectedNet: {net.num_params():,} parameters, 9.7 KiB"
