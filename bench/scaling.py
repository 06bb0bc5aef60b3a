"""Data-parallel scaling of ``jaxlayers.train.fit(mesh=...)`` on simulated CPU devices.

Run from the repository root::

    python -m bench.scaling                       # 1, 2, 4, 8 devices; a few minutes on 2 cores
    python -m bench.scaling --devices 1 8 --rounds 1 --epochs 2   # a smoke test

The parent process starts one child with ``--xla_force_host_platform_device_count``
set to the largest count (JAX reads it once, at start-up); the child trains
the same network on the same global batches with ``mesh=None`` (the plain
one-device path) and with meshes of each device count, interleaved round by
round, and reports the steady-state training throughput (``FitResult.
steps_per_second``: the epochs after the first, so compilation is excluded;
each epoch's time includes its accuracy passes over the training and
validation sets).

Simulated CPU devices are partitions of one host: they share its cores, so
on a 2-core machine this measures the overhead of the data-parallel program
(partitioned kernels, all-reduces, per-epoch host batching), not a speed-up.
On real accelerators each device brings its own compute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKLOADS = {
    # name: (train examples, features, hidden, classes, batch)
    "wide": (16384, 784, (1024, 1024), 10, 512),
    "digits-like": (1293, 64, (1024, 1024), 10, 32),
}


def _child(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np

    import jaxlayers as jl
    from jaxlayers import parallel, train
    from jaxlayers.data import Dataset

    out: dict = {"devices_available": len(jax.devices()), "cores": len(os.sched_getaffinity(0)), "results": {}}
    for name in args.workloads:
        n, d, hidden, classes, batch = WORKLOADS[name]
        rs = np.random.RandomState(0)
        centers = rs.randn(classes, d).astype(np.float32)
        y = rs.randint(0, classes, size=n + 512).astype(np.int32)
        X = (centers[y] + 2.0 * rs.randn(n + 512, d)).astype(np.float32)
        ds = Dataset(X[:n], y[:n], X[n:], y[n:], X[n:], y[n:], name=name)
        net = jl.FullyConnectedNet(
            hidden_dims=hidden, input_dim=d, num_classes=classes, normalization="batchnorm", dropout_rate=0.5
        )
        config = train.TrainConfig(epochs=args.epochs, batch_size=batch)
        meshes = {"none": None, **{str(k): parallel.make_data_mesh(k) for k in args.devices}}
        rates: dict[str, list[float]] = {k: [] for k in meshes}
        for _ in range(args.rounds):
            for key, mesh in meshes.items():
                rates[key].append(train.fit(net, ds, config, mesh=mesh).steps_per_second())
        out["results"][name] = {
            "batch": batch,
            "dims": [d, *hidden, classes],
            "steps_per_epoch": n // batch,
            "steps_per_s": {k: float(np.median(v)) for k, v in rates.items()},
            "rounds": rates,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["wide", "digits-like"])
    p.add_argument("--epochs", type=int, default=3, help="per fit; the first (compilation) is not timed")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={max(args.devices)}", JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--child", *(sys.argv[1:] if argv is None else argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if proc.returncode:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return proc.returncode
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"{res['cores']} cores, {res['devices_available']} simulated CPU devices "
        f"(they share the cores); {time.perf_counter() - t0:.0f} s\n"
    )
    for name, r in res["results"].items():
        base = r["steps_per_s"]["none"]
        print(f"{name}: {' -> '.join(map(str, r['dims']))}, batch {r['batch']}, {r['steps_per_epoch']} steps/epoch")
        print("| devices | steps/s (median) | min - max over rounds | examples/s | vs plain fit |")
        print("|---|---:|---:|---:|---:|")
        for k, v in r["steps_per_s"].items():
            label = "1, plain fit (no mesh)" if k == "none" else k
            lo, hi = min(r["rounds"][k]), max(r["rounds"][k])
            print(f"| {label} | {v:.1f} | {lo:.1f} - {hi:.1f} | {v * r['batch']:.0f} | {v / base:.2f}x |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
