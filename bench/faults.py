"""Fault injection: SIGKILL `jaxlayers train` at random moments and inside checkpoint writes, resume, compare bitwise.

``python -m bench.faults --kills 20`` (from the repository root; a few
minutes on 2 cores) trains a small network on digits once without
interruption (the reference), then again in fresh run directories, killing
each run with SIGKILL and continuing it with ``--resume`` (or afresh, when no
checkpoint was written yet) until it finishes. Kills alternate between

* a uniformly random moment in ``[0, T]`` after the process starts, ``T`` the
  reference run's duration (start-up and compilation included, as in life), and
* the moment a checkpoint's temporary file (``.checkpoint.safetensors.*.tmp``)
  appears in the run directory, at a randomly chosen write: the file is
  written but not yet renamed over the previous checkpoint.

Every finished run's checkpoint must hold tensors bitwise equal to the
reference's (names, dtypes, shapes, bytes) and the same history (losses,
accuracies, learning rates). Files in a run directory other than the run's own
(``jaxlayers.cli.RUN_FILES``), such as temporary files left by a kill, are
reported as stray; with ``--strict`` they fail the check.

Each training process is ``jaxlayers.cli.main(["train", ...])``, the command
itself, in a process started by this script with one change: every
``os.fsync`` first sleeps ``--fsync-delay`` seconds, which widens the window
between a checkpoint's temporary file and its rename so that the kills aimed
at it land inside it. Nothing in the package knows about this script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.numpy import load_file

from jaxlayers import cli
from jaxlayers.cli import RUN_FILES
from jaxlayers.train import read_checkpoint_metadata

CHECKPOINT = "checkpoint.safetensors"
TMP_PREFIX = f".{CHECKPOINT}."
HISTORY_KEYS = ("loss", "train_acc", "val_acc", "lr")


@dataclass
class Figures:
    """What the faulted runs came to."""

    runs: int = 0
    kills: int = 0
    kills_random: int = 0
    kills_in_write: int = 0
    kills_with_tmp_present: int = 0
    kills_before_first_checkpoint: int = 0
    resumes: int = 0
    restarts: int = 0
    identical: int = 0
    stray: dict[str, list[str]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)


def _child(fsync_delay: float, train_args: list[str]) -> int:
    """The training process: ``jaxlayers train`` with a delay before every fsync."""
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(fsync_delay)
        real_fsync(fd)

    os.fsync = slow_fsync  # looked up at each call: every atomic write of the run waits
    return cli.main(["train", *train_args])


def _tmp_files(run_dir: Path) -> list[str]:
    try:
        return [n for n in os.listdir(run_dir) if n.startswith(TMP_PREFIX) and n.endswith(".tmp")]
    except FileNotFoundError:
        return []


def _spawn(run_dir: Path, train_args: list[str], fsync_delay: float, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.faults", "--child", "--fsync-delay", str(fsync_delay), "--"]
    cmd += [*train_args, "--quiet", "--output-dir", str(run_dir)] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(run_dir: Path, train_args, fsync_delay: float, resume: bool, kill_at=None, kill_at_write=None):
    """Start one training process; SIGKILL it at ``kill_at`` seconds or when the
    ``kill_at_write``-th checkpoint temporary file appears.

    Returns ``(killed, tmp_present_at_kill, returncode, output, seconds)``.
    """
    t0 = time.perf_counter()
    proc = _spawn(run_dir, train_args, fsync_delay, resume)
    seen: set[str] = set()
    killed = tmp_present = False
    while proc.poll() is None:
        now = time.perf_counter() - t0
        tmps = _tmp_files(run_dir)
        seen.update(tmps)
        if (kill_at is not None and now >= kill_at) or (kill_at_write is not None and len(seen) >= kill_at_write):
            tmp_present = bool(_tmp_files(run_dir))
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    output = proc.communicate()[0]
    return killed, tmp_present, proc.returncode, output, time.perf_counter() - t0


def _read(run_dir: Path):
    path = run_dir / CHECKPOINT
    return load_file(path), read_checkpoint_metadata(path)


def _compare(ref, got) -> list[str]:
    """Differences between two finished runs' checkpoints (tensors bitwise, then the history)."""
    (t_ref, m_ref), (t_got, m_got) = ref, got
    diffs = []
    if set(t_ref) != set(t_got):
        diffs.append(f"tensor names differ: {sorted(set(t_ref) ^ set(t_got))}")
    for name in sorted(set(t_ref) & set(t_got)):
        a, b = t_ref[name], t_got[name]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            diffs.append(f"tensor {name} differs")
    for key in HISTORY_KEYS:
        if json.dumps(m_ref["history"][key]) != json.dumps(m_got["history"][key]):
            diffs.append(f"history.{key} differs")
    for key in ("epoch", "best_epoch", "best_val_acc"):
        if m_ref[key] != m_got[key]:
            diffs.append(f"{key}: {m_ref[key]!r} vs {m_got[key]!r}")
    return diffs


