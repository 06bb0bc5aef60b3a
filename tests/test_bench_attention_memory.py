"""bench/attention_memory.py's swap: the autodiff variant is the same model (same loss) whose attention keeps
the ``(B, N, T, T)`` probabilities, and the swap is undone after its block.

No figure here (``python -m bench.attention_memory`` compiles steps up to T = 8192; figures in bench/RESULTS.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ is not installed; it runs from the repository root

import jaxlayers.layers.mha as mha  # noqa: E402
from bench import attention_memory as am  # noqa: E402
from bench.conv import residual_bytes  # noqa: E402
from jaxlayers.layers.attention import dot_product_attention  # noqa: E402


def test_swap_same_loss_quadratic_residuals_and_restored(monkeypatch):
    t = 128
    monkeypatch.setattr(am, "DIM", 16)
    monkeypatch.setattr(am, "VOCAB", 11)
    model, params, state, _, x, y = am._setup(t)

    def loss(p):
        return model.loss(p, state, x, y)[0]

    out = {}
    for variant in ("jaxlayers", "autodiff"):
        with am.swapped(variant):
            out[variant] = (float(jax.jit(loss)(params)), residual_bytes(loss, (params,))["new"])
        assert mha.dot_product_attention is dot_product_attention
    np.testing.assert_allclose(out["jaxlayers"][0], out["autodiff"][0], rtol=1e-5)
    # autodiff keeps at least one float32 (B, N, T, T) matrix per block on top of what jaxlayers keeps
    extra = am.BATCH * am.HEADS * t * t * 4 * am.DEPTH
    assert out["autodiff"][1] - out["jaxlayers"][1] >= extra
