"""Non-JAX peers: (d) PyTorch eager on the CPU, (e) NumPy transcription of the seed."""

from __future__ import annotations

import numpy as np

from bench.common import Workload, cores

EPS = 1e-5
MOMENTUM = 0.9


# --------------------------------------------------------------------------
# (d) PyTorch eager
# --------------------------------------------------------------------------


class TorchStepper:
    """PyTorch eager ``nn.Sequential`` + ``torch.optim.Adam``; ``()`` runs one step."""

    def __init__(self, w: Workload, params_np, x_np, y_np):
        import torch
        from torch import nn

        torch.set_num_threads(cores())
        self.torch = torch
        layers: list[nn.Module] = []
        d = w.dims
        for i in range(1, len(d)):
            lin = nn.Linear(d[i - 1], d[i])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(params_np[f"W{i}"].T.copy()))
                lin.bias.copy_(torch.from_numpy(params_np[f"b{i}"]))
            layers.append(lin)
            if i < len(d) - 1:
                # torch's momentum is the weight of the NEW batch statistic.
                layers += [nn.BatchNorm1d(d[i], eps=EPS, momentum=1 - MOMENTUM), nn.ReLU(), nn.Dropout(w.rate)]
        self.model = nn.Sequential(*layers).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=w.lr)
        self.x = torch.from_numpy(x_np)
        self.y = torch.from_numpy(y_np.astype(np.int64))
        self.loss_fn = nn.CrossEntropyLoss()

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss


# --------------------------------------------------------------------------
# (e) NumPy: the seed's formulas, float32, hand-written Adam
# --------------------------------------------------------------------------


def affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b, (x, w, b)


def affine_backward(dout, cache):
    x, w, _ = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    return x * (x > 0), x


def relu_backward(dout, x):
    return dout * (x > 0)


def batchnorm_forward(x, gamma, beta, bn):
    mun = x.mean(axis=0)
    var = x.var(axis=0)
    bn["running_mean"] = MOMENTUM * bn["running_mean"] + (1 - MOMENTUM) * mun
    bn["running_var"] = MOMENTUM * bn["running_var"] + (1 - MOMENTUM) * var
    xc = x - mun
    x_hat = xc / np.sqrt(var + EPS)
    return gamma * x_hat + beta, (EPS, var, gamma, beta, x, x_hat, mun, xc)


def batchnorm_backward(dout, cache):
    """The seed's chain rule through mean and variance, line for line."""
    eps, var, gamma, _beta, x, _x_hat, mun, xc = cache
    m = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * (x - mun) / np.sqrt(var + eps)).sum(axis=0)
    dxhat = dout * gamma
    dsiginv = (dxhat * xc).sum(axis=0)
    dsig = dsiginv * -1 / (var + eps)
    dvar = dsig / 2 * 1 / np.sqrt(var + eps)
    dxc = dxhat / np.sqrt(var + eps)
    dxc += 2.0 / m * xc * dvar
    dmun = -(dxc / m).sum(axis=0)
    return dmun + dxc, dgamma, dbeta


def dropout_forward(x, p, rng):
    mask = (rng.random(x.shape, dtype=np.float32) < p) / np.float32(p)
    return x * mask, mask


def dropout_backward(dout, mask):
    return dout * mask


def softmax_loss(x, y):
    probs = np.exp(x - x.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.log(np.maximum(probs[np.arange(n), y], 1e-8)).sum() / n
    dx = probs.copy()
    dx[np.arange(n), y] -= 1
    dx /= n
    return loss, dx


class NumpyStepper:
    """The seed's layer functions composed by hand, float32, with Adam written out."""

    def __init__(self, w: Workload, params_np, x_np, y_np, b1=0.9, b2=0.999, eps=1e-8):
        self.w = w
        self.p = {k: v.copy() for k, v in params_np.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0
        self.bn = [{"running_mean": np.zeros(h, np.float32), "running_var": np.ones(h, np.float32)} for h in w.hidden]
        self.x, self.y = x_np, y_np
        self.rng = np.random.default_rng(0)
        self.b1, self.b2, self.eps = np.float32(b1), np.float32(b2), np.float32(eps)

    def __call__(self):
        p, w, nh = self.p, self.w, len(self.w.hidden)
        keep = 1.0 - w.rate
        caches = []
        h = self.x
        for i in range(1, nh + 1):
            h, c1 = affine_forward(h, p[f"W{i}"], p[f"b{i}"])
            h, c2 = batchnorm_forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn[i - 1])
            h, c3 = relu_forward(h)
            h, c4 = dropout_forward(h, keep, self.rng)
            caches.append((c1, c2, c3, c4))
        scores, cl = affine_forward(h, p[f"W{nh + 1}"], p[f"b{nh + 1}"])
        loss, d = softmax_loss(scores, self.y)
        g = {}
        d, g[f"W{nh + 1}"], g[f"b{nh + 1}"] = affine_backward(d, cl)
        for i in range(nh, 0, -1):
            c1, c2, c3, c4 = caches[i - 1]
            d = dropout_backward(d, c4)
            d = relu_backward(d, c3)
            d, g[f"gamma{i}"], g[f"beta{i}"] = batchnorm_backward(d, c2)
            d, g[f"W{i}"], g[f"b{i}"] = affine_backward(d, c1)
        self.t += 1
        b1, b2 = self.b1, self.b2
        c1 = np.float32(1 - b1**self.t)
        c2 = np.float32(1 - b2**self.t)
        lr = np.float32(w.lr)
        for k, gk in g.items():
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * gk
            v *= b2
            v += (1 - b2) * (gk * gk)
            p[k] -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
        return loss
