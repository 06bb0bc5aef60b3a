"""The normalisation layers on hostile input (issue 12, classes 3-6), and what the generic suite cannot see.

batchnorm, spatial_batchnorm, layernorm and groupnorm: running statistics in
half precision, features whose squares overflow, empty batches, bad ``eps``,
``momentum`` and states; half-precision input; ``axis_name`` for spatial
batchnorm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.gradcheck import norm_rel_error
from jaxlayers.layers import (
    batchnorm_reference,
    groupnorm_reference,
    layernorm_reference,
    spatial_batchnorm_reference,
)

# Each op as f(x, gamma, beta) -> out, with its reference, its channel axis length and the
# NumPy standardisation it computes (axes of the statistics, on the (N, G, C/G, H, W) view for groupnorm).


def _bn(op):
    def f(x, gamma, beta, train=True):
        state = jl.batchnorm_state(x.shape[1], jnp.promote_types(x.dtype, jnp.float32))
        return op(x, gamma, beta, state, train=train)[0]

    return f


OPS = {
    "batchnorm": (_bn(jl.batchnorm), _bn(batchnorm_reference), (8, 3)),
    "spatial_batchnorm": (_bn(jl.spatial_batchnorm), _bn(spatial_batchnorm_reference), (4, 3, 2, 2)),
    "layernorm": (jl.layernorm, layernorm_reference, (8, 6)),
    "groupnorm": (
        lambda x, g, b: jl.groupnorm(x, g, b, groups=2),
        lambda x, g, b: groupnorm_reference(x, g, b, groups=2),
        (2, 4, 2, 2),
    ),
}


def _standardise(name, x, eps=1e-5):
    """NumPy float64: (x - mean) / sqrt(var + eps) over the op's statistics set."""
    x = np.asarray(x, np.float64)
    if name == "groupnorm":
        return _standardise("layernorm", x.reshape(x.shape[0] * 2, -1), eps).reshape(x.shape)
    axes = {"batchnorm": (0,), "spatial_batchnorm": (0, 2, 3), "layernorm": (1,)}[name]
    mean = x.mean(axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + eps)


def _params(shape, dtype=jnp.float32):
    c = shape[1]
    return jnp.ones(c, dtype), jnp.zeros(c, dtype)


# --- 3: running statistics in half precision ------------------------------------------


@pytest.mark.parametrize("op", [jl.batchnorm, jl.spatial_batchnorm])
def test_bfloat16_input_float32_running_mean_converges(op):
    """2000 train steps on one bfloat16 batch: the float32 running mean reaches the batch
    mean within 0.1%. A bfloat16 state stalls a few percent short (why the default is float32)."""
    rs = np.random.RandomState(0)
    shape = (64, 4) if op is jl.batchnorm else (16, 4, 2, 2)
    x = jnp.asarray(rs.randn(*shape) * 0.1 + 3.0, jnp.bfloat16)
    gamma, beta = _params(shape)
    axes = (0,) if op is jl.batchnorm else (0, 2, 3)
    true_mean = np.asarray(x, np.float64).mean(axes)

    def run(state):
        def step(state, _):
            return op(x, gamma, beta, state, train=True)[1], None

        return jax.lax.scan(step, state, None, length=2000)[0]

    state = run(jl.batchnorm_state(4))
    assert state.mean.dtype == jnp.float32 and state.var.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(state.mean), true_mean, rtol=1e-3)
    stalled = run(jl.batchnorm_state(4, jnp.bfloat16))
    assert stalled.mean.dtype == jnp.bfloat16
    assert np.max(np.abs(np.asarray(stalled.mean, np.float64) / true_mean - 1)) > 1e-2


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_input_statistics_and_backward_in_float32(name, dtype):
    op, _, shape = OPS[name]
    rs = np.random.RandomState(1)
    x = jnp.asarray(rs.randn(*shape) + 20.0, dtype)
    gamma, beta = _params(shape)
    out = op(x, gamma, beta)
    assert out.dtype == dtype
    expected = _standardise(name, np.asarray(x.astype(jnp.float32)))
    assert np.max(np.abs(np.asarray(out, np.float64) - expected)) <= 2e-2 * np.max(np.abs(expected))
    ct = jnp.asarray(rs.randn(*shape), jnp.float32)
    dx, dgamma = jax.grad(lambda x, g: jnp.sum(op(x, g, beta).astype(jnp.float32) * ct), argnums=(0, 1))(x, gamma)
    dx32, dgamma32 = jax.grad(lambda x, g: jnp.sum(op(x, g, beta) * ct), argnums=(0, 1))(x.astype(jnp.float32), gamma)
    assert dx.dtype == dtype and dgamma.dtype == jnp.float32
    assert norm_rel_error(np.asarray(dx, np.float32), dx32) <= 2e-2
    assert norm_rel_error(dgamma, dgamma32) <= 2e-2


