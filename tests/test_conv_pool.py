"""conv2d and max_pool2d beyond the generic registry checks: the tie rule,
errors, half precision, residuals, and shapes the samples do not cover."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.layers import conv2d_fwd, conv2d_reference, max_pool2d_fwd, max_pool2d_reference


def _vjp(f, x, ct):
    return jax.vjp(f, x)[1](ct)[0]


def test_max_pool_tie_goes_to_the_first_maximum_in_window_order():
    """One window, every pattern of equal maxima: jax.grad of lax.reduce_window
    (select_and_scatter_add with >=) picks the first maximum in row-major window
    order, and so does max_pool2d."""
    for bits in range(1, 16):
        window = np.array([(bits >> k) & 1 for k in range(4)], np.float32).reshape(1, 1, 2, 2)
        first = int(np.argmax(window.ravel()))
        expected = np.zeros(4, np.float32)
        expected[first] = 1.0
        ct = jnp.ones((1, 1, 1, 1), jnp.float32)
        g_ref = _vjp(max_pool2d_reference, jnp.asarray(window), ct)
        g = _vjp(jl.max_pool2d, jnp.asarray(window), ct)
        np.testing.assert_array_equal(np.asarray(g_ref).ravel(), expected)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))


@pytest.mark.parametrize(("pool_size", "stride"), [(2, 2), (3, 2), (3, 1), ((2, 3), (1, 2))])
def test_max_pool_constant_input_matches_autodiff_exactly(pool_size, stride):
    """All-equal input: every window is a tie, overlapping windows add into one element."""
    x = jnp.full((1, 2, 7, 8), 0.5, jnp.float32)
    out = jl.max_pool2d(x, pool_size=pool_size, stride=stride)
    ct = jnp.asarray(np.random.RandomState(0).randn(*out.shape), jnp.float32)
    g = _vjp(lambda a: jl.max_pool2d(a, pool_size=pool_size, stride=stride), x, ct)
    g_ref = _vjp(lambda a: max_pool2d_reference(a, pool_size=pool_size, stride=stride), x, ct)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g_ref))


def test_max_pool_remainder_rows_get_zero_gradient():
    x = jnp.asarray(np.random.RandomState(1).randn(2, 3, 5, 7), jnp.float32)
    g = jax.grad(lambda a: jnp.sum(jl.max_pool2d(a)))(x)
    assert g.shape == x.shape
    assert not np.any(np.asarray(g)[:, :, 4, :]) and not np.any(np.asarray(g)[:, :, :, 6])
    np.testing.assert_array_equal(np.asarray(g).sum(axis=(2, 3)), np.full((2, 3), 6.0))  # one per window


def test_max_pool_residual_is_a_uint8_index_not_a_copy_of_x():
    x = jnp.ones((2, 3, 8, 8), jnp.float32)
    _, res = max_pool2d_fwd(x, pool_size=(2, 2), stride=2)
    leaves = jax.tree.leaves(res)
    assert len(leaves) == 1 and leaves[0].dtype == jnp.uint8 and leaves[0].shape == (2, 3, 4, 4)


def test_conv_residuals_are_the_inputs():
    x, w, b = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3)), jnp.zeros(3)
    _, res = conv2d_fwd(x, w, b, stride=2, padding=1)
    assert [a is x or a is w for a in jax.tree.leaves(res)] == [True, True]
    assert res.stride == (2, 2) and res.padding == (1, 1)


def test_conv_padding_wider_than_the_kernel(x64):
    r = np.random.RandomState(2)
    x, w, b = jnp.asarray(r.randn(2, 2, 4, 5)), jnp.asarray(r.randn(3, 2, 2, 2)), jnp.asarray(r.randn(3))
    f = lambda *a: jl.conv2d(*a, stride=(2, 3), padding=(3, 2))  # noqa: E731
    f_ref = lambda *a: conv2d_reference(*a, stride=(2, 3), padding=(3, 2))  # noqa: E731
    out = f(x, w, b)
    np.testing.assert_allclose(out, f_ref(x, w, b), rtol=1e-12, atol=1e-12)
    ct = jnp.asarray(r.randn(*out.shape))
    for g, g_ref in zip(jax.vjp(f, x, w, b)[1](ct), jax.vjp(f_ref, x, w, b)[1](ct), strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_accumulates_in_float32(dtype):
    r = np.random.RandomState(3)
    x32 = r.randn(2, 8, 6, 6).astype(np.float32) + 3.0
    w32 = (r.randn(4, 8, 3, 3) / 8).astype(np.float32)
    b32 = r.randn(4).astype(np.float32)
    x, w, b = (jnp.asarray(a, dtype) for a in (x32, w32, b32))
    out = jl.conv2d(x, w, b, padding=1)
    assert out.dtype == dtype
    # Exact products of the rounded inputs, summed in float32: only the final rounding differs.
    exact = conv2d_reference(*(a.astype(jnp.float32) for a in (x, w, b)), padding=1)
    np.testing.assert_allclose(np.asarray(out, np.float32), exact, rtol=float(jnp.finfo(dtype).eps), atol=1e-6)
    ct = jnp.ones(out.shape, dtype)
    grads = jax.vjp(lambda *a: jl.conv2d(*a, padding=1), x, w, b)[1](ct)
    grads32 = jax.vjp(lambda *a: conv2d_reference(*a, padding=1), *(a.astype(jnp.float32) for a in (x, w, b)))[1](
        ct.astype(jnp.float32)
    )
    for g, g32 in zip(grads, grads32, strict=True):
        assert g.dtype == dtype
        scale = float(jnp.max(jnp.abs(g32)))
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32) - g32))) <= 2 * float(jnp.finfo(dtype).eps) * scale
    p = jl.max_pool2d(x)
    assert p.dtype == dtype and jax.grad(lambda a: jnp.sum(jl.max_pool2d(a).astype(jnp.float32)))(x).dtype == dtype


def test_mixed_dtypes_promote():
    out = jl.conv2d(
        jnp.ones((1, 1, 3, 3), jnp.bfloat16), jnp.ones((1, 1, 2, 2), jnp.float32), jnp.zeros(1, jnp.float32)
    )
    assert out.dtype == jnp.float32


X, W, B = jnp.ones((2, 3, 5, 5)), jnp.ones((4, 3, 3, 3)), jnp.zeros(4)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((jnp.ones((3, 5, 5)), W, B), {}, ValueError, r"conv2d: x must be 4-D, got shape \(3, 5, 5\)"),
        ((X, jnp.ones((4, 3, 3)), B), {}, ValueError, r"conv2d: w must be 4-D, got shape \(4, 3, 3\)"),
        (
            (X, jnp.ones((4, 2, 3, 3)), B),
            {},
            ValueError,
            r"conv2d: w has 2 input channels but x has 3 .*\(2, 3, 5, 5\)",
        ),
        ((X, W, jnp.zeros(3)), {}, ValueError, r"conv2d: b must have shape \(4,\) .* got \(3,\)"),
        ((X, jnp.ones((4, 3, 6, 3)), B), {}, ValueError, r"conv2d: kernel 6x3 is larger than the padded input along H"),
        ((X, jnp.ones((4, 3, 3, 8)), B), {"padding": 1}, ValueError, r"along W: 5 \+ 2 \* 1 < 8"),
        ((X, W, B), {"stride": 0}, ValueError, r"conv2d: stride must be >= 1, got 0"),
        ((X, W, B), {"stride": (1, -1)}, ValueError, r"conv2d: stride must be >= 1"),
        ((X, W, B), {"padding": -1}, ValueError, r"conv2d: padding must be >= 0, got -1"),
        ((X, W, B), {"stride": 1.5}, TypeError, r"conv2d: stride must be a Python int or a pair of ints"),
        ((X, W, B), {"padding": (1, 2, 3)}, TypeError, r"conv2d: padding must be a Python int or a pair"),
        ((X, W, B), {"padding": True}, TypeError, r"conv2d: padding must be a Python int"),
        ((jnp.ones((2, 3, 5, 5), jnp.int32), W, B), {}, TypeError, r"conv2d: x must have a floating dtype"),
    ],
)
def test_conv_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        jl.conv2d(*args, **kwargs)


@pytest.mark.parametrize(
    ("x", "kwargs", "exc", "match"),
    [
        (jnp.ones((5, 5)), {}, ValueError, r"max_pool2d: x must be 4-D, got shape \(5, 5\)"),
        (X, {"pool_size": 0}, ValueError, r"max_pool2d: pool_size must be >= 1, got 0"),
        (X, {"pool_size": (2, 0)}, ValueError, r"max_pool2d: pool_size must be >= 1"),
        (X, {"stride": 0}, ValueError, r"max_pool2d: stride must be >= 1, got 0"),
        (X, {"pool_size": 6}, ValueError, r"max_pool2d: pool_size \(6, 6\) is larger than x's \(H, W\) = \(5, 5\)"),
        (X, {"stride": 2.0}, TypeError, r"max_pool2d: stride must be a Python int or a pair of ints"),
        (jnp.ones((1, 1, 4, 4), jnp.int32), {}, TypeError, r"max_pool2d: x must have a floating dtype"),
    ],
)
def test_pool_errors(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        jl.max_pool2d(x, **kwargs)


def test_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="conv2d: w has 2 input channels"):
        jax.jit(lambda x, w, b: jl.conv2d(x, w, b))(X, jnp.ones((4, 2, 3, 3)), B)
    with pytest.raises(ValueError, match="max_pool2d: pool_size"):
        jax.jit(lambda x: jl.max_pool2d(x, pool_size=7))(X)


def test_conv_relu_pool_stack_trains_under_jit_grad_and_checkpoint():
    """A conv-relu-pool-affine network's gradient, jitted and rematerialised, equals plain autodiff's."""
    r = np.random.RandomState(4)
    x = jnp.asarray(r.randn(3, 2, 8, 8), jnp.float32)
    params = {
        "w": jnp.asarray(r.randn(4, 2, 3, 3) * 0.3, jnp.float32),
        "b": jnp.asarray(r.randn(4), jnp.float32),
        "v": jnp.asarray(r.randn(64, 5) * 0.1, jnp.float32),
    }

    def loss(p, conv, pool):
        h = pool(jnp.maximum(conv(x, p["w"], p["b"], padding=1), 0.0))
        return jnp.sum(jnp.tanh(h.reshape(3, -1) @ p["v"]))

    g = jax.jit(jax.grad(lambda p: loss(p, jl.conv2d, jl.max_pool2d)))(params)
    g_remat = jax.grad(jax.checkpoint(lambda p: loss(p, jl.conv2d, jl.max_pool2d)))(params)
    g_ref = jax.grad(lambda p: loss(p, conv2d_reference, max_pool2d_reference))(params)
    for k in params:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g_remat[k], g_ref[k], rtol=1e-5, atol=1e-5)
