"""conv2d and max_pool2d beyond the generic registry checks: the tie rule,
errors, half precision, residuals, and shapes the samples do not cover."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlayers as jl
from jaxlayers.layers import conv2d_fwd, conv2d_reference, max_pool2d_fwd, max_pool2d_reference
from jaxlayers.layers.conv import conv2d_dw, conv2d_dx, cpu_vendor, dw_method


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


# --------------------------------------------------------------------------
# issue 20: the backward's formulations (dw by XLA's convolution or by chunked
# im2col matrix products; dx by a forward convolution), each checked alone.
# --------------------------------------------------------------------------

_FORMULATION_CASES = [
    # (x shape, w shape, stride, padding)
    ((3, 16, 8, 8), (5, 16, 3, 3), (1, 1), (1, 1)),
    ((4, 3, 9, 8), (5, 3, 3, 2), (2, 3), (1, 2)),
    ((5, 4, 11, 10), (2, 4, 4, 3), (3, 2), (2, 0)),
    ((6, 17, 7, 7), (3, 17, 3, 3), (1, 1), (0, 0)),
    ((8, 32, 16, 16), (64, 32, 3, 3), (1, 1), (1, 1)),  # the second ConvNet layer, fewer images
]


def _case(xs, ws, stride, padding, dtype, seed=0):
    r = np.random.RandomState(seed)
    x = jnp.asarray(r.randn(*xs), dtype)
    w = jnp.asarray(r.randn(*ws) / np.sqrt(np.prod(ws[1:])), dtype)
    b = jnp.zeros(ws[0], dtype)
    out, vjp = jax.vjp(lambda x, w: conv2d_reference(x, w, b, stride=stride, padding=padding), x, w)
    g = jnp.asarray(r.randn(*out.shape), dtype)
    dx_ref, dw_ref = vjp(g)
    return x, w, g, dx_ref, dw_ref


def _rel(a, b):
    return float(jnp.max(jnp.abs(a.astype(jnp.float64) - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("method", ["conv", "im2col"])
@pytest.mark.parametrize(("xs", "ws", "stride", "padding"), _FORMULATION_CASES)
def test_each_dw_formulation_equals_autodiff_in_float64(x64, method, xs, ws, stride, padding):
    """float64: both formulations are exact; they differ from jax.grad only by rounding (<= 1e-12 relative)."""
    x, w, g, _, dw_ref = _case(xs, ws, stride, padding, jnp.float64)
    dw = conv2d_dw(x, g, w.shape, stride=stride, padding=padding, method=method)
    assert dw.shape == w.shape and dw.dtype == jnp.float64
    assert _rel(dw, dw_ref) <= 1e-12


@pytest.mark.parametrize("method", ["conv", "im2col"])
@pytest.mark.parametrize(("xs", "ws", "stride", "padding"), _FORMULATION_CASES)
def test_each_dw_formulation_matches_xla_in_float32(x64, method, xs, ws, stride, padding):
    """float32 against XLA's gradient (float64 here as the truth): within 1e-5 relative to the largest
    entry -- the rounding of a different summation order over N*Ho*Wo <= 2048 products (measured
    <= 1e-6 here; 8.6e-6 at (64, 64, 32, 32), 65536 products). XLA's own float32 gradient is held to
    the same bound."""
    x, w, g, _, dw_true = _case(xs, ws, stride, padding, jnp.float64)
    x32, g32 = x.astype(jnp.float32), g.astype(jnp.float32)
    dw = conv2d_dw(x32, g32, w.shape, stride=stride, padding=padding, method=method)
    xla32 = jax.vjp(
        lambda w: conv2d_reference(x32, w, jnp.zeros(w.shape[0], jnp.float32), stride=stride, padding=padding),
        w.astype(jnp.float32),
    )[1](g32)[0]
    assert dw.dtype == jnp.float32
    assert _rel(dw, dw_true) <= 1e-5
    assert _rel(xla32, dw_true) <= 1e-5
    np.testing.assert_allclose(np.asarray(dw), np.asarray(xla32), rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(dw_true))))


@pytest.mark.parametrize(("xs", "ws", "stride", "padding"), _FORMULATION_CASES)
def test_dx_is_the_autodiff_input_gradient(x64, xs, ws, stride, padding):
    x, w, g, dx_ref, _ = _case(xs, ws, stride, padding, jnp.float64)
    dx = conv2d_dx(g, w, x.shape, stride=stride, padding=padding)
    assert dx.shape == x.shape
    assert _rel(dx, dx_ref) <= 1e-12


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("method", ["conv", "im2col"])
def test_half_precision_dw_accumulates_in_float32(method, dtype):
    """Half-precision x and g: each formulation returns float32 sums of the exact products of the
    half-precision values, i.e. equals the float32 gradient of the (exactly upcast) half inputs to
    float32 rounding -- far below one half-precision ulp of the result."""
    xs, ws, stride, padding = _FORMULATION_CASES[0]
    x, w, g, _, _ = _case(xs, ws, stride, padding, jnp.float32)
    xh, gh = x.astype(dtype), g.astype(dtype)
    dw = conv2d_dw(xh, gh, w.shape, stride=stride, padding=padding, method=method)
    assert dw.dtype == jnp.float32
    ref = conv2d_dw(
        xh.astype(jnp.float32), gh.astype(jnp.float32), w.shape, stride=stride, padding=padding, method="conv"
    )
    np.testing.assert_allclose(np.asarray(dw), np.asarray(ref), rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(ref))))


def test_dw_method_by_shape_and_cpu():
    """On Intel: im2col for 16+ channels whose block fits the cache; XLA's convolution for RGB inputs and huge
    images. Elsewhere (AMD, measured): XLA's convolution."""
    intel = "GenuineIntel"
    assert dw_method((64, 64, 32, 32), (64, 64, 3, 3), intel) == "im2col"
    assert dw_method((64, 32, 16, 16), (64, 32, 3, 3), intel) == "im2col"
    assert dw_method((64, 3, 32, 32), (32, 3, 3, 3), intel) == "conv"
    assert dw_method((64, 3, 32, 32), (32, 3, 7, 7), intel) == "conv"
    assert dw_method((8, 64, 224, 224), (64, 64, 3, 3), intel) == "conv"
    assert dw_method((64, 64, 32, 32), (64, 64, 3, 3), "AuthenticAMD") == "conv"
    assert dw_method((64, 64, 32, 32), (64, 64, 3, 3)) == dw_method((64, 64, 32, 32), (64, 64, 3, 3), cpu_vendor())
    with pytest.raises(ValueError, match="conv2d_dw: method must be"):
        conv2d_dw(jnp.ones((1, 1, 3, 3)), jnp.ones((1, 1, 1, 1)), (1, 1, 3, 3), method="fft")


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_conv2d_gradient_with_either_choice_matches_finite_differences(x64, monkeypatch, vendor):
    """The public op's gradient in float64, whichever formulation dw_method picks on either CPU, against
    central finite differences of the forward (16 channels: im2col on Intel, XLA's convolution on AMD)."""
    from jaxlayers.layers import conv as conv_module

    monkeypatch.setattr(conv_module, "cpu_vendor", lambda: vendor)
    jax.clear_caches()  # the rule is traced anew with the patched choice
    r = np.random.RandomState(7)
    x = jnp.asarray(r.randn(2, 16, 5, 4))
    w = jnp.asarray(r.randn(3, 16, 3, 3) / 12.0)
    b = jnp.asarray(r.randn(3))
    ct = jnp.asarray(r.randn(2, 3, 3, 2))

    def loss(w):
        return jnp.vdot(jl.conv2d(x, w, b, stride=(1, 2), padding=(0, 1)), ct)

    dw = jax.grad(loss)(w)
    assert ("stablehlo.while" in jax.jit(jax.grad(loss)).lower(w).as_text()) == (vendor == "GenuineIntel")
    eps, flat = 1e-6, np.asarray(w).ravel()
    fd = np.empty_like(flat)
    for i in range(flat.size):
        e = np.zeros_like(flat)
        e[i] = eps
        fd[i] = (loss(jnp.asarray((flat + e).reshape(w.shape))) - loss(jnp.asarray((flat - e).reshape(w.shape)))) / (
            2 * eps
        )
    np.testing.assert_allclose(np.asarray(dw).ravel(), fd, rtol=1e-6, atol=1e-8)
    jax.clear_caches()


