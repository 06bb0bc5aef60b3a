"""The fault-injection machinery of ``python -m bench.faults``, small: two SIGKILLs of
``jaxlayers train`` (one at a random moment, one inside a checkpoint write), resumed
to the end, must give a checkpoint bitwise equal to an uninterrupted run's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_killed_and_resumed_training_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "bench.faults", "--kills", "2", "--kills-per-run", "2", "--epochs", "3"]
    cmd += ["--hidden-dims", "16", "--workdir", str(tmp_path), "--strict"]  # strict: no stray file survives
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "2 SIGKILLs (1 at random moments, 1 at a checkpoint write" in out, out
    runs = re.search(r"(\d+)/(\d+) bitwise identical to the uninterrupted run", out)
    assert runs and runs[1] == runs[2] and int(runs[1]) >= 1, out  # a random kill may land after a run's end
    assert "stray files: 0" in out, out
