"""``jl.dot_product_attention``: saved residual bytes and forward + backward time against the peers.

(a) **Memory.** The bytes ``jax.vjp`` keeps for the backward pass at ``T = S = 4096``, ``B = 1``,
``N = 8``, ``H = 64``, float32 (:func:`bench.conv.residual_bytes`, read off the traced jaxpr: no
4096 x 4096 computation runs): ``jaxlayers`` against autodiff of
:func:`~jaxlayers.layers.attention.dot_product_attention_reference` (plain ``jnp``, keeps the
probability matrix) and ``jax.nn.dot_product_attention``. Target: jaxlayers <= 0.05x autodiff.

(b) **Speed.** One jitted forward + backward (all of ``dq, dk, dv``), float32, ``B = 1, N = 8,
H = 64``, ``T = S`` in ``--lengths``, timed interleaved in one process
(:func:`bench.common.interleaved`):

* ``jaxlayers``: ``jax.vjp`` of :func:`jaxlayers.dot_product_attention` (blocked, hand-derived);
* ``xla``: ``jax.vjp`` of ``jax.nn.dot_product_attention`` (implementation ``xla``);
* ``autodiff``: ``jax.vjp`` of the plain reference;
* ``torch``: PyTorch ``F.scaled_dot_product_attention`` + ``backward`` (``torch.set_num_threads(2)``,
  eager; when torch is installed).

Wall time (median) and this process's CPU time per call (median; robust to other jobs holding the
cores, which stretch wall times) are both reported, with jaxlayers / peer ratios paired round by
round. Targets: jaxlayers <= 1.0x xla at T = 512 and <= 0.6x at T = 2048.

Run with ``python -m bench.attention [--lengths 512,1024,2048] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxlayers as jl
from bench.conv import residual_bytes
from jaxlayers.layers.attention import dot_product_attention_reference

B, N, H = 1, 8, 64
MEMORY_T = 4096
TARGETS = {"memory": 0.05, 512: 1.0, 2048: 0.6}


def _nn(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")


JAX_PEERS = {"jaxlayers": jl.dot_product_attention, "xla": _nn, "autodiff": dot_product_attention_reference}


def memory(log=print) -> dict:
    spec = jnp.zeros((B, MEMORY_T, N, H), jnp.float32)
    rows = {name: residual_bytes(f, (spec, spec, spec)) for name, f in JAX_PEERS.items()}
    log(f"### Saved residual bytes of jax.vjp, T = S = {MEMORY_T}, B = {B}, N = {N}, H = {H}, float32")
    log("")
    log("| peer | new MB | inputs MB | new / autodiff's | (new + inputs) / autodiff's |")
    log("|---|---:|---:|---:|---:|")
    ad = rows["autodiff"]
    for name, r in rows.items():
        log(
            f"| {name} | {r['new'] / 2**20:.2f} | {r['args'] / 2**20:.2f} | {r['new'] / ad['new']:.4f} |"
            f" {(r['new'] + r['args']) / (ad['new'] + ad['args']):.4f} |"
        )
    ratio = rows["jaxlayers"]["new"] / ad["new"]
    total = (rows["jaxlayers"]["new"] + rows["jaxlayers"]["args"]) / (ad["new"] + ad["args"])
    log("")
    log(
        f"jaxlayers / autodiff: new bytes {ratio:.4f}, new + inputs {total:.4f} (target <= {TARGETS['memory']}:"
        f" {'met' if total <= TARGETS['memory'] else 'NOT met'})"
    )
    log("")
    return rows


def _arrays(t: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, t, N, H), dtype=np.float32) for _ in range(4)]


def _jax_peer(f, arrays):
    q, k, v, ct = (jnp.asarray(a) for a in arrays)
    step = jax.jit(lambda q, k, v: jax.vjp(f, q, k, v)[1](ct))
    step.lower(q, k, v).compile()

    def run():
        return jax.block_until_ready(step(q, k, v))

    return run


def _torch_peer(arrays):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(2)
    q, k, v = (torch.tensor(a.transpose(0, 2, 1, 3).copy(), requires_grad=True) for a in arrays[:3])
    ct = torch.tensor(arrays[3].transpose(0, 2, 1, 3).copy())

    def run():
        for a in (q, k, v):
            a.grad = None
        F.scaled_dot_product_attention(q, k, v).backward(ct)
        return q.grad

    return run


def speed(lengths, rounds: int, log=print) -> list[dict]:
    rows = []
    for t in lengths:
        arrays = _arrays(t)
        fns = {name: _jax_peer(f, arrays) for name, f in JAX_PEERS.items()}
        torch_run = _torch_peer(arrays)
        if torch_run is not None:
            fns["torch"] = torch_run
        for fn in fns.values():  # warm up
            fn()
        wall = {n: [] for n in fns}
        cpu = {n: [] for n in fns}
        names = list(fns)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t0, c0 = time.perf_counter(), time.process_time()
                fns[name]()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - t0)

        def paired(d, name):
            return statistics.median(a / b for a, b in zip(d["jaxlayers"], d[name], strict=True))

        for name in names:
            rows.append(
                {
                    "T": t,
                    "peer": name,
                    "wall_ms": statistics.median(wall[name]) * 1e3,
                    "cpu_ms": statistics.median(cpu[name]) * 1e3,
                    "wall_ratio": paired(wall, name),
                    "cpu_ratio": paired(cpu, name),
                }
            )
        log_rows(rows[-len(names) :], log)
    return rows


def log_rows(rows, log=print) -> None:
    t = rows[0]["T"]
    log(f"#### T = S = {t}, B = {B}, N = {N}, H = {H}, float32, forward + backward")
    log("")
    log("| peer | wall ms (median) | jaxlayers / peer, wall | CPU ms (median) | jaxlayers / peer, CPU |")
    log("|---|---:|---:|---:|---:|")
    for r in rows:
        log(f"| {r['peer']} | {r['wall_ms']:.1f} | {r['wall_ratio']:.3f} | {r['cpu_ms']:.1f} | {r['cpu_ratio']:.3f} |")
    xla = next(r for r in rows if r["peer"] == "xla")
    target = TARGETS.get(t)
    if target is not None:
        log("")
        log(
            f"T = {t}: jaxlayers / xla {xla['wall_ratio']:.3f} (wall), {xla['cpu_ratio']:.3f} (CPU); target <= {target}"
        )
    log("", flush=True) if log is print else log("")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,1024,2048", help="comma-separated T = S to time")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_memory:
        memory()
    speed([int(x) for x in args.lengths.split(",") if x], args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
