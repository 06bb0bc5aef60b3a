"""2-D convolution (cross-correlation), NCHW: ``out = conv(pad(x), w) + b``.

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
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxlayers._checks import (
    as_array,
    int_pair,
    require,
    require_float,
    require_rank,
    shape_of,
    stats_dtype,
)
from jaxlayers._oprule import custom_op

__all__ = ["conv2d", "conv2d_reference", "conv2d_fwd", "conv2d_bwd", "check_conv2d", "ConvResiduals"]

_NCHW = ("NCHW", "OIHW", "NCHW")


@partial(jax.tree_util.register_dataclass, data_fields=["x", "w"], meta_fields=["stride", "padding"])
@dataclasses.dataclass(frozen=True)
class ConvResiduals:
    """What the backward pass keeps: the inputs ``x``, ``w`` (no new memory).

    ``stride`` and ``padding`` are static ``(vertical, horizontal)`` pairs,
    carried in the pytree's structure (not as arrays), so that
    :func:`conv2d_bwd` needs nothing but the residuals and the cotangent.
    """

    x: jax.Array
    w: jax.Array
    stride: tuple[int, int]
    padding: tuple[int, int]


def conv2d_reference(x, w, b, *, stride=1, padding=0):
    """``lax.conv_general_dilated`` + bias, differentiated by JAX (the oracle).

    Same signature and result as :func:`conv2d`; no argument checks.
    """
    (sh, sw), (ph, pw) = int_pair(stride, "conv2d", "stride"), int_pair(padding, "conv2d", "padding", minimum=0)
    dtype = jnp.result_type(x, w, b)
    out = lax.conv_general_dilated(
        x.astype(dtype), w.astype(dtype), (sh, sw), ((ph, ph), (pw, pw)), dimension_numbers=_NCHW
    )
    return out + b.astype(dtype)[:, None, None]


def conv2d_fwd(x, w, b, *, stride=1, padding=0) -> tuple[jax.Array, ConvResiduals]:
    """Forward pass: ``out[n, f] = sum_c corr(pad(x[n, c]), w[f, c]) + b[f]``; residuals ``(x, w)``.

    ``x``, ``w`` and ``b`` must share one floating dtype (:func:`conv2d`
    promotes them first). Products are accumulated in at least float32
    (``preferred_element_type``) and the bias added there too; the result is
    cast to the inputs' dtype once, at the end.
    """
    stride, padding = int_pair(stride, "conv2d", "stride"), int_pair(padding, "conv2d", "padding", minimum=0)
    (ph, pw) = padding
    acc = stats_dtype(x.dtype)
    out = lax.conv_general_dilated(
        x, w, stride, ((ph, ph), (pw, pw)), dimension_numbers=_NCHW, preferred_element_type=acc
    )
    out = (out + b.astype(acc)[:, None, None]).astype(x.dtype)
    return out, ConvResiduals(x, w, stride, padding)


def conv2d_bwd(residuals: ConvResiduals, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Backward pass: ``(dx, dw, db)`` for ``g = dL/dout`` of shape ``(N, F, Ho, Wo)``.

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
    """
    x, w = residuals.x, residuals.w
    (sh, sw), (ph, pw) = residuals.stride, residuals.padding
    _, _, h, wd = x.shape
    _, _, hh, ww = w.shape
    g = g.astype(x.dtype)
    ho, wo = g.shape[2], g.shape[3]
    rh = (h + 2 * ph - hh) - (ho - 1) * sh
    rw = (wd + 2 * pw - ww) - (wo - 1) * sw
    acc = stats_dtype(x.dtype)
    db = jnp.sum(g, axis=(0, 2, 3), dtype=acc).astype(x.dtype)
    dx = lax.conv_general_dilated(
        g,
        w[:, :, ::-1, ::-1],
        (1, 1),
        ((hh - 1 - ph, hh - 1 - ph + rh), (ww - 1 - pw, ww - 1 - pw + rw)),
        lhs_dilation=(sh, sw),
        dimension_numbers=("NCHW", "IOHW", "NCHW"),
        preferred_element_type=acc,
    ).astype(x.dtype)
    # x read as (C, N, H, W): the batch axis N is contracted with g's, C plays the batch.
    dw = lax.conv_general_dilated(
        x,
        g,
        (1, 1),
        ((ph, ph - rh), (pw, pw - rw)),
        rhs_dilation=(sh, sw),
        dimension_numbers=("CNHW", "IOHW", "CNHW"),
        preferred_element_type=acc,
    ).astype(w.dtype)
    return dx, dw, db


_conv2d = custom_op(conv2d_reference, conv2d_fwd, conv2d_bwd, static=("stride", "padding"))


