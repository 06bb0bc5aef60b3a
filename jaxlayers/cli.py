"""The ``jaxlayers`` command: ``jaxlayers train``, ``jaxlayers sweep`` and ``jaxlayers gradcheck``.

Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args: argparse.Namespace) -> int:
    from jaxlayers.gradcheck import main as gradcheck_main

    return gradcheck_main(verbose=args.verbose)


# Defaults of `jaxlayers train`: the network's, tuned on digits (see README, "Training"); the
# training flags take TrainConfig's defaults (tuned there too), read from the dataclass.
MODEL_DEFAULTS = {
    "dataset": "digits",
    "hidden_dims": [1024, 1024],
    "normalization": "batchnorm",
    "dropout_rate": 0.5,
    "loss": "softmax",
    "weight_scale": None,
    "reg": 3e-3,
}
TRAIN_FLAGS = ("optimizer", "learning_rate", "lr_decay", "epochs", "batch_size", "seed")


def _train_defaults() -> dict:
    import dataclasses

    from jaxlayers.training.config import TrainConfig  # lazy: `jaxlayers --help` need not import JAX

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {**MODEL_DEFAULTS, **{k: fields[k] for k in TRAIN_FLAGS}}


RUN_FILES = ("config.json", "metrics.jsonl", "curves.png", "checkpoint.safetensors", "summary.json")


def _hidden_dims(text: str) -> list[int]:
    try:
        dims = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden dims must be integers, got {text!r}") from None
    if any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden dims must be positive, got {text!r}")
    return dims


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = _train_defaults()
    # Every default is None here and filled in by _resolve: from the checkpoint's
    # run with --resume, else from _train_defaults() (shown in the help).
    a = p.add_argument
    a("--dataset", help=f"digits | mnist1d | mnist:DIR | cifar10:DIR (default {d['dataset']})")
    a(
        "--hidden-dims",
        type=_hidden_dims,
        nargs="+",
        metavar="H",
        help=f"hidden layer widths, e.g. 512 512 or 512,512 (default {' '.join(map(str, d['hidden_dims']))})",
    )
    a("--normalization", choices=["batchnorm", "none"], help=f"(default {d['normalization']})")
    a(
        "--dropout-rate",
        "--dropout",
        type=float,
        dest="dropout_rate",
        metavar="RATE",
        help=f"probability of dropping a hidden unit (default {d['dropout_rate']})",
    )
    a("--loss", choices=["softmax", "svm"], help=f"(default {d['loss']})")
    a("--reg", type=float, help=f"L2 strength, 0.5*reg*sum(W**2) (default {d['reg']})")
    a("--weight-scale", type=float, help="std of the normal weight init (default: He init)")
    a("--optimizer", choices=["sgd", "sgd_momentum", "rmsprop", "adam"], help=f"(default {d['optimizer']})")
    a("--learning-rate", "--lr", type=float, dest="learning_rate", help=f"(default {d['learning_rate']})")
    a("--lr-decay", type=float, help=f"learning-rate factor per epoch (default {d['lr_decay']})")
    a("--epochs", type=int, help=f"(default {d['epochs']}; with --resume, more epochs extend the run)")
    a("--batch-size", type=int, help=f"(default {d['batch_size']})")
    a("--seed", type=int, help=f"PRNG seed: init, shuffling, dropout (default {d['seed']})")
    a("--output-dir", "-o", help="run directory (default runs/<dataset>)")
    a(
        "--resume",
        action="store_true",
        help="continue the run in the output directory from its checkpoint; flags not given are taken from that run",
    )
    a("--quiet", "-q", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "scaling out",
        "data-parallel training: every minibatch is split over the devices, batchnorm statistics span the "
        "global batch, and the result equals the one-device run up to float rounding (README, 'Scaling out')",
    )
    g.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="train on N devices (all processes together); the batch size must be a multiple of N. "
        "On a machine without accelerators N CPU devices are simulated (they share the cores)",
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="multi-process run: address of process 0's coordinator")
    g.add_argument("--num-processes", type=int, metavar="P", help="multi-process run: number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="multi-process run: this process's index in [0, P)")
    g.add_argument(
        "--init-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="multi-process run: seconds to wait for the coordinator and the other processes (default 60)",
    )


def _resolve(args: argparse.Namespace) -> dict:
    """Flags given > the checkpointed run's settings (with --resume) > the defaults."""
    from pathlib import Path

    from jaxlayers.train import CHECKPOINT_NAME, read_checkpoint_metadata

    defaults = _train_defaults()
    given = {k: v for k, v in vars(args).items() if k in defaults and v is not None}
    if given.get("hidden_dims") is not None:
        given["hidden_dims"] = [h for part in given["hidden_dims"] for h in part]
    base = dict(defaults)
    dataset = given.get("dataset", base["dataset"])
    out = Path(args.output_dir or Path("runs") / dataset.partition(":")[0])
    if args.resume and (out / CHECKPOINT_NAME).is_file():
        meta = read_checkpoint_metadata(out / CHECKPOINT_NAME)
        net, tc = meta["models"][0]["config"], meta["train_configs"][0]
        base.update(
            dataset=meta["data"]["name"] or base["dataset"],
            hidden_dims=net["hidden_dims"],
            normalization=net["normalization"] or "none",
            dropout_rate=net["dropout_rate"],
            loss=net["loss_type"],
            weight_scale=net["weight_scale"],
            reg=net["reg"],
            **{k: tc[k] for k in TRAIN_FLAGS},
        )
    return {**base, **given, "output_dir": out}


