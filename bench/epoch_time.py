"""``python -m bench.epoch_time``: the time of one training epoch, its steps in ``lax.scan`` vs a host loop.

Run from the repository root::

    python -m bench.epoch_time --epochs 4 -- --model convnet
    python -m bench.epoch_time --epochs 4 -- --model examples/resnet_digits.json

The arguments after ``--`` are ``jaxlayers train``'s (the model and config are built by the CLI's own code,
:func:`bench.common.cli_model_and_config`; the dataset is ``--dataset``'s, digits by default). Each way
trains ``--epochs`` epochs with ``jl.train.fit``; the first epoch (compilation) is dropped and the median
over the others of the process CPU time and the wall time per epoch is printed. ``scan`` is the whole
epoch as one compiled ``lax.scan`` (what every epoch was before, and what fully connected models and
non-CPU backends still run); ``host loop`` is :class:`jaxlayers.training.strategies._HostLoopEpoch`, what
a model with a convolution runs on the CPU (:func:`jaxlayers.training.strategies.use_host_loop`). The
machine is shared: CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time

from bench.common import cli_model_and_config, cpu_seconds


def epoch_times(net, config, data, host_loop: bool) -> tuple[float, float]:
    """``(cpu_s, wall_s)``: medians per epoch after the first, with the steps' loop forced to ``host_loop``."""
    import jaxlayers as jl
    from jaxlayers.training import strategies

    chosen = strategies.use_host_loop
    strategies.use_host_loop = lambda *a: host_loop
    marks = [(cpu_seconds(), time.perf_counter())]
    try:
        jl.train.fit(net, data, config, callback=lambda report: marks.append((cpu_seconds(), time.perf_counter())))
    finally:
        strategies.use_host_loop = chosen
    after_first = list(itertools.pairwise(marks[1:]))  # marks[0] -> marks[1] is the first epoch: compilation
    cpu = [b[0] - a[0] for a, b in after_first]
    wall = [b[1] - a[1] for a, b in after_first]
    return statistics.median(cpu), statistics.median(wall)


def main(argv: list[str] | None = None) -> int:
    import dataclasses

    parser = argparse.ArgumentParser(prog="python -m bench.epoch_time", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per way (the first is dropped)")
    parser.add_argument("train", nargs=argparse.REMAINDER, help="-- then jaxlayers train's flags")
    args = parser.parse_args(argv)
    flags = [a for a in args.train if a != "--"]
    dataset = flags[flags.index("--dataset") + 1] if "--dataset" in flags else "digits"
    net, config, data = cli_model_and_config(["train", *flags], dataset)
    config = dataclasses.replace(config, epochs=args.epochs)
    steps = len(data.y_train) // config.batch_size
    print(f"jaxlayers train {' '.join(flags)}: {steps} steps of {config.batch_size} per epoch")
    for name, host_loop in (("scan", False), ("host loop", True)):
        cpu, wall = epoch_times(net, config, data, host_loop)
        print(f"  {name:9s}: {cpu:6.2f} s CPU, {wall:6.2f} s wall per epoch", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
