"""compat.CaptioningRNN, used as the course's captioning notebooks use it.

The cells are transcriptions of the course's RNN and LSTM captioning notebooks: the fixed-parameter
loss checks (whose expected losses the notebooks print), the numeric gradient check with the
course's ``eval_numerical_gradient`` (which changes ``model.params[name]`` in place), and the
overfitting of a small training set with ``CaptioningSolver``, here on the digits captioning set.
The loss and every gradient are also compared, in float64, with a NumPy transcription of the
course's ``rnn.py`` on a NumPy transcription of its ``rnn_layers.py``.
"""

# The course draws its weights, data and minibatches from NumPy's legacy global generator
# (np.random.seed / randn), and so do these transcriptions of its cells.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import seed_numpy as seed
import seed_numpy_seq as seed_seq
from _helpers import eval_numerical_gradient

import jaxlayers as jl
from jaxlayers import compat
from jaxlayers.compat import CaptioningRNN, CaptioningSolver

TOL = 1e-9


def rel_error(x, y):
    """returns relative error (the course's)"""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def norm_error(x, y):
    """max |x - y| over max |y|: the relative error of the whole array, not of each (possibly tiny) entry"""
    return np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300)


# --- a NumPy transcription of the course's rnn_layers.py (rnn, lstm) and rnn.py (CaptioningRNN.loss) ---


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_rnn_forward(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    h, caches, prev_h = np.zeros((N, T, h0.shape[1])), [], h0
    for t in range(T):
        next_h = np.tanh(x[:, t].dot(Wx) + prev_h.dot(Wh) + b)
        caches.append((x[:, t], prev_h, next_h))
        h[:, t], prev_h = next_h, next_h
    return h, (caches, Wx, Wh)


def np_rnn_backward(dh, cache):
    caches, Wx, Wh = cache
    N, T, _ = dh.shape
    dx = np.zeros((N, T, Wx.shape[0]))
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1])
    dprev_h = np.zeros((N, Wh.shape[0]))
    for t in reversed(range(T)):
        x_t, prev_h, next_h = caches[t]
        da = (dh[:, t] + dprev_h) * (1 - next_h**2)
        dx[:, t] = da.dot(Wx.T)
        dprev_h = da.dot(Wh.T)
        dWx += x_t.T.dot(da)
        dWh += prev_h.T.dot(da)
        db += da.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db


def np_lstm_forward(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    H = h0.shape[1]
    h, caches, prev_h, prev_c = np.zeros((N, T, H)), [], h0, np.zeros_like(h0)
    for t in range(T):
        a = x[:, t].dot(Wx) + prev_h.dot(Wh) + b
        i, f, o, g = (
            np_sigmoid(a[:, :H]),
            np_sigmoid(a[:, H : 2 * H]),
            np_sigmoid(a[:, 2 * H : 3 * H]),
            np.tanh(a[:, 3 * H :]),
        )
        next_c = f * prev_c + i * g
        next_h = o * np.tanh(next_c)
        caches.append((x[:, t], prev_h, prev_c, i, f, o, g, next_c))
        h[:, t], prev_h, prev_c = next_h, next_h, next_c
    return h, (caches, Wx, Wh)


def np_lstm_backward(dh, cache):
    caches, Wx, Wh = cache
    N, T, _ = dh.shape
    H = Wh.shape[0]
    dx = np.zeros((N, T, Wx.shape[0]))
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(4 * H)
    dprev_h, dprev_c = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        x_t, prev_h, prev_c, i, f, o, g, next_c = caches[t]
        dnext_h = dh[:, t] + dprev_h
        tc = np.tanh(next_c)
        dnext_c = dprev_c + dnext_h * o * (1 - tc**2)
        di, df, do, dg = dnext_c * g, dnext_c * prev_c, dnext_h * tc, dnext_c * i
        da = np.hstack((di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)))
        dx[:, t] = da.dot(Wx.T)
        dprev_h = da.dot(Wh.T)
        dprev_c = dnext_c * f
        dWx += x_t.T.dot(da)
        dWh += prev_h.T.dot(da)
        db += da.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db


