"""The recurrent ops (rnn_step, rnn, lstm_step, lstm, gru_step, gru) and their compat functions.

The generic registry suite (tests/test_ops.py, tests/test_hostile.py, jaxlayers gradcheck) checks each
op against jax.grad of its reference and float64 finite differences, under jit, vmap, lax.scan,
jax.checkpoint, in half precision and on empty batches; this file adds what is specific to them: the
NumPy original's API (compat) against a NumPy transcription of the course's ``rnn_layers.py``, the
gate orders against explicit formulas, the sequence ops against loops of the step ops, the residuals
kept, float32 accumulation over time, T = 1, T = 0, and saturating inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import numeric_vjp

import jaxlayers as jl
from jaxlayers import compat
from jaxlayers.gradcheck import norm_rel_error, rel_error
from jaxlayers.layers.gru import gru_reference
from jaxlayers.layers.lstm import LSTMResiduals, lstm_fwd, lstm_reference
from jaxlayers.layers.rnn import rnn_reference

# --------------------------------------------------------------------------
# A NumPy transcription of the course's rnn_layers.py (the standard formulas:
# forward caches, backward through the cache), float64. The oracle for compat.
# --------------------------------------------------------------------------


def np_sigmoid(x):
    pos_mask = x >= 0
    neg_mask = x < 0
    z = np.zeros_like(x)
    z[pos_mask] = np.exp(-x[pos_mask])
    z[neg_mask] = np.exp(x[neg_mask])
    top = np.ones_like(x)
    top[neg_mask] = z[neg_mask]
    return top / (1 + z)


def np_rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x.dot(Wx) + prev_h.dot(Wh) + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def np_rnn_step_backward(dnext_h, cache):
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h**2)
    return da.dot(Wx.T), da.dot(Wh.T), x.T.dot(da), prev_h.T.dot(da), da.sum(axis=0)


def np_rnn_forward(x, h0, Wx, Wh, b):
    n, t, _ = x.shape
    h = np.zeros((n, t, h0.shape[1]))
    cache = []
    prev_h = h0
    for i in range(t):
        prev_h, c = np_rnn_step_forward(x[:, i, :], prev_h, Wx, Wh, b)
        h[:, i, :] = prev_h
        cache.append(c)
    return h, cache


def np_rnn_backward(dh, cache):
    n, t, _ = dh.shape
    x0, _, Wx, Wh, _ = cache[0]
    dx = np.zeros((n, t, x0.shape[1]))
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1])
    dprev_h = np.zeros((n, Wh.shape[0]))
    for i in reversed(range(t)):
        dx_i, dprev_h, dWx_i, dWh_i, db_i = np_rnn_step_backward(dh[:, i, :] + dprev_h, cache[i])
        dx[:, i, :] = dx_i
        dWx += dWx_i
        dWh += dWh_i
        db += db_i
    return dx, dprev_h, dWx, dWh, db


def np_lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    h = prev_h.shape[1]
    a = x.dot(Wx) + prev_h.dot(Wh) + b
    i = np_sigmoid(a[:, :h])
    f = np_sigmoid(a[:, h : 2 * h])
    o = np_sigmoid(a[:, 2 * h : 3 * h])
    g = np.tanh(a[:, 3 * h :])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def np_lstm_step_backward(dnext_h, dnext_c, cache):
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    tc = np.tanh(next_c)
    do = dnext_h * tc
    dc = dnext_c + dnext_h * o * (1 - tc**2)
    di, df, dg = dc * g, dc * prev_c, dc * i
    dprev_c = dc * f
    da = np.hstack([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)])
    return da.dot(Wx.T), da.dot(Wh.T), dprev_c, x.T.dot(da), prev_h.T.dot(da), da.sum(axis=0)


def np_lstm_forward(x, h0, Wx, Wh, b):
    n, t, _ = x.shape
    h = np.zeros((n, t, h0.shape[1]))
    prev_h, prev_c = h0, np.zeros_like(h0)
    cache = []
    for i in range(t):
        prev_h, prev_c, c = np_lstm_step_forward(x[:, i, :], prev_h, prev_c, Wx, Wh, b)
        h[:, i, :] = prev_h
        cache.append(c)
    return h, cache


def np_lstm_backward(dh, cache):
    n, t, _ = dh.shape
    x0, _, _, Wx, Wh = cache[0][:5]
    dx = np.zeros((n, t, x0.shape[1]))
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1])
    dprev_h = np.zeros((n, Wh.shape[0]))
    dprev_c = np.zeros_like(dprev_h)
    for i in reversed(range(t)):
        dx_i, dprev_h, dprev_c, dWx_i, dWh_i, db_i = np_lstm_step_backward(dh[:, i, :] + dprev_h, dprev_c, cache[i])
        dx[:, i, :] = dx_i
        dWx += dWx_i
        dWh += dWh_i
        db += db_i
    return dx, dprev_h, dWx, dWh, db


# --------------------------------------------------------------------------
# compat == the course, float64, to 1e-9
# --------------------------------------------------------------------------

TOL = 1e-9


def _weights(r, d, h, gates, scale=0.5):
    return r.randn(d, gates * h) * scale, r.randn(h, gates * h) * scale, r.randn(gates * h) * 0.3


def _close(ours, theirs, tol=TOL):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert isinstance(a, np.ndarray) and a.shape == np.shape(b) and a.dtype == np.float64
        assert rel_error(a, b) <= tol, rel_error(a, b)


def test_compat_sigmoid_is_the_course_and_stable(x64):
    x = np.array([-1000.0, -30.0, -1.0, 0.0, 0.5, 30.0, 1000.0])
    out = compat.sigmoid(x)
    assert isinstance(out, np.ndarray) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np_sigmoid(x), rtol=1e-15, atol=1e-300)
    assert out[0] == 0.0 and out[-1] == 1.0


def test_compat_rnn_step(x64):
    r = np.random.RandomState(0)
    x, h, (Wx, Wh, b) = r.randn(3, 10), r.randn(3, 4), _weights(r, 10, 4, 1)
    out, cache = compat.rnn_step_forward(x, h, Wx, Wh, b)
    out_s, cache_s = np_rnn_step_forward(x, h, Wx, Wh, b)
    _close((out,), (out_s,))
    dnext = r.randn(*out.shape)
    grads = compat.rnn_step_backward(dnext, cache)
    _close(grads, np_rnn_step_backward(dnext, cache_s))
    # and the course's numeric gradient check
    dx_num = numeric_vjp(lambda x: compat.rnn_step_forward(x, h, Wx, Wh, b)[0], x.copy(), dnext)
    assert norm_rel_error(grads[0], dx_num) <= 1e-7


def test_compat_rnn(x64):
    r = np.random.RandomState(1)
    n, t, d, h = 2, 5, 4, 3
    x, h0, (Wx, Wh, b) = r.randn(n, t, d), r.randn(n, h), _weights(r, d, h, 1)
    out, cache = compat.rnn_forward(x, h0, Wx, Wh, b)
    out_s, cache_s = np_rnn_forward(x, h0, Wx, Wh, b)
    _close((out,), (out_s,))
    dh = r.randn(*out.shape)
    grads = compat.rnn_backward(dh, cache)
    _close(grads, np_rnn_backward(dh, cache_s))
    dWh_num = numeric_vjp(lambda W: compat.rnn_forward(x, h0, Wx, W, b)[0], Wh.copy(), dh)
    assert norm_rel_error(grads[3], dWh_num) <= 1e-7


def test_compat_rnn_matches_the_course_notebook_values(x64):
    """The course's RNN notebook check: linspace inputs, printed expected hidden states."""
    n, t, d, h = 2, 3, 4, 5
    x = np.linspace(-0.1, 0.3, num=n * t * d).reshape(n, t, d)
    h0 = np.linspace(-0.3, 0.1, num=n * h).reshape(n, h)
    Wx = np.linspace(-0.2, 0.4, num=d * h).reshape(d, h)
    Wh = np.linspace(-0.4, 0.1, num=h * h).reshape(h, h)
    b = np.linspace(-0.7, 0.1, num=h)
    out, _ = compat.rnn_forward(x, h0, Wx, Wh, b)
    np.testing.assert_allclose(out, np_rnn_forward(x, h0, Wx, Wh, b)[0], rtol=1e-12)
    np.testing.assert_allclose(out[0, 0], [-0.42070749, -0.27279261, -0.11074945, 0.05740409, 0.22236251], rtol=1e-7)