def _setup_devices(args: argparse.Namespace):
    """``--devices`` / ``--coordinator``: join the run and build the mesh, before any JAX backend starts.

    Returns the ``jax.sharding.Mesh``, or ``None`` (no flag: the default device).
    Raises ``ValueError`` or ``jaxlayers.parallel.DistributedInitError``.
    """
    from jaxlayers import parallel

    multi = (args.coordinator, args.num_processes, args.process_id)
    if any(v is None for v in multi) and any(v is not None for v in multi):
        raise ValueError("--coordinator, --num-processes and --process-id go together")
    if args.devices is not None and args.devices < 1:
        raise ValueError(f"--devices must be >= 1, got {args.devices}")
    if args.coordinator is not None:
        per = None
        if args.devices is not None:
            if args.devices % args.num_processes:
                raise ValueError(f"--devices {args.devices} cannot be split evenly over {args.num_processes} processes")
            per = args.devices // args.num_processes
        dist = parallel.Distributed(
            args.coordinator, args.num_processes, args.process_id, timeout_s=args.init_timeout, local_devices=per
        )
        parallel.initialize_distributed(dist)
    elif args.devices is None:
        return None
    else:
        parallel.request_cpu_devices(args.devices)
    return parallel.make_data_mesh(args.devices)


def _write_metrics(path, history, steps_per_epoch: int) -> None:
    import json

    from jaxlayers.train import atomic_write

    lines = []
    for e in range(len(history.val_acc)):
        losses = history.loss[e * steps_per_epoch : (e + 1) * steps_per_epoch]
        lines.append(
            json.dumps(
                {
                    "epoch": e + 1,
                    "step": (e + 1) * steps_per_epoch,
                    "loss": sum(losses) / max(len(losses), 1),
                    "train_acc": history.train_acc[e],
                    "val_acc": history.val_acc[e],
                    "lr": history.lr[e],
                    "epoch_time_s": history.epoch_time_s[e],
                }
            )
        )
    atomic_write(path, ("\n".join(lines) + "\n").encode())


def _net_and_config(opts: dict, ds):
    """``(FullyConnectedNet, TrainConfig)`` that the resolved flags ``opts`` describe for dataset ``ds``."""
    from jaxlayers import train as jl_train
    from jaxlayers.models import FullyConnectedNet

    net = FullyConnectedNet(
        hidden_dims=tuple(opts["hidden_dims"]),
        input_dim=ds.num_features,
        num_classes=max(ds.num_classes, 2),
        normalization=None if opts["normalization"] == "none" else opts["normalization"],
        dropout_rate=opts["dropout_rate"],
        reg=opts["reg"],
        loss_type=opts["loss"],
        weight_scale=opts["weight_scale"],
    )
    config = jl_train.TrainConfig(**{k: opts[k] for k in TRAIN_FLAGS})
    return net, config


