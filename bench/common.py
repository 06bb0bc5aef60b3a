"""Shared pieces of the benchmark: workloads, data, flop counts, timing.

Timing discipline (the machine is small and noisy): every figure that is
compared is measured *interleaved* in the same run -- each round times a few
steps of every peer in turn, in a rotated order -- and the reported time is
the median over all timed steps. Ratios are computed from those medians, so
drift in the machine's load hits every peer alike.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import time
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Workload:
    """{affine - batchnorm - relu - dropout} x hidden - affine - softmax loss."""

    name: str
    batch: int
    input_dim: int
    hidden: tuple[int, ...]
    classes: int
    rate: float  # probability of DROPPING
    lr: float = 1e-3
    weight_scale: float = 5e-2

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.input_dim, *self.hidden, self.classes)

    @property
    def flops(self) -> float:
        """``6 * N * sum(D_in * D_out)``: forward, dx and dw matmuls of every affine."""
        d = self.dims
        return 6.0 * self.batch * sum(a * b for a, b in itertools.pairwise(d))


WORKLOADS = {
    "small": Workload("small", 50, 3072, (100,) * 5, 10, 0.5),
    "wide": Workload("wide", 512, 784, (1024,) * 3, 10, 0.5),
}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_data(w: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed float32 minibatch ``x (N, D)`` and int32 labels ``y (N,)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((w.batch, w.input_dim), dtype=np.float32)
    y = rng.integers(0, w.classes, size=w.batch).astype(np.int32)
    return x, y


def init_params_np(w: Workload, seed: int = 0) -> dict[str, np.ndarray]:
    """Seed-style flat parameters ``W1, b1, gamma1, beta1, ..., WL, bL`` (float32)."""
    rng = np.random.default_rng(seed + 1)
    d = w.dims
    p: dict[str, np.ndarray] = {}
    for i, (a, b) in enumerate(itertools.pairwise(d), start=1):
        p[f"W{i}"] = (w.weight_scale * rng.standard_normal((a, b))).astype(np.float32)
        p[f"b{i}"] = np.zeros(b, np.float32)
        if i < len(d) - 1:
            p[f"gamma{i}"] = np.ones(b, np.float32)
            p[f"beta{i}"] = np.zeros(b, np.float32)
    return p


def time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    per_round: int,
    warmup: int = 3,
    budget_s: float | None = None,
) -> dict[str, list[float]]:
    """Time ``fns`` interleaved: ``rounds`` rounds of ``per_round`` calls each.

    Each call must block until its work is done. The peer order rotates every
    round. Returns every timed call's seconds, per name. ``budget_s`` stops
    early (after at least 3 rounds) when the wall clock runs past it.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = fns[name]
            for _ in range(per_round):
                times[name].append(time_once(fn))
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def iqr(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def paired_ratio(a: list[float], b: list[float], per_round: int) -> float:
    """Median over rounds of ``median(a in round) / median(b in round)``.

    ``a`` and ``b`` come from :func:`interleaved` with the same ``per_round``:
    both peers' steps in a round ran within the same second or so, so the
    machine's drifting load cancels out of each round's ratio.
    """
    rounds = min(len(a), len(b)) // per_round
    ratios = [
        statistics.median(a[r * per_round : (r + 1) * per_round])
        / statistics.median(b[r * per_round : (r + 1) * per_round])
        for r in range(rounds)
    ]
    return statistics.median(ratios)


def cpu_seconds() -> float:
    """This process's user + system CPU time (compilation included), in seconds."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def seed_runs(model_and_config: Callable[[int], tuple], seeds: list[int], target: float, out) -> list[dict]:
    """Train one model per seed with ``jl.train.fit`` and print, per seed and over the seeds, the validation
    and test accuracy of the best-validation parameters, the wall and CPU time, and whether the mean test
    accuracy meets ``target``. ``model_and_config(seed) -> (model, TrainConfig, Dataset)``.

    Returns ``[{seed, val, test, epoch, wall_s, cpu_s}, ...]``.
    """
    import jaxlayers as jl

    rows = []
    for seed in seeds:
        net, config, data = model_and_config(seed)
        t0, c0 = time.perf_counter(), cpu_seconds()
        result = jl.train.fit(net, data, config)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        params, state = result.best_params, result.best_model_state
        row = {
            "seed": seed,
            "val": jl.train.evaluate(net, params, state, data.X_val, data.y_val),
            "test": jl.train.evaluate(net, params, state, data.X_test, data.y_test),
            "epoch": int(result.best_epoch),
            "wall_s": wall,
            "cpu_s": cpu,
        }
        rows.append(row)
        print(
            f"  seed {seed}: val {row['val']:.4f} test {row['test']:.4f} (best epoch {row['epoch']}/"
            f"{config.epochs}), wall {wall:.0f} s, CPU {cpu:.0f} s (~{cpu / 2:.0f} s on a quiet 2-core machine)",
            file=out,
            flush=True,
        )
    tests = [r["test"] for r in rows]
    mean = statistics.mean(tests)
    print(
        f"  over seeds {seeds}: val mean {statistics.mean(r['val'] for r in rows):.4f}; test mean {mean:.4f}, "
        f"range {min(tests):.4f}-{max(tests):.4f}; target test mean >= {target:.3f}: "
        f"{'met' if mean >= target else 'NOT met'}",
        file=out,
    )
    return rows


def cli_model_and_config(argv: list[str], dataset: str) -> tuple:
    """``(model, TrainConfig, Dataset)`` that ``jaxlayers train ARGV`` builds, by the CLI's own code
    (``argv`` starts with ``"train"``), so a bench trains what the documented command trains."""
    import jaxlayers as jl
    from jaxlayers import cli

    opts = cli._resolve(cli.build_parser().parse_args(argv), cli._given(argv))
    return cli._net_and_config(opts, jl.data.load(dataset))
