"""The jaxlayers benchmark: one table of every peer, figure and ratio.

Run from the repository root (after ``pip install -e ".[bench]"``)::

    python -m bench                 # everything, a few minutes on 2 cores
    python -m bench --quick         # fewer rounds, for a smoke test
    python -m bench --markdown bench/RESULTS.md

Peers, each the same network -- {affine - batchnorm - relu - dropout} x hidden
- affine - softmax loss -- trained by one Adam step (forward, loss, backward,
update, running statistics) in float32:

(a) jaxlayers: ``FullyConnectedNet`` + ``jaxlayers.train.make_train_step(..., flat=True)`` (the flat
    update; ``python -m bench.fc_step`` compares it with the per-array step);
(b) the same forward in plain ``jnp`` differentiated by ``jax.grad`` (optax adam, jit);
(c) Flax linen ``nn.Dense``/``nn.BatchNorm``/``nn.Dropout`` (optax adam, jit);
(d) PyTorch eager on the CPU, ``torch.set_num_threads(cores)``;
(e) a NumPy transcription of the seed's layer functions with a hand-written Adam.

All peers start from the same parameters and minibatch. Steps are timed
interleaved (see :mod:`bench.common`); ratios are "jaxlayers / peer", the
median over rounds of the per-round ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import WORKLOADS, cores, init_params_np, interleaved, iqr, make_data, median, paired_ratio

PEER_LABELS = {
    "jaxlayers": "(a) jaxlayers FullyConnectedNet + make_train_step(flat=True)",
    "autodiff": "(b) plain jnp + jax.grad",
    "flax": "(c) Flax linen",
    "torch": "(d) PyTorch eager",
    "numpy": "(e) NumPy (seed formulas)",
}
MATMUL_N = 2048

TARGETS = {
    "wide: jaxlayers / Flax": 0.85,
    "wide: jaxlayers / plain autodiff": 0.85,
    "wide: share of the matmul rate (>=)": 0.75,
    "small: jaxlayers / Flax": 0.80,
    "wide: saved residual bytes, jaxlayers / Flax": 0.60,
    "per-op: custom / autodiff (every op)": 1.00,
    "fit loop (small): per-step / bare step": 1.05,
    "fit loop (wide): per-step / bare step": 1.05,
    "init_train_state second call (ms)": 10.0,
    "compilations of a second fit (new lr, reg, weight scale)": 0,
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def machine() -> dict:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    versions = {"python": platform.python_version(), "jax": jax.__version__}
    for mod in ("jaxlib", "flax", "optax", "torch", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "not installed"
    return {"cpu": model, "cores": cores(), "versions": versions}


def _matmul_fn():
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32))
    dot = jax.jit(jnp.dot)

    def call():
        return dot(a, b).block_until_ready()

    return call


def run_workload(
    name: str, rounds: int, per_round: int, skip: set[str], with_matmul: bool, budget_s: float | None = None
) -> dict:
    from bench.peers_jax import autodiff_peer, flax_peer
    from bench.peers_jaxlayers import jaxlayers_peer
    from bench.peers_other import NumpyStepper, TorchStepper

    w = WORKLOADS[name]
    x, y = make_data(w)
    p = init_params_np(w)
    steppers, residuals, compile_s = {}, {}, {}
    makers = {"jaxlayers": jaxlayers_peer, "autodiff": autodiff_peer, "flax": flax_peer}
    for peer, make in makers.items():
        if peer in skip:
            continue
        log(f"  building {peer} ...")
        stepper, res = make(w, p, x, y)
        steppers[peer], residuals[peer], compile_s[peer] = stepper, res, stepper.compile_s
    if "torch" not in skip:
        steppers["torch"] = TorchStepper(w, p, x, y)
    if "numpy" not in skip:
        steppers["numpy"] = NumpyStepper(w, p, x, y)
    # Two interleaved groups: the JAX peers (and the matmul) first, then
    # jaxlayers again with the PyTorch and NumPy peers. OpenMP and OpenBLAS
    # worker threads spin after each call, which would tax whichever JAX peer
    # runs next; in their own group they can only tax each other and the
    # jaxlayers steps they are paired with. Every ratio is still paired within
    # one group.
    jax_peers = {k: v for k, v in steppers.items() if k in makers}
    other_peers = {k: v for k, v in steppers.items() if k not in makers}
    group1 = dict(jax_peers)
    if with_matmul:
        group1["matmul"] = _matmul_fn()
    log(f"  timing {', '.join(group1)}: {rounds} rounds x {per_round} calls ...")
    t0 = time.perf_counter()
    times = interleaved(group1, rounds=rounds, per_round=per_round, budget_s=budget_s)
    log(f"  ... {time.perf_counter() - t0:.0f} s")
    times2 = {}
    if other_peers:
        group2 = {**({"jaxlayers": steppers["jaxlayers"]} if "jaxlayers" in steppers else {}), **other_peers}
        log(f"  timing {', '.join(group2)}: up to {rounds} rounds x {per_round} calls ...")
        t0 = time.perf_counter()
        times2 = interleaved(group2, rounds=rounds, per_round=per_round, budget_s=budget_s)
        log(f"  ... {time.perf_counter() - t0:.0f} s")
    rows = {}
    for peer in steppers:
        group = times if peer in times else times2
        ts = group[peer]
        q1, q3 = iqr(ts)
        rows[peer] = {
            "ms": median(ts) * 1e3,
            "q1_ms": q1 * 1e3,
            "q3_ms": q3 * 1e3,
            "steps": len(ts),
            "gflops": w.flops / median(ts) / 1e9,
            "ratio": paired_ratio(group["jaxlayers"], ts, per_round) if "jaxlayers" in group else float("nan"),
            "compile_s": compile_s.get(peer),
            "residual_new_mb": residuals[peer]["new"] / 1e6 if peer in residuals else None,
            "residual_args_mb": residuals[peer]["args"] / 1e6 if peer in residuals else None,
        }
    out = {"workload": name, "flops": w.flops, "rows": rows}
    if with_matmul:
        out["matmul_gflops"] = 2 * MATMUL_N**3 / median(times["matmul"]) / 1e9
        out["matmul_ms"] = median(times["matmul"]) * 1e3
    return out


def fmt(v, spec):
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def render(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores. "
        + ", ".join(f"{k} {v[k]}" for k in ("python", "jax", "jaxlib", "flax", "optax", "torch", "numpy")),
        f"Run: {results['date']}, `{results['command']}`, {results['wall_s']:.0f} s.",
        "",
    ]
    rate = results.get("matmul_gflops")
    if rate:
        lines.append(
            f"Measured float32 matmul rate: **{rate:.0f} GFLOP/s** (`jnp.dot` of two {MATMUL_N}x{MATMUL_N} "
            f"arrays, median, timed interleaved with the wide workload's steps)."
        )
        lines.append("")
    for wres in results["workloads"]:
        w = WORKLOADS[wres["workload"]]
        lines.append(
            f"### {w.name}: N={w.batch}, D={w.input_dim}, hidden {w.hidden[0]}x{len(w.hidden)}, "
            f"{w.classes} classes, dropout rate {w.rate} — {w.flops / 1e9:.3f} GFLOP/step (6·N·Σ D_in·D_out)"
        )
        lines.append("")
        lines.append(
            "| peer | step ms (median) | IQR ms | jaxlayers / peer | GFLOP/s | share of matmul rate "
            "| compile s | saved residuals MB (new) | + residuals that are inputs MB |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for peer, r in wres["rows"].items():
            share = r["gflops"] / rate if rate else None
            lines.append(
                f"| {PEER_LABELS[peer]} | {r['ms']:.2f} | {r['q1_ms']:.2f}–{r['q3_ms']:.2f} | {fmt(r['ratio'], '.3f')} "
                f"| {r['gflops']:.0f} | {fmt(share, '.0%')} | {fmt(r['compile_s'], '.2f')} "
                f"| {fmt(r['residual_new_mb'], '.2f')} | {fmt(r['residual_args_mb'], '.2f')} |"
            )
        lines.append("")
    if results.get("ops"):
        lines.append("### Per op: forward + backward, custom rule vs jax.vjp of the reference (N=4096, D=1024)")
        lines.append("")
        lines.append(
            "| op | custom ms | autodiff ms | custom / autodiff | IQR of per-round ratios | XLA kernels, custom / autodiff |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|")
        for r in results["ops"]:
            lines.append(
                f"| {r['op']} | {r['custom_ms']:.3f} | {r['autodiff_ms']:.3f} | {r['ratio']:.3f} "
                f"| {r['ratio_q1']:.3f}–{r['ratio_q3']:.3f} | {r['kernels_custom']} / {r['kernels_autodiff']} |"
            )
        lines.append("")
    if results.get("conv"):  # issue 11, convolutional networks
        from bench.conv import render_conv

        lines.extend(render_conv(results["conv"]))
    if results.get("convnet"):  # issue 11: the ConvNet training step against Flax and PyTorch
        from bench.convnet import render_convnet

        lines.extend(render_convnet(results["convnet"]))
    if results.get("fit"):
        lines.append("### Epoch loop: `jaxlayers.train.fit` vs the bare `make_train_step` step")
        lines.append("")
        lines.append(
            "| workload | fit ms/step | steps/s | bare step ms | fit / bare (paired per epoch) "
            "| evaluation ms/epoch | fit without evaluation / bare |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in results["fit"].items():
            lines.append(
                f"| {name} ({r['steps_per_epoch']} steps/epoch, {r['epochs_timed']} epochs timed) "
                f"| {r['fit_step_ms']:.3f} | {r['steps_per_s']:.1f} | {r['bare_step_ms']:.3f} | {r['ratio']:.3f} "
                f"| {r['eval_ms_per_epoch']:.1f} | {r['ratio_without_eval']:.3f} |"
            )
        lines.append("")
    if results.get("loop"):
        r = results["loop"]
        lines.append(
            f"Loop costs: `init_train_state` first call {r['init_first_s']:.2f} s, second call "
            f"{r['init_second_ms']:.2f} ms (median of 5); a second `fit` with a new learning rate, reg and "
            f"weight scale compiled {r['compilations_second_fit']} program(s)."
        )
        lines.append("")
    lines.append("### Targets")
    lines.append("")
    lines.append("| target | measured | goal | met |")
    lines.append("|---|---:|---:|---|")
    for name, (value, goal, ok) in results["targets"].items():
        lines.append(f"| {name} | {fmt(value, '.3f')} | {goal} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines) + "\n"


def evaluate_targets(results: dict) -> dict:
    t = {}
    by = {w["workload"]: w for w in results["workloads"]}
    rate = results.get("matmul_gflops")

    def add(name, value, better_low=True):
        goal = TARGETS[name]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            t[name] = (None, f"{'<=' if better_low else '>='} {goal}", False)
            return
        ok = value <= goal if better_low else value >= goal
        t[name] = (value, f"{'<=' if better_low else '>='} {goal}", ok)

    wide, small = by.get("wide"), by.get("small")
    if wide and "jaxlayers" in wide["rows"]:
        rows = wide["rows"]
        if "flax" in rows:
            add("wide: jaxlayers / Flax", rows["flax"]["ratio"])
        if "autodiff" in rows:
            add("wide: jaxlayers / plain autodiff", rows["autodiff"]["ratio"])
        if rate:
            add("wide: share of the matmul rate (>=)", rows["jaxlayers"]["gflops"] / rate, better_low=False)
        if "flax" in rows:
            add(
                "wide: saved residual bytes, jaxlayers / Flax",
                rows["jaxlayers"]["residual_new_mb"] / rows["flax"]["residual_new_mb"],
            )
    if small and "jaxlayers" in small["rows"] and "flax" in small["rows"]:
        add("small: jaxlayers / Flax", small["rows"]["flax"]["ratio"])
    if results.get("ops"):
        # An op whose custom rule compiles to no more kernels than autodiff of its
        # reference, with per-round ratios on both sides of 1, is a tie within the
        # noise; it counts as meeting "<= 1.0" and the table says so.
        name = "per-op: custom / autodiff (every op)"
        worst = max(r["ratio"] for r in results["ops"])
        ties = [
            r["op"]
            for r in results["ops"]
            if r["ratio"] > 1.0 and r["ratio_q1"] <= 1.0 and r["kernels_custom"] <= r["kernels_autodiff"]
        ]
        ok = all(r["ratio"] <= 1.0 or r["op"] in ties for r in results["ops"])
        goal = "<= 1.0" + (f" (ties within noise: {', '.join(ties)})" if ties else "")
        t[name] = (worst, goal, ok)
    if results.get("fit"):
        for name, r in results["fit"].items():
            add(f"fit loop ({name}): per-step / bare step", r["ratio"])
    if results.get("loop"):
        add("init_train_state second call (ms)", results["loop"]["init_second_ms"])
        add("compilations of a second fit (new lr, reg, weight scale)", results["loop"]["compilations_second_fit"])
    if results.get("conv"):  # issue 11, convolutional networks
        from bench.conv import conv_targets

        t.update(conv_targets(results["conv"]))
    if results.get("convnet"):
        from bench.convnet import convnet_targets

        t.update(convnet_targets(results["convnet"]))
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="small,wide", help="comma-separated: small, wide")
    ap.add_argument("--skip", default="", help="comma-separated peers to leave out: autodiff, flax, torch, numpy")
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test, not a measurement)")
    ap.add_argument("--no-ops", action="store_true", help="skip the per-op table")
    ap.add_argument("--no-fit", action="store_true", help="skip the fit-loop measurement")
    ap.add_argument("--only-fit", action="store_true", help="only the fit-loop measurement and the loop costs")
    ap.add_argument("--no-conv", action="store_true", help="skip the conv2d / max_pool2d per-op table")
    ap.add_argument("--no-convnet", action="store_true", help="skip the ConvNet training-step comparison")
    ap.add_argument(
        "--budget",
        type=float,
        default=60.0,
        metavar="S",
        help="stop a timing group after S seconds (at least 3 rounds); bounds the run when a peer "
        "stalls on a loaded machine (default 60)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table as a Markdown file")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    t_start = time.perf_counter()
    results: dict = {
        "machine": machine(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    log(f"machine: {results['machine']}")
    plan = {"small": (40, 10), "wide": (24, 3)}
    if args.quick:
        plan = {"small": (4, 5), "wide": (3, 2)}
    results["workloads"] = []
    for name in [s for s in args.workloads.split(",") if s and not args.only_fit]:
        log(f"workload {name}")
        rounds, per_round = plan[name]
        wres = run_workload(name, rounds, per_round, skip, with_matmul=(name == "wide"), budget_s=args.budget)
        results["workloads"].append(wres)
        if "matmul_gflops" in wres:
            results["matmul_gflops"] = wres["matmul_gflops"]
    if "matmul_gflops" not in results and not args.only_fit:
        from bench.peers_jax import matmul_rate

        results["matmul_gflops"] = matmul_rate(MATMUL_N) / 1e9
    if not args.no_ops and not args.only_fit:
        from bench.ops import run_ops

        log("per-op table")
        results["ops"] = run_ops(rounds=4 if args.quick else 30, per_round=1, log=log)
    if not args.no_conv and not args.only_fit:  # issue 11, convolutional networks
        from bench.conv import run_conv

        log("conv per-op table")
        results["conv"] = run_conv(rounds=4 if args.quick else 20, log=log)
    if not args.no_convnet and not args.only_fit:
        from bench.convnet import run_convnet

        skip_cn = {p for p in skip if p in ("flax", "torch")}
        results["convnet"] = run_convnet(
            rounds=3 if args.quick else 12, per_round=2 if args.quick else 3, skip=skip_cn, log=log
        )
    if not args.no_fit:
        from bench.peers_jaxlayers import fit_vs_step, loop_costs

        log("loop costs")
        results["loop"] = loop_costs(WORKLOADS["small"], log=log)
        results["fit"] = {}
        for name in [s for s in args.workloads.split(",") if s]:
            log(f"fit loop, {name}")
            results["fit"][name] = fit_vs_step(WORKLOADS[name], epochs=3 if args.quick else 6, log=log)
    results["wall_s"] = time.perf_counter() - t_start
    results["targets"] = evaluate_targets(results)
    text = render(results)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
