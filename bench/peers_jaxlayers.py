"""(a) jaxlayers: ``FullyConnectedNet`` + ``jaxlayers.train.make_train_step``, and the fit-loop metric."""

from __future__ import annotations

import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlayers as jl
from bench.common import Workload, median, paired_ratio
from bench.peers_jax import compile_seconds, residual_bytes
from jaxlayers.models import FullyConnectedNet
from jaxlayers.train import (
    FlatTrainStep,
    TrainConfig,
    TrainState,
    evaluate,
    fit,
    init_train_state,
    make_optimizer,
    make_train_step,
)


def make_net(w: Workload) -> FullyConnectedNet:
    return FullyConnectedNet(
        hidden_dims=w.hidden,
        input_dim=w.input_dim,
        num_classes=w.classes,
        normalization="batchnorm",
        dropout_rate=w.rate,
        reg=0.0,
        loss_type="softmax",
        weight_scale=w.weight_scale,
        dtype=jnp.float32,
    )


class TrainStepStepper:
    """``make_train_step``'s jitted step (it donates the state) and the state it threads (packed first
    for a ``make_train_step(..., flat=True)`` step)."""

    def __init__(self, step, state: TrainState, x, y):
        if isinstance(step, FlatTrainStep):
            state = step.flatten(state)
        self.jitted, self.carry, self.x, self.y = step, state, x, y
        self.compile_s = compile_seconds(step, state, x, y)

    def __call__(self):
        self.carry, metrics = self.jitted(self.carry, self.x, self.y)
        return metrics["loss"].block_until_ready()