def _convolutions(f, *args) -> int:
    return jax.jit(f).lower(*args).compile().as_text().count(" convolution(")


def test_unused_dx_of_a_first_layer_is_never_computed():
    """jax.grad of the parameters only: under jit, XLA drops the first layer's dx (dead code) -- the
    compiled program holds the forward and dw convolutions, not the third (dx) one."""
    x = jnp.ones((2, 3, 8, 8))
    w, b = jnp.ones((4, 3, 3, 3)), jnp.zeros(4)

    def loss(x, w):
        return jnp.sum(jl.conv2d(x, w, b, padding=1) ** 2)

    assert _convolutions(jax.grad(loss, argnums=1), x, w) == 2
    assert _convolutions(jax.grad(loss, argnums=(0, 1)), x, w) == 3


# ---------------------------------------------------------------- channels last (data_format="NHWC")


def _to_nhwc(a):
    return jnp.transpose(a, (0, 2, 3, 1))


@pytest.mark.parametrize(("xs", "ws", "stride", "padding"), _FORMULATION_CASES)
def test_conv2d_nhwc_is_the_transpose_of_nchw(x64, xs, ws, stride, padding):
    """Forward and every gradient of the channels-last op are the NCHW op's, transposed (same weights)."""
    r = np.random.RandomState(3)
    x, w, b = jnp.asarray(r.randn(*xs)), jnp.asarray(r.randn(*ws) / 10), jnp.asarray(r.randn(ws[0]))
    out, vjp = jax.vjp(lambda x, w, b: jl.conv2d(x, w, b, stride=stride, padding=padding), x, w, b)
    out_t, vjp_t = jax.vjp(
        lambda x, w, b: jl.conv2d(x, w, b, stride=stride, padding=padding, data_format="NHWC"), _to_nhwc(x), w, b
    )
    np.testing.assert_allclose(out_t, _to_nhwc(out), rtol=1e-12, atol=1e-12)
    g = jnp.asarray(r.randn(*out.shape))
    (dx, dw, db), (dx_t, dw_t, db_t) = vjp(g), vjp_t(_to_nhwc(g))
    np.testing.assert_allclose(dx_t, _to_nhwc(dx), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw_t, dw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db_t, db, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["conv", "im2col"])
