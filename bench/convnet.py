"""ConvNet training step: jaxlayers against the same network in Flax linen and PyTorch eager.

One Adam step (forward, softmax loss, backward, optax/torch Adam update,
running statistics) in float32 on a CIFAR-shaped minibatch, N=64 x (3, 32,
32), for two networks:

* ``convnet``: ``jl.ConvNet(conv_channels=(32, 64), filter_size=3,
  conv_norm="batchnorm", pool_size=2, hidden_dims=(256,))`` --
  {conv 3x3 same - spatial batchnorm - relu - 2x2 max pool} x 2 - affine 256 -
  relu - affine 10;
* ``three_layer``: ``jl.ThreeLayerConvNet()`` with its defaults -- conv 32
  filters 7x7 same - relu - 2x2 max pool - affine 100 - relu - affine 10.

Peers, each starting from jaxlayers' initial parameters and the same batch:

(a) jaxlayers: the model + ``jaxlayers.train.make_train_step`` (NCHW; the
    step donates its state);
(b) Flax linen, ``nn.Conv`` (SAME) / ``nn.BatchNorm`` / ``nn.max_pool`` /
    ``nn.Dense`` in Flax's native NHWC layout: the batch is transposed to NHWC
    once, outside the timed step, the kernels to HWIO and the first dense
    layer's rows to the NHWC flattening order, so both compute the same
    function; optax adam, one jitted step that donates its carry;
(c) PyTorch eager on the CPU (NCHW, ``torch.set_num_threads(cores)``,
    ``torch.optim.Adam``), when torch is installed;
(d) plain ``jax.grad`` of the same network written with ``lax`` ops in NCHW
    (``lax.conv_general_dilated``, ``jnp`` batch norm, ``lax.reduce_window``
    max pool), optax adam;
(e) Equinox (``eqx.nn.Conv2d`` / ``BatchNorm(mode="batch")`` /
    ``MaxPool2d`` / ``Linear``, per-example modules ``vmap``-ed over the
    batch as Equinox users write them, NCHW), optax adam, when equinox is
    installed.

Steps are timed interleaved (:mod:`bench.common`): ratios are "jaxlayers /
peer", the median over rounds of the per-round ratio. Also the bytes
``jax.vjp`` of each JAX peer's loss saves for the backward pass
(:func:`bench.peers_jax.residual_bytes`). Run alone with ``python -m
bench.convnet [--rounds N]``; ``python -m bench`` includes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlayers as jl
from bench.common import cores, interleaved, iqr, median, paired_ratio
from bench.peers_jax import compile_seconds, residual_bytes, softmax_xent

#: Targets (issue 20): the jaxlayers ConvNet step at most 0.75x Flax linen's and 1.5x PyTorch eager's.
TARGETS = {"convnet step: jaxlayers / Flax": 0.75, "convnet step: jaxlayers / PyTorch": 1.5}

EPS = 1e-5
MOMENTUM = 0.9
BATCH = 64
INPUT = (3, 32, 32)
CLASSES = 10
LR = 1e-3


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """The network, peer-neutral: conv blocks (filters, kernel, batchnorm?, pool), then the affine layers."""

    name: str
    label: str
    make_model: Callable[[], Any]
    conv: tuple[tuple[int, int, bool, int], ...]
    hidden: tuple[int, ...]

    def flops(self) -> float:
        """Multiply-adds x 2 of forward + backward (dW and, past the first layer, dx): ``3x`` forward but the first conv's dx."""
        c, h, w = INPUT
        total = 0.0
        for i, (f, k, _, pool) in enumerate(self.conv):
            fwd = 2.0 * BATCH * h * w * f * c * k * k
            total += fwd * (2 if i == 0 else 3)
            c, h, w = f, h // pool, w // pool
        dims = (c * h * w, *self.hidden, CLASSES)
        for a, b in itertools.pairwise(dims):
            total += 6.0 * BATCH * a * b
        return total