def test_compat_lstm_step(x64):
    r = np.random.RandomState(2)
    n, d, h = 3, 4, 5
    x, ph, pc, (Wx, Wh, b) = r.randn(n, d), r.randn(n, h), r.randn(n, h), _weights(r, d, h, 4)
    nh, nc, cache = compat.lstm_step_forward(x, ph, pc, Wx, Wh, b)
    nh_s, nc_s, cache_s = np_lstm_step_forward(x, ph, pc, Wx, Wh, b)
    _close((nh, nc), (nh_s, nc_s))
    dnh, dnc = r.randn(n, h), r.randn(n, h)
    grads = compat.lstm_step_backward(dnh, dnc, cache)
    _close(grads, np_lstm_step_backward(dnh, dnc, cache_s))


def test_compat_lstm(x64):
    r = np.random.RandomState(3)
    n, t, d, h = 2, 6, 5, 4
    x, h0, (Wx, Wh, b) = r.randn(n, t, d), r.randn(n, h), _weights(r, d, h, 4)
    out, cache = compat.lstm_forward(x, h0, Wx, Wh, b)
    out_s, cache_s = np_lstm_forward(x, h0, Wx, Wh, b)
    _close((out,), (out_s,))
    dh = r.randn(*out.shape)
    grads = compat.lstm_backward(dh, cache)
    _close(grads, np_lstm_backward(dh, cache_s))
    dx_num = numeric_vjp(lambda x: compat.lstm_forward(x, h0, Wx, Wh, b)[0], x.copy(), dh)
    assert norm_rel_error(grads[0], dx_num) <= 1e-7