def jaxlayers_peer(w: Workload, params_np, x_np, y_np, flat: bool = True):
    """The jaxlayers step: ``make_train_step(net, optax.adam, flat=flat)`` -- by default the flat update
    (the small parameter arrays and Adam's state for them one vector each, the update a few kernels;
    issue 20)."""
    net = make_net(w)
    params = {k: jnp.asarray(v) for k, v in params_np.items()}
    model_state = {f"bn{i}": jl.batchnorm_state(h) for i, h in enumerate(w.hidden, start=1)}
    opt = optax.adam(w.lr)
    state = TrainState(params, model_state, opt.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    def loss_fn(p, s, x, y, k):
        return net.loss(p, s, x, y, key=k)

    res = residual_bytes(loss_fn, params, model_state, x, y, jax.random.key(1))
    return TrainStepStepper(make_train_step(net, opt, flat=flat), state, x, y), res


def fit_vs_step(w: Workload, epochs: int = 6, batches: int = 24, seed: int = 0, log=print) -> dict:
    """``jaxlayers.train.fit``'s per-step time against the bare step's, paired epoch by epoch.

    A synthetic training set of ``batches`` minibatches (validation set: one
    minibatch) is trained with Adam for ``epochs`` epochs; after every epoch
    (inside ``fit``'s callback, outside its timing) the same number of bare
    ``make_train_step`` steps is timed. The first epoch (compilation) is dropped.
    ``fit`` also measures validation accuracy after every epoch (its training
    accuracy is the steps' own running count, no second pass); that
    evaluation is timed on its own (``jaxlayers.train.evaluate``) to show how
    much of the per-step time it accounts for.
    """
    rng = np.random.default_rng(seed)
    n = w.batch * batches
    X = rng.standard_normal((n, w.input_dim), dtype=np.float32)
    y = rng.integers(0, w.classes, size=n).astype(np.int32)
    data = types.SimpleNamespace(name="synthetic", X_train=X, y_train=y, X_val=X[: w.batch], y_val=y[: w.batch])
    net = make_net(w)
    config = TrainConfig(epochs=epochs, batch_size=w.batch, optimizer="adam", learning_rate=w.lr, lr_decay=1.0)

    # The bare step, same net and optimizer, on device-held minibatches (per-array, as fit's epoch).
    opt = make_optimizer(config, batches)
    step = make_train_step(net, opt)
    state = init_train_state(net, opt, jax.random.key(1))
    xb = [jnp.asarray(X[i * w.batch : (i + 1) * w.batch]) for i in range(batches)]
    yb = [jnp.asarray(y[i * w.batch : (i + 1) * w.batch]) for i in range(batches)]
    holder = {"state": state}
    for i in range(3):
        holder["state"], m = step(holder["state"], xb[i], yb[i])
    m["loss"].block_until_ready()
    bare: list[float] = []

    def bare_block(report):
        st = holder["state"]
        for i in range(batches):
            t0 = time.perf_counter()
            st, m = step(st, xb[i], yb[i])
            m["loss"].block_until_ready()
            bare.append(time.perf_counter() - t0)
        holder["state"] = st

    t0 = time.perf_counter()
    result = fit(net, data, config, callback=bare_block)
    wall = time.perf_counter() - t0
    epoch_s = result.history.epoch_time_s[1:]
    fit_step = [e / batches for e in epoch_s]
    bare_blocks = [sum(bare[(i + 1) * batches : (i + 2) * batches]) / batches for i in range(len(epoch_s))]
    # What an epoch spends on its evaluation: fit measures test-mode accuracy on
    # the validation set after every epoch.
    eval_s = []
    for _ in range(4):
        t1 = time.perf_counter()
        evaluate(net, result.state.params, result.state.model_state, data.X_val, data.y_val)
        eval_s.append(time.perf_counter() - t1)
    eval_per_epoch = median(eval_s[1:])
    out = {
        "steps_per_epoch": batches,
        "epochs_timed": len(epoch_s),
        "fit_step_ms": median(fit_step) * 1e3,
        "bare_step_ms": median(bare[batches:]) * 1e3,
        "steps_per_s": result.steps_per_second(),
        "ratio": paired_ratio(fit_step, bare_blocks, 1),
        "eval_ms_per_epoch": eval_per_epoch * 1e3,
        "ratio_without_eval": paired_ratio([f - eval_per_epoch / batches for f in fit_step], bare_blocks, 1),
        "wall_s": wall,
    }
    log(
        f"  fit {out['fit_step_ms']:.3f} ms/step ({out['steps_per_s']:.1f} steps/s), "
        f"bare step {out['bare_step_ms']:.3f} ms, fit/bare {out['ratio']:.3f}; "
        f"evaluation {out['eval_ms_per_epoch']:.1f} ms/epoch, fit without it / bare {out['ratio_without_eval']:.3f}"
    )
    return out


def loop_costs(w: Workload, log=print) -> dict:
    """What the loop costs besides the steps: ``init_train_state``'s second call, and the
    compilations of a second ``fit`` that changes only the learning rate, ``reg`` and weight scale."""
    import dataclasses
    import logging

    rng = np.random.default_rng(0)
    n = w.batch * 4
    X = rng.standard_normal((n, w.input_dim), dtype=np.float32)
    y = rng.integers(0, w.classes, size=n).astype(np.int32)
    data = types.SimpleNamespace(name="synthetic", X_train=X, y_train=y, X_val=X[: w.batch], y_val=y[: w.batch])
    net = make_net(w)
    config = TrainConfig(epochs=1, batch_size=w.batch, optimizer="adam", learning_rate=w.lr)
    opt = make_optimizer(config, 4)
    t0 = time.perf_counter()
    jax.block_until_ready(init_train_state(net, opt, jax.random.key(0)))
    first = time.perf_counter() - t0
    seconds = []
    for seed in range(1, 6):
        t0 = time.perf_counter()
        jax.block_until_ready(init_train_state(net, opt, jax.random.key(seed)))
        seconds.append(time.perf_counter() - t0)
    fit(net, data, config)

    compiles: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record):
            if "Finished XLA compilation" in record.getMessage():
                compiles.append(record.getMessage())

    handler = Handler()
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True):
            again = dataclasses.replace(net, weight_scale=w.weight_scale * 2, reg=1e-4)
            fit(again, data, dataclasses.replace(config, learning_rate=w.lr * 3, seed=1))
    finally:
        logging.getLogger("jax").removeHandler(handler)
    out = {
        "init_first_s": first,
        "init_second_ms": median(seconds) * 1e3,
        "compilations_second_fit": len(compiles),
    }
    log(
        f"  init_train_state: first call {first:.2f} s, second {out['init_second_ms']:.2f} ms; "
        f"a second fit with a new learning rate, reg and weight scale compiled {len(compiles)} program(s)"
    )
    return out
