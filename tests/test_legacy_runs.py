"""Run directories written by an earlier release load unchanged and predict what they predicted then.

tests/data/legacy_runs/ was written by tests/scripts/write_legacy_runs.py at the commit recorded in its
predictions.json (before the three models became jaxlayers.nn declarations): one tiny run per model,
with batchnorm, dropout and the L2 penalty, so every parameter and state name of the old format occurs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jaxlayers as jl

DATA = Path(__file__).parent / "data" / "legacy_runs"
RECORD = json.loads((DATA / "predictions.json").read_text())


@pytest.mark.parametrize("name", sorted(RECORD["runs"]))
def test_legacy_run_loads_and_predicts_the_same(name):
    want = RECORD["runs"][name]
    run = jl.load_run(DATA / name)
    x = jl.data.load("digits").X_test[: RECORD["n"]]
    np.testing.assert_array_equal(run.predict(x), want["labels"])
    np.testing.assert_allclose(run.predict_proba(x), want["proba"], rtol=1e-5, atol=1e-7)
