"""A NumPy transcription of the seed (shared/seed/layers_seed.txt), for tests.

Formulas are the seed's, line for line; only the scan damage to indentation
is repaired. Used as the oracle for jaxlayers.compat.
"""

from __future__ import annotations

import numpy as np


def affine_forward(x, w, b):
    xr = x.reshape(x.shape[0], -1)
    out = xr.dot(w) + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = np.dot(dout, w.T).reshape(x.shape)
    xr = x.reshape(x.shape[0], -1)
    dw = np.dot(xr.T, dout)
    db = np.sum(dout, axis=0)
    return dx, dw, db


def relu_forward(x):
    return x * (x > 0), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def batchnorm_forward(x, gamma, beta, bn_param):
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    n, d = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(d, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(d, dtype=x.dtype))
    if mode == "train":
        mun = np.mean(x, axis=0)
        var = np.var(x, axis=0)
        running_mean = momentum * running_mean + (1 - momentum) * mun
        running_var = momentum * running_var + (1 - momentum) * var
        xc = x - mun
        x_hat = (x - mun) / (np.sqrt(var + eps))
        out = gamma * x_hat + beta
        cache = eps, var, gamma, beta, x, x_hat, mun, xc
    elif mode == "test":
        xc = x - running_mean
        var = running_var
        mun = running_mean
        x_hat = (x - running_mean) / (np.sqrt(running_var + eps))
        out = gamma * x_hat + beta
        cache = eps, var, gamma, beta, x, x_hat, mun, xc
    else:
        raise ValueError('Invalid forward batchnorm mode "%s"' % mode)
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout, cache):
    eps, var, gamma, beta, x, x_hat, mun, xc = cache
    m = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * (x - mun) / np.sqrt(var + eps), axis=0)
    dxhat = dout * gamma
    dsiginv = np.sum(dxhat * xc, axis=0)
    dsig = dsiginv * -1 / (var + eps)
    dvar = dsig / 2 * 1 / np.sqrt(var + eps)
    dxc = dxhat / np.sqrt(var + eps)
    dxc += 2.0 / m * xc * dvar
    dmun = -np.sum(dxc / m, axis=0)
    dx = dmun + dxc
    return dx, dgamma, dbeta


def dropout_apply(x, mask, p):
    """The seed's train-mode dropout for a given boolean keep-mask."""
    m = mask / p
    return x * m


def svm_loss(x, y):
    n = x.shape[0]
    correct_class_scores = x[np.arange(n), y]
    margins = np.maximum(0, x - correct_class_scores[:, np.newaxis] + 1.0)
    margins[np.arange(n), y] = 0
    loss = np.sum(margins) / n
    num_pos = np.sum(margins > 0, axis=1)
    dx = np.zeros_like(x)
    dx[margins > 0] = 1
    dx[np.arange(n), y] -= num_pos
    dx /= n
    return loss, dx


def softmax_loss(x, y):
    probs = np.exp(x - np.max(x, axis=1, keepdims=True))
    probs /= np.sum(probs, axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.sum(np.log(np.maximum(probs[np.arange(n), y], 1e-8))) / n
    dx = probs.copy()
    dx[np.arange(n), y] -= 1
    dx /= n
    return loss, dx