def test_compat_lstm_matches_the_course_notebook_values(x64):
    n, d, h, t = 2, 5, 4, 3
    x = np.linspace(-0.4, 0.6, num=n * t * d).reshape(n, t, d)
    h0 = np.linspace(-0.4, 0.8, num=n * h).reshape(n, h)
    Wx = np.linspace(-0.2, 0.9, num=4 * d * h).reshape(d, 4 * h)
    Wh = np.linspace(-0.3, 0.6, num=4 * h * h).reshape(h, 4 * h)
    b = np.linspace(0.2, 0.7, num=4 * h)
    out, _ = compat.lstm_forward(x, h0, Wx, Wh, b)
    np.testing.assert_allclose(out, np_lstm_forward(x, h0, Wx, Wh, b)[0], rtol=1e-12)
    np.testing.assert_allclose(out[0, 0], [0.01764008, 0.01823233, 0.01882671, 0.0194232], rtol=1e-6)


def test_compat_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^rnn: x holds an empty sequence \(T = 0, x shape \(2, 0, 3\)\)"):
        compat.rnn_forward(np.zeros((2, 0, 3), np.float32), np.zeros((2, 4), np.float32), *_f32_weights(3, 4, 1))
    with pytest.raises(ValueError, match=r"^lstm_step: Wh must have shape \(H, 4 \* H = 16\)"):
        Wx, Wh, b = _f32_weights(3, 4, 4)
        z = np.zeros((2, 4), np.float32)
        compat.lstm_step_forward(np.zeros((2, 3), np.float32), z, z, Wx, Wh[:, :12], b)
    with pytest.raises(TypeError, match=r"^lstm_backward: dh must have a floating dtype"):
        _, cache = compat.lstm_forward(
            np.zeros((1, 2, 3), np.float32), np.zeros((1, 4), np.float32), *_f32_weights(3, 4, 4)
        )
        compat.lstm_backward(np.zeros((1, 2, 4), np.int32), cache)