@pytest.mark.parametrize(("xs", "ws", "stride", "padding"), _FORMULATION_CASES)
def test_nhwc_dw_and_dx_equal_autodiff_in_float64(x64, method, xs, ws, stride, padding):
    """conv2d_dw (either formulation) and conv2d_dx on channels-last x and g, against jax.vjp of the
    NHWC reference: exact up to float64 rounding; dw keeps the (F, C, HH, WW) layout."""
    x, w, g, dx_ref, dw_ref = _case(xs, ws, stride, padding, jnp.float64)
    xt, gt = _to_nhwc(x), _to_nhwc(g)
    b = jnp.zeros(ws[0])
    _, vjp = jax.vjp(lambda x, w: conv2d_reference(x, w, b, stride=stride, padding=padding, data_format="NHWC"), xt, w)
    dxt_ref, dwt_ref = vjp(gt)
    assert _rel(dwt_ref, dw_ref) <= 1e-12 and _rel(dxt_ref, _to_nhwc(dx_ref)) <= 1e-12
    dw = conv2d_dw(xt, gt, w.shape, stride=stride, padding=padding, method=method, data_format="NHWC")
    assert dw.shape == w.shape and _rel(dw, dwt_ref) <= 1e-12
    dx = conv2d_dx(gt, w, xt.shape, stride=stride, padding=padding, data_format="NHWC")
    assert dx.shape == xt.shape and _rel(dx, dxt_ref) <= 1e-12


