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
    rows = []
    for name, (op, ref, diff, other, ct) in (op_cases(n, d) if cases is None else cases).items():
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


if __name__ == "__main__":
    run_ops()
