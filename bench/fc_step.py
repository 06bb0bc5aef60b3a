"""The fully connected step's overhead (issue 20): per-array vs flat update vs Flax, kernels and CPU time.

Run from the repository root::

    python -m bench.fc_step                      # small workload, 30 rounds
    python -m bench.fc_step --workload wide --rounds 10

Three steps of the same network, optimizer (``optax.adam``), parameters and
minibatch (:mod:`bench.common`'s workloads): jaxlayers' ``make_train_step`` with
the per-array update (a TrainState of pytrees), the same with ``flat=True``
(parameters and Adam's moments one vector each, :class:`jaxlayers.train.FlatLayout`
-- what ``fit``'s epoch runs for a ``TrainConfig``'s optimizer), and Flax linen
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
    args = ap.parse_args(argv)
    per_round = args.per_round or (50 if args.workload == "small" else 3)
    print(render(run(args.workload, args.rounds, per_round)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
