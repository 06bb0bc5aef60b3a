"""`jaxlayers sweep`: one row per model, sweep.json, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlayers import cli


def test_cli_sweep_prints_a_row_per_model_and_writes_json(tmp_path, capsys):
    argv = ["sweep", "--hidden-dims", "8", "--epochs", "2", "--batch-size", "200", "--quiet"]
    argv += ["--weight-scales", "log:1e-2:1:2,he", "--dropout-rates", "0,0.5", "--grid", "-o", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit() and "|" in line]
    assert len(rows) == 6 and " He " in out
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert [m["weight_scale"] for m in record["models"]] == [0.01, 0.01, 1.0, 1.0, None, None]
    assert [m["dropout_rate"] for m in record["models"]] == [0.0, 0.5] * 3
    assert np.shape(record["history"]["val_acc"]) == (6, 2)

    assert cli.main(["sweep", "--quiet"]) == 2
    assert "give at least one of --seeds" in capsys.readouterr().err
    for flag in ("--resume", "--overwrite", "--devices"):  # train's own flags are not sweep's
        with pytest.raises(SystemExit) as exc:
            cli.main(["sweep", "--seeds", "0,1", flag, *(["2"] if flag == "--devices" else [])])
        assert exc.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--regs", "log:0:1:3"])
