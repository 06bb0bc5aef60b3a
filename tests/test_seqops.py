"""Sequence ops (issue 18): word_embedding, temporal_affine, temporal_softmax_loss.

The generic registry suite (tests/test_ops.py, tests/test_hostile.py) checks them against
``jax.grad`` of their references and float64 finite differences; here: the behaviours each
documents, and ``jaxlayers.compat`` against a NumPy transcription of the course (1e-9, float64).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seed_numpy_seq as course

import jaxlayers as jl
from jaxlayers import compat

# --------------------------------------------------------------------------
# compat vs the course, float64
# --------------------------------------------------------------------------


def test_word_embedding_compat_matches_course(x64):
    r = np.random.RandomState(0)
    x = r.randint(0, 5, size=(4, 7))  # many repeated words: the scatter-add sums them
    W = r.randn(5, 3)
    out, cache = compat.word_embedding_forward(x, W)
    ref, ref_cache = course.word_embedding_forward(x, W)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
    dout = r.randn(*out.shape)
    dW = compat.word_embedding_backward(dout, cache)
    assert dW.shape == W.shape
    np.testing.assert_allclose(dW, course.word_embedding_backward(dout, ref_cache), rtol=1e-9, atol=1e-12)


def test_temporal_affine_compat_matches_course(x64):
    r = np.random.RandomState(1)
    x, w, b = r.randn(3, 4, 5), r.randn(5, 6), r.randn(6)
    out, cache = compat.temporal_affine_forward(x, w, b)
    ref, ref_cache = course.temporal_affine_forward(x, w, b)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
    dout = r.randn(*out.shape)
    for got, want in zip(
        compat.temporal_affine_backward(dout, cache), course.temporal_affine_backward(dout, ref_cache), strict=True
    ):
        assert got.shape == want.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("n", "t", "v", "p"),
    [(100, 1, 10, 1.0), (100, 10, 10, 1.0), (5000, 10, 10, 0.1), (3, 7, 4, 0.5)],  # the course's notebook checks
)
def test_temporal_softmax_loss_compat_matches_course(n, t, v, p, x64):
    r = np.random.RandomState(2)
    x = 0.001 * r.randn(n, t, v) if n >= 100 else r.randn(n, t, v)
    y = r.randint(v, size=(n, t))
    mask = r.rand(n, t) <= p
    loss, dx = compat.temporal_softmax_loss(x, y, mask)
    ref_loss, ref_dx = course.temporal_softmax_loss(x, y, mask)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-9)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-9, atol=1e-15)
    if n >= 100 and p == 1.0:  # the notebook's sanity checks: about t * log(v)
        assert abs(loss - t * math.log(v)) < 0.01 * t


def test_temporal_softmax_loss_compat_verbose_and_integer_mask(capsys, x64):
    r = np.random.RandomState(3)
    x, y = r.randn(2, 3, 4), r.randint(4, size=(2, 3))
    mask = np.array([[1, 0, 1], [0, 1, 1]])
    loss, dx = compat.temporal_softmax_loss(x, y, mask, verbose=True)
    assert capsys.readouterr().out.strip() == "dx_flat:  (6, 4)"
    ref_loss, ref_dx = course.temporal_softmax_loss(x, y, mask)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-9)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-9, atol=1e-15)


def test_compat_embedding_refuses_out_of_range_index():
    with pytest.raises(ValueError, match=r"^word_embedding: x holds indices in \[0, 5\] but W has 5 rows"):
        compat.word_embedding_forward(np.array([[0, 5]]), np.ones((5, 2), np.float32))


# --------------------------------------------------------------------------
# word_embedding
# --------------------------------------------------------------------------


def test_word_embedding_out_of_range_eager_error_and_nan_under_jit():
    W = jnp.arange(6.0).reshape(3, 2)
    x = jnp.array([[0, 3, -1, 2]])
    with pytest.raises(ValueError, match=r"x holds indices in \[-1, 3\] but W has 3 rows \(shape \(3, 2\)\)"):
        jl.word_embedding(x, W)
    out = jax.jit(jl.word_embedding)(x, W)
    np.testing.assert_array_equal(np.asarray(out[0, 0]), [0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(out[0, 3]), [4.0, 5.0])
    assert np.isnan(np.asarray(out[0, 1:3])).all()  # never a silently valid (clamped or wrapped) row
    # out-of-range steps send no gradient; the cotangent there is ignored
    g = jnp.ones((1, 4, 2))
    (dW,) = jax.vjp(jax.jit(jl.word_embedding), x, W)[1](g)[1:]
    np.testing.assert_array_equal(np.asarray(dW), [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])


def test_word_embedding_no_gradient_to_indices_and_argument_errors():
    W = jnp.ones((4, 3))
    x = jnp.array([[1, 2]])
    with pytest.raises(TypeError, match="integer"):
        jax.grad(lambda x: jnp.sum(jl.word_embedding(x, W)))(x)
    with pytest.raises(TypeError, match=r"^word_embedding: x must have an integer dtype .*float32 \(shape \(1, 2\)\)"):
        jl.word_embedding(x.astype(jnp.float32), W)
    with pytest.raises(ValueError, match=r"^word_embedding: x must be 2-D, got shape \(2,\)"):
        jl.word_embedding(jnp.array([1, 2]), W)
    with pytest.raises(TypeError, match=r"^word_embedding: W must have a floating dtype"):
        jl.word_embedding(x, jnp.ones((4, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"^word_embedding: W must hold at least one row"):
        jl.word_embedding(jnp.zeros((1, 0), jnp.int32), jnp.ones((0, 3)))


def test_word_embedding_half_precision_scatter_accumulates_in_float32():
    """4096 repeats of one word: a bfloat16 accumulator stops growing at 256 (adding 1 to 256 rounds back)."""
    W = jnp.zeros((3, 2), jnp.bfloat16)
    x = jnp.zeros((64, 64), jnp.int32)
    (dW,) = jax.vjp(lambda W: jl.word_embedding(x, W), W)[1](jnp.ones((64, 64, 2), jnp.bfloat16))
    assert dW.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(dW, np.float32), [[4096.0, 4096.0], [0, 0], [0, 0]])


def test_word_embedding_empty_time_axis():
    out = jl.word_embedding(jnp.zeros((3, 0), jnp.int32), jnp.ones((4, 2)))
    assert out.shape == (3, 0, 2)


# --------------------------------------------------------------------------
# temporal_affine
# --------------------------------------------------------------------------


def test_temporal_affine_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"^temporal_affine: x must be 3-D, got shape \(2, 3\)"):
        jl.temporal_affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.zeros(4))
    with pytest.raises(
        ValueError, match=r"w has 5 rows but x has D = 3 features \(x shape \(2, 4, 3\), w shape \(5, 4\)"
    ):
        jl.temporal_affine(jnp.ones((2, 4, 3)), jnp.ones((5, 4)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"b must have shape \(4,\)"):
        jl.temporal_affine(jnp.ones((2, 4, 3)), jnp.ones((3, 4)), jnp.zeros(3))


def test_temporal_affine_equals_affine_per_step(x64):
    r = np.random.RandomState(4)
    x, w, b = jnp.asarray(r.randn(3, 5, 4)), jnp.asarray(r.randn(4, 2)), jnp.asarray(r.randn(2))
    out = jl.temporal_affine(x, w, b)
    for t in range(5):
        np.testing.assert_allclose(np.asarray(out[:, t]), np.asarray(jl.affine(x[:, t], w, b)), rtol=1e-13)


def test_temporal_affine_empty_time_axis_gradients():
    x, w, b = jnp.zeros((2, 0, 3)), jnp.ones((3, 4)), jnp.zeros(4)
    assert jl.temporal_affine(x, w, b).shape == (2, 0, 4)
    dx, dw, db = jax.grad(lambda *a: jnp.sum(jl.temporal_affine(*a)), argnums=(0, 1, 2))(x, w, b)
    assert dx.shape == (2, 0, 3)
    np.testing.assert_array_equal(np.asarray(dw), 0.0)
    np.testing.assert_array_equal(np.asarray(db), 0.0)


# --------------------------------------------------------------------------
# temporal_softmax_loss
# --------------------------------------------------------------------------


def test_temporal_softmax_loss_is_summed_over_time_and_divided_by_n():
    x = jnp.zeros((2, 3, 4))
    y = jnp.zeros((2, 3), jnp.int32)
    mask = jnp.array([[True, True, True], [True, False, False]])
    # 4 counted steps of log(4) each, divided by N = 2 (the per-token mean would be log(4))
    np.testing.assert_allclose(float(jl.temporal_softmax_loss(x, y, mask)), 4 * math.log(4) / 2, rtol=1e-6)


def test_temporal_softmax_loss_all_false_mask_is_zero_with_zero_gradient():
    r = np.random.RandomState(5)
    x = jnp.asarray(r.randn(3, 4, 5), jnp.float32).at[0, 0, 0].set(-jnp.inf)
    y = jnp.asarray(r.randint(5, size=(3, 4)))
    mask = jnp.zeros((3, 4), bool)
    loss, g = jax.value_and_grad(jl.temporal_softmax_loss)(x, y, mask)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_temporal_softmax_loss_masked_labels_are_ignored_and_unmasked_ones_checked():
    x = jnp.zeros((1, 3, 4))
    mask = jnp.array([[True, False, True]])
    padded = jnp.array([[1, -1, 2]])
    np.testing.assert_allclose(float(jl.temporal_softmax_loss(x, padded, mask)), 2 * math.log(4), rtol=1e-6)
    bad = jnp.array([[1, 0, 4]])
    with pytest.raises(ValueError, match=r"^temporal_softmax_loss: y \(at unmasked steps\) holds labels in \[1, 4\]"):
        jl.temporal_softmax_loss(x, bad, mask)
    assert np.isnan(float(jax.jit(jl.temporal_softmax_loss)(x, bad, mask)))


def test_temporal_softmax_loss_shapes_dtypes_and_empty_batch():
    x = jnp.zeros((2, 3, 4))
    y = jnp.zeros((2, 3), jnp.int32)
    mask = jnp.ones((2, 3), bool)
    with pytest.raises(TypeError, match=r"^temporal_softmax_loss: mask must have dtype bool .*got int32"):
        jl.temporal_softmax_loss(x, y, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"^temporal_softmax_loss: mask must have shape \(2, 3\)"):
        jl.temporal_softmax_loss(x, y, jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"^temporal_softmax_loss: y must have shape \(2, 3\)"):
        jl.temporal_softmax_loss(x, jnp.zeros((2,), jnp.int32), mask)
    with pytest.raises(TypeError, match=r"^temporal_softmax_loss: y must have an integer dtype"):
        jl.temporal_softmax_loss(x, y.astype(jnp.float32), mask)
    with pytest.raises(ValueError, match=r"^temporal_softmax_loss: x must be 3-D"):
        jl.temporal_softmax_loss(x[0], y, mask)
    with pytest.raises(ValueError, match=r"empty batch is undefined: x has shape \(0, 3, 4\)"):
        jl.temporal_softmax_loss(x[:0], y[:0], mask[:0])
    # T = 0: a sum over no steps
    assert (
        float(jl.temporal_softmax_loss(jnp.zeros((2, 0, 4)), jnp.zeros((2, 0), jnp.int32), jnp.ones((2, 0), bool)))
        == 0.0
    )


def test_temporal_softmax_loss_huge_logits_are_finite(x64):
    x = jnp.array([[[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]]])
    y = jnp.array([[1, 0]])
    mask = jnp.ones((1, 2), bool)
    loss, g = jax.value_and_grad(jl.temporal_softmax_loss)(x, y, mask)
    np.testing.assert_allclose(float(loss), 2e4 + 1e4 + math.log(2), rtol=1e-12)
    assert np.isfinite(np.asarray(g)).all()