def np_captioning_loss(model, features, captions):
    """The course's CaptioningRNN.loss, line for line, on the NumPy layers."""
    p = model.params
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    mask = captions_out != model._null
    h0, cache_proj = seed.affine_forward(features, p["W_proj"], p["b_proj"])
    x, cache_embed = seed_seq.word_embedding_forward(captions_in, p["W_embed"])
    fwd, bwd = (np_rnn_forward, np_rnn_backward) if model.cell_type == "rnn" else (np_lstm_forward, np_lstm_backward)
    h, cache_rnn = fwd(x, h0, p["Wx"], p["Wh"], p["b"])
    scores, cache_vocab = seed_seq.temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])
    loss, dscores = seed_seq.temporal_softmax_loss(scores, captions_out, mask)
    grads = {}
    dh, grads["W_vocab"], grads["b_vocab"] = seed_seq.temporal_affine_backward(dscores, cache_vocab)
    dx, dh0, grads["Wx"], grads["Wh"], grads["b"] = bwd(dh, cache_rnn)
    grads["W_embed"] = seed_seq.word_embedding_backward(dx, cache_embed)
    _, grads["W_proj"], grads["b_proj"] = seed.affine_backward(dh0, cache_proj)
    return loss, grads


# --- the notebooks' cells ---


@pytest.mark.parametrize(
    ("cell_type", "feature_range", "expected_loss"),
    # the RNN notebook's features are linspace(-1.5, 0.3), the LSTM notebook's linspace(-0.5, 1.7)
    [("rnn", (-1.5, 0.3), 9.83235591003), ("lstm", (-0.5, 1.7), 9.82445935443)],
)
def test_captioning_loss_matches_the_notebooks(cell_type, feature_range, expected_loss, x64):
    N, D, W, H = 10, 20, 30, 40
    word_to_idx = {"<NULL>": 0, "cat": 2, "dog": 3}
    V = len(word_to_idx)
    T = 13

    model = CaptioningRNN(word_to_idx, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell_type, dtype=np.float64)
    # Set all model parameters to fixed values
    for k, v in model.params.items():
        model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)

    features = np.linspace(*feature_range, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)

    loss, grads = model.loss(features, captions)
    assert abs(loss - expected_loss) < 1e-10  # the notebooks ask for a difference below 1e-10

    np_loss, np_grads = np_captioning_loss(model, features, captions)
    assert abs(loss - np_loss) < TOL
    assert sorted(grads) == sorted(model.params)
    for name, g in grads.items():
        assert g.shape == model.params[name].shape and g.dtype == np.float64
        assert norm_error(g, np_grads[name]) < TOL, name


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_captioning_gradient_check(cell_type, x64):
    np.random.seed(231)
    batch_size = 2
    timesteps = 3
    input_dim = 4
    wordvec_dim = 5
    hidden_dim = 6
    word_to_idx = {"<NULL>": 0, "cat": 2, "dog": 3}
    vocab_size = len(word_to_idx)

    captions = np.random.randint(vocab_size, size=(batch_size, timesteps))
    features = np.random.randn(batch_size, input_dim)

    model = CaptioningRNN(
        word_to_idx,
        input_dim=input_dim,
        wordvec_dim=wordvec_dim,
        hidden_dim=hidden_dim,
        cell_type=cell_type,
        dtype=np.float64,
    )
    loss, grads = model.loss(features, captions)

    errors, norm_errors = {}, {}
    for param_name in sorted(grads):

        def f(_):
            return model.loss(features, captions)[0]

        param_grad_num = eval_numerical_gradient(f, model.params[param_name], verbose=False, h=1e-6)
        errors[param_name] = rel_error(param_grad_num, grads[param_name])
        norm_errors[param_name] = norm_error(param_grad_num, grads[param_name])
    # The course's per-entry relative error is dominated by the finite differences' rounding on the
    # smallest entries: the RNN notebook prints 1e-11..1e-6 (Wx's worst entry is 5e-5); for the LSTM,
    # Wx's worst entry is 1.2e-7, where the NumPy original's own check gives ~1e-3. Relative to each
    # array's largest entry the analytic and numeric gradients agree to 1e-6 or better.
    assert max(errors.values()) < {"rnn": 1e-5, "lstm": 1e-3}[cell_type], errors
    assert max(norm_errors.values()) < 1e-6, norm_errors
    if cell_type == "rnn":  # the RNN notebook's printed errors, the same to 3 digits
        assert errors["W_embed"] == pytest.approx(2.331071e-09, rel=1e-3)
        assert errors["W_proj"] == pytest.approx(9.974425e-09, rel=1e-3)
        assert errors["b_vocab"] == pytest.approx(6.918525e-11, rel=1e-2)

    np_loss, np_grads = np_captioning_loss(model, features, captions)
    assert abs(loss - np_loss) < TOL
    for name in grads:
        assert norm_error(grads[name], np_grads[name]) < TOL, name


