"""The fully connected step's overhead (issue 20): per-array vs flat update vs Flax, kernels and CPU time.

Run from the repository root::

    python -m bench.fc_step                      # small workload, 30 rounds
    python -m bench.fc_step --workload wide --rounds 10
    python -m bench.fc_step --epochs --rounds 20     # fit's epoch: packed vs per-array update

Three steps of the same network, optimizer (``optax.adam``), parameters and
minibatch (:mod:`bench.common`'s workloads): jaxlayers' ``make_train_step`` with
the per-array update (a TrainState of pytrees), the same with ``flat=True``
(parameters and Adam's moments one vector each, :class:`jaxlayers.train.FlatLayout`
), and Flax linen
(:func:`bench.peers_jax.flax_peer`). For each: the XLA kernels its compiled
step launches (fusions, copies, dots and calls in the entry computation) and,
timed interleaved (rounds of ``per_round`` steps per peer, rotated order), the
process CPU time per step (``time.process_time``: all threads; waiting for a
core on a shared machine does not inflate it) and the wall time. Ratios are
medians over rounds of the per-round ratio.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import optax

import jaxlayers as jl
from bench.common import WORKLOADS, init_params_np, make_data
from bench.peers_jax import flax_peer
from bench.peers_jaxlayers import make_net
from jaxlayers.train import TrainState, make_train_step


def kernel_count(compiled_text: str) -> tuple[int, Counter]:
    """Kernels the entry computation launches (fusion, copy, dot, call), and every op's count there."""
    entry = compiled_text[compiled_text.index("ENTRY") :]
    ops = Counter(re.findall(r"=\s*\S+\s+(\w[\w-]*)\(", entry))
    return sum(ops[k] for k in ("fusion", "copy", "dot", "call", "concatenate")), ops


def run(workload: str, rounds: int, per_round: int, log=print) -> dict:
    w = WORKLOADS[workload]
    xn, yn = make_data(w)
    pn = init_params_np(w)
    net = make_net(w)
    x, y = jnp.asarray(xn), jnp.asarray(yn)
    opt = optax.adam(w.lr)

    def fresh() -> TrainState:
        params = {k: jnp.asarray(v) for k, v in pn.items()}
        ms = {f"bn{i}": jl.batchnorm_state(h) for i, h in enumerate(w.hidden, start=1)}
        return TrainState(params, ms, opt.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))

    per_array, flat = make_train_step(net, opt), make_train_step(net, opt, flat=True)
    held = {"per-array": fresh(), "flat": flat.flatten(fresh())}
    kernels = {
        "per-array": kernel_count(per_array.func.lower(*per_array.args, held["per-array"], x, y).compile().as_text()),
        "flat": kernel_count(flat.lower(held["flat"], x, y).compile().as_text()),
    }
    flax_step, _ = flax_peer(w, pn, xn, yn)
    kernels["flax"] = kernel_count(
        flax_step.jitted.lower(flax_step.carry, flax_step.x, flax_step.y).compile().as_text()
    )

    def stepper(name, step):
        def call():
            held[name], m = step(held[name], x, y)
            m["loss"].block_until_ready()

        return call

    fns = {"per-array": stepper("per-array", per_array), "flat": stepper("flat", flat), "flax": flax_step}
    for fn in fns.values():
        for _ in range(5):
            fn()
    # Same losses: five fresh steps of each jaxlayers variant from the same state.
    a, b = fresh(), flat.flatten(fresh())
    la, lb = [], []
    for _ in range(5):
        a, ma = per_array(a, x, y)
        b, mb = flat(b, x, y)
        la.append(float(ma["loss"]))
        lb.append(float(mb["loss"]))
    losses = {
        "per-array": la,
        "flat": lb,
        "max_rel_diff": max(abs(p - q) / abs(p) for p, q in zip(la, lb, strict=True)),
    }
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(per_round):
                fns[name]()
            cpu[name].append((time.process_time() - c0) / per_round)
            wall[name].append((time.perf_counter() - w0) / per_round)
    out = {"workload": workload, "rounds": rounds, "per_round": per_round, "losses": losses, "rows": {}}
    for name in names:
        rc = [p / q for p, q in zip(cpu[name], cpu["flax"], strict=True)]
        rw = [p / q for p, q in zip(wall[name], wall["flax"], strict=True)]
        rp = [p / q for p, q in zip(cpu[name], cpu["per-array"], strict=True)]
        q = statistics.quantiles(rc, n=4)
        out["rows"][name] = {
            "kernels": kernels[name][0],
            "cpu_ms": statistics.median(cpu[name]) * 1e3,
            "wall_ms": statistics.median(wall[name]) * 1e3,
            "cpu_vs_flax": statistics.median(rc),
            "cpu_vs_flax_iqr": (q[0], q[2]),
            "wall_vs_flax": statistics.median(rw),
            "cpu_vs_per_array": statistics.median(rp),
        }
    return out


