"""Recurrent layers: ``jl.lstm`` / ``jl.gru`` forward + backward against autodiff and the peers.

Sizes that matter for a recurrent layer on CPU: ``N = 64, T = 100, D = H = 256``, float32. Each peer
runs one forward + backward pass (all gradients: inputs, initial state, weights), jitted, timed
interleaved (:func:`bench.common.interleaved`):

* ``jaxlayers``: ``jax.vjp`` of :func:`jaxlayers.lstm` / :func:`jaxlayers.gru` (hand-written
  backpropagation through time, one reverse ``lax.fori_loop``);
* ``autodiff``: ``jax.vjp`` of :func:`~jaxlayers.layers.lstm.lstm_reference` /
  :func:`~jaxlayers.layers.gru.gru_reference`: the same maths as one ``lax.scan`` with the input
  projection ``x Wx + b`` hoisted out of it, differentiated by JAX;
* ``flax``: ``flax.linen.RNN`` of ``OptimizedLSTMCell`` / ``GRUCell`` (when flax is installed);
* ``torch``: PyTorch ``nn.LSTM`` / ``nn.GRU`` (``batch_first``, ``torch.set_num_threads(2)``, eager;
  when torch is installed).

Each call's process CPU time (``time.process_time``: user + system over all threads) is recorded beside
its wall time: on a shared machine the wall time of a call swings with other processes' load, while the
CPU time (the work done) barely does, so both ratios are printed, each the median of per-round paired
ratios. The load average is printed before and after.

Also the bytes each JAX peer keeps for the backward pass (:func:`bench.conv.residual_bytes`: ``new``
intermediates, and residuals that are the function's inputs). Targets: jaxlayers <= 0.8x autodiff's
time, saved residual bytes <= 0.5x autodiff's.

Run alone with ``python -m bench.rnn [--rounds N] [--cells gru]``; with flax and torch installed (the bench
environment) all four peers run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlayers as jl
from bench.common import interleaved, iqr, median, paired_ratio
from bench.conv import residual_bytes
from jaxlayers.layers.gru import gru_reference
from jaxlayers.layers.lstm import lstm_reference

N, T, D, H = 64, 100, 256, 256
TARGETS = {"time, jaxlayers / autodiff": 0.8, "saved residual bytes (new + inputs), jaxlayers / autodiff": 0.5}
CELLS = {"lstm": (4, jl.lstm, lstm_reference), "gru": (3, jl.gru, gru_reference)}


def _arrays(gates: int, seed: int = 0):
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * scale)

    args = (
        normal(N, T, D),
        normal(N, H, scale=0.1),
        normal(D, gates * H, scale=D**-0.5),
        normal(H, gates * H, scale=H**-0.5),
        normal(gates * H, scale=0.1),
    )
    return args, normal(N, T, H)


def _jax_peer(f, args, ct):
    step = jax.jit(lambda *a: jax.vjp(f, *a)[1](ct))

    def run():
        return jax.block_until_ready(step(*args))

    return run


def _flax_peer(cell_name: str, x, ct):
    try:
        import flax.linen as fnn
    except ImportError:
        return None, None
    cell = getattr(fnn, cell_name)(features=H)
    model = fnn.RNN(cell)
    params = model.init(jax.random.key(0), x)

    def f(params, x):
        return model.apply(params, x)

    step = jax.jit(lambda p, x: jax.vjp(f, p, x)[1](ct))

    def run():
        return jax.block_until_ready(step(params, x))

    return run, residual_bytes(f, (params, x))


def _torch_peer(kind: str, x, ct):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    layer = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(D, H, batch_first=True)
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    h0 = torch.zeros(1, N, H, requires_grad=True)
    state = (h0, torch.zeros(1, N, H, requires_grad=True)) if kind == "lstm" else h0
    g = torch.tensor(np.asarray(ct))

    def run():
        for p in (xt, *layer.parameters()):
            p.grad = None
        out, _ = layer(xt, state)
        out.backward(g)
        return xt.grad

    return run


def _cpu_timed(fn, out: list[float]):
    def timed():
        start = time.process_time()
        result = fn()
        out.append(time.process_time() - start)
        return result

    return timed


def run(rounds: int = 5, per_round: int = 3, log=print, cells=tuple(CELLS)) -> dict:
    results = {"load_before": os.getloadavg()}
    log(f"load average before: {' '.join(f'{v:.1f}' for v in results['load_before'])}")
    for kind in cells:
        gates, op, ref = CELLS[kind]
        args, ct = _arrays(gates)
        fns = {"jaxlayers": _jax_peer(op, args, ct), "autodiff": _jax_peer(ref, args, ct)}
        residuals = {"jaxlayers": residual_bytes(op, args), "autodiff": residual_bytes(ref, args)}
        flax_run, flax_res = _flax_peer("OptimizedLSTMCell" if kind == "lstm" else "GRUCell", args[0], ct)
        if flax_run is not None:
            fns["flax"], residuals["flax"] = flax_run, flax_res
        torch_run = _torch_peer(kind, args[0], ct)
        if torch_run is not None:
            fns["torch"] = torch_run
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        timed = {name: _cpu_timed(fn, cpu[name]) for name, fn in fns.items()}
        times = interleaved(timed, rounds=rounds, per_round=per_round)
        cpu = {name: cpu[name][-len(times[name]) :] for name in fns}  # drop the warm-up calls
        rows = []
        for name, ts in times.items():
            lo, hi = iqr(ts)
            res = residuals.get(name)
            rows.append(
                {
                    "peer": name,
                    "ms": median(ts) * 1e3,
                    "iqr_ms": (lo * 1e3, hi * 1e3),
                    "jaxlayers_over_peer": paired_ratio(times["jaxlayers"], ts, per_round),
                    "cpu_ms": median(cpu[name]) * 1e3,
                    "cpu_jaxlayers_over_peer": paired_ratio(cpu["jaxlayers"], cpu[name], per_round),
                    "residual_new_mb": None if res is None else res["new"] / 1e6,
                    "residual_args_mb": None if res is None else res["args"] / 1e6,
                }
            )
        results[kind] = rows
        log("\n".join(lines(kind, rows)))
    results["load_after"] = os.getloadavg()
    log(f"load average after: {' '.join(f'{v:.1f}' for v in results['load_after'])}")
    return results


def lines(kind: str, rows: list[dict]) -> list[str]:
    out = [
        f"### {kind}: N={N}, T={T}, D=H={H}, float32, forward + backward",
        "",
        "| peer | wall ms (median) | IQR ms | jaxlayers / peer, wall (paired) | CPU ms (median)"
        " | jaxlayers / peer, CPU (paired) | saved residuals MB (new) | + inputs MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        new = "—" if r["residual_new_mb"] is None else f"{r['residual_new_mb']:.2f}"
        arg = "—" if r["residual_args_mb"] is None else f"{r['residual_args_mb']:.2f}"
        lo, hi = r["iqr_ms"]
        out.append(
            f"| {r['peer']} | {r['ms']:.1f} | {lo:.1f}–{hi:.1f} | {r['jaxlayers_over_peer']:.3f}"
            f" | {r['cpu_ms']:.1f} | {r['cpu_jaxlayers_over_peer']:.3f} | {new} | {arg} |"
        )
    jl_row = next(r for r in rows if r["peer"] == "jaxlayers")
    ad_row = next(r for r in rows if r["peer"] == "autodiff")
    total = (jl_row["residual_new_mb"] + jl_row["residual_args_mb"]) / (
        ad_row["residual_new_mb"] + ad_row["residual_args_mb"]
    )
    out += [
        "",
        f"{kind}: time jaxlayers / autodiff {ad_row['jaxlayers_over_peer']:.3f} wall,"
        f" {ad_row['cpu_jaxlayers_over_peer']:.3f} CPU"
        f" (target <= {TARGETS['time, jaxlayers / autodiff']}); saved residual bytes jaxlayers / autodiff:"
        f" new {jl_row['residual_new_mb'] / ad_row['residual_new_mb']:.3f}, new + inputs {total:.3f}"
        f" (target <= {TARGETS['saved residual bytes (new + inputs), jaxlayers / autodiff']})",
        "",
    ]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS), help="which ops to time")
    args = parser.parse_args(argv)
    run(args.rounds, args.per_round, cells=args.cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
