"""bench/charlm.py's pieces: the shared batch order, the per-character loss scale, and the weight layout.

No training to a figure here (``python -m bench.charlm`` takes minutes; figures in bench/RESULTS.md). The
jaxlayers checks run everywhere; the cross-framework one (the same weights give the same losses in
jaxlayers, Flax and PyTorch for a few steps) needs flax and torch, i.e. the bench environment
(``pip install -e ".[bench]"``), and is skipped without them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ is not installed; it runs from the repository root

from bench import charlm  # noqa: E402

V, T, E, H = 11, 7, 5, 6


def _weights(seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (0.4 * rng.standard_normal(shape)).astype(np.float32)

    return {
        "embed": normal(V, E),
        "Wx": normal(E, 4 * H),
        "Wh": normal(H, 4 * H),
        "b": normal(4 * H),
        "Wout": normal(H, V),
        "bout": normal(V),
    }


def _reference_nats(w, x, y):
    """Mean cross-entropy per character (nats) of the model in the neutral layout (gate blocks i, f, g, o)."""
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    e = w["embed"][x].astype(np.float64)
    h = np.zeros((x.shape[0], H))
    c = np.zeros((x.shape[0], H))
    total = 0.0
    for t in range(x.shape[1]):
        a = e[:, t] @ w["Wx"] + h @ w["Wh"] + w["b"]
        i, f, g, o = np.split(a, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        s = h @ w["Wout"] + w["bout"]
        s = s - s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        total -= logp[np.arange(len(y)), y[:, t]].sum()
    return total / y.size


def _batch(seed=1, n=4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (n, T)).astype(np.int32), rng.integers(0, V, (n, T)).astype(np.int32)


def test_batch_order_is_a_permutation_per_epoch_and_depends_only_on_the_seed():
    order = charlm.batch_order(10, 3, 7, seed=0)
    assert order.shape == (7, 3)
    # 3 full batches per epoch (the 10th window dropped); each epoch's 9 windows distinct
    for epoch in (order[0:3], order[3:6]):
        assert len(set(epoch.ravel().tolist())) == 9
    np.testing.assert_array_equal(order, charlm.batch_order(10, 3, 7, seed=0))
    assert not np.array_equal(order, charlm.batch_order(10, 3, 7, seed=1))


def test_jaxlayers_set_weights_maps_the_gate_order_and_reports_per_character_bits():
    lm = charlm.JaxlayersLM(V, T, E, H, lr=1e-3, clip=5.0, seed=0)
    w = _weights()
    lm.set_weights(w)
    x, y = _batch()
    want = _reference_nats(w, x, y)
    assert lm.val_bpc(x, y) == pytest.approx(want / np.log(2), rel=1e-5)
    # the step reports the loss before its update, per character (the model's loss is summed over time / N)
    assert lm.step(x, y) == pytest.approx(want, rel=1e-5)


def test_the_three_implementations_agree_step_by_step_from_the_same_weights():
    pytest.importorskip("flax")
    pytest.importorskip("torch")
    w = _weights()
    impls = {name: cls(V, T, E, H, lr=1e-2, clip=0.05, seed=0) for name, cls in charlm.IMPLS.items()}
    for impl in impls.values():
        impl.set_weights(w)
    assert {name: impl.n_params() for name, impl in impls.items()} == dict.fromkeys(impls, impls["flax"].n_params())
    # clip 0.05 bites here (the per-character gradient norm is about 0.2): the clipping is checked too
    for k in range(3):
        x, y = _batch(seed=10 + k)
        losses = {name: impl.step(x, y) for name, impl in impls.items()}
        for name in ("flax", "torch"):
            assert losses[name] == pytest.approx(losses["jaxlayers"], rel=1e-4), (k, losses)
    x, y = _batch(seed=99)
    bits = {name: impl.val_bpc(x, y) for name, impl in impls.items()}
    for name in ("flax", "torch"):
        assert bits[name] == pytest.approx(bits["jaxlayers"], rel=1e-4), bits