def _convnet():
    return jl.ConvNet(
        input_dim=INPUT,
        conv_channels=(32, 64),
        filter_size=3,
        conv_norm="batchnorm",
        pool_size=2,
        hidden_dims=(256,),
        dropout_rate=0.0,
        num_classes=CLASSES,
        dtype=jnp.float32,
    )


def _three_layer():
    return jl.ThreeLayerConvNet(input_dim=INPUT, num_classes=CLASSES, dtype=jnp.float32)


SPECS = {
    "convnet": ConvSpec(
        "convnet",
        "ConvNet(conv_channels=(32, 64), filter_size=3, conv_norm='batchnorm', pool_size=2, hidden_dims=(256,))",
        _convnet,
        ((32, 3, True, 2), (64, 3, True, 2)),
        (256,),
    ),
    "three_layer": ConvSpec(
        "three_layer",
        "ThreeLayerConvNet() (32 filters 7x7, hidden 100)",
        _three_layer,
        ((32, 7, False, 2),),
        (100,),
    ),
}

PEER_LABELS = {
    "jaxlayers": "(a) jaxlayers + make_train_step",
    "jaxlayers_nchw": "(a') jaxlayers ConvNet(conv_layout='NCHW')",
    "flax": "(b) Flax linen (NHWC)",
    "torch": "(c) PyTorch eager",
    "autodiff": "(d) plain jax.grad (lax, NCHW)",
    "equinox": "(e) Equinox (vmap, NCHW)",
}


def make_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, *INPUT), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=BATCH).astype(np.int32)
    return x, y


def _np(tree):
    return jax.tree.map(np.asarray, tree)


# --------------------------------------------------------------------------
# (a) jaxlayers
# --------------------------------------------------------------------------


class _Stepper:
    """A jitted ``step(carry, x, y) -> (carry, metrics_or_loss)`` and its carry; ``()`` runs one step."""

    def __init__(self, step, carry, x, y, loss_of: Callable = lambda out: out):
        self.step, self.carry, self.x, self.y, self.loss_of = step, carry, x, y, loss_of
        self.cpu: list[float] = []  # this process's CPU seconds per call (all its threads)

    def __call__(self):
        c = time.process_time()
        self.carry, out = self.step(self.carry, self.x, self.y)
        out = self.loss_of(out).block_until_ready()
        self.cpu.append(time.process_time() - c)
        return out


def _adam_stepper(loss_fn, params, st, x, y, new_state=lambda aux: aux) -> tuple[_Stepper, dict, float]:
    """One jitted Adam step of ``loss_fn(params, st, x, y, key) -> (loss, aux)`` (``new_state(aux)`` the
    next ``st``), its saved residual bytes and compile seconds: the tail every JAX peer shares."""
    opt = optax.adam(LR)

    def step(carry, x, y):
        params, st, opt_state = carry
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, st, x, y, None)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_state(aux), opt_state), loss

    res = residual_bytes(loss_fn, params, st, x, y, None)
    jitted = jax.jit(step, donate_argnums=(0,))
    carry = (params, st, opt.init(params))
    compile_s = compile_seconds(jitted, carry, x, y)
    return _Stepper(jitted, carry, x, y), res, compile_s


def jaxlayers_peer(model, params, state, x, y) -> tuple[_Stepper, dict, float]:
    opt = optax.adam(LR)
    params = jax.tree.map(jnp.asarray, params)
    state = jax.tree.map(jnp.asarray, state)
    carry = jl.train.TrainState(params, state, opt.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))
    step = jl.train.make_train_step(model, opt)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(p, s, x, y, k):
        return model.loss(p, s, x, y, key=k)

    res = residual_bytes(loss_fn, params, state, xj, yj, jax.random.key(1))
    t0 = time.perf_counter()
    stepper = _Stepper(step, carry, xj, yj, loss_of=lambda m: m["loss"])
    stepper()  # compiles (and takes one step)
    return stepper, res, time.perf_counter() - t0


# --------------------------------------------------------------------------
# (b) Flax linen, NHWC
# --------------------------------------------------------------------------


def _dense_rows_nhwc(w, c: int, h: int, wd: int):
    """Rows of a dense kernel from NCHW flattening order ``(c, h, w)`` to NHWC's ``(h, w, c)``."""
    return w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)


