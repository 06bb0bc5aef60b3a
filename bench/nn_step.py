"""The declaration layer costs nothing under jit: ConvNet's digits training step, nn vs hand-written.

``jl.ConvNet`` is an :mod:`jaxlayers.nn` declaration (issue 17). This times its
training step (``jaxlayers.train.make_train_step``: forward, softmax loss, L2,
backward, optax Adam update, running statistics, dropout) against the same step
of ``HandWritten``, kept here: the ConvNet forward pass as it was written before
the declaration, by hand with ``i += 1`` counters over the same ops, same
parameters, same keys. Both start from the same state and batch; steps are timed
interleaved in one process (:mod:`bench.common`) and the ratio is "nn /
hand-written", the median over rounds of the per-round ratio. The two steps'
losses are checked equal first.

The network is the CLI's digits preset (``CONVNET_PRESETS["digits"]``): {conv
3x3 same - spatial batchnorm - relu - 2x2 max pool} x (32, 64) - affine 256 -
relu - dropout 0.5 - affine 10, on (1, 8, 8) images, batch 64, Adam.

    python -m bench.nn_step [--rounds 30] [--per-round 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform

import jax
import jax.numpy as jnp
import numpy as np

import jaxlayers as jl
from bench.common import interleaved, median, paired_ratio
from jaxlayers.cli import CONVNET_PRESETS


class HandWritten(jl.ConvNet):
    """Today's ConvNet with its forward pass written by hand over the ops (the code before the nn
    declaration): the same pytree (``reg`` traced), init, loss and L2 penalty; only ``apply`` differs."""

    def apply(self, params, state, x, *, train, key=None):
        net = self
        h = jnp.asarray(x).reshape(x.shape[0], *net.input_dim).astype(net.dtype)
        kh, kw = net.filter_size
        use_dropout = train and net.dropout_rate > 0
        new_state, i = {}, 0
        for _ in net.conv_channels:
            i += 1
            h = jl.conv2d(h, params[f"W{i}"], params[f"b{i}"], stride=1, padding=((kh - 1) // 2, (kw - 1) // 2))
            h, new_state[f"bn{i}"] = jl.spatial_batchnorm(
                h, params[f"gamma{i}"], params[f"beta{i}"], state[f"bn{i}"], train=train
            )
            h = jl.max_pool2d(jl.relu(h), pool_size=net.pool_size, stride=net.pool_size)
        keys = jax.random.split(key, len(net.hidden_dims)) if use_dropout else None
        for j, _ in enumerate(net.hidden_dims):
            i += 1
            h = jl.relu(jl.affine(h, params[f"W{i}"], params[f"b{i}"]))
            if use_dropout:
                h = jl.dropout(h, keys[j], rate=net.dropout_rate, train=True)
        i += 1
        return jl.affine(h, params[f"W{i}"], params[f"b{i}"]), new_state


def digits_convnet() -> jl.ConvNet:
    p = CONVNET_PRESETS["digits"]
    return jl.ConvNet(
        input_dim=(1, 8, 8),
        conv_channels=tuple(p["conv_channels"]),
        filter_size=tuple(p["filter_size"]),
        conv_norm=p["conv_norm"],
        pool_size=tuple(p["pool_size"]),
        hidden_dims=tuple(p["hidden_dims"]),
        fc_norm=None,
        dropout_rate=p["dropout_rate"],
        reg=p["reg"],
        num_classes=10,
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=20)
    args = ap.parse_args(argv)
    ds = jl.data.load("digits")
    batch = 64
    x, y = ds.X_train[:batch], ds.y_train[:batch]
    net = digits_convnet()
    config = jl.train.TrainConfig(optimizer="adam", learning_rate=2e-3, batch_size=batch)
    optimizer = jl.train.make_optimizer(config, steps_per_epoch=len(ds.y_train) // batch)
    models = {"nn": net, "hand-written": HandWritten(**{f.name: getattr(net, f.name) for f in dataclasses.fields(net)})}
    steps, states = {}, {}
    for name, model in models.items():
        steps[name] = jl.train.make_train_step(model, optimizer)
        states[name] = jl.train.init_train_state(model, optimizer, jax.random.key(0))
    losses = {}
    for name in models:  # one step each from the same state: the same loss
        s = jl.train.init_train_state(models[name], optimizer, jax.random.key(0))
        _, metrics = steps[name](s, x, y)
        losses[name] = float(metrics["loss"])
    assert losses["nn"] == losses["hand-written"], losses

    def runner(name):
        def run():
            states[name], metrics = steps[name](states[name], x, y)
            jax.block_until_ready(metrics["loss"])

        return run

    times = interleaved({n: runner(n) for n in models}, rounds=args.rounds, per_round=args.per_round)
    ratio = paired_ratio(times["nn"], times["hand-written"], args.per_round)
    machine = f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}"
    print(f"machine: {machine}; losses equal: {losses['nn']:.6f}")
    for n in models:
        print(f"{n:>13}: median step {median(times[n]) * 1e3:.3f} ms over {len(times[n])} steps")
    print(f"ratio nn / hand-written: {ratio:.3f}")
    np.testing.assert_equal(losses["nn"], losses["hand-written"])


if __name__ == "__main__":
    main()