# --- 4: squares that overflow ---------------------------------------------------------


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("scale", [1e20, 3e38])
def test_features_whose_squares_overflow_float32(name, scale):
    """float32 features of magnitude 1e20..3e38: the output is the standardised values,
    the gradient finite and equal to float64 autodiff of the reference."""
    op, ref, shape = OPS[name]
    rs = np.random.RandomState(2)
    z = rs.uniform(-1, 1, size=shape) if scale > 1e37 else rs.randn(*shape)
    x = jnp.asarray(z * scale, jnp.float32)
    assert np.isfinite(np.asarray(x)).all()
    gamma, beta = _params(shape)
    out = op(x, gamma, beta)
    expected = _standardise(name, np.asarray(x))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), _standardise(name, z, eps=0.0), rtol=1e-5, atol=1e-5)
    ct = jnp.asarray(rs.randn(*shape), jnp.float32)
    dx, dgamma, dbeta = jax.vjp(op, x, gamma, beta)[1](ct)
    with jax.enable_x64(True):
        x64, ct64 = jnp.asarray(np.asarray(x), jnp.float64), jnp.asarray(np.asarray(ct), jnp.float64)
        g64 = jax.vjp(ref, x64, gamma.astype(jnp.float64), beta.astype(jnp.float64))[1](ct64)
        g64 = [np.asarray(g) for g in g64]
    for k, (g, e) in enumerate(zip((dx, dgamma, dbeta), g64, strict=True)):
        assert np.isfinite(np.asarray(g)).all()
        if k > 0 or scale < 1e37:  # at 3e38, dx ~ 1e-38 is below float32's normal range (flushed to 0)
            assert norm_rel_error(np.asarray(g, np.float64), e) <= 1e-4


def test_batchnorm_overflowing_variance_enters_the_state_as_inf():
    """The batch variance 1e40 exceeds float32: the running var is inf, the mean finite."""
    x = jnp.asarray(np.random.RandomState(3).randn(8, 3) * 1e20, jnp.float32)
    _, state = jl.batchnorm(x, jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True)
    np.testing.assert_allclose(np.asarray(state.mean), 0.1 * np.asarray(x, np.float64).mean(0), rtol=1e-5)
    assert np.isinf(np.asarray(state.var)).all()


@pytest.mark.parametrize("name", list(OPS))
def test_constant_set_gives_beta_exactly_even_at_huge_magnitude(name):
    op, _, shape = OPS[name]
    x = np.full(shape, 1e30, np.float32)
    gamma, beta = jnp.full(shape[1], 2.0), jnp.linspace(-1.0, 1.0, shape[1])
    out = op(jnp.asarray(x), gamma, beta)
    np.testing.assert_array_equal(
        np.asarray(out), np.broadcast_to(np.asarray(beta).reshape((1, -1) + (1,) * (len(shape) - 2)), shape)
    )