def flax_params(spec: ConvSpec, params, state) -> tuple[dict, dict]:
    """jaxlayers' ``params``/``state`` as the Flax module's ``params``/``batch_stats`` (same function)."""
    p, stats = {}, {}
    c, h, w = INPUT
    i = 0
    for i, (f, _, bn, pool) in enumerate(spec.conv, start=1):
        p[f"conv{i}"] = {"kernel": params[f"W{i}"].transpose(2, 3, 1, 0), "bias": params[f"b{i}"]}
        if bn:
            p[f"bn{i}"] = {"scale": params[f"gamma{i}"], "bias": params[f"beta{i}"]}
            stats[f"bn{i}"] = {"mean": state[f"bn{i}"].mean, "var": state[f"bn{i}"].var}
        c, h, w = f, h // pool, w // pool
    for j in range(len(spec.hidden) + 1):
        k = i + 1 + j
        wk = params[f"W{k}"]
        p[f"dense{k}"] = {"kernel": _dense_rows_nhwc(wk, c, h, w) if j == 0 else wk, "bias": params[f"b{k}"]}
    return p, stats


def flax_module(spec: ConvSpec):
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            i = 0
            for i, (f, k, bn, pool) in enumerate(spec.conv, start=1):
                x = nn.Conv(f, (k, k), padding="SAME", name=f"conv{i}")(x)
                if bn:
                    x = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=EPS, name=f"bn{i}")(x)
                x = nn.relu(x)
                if pool > 1:
                    x = nn.max_pool(x, (pool, pool), strides=(pool, pool), padding="VALID")
            x = x.reshape(x.shape[0], -1)
            for j, d in enumerate(spec.hidden):
                x = nn.relu(nn.Dense(d, name=f"dense{i + 1 + j}")(x))
            return nn.Dense(CLASSES, name=f"dense{i + 1 + len(spec.hidden)}")(x)

    return Net()


def flax_peer(spec: ConvSpec, params, state, x, y) -> tuple[_Stepper, dict, float]:
    net = flax_module(spec)
    p, stats = flax_params(spec, jax.tree.map(jnp.asarray, params), state)
    x_nhwc = jnp.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # once, outside the timed step
    ref = jax.eval_shape(lambda: net.init(jax.random.key(0), x_nhwc[:1], train=False))
    assert jax.tree.structure(ref["params"]) == jax.tree.structure(p), "flax params tree mismatch"

    def loss_fn(params, batch_stats, x, y, key):
        del key
        scores, upd = net.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
        return softmax_xent(scores, y), (upd.get("batch_stats", {}), scores)

    return _adam_stepper(loss_fn, p, stats, x_nhwc, jnp.asarray(y), new_state=lambda aux: aux[0])


def flax_scores(spec: ConvSpec, params, state, x) -> np.ndarray:
    """Train-mode scores of the Flax network for NCHW ``x`` (to check it is the same function)."""
    net = flax_module(spec)
    p, stats = flax_params(spec, jax.tree.map(jnp.asarray, params), state)
    out, _ = net.apply(
        {"params": p, "batch_stats": stats}, jnp.asarray(x.transpose(0, 2, 3, 1)), train=True, mutable=["batch_stats"]
    )
    return np.asarray(out)


# --------------------------------------------------------------------------
# (d) plain jax.grad, NCHW
# --------------------------------------------------------------------------


