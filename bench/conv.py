"""Per-op table for the convolutional layers: ``conv2d`` and ``max_pool2d``.

Also (issue 20) ``conv2d`` forward + backward against ``jax.vjp`` of the
``lax`` reference at a second shape, x (64, 32, 16, 16) -> 64 filters 3x3,
and the parts of the backward pass timed alone at both shapes -- XLA's
forward, input-gradient (dx) and weight-gradient (dw) convolutions against
``conv2d_dw``'s chunked im2col -- in wall-clock and in this process's CPU
time (on a machine shared with other work, CPU time shows what each kernel
costs when wall-clock medians are inflated by waiting for a core).

Forward + backward of each op's custom VJP against ``jax.vjp`` of its
``lax`` reference (``lax.conv_general_dilated``, ``lax.reduce_window``), in
float32: ``conv2d`` on x (64, 64, 32, 32) with a (64, 64, 3, 3) kernel,
padding 1; ``max_pool2d`` 2x2 stride 2 (and, for information, the
overlapping 3x3 stride 2) on x (64, 64, 32, 32). Also the max pool's
backward pass alone -- ``max_pool2d_bwd`` from its residuals against the
``select_and_scatter_add`` that ``jax.vjp`` of ``lax.reduce_window`` runs
(the vjp's forward is dead code there and XLA drops it) -- and the bytes each
side saves for the backward pass.

Run alone with ``python -m bench.conv [--rounds N]``; ``python -m bench``
includes it.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

import jaxlayers as jl
from bench.common import interleaved, iqr, median, paired_ratio
from bench.ops import _kernels, run_ops
from jaxlayers import layers

#: Targets: every op <= 1.0x autodiff of its reference; the non-overlapping
#: max pool's backward <= 0.5x autodiff's select_and_scatter_add.
TARGETS = {
    "conv per-op: custom / autodiff (every op)": 1.0,
    "max_pool2d 2x2/2 backward: custom / autodiff": 0.5,
    "conv2d 3x3 fwd+bwd: custom / autodiff, (64, 64, 32, 32) -> 64": 0.6,
    "conv2d 3x3 fwd+bwd: custom / autodiff, (64, 32, 16, 16) -> 64": 0.6,
}

#: The two conv2d shapes of the fwd+bwd target: (N, C, H, W) and F.
CONV_SHAPES = {"(64, 64, 32, 32) -> 64": ((64, 64, 32, 32), 64), "(64, 32, 16, 16) -> 64": ((64, 32, 16, 16), 64)}


SHAPE = (64, 64, 32, 32)


def _normal(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


def _nhwc(a):
    """An NCHW array as a fresh channels-last one (a copy in row-major NHWC order)."""
    return jnp.asarray(np.ascontiguousarray(np.transpose(np.asarray(a), (0, 2, 3, 1))))


def _conv_case(rng, xshape, f):
    x = _normal(rng, *xshape)
    wt = _normal(rng, f, xshape[1], 3, 3) / np.sqrt(9 * xshape[1])
    return (
        lambda x, w, b: jl.conv2d(x, w, b, padding=1),
        lambda x, w, b: layers.conv2d_reference(x, w, b, padding=1),
        (x, wt, _normal(rng, f)),
        (),
        _normal(rng, xshape[0], f, *xshape[2:]),
    )


def conv_parts(rounds: int, seed: int = 0, log=print) -> list[dict]:
    """Each shape of :data:`CONV_SHAPES`: forward, XLA's dx and dw, ``conv2d_dw`` im2col, full fwd+bwd each side.

    Wall-clock medians and CPU-time medians (``time.process_time``, all of
    this process's threads), timed interleaved.
    """
    rows = []
    for label, (xshape, f) in CONV_SHAPES.items():
        rows += _parts_of_shape(label, xshape, f, rounds, seed, log)
    return rows


def _out_and_grads(f, args, g):
    """The output and the gradients (returning both keeps the forward pass alive in the compiled program)."""
    out, vjp = jax.vjp(f, *args)
    return out, vjp(g)


def _parts_of_shape(label, xshape, f, rounds, seed, log) -> list[dict]:
    from jax import lax

    from jaxlayers.layers.conv import conv2d_dw

    rows = []
    rng = np.random.default_rng(seed)
    x = _normal(rng, *xshape)
    w = _normal(rng, f, xshape[1], 3, 3) / np.sqrt(9 * xshape[1])
    b = _normal(rng, f)
    g = _normal(rng, xshape[0], f, *xshape[2:])

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))

    jitted = {
        "forward (XLA)": (jax.jit(ref), (x, w)),
        "dx (XLA, autodiff)": (jax.jit(lambda x, w, g: jax.vjp(lambda a: ref(a, w), x)[1](g)), (x, w, g)),
        "dw (XLA, autodiff)": (jax.jit(lambda x, w, g: jax.vjp(lambda v: ref(x, v), w)[1](g)), (x, w, g)),
        "dw (im2col, conv2d_dw)": (
            jax.jit(lambda x, g: conv2d_dw(x, g, w.shape, stride=(1, 1), padding=(1, 1), method="im2col")),
            (x, g),
        ),
        "fwd+bwd jl.conv2d": (
            jax.jit(lambda x, w, b, g: _out_and_grads(lambda *a: jl.conv2d(*a, padding=1), (x, w, b), g)),
            (x, w, b, g),
        ),
        "fwd+bwd autodiff": (
            jax.jit(lambda x, w, b, g: _out_and_grads(lambda *a: layers.conv2d_reference(*a, padding=1), (x, w, b), g)),
            (x, w, b, g),
        ),
        # channels last (data_format="NHWC"): the same values transposed, no layout copy around XLA's kernels
        "fwd+bwd jl.conv2d NHWC": (
            jax.jit(
                lambda x, w, b, g: _out_and_grads(lambda *a: jl.conv2d(*a, padding=1, data_format="NHWC"), (x, w, b), g)
            ),
            (_nhwc(x), w, b, _nhwc(g)),
        ),
        "fwd+bwd autodiff NHWC": (
            jax.jit(
                lambda x, w, b, g: _out_and_grads(
                    lambda *a: layers.conv2d_reference(*a, padding=1, data_format="NHWC"), (x, w, b), g
                )
            ),
            (_nhwc(x), w, b, _nhwc(g)),
        ),
    }
    cpu: dict[str, list[float]] = {k: [] for k in jitted}

    def timed(name, fn, args):
        def call():
            c = time.process_time()
            jax.block_until_ready(fn(*args))
            cpu[name].append(time.process_time() - c)

        return call

    fns = {k: timed(k, fn, a) for k, (fn, a) in jitted.items()}
    t = interleaved(fns, rounds=rounds, per_round=1, warmup=2)
    for k in jitted:
        cpu[k] = cpu[k][2:]  # drop the warm-up calls
        row = {"shape": label, "part": k, "wall_ms": median(t[k]) * 1e3, "cpu_ms": median(cpu[k]) * 1e3}
        rows.append(row)
        log(f"  {label} {k:24s} wall {row['wall_ms']:8.2f} ms   cpu {row['cpu_ms']:8.2f} ms")
    return rows


def conv_cases(seed: int = 0) -> dict:
    """``{name: (custom_fn, reference_fn, diff_args, other_args, cotangent)}`` (the form of ``bench.ops``)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = SHAPE
    x = _normal(rng, n, c, h, w)
    wt = _normal(rng, c, c, 3, 3) / np.sqrt(9 * c)
    b = _normal(rng, c)
    return {
        "conv2d 3x3 pad 1": (
            lambda x, w, b: jl.conv2d(x, w, b, padding=1),
            lambda x, w, b: layers.conv2d_reference(x, w, b, padding=1),
            (x, wt, b),
            (),
            _normal(rng, n, c, h, w),
        ),
        "conv2d 3x3 pad 1, (64, 32, 16, 16) -> 64": _conv_case(rng, (64, 32, 16, 16), 64),
        "max_pool2d 2x2/2": (
            lambda x: jl.max_pool2d(x, pool_size=2, stride=2),
            lambda x: layers.max_pool2d_reference(x, pool_size=2, stride=2),
            (x,),
            (),
            _normal(rng, n, c, h // 2, w // 2),
        ),
        "conv2d 3x3 pad 1, NHWC": (
            lambda x, w, b: jl.conv2d(x, w, b, padding=1, data_format="NHWC"),
            lambda x, w, b: layers.conv2d_reference(x, w, b, padding=1, data_format="NHWC"),
            (_nhwc(x), wt, b),
            (),
            _normal(rng, n, h, w, c),
        ),
        "max_pool2d 2x2/2, NHWC": (
            lambda x: jl.max_pool2d(x, pool_size=2, stride=2, data_format="NHWC"),
            lambda x: layers.max_pool2d_reference(x, pool_size=2, stride=2, data_format="NHWC"),
            (_nhwc(x),),
            (),
            _normal(rng, n, h // 2, w // 2, c),
        ),
        "max_pool2d 3x3/2 (overlapping)": (
            lambda x: jl.max_pool2d(x, pool_size=3, stride=2),
            lambda x: layers.max_pool2d_reference(x, pool_size=3, stride=2),
            (x,),
            (),
            _normal(rng, n, c, (h - 3) // 2 + 1, (w - 3) // 2 + 1),
        ),
    }


def residual_bytes(f, diff_args) -> dict:
    """Bytes ``jax.vjp(f, *diff_args)`` keeps for the backward pass: ``new`` (not an input) and ``args``."""

    def res(*a):
        return jax.tree.leaves(jax.vjp(f, *a)[1])

    jaxpr = jax.make_jaxpr(res)(*diff_args).jaxpr
    invars, seen, new, arg = set(jaxpr.invars), set(), 0, 0
    for v in jaxpr.outvars:
        if isinstance(v, jex_core.Literal) or v in seen:
            continue
        seen.add(v)
        nbytes = int(np.prod(v.aval.shape, dtype=np.int64)) * np.dtype(v.aval.dtype).itemsize
        if v in invars:
            arg += nbytes
        else:
            new += nbytes
    return {"new": new, "args": arg}


def pool_backward_only(rounds: int, seed: int = 0, log=print) -> dict:
    """2x2/2 max pool: ``max_pool2d_bwd(residuals, g)`` vs autodiff's ``select_and_scatter_add``."""
    rng = np.random.default_rng(seed)
    n, c, h, w = SHAPE
    x, g = _normal(rng, n, c, h, w), _normal(rng, n, c, h // 2, w // 2)
    _, res = jax.jit(lambda x: layers.max_pool2d_fwd(x, pool_size=2, stride=2))(x)
    custom = jax.jit(layers.max_pool2d_bwd)
    autodiff = jax.jit(lambda x, g: jax.vjp(lambda a: layers.max_pool2d_reference(a, pool_size=2, stride=2), x)[1](g))
    kernels = {"custom": _kernels(custom, (res, g)), "autodiff": _kernels(autodiff, (x, g))}
    fns = {
        "custom": lambda: jax.block_until_ready(custom(res, g)),
        "autodiff": lambda: jax.block_until_ready(autodiff(x, g)),
    }
    t = interleaved(fns, rounds=rounds, per_round=1, warmup=2)
    q1, q3 = iqr([a / b for a, b in zip(t["custom"], t["autodiff"], strict=True)])
    row = {
        "op": "max_pool2d 2x2/2, backward only",
        "custom_ms": median(t["custom"]) * 1e3,
        "autodiff_ms": median(t["autodiff"]) * 1e3,
        "ratio": paired_ratio(t["custom"], t["autodiff"], 1),
        "ratio_q1": q1,
        "ratio_q3": q3,
        "kernels_custom": kernels["custom"],
        "kernels_autodiff": kernels["autodiff"],
    }
    log(
        f"  {row['op']:18s} custom {row['custom_ms']:8.3f} ms   autodiff {row['autodiff_ms']:8.3f} ms   "
        f"{row['ratio']:.3f}x (IQR {q1:.3f}-{q3:.3f})"
    )
    return row


def run_conv(rounds: int = 20, log=print) -> dict:
    """The rows (as ``bench.ops.run_ops``), the pool backward row and each op's residual bytes."""
    cases = conv_cases()
    rows = run_ops(rounds=rounds, per_round=1, log=log, cases=cases)
    rows.append(pool_backward_only(rounds, log=log))
    residuals = {}
    for name, (op, ref, diff, _, _) in cases.items():
        residuals[name] = {"custom": residual_bytes(op, diff), "autodiff": residual_bytes(ref, diff)}
    parts = conv_parts(max(3, rounds // 2), log=log)
    return {"rows": rows, "residuals": residuals, "parts": parts}


def render_conv(res: dict) -> list[str]:
    """Markdown lines: the timing table and the residual bytes."""
    lines = [
        "### Per op, convolutional layers: custom rule vs jax.vjp of the lax reference "
        "(float32, x (64, 64, 32, 32); conv 64 filters 3x3 pad 1)",
        "",
        "| op | custom ms | autodiff ms | custom / autodiff | IQR of per-round ratios | XLA kernels, custom / autodiff "
        "| saved residuals MB, custom: new + inputs | autodiff: new + inputs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        b = res["residuals"].get(r["op"])
        mb = (
            (
                f"{b['custom']['new'] / 1e6:.2f} + {b['custom']['args'] / 1e6:.2f}",
                f"{b['autodiff']['new'] / 1e6:.2f} + {b['autodiff']['args'] / 1e6:.2f}",
            )
            if b
            else ("—", "—")
        )
        lines.append(
            f"| {r['op']} | {r['custom_ms']:.3f} | {r['autodiff_ms']:.3f} | {r['ratio']:.3f} "
            f"| {r['ratio_q1']:.3f}–{r['ratio_q3']:.3f} | {r['kernels_custom']} / {r['kernels_autodiff']} | {mb[0]} | {mb[1]} |"
        )
    lines.append("")
    if res.get("parts"):
        lines += [
            "### conv2d 3x3 pad 1, float32: the backward's parts alone (medians; CPU = this process's CPU time)",
            "",
            "| shape | part | wall ms | CPU ms |",
            "|---|---|---:|---:|",
        ]
        lines += [f"| {r['shape']} | {r['part']} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} |" for r in res["parts"]]
        lines.append("")
    return lines


def conv_targets(res: dict) -> dict:
    """``{target: (measured, goal, met)}``; a per-op ratio above 1 whose IQR reaches below 1 is a tie."""
    rows = {r["op"]: r for r in res["rows"]}
    fwd_bwd = [r for name, r in rows.items() if "backward only" not in name]
    out = {}
    for key in [k for k in TARGETS if k.startswith("conv2d 3x3 fwd+bwd")]:
        label = key.split(", ", 1)[1]
        row = rows.get("conv2d 3x3 pad 1") if label.startswith("(64, 64") else rows.get(f"conv2d 3x3 pad 1, {label}")
        if row is not None:
            out[key] = (row["ratio"], f"<= {TARGETS[key]}", row["ratio"] <= TARGETS[key])
    name = "conv per-op: custom / autodiff (every op)"
    ties = [r["op"] for r in fwd_bwd if r["ratio"] > 1.0 and r["ratio_q1"] <= 1.0]
    ok = all(r["ratio"] <= 1.0 or r["op"] in ties for r in fwd_bwd)
    goal = "<= 1.0" + (f" (ties within noise: {', '.join(ties)})" if ties else "")
    out[name] = (max(r["ratio"] for r in fwd_bwd), goal, ok)
    bwd = rows["max_pool2d 2x2/2, backward only"]["ratio"]
    key = "max_pool2d 2x2/2 backward: custom / autodiff"
    out[key] = (bwd, f"<= {TARGETS[key]}", bwd <= TARGETS[key])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.conv", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    res = run_conv(rounds=args.rounds, log=lambda *a: print(*a, file=sys.stderr, flush=True))
    lines = render_conv(res)
    lines += ["| target | measured | goal | met |", "|---|---:|---:|---|"]
    for name, (value, goal, ok) in conv_targets(res).items():
        lines.append(f"| {name} | {value:.3f} | {goal} | {'yes' if ok else 'NO'} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