def check_conv2d(x, w, b, stride, padding):
    """``(x, w, b, stride, padding)`` as :func:`conv2d`'s rule takes them -- arrays
    promoted to one dtype, ``(vertical, horizontal)`` pairs -- or the error
    :func:`conv2d` raises (see its Raises)."""
    op = "conv2d"
    x, w, b = as_array(x, op, "x"), as_array(w, op, "w"), as_array(b, op, "b")
    for name, arr in (("x", x), ("w", w), ("b", b)):
        require_float(arr, op, name)
    require_rank(x, op, "x", rank=4)
    require_rank(w, op, "w", rank=4)
    stride = int_pair(stride, op, "stride", minimum=1)
    padding = int_pair(padding, op, "padding", minimum=0)
    xs, ws, bs = shape_of(x), shape_of(w), shape_of(b)
    require(
        ws[1] == xs[1],
        op,
        f"w has {ws[1]} input channels but x has {xs[1]} (x shape (N, C, H, W) = {xs}, w shape (F, C, HH, WW) = {ws})",
    )
    require(bs == (ws[0],), op, f"b must have shape ({ws[0]},) to match w's {ws[0]} filters (w shape {ws}), got {bs}")
    for axis, size, k, p in (("H", xs[2], ws[2], padding[0]), ("W", xs[3], ws[3], padding[1])):
        require(
            size + 2 * p >= k,
            op,
            f"kernel {ws[2]}x{ws[3]} is larger than the padded input along {axis}: {size} + 2 * {p} < {k} "
            f"(x shape {xs}, w shape {ws}, padding {padding}); the output would be empty",
        )
    dtype = jnp.result_type(x, w, b)
    return x.astype(dtype), w.astype(dtype), b.astype(dtype), stride, padding


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array, *, stride=1, padding=0) -> jax.Array:
    """2-D convolution (cross-correlation, NCHW) with a hand-derived backward pass.

    Args:
      x: inputs, shape ``(N, C, H, W)``, floating dtype (float16/bfloat16
        allowed: products then accumulate in float32). ``x``, ``w``, ``b``:
        arrays, NumPy arrays or nested lists of numbers.
      w: filters, shape ``(F, C, HH, WW)``.
      b: biases, shape ``(F,)``.
      stride: keyword, static: an int ``>= 1`` or a pair ``(sh, sw)``.
      padding: keyword, static: an int ``>= 0`` or a pair ``(ph, pw)`` of
        zeros added on *both* sides of ``H`` (resp. ``W``).

    Returns:
      ``out`` of shape ``(N, F, Ho, Wo)`` with ``Ho = 1 + (H + 2 ph - HH) //
      sh`` and ``Wo = 1 + (W + 2 pw - WW) // sw`` (rows and columns a stride
      does not reach are dropped)::

          out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * xp[n, c, sh*i + u, sw*j + v]

      where ``xp`` is ``x`` zero-padded; dtype the promotion of the inputs'
      dtypes.

    Raises:
      ValueError: at trace time, if ``x`` or ``w`` is not 4-D, ``w``'s ``C``
        differs from ``x``'s, ``b.shape != (F,)``, the kernel is larger than
        the padded input (an empty output), ``stride < 1`` or ``padding < 0``;
        the message names the argument and the shapes seen.
      TypeError: non-floating arrays; ``stride``/``padding`` not an int or a
        pair of ints.

    Backward (``custom_vjp``), for cotangent ``g`` of shape ``(N, F, Ho, Wo)``
    (stride ``s``, padding ``p``, ``r`` = rows of ``xp`` the forward never read)::

        db = g.sum(axis=(0, 2, 3))                                    # (F,)
        dw[f, c, u, v] = sum_{n, i, j} g[n, f, i, j] * xp[n, c, s*i + u, s*j + v]
        dx = corr(pad(dilate_s(g), (HH-1-p, HH-1-p+r)), flip(w).swap(F, C))   # (N, C, H, W)

    i.e. ``dw`` is the correlation of the padded input with ``g``, ``dx`` the
    transposed convolution of ``g`` with ``w``; both are one
    ``lax.conv_general_dilated`` each (see :func:`conv2d_bwd`).

    Residuals: ``x`` and ``w``, the op's own arguments (no new memory).

    Source: the NumPy original's ``conv_forward_naive`` /
    ``conv_backward_naive``; Dumoulin & Visin (2016) for the transposed
    convolution.

    Example:
      >>> import jax.numpy as jnp, jaxlayers as jl
      >>> jl.conv2d(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3)), jnp.zeros(4), padding=1).shape
      (2, 4, 8, 8)
    """
    x, w, b, stride, padding = check_conv2d(x, w, b, stride, padding)
    return _conv2d(x, w, b, stride=stride, padding=padding)