def _plain_forward(spec: ConvSpec, params, state, x):
    """Train-mode scores and new running statistics of the network in ``lax``/``jnp`` ops, NCHW."""
    from jax import lax

    h, new_state, i = x, {}, 0
    for i, (_, k, bn, pool) in enumerate(spec.conv, start=1):
        h = lax.conv_general_dilated(
            h, params[f"W{i}"], (1, 1), ((k // 2, k // 2),) * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        h = h + params[f"b{i}"][:, None, None]
        if bn:
            mean, var = h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
            h = (h - mean[:, None, None]) * lax.rsqrt(var + EPS)[:, None, None]
            h = h * params[f"gamma{i}"][:, None, None] + params[f"beta{i}"][:, None, None]
            old_mean, old_var = state[f"bn{i}"]
            new_state[f"bn{i}"] = (
                MOMENTUM * old_mean + (1 - MOMENTUM) * mean,
                MOMENTUM * old_var + (1 - MOMENTUM) * var,
            )
        h = jnp.maximum(h, 0.0)
        if pool > 1:
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, pool, pool), (1, 1, pool, pool), "VALID")
    h = h.reshape(h.shape[0], -1)
    for j in range(len(spec.hidden) + 1):
        k = i + 1 + j
        h = h @ params[f"W{k}"] + params[f"b{k}"]
        if j < len(spec.hidden):
            h = jnp.maximum(h, 0.0)
    return h, new_state


def autodiff_peer(spec: ConvSpec, params, state, x, y) -> tuple[_Stepper, dict, float]:
    p = jax.tree.map(jnp.asarray, params)
    st = {
        f"bn{i}": (jnp.asarray(state[f"bn{i}"].mean), jnp.asarray(state[f"bn{i}"].var))
        for i, c in enumerate(spec.conv, start=1)
        if c[2]
    }

    def loss_fn(params, st, x, y, key):
        del key
        scores, new_st = _plain_forward(spec, params, st, x)
        return softmax_xent(scores, y), new_st

    return _adam_stepper(loss_fn, p, st, jnp.asarray(x), jnp.asarray(y))


def autodiff_scores(spec: ConvSpec, params, state, x) -> np.ndarray:
    st = {f"bn{i}": (state[f"bn{i}"].mean, state[f"bn{i}"].var) for i, c in enumerate(spec.conv, start=1) if c[2]}
    return np.asarray(_plain_forward(spec, jax.tree.map(jnp.asarray, params), st, jnp.asarray(x))[0])


# --------------------------------------------------------------------------
# (e) Equinox
# --------------------------------------------------------------------------


def _equinox_available() -> bool:
    try:
        import equinox  # noqa: F401
    except ImportError:
        return False
    return True


def equinox_model(spec: ConvSpec, params):
    """``(model, state)``: the network as Equinox modules holding jaxlayers' initial parameters."""
    import equinox as eqx

    class Net(eqx.Module):
        blocks: list
        linears: list

        def __call__(self, x, state):
            for conv, bn, pool in self.blocks:
                x = conv(x)
                if bn is not None:
                    x, state = bn(x, state)
                x = jax.nn.relu(x)
                if pool is not None:
                    x = pool(x)
            x = x.reshape(-1)
            for lin in self.linears[:-1]:
                x = jax.nn.relu(lin(x))
            return self.linears[-1](x), state

    def make():
        key = jax.random.key(0)
        blocks, c, h, w, i = [], *INPUT, 0
        for i, (f, k, bn, pool) in enumerate(spec.conv, start=1):
            conv = eqx.nn.Conv2d(c, f, k, padding=k // 2, key=key)
            conv = eqx.tree_at(
                lambda m: (m.weight, m.bias),
                conv,
                (jnp.asarray(params[f"W{i}"]), jnp.asarray(params[f"b{i}"])[:, None, None]),
            )
            norm = None
            if bn:
                norm = eqx.nn.BatchNorm(f, axis_name="batch", eps=EPS, momentum=MOMENTUM, mode="batch")
                norm = eqx.tree_at(
                    lambda m: (m.weight, m.bias),
                    norm,
                    (jnp.asarray(params[f"gamma{i}"]), jnp.asarray(params[f"beta{i}"])),
                )
            blocks.append((conv, norm, eqx.nn.MaxPool2d(pool, pool) if pool > 1 else None))
            c, h, w = f, h // pool, w // pool
        dims, linears = (c * h * w, *spec.hidden, CLASSES), []
        for j in range(len(dims) - 1):
            k = i + 1 + j
            lin = eqx.nn.Linear(dims[j], dims[j + 1], key=key)
            lin = eqx.tree_at(
                lambda m: (m.weight, m.bias), lin, (jnp.asarray(params[f"W{k}"]).T, jnp.asarray(params[f"b{k}"]))
            )
            linears.append(lin)
        return Net(blocks, linears)

    return eqx.nn.make_with_state(make)()


def _equinox_apply(model, state, x):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)


def equinox_peer(spec: ConvSpec, params, x, y) -> tuple[_Stepper, dict, float]:
    import equinox as eqx

    model, state = equinox_model(spec, params)
    p, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(p, state, x, y, key):
        del key
        scores, state = _equinox_apply(eqx.combine(p, static), state, x)
        return softmax_xent(scores, y), state

    return _adam_stepper(loss_fn, p, state, jnp.asarray(x), jnp.asarray(y))


def equinox_scores(spec: ConvSpec, params, x) -> np.ndarray:
    model, state = equinox_model(spec, params)
    return np.asarray(_equinox_apply(model, state, jnp.asarray(x))[0])


# --------------------------------------------------------------------------
# (c) PyTorch eager
# --------------------------------------------------------------------------


class TorchStepper:
    """``nn.Sequential`` of the same network, NCHW, ``torch.optim.Adam``; ``()`` runs one step."""

    def __init__(self, spec: ConvSpec, params, x, y):
        import torch
        from torch import nn

        torch.set_num_threads(cores())
        self.torch = torch
        layers: list[nn.Module] = []
        c, h, w = INPUT
        i = 0
        with torch.no_grad():
            for i, (f, k, bn, pool) in enumerate(spec.conv, start=1):
                conv = nn.Conv2d(c, f, k, padding=k // 2)
                conv.weight.copy_(torch.from_numpy(np.array(params[f"W{i}"])))
                conv.bias.copy_(torch.from_numpy(np.array(params[f"b{i}"])))
                layers.append(conv)
                if bn:
                    norm = nn.BatchNorm2d(f, eps=EPS, momentum=1 - MOMENTUM)  # torch: weight of the NEW statistic
                    norm.weight.copy_(torch.from_numpy(np.array(params[f"gamma{i}"])))
                    norm.bias.copy_(torch.from_numpy(np.array(params[f"beta{i}"])))
                    layers.append(norm)
                layers.append(nn.ReLU())
                if pool > 1:
                    layers.append(nn.MaxPool2d(pool))
                c, h, w = f, h // pool, w // pool
            layers.append(nn.Flatten())
            dims = (c * h * w, *spec.hidden, CLASSES)
            for j in range(len(dims) - 1):
                k = i + 1 + j
                lin = nn.Linear(dims[j], dims[j + 1])
                lin.weight.copy_(torch.from_numpy(np.array(params[f"W{k}"]).T.copy()))
                lin.bias.copy_(torch.from_numpy(np.array(params[f"b{k}"])))
                layers.append(lin)
                if j < len(dims) - 2:
                    layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.y = torch.from_numpy(y.astype(np.int64))
        self.loss_fn = nn.CrossEntropyLoss()

    def scores(self) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.x).numpy()

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# the measurement
# --------------------------------------------------------------------------


def _rel_diff(theirs, ours) -> float:
    ours = np.asarray(ours)
    return float(np.max(np.abs(np.asarray(theirs) - ours)) / np.max(np.abs(ours)))


def run_spec(spec: ConvSpec, rounds: int, per_round: int, skip: set[str], log=print, budget_s: float | None = 90.0):
    model = spec.make_model()
    params, state = _np(model.init(jax.random.key(0)))
    x, y = make_batch()
    ours, _ = model.apply(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, state), x, train=True)
    steppers, residuals, compile_s = {}, {}, {}
    log(f"  building jaxlayers ({spec.name}) ...")
    steppers["jaxlayers"], residuals["jaxlayers"], compile_s["jaxlayers"] = jaxlayers_peer(model, params, state, x, y)
    max_diff = {}
    if isinstance(model, jl.ConvNet) and model.conv_layout == "NHWC" and "jaxlayers_nchw" not in skip:
        # the same network run channels first layer by layer (issue 20's before): what channels last saves
        log("  building jaxlayers, conv_layout='NCHW' ...")
        nchw = dataclasses.replace(model, conv_layout="NCHW")
        jp, js = jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, state)
        max_diff["jaxlayers_nchw"] = _rel_diff(nchw.apply(jp, js, x, train=True)[0], ours)
        steppers["jaxlayers_nchw"], residuals["jaxlayers_nchw"], compile_s["jaxlayers_nchw"] = jaxlayers_peer(
            nchw, params, state, x, y
        )
    if "flax" not in skip:
        log("  building flax ...")
        max_diff["flax"] = _rel_diff(flax_scores(spec, params, state, x), ours)
        steppers["flax"], residuals["flax"], compile_s["flax"] = flax_peer(spec, params, state, x, y)
    if "autodiff" not in skip:
        log("  building plain jax.grad ...")
        max_diff["autodiff"] = _rel_diff(autodiff_scores(spec, params, state, x), ours)
        steppers["autodiff"], residuals["autodiff"], compile_s["autodiff"] = autodiff_peer(spec, params, state, x, y)
    if "equinox" not in skip and _equinox_available():
        log("  building equinox ...")
        max_diff["equinox"] = _rel_diff(equinox_scores(spec, params, x), ours)
        steppers["equinox"], residuals["equinox"], compile_s["equinox"] = equinox_peer(spec, params, x, y)
    torch_note = None
    if "torch" not in skip:
        if _torch_available():
            steppers["torch"] = TorchStepper(spec, params, x, y)
            max_diff["torch"] = _rel_diff(steppers["torch"].scores(), ours)
        else:
            torch_note = "torch not installed: PyTorch peer skipped"
            log(f"  {torch_note}")
    for peer, d in max_diff.items():
        log(f"  same function: max |scores(jaxlayers) - scores({peer})| / max |scores| = {d:.1e}")
    # Two groups, as bench.run: the JAX peers first, then jaxlayers with PyTorch
    # (whose OpenMP threads spin after each call and would tax the next JAX peer).
    group1 = {k: v for k, v in steppers.items() if k != "torch"}
    log(f"  timing {', '.join(group1)}: {rounds} rounds x {per_round} steps ...")
    t0 = time.perf_counter()
    cpu, cpu2 = {}, {}
    for st in group1.values():
        st.cpu = []
    times = interleaved(group1, rounds=rounds, per_round=per_round, budget_s=budget_s)
    for k, st in group1.items():  # CPU seconds of the timed calls (the warm-up calls dropped)
        cpu[k] = st.cpu[-len(times[k]) :] if isinstance(st, _Stepper) else []
    log(f"  ... {time.perf_counter() - t0:.0f} s")
    times2 = {}
    if "torch" in steppers:
        group2 = {"jaxlayers": steppers["jaxlayers"], "torch": steppers["torch"]}
        log(f"  timing jaxlayers, torch: {rounds} rounds x {per_round} steps ...")
        t0 = time.perf_counter()
        steppers["jaxlayers"].cpu = []
        times2 = interleaved(group2, rounds=rounds, per_round=per_round, budget_s=budget_s)
        cpu2["jaxlayers"] = steppers["jaxlayers"].cpu[-len(times2["jaxlayers"]) :]
        log(f"  ... {time.perf_counter() - t0:.0f} s")
    flops = spec.flops()
    rows = {}
    for peer in steppers:
        group = times if peer in times else times2
        cgroup = cpu if peer in times else cpu2
        ts = group[peer]
        cpu_ms = median(cgroup[peer]) * 1e3 if cgroup.get(peer) else None
        cpu_ratio = (
            paired_ratio(cgroup["jaxlayers"], cgroup[peer], per_round)
            if cgroup.get(peer) and cgroup.get("jaxlayers")
            else None
        )
        q1, q3 = iqr(ts)
        rows[peer] = {
            "ms": median(ts) * 1e3,
            "q1_ms": q1 * 1e3,
            "q3_ms": q3 * 1e3,
            "steps": len(ts),
            "gflops": flops / median(ts) / 1e9,
            "ratio": paired_ratio(group["jaxlayers"], ts, per_round),
            "compile_s": compile_s.get(peer),
            "residual_new_mb": residuals[peer]["new"] / 1e6 if peer in residuals else None,
            "residual_args_mb": residuals[peer]["args"] / 1e6 if peer in residuals else None,
            "max_score_diff": max_diff.get(peer),
            "cpu_ms": cpu_ms,
            "cpu_ratio": cpu_ratio,
        }
        log(
            f"  {peer:10s} {rows[peer]['ms']:8.2f} ms  (IQR {rows[peer]['q1_ms']:.2f}-{rows[peer]['q3_ms']:.2f})  "
            f"jaxlayers/{peer} {rows[peer]['ratio']:.3f}  CPU {_fmt(cpu_ms, '.1f')} ms, "
            f"jaxlayers/{peer} {_fmt(cpu_ratio, '.3f')}"
        )
    return {"name": spec.name, "flops": flops, "rows": rows, "note": torch_note}