def _f32_weights(d, h, gates):
    r = np.random.RandomState(9)
    return tuple(a.astype(np.float32) for a in _weights(r, d, h, gates))


# --------------------------------------------------------------------------
# Gate orders against explicit formulas
# --------------------------------------------------------------------------


def _sig(a):
    return 1 / (1 + np.exp(-a))


def test_lstm_gate_order_is_i_f_o_g(x64):
    r = np.random.RandomState(4)
    n, d, h = 2, 3, 4
    x, ph, pc = r.randn(n, d), r.randn(n, h), r.randn(n, h)
    Wx, Wh, b = _weights(r, d, h, 4)
    a = x @ Wx + ph @ Wh + b
    i, f, o, g = _sig(a[:, :h]), _sig(a[:, h : 2 * h]), _sig(a[:, 2 * h : 3 * h]), np.tanh(a[:, 3 * h :])
    c = f * pc + i * g
    nh, nc = jl.lstm_step(x, ph, pc, Wx, Wh, b)
    np.testing.assert_allclose(np.asarray(nc), c, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(nh), o * np.tanh(c), rtol=1e-12)


def test_lstm_from_i_f_g_o_weights_by_swapping_the_last_two_blocks(x64):
    """The conversion the docs give for PyTorch/Flax/Equinox (i, f, g, o) weights."""
    r = np.random.RandomState(5)
    n, t, d, h = 2, 4, 3, 5
    x, h0, c0 = r.randn(n, t, d), r.randn(n, h), r.randn(n, h)
    Wx, Wh, b = _weights(r, d, h, 4)  # in i, f, g, o order

    def ifgo_lstm(x):  # a PyTorch-style cell, written out
        hs, hh, cc = [], h0, c0
        for s in range(t):
            a = x[:, s] @ Wx + hh @ Wh + b
            i, f, g, o = _sig(a[:, :h]), _sig(a[:, h : 2 * h]), np.tanh(a[:, 2 * h : 3 * h]), _sig(a[:, 3 * h :])
            cc = f * cc + i * g
            hh = o * np.tanh(cc)
            hs.append(hh)
        return np.stack(hs, 1)

    def swap(w):
        return np.concatenate([w[..., : 2 * h], w[..., 3 * h :], w[..., 2 * h : 3 * h]], axis=-1)

    out = jl.lstm(x, h0, swap(Wx), swap(Wh), swap(b), c0)
    np.testing.assert_allclose(np.asarray(out), ifgo_lstm(x), rtol=1e-12)


def test_gru_equations_r_z_n_reset_after_the_matmul(x64):
    r = np.random.RandomState(6)
    n, t, d, h = 2, 3, 4, 3
    x, h0 = r.randn(n, t, d), r.randn(n, h)
    Wx, Wh, b = _weights(r, d, h, 3)
    hh, hs = h0, []
    for s in range(t):
        xa, ha = x[:, s] @ Wx + b, hh @ Wh
        rr = _sig(xa[:, :h] + ha[:, :h])
        z = _sig(xa[:, h : 2 * h] + ha[:, h : 2 * h])
        nn_ = np.tanh(xa[:, 2 * h :] + rr * ha[:, 2 * h :])  # r times (h Wh_n), after the matmul
        hh = (1 - z) * nn_ + z * hh
        hs.append(hh)
    np.testing.assert_allclose(np.asarray(jl.gru(x, h0, Wx, Wh, b)), np.stack(hs, 1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jl.gru_step(x[:, 0], h0, Wx, Wh, b)), hs[0], rtol=1e-12)


# --------------------------------------------------------------------------
# Sequences == loops of steps; T = 1; c0 default; T = 0
# --------------------------------------------------------------------------


def _seq_args(r, n, t, d, h, gates):
    return (r.randn(n, t, d), r.randn(n, h) * 0.5, *_weights(r, d, h, gates))


