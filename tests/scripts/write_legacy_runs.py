"""Write tests/data/legacy_runs/: one tiny run directory per model, trained with the code of the
commit that ran this script, and the predictions that code gave (tests/test_legacy_runs.py
checks that today's code loads them and predicts the same).

    PYTHONPATH=. python tests/scripts/write_legacy_runs.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

import jaxlayers as jl

OUT = Path(__file__).resolve().parents[1] / "data" / "legacy_runs"
KEEP = ("checkpoint.safetensors",)
N_PRED = 64

MODELS = {
    "fc": jl.FullyConnectedNet(
        hidden_dims=(12,), input_dim=64, num_classes=10, normalization="batchnorm", dropout_rate=0.1, reg=1e-3
    ),
    "three_layer": jl.ThreeLayerConvNet(
        input_dim=(1, 8, 8), num_filters=3, filter_size=3, hidden_dim=10, num_classes=10, weight_scale=1e-2, reg=1e-3
    ),
    "convnet": jl.ConvNet(
        input_dim=(1, 8, 8),
        conv_channels=(4, 4),
        conv_norm="batchnorm",
        hidden_dims=(10,),
        fc_norm="batchnorm",
        dropout_rate=0.1,
        num_classes=10,
        reg=1e-3,
    ),
}


def main() -> None:
    data = jl.data.load("digits")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"commit": commit, "n": N_PRED, "runs": {}}
    for name, model in MODELS.items():
        d = OUT / name
        if d.exists():
            shutil.rmtree(d)
        x = data.X_test  # raw, as the loader reads them: Run.predict standardises
        jl.train.fit(model, data, jl.train.TrainConfig(epochs=1, batch_size=64, seed=0), run_dir=d)
        for f in d.iterdir():
            if f.name not in KEEP:
                f.unlink() if f.is_file() else shutil.rmtree(f)
        run = jl.load_run(d)
        record["runs"][name] = {
            "labels": run.predict(x[:N_PRED]).tolist(),
            "proba": np.asarray(run.predict_proba(x[:N_PRED]), np.float64).tolist(),
        }
    (OUT / "predictions.json").write_text(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
