"""Per-op table: each op's forward + backward against ``jax.vjp`` of its reference.

At ``N = 4096, D = 1024`` (float32): ``affine`` maps (N, D) -> (N, D) with a
(D, D) weight; ``relu``, ``batchnorm`` (train and test mode) and ``dropout``
(rate 0.5) act on (N, D); the losses take scores (N, D), i.e. D classes.
Both sides are one jitted function ``(args, cotangent) -> (out, grads)``
with every array an argument, timed interleaved.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

import jaxlayers as jl
from bench.common import interleaved, iqr, median, paired_ratio
from jaxlayers import layers, losses


def _fwd_bwd(f, n_diff: int):
    """``(diff_args, other_args, ct) -> (out, grads)`` for ``f(*diff_args, *other_args)``."""

    def run(diff_args, other_args, ct):
        out, vjp = jax.vjp(lambda *d: f(*d, *other_args), *diff_args)
        return out, vjp(ct)

    return jax.jit(run)


def op_cases(n: int = 4096, d: int = 1024, seed: int = 0):
    """``{name: (custom_fn, reference_fn, diff_args, other_args, cotangent)}``."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))

    x = normal(n, d)
    w = normal(d, d) / np.sqrt(d)
    b = normal(d)
    gamma, beta = 1.0 + 0.1 * normal(d), 0.1 * normal(d)
    state = jl.BatchNormState(0.1 * normal(d), 1.0 + jnp.abs(normal(d)))
    key = jax.random.key(seed)
    y = jnp.asarray(rng.integers(0, d, size=n).astype(np.int32))
    g_nd = normal(n, d)
    g_scalar = jnp.ones((), jnp.float32)
    ct_bn = (g_nd, jax.tree.map(jnp.zeros_like, state))

    def bn(train):
        return (
            lambda x, g, b_, s: jl.batchnorm(x, g, b_, s, train=train),
            lambda x, g, b_, s: layers.batchnorm_reference(x, g, b_, s, train=train),
            (x, gamma, beta),
            (state,),
            ct_bn,
        )

    return {
        "affine": (jl.affine, layers.affine_reference, (x, w, b), (), g_nd),
        "relu": (jl.relu, layers.relu_reference, (x,), (), g_nd),
        "batchnorm[train]": bn(True),
        "batchnorm[test]": bn(False),
        "dropout(0.5)": (
            lambda x, k: jl.dropout(x, k, rate=0.5, train=True),
            lambda x, k: layers.dropout_reference(x, k, rate=0.5, train=True),
            (x,),
            (key,),
            g_nd,
        ),
        "dropout(0.3)": (
            lambda x, k: jl.dropout(x, k, rate=0.3, train=True),
            lambda x, k: layers.dropout_reference(x, k, rate=0.3, train=True),
            (x,),
            (key,),
            g_nd,
        ),
        "svm_loss": (jl.svm_loss, losses.svm_loss_reference, (x,), (y,), g_scalar),
        "softmax_loss": (jl.softmax_loss, losses.softmax_loss_reference, (x,), (y,), g_scalar),
        **norm_op_cases(seed),
    }


def _kernels(jitted, args) -> int:
    """How many kernels (fusions, dots, copies, ...) XLA compiled ``jitted`` into."""
    text = jitted.lower(*args).compile().as_text()
    entry = text[text.index("ENTRY") :]
    entry = entry[: entry.index("\n}")]
    skip = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")
    return sum(1 for m in re.finditer(r"^\s+(?:ROOT )?%\S+ = \S+ ([\w-]+)\(", entry, re.M) if m.group(1) not in skip)


def run_ops(
    rounds: int = 30, per_round: int = 1, n: int = 4096, d: int = 1024, log=print, cases: dict | None = None
) -> list[dict]:
    """Time every op's custom fwd+bwd against ``jax.vjp`` of its reference. Returns table rows.

    Each row has both medians, the paired ratio (median over rounds of
    custom / autodiff) with its interquartile range, and the number of
    kernels XLA made of each side: where those match the two sides usually
    compiled to the same program, and the ratio is 1 within the noise.
    ``cases`` (same form as :func:`op_cases`) replaces the default ops.
    """
    return _run_cases(op_cases(n, d) if cases is None else cases, rounds, per_round, log)