def _loop(kind, x, h0, Wx, Wh, b, c0=None):
    hs, hh, cc = [], h0, c0
    for s in range(x.shape[1]):
        if kind == "lstm":
            hh, cc = jl.lstm_step(x[:, s], hh, cc, Wx, Wh, b)
        else:
            hh = {"rnn": jl.rnn_step, "gru": jl.gru_step}[kind](x[:, s], hh, Wx, Wh, b)
        hs.append(hh)
    return jnp.stack(hs, 1)


@pytest.mark.parametrize(("kind", "gates"), [("rnn", 1), ("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("t", [1, 5])
def test_sequence_equals_loop_of_steps_values_and_gradients(kind, gates, t, x64):
    r = np.random.RandomState(7)
    x, h0, Wx, Wh, b = (jnp.asarray(a) for a in _seq_args(r, 3, t, 4, 3, gates))
    c0 = jnp.asarray(r.randn(3, 3))
    extra = (c0,) if kind == "lstm" else ()
    seq = getattr(jl, kind)
    args = (x, h0, Wx, Wh, b, *extra)
    ct = jnp.asarray(r.randn(3, t, 3))
    out, vjp = jax.vjp(seq, *args)
    out_l, vjp_l = jax.vjp(lambda *a: _loop(kind, *a), *args)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_l), rtol=1e-12, atol=1e-14)
    for g, gl in zip(vjp(ct), vjp_l(ct), strict=True):
        assert rel_error(g, gl) <= 1e-10


def test_lstm_c0_defaults_to_zeros(x64):
    r = np.random.RandomState(8)
    x, h0, Wx, Wh, b = (jnp.asarray(a) for a in _seq_args(r, 2, 3, 4, 3, 4))
    np.testing.assert_array_equal(np.asarray(jl.lstm(x, h0, Wx, Wh, b)), np.asarray(jl.lstm(x, h0, Wx, Wh, b, 0 * h0)))
    g = jax.grad(lambda w: jnp.sum(jl.lstm(x, h0, w, Wh, b)))(Wx)
    g_ref = jax.grad(lambda w: jnp.sum(lstm_reference(x, h0, w, Wh, b)))(Wx)
    assert rel_error(g, g_ref) <= 1e-10


@pytest.mark.parametrize(("op", "gates"), [(jl.rnn, 1), (jl.lstm, 4), (jl.gru, 3)])
def test_empty_sequence_is_a_clear_error(op, gates):
    Wx, Wh, b = _f32_weights(3, 4, gates)
    x = jnp.zeros((2, 0, 3))
    with pytest.raises(ValueError, match=rf"^{op.__name__}: x holds an empty sequence \(T = 0"):
        op(x, jnp.zeros((2, 4)), Wx, Wh, b)
    with pytest.raises(ValueError, match="empty sequence"):
        jax.jit(op)(x, jnp.zeros((2, 4)), Wx, Wh, b)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: jl.rnn(jnp.zeros((2, 3)), jnp.zeros((2, 4)), *_f32_weights(3, 4, 1)),
            r"rnn: x must be 3-D, got shape \(2, 3\)",
        ),
        (
            lambda: jl.lstm(jnp.zeros((2, 5, 3)), jnp.zeros((3, 4)), *_f32_weights(3, 4, 4)),
            r"lstm: h0 must have one row per example of x: x shape \(2, 5, 3\) has N = 2, h0 shape \(3, 4\)",
        ),
        (
            lambda: jl.gru(jnp.zeros((2, 5, 3)), jnp.zeros((2, 4)), *_f32_weights(3, 4, 4)),
            r"gru: Wx must have shape \(D, 3 \* H = 12\) = \(3, 12\)",
        ),
        (
            lambda: jl.lstm(jnp.zeros((2, 5, 3)), jnp.zeros((2, 4)), *_f32_weights(3, 4, 4), jnp.zeros((2, 5))),
            r"lstm: c0 must have the shape of h0 \(2, 4\), got \(2, 5\)",
        ),
        (
            lambda: jl.rnn_step(jnp.zeros((2, 3)), jnp.zeros((2, 4)), *_f32_weights(3, 4, 1)[:2], jnp.zeros(5)),
            r"rnn_step: b must have shape \(H = 4,\) = \(4,\) for prev_h shape \(2, 4\), got \(5,\)",
        ),
    ],
)
def test_bad_shapes_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------
# Residuals: the hand-written backward keeps less than autodiff of the scan
# --------------------------------------------------------------------------


