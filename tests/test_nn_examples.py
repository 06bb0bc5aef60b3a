"""The residual networks of ``examples/`` (issue 17's accuracy targets): the committed model records are
the declarations of ``bench/nn_accuracy.py``, and the documented commands build them through the CLI.

No training here (the runs take minutes: ``python -m bench.nn_accuracy``, figures in bench/RESULTS.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import jaxlayers as jl
from jaxlayers import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ is not installed; it runs from the repository root

from bench import nn_accuracy  # noqa: E402

DATASETS = sorted(nn_accuracy.COMMANDS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_committed_record_is_the_declaration(dataset):
    record = json.loads(nn_accuracy.record_path(dataset).read_text())
    assert record == json.loads(json.dumps(jl.model.model_record(nn_accuracy.DECLARATIONS[dataset]())))
    model = jl.model.model_from_record(record)
    assert isinstance(model, nn.Sequential)
    assert any(isinstance(layer, nn.Residual) for layer in model.layers)


@pytest.mark.parametrize("dataset", DATASETS)
def test_documented_command_builds_the_record_and_its_config(dataset):
    net, config, data = nn_accuracy.model_and_config(dataset, seed=2)
    assert net.to_dict() == nn_accuracy.DECLARATIONS[dataset]().to_dict()
    assert data.X_train.shape[1:] == tuple(net.input_shape)
    flags = nn_accuracy.COMMANDS[dataset]
    value = lambda flag: flags[flags.index(flag) + 1]  # noqa: E731
    assert (config.optimizer, config.schedule, config.seed) == (value("--optimizer"), value("--schedule"), 2)
    assert (config.learning_rate, config.epochs) == (float(value("--lr")), int(value("--epochs")))


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_guide_shows_the_command_and_the_record(dataset):
    guide = (ROOT / "docs" / "guides" / "build-your-own.md").read_text()
    shown = nn_accuracy.command(dataset, 0).replace("--seed 0", "--seed S")
    assert shown in guide
