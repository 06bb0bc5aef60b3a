"""``python -m bench.sweep``: K = 20 models by one ``fit_many`` vs 20 sequential ``fit`` calls.

Run from the repository root::

    python -m bench.sweep                  # about 2 minutes on 2 cores (--rounds 3: 7)
    python -m bench.sweep --quick          # K = 4: a smoke test, not a measurement
    python -m bench.sweep --markdown out.md

The workload is notebook 02's weight-scale network: digits (1293 training
examples, 144 validation), a deep network 64 -> 100x6 -> 10 with batchnorm,
softmax loss, 10 epochs of batch 50 (25 steps per epoch), with the accuracy
passes ``fit`` makes after every epoch; SGD with momentum 0.9 (learning rate
0.02, decay 0.95 per epoch), the package's default optimizer -- not the
notebook's Adam, under which the biases before batchnorm (zero gradient in
exact arithmetic) turn rounding noise into learning-rate-sized steps, so the
last column would measure that noise rather than ``fit_many``'s agreement
with ``fit`` (see :mod:`jaxlayers.sweep`). Each row trains K = 20 models
that differ in one way:

* ``seeds``: 0..19. Sequential ``fit`` calls share one compilation (the seed
  is not part of the program), so this row is the pure throughput gain.
* ``weight scales``: 20 log-spaced in [1e-4, 1]. The scale is a field of the
  network, so every sequential ``fit`` compiles its own program.
* ``learning rates``: 20 log-spaced in [1e-4, 1e-1]; a field of the
  ``TrainConfig``, so again one compilation per ``fit``.
* ``dropout rates x seeds``: 4 rates x 5 seeds. ``fit_many`` groups models by
  rate: 4 vmapped sub-programs in one compiled epoch.

Both sides start from cold caches (``jax.clear_caches`` and both modules'
compilation caches), so each pays for its own compilations, as a user
running the sweep would. *Total* is wall time from the first call to the
last result; *after epoch 1* sums only the epochs after each run's first
(compilation excluded), the throughput gain of vmapping. The two sides run
one after the other, alternating which goes first from row to row; on a
shared machine repeat with ``--rounds`` and read the median. The last column
counts the models whose final validation accuracy under ``fit_many`` is
within one example (1/144) of ``fit``'s. Where training amplifies rounding
-- the tiniest weight scales with batchnorm take huge effective steps at
first -- float32 trajectories drift apart after tens of steps, as between
any two summation orders; ``tests/test_sweep.py`` checks agreement where
training is well conditioned, and in float64.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import time

import jax
import numpy as np

import jaxlayers as jl
from bench.run import machine
from jaxlayers import sweep as jl_sweep
from jaxlayers import train as jl_train


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _rows(k: int) -> dict[str, dict[str, list]]:
    n_rates = 4 if k % 4 == 0 else 1
    return {
        "seeds": {"seeds": list(range(k))},
        "weight scales": {"weight_scales": [float(v) for v in np.geomspace(1e-4, 1.0, k)]},
        "learning rates": {"learning_rates": [float(v) for v in np.geomspace(1e-4, 1e-1, k)]},
        f"dropout rates x seeds ({n_rates} x {k // n_rates})": jl_sweep.grid(
            dropout_rates=[0.0, 0.1, 0.25, 0.5][:n_rates], seeds=list(range(k // n_rates))
        ),
    }


def _cold() -> None:
    jax.clear_caches()
    jl_train._compiled.cache_clear()
    jl_sweep._compiled.cache_clear()


def _sequential(net, data, config, lists: dict[str, list]) -> tuple[float, float, np.ndarray]:
    k = len(next(iter(lists.values())))
    t0 = time.perf_counter()
    steady, val = 0.0, []
    for i in range(k):
        kw = {name: values[i] for name, values in lists.items()}
        net_i = dataclasses.replace(
            net,
            weight_scale=kw.get("weight_scales", net.weight_scale),
            dropout_rate=kw.get("dropout_rates", net.dropout_rate),
        )
        config_i = dataclasses.replace(
            config, seed=kw.get("seeds", config.seed), learning_rate=kw.get("learning_rates", config.learning_rate)
        )
        try:
            r = jl_train.fit(net_i, data, config_i)
            steady += sum(r.history.epoch_time_s[1:])
            val.append(r.history.val_acc[-1])
        except FloatingPointError:  # a diverging model: fit stops, fit_many trains on
            val.append(float("nan"))
    return time.perf_counter() - t0, steady, np.asarray(val)


def _many(net, data, config, lists: dict[str, list]) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    r = jl_train.fit_many(net, data, config, **lists)
    total = time.perf_counter() - t0
    return total, sum(r.history.epoch_time_s[1:]), np.where(r.finite, r.history.val_acc[:, -1], np.nan)


def run(k: int, epochs: int, rounds: int) -> list[dict]:
    data = jl.data.load("digits")
    net = jl.FullyConnectedNet(hidden_dims=(100,) * 6, input_dim=64, num_classes=10, normalization="batchnorm")
    config = jl_train.TrainConfig(
        epochs=epochs, batch_size=50, optimizer="sgd_momentum", learning_rate=0.02, lr_decay=0.95
    )
    out = []
    for i, (name, lists) in enumerate(_rows(k).items()):
        seq, many = [], []
        for r in range(rounds):
            sides = [("sequential fit", _sequential, seq), ("fit_many", _many, many)]
            for side, fn, acc in sides if (i + r) % 2 == 0 else sides[::-1]:
                _cold()
                acc.append(fn(net, data, config, lists))
                log(f"  {name}: {side} {acc[-1][0]:.1f} s (after epoch 1: {acc[-1][1]:.2f} s)")
        med = [statistics.median(x[j] for x in seq) for j in (0, 1)]
        med_many = [statistics.median(x[j] for x in many) for j in (0, 1)]
        same = np.abs(seq[-1][2] - many[-1][2]) <= 1.01 / len(data.y_val)
        out.append(
            {
                "sweep": name,
                "K": k,
                "sequential_s": med[0],
                "many_s": med_many[0],
                "speedup": med[0] / med_many[0],
                "sequential_steady_s": med[1],
                "many_steady_s": med_many[1],
                "steady_speedup": med[1] / med_many[1],
                "same_val_acc": int(np.sum(same)),
                "diverged": int(np.sum(np.isnan(many[-1][2]))),
            }
        )
    return out


def render(rows: list[dict], epochs: int) -> str:
    lines = [
        f"### fit_many vs sequential fit: K models, digits, 64 -> 100x6 -> 10 + batchnorm, SGD+momentum, "
        f"{epochs} epochs x 25 steps",
        "",
        "| sweep | K | sequential fit s | fit_many s | speed-up | after epoch 1: sequential s | fit_many s | speed-up "
        "| final val acc within 1 example of fit's |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sweep']} | {r['K']} | {r['sequential_s']:.1f} | {r['many_s']:.1f} | **{r['speedup']:.1f}x** | "
            f"{r['sequential_steady_s']:.2f} | {r['many_steady_s']:.2f} | {r['steady_speedup']:.2f}x | "
            f"{r['same_val_acc']}/{r['K']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K = 4, 3 epochs (a smoke test, not a measurement)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat each row and report medians (default 1)")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table to a Markdown file")
    args = ap.parse_args(argv)
    k, epochs = (4, 3) if args.quick else (20, 10)
    t0 = time.perf_counter()
    m = machine()
    log(f"machine: {m}")
    rows = run(k, epochs, max(1, args.rounds))
    text = render(rows, epochs)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text += (
        f"\n\n{m['cpu']}, {m['cores']} cores; jax {m['versions']['jax']}; {stamp}; "
        f"`{' '.join(['python -m bench.sweep', *(sys.argv[1:] if argv is None else argv)])}`, "
        f"{time.perf_counter() - t0:.0f} s."
    )
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
