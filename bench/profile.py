"""Where a training step spends its time: XLA CPU thunks from a profiler trace.

``python -m bench.profile [small|wide] [jaxlayers|autodiff|flax ...]`` prints,
per peer, milliseconds per step by category -- matmuls, the transposed copies
feeding them, random bits, other forward work, other backward work, the
optimizer and state update -- from ``jax.profiler.trace(...,
create_perfetto_trace=True)``, and with ``--top K`` the K most expensive
thunks. Thunks can run concurrently, so categories may sum to more than the
step's wall time (also printed).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile

import jax


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """``{instruction name: (shape, op_name metadata)}`` for every instruction in the HLO text."""
    ops = {}
    for line in hlo_text.splitlines():
        m = re.match(r"^\s+(?:ROOT )?%(\S+) = (\S+) (\w[\w-]*)\(", line)
        if m:
            meta = re.search(r'op_name="([^"]*)"', line)
            ops[m.group(1)] = (m.group(2), m.group(3), meta.group(1) if meta else "")
    return ops


def category(name: str, shape: str, kind: str, op_name: str) -> str:
    if "dot_general" in op_name or kind == "dot":
        return "matmul"
    if "transpose" in name and "copy" in name:
        return "transposed copies"
    if "threefry" in op_name or "random" in op_name or shape.startswith("u32["):
        return "random bits"
    if "transpose(" in op_name:
        return "backward, non-matmul"
    if "jvp(" in op_name:
        return "forward, non-matmul"
    return "optimizer, state, other"


def profile(stepper, steps: int = 20) -> tuple[dict[str, float], list[tuple[float, str, str, str]], float]:
    """``(ms/step by category, [(ms/step, thunk, shape, op_name)] sorted, wall ms/step)``."""
    hlo = stepper.jitted.lower(stepper.carry, stepper.x, stepper.y).compile().as_text()
    ops = hlo_ops(hlo)
    for _ in range(3):
        stepper()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(steps):
                stepper()
        trace = json.load(gzip.open(glob.glob(f"{d}/**/*perfetto_trace.json.gz", recursive=True)[0]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op: dict[str, float] = collections.defaultdict(float)
    wall = 0.0
    for e in events:
        if e.get("ph") != "X":
            continue
        op = e.get("args", {}).get("hlo_op")
        if op is not None:
            per_op[op] += e["dur"]
        elif e["name"] == "ThunkExecutor::Execute (wait for completion)":
            wall += e["dur"]
    cats: dict[str, float] = collections.defaultdict(float)
    top = []
    for op, us in per_op.items():
        shape, kind, op_name = ops.get(op, ("?", "?", ""))
        if kind == "while":  # its body's thunks are counted themselves
            continue
        cats[category(op, shape, kind, op_name)] += us / steps / 1e3
        top.append((us / steps / 1e3, op, shape, op_name))
    top.sort(reverse=True)
    return dict(cats), top, wall / steps / 1e3


def main(argv: list[str] | None = None) -> int:
    from bench.common import WORKLOADS, init_params_np, make_data
    from bench.peers_jax import autodiff_peer, flax_peer
    from bench.peers_jaxlayers import jaxlayers_peer

    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("workload", nargs="?", default="wide", choices=sorted(WORKLOADS))
    ap.add_argument("peers", nargs="*", default=["jaxlayers", "autodiff", "flax"])
    ap.add_argument("--top", type=int, default=0, help="also list the K most expensive thunks per peer")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    w = WORKLOADS[args.workload]
    x, y = make_data(w)
    p = init_params_np(w)
    makers = {"jaxlayers": jaxlayers_peer, "autodiff": autodiff_peer, "flax": flax_peer}
    results = {}
    for name in args.peers:
        stepper, _ = makers[name](w, p, x, y)
        results[name] = profile(stepper, args.steps)
    keys = sorted({k for c, _, _ in results.values() for k in c})
    print(f"{'ms/step, ' + args.workload:26s}" + "".join(f"{n:>12s}" for n in args.peers))
    for k in keys:
        print(f"{k:26s}" + "".join(f"{results[n][0].get(k, 0.0):12.2f}" for n in args.peers))
    print(f"{'sum of thunks':26s}" + "".join(f"{sum(results[n][0].values()):12.2f}" for n in args.peers))
    print(f"{'wall (executable)':26s}" + "".join(f"{results[n][2]:12.2f}" for n in args.peers))
    if args.top:
        for n in args.peers:
            print(f"\n{n}: top {args.top} thunks")
            for ms, op, shape, op_name in results[n][1][: args.top]:
                print(f"  {ms:7.3f} {op[:30]:30s} {shape[:24]:24s} {op_name[-80:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
