"""A character-Transformer training step whose autodiff twin does not fit a memory budget runs with jaxlayers.

The model is :func:`jaxlayers.models.char_transformer` (``dim`` 128, 2 causal pre-norm blocks of 4 heads,
MLP 512, vocabulary 96), batch 1, float32. The step is one jitted ``jax.value_and_grad(model.loss)`` plus an
``optax.adam`` update (parameters and optimizer state donated), at ``T`` in ``--lengths``, in two variants:

* ``jaxlayers``: the model as shipped -- its attention is :func:`jaxlayers.dot_product_attention`
  (blocked forward, hand-derived FlashAttention-2 backward, ``O(B N T)`` residuals);
* ``autodiff``: the same model with the attention swapped, in this benchmark only, for
  :func:`~jaxlayers.layers.attention.dot_product_attention_reference` (plain ``jnp``, differentiated by
  JAX: keeps the ``(B, N, T, T)`` probabilities of every block). The swap replaces the name
  ``dot_product_attention`` in :mod:`jaxlayers.layers.mha` for the time of one trace (:func:`swapped`).

For each, nothing runs to measure memory: the step is lowered and compiled, and XLA's
``compiled.memory_analysis()`` gives the bytes of the arguments, the outputs, the aliased (donated)
buffers and the temporaries; the step's peak is at most ``argument + output - alias + temp``. The bytes
``jax.vjp`` of the loss keeps for the backward pass (:func:`bench.conv.residual_bytes`, read off the traced
jaxpr) are reported beside it. The budget is ``--budget-gib`` (default 4 GiB: a sixth of the 24 GiB
machine this was written on, the memory of a small accelerator); this machine's ``MemTotal`` and
``MemAvailable`` are printed too. At the largest length each variant's step is run once (timed) if its
bound fits the budget -- the jaxlayers one, to show it runs; the autodiff one is not started.

Run with ``python -m bench.attention_memory [--lengths 1024,2048,4096,8192] [--budget-gib 8]``.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlayers.layers.mha as mha
from bench.conv import residual_bytes
from jaxlayers import models
from jaxlayers.layers.attention import dot_product_attention_reference

VOCAB, DIM, DEPTH, HEADS, BATCH = 96, 128, 2, 4, 1
GIB = 2**30


@contextlib.contextmanager
def swapped(variant: str):
    """Within the block, :func:`jaxlayers.multi_head_attention` (so ``nn.TransformerBlock``) attends with
    ``variant``'s attention: ``"jaxlayers"`` (as shipped) or ``"autodiff"`` (the plain reference)."""
    original = mha.dot_product_attention
    if variant == "autodiff":
        mha.dot_product_attention = dot_product_attention_reference
    try:
        yield
    finally:
        mha.dot_product_attention = original


def _setup(t: int, seed: int = 0):
    model = models.char_transformer(VOCAB, t, dim=DIM, depth=DEPTH, num_heads=HEADS)
    params, state = model.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (BATCH, t + 1))
    x, y = jnp.asarray(tokens[:, :-1], jnp.int32), jnp.asarray(tokens[:, 1:], jnp.int32)
    opt = optax.adam(1e-3)
    return model, params, state, opt, x, y


def _step_fn(model, state, opt):
    def step(params, opt_state, x, y):
        (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def measure(t: int, variant: str) -> dict:
    """Compile ``variant``'s step at length ``t``; its memory analysis and the loss's residual bytes."""
    model, params, state, opt, x, y = _setup(t)
    opt_state = opt.init(params)
    with swapped(variant):
        t0 = time.perf_counter()
        compiled = _step_fn(model, state, opt).lower(params, opt_state, x, y).compile()
        compile_s = time.perf_counter() - t0
        res = residual_bytes(lambda p: model.loss(p, state, x, y)[0], (params,))
    ma = compiled.memory_analysis()
    row = {
        "T": t,
        "variant": variant,
        "compile_s": compile_s,
        "arg": ma.argument_size_in_bytes,
        "out": ma.output_size_in_bytes,
        "alias": ma.alias_size_in_bytes,
        "temp": ma.temp_size_in_bytes,
        "res_new": res["new"],
        "compiled": compiled,
        "inputs": (params, opt_state, x, y),
    }
    row["peak"] = row["arg"] + row["out"] - row["alias"] + row["temp"]
    return row


def run_once(row) -> float:
    """Run the compiled step once (its inputs are donated); wall seconds."""
    t0 = time.perf_counter()
    _, _, loss = row["compiled"](*row["inputs"])
    loss = float(jax.block_until_ready(loss))
    row["loss"] = loss
    return time.perf_counter() - t0


def _meminfo(field: str) -> float:
    """``field`` of ``/proc/meminfo`` in GiB (NaN where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="comma-separated sequence lengths T")
    parser.add_argument("--budget-gib", type=float, default=4.0, help="memory budget of one step, GiB")
    parser.add_argument("--no-run", action="store_true", help="compile only; run no step")
    args = parser.parse_args(argv)
    lengths = [int(s) for s in args.lengths.split(",") if s]
    budget = args.budget_gib * GIB
    print(
        f"char_transformer(vocab {VOCAB}, dim {DIM}, depth {DEPTH}, heads {HEADS}), batch {BATCH}, float32, "
        f"adam; budget {args.budget_gib:g} GiB; this machine: MemTotal {_meminfo('MemTotal'):.1f} GiB, "
        f"MemAvailable {_meminfo('MemAvailable'):.1f} GiB",
        flush=True,
    )
    print()
    print("| T | attention | arguments MiB | outputs MiB | aliased MiB | temporaries MiB | peak bound MiB |"
          " loss residuals MiB | fits budget | compile s | one step s |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    largest = max(lengths)
    for t in lengths:
        for variant in ("jaxlayers", "autodiff"):
            row = measure(t, variant)
            fits = row["peak"] <= budget
            step_s = ""
            if not args.no_run and fits and t == largest:
                step_s = f"{run_once(row):.2f} (loss {row['loss']:.3f})"
            mib = {k: row[k] / 2**20 for k in ("arg", "out", "alias", "temp", "peak", "res_new")}
            print(
                f"| {t} | {variant} | {mib['arg']:.1f} | {mib['out']:.1f} | {mib['alias']:.1f} | {mib['temp']:.1f} |"
                f" {mib['peak']:.1f} | {mib['res_new']:.1f} | {'yes' if fits else '**no**'} |"
                f" {row['compile_s']:.1f} | {step_s} |",
                flush=True,
            )
            del row
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"\nthis process's peak resident memory (all compilations and runs): {rss:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
