"""Hostile input (issue 12): half precision, label dtypes, empty batches,
array-likes, keys, static hyper-parameters and forward mode.

The generic checks iterate over ``jaxlayers.opinfo.OPS``, so ops added later
are covered by declaring them there (``OpInfo.empty_batch`` / ``n_argnums``
for the N = 0 behaviour).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import cotangent_like, is_key, jit_call, op_sample_params, vjp_of

import jaxlayers as jl
from jaxlayers.losses import softmax_loss_reference, svm_loss_reference
from jaxlayers.opinfo import OPS, Sample

PARAMS = op_sample_params()
FIRST = [pytest.param(info, id=info.name) for info in OPS]
HALF = [pytest.param(jnp.bfloat16, id="bfloat16"), pytest.param(jnp.float16, id="float16")]


def _is_float(a) -> bool:
    return hasattr(a, "dtype") and not is_key(a) and jnp.issubdtype(a.dtype, jnp.floating)


def _upcast(args, dtype=jnp.float32):
    """Every floating leaf of ``args`` (states included) cast to ``dtype``; keys and labels kept."""
    return jax.tree.map(lambda a: a.astype(dtype) if _is_float(a) else a, args)


def _f64(a) -> np.ndarray:
    return np.asarray(jnp.asarray(a, jnp.float32), np.float64)


# --------------------------------------------------------------------------
# 1. Half precision: backward arithmetic in float32, one rounding at the end
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("info", "i"), PARAMS)
def test_half_precision_matches_float32_reference(info, i, dtype):
    """The op on bfloat16/float16 input == the float32 reference on the same
    (upcast) values, rounded once: forward and gradient within one unit in the
    last place of the half dtype (plus float32 summation noise)."""
    s = info.samples(dtype)[i]
    s32 = Sample(s.name, _upcast(s.args), s.kwargs, s.smooth)
    out = info.bind(s)(*info.diff_args(s))
    ref = info.output(jit_call(info.reference, s32))  # one compiled program, not one per primitive
    eps = float(jnp.finfo(dtype).eps)
    r = _f64(ref)
    assert np.all(np.abs(_f64(out) - r) <= eps * np.abs(r) + 1e-5 * np.max(np.abs(r), initial=0.0))

    ct = cotangent_like(out)
    grads = vjp_of(info, s, ct)
    grads_ref = vjp_of(info, s32, ct.astype(jnp.promote_types(ct.dtype, jnp.float32)), reference=True, jit=True)
    for g, g_ref, primal in zip(grads, grads_ref, info.diff_args(s), strict=True):
        assert g.dtype == primal.dtype
        r = _f64(g_ref)
        err = np.abs(_f64(g) - r)
        assert np.all(err <= eps * np.abs(r) + 1e-5 * np.max(np.abs(r), initial=0.0)), float(np.max(err))


def test_bfloat16_softmax_keeps_the_target_gradient():
    """Probabilities rounded to bfloat16 turn p = 0.99933 into 1 and its gradient into 0."""
    s = jnp.array([[8.0, 0.0, 0.0]], jnp.bfloat16)
    y = jnp.array([0])
    g = jax.grad(jl.softmax_loss)(s, y)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(_f64(g), [[-6.705e-4, 3.352e-4, 3.352e-4]], rtol=2**-8)
    np.testing.assert_array_equal(_f64(g), _f64(jax.grad(softmax_loss_reference)(s, y)))


@pytest.mark.parametrize("loss", [jl.svm_loss, jl.softmax_loss])
def test_float16_mean_factor_not_rounded_to_the_input_dtype(loss):
    """N = 10^6: float16's 1/N is subnormal (17 units of 6e-8, 1.3% off). With
    a loss scale of 1e4 the gradient (5e-3) is a normal float16 and must be
    right to float16 rounding."""
    n = 1_000_000
    s = jnp.zeros((n, 2), jnp.float16)
    y = jnp.zeros(n, jnp.int32)
    out, vjp = jax.vjp(lambda s: loss(s, y), s)
    (g,) = vjp(jnp.asarray(1e4, out.dtype))
    assert g.dtype == jnp.float16
    expected = 1e4 / n * (1.0 if loss is jl.svm_loss else 0.5)  # svm: margin 1 > 0, softmax: p = 1/2
    np.testing.assert_allclose(_f64(g[:3]), [[-expected, expected]] * 3, rtol=2**-11)


def test_half_precision_affine_accumulates_in_float32():
    """4096 products summed: a float16 accumulator would round every partial sum."""
    r = np.random.RandomState(0)
    x = jnp.asarray(r.rand(4096, 3), jnp.float16)
    w = jnp.asarray(r.rand(3, 2), jnp.float16)
    b = jnp.asarray(r.rand(2), jnp.float16)
    g = jnp.asarray(r.rand(4096, 2), jnp.float16)
    dx, dw, db = jax.vjp(jl.affine, x, w, b)[1](g)
    x64, g64 = _f64(x), _f64(g)
    np.testing.assert_allclose(_f64(dw), x64.T @ g64, rtol=2**-11)
    np.testing.assert_allclose(_f64(db), g64.sum(0), rtol=2**-11)
    np.testing.assert_allclose(_f64(dx), g64 @ _f64(w).T, rtol=2**-10)


# --------------------------------------------------------------------------
# 2. Label dtypes: widened before they meet class indices
# --------------------------------------------------------------------------

_LOG_256_E = math.log(256 + math.e)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int8, jnp.int16, jnp.uint16, jnp.uint32, jnp.int32])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_small_integer_labels_index_257_classes(dtype, jit):
    s = jnp.zeros((1, 257)).at[0, 256].set(1.0)
    y = jnp.array([0], dtype)
    wrap = jax.jit if jit else (lambda f: f)
    np.testing.assert_allclose(float(wrap(jl.softmax_loss)(s, y)), _LOG_256_E, rtol=1e-6)
    np.testing.assert_allclose(float(wrap(jl.svm_loss)(s, y)), 257.0, rtol=1e-6)
    for loss in (jl.softmax_loss, jl.svm_loss):
        np.testing.assert_array_equal(
            np.asarray(wrap(jax.grad(loss))(s, y)), np.asarray(jax.grad(loss)(s, y.astype(jnp.int32)))
        )


@pytest.mark.parametrize("dtype", [jnp.uint16, jnp.int16, jnp.uint32])
def test_label_256_reaches_class_256(dtype):
    s = jnp.zeros((1, 257)).at[0, 256].set(1.0)
    y = jnp.array([256], dtype)
    np.testing.assert_allclose(float(jl.softmax_loss(s, y)), _LOG_256_E - 1.0, rtol=1e-6)
    assert float(jl.svm_loss(s, y)) == 0.0  # every margin is exactly 0: none counts


def test_int64_labels_with_x64(x64):
    s = jnp.zeros((1, 257)).at[0, 256].set(1.0)
    y = jnp.array([0], jnp.int64)
    np.testing.assert_allclose(float(jl.softmax_loss(s, y)), _LOG_256_E, rtol=1e-12)
    assert float(jl.svm_loss(s, y)) == 257.0
    # 2**32 must not wrap to class 0 under jit (no eager range check there): NaN
    bad = jnp.array([2**32], jnp.int64)
    assert np.isnan(float(jax.jit(jl.softmax_loss)(s, bad)))
    assert np.isnan(float(jax.jit(jl.svm_loss)(s, bad)))
    with pytest.raises(ValueError, match=r"softmax_loss: y holds labels in \[4294967296, 4294967296\]"):
        jl.softmax_loss(s, bad)


@pytest.mark.parametrize("loss", [jl.svm_loss, jl.softmax_loss])
def test_huge_uint32_labels_give_nan_under_jit(loss):
    """uint32 labels >= 2**31 wrap to negative int32: out of range, so NaN, never a valid class."""
    s = jnp.zeros((2, 5))
    y = jnp.array([1, 2**32 - 1], jnp.uint32)
    assert np.isnan(float(jax.jit(loss)(s, y)))
    with pytest.raises(ValueError, match=r"labels in \[1, 4294967295\]"):
        loss(s, y)


# --------------------------------------------------------------------------
# 5. Empty batch: an empty output where the maths is defined, else ValueError
# --------------------------------------------------------------------------


def _empty_sample(info):
    s = info.samples(jnp.float32)[0]
    args = list(s.args)
    for j in info.n_argnums:
        args[j] = args[j][:0]
    return s, Sample("N=0", tuple(args), s.kwargs)


@pytest.mark.parametrize("info", FIRST)
def test_empty_batch(info):
    s, e = _empty_sample(info)
    if info.empty_batch == "error":
        for fn in (info.op, jax.jit(info.op, static_argnames=tuple(e.kwargs))):
            with pytest.raises(ValueError, match=rf"^{info.op_name}: .*empty batch"):
                fn(*e.args, **e.kwargs)
        return
    assert info.empty_batch == "empty", info.empty_batch
    full = info.bind(s)(*info.diff_args(s))
    out = info.bind(e)(*info.diff_args(e))
    assert out.shape == (0, *full.shape[1:]) and out.dtype == full.dtype
    ct = jnp.zeros(out.shape, out.dtype)
    grads = vjp_of(info, e, ct)
    grads_ref = vjp_of(info, e, ct, reference=True)
    for g, g_ref, primal in zip(grads, grads_ref, info.diff_args(e), strict=True):
        assert g.shape == primal.shape and g.dtype == primal.dtype
        np.testing.assert_array_equal(np.asarray(g), 0.0)  # dw, db: sums over no examples
        np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))


def test_empty_batch_affine_gradients():
    x, w, b = jnp.zeros((0, 6)), jnp.ones((6, 3)), jnp.zeros(3)
    assert jl.affine(x, w, b).shape == (0, 3)
    dx, dw, db = jax.grad(lambda *a: jnp.sum(jl.affine(*a)), argnums=(0, 1, 2))(x, w, b)
    assert dx.shape == (0, 6)
    np.testing.assert_array_equal(np.asarray(dw), np.zeros((6, 3)))
    np.testing.assert_array_equal(np.asarray(db), np.zeros(3))
    assert jl.affine(jnp.zeros((0, 2, 3)), w, b).shape == (0, 3)  # (N, d1, d2): no reshape(0, -1)


@pytest.mark.parametrize("loss", [jl.svm_loss, jl.softmax_loss])
def test_empty_batch_loss_message(loss):
    msg = f"{loss.__name__}: the mean loss over an empty batch is undefined: scores has shape (0, 5)"
    with pytest.raises(ValueError, match=r"^" + msg.replace("(", r"\(").replace(")", r"\)") + "$"):
        loss(jnp.zeros((0, 5)), jnp.zeros(0, jnp.int32))


# --------------------------------------------------------------------------
# 6. Array-likes, keys, static hyper-parameters
# --------------------------------------------------------------------------


def _array_leaves(args, convert):
    """``convert`` applied to every array leaf of ``args`` -- inside a
    ``BatchNormState`` too, which stays a ``BatchNormState`` (``np.asarray``
    of the whole state would stack it into one array); keys kept."""
    return jax.tree.map(lambda a: a if is_key(a) else convert(a), tuple(args))


def _as_lists(args):
    return _array_leaves(args, lambda a: np.asarray(a).tolist())


@pytest.mark.parametrize("info", FIRST)
def test_lists_are_accepted_like_arrays(info):
    """Nested lists (and NumPy arrays) of numbers convert once, as ``jnp.asarray`` would."""
    s = info.samples(jnp.float32)[0]
    want = info.output(info.op(*s.args, **s.kwargs))
    for args in (_as_lists(s.args), _array_leaves(s.args, np.asarray)):
        got = info.output(info.op(*args, **s.kwargs))
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize(
    ("bad", "kind"),
    [("abc", "str"), (None, "NoneType"), ({"a": 1}, "dict"), ([[1.0, 2.0], [3.0]], "list"), (["a", "b"], "list")],
)
def test_non_arrays_are_refused_by_name(bad, kind):
    with pytest.raises(TypeError, match=rf"^relu: x must be an array .*{kind}") as err:
        jl.relu(bad)
    assert "3.0" not in str(err.value)  # the value is never dumped
    with pytest.raises(TypeError, match=rf"^affine: w must be an array .*{kind}"):
        jl.affine(jnp.ones((2, 2)), bad, jnp.zeros(2))
    with pytest.raises(TypeError, match=rf"^softmax_loss: y must be an array .*{kind}"):
        jl.softmax_loss(jnp.ones((2, 2)), bad)
    with pytest.raises(TypeError, match=rf"^dropout: x must be an array .*{kind}"):
        jl.dropout(bad, jax.random.key(0), rate=0.5, train=True)


def test_numpy_scalars_are_arrays():
    np.testing.assert_array_equal(np.asarray(jl.relu(np.float32(-2.0))), 0.0)
    assert jl.relu(np.float32(3.0)).dtype == jnp.float32


@pytest.mark.parametrize(
    "keys",
    [jax.random.split(jax.random.key(0), 4), jax.random.split(jax.random.PRNGKey(0), 4)],
    ids=["typed (4,)", "legacy (4, 2)"],
)
def test_a_batch_of_keys_is_refused_with_its_shape(keys):
    x = jnp.ones((4, 6))
    with pytest.raises(ValueError, match=r"^dropout: key must be a single PRNG key.*shape \(4,( 2)?\)"):
        jl.dropout(x, keys, rate=0.5, train=True)
    # the way round it: one key per example under vmap
    out = jax.vmap(lambda xi, k: jl.dropout(xi, k, rate=0.5, train=True))(x, keys)
    assert out.shape == x.shape


@pytest.mark.parametrize("rate", [math.inf, -math.inf, math.nan, np.float32(np.nan)])
def test_dropout_rate_must_be_finite(rate):
    with pytest.raises(ValueError, match=r"^dropout: rate must be a finite number"):
        jl.dropout(jnp.ones(3), jax.random.key(0), rate=rate, train=True)


@pytest.mark.parametrize("over", [{"eps": math.inf}, {"eps": math.nan}, {"momentum": math.nan}])
def test_batchnorm_hyperparameters_must_be_finite(over):
    """Through the shared check_number: batchnorm needs no change of its own."""
    name = next(iter(over))
    with pytest.raises(ValueError, match=rf"^batchnorm: {name} must be a finite number"):
        jl.batchnorm(jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True, **over)


def test_numpy_scalar_hyperparameters_are_accepted():
    x, key = jnp.asarray(np.random.RandomState(0).randn(8, 8), jnp.float32), jax.random.key(1)
    for rate in (np.float32(0.5), np.float64(0.5)):
        np.testing.assert_array_equal(
            np.asarray(jl.dropout(x, key, rate=rate, train=True)), np.asarray(jl.dropout(x, key, rate=0.5, train=True))
        )
    assert jl.dropout(x, key, rate=np.int64(0), train=np.bool_(True)) is x
    bn = [jnp.ones((4, 3)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3)]
    a = jl.batchnorm(*bn, train=True, momentum=np.float32(0.5), eps=np.float64(1e-3))
    b = jl.batchnorm(*bn, train=True, momentum=0.5, eps=1e-3)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6), a, b)
    with pytest.raises(TypeError, match="dropout: rate must be a Python number"):
        jl.dropout(x, key, rate=jnp.float32(0.5), train=True)  # a jax array is not static


# --------------------------------------------------------------------------
# 7. Forward mode: refused by custom_vjp; jacrev and the references work
# --------------------------------------------------------------------------


@pytest.mark.parametrize("info", FIRST)
def test_forward_mode_raises_and_reverse_mode_is_the_way_round(info, x64):
    s = info.samples(jnp.float64)[0]
    primal = info.diff_args(s)[0]

    def f(a, fn):
        args = list(info.diff_args(s))
        args[0] = a
        return fn(*args)

    op, ref = info.bind(s), info.bind(s, reference=True)
    with pytest.raises(TypeError, match=r"can't apply forward-mode autodiff \(jvp\) to a custom_vjp function"):
        jax.jacfwd(lambda a: f(a, op))(primal)
    np.testing.assert_allclose(
        np.asarray(jax.jacrev(lambda a: f(a, op))(primal)),
        np.asarray(jax.jacfwd(lambda a: f(a, ref))(primal)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_hessian_works(x64):
    """jax.hessian is jacfwd of jacrev: forward mode over the (plain jnp) backward rule."""
    r = np.random.RandomState(0)
    s, y = jnp.asarray(r.randn(3, 4)), jnp.array([0, 3, 1])
    np.testing.assert_allclose(
        np.asarray(jax.hessian(jl.softmax_loss)(s, y)),
        np.asarray(jax.hessian(softmax_loss_reference)(s, y)),
        rtol=1e-12,
        atol=1e-14,
    )
    assert np.all(np.asarray(jax.hessian(jl.svm_loss)(s, y)) == np.asarray(jax.hessian(svm_loss_reference)(s, y)))