def _run_cases(cases: dict, rounds: int, per_round: int, log) -> list[dict]:
    rows = []
    for name, (op, ref, diff, other, ct) in cases.items():
        fns, kernels = {}, {}
        for side, f in (("custom", op), ("autodiff", ref)):
            jitted = _fwd_bwd(f, len(diff))
            kernels[side] = _kernels(jitted, (diff, other, ct))
            jax.block_until_ready(jitted(diff, other, ct))

            def call(jitted=jitted, diff=diff, other=other, ct=ct):
                return jax.block_until_ready(jitted(diff, other, ct))

            fns[side] = call
        t = interleaved(fns, rounds=rounds, per_round=per_round, warmup=2)
        per_round_ratios = [
            median(t["custom"][r * per_round : (r + 1) * per_round])
            / median(t["autodiff"][r * per_round : (r + 1) * per_round])
            for r in range(rounds)
        ]
        q1, q3 = iqr(per_round_ratios)
        row = {
            "op": name,
            "custom_ms": median(t["custom"]) * 1e3,
            "autodiff_ms": median(t["autodiff"]) * 1e3,
            "ratio": paired_ratio(t["custom"], t["autodiff"], per_round),
            "ratio_q1": q1,
            "ratio_q3": q3,
            "kernels_custom": kernels["custom"],
            "kernels_autodiff": kernels["autodiff"],
        }
        log(
            f"  {name:18s} custom {row['custom_ms']:8.3f} ms   autodiff {row['autodiff_ms']:8.3f} ms   "
            f"{row['ratio']:.3f}x (IQR {q1:.3f}-{q3:.3f}), kernels {kernels['custom']} / {kernels['autodiff']}"
        )
        rows.append(row)
    return rows


# --- normalisation layers (issue 11) ---------------------------------------------------------

NORM_SHAPES = {"nchw": (64, 64, 32, 32), "groups": 8, "layernorm": (4096, 1024)}


def norm_op_cases(seed: int = 0):
    """The norm ops at the sizes a convnet meets: spatial_batchnorm and groupnorm
    (groups=8) on (64, 64, 32, 32), layernorm on (4096, 1024); float32."""
    rng = np.random.default_rng(seed + 1)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))

    nchw, groups, nd = NORM_SHAPES["nchw"], NORM_SHAPES["groups"], NORM_SHAPES["layernorm"]
    x4, g4 = normal(*nchw), normal(*nchw)
    c = nchw[1]
    gamma_c, beta_c = 1.0 + 0.1 * normal(c), 0.1 * normal(c)
    state = jl.BatchNormState(0.1 * normal(c), 1.0 + jnp.abs(normal(c)))
    x2, g2 = normal(*nd), normal(*nd)
    gamma_d, beta_d = 1.0 + 0.1 * normal(nd[1]), 0.1 * normal(nd[1])
    ct_state = (g4, jax.tree.map(jnp.zeros_like, state))

    def sbn(train):
        return (
            lambda x, g, b_, s: jl.spatial_batchnorm(x, g, b_, s, train=train),
            lambda x, g, b_, s: layers.spatial_batchnorm_reference(x, g, b_, s, train=train),
            (x4, gamma_c, beta_c),
            (state,),
            ct_state,
        )

    return {
        "spatial_batchnorm[train]": sbn(True),
        "spatial_batchnorm[test]": sbn(False),
        "groupnorm(G=8)": (
            lambda x, g, b_: jl.groupnorm(x, g, b_, groups=groups),
            lambda x, g, b_: layers.groupnorm_reference(x, g, b_, groups=groups),
            (x4, gamma_c, beta_c),
            (),
            g4,
        ),
        "layernorm": (jl.layernorm, layers.layernorm_reference, (x2, gamma_d, beta_d), (), g2),
    }


def residual_mb(f, diff, other) -> float:
    """MB of new residuals (not the op's own inputs) ``jax.vjp`` of ``f`` saves."""
    from bench.peers_jax import residual_bytes

    return residual_bytes(lambda d, *o: (f(*d, *o), None), diff, *other)["new"] / 1e6


def run_norm_ops(rounds: int = 15, log=print) -> list[dict]:
    """The per-op timing (:func:`run_ops`) of the norm ops only, plus saved residual MB per side."""
    cases = norm_op_cases()
    rows = []
    for row in _run_cases(cases, rounds, 1, log):
        op, ref, diff, other, _ = cases[row["op"]]
        row["residual_mb_custom"] = residual_mb(op, diff, other)
        row["residual_mb_autodiff"] = residual_mb(ref, diff, other)
        log(f"  {row['op']:24s} residuals {row['residual_mb_custom']:.1f} MB / {row['residual_mb_autodiff']:.1f} MB")
        rows.append(row)
    return rows


def render_norm_ops(rows: list[dict]) -> str:
    lines = [
        "| op | shape | custom ms | autodiff ms | custom / autodiff | IQR of per-round ratios "
        "| XLA kernels, custom / autodiff | saved residuals MB, custom / autodiff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        shape = NORM_SHAPES["layernorm"] if r["op"] == "layernorm" else NORM_SHAPES["nchw"]
        lines.append(
            f"| {r['op']} | {shape} | {r['custom_ms']:.2f} | {r['autodiff_ms']:.2f} | {r['ratio']:.3f} "
            f"| {r['ratio_q1']:.3f}–{r['ratio_q3']:.3f} | {r['kernels_custom']} / {r['kernels_autodiff']} "
            f"| {r['residual_mb_custom']:.1f} / {r['residual_mb_autodiff']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="per-op custom vs autodiff timing")
    ap.add_argument("--norms", action="store_true", help="only the normalisation layers, with residual bytes")
    ap.add_argument("--rounds", type=int, default=15)
    cli = ap.parse_args()
    if cli.norms:
        print(render_norm_ops(run_norm_ops(rounds=cli.rounds)))
    else:
        run_ops(rounds=cli.rounds)