def test_lstm_residuals_are_gates_and_cells_only():
    r = np.random.RandomState(10)
    n, t, d, h = 3, 7, 5, 4
    args = (*(jnp.asarray(a, jnp.float32) for a in _seq_args(r, n, t, d, h, 4)), jnp.zeros((n, h)))
    _, res = lstm_fwd(*args)
    assert isinstance(res, LSTMResiduals)
    assert res.gates.shape == (n, t, 4 * h) and res.cs.shape == (n, t, h)
    new = [a for a in jax.tree.leaves(res) if not any(a is b for b in args)]
    assert sum(a.size for a in new) == 5 * t * n * h  # gates (4H) and the cell (H), per step


def _saved_numbers(f, args):
    def res(*a):
        return jax.tree.leaves(jax.vjp(f, *a)[1])

    jaxpr = jax.make_jaxpr(res)(*args).jaxpr
    invars = set(jaxpr.invars)
    return sum(int(np.prod(v.aval.shape)) for v in set(jaxpr.outvars) if v not in invars and hasattr(v, "aval"))


@pytest.mark.parametrize(
    ("op", "ref", "gates"), [(jl.lstm, lstm_reference, 4), (jl.gru, gru_reference, 3), (jl.rnn, rnn_reference, 1)]
)
def test_saved_residuals_vs_autodiff_of_the_scan(op, ref, gates):
    r = np.random.RandomState(11)
    args = tuple(jnp.asarray(a, jnp.float32) for a in _seq_args(r, 4, 20, 8, 8, gates))
    ours, autodiff = _saved_numbers(op, args), _saved_numbers(ref, args)
    assert ours <= autodiff
    if op is not jl.rnn:  # the LSTM and GRU keep at most half of what autodiff keeps
        assert ours <= 0.5 * autodiff, (ours, autodiff)


# --------------------------------------------------------------------------
# Half precision: float32 accumulation of the weight gradients over time
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "ref", "gates"), [(jl.lstm, lstm_reference, 4), (jl.gru, gru_reference, 3), (jl.rnn, rnn_reference, 1)]
)
def test_bfloat16_weight_gradients_accumulate_in_float32_over_time(op, ref, gates):
    """T = 256 steps summed into dWx, dWh, db: a bfloat16 accumulator (8 bits of mantissa) would be off
    by far more than one rounding of the float32 sum."""
    r = np.random.RandomState(12)
    n, t, d, h = 4, 256, 8, 8
    args32 = tuple(jnp.asarray(a, jnp.float32) for a in _seq_args(r, n, t, d, h, gates))
    args16 = tuple(a.astype(jnp.bfloat16) for a in args32)
    up = tuple(a.astype(jnp.float32) for a in args16)
    ct = jnp.asarray(np.abs(r.randn(n, t, h)) + 0.5, jnp.bfloat16)  # same-sign terms: the sums grow
    out, vjp = jax.vjp(op, *args16)
    assert out.dtype == jnp.bfloat16
    grads = vjp(ct)
    grads_ref = jax.vjp(ref, *up)[1](ct.astype(jnp.float32))
    eps = float(jnp.finfo(jnp.bfloat16).eps)
    for g, g_ref, name in zip(grads, grads_ref, ("dx", "dh0", "dWx", "dWh", "db"), strict=True):
        assert g.dtype == jnp.bfloat16
        g64, r64 = np.asarray(g, np.float64), np.asarray(g_ref, np.float64)
        err = np.abs(g64 - r64)
        assert np.all(err <= eps * np.abs(r64) + 1e-4 * np.max(np.abs(r64))), (name, float(err.max()))


