"""``python -m bench.scan_conv``: a convolution's gradient step inside ``lax.scan`` vs a Python loop of jitted steps.

Plain JAX, no jaxlayers: on XLA:CPU a convolution inside a loop body (``lax.scan``, which the training
loop's epoch uses) runs far slower than the same convolution in a top-level program; ``unroll=True``
removes the loop and the gap. Prints the three times (see bench/RESULTS.md, "Why these runs are slow").
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax import lax


def main(steps: int = 8) -> None:
    w0 = jnp.full((32, 32, 3, 3), 0.01)
    xs = jnp.ones((steps, 64, 32, 8, 8))

    def loss(w, x):
        return jnp.sum(lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)]) ** 2)

    def body(w, x):
        return w - 1e-3 * jax.grad(loss)(w, x), None

    programs = {
        "lax.scan": jax.jit(lambda w: lax.scan(body, w, xs)[0]),
        "lax.scan(unroll=True)": jax.jit(lambda w: lax.scan(body, w, xs, unroll=True)[0]),
    }
    one = jax.jit(body)
    for name, program in programs.items():
        jax.block_until_ready(program(w0))  # compile
        t = time.perf_counter()
        jax.block_until_ready(program(w0))
        print(f"{name:24s} {(time.perf_counter() - t) * 1e3:8.1f} ms for {steps} steps")
    jax.block_until_ready(one(w0, xs[0]))
    t, w = time.perf_counter(), w0
    for i in range(steps):
        w, _ = one(w, xs[i])
    jax.block_until_ready(w)
    print(f"{'loop of jitted steps':24s} {(time.perf_counter() - t) * 1e3:8.1f} ms for {steps} steps")


if __name__ == "__main__":
    main()