def _train(args: argparse.Namespace) -> int:
    import json
    import time

    t_start = time.perf_counter()
    opts = _resolve(args)
    out = opts["output_dir"]

    import jax

    import jaxlayers
    from jaxlayers import data as jl_data
    from jaxlayers import train as jl_train

    def fail(message: str, code: int = 2) -> int:
        print(f"jaxlayers train: error: {message}", file=sys.stderr)
        return code

    try:
        mesh = _setup_devices(args)
    except (ValueError, RuntimeError) as e:  # RuntimeError: DistributedInitError
        return fail(str(e), 1)
    if jax.process_index() > 0:  # every process keeps its own copy of the run (and can resume from it)
        out, args.quiet = out / f"process-{jax.process_index()}", True
    ckpt = out / jl_train.CHECKPOINT_NAME
    if args.resume and not ckpt.is_file():
        return fail(f"--resume: no checkpoint at {ckpt}; run without --resume to start")
    try:
        ds = jl_data.load(opts["dataset"])
        net, config = _net_and_config(opts, ds)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return fail(str(e))

    print(ds.summary())
    if mesh is not None:
        from jaxlayers.parallel import describe

        print(f"devices: {describe(mesh)}")
    print(
        f"net: {net.input_dim} -> {' -> '.join(map(str, net.hidden_dims))} -> {net.num_classes}"
        f" | {net.normalization or 'no normalization'}, dropout {net.dropout_rate}, {net.loss_type} loss, reg {net.reg}"
    )
    print(
        f"train: {config.optimizer}, lr {config.learning_rate} x {config.lr_decay}/epoch, "
        f"{config.epochs} epochs of batch {config.batch_size}, seed {config.seed} | run dir {out}"
    )
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume and ckpt.exists():
        print(f"note: starting afresh in {out}, replacing the previous run there (use --resume to continue it)")
    run_config = {
        "dataset": opts["dataset"],
        "net": net.to_dict(),
        "train": config.to_dict(),
        "splits": {k: len(getattr(ds, f"y_{k}")) for k in ("train", "val", "test")},
        "versions": {"jaxlayers": jaxlayers.__version__, "jax": jax.__version__},
        "backend": jax.default_backend(),
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "processes": jax.process_count(),
        "command": sys.argv[1:] if sys.argv and sys.argv[0].endswith("jaxlayers") else None,
    }
    jl_train.atomic_write(out / "config.json", (json.dumps(run_config, indent=2) + "\n").encode())

    start = jl_train.read_checkpoint_metadata(ckpt)["epoch"] if args.resume else 0
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=min(start, config.epochs), unit="epoch", desc=ds.name, file=sys.stderr)

    steps_per_epoch = len(ds.y_train) // config.batch_size

    def on_epoch(r: jl_train.EpochReport) -> None:
        _write_metrics(out / "metrics.jsonl", r.history, steps_per_epoch)
        if bar is not None:
            bar.set_postfix(
                loss=f"{r.loss:.4f}", train_acc=f"{r.train_acc:.4f}", val_acc=f"{r.val_acc:.4f}", refresh=False
            )
            bar.update(1)

    t_fit = time.perf_counter()
    try:
        result = jl_train.fit(net, ds, config, checkpoint_dir=out, resume=args.resume, callback=on_epoch, mesh=mesh)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if ckpt.is_file():
            epoch = jl_train.read_checkpoint_metadata(ckpt)["epoch"]
            print(f"\ninterrupted; epoch {epoch} is checkpointed in {ckpt}. Continue with:", file=sys.stderr)
            print(f"  jaxlayers train --resume --output-dir {out}", file=sys.stderr)
        else:
            print("\ninterrupted before the first epoch ended; there is nothing to resume.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as e:
        if bar is not None:
            bar.close()
        return fail(str(e), 1)
    fit_time = time.perf_counter() - t_fit
    if bar is not None:
        bar.close()

    _write_metrics(out / "metrics.jsonl", result.history, steps_per_epoch)
    accs = {
        split: jl_train.evaluate(
            net, result.best_params, result.best_model_state, getattr(ds, f"X_{split}"), getattr(ds, f"y_{split}")
        )
        for split in ("train", "val", "test")
    }
    last = (result.state.params, result.state.model_state)
    if mesh is not None:  # arrays on the mesh (maybe spanning processes) -> this process's copy
        from jaxlayers.parallel import host_copy

        last = jax.tree.map(jax.numpy.asarray, host_copy(last))
    final_test = jl_train.evaluate(net, *last, ds.X_test, ds.y_test)
    jl_train.plot_history(
        result.history,
        out / "curves.png",
        steps_per_epoch=steps_per_epoch,
        best_epoch=result.best_epoch,
        title=f"{ds.name}: {net.input_dim}-{'-'.join(map(str, net.hidden_dims))}-{net.num_classes}, {config.optimizer}",
    )
    sps = result.steps_per_second()
    wall = time.perf_counter() - t_start
    first = result.history.epoch_time_s[start] if len(result.history.epoch_time_s) > start else float("nan")
    summary = {
        **{f"{k}_acc": v for k, v in accs.items()},
        "final_test_acc": final_test,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history.val_acc),
        "steps": len(result.history.loss),
        "steps_per_second": sps,
        "first_epoch_s": first,
        "fit_time_s": fit_time,
        "wall_time_s": wall,
        "resumed_from_epoch": result.start_epoch,
    }
    summary = {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}  # NaN -> null
    jl_train.atomic_write(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())

    print(f"best epoch {result.best_epoch} of {summary['epochs']} (by validation accuracy); with its parameters:")
    print(f"  train acc {accs['train']:.4f}   val acc {accs['val']:.4f}   test acc {accs['test']:.4f}")
    print(f"  (the last epoch's parameters: test acc {final_test:.4f})")
    ran = summary["epochs"] - result.start_epoch
    if ran == 0:
        print(f"nothing to train: the checkpoint already holds {summary['epochs']} epochs; wall time {wall:.1f} s")
    else:
        sps_text = f"{sps:.0f} steps/s after the first epoch" if ran > 1 else "steps/s n/a (one epoch)"
        print(
            f"wall time {wall:.1f} s (training {fit_time:.1f} s, first epoch incl. compilation {first:.1f} s); "
            f"{ran * result.steps_per_epoch} steps, {sps_text}"
        )
    print(f"run dir {out}: {', '.join(RUN_FILES)}")
    return 0


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a FullyConnectedNet of jaxlayers ops (default: digits, about 10 s on 2 CPU cores)",
        description="Train a FullyConnectedNet built from jaxlayers' hand-differentiated ops with optax; "
        "writes config.json, metrics.jsonl, curves.png, checkpoint.safetensors and summary.json to the run directory.",
    )
    _add_train_arguments(p)
    p.set_defaults(func=_train)