def run_epochs(workload: str, rounds: int, batches: int = 24, log=print) -> dict:
    """``fit``'s epoch (:func:`jaxlayers.train.run_epoch`, jitted, state donated, a ``TrainConfig``'s Adam)
    with ``flat=True`` (the scan carries the packed state) against the default per-array update, timed
    interleaved, one epoch of ``batches`` steps per variant per round, in CPU time per step."""
    import types

    import numpy as np

    from jaxlayers.train import TrainConfig, init_train_state, make_optimizer, run_epoch
    from jaxlayers.training.epoch import pad_eval
    from jaxlayers.training.strategies import _fresh_best

    w = WORKLOADS[workload]
    rng = np.random.default_rng(0)
    n = w.batch * batches
    X = jnp.asarray(rng.standard_normal((n, w.input_dim), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, w.classes, size=n).astype(np.int32))
    Xv, yv = (jnp.asarray(a) for a in pad_eval(np.asarray(X[: w.batch]), np.asarray(y[: w.batch]), 1024))
    net = make_net(w)
    config = TrainConfig(epochs=10, batch_size=w.batch, optimizer="adam", learning_rate=w.lr, lr_decay=1.0)
    opt = make_optimizer(config, batches)
    variants = {"packed": True, "per-array": False}
    held, epochs = {}, {}
    for name, flat in variants.items():
        state = init_train_state(net, opt, jax.random.key(1))
        held[name] = types.SimpleNamespace(state=state, best=_fresh_best(state))

        def epoch(s, b, flat=flat):
            return run_epoch(net, opt, s, b, X, y, Xv, yv, steps=batches, batch_size=w.batch, flat=flat)

        epochs[name] = jax.jit(epoch, donate_argnums=(0, 1))

    def call(name):
        h = held[name]
        h.state, h.best, out = epochs[name](h.state, h.best)
        out.loss.block_until_ready()
        return out

    first = {name: np.asarray(call(name).loss) for name in variants}
    cpu = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            c0 = time.process_time()
            call(name)
            cpu[name].append((time.process_time() - c0) / batches)
    ratios = [p / q for p, q in zip(cpu["packed"], cpu["per-array"], strict=True)]
    q = statistics.quantiles(ratios, n=4)
    return {
        "workload": workload,
        "rounds": rounds,
        "batches": batches,
        "packed_ms": statistics.median(cpu["packed"]) * 1e3,
        "per_array_ms": statistics.median(cpu["per-array"]) * 1e3,
        "ratio": statistics.median(ratios),
        "ratio_iqr": (q[0], q[2]),
        "loss_max_rel_diff": float(np.max(np.abs(first["packed"] - first["per-array"]) / np.abs(first["per-array"]))),
    }


def render_epochs(res: dict) -> str:
    lo, hi = res["ratio_iqr"]
    return (
        f"fit's epoch ({res['workload']}, {res['batches']} steps, {res['rounds']} rounds interleaved): "
        f"packed {res['packed_ms']:.3f} CPU ms/step, per-array {res['per_array_ms']:.3f}; packed / per-array "
        f"{res['ratio']:.3f} (IQR {lo:.3f}-{hi:.3f}); first epoch's losses: max relative difference "
        f"{res['loss_max_rel_diff']:.2e}."
    )


def render(res: dict) -> str:
    lines = [
        f"{res['workload']}: {res['rounds']} rounds x {res['per_round']} steps per peer, interleaved",
        "",
        "| step | XLA kernels | CPU ms/step | wall ms/step | CPU / Flax (IQR) | wall / Flax | CPU / per-array |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["rows"].items():
        lo, hi = r["cpu_vs_flax_iqr"]
        lines.append(
            f"| {name} | {r['kernels']} | {r['cpu_ms']:.3f} | {r['wall_ms']:.3f} | {r['cpu_vs_flax']:.3f} "
            f"({lo:.3f}-{hi:.3f}) | {r['wall_vs_flax']:.3f} | {r['cpu_vs_per_array']:.3f} |"
        )
    lines.append("")
    lines.append(f"Losses of 5 steps, per-array vs flat: max relative difference {res['losses']['max_rel_diff']:.2e}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fc_step", description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="small", choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=None, help="steps per peer per round (small 50, wide 3)")
    ap.add_argument("--epochs", action="store_true", help="instead: fit's epoch, packed vs per-array update")
    args = ap.parse_args(argv)
    if args.epochs:
        print(render_epochs(run_epochs(args.workload, args.rounds)))
        return 0
    per_round = args.per_round or (50 if args.workload == "small" else 3)
    print(render(run(args.workload, args.rounds, per_round)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
