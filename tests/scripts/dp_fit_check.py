"""Run in a subprocess with 8 host devices (XLA_FLAGS set by the caller):
fit(mesh=...) on 1, 2 and 8 devices == fit on the default device, on the same
global batches. Prints one JSON line of measurements; the test asserts.

The network has batchnorm (global-batch statistics) and dropout (its mask
must be the same bits however the batch is split).
"""

from __future__ import annotations

import collections
import json
import re
import sys
import tempfile
import time

import jax
import numpy as np

import jaxlayers as jl
from jaxlayers import parallel, train
from jaxlayers.training.strategies import DataMesh


def errors(a: dict, b: dict) -> dict[str, float]:
    """Per tensor: max |a - b| / max |b| (floored at 1e-30)."""
    return {k: float(np.max(np.abs(a[k] - b[k])) / max(float(np.max(np.abs(b[k]))), 1e-30)) for k in b}


def flat(result) -> dict[str, np.ndarray]:
    params, model_state = parallel.host_copy((result.state.params, result.state.model_state))
    out = {f"params.{k}": v for k, v in params.items()}
    for name, st in model_state.items():
        out[f"state.{name}.mean"], out[f"state.{name}.var"] = st.mean, st.var
    return out


def collectives(mesh, net, config, data) -> dict[str, object]:
    """What the partitioner made of one epoch: collective ops, and the dropout counter's per-device size."""
    steps = len(data.y_train) // config.batch_size
    optimizer = train.make_optimizer(config, steps)
    strategy = DataMesh(net, optimizer, steps=steps, batch_size=config.batch_size, eval_batch_size=1024, mesh=mesh)
    strategy.place(data)
    state, best = strategy.init([0], [config.learning_rate])
    text = strategy._epoch.lower(strategy._leaves, state, best, *strategy._data).compile().as_text()
    ops = re.findall(r" (all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(", text)
    iotas = sorted({int(n) for n in re.findall(r"u32\[(\d+)\]\{0\} iota\(", text)})
    return {"ops": dict(collections.Counter(ops)), "dropout_iota": iotas}


def main() -> dict:
    ndev = len(jax.devices())
    ds = jl.data.load("digits")
    net = jl.FullyConnectedNet(
        hidden_dims=(64, 64),
        input_dim=ds.num_features,
        num_classes=ds.num_classes,
        normalization="batchnorm",
        dropout_rate=0.5,
        reg=1e-3,
    )
    config = train.TrainConfig(epochs=3, batch_size=32, optimizer="sgd_momentum", learning_rate=0.04)
    t0 = time.perf_counter()
    ref = train.fit(net, ds, config)
    ref_flat = flat(ref)
    out: dict[str, object] = {"devices": ndev, "meshes": {}}
    for n in (1, 2, ndev):
        res = train.fit(net, ds, config, mesh=parallel.make_data_mesh(n))
        out["meshes"][str(n)] = {
            "errors": errors(flat(res), ref_flat),
            "loss": float(np.max(np.abs(np.subtract(res.history.loss, ref.history.loss)) / np.abs(ref.history.loss))),
            "same_val_acc": bool(np.array_equal(res.history.val_acc, ref.history.val_acc)),
            "params_magnitude": {k: float(np.max(np.abs(v))) for k, v in ref_flat.items()},
        }
    # A user's mesh with explicit axes (jax.make_mesh's default) and another axis name.
    res = train.fit(net, ds, config, mesh=jax.make_mesh((ndev,), ("batch",)))
    out["explicit_mesh_max_error"] = max(
        v for k, v in errors(flat(res), ref_flat).items() if k not in ("params.b1", "params.b2")
    )
    # Resume on the mesh: 2 epochs + 1 resumed == 3 straight.
    with tempfile.TemporaryDirectory() as d:
        mesh = parallel.make_data_mesh(ndev)
        straight = flat(train.fit(net, ds, config, mesh=mesh))
        train.fit(net, ds, train.TrainConfig(**{**config.to_dict(), "epochs": 2}), mesh=mesh, checkpoint_dir=d)
        resumed = flat(train.fit(net, ds, config, mesh=mesh, checkpoint_dir=d, resume=True))
        out["resume_bitwise"] = all(np.array_equal(straight[k], resumed[k]) for k in straight)
    try:
        train.fit(net, ds, train.TrainConfig(**{**config.to_dict(), "batch_size": 30}), mesh=parallel.make_data_mesh(8))
        out["indivisible_error"] = None
    except ValueError as e:
        out["indivisible_error"] = str(e)
    out["hlo"] = collectives(parallel.make_data_mesh(ndev), net, config, ds)
    out["seconds"] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
    sys.exit(0)
