"""The ``jaxlayers`` command: ``jaxlayers train`` and ``jaxlayers gradcheck``.

Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args: argparse.Namespace) -> int:
    from jaxlayers.gradcheck import main as gradcheck_main

    return gradcheck_main(verbose=args.verbose)


# Defaults of `jaxlayers train`: tuned on digits (see README, "Training").
TRAIN_DEFAULTS = {
    "dataset": "digits",
    "hidden_dims": [1024, 1024],
    "normalization": "batchnorm",
    "dropout_rate": 0.5,
    "loss": "softmax",
    "weight_scale": None,
    "reg": 3e-3,
    "optimizer": "sgd_momentum",
    "learning_rate": 0.04,
    "lr_decay": 0.97,
    "epochs": 80,
    "batch_size": 32,
    "seed": 0,
}
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
    d = TRAIN_DEFAULTS
    # Every default is None here and filled in by _resolve: from the checkpoint's
    # run with --resume, else from TRAIN_DEFAULTS (shown in the help).
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


def _resolve(args: argparse.Namespace) -> dict:
    """Flags given > the checkpointed run's settings (with --resume) > TRAIN_DEFAULTS."""
    from pathlib import Path

    from jaxlayers.train import CHECKPOINT_NAME, read_checkpoint_metadata

    given = {k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS and v is not None}
    if given.get("hidden_dims") is not None:
        given["hidden_dims"] = [h for part in given["hidden_dims"] for h in part]
    base = dict(TRAIN_DEFAULTS)
    dataset = given.get("dataset", base["dataset"])
    out = Path(args.output_dir or Path("runs") / dataset.partition(":")[0])
    if args.resume and (out / CHECKPOINT_NAME).is_file():
        meta = read_checkpoint_metadata(out / CHECKPOINT_NAME)
        net, tc = meta["net"], meta["train_config"]
        base.update(
            dataset=meta["data"]["name"] or base["dataset"],
            hidden_dims=net["hidden_dims"],
            normalization=net["normalization"] or "none",
            dropout_rate=net["dropout_rate"],
            loss=net["loss_type"],
            weight_scale=net["weight_scale"],
            reg=net["reg"],
            **{k: tc[k] for k in ("optimizer", "learning_rate", "lr_decay", "epochs", "batch_size", "seed")},
        )
    return {**base, **given, "output_dir": out}


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
    from jaxlayers.models import FullyConnectedNet

    def fail(message: str, code: int = 2) -> int:
        print(f"jaxlayers train: error: {message}", file=sys.stderr)
        return code

    ckpt = out / jl_train.CHECKPOINT_NAME
    if args.resume and not ckpt.is_file():
        return fail(f"--resume: no checkpoint at {ckpt}; run without --resume to start")
    try:
        ds = jl_data.load(opts["dataset"])
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
        config = jl_train.TrainConfig(
            **{k: opts[k] for k in ("epochs", "batch_size", "optimizer", "learning_rate", "lr_decay", "seed")}
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        return fail(str(e))

    print(ds.summary())
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
        result = jl_train.fit(net, ds, config, checkpoint_dir=out, resume=args.resume, callback=on_epoch)
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
    final_test = jl_train.evaluate(net, result.state.params, result.state.model_state, ds.X_test, ds.y_test)
    jl_train.plot_history(
        result.history,
        out / "curves.png",
        steps_per_epoch=steps_per_epoch,
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