def run_convnet(rounds: int = 12, per_round: int = 3, skip: set[str] = frozenset(), log=print, specs=None) -> dict:
    out = {}
    for name in specs or SPECS:
        log(f"convnet step: {name}")
        out[name] = run_spec(SPECS[name], rounds, per_round, set(skip), log=log)
    return out


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def render_convnet(res: dict) -> list[str]:
    lines = []
    for name, r in res.items():
        spec = SPECS[name]
        lines += [
            f"### ConvNet training step: {name} — jl.{spec.label}; float32, N={BATCH} x {INPUT}, "
            f"Adam; {r['flops'] / 1e9:.2f} GFLOP/step",
            "",
            "| peer | step ms (median) | IQR ms | jaxlayers / peer | CPU ms (median) | jaxlayers / peer, CPU "
            "| GFLOP/s | compile s | saved residuals MB (new) | + residuals that are inputs MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for peer, row in r["rows"].items():
            lines.append(
                f"| {PEER_LABELS[peer]} | {row['ms']:.2f} | {row['q1_ms']:.2f}–{row['q3_ms']:.2f} | {row['ratio']:.3f} "
                f"| {_fmt(row.get('cpu_ms'), '.1f')} | {_fmt(row.get('cpu_ratio'), '.3f')} "
                f"| {row['gflops']:.0f} | {_fmt(row['compile_s'], '.2f')} | {_fmt(row['residual_new_mb'], '.2f')} "
                f"| {_fmt(row['residual_args_mb'], '.2f')} |"
            )
        if r.get("note"):
            lines.append(f"\n{r['note']}.")
        lines.append("")
    return lines


def convnet_targets(res: dict) -> dict:
    out = {}
    key = "convnet step: jaxlayers / Flax"
    rows = res.get("convnet", {}).get("rows", {})
    if "flax" in rows:
        v = rows["flax"]["ratio"]
        out[key] = (v, f"<= {TARGETS[key]}", v <= TARGETS[key])
    key = "convnet step: jaxlayers / PyTorch"
    if "torch" in rows:
        v = rows["torch"]["ratio"]
        out[key] = (v, f"<= {TARGETS[key]}", v <= TARGETS[key])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.convnet", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=3)
    ap.add_argument("--specs", default=",".join(SPECS), help=f"comma-separated: {', '.join(SPECS)}")
    ap.add_argument("--skip", default="", help="comma-separated peers to leave out: flax, torch, autodiff, equinox")
    args = ap.parse_args(argv)
    res = run_convnet(
        rounds=args.rounds,
        per_round=args.per_round,
        skip={s for s in args.skip.split(",") if s},
        log=lambda *a: print(*a, file=sys.stderr, flush=True),
        specs=[s for s in args.specs.split(",") if s],
    )
    lines = render_convnet(res)
    lines += ["| target | measured | goal | met |", "|---|---:|---:|---|"]
    for name, (value, goal, ok) in convnet_targets(res).items():
        lines.append(f"| {name} | {value:.3f} | {goal} | {'yes' if ok else 'NO'} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