def test_dw_method_is_the_same_choice_in_either_layout():
    for xs, ws in [((64, 64, 32, 32), (64, 64, 3, 3)), ((64, 3, 32, 32), (32, 3, 3, 3))]:
        for vendor in ("GenuineIntel", "AuthenticAMD"):
            nhwc = (xs[0], xs[2], xs[3], xs[1])
            assert dw_method(nhwc, ws, vendor, data_format="NHWC") == dw_method(xs, ws, vendor)


@pytest.mark.parametrize(
    ("pool_size", "stride", "shape"),
    [(2, 2, (2, 3, 6, 6)), (3, 2, (2, 2, 7, 7)), ((2, 3), (3, 2), (2, 2, 7, 8)), (3, 1, (1, 2, 5, 5))],
)
def test_max_pool2d_nhwc_is_the_transpose_of_nchw(x64, pool_size, stride, shape):
    """Ties included (small integers): the channels-last pool routes every gradient to the same element."""
    x = jnp.asarray(np.random.RandomState(4).randint(0, 3, size=shape).astype(np.float64))
    out, vjp = jax.vjp(lambda x: jl.max_pool2d(x, pool_size=pool_size, stride=stride), x)
    out_t, vjp_t = jax.vjp(
        lambda x: jl.max_pool2d(x, pool_size=pool_size, stride=stride, data_format="NHWC"), _to_nhwc(x)
    )
    np.testing.assert_array_equal(out_t, _to_nhwc(out))
    g = jnp.asarray(np.random.RandomState(5).randn(*out.shape))
    np.testing.assert_array_equal(vjp_t(_to_nhwc(g))[0], _to_nhwc(vjp(g)[0]))
    _, res = max_pool2d_fwd(_to_nhwc(x), pool_size=pool_size, stride=stride, data_format="NHWC")
    assert res.index.shape == out_t.shape and res.index.dtype == jnp.uint8


def test_nhwc_backward_transposes_no_activation():
    """The channels-last conv/pool step compiles without a transpose of an activation-sized array in
    the jaxpr (the only transposes are of the (F, C, HH, WW) weights)."""
    x = jnp.ones((2, 8, 8, 3))
    w, b = jnp.ones((4, 3, 3, 3)), jnp.zeros(4)

    def loss(x, w):
        h = jl.relu(jl.conv2d(x, w, b, padding=1, data_format="NHWC"))
        return jnp.sum(jl.max_pool2d(h, data_format="NHWC") ** 2)

    from jax.extend.core import jaxprs_in_params

    transposed = []

    def walk(jp):  # into the jitted ops' and custom rules' inner jaxprs
        for e in jp.eqns:
            if e.primitive.name == "transpose":
                transposed.append(e.invars[0].aval.shape)
            for sub in jaxprs_in_params(e.params):
                walk(sub)

    walk(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w).jaxpr)
    assert all(len(s) < 4 or s == w.shape for s in transposed), transposed


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: jl.conv2d(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 2, 3, 3)), jnp.ones(3), data_format="nhwc"),
            r"conv2d: data_format must be one of 'NCHW', 'NHWC', got 'nhwc'",
        ),
        (
            lambda: jl.conv2d(jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3)), jnp.ones(3), data_format="NHWC"),
            r"conv2d: w has 2 input channels but x has 5 \(data_format 'NHWC': x shape \(N, H, W, C\) = \(1, 2, 5, 5\)",
        ),
        (
            lambda: jl.max_pool2d(jnp.ones((1, 5, 5, 2)), data_format=None),
            r"max_pool2d: data_format must be one of 'NCHW', 'NHWC', got None",
        ),
        (
            lambda: jl.max_pool2d(jnp.ones((1, 1, 5, 2)), pool_size=2, data_format="NHWC"),
            r"max_pool2d: pool_size \(2, 2\) is larger than x's \(H, W\) = \(1, 5\)",
        ),
    ],
)
def test_data_format_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
