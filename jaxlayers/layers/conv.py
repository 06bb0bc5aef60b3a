"""2-D convolution (cross-correlation), NCHW or NHWC: ``out = conv(pad(x), w) + b``.

Source of the maths: the NumPy original's ``conv_forward_naive`` /
``conv_backward_naive`` (zero padding on both sides, stride, no kernel flip)
and the usual derivation of the convolution's gradients as a transposed
convolution and a correlation (Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning", 2016, sections 2 and 4).

Four parts, as every jaxlayers op:

* :func:`conv2d_reference` -- ``lax.conv_general_dilated``; ``jax.grad`` of it is the oracle.
* :func:`conv2d_fwd` -- ``(x, w, b) -> (out, residuals)``; the residuals are ``x`` and ``w``.
* :func:`conv2d_bwd` -- ``(residuals, g) -> (dx, dw, db)``, each itself a convolution or a sum.
* :func:`conv2d` -- the public op: checked, ``custom_vjp``, jit-compiled.

Every part takes ``data_format="NCHW"`` (the NumPy original's layout) or
``"NHWC"`` (channels last, the layout XLA's CPU convolutions use: a network
kept in it pays no ``transpose_copy`` around each convolution). The filters
are ``(F, C, HH, WW)`` in both, so parameters do not depend on the layout.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import (
    as_array,
    check_data_format,
    int_pair,
    require,
    require_float,
    require_rank,
    shape_of,
    stats_dtype,
)
from jaxlayers._oprule import custom_op

__all__ = [
    "conv2d",
    "conv2d_reference",
    "conv2d_fwd",
    "conv2d_bwd",
    "conv2d_dx",
    "conv2d_dw",
    "dw_method",
    "check_conv2d",
    "ConvResiduals",
]

#: ``lax.conv_general_dilated`` dimension numbers of the forward convolution, per layout.
_DIMS = {"NCHW": ("NCHW", "OIHW", "NCHW"), "NHWC": ("NHWC", "OIHW", "NHWC")}


def _hw(shape, data_format: str) -> tuple[int, int]:
    """``(H, W)`` of a 4-D image shape in ``data_format``."""
    return (shape[2], shape[3]) if data_format == "NCHW" else (shape[1], shape[2])


def _bias(b, data_format: str):
    """``b (F,)`` shaped to broadcast along the channel axis."""
    return b[:, None, None] if data_format == "NCHW" else b


@partial(jax.tree_util.register_dataclass, data_fields=["x", "w"], meta_fields=["stride", "padding", "data_format"])
@dataclasses.dataclass(frozen=True)
class ConvResiduals:
    """What the backward pass keeps: the inputs ``x``, ``w`` (no new memory).

    ``stride`` and ``padding`` are static ``(vertical, horizontal)`` pairs and
    ``data_format`` ``"NCHW"`` or ``"NHWC"`` (``x``'s layout), carried in the
    pytree's structure (not as arrays), so that :func:`conv2d_bwd` needs
    nothing but the residuals and the cotangent.
    """

    x: jax.Array
    w: jax.Array
    stride: tuple[int, int]
    padding: tuple[int, int]
    data_format: str = "NCHW"


def conv2d_reference(x, w, b, *, stride=1, padding=0, data_format="NCHW"):
    """``lax.conv_general_dilated`` + bias, differentiated by JAX (the oracle).

    Same signature and result as :func:`conv2d`; no argument checks.
    """
    (sh, sw), (ph, pw) = int_pair(stride, "conv2d", "stride"), int_pair(padding, "conv2d", "padding", minimum=0)
    dtype = jnp.result_type(x, w, b)
    out = lax.conv_general_dilated(
        x.astype(dtype), w.astype(dtype), (sh, sw), ((ph, ph), (pw, pw)), dimension_numbers=_DIMS[data_format]
    )
    return out + _bias(b.astype(dtype), data_format)


def conv2d_fwd(x, w, b, *, stride=1, padding=0, data_format="NCHW") -> tuple[jax.Array, ConvResiduals]:
    """Forward pass: ``out[n, f] = sum_c corr(pad(x[n, c]), w[f, c]) + b[f]``; residuals ``(x, w)``.

    ``x``, ``w`` and ``b`` must share one floating dtype (:func:`conv2d`
    promotes them first). Products are accumulated in at least float32
    (``preferred_element_type``) and the bias added there too; the result is
    cast to the inputs' dtype once, at the end. ``data_format`` is ``x``'s
    and ``out``'s layout (``w`` is ``(F, C, HH, WW)`` in both): one
    ``lax.conv_general_dilated`` with dimension numbers ``(NCHW, OIHW,
    NCHW)`` or ``(NHWC, OIHW, NHWC)``.
    """
    stride, padding = int_pair(stride, "conv2d", "stride"), int_pair(padding, "conv2d", "padding", minimum=0)
    (ph, pw) = padding
    acc = stats_dtype(x.dtype)
    out = lax.conv_general_dilated(
        x, w, stride, ((ph, ph), (pw, pw)), dimension_numbers=_DIMS[data_format], preferred_element_type=acc
    )
    out = (out + _bias(b.astype(acc), data_format)).astype(x.dtype)
    return out, ConvResiduals(x, w, stride, padding, data_format)


def conv2d_bwd(residuals: ConvResiduals, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward pass: ``(dx, dw, db)`` for ``g = dL/dout`` of shape ``(N, F, Ho, Wo)`` (NHWC: ``(N, Ho, Wo, F)``).

    With stride ``s``, padding ``p``, ``xp = pad(x, p)`` and ``r = (H + 2p -
    HH) - (Ho - 1) * s`` the bottom rows of ``xp`` the forward pass never read
    (``r < s``; likewise ``r_w`` columns)::

        db[f]          = sum_{n, i, j} g[n, f, i, j]
        dw[f, c, u, v] = sum_{n, i, j} g[n, f, i, j] * xp[n, c, s*i + u, s*j + v]
        dx[n, c]       = sum_f corr(pad(dilate_s(g[n, f]), (HH-1-p, HH-1-p+r)), flip(w[f, c]))

    ``dw`` is the correlation of ``xp`` (its last ``r`` rows cropped) with
    ``g`` dilated by ``s``; ``dx`` the transposed convolution: ``g`` with
    ``s - 1`` zeros between its rows and columns, padded by ``HH - 1 - p``
    (plus ``r`` at the bottom, for the rows never read, whose gradient is
    zero), correlated with the kernel flipped in both spatial axes and its
    ``F``/``C`` axes swapped. Products accumulate in at least float32;
    ``db`` sums in at least float32; each gradient is cast to its primal's
    dtype once.

    Formulation, chosen per shape (and CPU) at trace time: ``dx`` is always
    one forward convolution (:func:`conv2d_dx`), which XLA runs at the
    forward's speed -- and which XLA drops as dead code under ``jit`` when
    ``x`` is not differentiated; ``dw`` is chunked im2col matrix products
    where :func:`dw_method` says they beat XLA's weight-gradient convolution
    (Intel CPUs, inputs of 16+ channels whose im2col block fits the cache),
    else that convolution (:func:`conv2d_dw`).

    NHWC residuals (``residuals.data_format``): the same sums with ``x``,
    ``g`` and ``dx`` channels last, computed in that layout directly -- the
    convolutions' dimension numbers say where the channels are, ``db`` sums
    axes ``(0, 1, 2)``; no activation is transposed.
    """
    x, w, fmt = residuals.x, residuals.w, residuals.data_format
    g = g.astype(x.dtype)
    acc = stats_dtype(x.dtype)
    db = jnp.sum(g, axis=(0, 2, 3) if fmt == "NCHW" else (0, 1, 2), dtype=acc).astype(x.dtype)
    dx = conv2d_dx(g, w, x.shape, stride=residuals.stride, padding=residuals.padding, data_format=fmt)
    dw = conv2d_dw(x, g, w.shape, stride=residuals.stride, padding=residuals.padding, data_format=fmt)
    return dx, dw.astype(w.dtype), db


def _unread(size: int, k: int, p: int, s: int, out: int) -> int:
    """Rows (or columns) at the end of the padded input the forward pass never read: ``r < s``."""
    return (size + 2 * p - k) - (out - 1) * s


def conv2d_dx(g, w, x_shape, *, stride=(1, 1), padding=(0, 0), data_format="NCHW") -> jax.Array:
    """``dx`` of :func:`conv2d`: the transposed convolution of ``g (N, F, Ho, Wo)`` with ``w (F, C, HH, WW)``.

    One ``lax.conv_general_dilated`` -- a *forward* convolution of ``g``
    (dilated by the stride, padded by ``HH - 1 - p`` plus the ``r`` unread
    rows at the bottom) with the kernel flipped in both spatial axes and its
    ``F``/``C`` axes swapped, which XLA's CPU backend runs at the forward
    convolution's speed (measured in ``bench/RESULTS.md``)::

        dx[n, c] = sum_f corr(pad(dilate_s(g[n, f]), (HH-1-p, HH-1-p+r)), flip(w[f, c]))

    Returns shape ``x_shape = (N, C, H, W)``, dtype ``g``'s; products
    accumulate in at least float32. ``stride``/``padding`` are ``(vertical,
    horizontal)`` pairs. ``data_format="NHWC"``: ``g`` is ``(N, Ho, Wo, F)``
    and the result ``x_shape = (N, H, W, C)`` (dimension numbers ``(NHWC,
    IOHW, NHWC)``; ``w`` stays ``(F, C, HH, WW)``). When ``x`` is not differentiated (a network's first
    layer under ``jax.grad`` of the parameters), this result is unused and,
    under ``jax.jit``, XLA removes it as dead code: it is never computed
    (``tests/test_conv_pool.py`` checks the compiled step).
    """
    (sh, sw), (ph, pw) = stride, padding
    h, wd = _hw(x_shape, data_format)
    _, _, hh, ww = w.shape
    ho, wo = _hw(g.shape, data_format)
    rh, rw = _unread(h, hh, ph, sh, ho), _unread(wd, ww, pw, sw, wo)
    return lax.conv_general_dilated(
        g,
        w[:, :, ::-1, ::-1].astype(g.dtype),
        (1, 1),
        ((hh - 1 - ph, hh - 1 - ph + rh), (ww - 1 - pw, ww - 1 - pw + rw)),
        lhs_dilation=(sh, sw),
        dimension_numbers=(data_format, "IOHW", data_format),
        preferred_element_type=stats_dtype(g.dtype),
    ).astype(g.dtype)


#: Largest im2col block (bytes) one step of :func:`conv2d_dw`'s scan builds,
#: so that it stays in the cache: 1-4 images of a CIFAR-sized layer.
IM2COL_BLOCK_BYTES = 5 * 2**20
#: At most this many images per scan step.
IM2COL_MAX_CHUNK = 4
#: Fewer input channels than this keep ``"conv"``: the ``HH*WW`` slices of a
#: thin input cost more than the matrix product saves (a first layer on RGB).
IM2COL_MIN_CHANNELS = 16


@functools.cache
def cpu_vendor() -> str:
    """This machine's CPU vendor string (``"GenuineIntel"``, ``"AuthenticAMD"``, ...), or ``""`` if unknown.

    Read once from ``/proc/cpuinfo`` (Linux); elsewhere ``""``.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def dw_method(x_shape, w_shape, vendor: str | None = None, data_format: str = "NCHW") -> str:
    """The formulation :func:`conv2d_dw` uses for ``method="auto"``: ``"im2col"`` or ``"conv"``.

    ``"im2col"`` (chunked matrix products) on an Intel CPU (``vendor``, by
    default :func:`cpu_vendor`, is ``"GenuineIntel"``) when ``x`` has at
    least :data:`IM2COL_MIN_CHANNELS` channels and one image's im2col block
    (``C*HH*WW x Ho*Wo`` values) fits :data:`IM2COL_BLOCK_BYTES`; else
    ``"conv"`` (XLA's weight-gradient convolution, what autodiff runs).

    Why, measured (``bench/RESULTS.md``, issue-20 section): XLA's CPU
    weight-gradient convolution reduces the batch and every pixel into a
    small ``(F, C, HH, WW)`` output. On a quiet 2-core Intel Xeon it ran
    4-5x slower than the forward convolution of the same FLOPs (146 ms
    against 30 ms at ``(64, 64, 32, 32) -> 64``), and the im2col products
    took 58 ms (6.0 against 17.5 ms at ``(64, 32, 16, 16) -> 64``). On the
    2-core AMD EPYC of the benchmarks (XLA's YNNPACK kernels) it costs only
    1.3-1.6x the forward and the im2col products took 20-35% *more* CPU
    time than it in every measurement (a ConvNet step with either: a tie),
    so there it stays. Thin inputs (``C = 3``: XLA's convolution as fast,
    2x faster for a 7x7 kernel) and images whose block would not stay in the
    cache keep ``"conv"`` everywhere. ``x_shape`` is in ``data_format``
    (``(N, C, H, W)`` or ``(N, H, W, C)``); the choice does not depend on it.
    """
    if data_format == "NCHW":
        _, c, h, wd = x_shape
    else:
        _, h, wd, c = x_shape
    _, _, hh, ww = w_shape
    fits = c * hh * ww * h * wd * 4 <= IM2COL_BLOCK_BYTES
    intel = (cpu_vendor() if vendor is None else vendor) == "GenuineIntel"
    return "im2col" if intel and c >= IM2COL_MIN_CHANNELS and fits else "conv"


def _chunk(n: int, per_image_bytes: int) -> int:
    """Images per scan step: the largest divisor of ``n`` up to :data:`IM2COL_MAX_CHUNK` whose block fits."""
    best = 1
    for k in range(1, min(n, IM2COL_MAX_CHUNK) + 1):
        if n % k == 0 and k * per_image_bytes <= IM2COL_BLOCK_BYTES:
            best = k
    return best


def conv2d_dw(x, g, w_shape, *, stride=(1, 1), padding=(0, 0), method="auto", data_format="NCHW") -> jax.Array:
    """``dw`` of :func:`conv2d`, ``(F, C, HH, WW)``, in at least float32 (the caller casts).

    ::

        dw[f, c, u, v] = sum_{n, i, j} g[n, f, i, j] * xp[n, c, s*i + u, s*j + v]

    with ``xp`` the zero-padded ``x (N, C, H, W)`` and ``g (N, F, Ho, Wo)``.
    Two exact formulations (they differ only in the order of the sums):

    * ``"conv"``: one ``lax.conv_general_dilated`` reading ``x`` as ``(C, N,
      H, W)`` -- the batch axis contracted with ``g``'s, ``C`` playing the
      batch -- correlated with ``g`` dilated by ``s``; what ``jax.grad`` of
      the reference runs.
    * ``"im2col"``: a ``lax.scan`` over chunks of ``k`` images (``k <=``
      :data:`IM2COL_MAX_CHUNK`, the im2col block at most
      :data:`IM2COL_BLOCK_BYTES`) that builds
      ``cols[k, (c, u, v), (i, j)] = xp[k, c, s*i + u, s*j + v]`` by
      ``HH*WW`` strided slices and accumulates ``g_k @ cols_k^T`` (an ``F x
      C*HH*WW`` matrix product) in float32.

    ``data_format="NHWC"``: ``x`` is ``(N, H, W, C)`` and ``g`` ``(N, Ho,
    Wo, F)``; ``"conv"`` reads ``x`` as ``CHWN`` and ``g`` as the kernel
    ``IHWO`` (dimension numbers ``(CHWN, IHWO, CNHW)``, the output directly
    ``(F, C, HH, WW)``), ``"im2col"`` stacks channels-last slices into
    ``cols[k, (i, j), (u, v, c)]`` and permutes the small ``(F, HH, WW, C)``
    product to ``(F, C, HH, WW)`` once. No activation is transposed.

    ``method="auto"`` picks by :func:`dw_method`. Half-precision inputs are
    multiplied as they are and accumulated in float32 in both. The two agree
    to float32 rounding of a different summation order (relative error
    ~1e-5 at 64 images of 64 x 32 x 32; ``tests/test_conv_pool.py``).

    Raises:
      ValueError: ``method`` not ``"auto"``, ``"conv"`` or ``"im2col"``.
    """
    (sh, sw), (ph, pw) = stride, padding
    nhwc = data_format == "NHWC"
    n, c, h, wd = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape
    _, _, hh, ww = w_shape
    f, ho, wo = (g.shape[3], g.shape[1], g.shape[2]) if nhwc else g.shape[1:]
    acc = stats_dtype(x.dtype)
    if method == "auto":
        method = dw_method(x.shape, w_shape, data_format=data_format)
    if method == "conv":
        rh, rw = _unread(h, hh, ph, sh, ho), _unread(wd, ww, pw, sw, wo)
        return lax.conv_general_dilated(
            x,
            g,
            (1, 1),
            ((ph, ph - rh), (pw, pw - rw)),
            rhs_dilation=(sh, sw),
            dimension_numbers=("CHWN", "IHWO", "CNHW") if nhwc else ("CNHW", "IOHW", "CNHW"),
            preferred_element_type=acc,
        )
    if method != "im2col":
        raise ValueError(f"conv2d_dw: method must be 'auto', 'conv' or 'im2col', got {method!r}")
    k = _chunk(n, c * hh * ww * ho * wo * x.dtype.itemsize)
    if nhwc:
        return _im2col_dw_nhwc(x, g, k, (hh, ww), stride, padding, acc)
    xp = jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    xs = xp.reshape(n // k, k, c, h + 2 * ph, wd + 2 * pw)
    gs = g.reshape(n // k, k, f, ho * wo)

    def step(total, chunk):
        xc, gc = chunk
        cols = jnp.stack(
            [
                lax.slice(xc, (0, 0, u, v), (k, c, u + sh * (ho - 1) + 1, v + sw * (wo - 1) + 1), (1, 1, sh, sw))
                for u in range(hh)
                for v in range(ww)
            ],
            axis=2,
        ).reshape(k, c * hh * ww, ho * wo)
        return total + jnp.einsum("kfp,kqp->fq", gc, cols, preferred_element_type=acc), None

    total, _ = lax.scan(step, jnp.zeros((f, c * hh * ww), acc), (xs, gs))
    return total.reshape(f, c, hh, ww)


def _im2col_dw_nhwc(x, g, k, kernel, stride, padding, acc):
    """:func:`conv2d_dw`'s ``"im2col"`` for channels-last ``x (N, H, W, C)``, ``g (N, Ho, Wo, F)``."""
    (hh, ww), (sh, sw), (ph, pw) = kernel, stride, padding
    n, h, wd, c = x.shape
    _, ho, wo, f = g.shape
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    xs = xp.reshape(n // k, k, h + 2 * ph, wd + 2 * pw, c)
    gs = g.reshape(n // k, k, ho * wo, f)

    def step(total, chunk):
        xc, gc = chunk
        cols = jnp.stack(
            [
                lax.slice(xc, (0, u, v, 0), (k, u + sh * (ho - 1) + 1, v + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
                for u in range(hh)
                for v in range(ww)
            ],
            axis=3,
        ).reshape(k, ho * wo, hh * ww * c)
        return total + jnp.einsum("kpf,kpq->fq", gc, cols, preferred_element_type=acc), None

    total, _ = lax.scan(step, jnp.zeros((f, hh * ww * c), acc), (xs, gs))
    return total.reshape(f, hh, ww, c).transpose(0, 3, 1, 2)


_conv2d = custom_op(conv2d_reference, conv2d_fwd, conv2d_bwd, static=("stride", "padding", "data_format"))


def check_conv2d(x, w, b, stride, padding, data_format="NCHW"):
    """``(x, w, b, stride, padding, data_format)`` as :func:`conv2d`'s rule takes them --
    arrays promoted to one dtype, ``(vertical, horizontal)`` pairs, ``"NCHW"`` or
    ``"NHWC"`` -- or the error :func:`conv2d` raises (see its Raises)."""
    op = "conv2d"
    data_format = check_data_format(data_format, op)
    x, w, b = as_array(x, op, "x"), as_array(w, op, "w"), as_array(b, op, "b")
    for name, arr in (("x", x), ("w", w), ("b", b)):
        require_float(arr, op, name)
    require_rank(x, op, "x", rank=4)
    require_rank(w, op, "w", rank=4)
    stride = int_pair(stride, op, "stride", minimum=1)
    padding = int_pair(padding, op, "padding", minimum=0)
    xs, ws, bs = shape_of(x), shape_of(w), shape_of(b)
    nhwc = data_format == "NHWC"
    c = xs[3] if nhwc else xs[1]
    xdesc = "(N, H, W, C)" if nhwc else "(N, C, H, W)"
    require(
        ws[1] == c,
        op,
        f"w has {ws[1]} input channels but x has {c} (data_format {data_format!r}: x shape {xdesc} = {xs}, "
        f"w shape (F, C, HH, WW) = {ws})",
    )
    require(bs == (ws[0],), op, f"b must have shape ({ws[0]},) to match w's {ws[0]} filters (w shape {ws}), got {bs}")
    (xh, xw) = _hw(xs, data_format)
    for axis, size, k, p in (("H", xh, ws[2], padding[0]), ("W", xw, ws[3], padding[1])):
        require(
            size + 2 * p >= k,
            op,
            f"kernel {ws[2]}x{ws[3]} is larger than the padded input along {axis}: {size} + 2 * {p} < {k} "
            f"(x shape {xs}, w shape {ws}, padding {padding}); the output would be empty",
        )
    dtype = jnp.result_type(x, w, b)
    return x.astype(dtype), w.astype(dtype), b.astype(dtype), stride, padding, data_format


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array, *, stride=1, padding=0, data_format="NCHW") -> jax.Array:
    """2-D convolution (cross-correlation, NCHW or NHWC) with a hand-derived backward pass.

    Args:
      x: inputs, shape ``(N, C, H, W)`` (``data_format="NHWC"``: ``(N, H, W,
        C)``), floating dtype (float16/bfloat16 allowed: products then
        accumulate in float32). ``x``, ``w``, ``b``: arrays, NumPy arrays or
        nested lists of numbers.
      w: filters, shape ``(F, C, HH, WW)`` in either layout (the NumPy
        original's; parameters and checkpoints do not depend on the layout).
      b: biases, shape ``(F,)``.
      stride: keyword, static: an int ``>= 1`` or a pair ``(sh, sw)``.
      padding: keyword, static: an int ``>= 0`` or a pair ``(ph, pw)`` of
        zeros added on *both* sides of ``H`` (resp. ``W``).
      data_format: keyword, static: ``"NCHW"`` (default, channels first) or
        ``"NHWC"`` (channels last: ``x`` and ``out`` hold the channels in
        their last axis). The values are the same, transposed; channels last
        is the layout XLA's CPU convolutions run in, so a network kept in it
        pays no layout copy around each convolution (``bench/RESULTS.md``).

    Returns:
      ``out`` of shape ``(N, F, Ho, Wo)`` (NHWC: ``(N, Ho, Wo, F)``) with
      ``Ho = 1 + (H + 2 ph - HH) // sh`` and ``Wo = 1 + (W + 2 pw - WW) //
      sw`` (rows and columns a stride does not reach are dropped)::

          out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xp[n, c, sh*i + u, sw*j + v]

      where ``xp`` is ``x`` zero-padded (written for NCHW; NHWC holds the
      same value at ``out[n, i, j, f]``); dtype the promotion of the inputs'
      dtypes.

    Raises:
      ValueError: at trace time, if ``x`` or ``w`` is not 4-D, ``w``'s ``C``
        differs from ``x``'s (the message names ``data_format`` and both
        shapes), ``b.shape != (F,)``, the kernel is larger than the padded
        input (an empty output), ``stride < 1``, ``padding < 0``, or
        ``data_format`` is not ``"NCHW"`` or ``"NHWC"``; the message names
        the argument and the shapes (or choices) seen.
      TypeError: non-floating arrays; ``stride``/``padding`` not an int or a
        pair of ints.

    Backward (``custom_vjp``), for cotangent ``g`` of shape ``(N, F, Ho, Wo)``
    (NHWC: ``(N, Ho, Wo, F)``, the same formulas computed channels last
    without transposing ``x`` or ``g``; stride ``s``, padding ``p``, ``r`` =
    rows of ``xp`` the forward never read)::

        db = g.sum(axis=(0, 2, 3))                                    # (F,)
        dw[f, c, u, v] = sum_{n, i, j} g[n, f, i, j] * xp[n, c, s*i + u, s*j + v]
        dx = corr(pad(dilate_s(g), (HH-1-p, HH-1-p+r)), flip(w).swap(F, C))   # (N, C, H, W)

    i.e. ``dw`` is the correlation of the padded input with ``g``, ``dx`` the
    transposed convolution of ``g`` with ``w``. How each is computed is
    chosen per shape for speed, the result being the same up to float32
    summation order: ``dx`` is one forward ``lax.conv_general_dilated``
    (:func:`~jaxlayers.layers.conv.conv2d_dx`; under ``jit`` it is never
    computed when ``x`` is not differentiated, e.g. a network's first
    layer); ``dw`` is a ``lax.scan`` of im2col matrix products over chunks
    of 1-4 images, accumulated in float32, on Intel CPUs for inputs of 16+
    channels whose im2col block fits the cache -- XLA's CPU weight-gradient
    convolution ran 2.5x slower than those products on a 2-core Intel Xeon
    -- and that convolution otherwise (on the AMD EPYC of
    ``bench/RESULTS.md`` it was the faster of the two) (:func:`~jaxlayers.layers.conv.dw_method`,
    :func:`~jaxlayers.layers.conv.conv2d_dw`).

    Residuals: ``x`` and ``w``, the op's own arguments (no new memory).

    Source: the NumPy original's ``conv_forward_naive`` /
    ``conv_backward_naive``; Dumoulin & Visin (2016) for the transposed
    convolution.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.conv2d(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)), jnp.zeros(4), padding=1).shape
      (2, 4, 8, 8)
      >>> jl.conv2d(jnp.ones((2, 8, 8, 3)), jnp.ones((4, 3, 3, 3)), jnp.zeros(4), padding=1, data_format="NHWC").shape
      (2, 8, 8, 4)
    """
    x, w, b, stride, padding, data_format = check_conv2d(x, w, b, stride, padding, data_format)
    return _conv2d(x, w, b, stride=stride, padding=padding, data_format=data_format)