# --- 5: empty batch -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "shape"),
    [(jl.batchnorm, (0, 3)), (jl.spatial_batchnorm, (0, 3, 2, 2)), (jl.spatial_batchnorm, (2, 3, 0, 2))],
)
def test_train_mode_on_an_empty_batch_is_a_clear_error(op, shape):
    name = op.__name__
    if shape[0] == 0:  # N = 0: the shared empty-batch message of issue 12 (require_batch)
        match = rf"^{name}: the train-mode batch mean over an empty batch is undefined: x has shape {re_shape(shape)}$"
    else:  # H * W = 0: a batch, but no element per channel
        match = (
            rf"^{name}: train mode needs at least one example to compute batch statistics, "
            rf"got x of shape {re_shape(shape)}$"
        )
    with pytest.raises(ValueError, match=match):
        op(jnp.ones(shape), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_batchnorm_empty_batch_message_verbatim():
    with pytest.raises(ValueError) as info:
        jl.batchnorm(jnp.ones((0, 3)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True)
    assert (
        str(info.value) == "batchnorm: the train-mode batch mean over an empty batch is undefined: x has shape (0, 3)"
    )


@pytest.mark.parametrize(
    ("op", "shape", "kw"),
    [
        (_bn(jl.batchnorm), (0, 3), {"train": False}),
        (_bn(jl.spatial_batchnorm), (0, 3, 2, 2), {"train": False}),
        (jl.layernorm, (0, 3), {}),
        (lambda x, g, b: jl.groupnorm(x, g, b, groups=3), (0, 3, 2, 2), {}),
    ],
)
def test_empty_batch_without_batch_statistics_gives_empty_output_and_grads(op, shape, kw):
    x, gamma, beta = jnp.ones(shape), jnp.ones(3), jnp.zeros(3)
    out, vjp = jax.vjp(lambda *a: op(*a, **kw), x, gamma, beta)
    assert out.shape == shape
    dx, dgamma, dbeta = vjp(jnp.ones(shape))
    assert dx.shape == shape
    np.testing.assert_array_equal(np.asarray(dgamma), 0.0)
    np.testing.assert_array_equal(np.asarray(dbeta), 0.0)


def test_layernorm_and_groupnorm_refuse_empty_statistics_sets():
    with pytest.raises(ValueError, match=r"layernorm: x needs at least one feature per example.*\(4, 0\)"):
        jl.layernorm(jnp.ones((4, 0)), jnp.ones(0), jnp.zeros(0))
    with pytest.raises(ValueError, match=r"groupnorm: each group needs at least one element.*\(2, 4, 0, 3\)"):
        jl.groupnorm(jnp.ones((2, 4, 0, 3)), jnp.ones(4), jnp.zeros(4), groups=2)


# --- 6: eps, momentum and the state -------------------------------------------------------


def _call(name, eps=1e-5, momentum=0.9, state=None):
    shape = OPS[name][2]
    x = jnp.ones(shape)
    gamma, beta = _params(shape)
    if name == "layernorm":
        return jl.layernorm(x, gamma, beta, eps=eps)
    if name == "groupnorm":
        return jl.groupnorm(x, gamma, beta, groups=2, eps=eps)
    state = jl.batchnorm_state(shape[1]) if state is None else state
    return getattr(jl, name)(x, gamma, beta, state, train=True, momentum=momentum, eps=eps)


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize(
    ("eps", "match"),
    [
        (float("inf"), "eps must be a finite number, got inf"),  # the shared check_number
        (float("nan"), "eps must be a finite number, got nan"),
        (0.0, r"eps must be > 0, got 0.0"),
        (-1e-5, r"eps must be > 0"),
    ],
)
def test_bad_eps(name, eps, match):
    with pytest.raises(ValueError, match=f"{name}: {match}"):
        _call(name, eps=eps)


@pytest.mark.parametrize("name", ["batchnorm", "spatial_batchnorm"])
@pytest.mark.parametrize(
    ("momentum", "match"),
    [
        (float("nan"), "momentum must be a finite number, got nan"),  # the shared check_number
        (float("inf"), "momentum must be a finite number, got inf"),
        (-0.5, r"momentum must lie in \[0, 1\]"),
        (1.01, r"momentum must lie in \[0, 1\]"),
    ],
)
def test_bad_momentum(name, momentum, match):
    with pytest.raises(ValueError, match=rf"^{name}: {match}"):
        _call(name, momentum=momentum)


@pytest.mark.parametrize("name", ["batchnorm", "spatial_batchnorm"])
@pytest.mark.parametrize("field", ["mean", "var"])
def test_integer_state_is_refused(name, field):
    c = OPS[name][2][1]
    state = jl.batchnorm_state(c)._replace(**{field: jnp.ones(c, jnp.int32)})
    with pytest.raises(TypeError, match=rf"{name}: state.{field} must have a floating dtype.*got int32"):
        _call(name, state=state)


def test_groupnorm_groups_must_divide_channels():
    x = jnp.ones((2, 6, 2, 2))
    with pytest.raises(ValueError, match=r"groupnorm: x's 6 channels do not split into 4 groups.*\(2, 6, 2, 2\)"):
        jl.groupnorm(x, jnp.ones(6), jnp.zeros(6), groups=4)
    with pytest.raises(ValueError, match="groupnorm: groups must be >= 1, got 0"):
        jl.groupnorm(x, jnp.ones(6), jnp.zeros(6), groups=0)
    with pytest.raises(TypeError, match="groupnorm: groups must be a Python int"):
        jl.groupnorm(x, jnp.ones(6), jnp.zeros(6), groups=2.0)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: jl.layernorm(jnp.ones((2, 3, 4)), jnp.ones(4), jnp.zeros(4)), ValueError, r"layernorm: x must be 2-D"),
        (
            lambda: jl.layernorm(jnp.ones((2, 3)), jnp.ones(4), jnp.zeros(3)),
            ValueError,
            r"gamma must have shape \(3,\)",
        ),
        (lambda: jl.groupnorm(jnp.ones((2, 3)), jnp.ones(3), jnp.zeros(3), groups=1), ValueError, r"x must be 4-D"),
        (
            lambda: jl.spatial_batchnorm(
                jnp.ones((2, 3)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True
            ),
            ValueError,
            r"spatial_batchnorm: x must be 4-D, got shape \(2, 3\)",
        ),
        (
            lambda: jl.spatial_batchnorm(
                jnp.ones((2, 3, 2, 2)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(4), train=True
            ),
            ValueError,
            r"spatial_batchnorm: state.mean must have shape \(3,\) to match x's 3 channels",
        ),
        (
            lambda: jl.layernorm(jnp.ones((2, 3), jnp.int32), jnp.ones(3), jnp.zeros(3)),
            TypeError,
            "layernorm: x must have a floating dtype",
        ),
    ],
)
def test_shape_and_type_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- spatial_batchnorm across a mapped axis -------------------------------------------------


def test_spatial_batchnorm_axis_name_matches_the_whole_batch(x64):
    rs = np.random.RandomState(4)
    shards, n, c = 3, 2, 3
    x = jnp.asarray(rs.randn(shards * n, c, 2, 2) * 2 + 1)
    gamma, beta = jnp.asarray(rs.rand(c) + 0.5), jnp.asarray(rs.randn(c))
    state = jl.batchnorm_state(c, jnp.float64)
    ct = jnp.asarray(rs.randn(*x.shape))

    def f(x, gamma, beta, ct, axis_name):
        return jnp.sum(jl.spatial_batchnorm(x, gamma, beta, state, train=True, axis_name=axis_name)[0] * ct)

    def local(x, ct):
        return jax.grad(f, argnums=(0, 1, 2))(x, gamma, beta, ct, "shards")

    dx, dgamma, dbeta = jax.vmap(local, axis_name="shards")(
        x.reshape(shards, n, c, 2, 2), ct.reshape(shards, n, c, 2, 2)
    )
    g1 = jax.grad(f, argnums=(0, 1, 2))(x, gamma, beta, ct, None)
    assert norm_rel_error(dx.reshape(x.shape), g1[0]) <= 1e-10
    assert norm_rel_error(dgamma.sum(0), g1[1]) <= 1e-10
    assert norm_rel_error(dbeta.sum(0), g1[2]) <= 1e-10


# --- channels last (data_format="NHWC") -------------------------------------------------


def _to_nhwc(a):
    return jnp.transpose(a, (0, 2, 3, 1))


@pytest.mark.parametrize("train", [True, False])
def test_spatial_batchnorm_nhwc_is_the_transpose_of_nchw(x64, train):
    """Output, new running statistics and every gradient of the channels-last op are the NCHW op's,
    transposed (gamma, beta and the state (C,) in both)."""
    r = np.random.RandomState(21)
    x = jnp.asarray(r.randn(3, 4, 5, 6) * 2 + 1).at[:, 1].set(0.1)  # channel 1 constant
    gamma, beta = jnp.asarray(r.rand(4) + 0.5), jnp.asarray(r.randn(4))
    state = jl.BatchNormState(jnp.asarray(r.randn(4)), jnp.asarray(r.rand(4) + 0.5))

    def run(x, gamma, beta, fmt):
        return jl.spatial_batchnorm(x, gamma, beta, state, train=train, data_format=fmt)

    (out, new), vjp = jax.vjp(lambda *a: run(*a, "NCHW"), x, gamma, beta)
    (out_t, new_t), vjp_t = jax.vjp(lambda *a: run(*a, "NHWC"), _to_nhwc(x), gamma, beta)
    np.testing.assert_allclose(out_t, _to_nhwc(out), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(new_t.mean, new.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(new_t.var, new.var, rtol=1e-12, atol=1e-14)
    g = jnp.asarray(r.randn(*out.shape))
    zero_state = jax.tree.map(jnp.zeros_like, new)
    (dx, dg, db), (dx_t, dg_t, db_t) = vjp((g, zero_state)), vjp_t((_to_nhwc(g), zero_state))
    np.testing.assert_allclose(dx_t, _to_nhwc(dx), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dg_t, dg, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db_t, db, rtol=1e-10, atol=1e-12)
    if train:  # the constant channel: beta exactly, no gamma gradient, in either layout
        np.testing.assert_array_equal(out_t[..., 1], beta[1])
        assert float(dg_t[1]) == float(dg[1]) == 0.0


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_groupnorm_nhwc_is_the_transpose_of_nchw(x64, groups):
    r = np.random.RandomState(22)
    x = jnp.asarray(r.randn(2, 4, 3, 5) * 3 - 2)
    gamma, beta = jnp.asarray(r.rand(4) + 0.5), jnp.asarray(r.randn(4))
    out, vjp = jax.vjp(lambda *a: jl.groupnorm(*a, groups=groups), x, gamma, beta)
    out_t, vjp_t = jax.vjp(lambda *a: jl.groupnorm(*a, groups=groups, data_format="NHWC"), _to_nhwc(x), gamma, beta)
    np.testing.assert_allclose(out_t, _to_nhwc(out), rtol=1e-12, atol=1e-12)
    g = jnp.asarray(r.randn(*out.shape))
    (dx, dg, db), (dx_t, dg_t, db_t) = vjp(g), vjp_t(_to_nhwc(g))
    np.testing.assert_allclose(dx_t, _to_nhwc(dx), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dg_t, dg, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db_t, db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: jl.spatial_batchnorm(
                jnp.ones((2, 3, 4, 5)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True, data_format="NHWC"
            ),
            r"spatial_batchnorm: gamma must have shape \(5,\) to match x's 5 channels \(x shape \(2, 3, 4, 5\), "
            r"data_format 'NHWC'\), got \(3,\)",
        ),
        (
            lambda: jl.spatial_batchnorm(
                jnp.ones((2, 3, 4, 5)), jnp.ones(3), jnp.zeros(3), jl.batchnorm_state(3), train=True, data_format="HWC"
            ),
            r"spatial_batchnorm: data_format must be one of 'NCHW', 'NHWC', got 'HWC'",
        ),
        (
            lambda: jl.groupnorm(jnp.ones((2, 3, 4, 4)), jnp.ones(3), jnp.zeros(3), groups=1, data_format="NHWC"),
            r"groupnorm: gamma must have shape \(4,\) to match x's 4 channels \(x shape \(2, 3, 4, 4\), "
            r"data_format 'NHWC'\)",
        ),
        (
            lambda: jl.groupnorm(jnp.ones((2, 4, 4, 6)), jnp.ones(6), jnp.zeros(6), groups=4, data_format="NHWC"),
            r"groupnorm: x's 6 channels do not split into 4 groups",
        ),
        (
            lambda: jl.groupnorm(jnp.ones((2, 4, 4, 4)), jnp.ones(4), jnp.zeros(4), groups=2, data_format=1),
            r"groupnorm: data_format must be one of 'NCHW', 'NHWC', got 1",
        ),
    ],
)
def test_data_format_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