# --------------------------------------------------------------------------
# Saturation: huge inputs give finite values and gradients
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "ref", "gates"), [(jl.lstm, lstm_reference, 4), (jl.gru, gru_reference, 3), (jl.rnn, rnn_reference, 1)]
)
@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_exploding_inputs_saturate_without_nan(op, ref, gates, scale):
    r = np.random.RandomState(13)
    x, h0, Wx, Wh, b = (jnp.asarray(a, jnp.float32) for a in _seq_args(r, 3, 6, 4, 3, gates))
    x = x * scale
    out, vjp = jax.vjp(op, x, h0, Wx, Wh, b)
    assert np.all(np.isfinite(np.asarray(out))) and np.all(np.abs(np.asarray(out)) <= 1.0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref(x, h0, Wx, Wh, b)), rtol=1e-5, atol=1e-6)
    grads = vjp(jnp.ones_like(out))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


def test_lstm_step_exploding_inputs_and_long_sequence_gradient_stays_finite():
    r = np.random.RandomState(14)
    x = jnp.asarray(r.randn(2, 3) * 1e20, jnp.float32)
    Wx, Wh, b = _f32_weights(3, 4, 4)
    h, c = jl.lstm_step(x, jnp.zeros((2, 4)), jnp.zeros((2, 4)), Wx, Wh, b)
    assert np.all(np.isfinite(np.asarray(h))) and np.all(np.isfinite(np.asarray(c)))
    grads = jax.grad(lambda *a: jnp.sum(jl.lstm_step(*a)[0]), argnums=(0, 1, 2, 3, 4, 5))(
        x, jnp.zeros((2, 4)), jnp.zeros((2, 4)), Wx, Wh, b
    )
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


# --------------------------------------------------------------------------
# Transformations beyond the registry's samples
# --------------------------------------------------------------------------


def test_lstm_under_jit_grad_vmap_and_checkpoint_agree(x64):
    r = np.random.RandomState(15)
    args = tuple(jnp.asarray(a) for a in _seq_args(r, 2, 5, 3, 4, 4))

    def loss(f, *a):
        return jnp.sum(jnp.sin(f(*a)))

    g = jax.jit(jax.grad(lambda *a: loss(jl.lstm, *a), argnums=(0, 1, 2, 3, 4)))(*args)
    g_ckpt = jax.grad(lambda *a: loss(jax.checkpoint(jl.lstm), *a), argnums=(0, 1, 2, 3, 4))(*args)
    g_ref = jax.grad(lambda *a: loss(lstm_reference, *a), argnums=(0, 1, 2, 3, 4))(*args)
    for a, b_, c in zip(g, g_ckpt, g_ref, strict=True):
        assert rel_error(a, c) <= 1e-10 and rel_error(b_, c) <= 1e-10
    # per-example gradients of the weights, vmapped over a batch of sequences
    xs = jnp.stack([args[0], 2 * args[0]])
    gv = jax.vmap(lambda x: jax.grad(lambda w: loss(jl.lstm, x, args[1], w, *args[3:]))(args[2]))(xs)
    gl = [jax.grad(lambda w, x=x: loss(lstm_reference, x, args[1], w, *args[3:]))(args[2]) for x in xs]
    np.testing.assert_allclose(np.asarray(gv), np.asarray(jnp.stack(gl)), rtol=1e-10, atol=1e-12)


def test_second_order_is_not_supported_clearly():
    """custom_vjp ops are reverse-mode only; forward mode (jvp) raises, as for every jaxlayers op."""
    Wx, Wh, b = _f32_weights(3, 4, 1)
    with pytest.raises(TypeError):
        jax.jvp(lambda x: jl.rnn(x, jnp.zeros((1, 4)), Wx, Wh, b), (jnp.ones((1, 2, 3)),), (jnp.ones((1, 2, 3)),))


def test_registry_and_gradcheck_cover_the_recurrent_ops():
    names = {info.name for info in jl.opinfo.OPS}
    assert {"rnn_step", "rnn", "lstm_step", "lstm", "gru_step", "gru"} <= names
    assert {info.name for info in jl.gradcheck.select_ops(["lstm", "gru"])} == {"lstm", "gru"}