def _sweep_values(text: str) -> list:
    """Comma-separated items, each a number, ``he`` (He init, for weight scales),
    ``log:START:STOP:NUM`` (NUM log-spaced values) or ``lin:START:STOP:NUM``."""
    import numpy as np

    values = []
    for item in text.replace(",", " ").split():
        kind, _, rest = item.partition(":")
        if kind in ("log", "lin"):
            try:
                start, stop, num = rest.split(":")
                start, stop, num = float(start), float(stop), int(num)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {kind}:START:STOP:NUM, got {item!r}") from None
            if num < 1 or (kind == "log" and min(start, stop) <= 0):
                raise argparse.ArgumentTypeError(f"{item!r}: NUM must be >= 1, and log bounds > 0")
            values += [float(v) for v in (np.geomspace if kind == "log" else np.linspace)(start, stop, num)]
        elif item.lower() == "he":
            values.append(None)
        else:
            try:
                values.append(float(item))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected numbers like 0.1,0.2 or log:1e-4:1:20, got {item!r}"
                ) from None
    if not values:
        raise argparse.ArgumentTypeError("no values given")
    return values


def _sweep(args: argparse.Namespace) -> int:
    import json
    import math
    import time

    t_start = time.perf_counter()
    from jaxlayers.sweep import SWEPT

    shared = {*_train_defaults(), *SWEPT, "grid", "output_dir", "quiet", "func", "command"}
    defaults = vars(build_parser().parse_args(["sweep"]))
    unsupported = [k for k, v in vars(args).items() if k not in shared and v != defaults.get(k)]
    if unsupported:  # --resume (a sweep keeps no checkpoints), and train's device flags
        flags = ", ".join("--" + k.replace("_", "-") for k in unsupported)
        print(
            f"jaxlayers sweep: error: {flags}: not supported by sweep (it keeps no checkpoints and runs on one device)",
            file=sys.stderr,
        )
        return 2
    opts = _resolve(args)

    from jaxlayers import data as jl_data
    from jaxlayers import sweep as jl_sweep
    from jaxlayers import train as jl_train

    lists = {flag: getattr(args, flag) for flag in SWEPT if getattr(args, flag) is not None}
    try:
        if not lists:
            raise ValueError(f"give at least one of --{', --'.join(f.replace('_', '-') for f in SWEPT)}")
        if "seeds" in lists:
            if any(v is None or v != int(v) for v in lists["seeds"]):
                raise ValueError(f"--seeds must be integers, got {lists['seeds']}")
            lists["seeds"] = [int(v) for v in lists["seeds"]]
        if args.grid:
            lists = jl_sweep.grid(**lists)
        ds = jl_data.load(opts["dataset"])
        net, config = _net_and_config(opts, ds)
        k_models = len(next(iter(lists.values())))
        print(ds.summary())
        print(
            f"sweep: {k_models} models over {', '.join(lists)}; net {net.layer_dims}, {net.normalization or 'no norm'}"
        )
        bar = None
        if not args.quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.epochs, unit="epoch", desc=f"{k_models} models", file=sys.stderr)

        def on_epoch(r: jl_train.EpochReport) -> None:
            if bar is not None:
                bar.set_postfix(best_val_acc=f"{float(max(r.val_acc)):.4f}", refresh=False)
                bar.update(1)

        result = jl_train.fit_many(net, ds, config, callback=on_epoch, **lists)
        if bar is not None:
            bar.close()
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"jaxlayers sweep: error: {e}", file=sys.stderr)
        return 2
    print(result.table())
    times = result.history.epoch_time_s
    steps = k_models * result.steps_per_epoch * (len(times) - 1)
    rate = f"{steps / sum(times[1:]):.0f} model-steps/s after the first epoch" if len(times) > 1 else ""
    print(f"wall time {time.perf_counter() - t_start:.1f} s (first epoch incl. compilation {times[0]:.1f} s); {rate}")
    if not result.finite.all():
        rows = [k for k in range(k_models) if not result.finite[k]]
        print(f"{len(rows)} model(s) diverged (non-finite loss; their rows show nan): k = {rows}")
    if args.output_dir:
        out = opts["output_dir"]
        out.mkdir(parents=True, exist_ok=True)
        h = result.history
        record = {
            "dataset": opts["dataset"],
            "net": net.to_dict(),
            "train": config.to_dict(),
            "models": [
                {
                    **result.settings(k),
                    "best_val_acc": float(result.best_val_acc[k]),
                    "best_epoch": int(result.best_epoch[k]),
                }
                for k in range(k_models)
            ],
            "history": {
                "loss": [[v if math.isfinite(v) else None for v in row] for row in h.loss.tolist()],
                "train_acc": h.train_acc.tolist(),
                "val_acc": h.val_acc.tolist(),
                "lr": h.lr.tolist(),
                "epoch_time_s": list(h.epoch_time_s),
            },
        }
        jl_train.atomic_write(out / "sweep.json", (json.dumps(record, indent=1) + "\n").encode())
        print(f"wrote {out / 'sweep.json'}")
    return 0


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train many variants at once (vmapped, one compiled program), e.g. --weight-scales log:1e-4:1:20",
        description="Train K FullyConnectedNets that differ in seed, weight scale, learning rate, dropout rate or "
        "reg with jaxlayers.train.fit_many: one compiled program per epoch, vmapped over the models. The other flags "
        "are `jaxlayers train`'s and set what all models share; each swept list gives one value per model "
        "(a,b,c or log:START:STOP:NUM or lin:START:STOP:NUM). Prints one row per model.",
    )
    _add_train_arguments(p)
    from jaxlayers.sweep import SWEPT  # the one list of sweepable settings

    for flag in SWEPT:
        p.add_argument(f"--{flag.replace('_', '-')}", type=_sweep_values, metavar="VALUES", dest=flag)
    p.add_argument("--grid", action="store_true", help="train every combination of the lists (default: zip them)")
    p.set_defaults(func=_sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxlayers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "gradcheck",
        help="check every op's custom VJP against autodiff and finite differences (float64)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one row per sample, not per op")
    p.set_defaults(func=_gradcheck)
    _add_train_parser(sub)
    _add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
