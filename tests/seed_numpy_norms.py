"""A NumPy transcription of the course's normalisation layers, for tests.

The course builds these on the seed's batchnorm: spatial batchnorm reshapes
NCHW to ``(N*H*W, C)`` and calls ``batchnorm_forward``/``_backward``; layer
norm and group norm are written out with the backward pass through the
computational graph (mean, variance, then ``x_hat``), as the seed's
``batchnorm_backward`` is; ``batchnorm_backward_alt`` is the simplified
closed form. Used as the oracle for the norm functions of jaxlayers.compat.
"""

from __future__ import annotations

import numpy as np
import seed_numpy as seed


def batchnorm_backward_alt(dout, cache):
    eps, var, gamma, _beta, _x, x_hat, _mun, _xc = cache
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx = gamma / np.sqrt(var + eps) / n * (n * dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    n, c, h, w = x.shape
    out, cache = seed.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout, cache):
    n, c, h, w = dout.shape
    dx, dgamma, dbeta = seed.batchnorm_backward(dout.transpose(0, 2, 3, 1).reshape(-1, c), cache)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def _norm_rows_forward(x, eps):
    """Standardise each row of 2-D ``x``; returns ``x_hat`` and the graph's cache."""
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    var = (xc**2).mean(axis=1, keepdims=True)
    std = np.sqrt(var + eps)
    return xc / std, (xc, std)


def _norm_rows_backward(dx_hat, cache):
    """Chain rule through x_hat = xc / std, std = sqrt(var + eps), var = mean(xc^2), xc = x - mu."""
    xc, std = cache
    d = dx_hat.shape[1]
    dstd = -np.sum(dx_hat * xc, axis=1, keepdims=True) / std**2
    dvar = dstd / (2 * std)
    dxc = dx_hat / std + 2.0 / d * xc * dvar
    dmu = -np.sum(dxc, axis=1, keepdims=True)
    return dxc + dmu / d


def layernorm_forward(x, gamma, beta, ln_param):
    x_hat, rows = _norm_rows_forward(x, ln_param.get("eps", 1e-5))
    return gamma * x_hat + beta, (x_hat, gamma, rows)


def layernorm_backward(dout, cache):
    x_hat, gamma, rows = cache
    dgamma = np.sum(dout * x_hat, axis=0)
    dbeta = np.sum(dout, axis=0)
    return _norm_rows_backward(dout * gamma, rows), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    n, c, h, w = x.shape
    x_hat, rows = _norm_rows_forward(x.reshape(n * G, -1), gn_param.get("eps", 1e-5))
    x_hat = x_hat.reshape(n, c, h, w)
    return gamma * x_hat + beta, (x_hat, gamma, G, rows)


def spatial_groupnorm_backward(dout, cache):
    x_hat, gamma, G, rows = cache
    n = dout.shape[0]
    dgamma = np.sum(dout * x_hat, axis=(0, 2, 3), keepdims=True)
    dbeta = np.sum(dout, axis=(0, 2, 3), keepdims=True)
    dx = _norm_rows_backward((dout * gamma).reshape(n * G, -1), rows).reshape(dout.shape)
    return dx, dgamma, dbeta