def test_init_is_the_courses_draws_in_its_order():
    word_to_idx = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "b": 4}
    D, W, H = 7, 5, 3
    np.random.seed(0)
    model = CaptioningRNN(word_to_idx, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type="lstm")
    np.random.seed(0)
    V = len(word_to_idx)
    expected = {
        "W_embed": np.random.randn(V, W) / 100,
        "W_proj": np.random.randn(D, H) / np.sqrt(D),
        "b_proj": np.zeros(H),
        "Wx": np.random.randn(W, 4 * H) / np.sqrt(W),
        "Wh": np.random.randn(H, 4 * H) / np.sqrt(H),
        "b": np.zeros(4 * H),
        "W_vocab": np.random.randn(H, V) / np.sqrt(H),
        "b_vocab": np.zeros(V),
    }
    assert list(model.params) == list(expected)
    for k, v in expected.items():
        got = model.params[k]
        assert got.dtype == np.float32 and got.flags.writeable
        np.testing.assert_array_equal(got, v.astype(np.float32))
    rnn = CaptioningRNN(word_to_idx, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type="rnn")
    assert rnn.params["Wx"].shape == (W, H) and rnn.params["b"].shape == (H,)
    assert rnn.idx_to_word[3] == "a"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match='Invalid cell_type "gru"'):
        CaptioningRNN({"<NULL>": 0}, cell_type="gru")
    with pytest.raises(ValueError, match="'<NULL>'"):
        CaptioningRNN({"cat": 0})
    model = CaptioningRNN({"<NULL>": 0, "cat": 1}, input_dim=4, wordvec_dim=3, hidden_dim=2)
    with pytest.raises(ValueError, match=r"captions must be \(N, T\) with T >= 2, got shape \(3,\)"):
        model.loss(np.zeros((3, 4)), np.zeros(3, int))
    with pytest.raises(ValueError, match="no '<START>'"):
        model.sample(np.zeros((3, 4)))


def test_sample_is_greedy_from_start(x64):
    """sample: word t is the argmax of the scores after feeding word t-1 (<START> first), as the course."""
    word_to_idx = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "b": 4}
    np.random.seed(1)
    for cell_type in ("rnn", "lstm"):
        model = CaptioningRNN(
            word_to_idx, input_dim=6, wordvec_dim=4, hidden_dim=5, cell_type=cell_type, dtype=np.float64
        )
        for k in model.params:
            model.params[k] = np.random.randn(*model.params[k].shape)
        features = np.random.randn(3, 6)
        out = model.sample(features, max_length=7)
        assert out.shape == (3, 7) and out.dtype == np.int32
        # the course's loss scores each step's next word; the greedy caption is its own argmax
        fwd = np_rnn_forward if cell_type == "rnn" else np_lstm_forward
        p = model.params
        h0 = features @ p["W_proj"] + p["b_proj"]
        inputs = np.concatenate([np.full((3, 1), 1), out[:, :-1]], axis=1)
        h, _ = fwd(p["W_embed"][inputs], h0, p["Wx"], p["Wh"], p["b"])
        np.testing.assert_array_equal(out, np.argmax(h @ p["W_vocab"] + p["b_vocab"], axis=-1))


def test_overfit_digit_captions_with_the_captioning_solver():
    """The notebooks' "overfit a small set" cell on 50 digit captions: LSTM, adam; loss < 0.5 and every
    training caption sampled exactly."""
    data = jl.data.load_digit_captions(num_train=50, num_val=10, num_test=10)
    np.random.seed(231)
    model = CaptioningRNN(
        cell_type="lstm",
        word_to_idx=data["word_to_idx"],
        input_dim=data["train_features"].shape[1],
        hidden_dim=128,
        wordvec_dim=64,
        dtype=np.float32,
    )
    solver = CaptioningSolver(
        model,
        data,
        update_rule="adam",
        num_epochs=50,
        batch_size=25,
        optim_config={"learning_rate": 5e-3},
        lr_decay=0.995,
        verbose=False,
    )
    solver.train()
    assert len(solver.loss_history) == 100
    assert solver.loss_history[-1] < 0.5
    assert all(np.asarray(v).dtype == np.float32 for v in model.params.values())

    T = data["train_captions"].shape[1]
    sampled = model.sample(data["train_features"], max_length=T - 1)
    predicted = jl.data.decode_captions(sampled, data["idx_to_word"])
    truth = jl.data.decode_captions(data["train_captions"][:, 1:], data["idx_to_word"])
    assert predicted == truth
    assert compat.CaptioningRNN is CaptioningRNN