def run_faults(args: argparse.Namespace) -> Figures:
    """The reference run, then faulted runs until ``args.kills`` kills have been delivered."""
    rng = random.Random(args.seed)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="jaxlayers-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    train_args = [
        "--dataset",
        "digits",
        "--hidden-dims",
        *map(str, args.hidden_dims),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
    ]
    ref_dir = work / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    _, _, rc, output, duration = _run(ref_dir, train_args, args.fsync_delay, resume=False)
    if rc != 0:
        raise RuntimeError(f"the reference run failed (exit {rc}):\n{output}")
    reference = _read(ref_dir)
    print(f"reference run: {duration:.1f} s, {args.epochs} epochs, in {ref_dir}", flush=True)

    figures = Figures()
    while figures.kills < args.kills:
        if figures.runs >= 3 * args.kills + 5:
            print(f"giving up after {figures.runs} runs: the kills do not land (try a larger --fsync-delay)")
            break
        figures.runs += 1
        run_dir = work / f"run-{figures.runs:03d}"
        shutil.rmtree(run_dir, ignore_errors=True)
        budget, first = min(args.kills_per_run, args.kills - figures.kills), True
        while True:
            resume = (run_dir / CHECKPOINT).is_file()
            if not first:
                figures.resumes += resume
                figures.restarts += not resume
            first = False
            kill_at = kill_at_write = None
            if budget > 0 and figures.kills % 2 == 0:
                kill_at = rng.uniform(0.0, duration)
            elif budget > 0:  # one of the checkpoint writes this process has left to do
                done = _read(run_dir)[1]["epoch"] if resume else 0
                kill_at_write = rng.randint(1, max(1, args.epochs - done))
            killed, tmp_present, rc, output, _ = _run(
                run_dir, train_args, args.fsync_delay, resume, kill_at=kill_at, kill_at_write=kill_at_write
            )
            if killed:
                budget -= 1
                figures.kills += 1
                figures.kills_random += kill_at is not None
                figures.kills_in_write += kill_at_write is not None
                figures.kills_with_tmp_present += tmp_present
                figures.kills_before_first_checkpoint += not (run_dir / CHECKPOINT).is_file()
                continue
            if rc != 0:
                raise RuntimeError(f"{run_dir}: training exited with {rc} (resume={resume}):\n{output}")
            break
        diffs = _compare(reference, _read(run_dir))
        figures.identical += not diffs
        figures.mismatches += [f"{run_dir.name}: {d}" for d in diffs]
        stray = sorted(set(os.listdir(run_dir)) - set(RUN_FILES))
        if stray:
            figures.stray[run_dir.name] = stray
        print(
            f"{run_dir.name}: {'bitwise identical' if not diffs else 'DIFFERS'}; "
            f"{figures.kills}/{args.kills} kills so far; stray files: {stray or 'none'}",
            flush=True,
        )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        p = argparse.ArgumentParser(prog="python -m bench.faults --child")
        p.add_argument("--child", action="store_true")
        p.add_argument("--fsync-delay", type=float, required=True)
        p.add_argument("train_args", nargs=argparse.REMAINDER)
        a = p.parse_args(argv)
        return _child(a.fsync_delay, [x for x in a.train_args if x != "--"])
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver in all (default 20)")
    p.add_argument("--kills-per-run", type=int, default=4, help="at most this many kills before a run may finish")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[64])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="the runs' seed and the kill schedule's")
    p.add_argument("--fsync-delay", type=float, default=0.05, help="seconds each fsync waits (the write window)")
    p.add_argument("--workdir", help="where the run directories go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("--strict", action="store_true", help="fail on stray files too")
    args = p.parse_args(argv)
    if args.kills < 0 or args.kills_per_run < 1:
        p.error("--kills must be >= 0 and --kills-per-run >= 1")
    t0 = time.perf_counter()
    f = run_faults(args)
    stray = sum(len(v) for v in f.stray.values())
    print(
        f"\nfault injection: {f.kills} SIGKILLs ({f.kills_random} at random moments, {f.kills_in_write} at a "
        f"checkpoint write; {f.kills_with_tmp_present} with a checkpoint temporary file present, "
        f"{f.kills_before_first_checkpoint} before the first checkpoint), {f.resumes} resumes, "
        f"{f.restarts} fresh restarts, {f.runs} runs: {f.identical}/{f.runs} bitwise identical to the "
        f"uninterrupted run; stray files: {stray}{' ' + json.dumps(f.stray) if stray else ''}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    for m in f.mismatches:
        print(f"  MISMATCH {m}")
    ok = f.identical == f.runs and (not args.strict or stray == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
