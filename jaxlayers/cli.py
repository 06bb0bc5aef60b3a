"""The ``jaxlayers`` command: ``train``, ``sweep``, ``evaluate``, ``predict`` and ``gradcheck``.

Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path


def _gradcheck(args: argparse.Namespace) -> int:
    from jaxlayers.gradcheck import main as gradcheck_main

    try:
        return gradcheck_main(verbose=args.verbose, ops=args.op)
    except ValueError as e:
        return _fail("gradcheck", str(e), 2)


# Defaults of `jaxlayers train`: the network's, tuned on digits (docs/guides/train-cli.md); the
# training flags take TrainConfig's defaults (tuned there too), read from the dataclass.
MODEL_DEFAULTS = {
    "dataset": "digits",
    "model": "fc",
    "hidden_dims": [1024, 1024],
    "normalization": "batchnorm",
    "dropout_rate": 0.5,
    "loss": "softmax",
    "weight_scale": None,
    "reg": 3e-3,
    # --model convnet / threelayer
    "conv_channels": [32, 64],
    "filter_size": [3, 3],
    "conv_norm": "batchnorm",
    "groups": 8,
    "pool_size": [2, 2],
    "fc_norm": "none",
}
TRAIN_FLAGS = (
    "optimizer",
    "learning_rate",
    "lr_decay",
    "schedule",
    "warmup_epochs",
    "weight_decay",
    "clip_norm",
    "augment",
    "epochs",
    "batch_size",
    "seed",
)
MODELS = {"fc": "FullyConnectedNet", "convnet": "ConvNet", "threelayer": "ThreeLayerConvNet"}
# The flags that configure the named models; a model given as PATH.json (its record) takes none of them.
NAMED_MODEL_FLAGS = (
    "hidden_dims",
    "normalization",
    "dropout_rate",
    "loss",
    "conv_channels",
    "filter_size",
    "conv_norm",
    "groups",
    "pool_size",
    "fc_norm",
    "reg",
    "weight_scale",
)
# `--model convnet`'s settings per dataset (model flags and training flags), tuned for the figures in
# docs/guides/train-cli.md; any flag given overrides its entry. Datasets not listed take MODEL_DEFAULTS and
# TrainConfig's defaults.
CONVNET_PRESETS: dict[str, dict] = {
    "digits": {
        "conv_channels": [32, 64],
        "filter_size": [3, 3],
        "conv_norm": "batchnorm",
        "pool_size": [2, 2],
        "hidden_dims": [256],
        "fc_norm": "none",
        "dropout_rate": 0.5,
        "reg": 0.0,
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "lr_decay": 0.9,
        "epochs": 30,
        "batch_size": 64,
    },
    "mnist1d": {
        "conv_channels": [64, 64, 64],
        "filter_size": [1, 5],
        "conv_norm": "batchnorm",
        "pool_size": [1, 2],
        "hidden_dims": [256],
        "fc_norm": "none",
        "dropout_rate": 0.5,
        "reg": 0.0,
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "lr_decay": 0.9,
        "epochs": 25,
        "batch_size": 64,
    },
}


def _train_defaults() -> dict:
    import dataclasses

    from jaxlayers.training.config import TrainConfig  # lazy, for start-up time: importing the CLI imports no JAX

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {**MODEL_DEFAULTS, **{k: fields[k] for k in TRAIN_FLAGS}}


RUN_FILES = ("config.json", "metrics.jsonl", "curves.png", "checkpoint.safetensors", "summary.json")
OUTPUT_DEFAULT = "runs/<dataset>"  # runs/<dataset>-<model> for --model convnet | threelayer
SWEEP_OUTPUT_DEFAULT = "runs/<dataset>-sweep"
EXIT_CODES = """exit status:
  0    success
  1    runtime error: unreadable or foreign checkpoint, a file that cannot be written, run directory in use,
       processes that could not join (--coordinator)
  2    usage error: a bad flag or value, flags that do not go together, a run that fails its checks before
       training (batch size, devices, memory), a run directory that holds another run (see --overwrite)
  130  interrupted (SIGINT, Ctrl-C): the running epoch finishes and is checkpointed first
  141  the reader of standard output closed it (e.g. `| head`); nothing more is printed
  143  terminated (SIGTERM): as Ctrl-C"""
SWEEP_EXIT_CODES = """exit status:
  0    success
  1    runtime error: a file that cannot be written
  2    usage error: a bad flag or value
  130  interrupted (SIGINT, Ctrl-C) at the end of the running epoch; nothing is written
  141  the reader of standard output closed it (e.g. `| head`); nothing more is printed
  143  terminated (SIGTERM): as Ctrl-C"""


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside training (start-up): leave as Ctrl-C does, with 143."""

    signum = signal.SIGTERM


def _terminate(signum, frame) -> None:
    raise _Terminated("terminated")


def _hidden_dims(text: str) -> list[int]:
    try:
        dims = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden dims must be integers, got {text!r}") from None
    if any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden dims must be positive, got {text!r}")
    return dims


def _model_choice(text: str) -> str:
    """A named model (``fc``, ``convnet``, ``threelayer``) or the path of a model record ending in ``.json``."""
    if text in MODELS or text.lower().endswith(".json"):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(MODELS)} or a model record PATH.json, got {text!r}")


def _int_pair(text: str) -> list[int]:
    """``3`` -> ``[3, 3]``; ``1,5`` or ``1x5`` -> ``[1, 5]`` (:func:`jaxlayers._checks.int_pair`)."""
    from jaxlayers._checks import int_pair  # lazy: parsing --help imports no JAX

    try:
        return list(int_pair(text, "", "the size"))
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _shown_defaults(model: str, dataset: str) -> dict:
    """The defaults a run of ``model`` on ``dataset`` takes for the flags not given (``--model convnet``:
    its preset for the dataset), as the help shows them; :func:`_resolve` applies the same."""
    d = _train_defaults()
    if model == "convnet":
        d.update(CONVNET_PRESETS.get(dataset.partition(":")[0], {}))
    return {**d, "model": model, "dataset": dataset}


def _add_train_arguments(
    p: argparse.ArgumentParser, *, suppress: bool, sweep: bool = False, chosen: tuple[str, str] | None = None
) -> None:
    """The flags `train` and `sweep` share; `train`'s own (--resume, --overwrite, devices) unless ``sweep``.

    ``suppress``: no defaults at all, so that parsing tells which flags were given (see :func:`_given`).
    ``chosen``: ``(model, dataset)`` of the command line (:func:`_chosen`), whose defaults the help shows.
    """
    model, dataset = chosen or (MODEL_DEFAULTS["model"], MODEL_DEFAULTS["dataset"])
    d = _shown_defaults(model, dataset)

    def adder(target):
        """``target.add_argument`` with the default suppressed when ``suppress``."""

        def add(*names, default=None, **kw):
            target.add_argument(*names, default=argparse.SUPPRESS if suppress else default, **kw)

        return add

    a = adder(p)

    a(
        "--dataset",
        default=d["dataset"],
        help="digits | mnist1d | mnist:DIR | cifar10:DIR | npz:PATH (your arrays X_train, y_train, X_test, y_test; "
        "optional X_val, y_val, class_names, image_shape)",
    )
    a(
        "--model",
        default=d["model"],
        type=_model_choice,
        metavar="{fc,convnet,threelayer,PATH.json}",
        help="fc: FullyConnectedNet; convnet: ConvNet (its flags below, defaults tuned per dataset, see "
        "docs/guides/train-cli.md); threelayer: the course's ThreeLayerConvNet (first --conv-channels, "
        "--filter-size, first --hidden-dims); PATH.json: any registered model from its record "
        "(json.dump(jaxlayers.model_record(model), f)), which takes none of the model flags",
    )
    a(
        "--hidden-dims",
        default=d["hidden_dims"],
        type=_hidden_dims,
        nargs="+",
        metavar="H",
        help="hidden layer widths, e.g. 512 512 or 512,512",
    )
    a("--normalization", default=d["normalization"], choices=["batchnorm", "none"], help="normalization layer")
    a(
        "--dropout-rate",
        "--dropout",
        default=d["dropout_rate"],
        type=float,
        dest="dropout_rate",
        metavar="RATE",
        help="probability of dropping a hidden unit",
    )
    a("--loss", default=d["loss"], choices=["softmax", "svm"], help="data loss")
    c = p.add_argument_group(
        "convolutional models (--model convnet | threelayer)",
        "for --model convnet, flags not given take the tuned settings of the dataset (docs/guides/train-cli.md, 'The "
        "--model convnet presets'; `--model convnet --dataset D --help` shows them as the defaults); --hidden-dims, "
        "--dropout-rate, --reg, --loss and --weight-scale apply to every model",
    )
    ca = adder(c)
    ca(
        "--conv-channels",
        default=d["conv_channels"],
        type=_hidden_dims,
        nargs="+",
        metavar="F",
        help="filters of each conv block",
    )
    ca("--filter-size", default=d["filter_size"], type=_int_pair, metavar="K", help="odd kernel size, K or KH,KW")
    ca("--conv-norm", default=d["conv_norm"], choices=["batchnorm", "groupnorm", "none"], help="after each conv")
    ca("--groups", default=d["groups"], type=int, help="groups of --conv-norm groupnorm")
    ca("--pool-size", default=d["pool_size"], type=_int_pair, metavar="P", help="max pool after each conv block")
    ca("--fc-norm", default=d["fc_norm"], choices=["batchnorm", "layernorm", "none"], help="after each hidden affine")
    a("--reg", default=d["reg"], type=float, help="L2 strength, 0.5*reg*sum(W**2)")
    a("--weight-scale", default=d["weight_scale"], type=float, help="std of the normal weight init (None: He init)")
    a(
        "--optimizer",
        default=d["optimizer"],
        choices=["sgd", "sgd_momentum", "rmsprop", "adam", "adamw"],
        help="optax optimizer",
    )
    a("--learning-rate", "--lr", default=d["learning_rate"], type=float, dest="learning_rate", help="base step size")
    a(
        "--schedule",
        default=d["schedule"],
        choices=["constant", "exponential", "cosine"],
        help="the step size over training (optax): exponential: x --lr-decay per epoch; cosine: to 0 at the last epoch",
    )
    a("--lr-decay", default=d["lr_decay"], type=float, help="learning-rate factor per epoch (--schedule exponential)")
    a("--warmup-epochs", default=d["warmup_epochs"], type=int, help="epochs of linear warmup from 0 to --lr")
    a("--weight-decay", default=d["weight_decay"], type=float, help="decoupled weight decay of --optimizer adamw")
    a("--clip-norm", default=d["clip_norm"], type=float, help="clip gradients to this global norm (None: no clipping)")
    a("--augment", default=d["augment"], help="shift:K: shift training images by up to K pixels (seeded; zero fill)")
    more = "" if sweep else "; with --resume, more epochs extend the run"
    a("--epochs", default=d["epochs"], type=int, help=f"passes over the training data{more}")
    a("--batch-size", default=d["batch_size"], type=int, help="examples per step")
    a("--seed", default=d["seed"], type=int, help="PRNG seed in [0, 2**32): init, shuffling, dropout")
    template = SWEEP_OUTPUT_DEFAULT if sweep else OUTPUT_DEFAULT
    a(
        "--output-dir",
        "-o",
        default=_default_output(template, dataset, model),
        help=("directory for sweep.json" if sweep else "run directory")
        + f": {template} for --model fc, {template.replace('<dataset>', '<dataset>-<model>')} otherwise",
    )
    a("--quiet", "-q", default=False, action="store_true", help="no progress bar")
    if sweep:
        return
    a(
        "--resume",
        default=False,
        action="store_true",
        help="continue the run in the output directory from its checkpoint; flags not given are taken from "
        "the checkpoint (config.json is only a record)",
    )
    a(
        "--overwrite",
        default=False,
        action="store_true",
        help="start afresh in an output directory that holds a run, deleting that run's files",
    )
    g = p.add_argument_group(
        "scaling out",
        "data-parallel training: every minibatch is split over the devices, batchnorm statistics span the "
        "global batch, and the result equals the one-device run up to float rounding (docs/guides/scaling-out.md)",
    )
    ga = adder(g)
    ga(
        "--devices",
        type=int,
        metavar="N",
        help="train on N devices (all processes together); the batch size must be a multiple of N. "
        "On a machine without accelerators N CPU devices are simulated (they share the cores)",
    )
    ga("--coordinator", metavar="HOST:PORT", help="multi-process run: address of process 0's coordinator")
    ga("--num-processes", type=int, metavar="P", help="multi-process run: number of processes")
    ga("--process-id", type=int, metavar="I", help="multi-process run: this process's index in [0, P)")
    ga(
        "--init-timeout",
        default=60.0,
        type=float,
        metavar="S",
        help="multi-process run: seconds to wait for the coordinator and the other processes",
    )


def _given(argv: list[str]) -> set[str]:
    """The destinations of the flags given on the command line (a parse without defaults)."""
    return set(vars(build_parser(suppress=True).parse_args(argv))) - {"func", "command"}


def _default_output(default: str, dataset: str, model: str) -> str:
    """The output directory's template filled in: the dataset's name (and ``-<model>`` for a conv model,
    so that `jaxlayers train --model convnet` does not collide with the fully connected run)."""
    suffix = "" if model == "fc" else f"-{Path(model).stem if model.lower().endswith('.json') else model}"
    return default.replace("<dataset>", dataset.partition(":")[0] + suffix)


def _output_dir(args: argparse.Namespace, dataset: str, default: str, model: str = "fc", given=None) -> Path:
    """``-o`` if given, else :func:`_default_output` (``given``: the flags given; ``None``: compare ``-o``
    with the template)."""
    text = args.output_dir
    if (given is not None and "output_dir" not in given) or text == default:
        return Path(_default_output(default, dataset, model))
    return Path(text)


def _chosen(argv: list[str] | None) -> tuple[str, str]:
    """``(model, dataset)`` named on a `train`/`sweep` command line (a pre-parse, before ``--help`` acts),
    the defaults where not given: the help then shows that model's defaults and output directory."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model", default=MODEL_DEFAULTS["model"])
    pre.add_argument("--dataset", default=MODEL_DEFAULTS["dataset"])
    known, _ = pre.parse_known_args(list(argv or [])[1:])
    model = known.model if known.model in MODELS else MODEL_DEFAULTS["model"]
    return model, known.dataset


def _resolve(args: argparse.Namespace, given: set[str], default_out: str = OUTPUT_DEFAULT) -> dict:
    """Flags given > the checkpointed run's settings (with --resume) > the defaults.

    Raises:
      CheckpointError: with --resume, a checkpoint that is corrupt or not of `jaxlayers train`.
    """
    from jaxlayers.train import CHECKPOINT_NAME, CheckpointError, read_checkpoint_metadata

    defaults = _train_defaults()
    opts = {k: getattr(args, k) for k in defaults if k in given}
    for name in ("hidden_dims", "conv_channels"):
        if name in opts:
            opts[name] = [h for part in opts[name] for h in part]
    base = dict(defaults)
    out = _output_dir(args, opts.get("dataset", base["dataset"]), default_out, opts.get("model", base["model"]), given)
    ckpt = out / CHECKPOINT_NAME
    if getattr(args, "resume", False) and ckpt.is_file():
        meta = read_checkpoint_metadata(ckpt)
        try:
            record, tc = meta["models"][0], meta["train_configs"][0]
            if given & {"model", *NAMED_MODEL_FLAGS}:  # flags given: they must describe the checkpoint's model
                flags = _flags_of_model(record["class"], record["config"])
            else:  # the checkpoint's model, rebuilt from its record (any registered model, PATH.json ones too)
                flags = {"model": "record", "model_record": record}
            base.update(
                dataset=meta["data"]["name"] or base["dataset"],
                **flags,
                **{k: tc.get(k, defaults[k]) for k in TRAIN_FLAGS},  # older checkpoints lack the newer fields
            )
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {ckpt}: not a checkpoint of `jaxlayers train` (its metadata lacks {e}); "
                "was it written by fit_many or another model?"
            ) from None
    elif opts.get("model", base["model"]) == "convnet":
        preset = CONVNET_PRESETS.get(opts.get("dataset", base["dataset"]).partition(":")[0], {})
        base.update(preset)
    return {**base, **opts, "output_dir": out, "given": given}


def _flags_of_model(name: str, config: dict) -> dict:
    """The `jaxlayers train` flags that rebuild a checkpointed model (``model_record``'s class and config).

    Raises:
      ValueError: a model class the CLI does not build.
    """
    none = lambda v: v or "none"  # noqa: E731
    common = {"loss": config["loss_type"], "weight_scale": config["weight_scale"], "reg": config["reg"]}
    if name == "FullyConnectedNet":
        return {
            "model": "fc",
            "hidden_dims": list(config["hidden_dims"]),
            "normalization": none(config["normalization"]),
            "dropout_rate": config["dropout_rate"],
            **common,
        }
    if name == "ConvNet":
        keys = ("conv_channels", "filter_size", "groups", "pool_size", "hidden_dims", "dropout_rate")
        return {
            "model": "convnet",
            **{k: list(config[k]) if isinstance(config[k], list | tuple) else config[k] for k in keys},
            "conv_norm": none(config["conv_norm"]),
            "fc_norm": none(config["fc_norm"]),
            **common,
        }
    if name == "ThreeLayerConvNet":
        return {
            "model": "threelayer",
            "conv_channels": [config["num_filters"]],
            "filter_size": [config["filter_size"]] * 2,
            "hidden_dims": [config["hidden_dim"]],
            **common,
        }
    raise ValueError(f"a run of a {name} model, which `jaxlayers train` does not build")


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


def _net_and_config(opts: dict, ds):
    """``(model, TrainConfig, dataset)`` that the resolved flags ``opts`` describe for dataset ``ds``.

    Convolutional models get the dataset as images (``ds.as_images()``), the fully connected net flat.
    """
    from jaxlayers import train as jl_train
    from jaxlayers.models import ConvNet, FullyConnectedNet, ThreeLayerConvNet

    if opts["model"] == "record" or opts["model"].lower().endswith(".json"):
        net, ds = _model_of_record(opts, ds)
        return net, jl_train.TrainConfig(**{k: opts[k] for k in TRAIN_FLAGS}), ds
    none = lambda v: None if v == "none" else v  # noqa: E731
    common = {
        "num_classes": max(ds.num_classes, 2),
        "reg": opts["reg"],
        "loss_type": opts["loss"],
        "weight_scale": opts["weight_scale"],
    }
    if opts["model"] == "fc":
        net = FullyConnectedNet(
            hidden_dims=tuple(opts["hidden_dims"]),
            input_dim=ds.num_features,
            normalization=none(opts["normalization"]),
            dropout_rate=opts["dropout_rate"],
            **common,
        )
    else:
        ds = ds.as_images()
        if opts["model"] == "convnet":
            net = ConvNet(
                input_dim=ds.image_shape,
                conv_channels=tuple(opts["conv_channels"]),
                filter_size=tuple(opts["filter_size"]),
                conv_norm=none(opts["conv_norm"]),
                groups=opts["groups"],
                pool_size=tuple(opts["pool_size"]),
                hidden_dims=tuple(opts["hidden_dims"]),
                fc_norm=none(opts["fc_norm"]),
                dropout_rate=opts["dropout_rate"],
                **common,
            )
        else:
            kh, kw = opts["filter_size"]
            if kh != kw:
                raise ValueError(f"--model threelayer takes a square --filter-size, got {kh},{kw}")
            net = ThreeLayerConvNet(
                input_dim=ds.image_shape,
                num_filters=opts["conv_channels"][0],
                filter_size=kh,
                hidden_dim=opts["hidden_dims"][0],
                **common,
            )
    config = jl_train.TrainConfig(**{k: opts[k] for k in TRAIN_FLAGS})
    return net, config, ds


def _model_of_record(opts: dict, ds):
    """``(model, dataset)`` for ``--model PATH.json`` (or a resumed run's record): the model rebuilt with
    :func:`jaxlayers.model.model_from_record`, the dataset shaped as its examples (flat or images).

    Raises:
      ValueError: an unreadable file, a record that cannot be rebuilt, model flags given with it, or a
        model whose input shape the dataset's examples cannot take.
    """
    import json
    import math

    from jaxlayers.model import model_from_record

    given = sorted(f for f in NAMED_MODEL_FLAGS if f in opts.get("given", ()))
    if given:
        raise ValueError(
            f"--{', --'.join(g.replace('_', '-') for g in given)} configure the named models; "
            f"{opts['model']} holds the whole model (edit the record instead)"
        )
    record = opts.get("model_record")
    if opts["model"] != "record":
        path = Path(opts["model"])
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"--model: no such model record {path}") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"--model: {path} is not a readable JSON model record ({e})") from None
    if not isinstance(record, dict) or "class" not in record or "config" not in record:
        raise ValueError(f"--model: {opts['model']} is not a model record: expected {{'class': ..., 'config': ...}}")
    net = model_from_record(record)
    want = getattr(net, "input_shape", None) or getattr(net, "input_dim", None)
    if want is None:
        return net, ds
    want = tuple(int(d) for d in want) if isinstance(want, list | tuple) else (int(want),)
    if want == ds.input_shape:
        return net, ds
    if ds.image_shape is not None and tuple(ds.image_shape) == want:
        return net, ds.as_images()
    if math.prod(want) == ds.num_features:
        import dataclasses

        return net, dataclasses.replace(
            ds, **{f"X_{s}": getattr(ds, f"X_{s}").reshape(-1, *want) for s in ("train", "val", "test")}
        )
    raise ValueError(
        f"the model of {opts['model']} takes examples of shape {want}, but {ds.name} has {ds.input_shape} "
        f"({ds.num_features} features)"
    )


def _describe_training(config) -> str:
    """One line: optimizer, learning rate and its schedule, epochs, batch, seed."""
    schedule = {
        "constant": "constant",
        "exponential": f"x {config.lr_decay}/epoch",
        "cosine": f"cosine to 0 over {config.epochs} epochs",
    }[config.schedule]
    extra = f", warmup {config.warmup_epochs} epochs" if config.warmup_epochs else ""
    extra += f", weight decay {config.weight_decay}" if config.optimizer == "adamw" else ""
    extra += f", clip norm {config.clip_norm}" if config.clip_norm is not None else ""
    return (
        f"{config.optimizer}, lr {config.learning_rate} {schedule}{extra}, "
        f"{config.epochs} epochs of batch {config.batch_size}, seed {config.seed}"
    )


def _fail(command: str, message: str, code: int) -> int:
    print(f"jaxlayers {command}: error: {message}", file=sys.stderr)
    return code


def _os_message(e: OSError) -> str:
    """One line for an ``OSError``: what failed and the path."""
    if e.filename is not None and str(e.filename) not in str(e.strerror):
        return f"{e.strerror}: {e.filename}"
    return str(e.strerror or e)


# Field names in the library's messages, as the flags that set them (`batch_size` -> `--batch-size`).
_FLAG_NAMES = re.compile(
    r"\b(batch_size|learning_rate|lr_decay|hidden_dims|dropout_rate|weight_scale|conv_channels|filter_size|"
    r"pool_size|conv_norm|fc_norm)\b"
)


def _as_flags(message: str, where: str) -> str:
    """A library error's message for the command line: without its ``where:`` prefix (the command
    names itself), field names spelt as the flags that set them."""
    message = message.removeprefix(f"{where}: ")
    return _FLAG_NAMES.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def _preflight(command: str, net, ds, config, *, mesh=None, num_models: int = 1, run_dir=None, **target) -> int:
    """Every check the run can fail before training (:func:`jaxlayers.training.loop.preflight`, and the
    run directory's rule, :func:`~jaxlayers.training.checkpoint.check_checkpoint_target`), before the
    command prints, creates or compiles anything: a failure is one usage-error line and exit status 2
    (0: all passed)."""
    from jaxlayers.training.checkpoint import (
        CheckpointError,
        RunExists,
        check_checkpoint_target,
        read_checkpoint_metadata,
    )
    from jaxlayers.training.loop import check_resume_metadata, preflight, run_info

    where = f"jaxlayers {command}"
    try:
        ckpt = check_checkpoint_target(run_dir, where=where, **target) if run_dir is not None else None
        data = preflight(net, ds, config, mesh=mesh, num_models=num_models, where=where)
        if ckpt is not None and target.get("resume"):  # as train_run repeats it under the directory's lock
            check_resume_metadata(read_checkpoint_metadata(ckpt), run_info("fit", [net], [config], data))
    except (ValueError, TypeError, MemoryError, FileNotFoundError, RunExists, CheckpointError) as e:
        return _fail(command, _as_flags(str(e), where), 2)
    return 0


def _train(args: argparse.Namespace) -> int:
    import time

    t_start = time.perf_counter()
    fail = lambda message, code=2: _fail("train", message, code)  # noqa: E731
    if args.output_dir == "":
        return fail("--output-dir is an empty path; give a directory such as runs/mine")
    if args.resume and args.overwrite:
        return fail("--resume continues the run and --overwrite replaces it; give one of them, not both")

    from jaxlayers import data as jl_data
    from jaxlayers import train as jl_train
    from jaxlayers.training import rundir

    try:
        opts = _resolve(args, args.given)
    except jl_train.CheckpointError as e:
        return fail(str(e), 1)
    except OSError as e:
        return fail(_os_message(e), 1)
    out = opts["output_dir"]

    import jax

    try:
        mesh = _setup_devices(args)
    except ValueError as e:  # flags that do not go together, more devices than there are
        return fail(str(e))
    except RuntimeError as e:  # DistributedInitError
        return fail(str(e), 1)
    if jax.process_index() > 0:  # every process keeps its own copy of the run (and can resume from it)
        out, args.quiet = out / f"process-{jax.process_index()}", True
    ckpt = out / jl_train.CHECKPOINT_NAME
    try:
        ds = jl_data.load(opts["dataset"])
        net, config, ds = _net_and_config(opts, ds)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return fail(str(e))
    code = _preflight("train", net, ds, config, mesh=mesh, run_dir=out, resume=args.resume, overwrite=args.overwrite)
    if code:
        return code

    print(ds.summary())
    if mesh is not None:
        from jaxlayers.parallel import describe

        print(f"devices: {describe(mesh)}")
    settings = ", ".join(f"{k}={v}" for k, v in net.to_dict().items() if k not in ("dtype", "num_classes"))
    print(f"model: {type(net).__name__}({settings})")
    if hasattr(net, "summary"):
        print(net.summary())
    from jaxlayers.training import memory

    print(f"memory: {memory.estimate_memory(net, config, ds).describe()}")  # checked by _preflight
    print(f"train: {_describe_training(config)} | run dir {out}", flush=True)
    bar = None

    def on_start(start: int) -> None:
        nonlocal bar
        if not args.quiet:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=config.epochs, initial=min(start, config.epochs), unit="epoch", desc=ds.name, file=sys.stderr
            )

    def on_epoch(r: jl_train.EpochReport) -> None:
        if bar is not None:
            bar.set_postfix(
                loss=f"{r.loss:.4f}", train_acc=f"{r.train_acc:.4f}", val_acc=f"{r.val_acc:.4f}", refresh=False
            )
            bar.update(1)

    record = {
        "dataset": opts["dataset"],
        "command": sys.argv[1:] if sys.argv and sys.argv[0].endswith("jaxlayers") else None,
    }
    try:
        result, summary = rundir.train_run(
            net, ds, config, out, resume=args.resume, overwrite=args.overwrite, callback=on_epoch, mesh=mesh,
            record=record, on_start=on_start, where="jaxlayers train", checked=True,
        )  # fmt: skip
    except jl_train.TrainingInterrupted as e:
        if bar is not None:
            bar.close()
        name = "SIGTERM" if e.signum == signal.SIGTERM else "SIGINT"
        if ckpt.is_file():
            print(f"\n{name}: stopped; epoch {e.epoch} is checkpointed in {ckpt}. Continue with:", file=sys.stderr)
            print(f"  jaxlayers train --resume --output-dir {out}", file=sys.stderr)
        else:
            print(f"\n{name}: interrupted before the first epoch ended; there is nothing to resume.", file=sys.stderr)
        return 128 + int(e.signum)
    except rundir.RunExists as e:
        return fail(str(e))
    except rundir.RunDirError as e:
        return fail(str(e), 1)
    except OSError as e:
        return fail(_os_message(e), 1)
    except (ValueError, TypeError, FloatingPointError) as e:  # CheckpointError is a ValueError
        return fail(str(e), 1)
    finally:
        if bar is not None:
            bar.close()

    accs = {k[: -len("_acc")]: v for k, v in summary.items() if k in ("train_acc", "val_acc", "test_acc")}
    final_test = summary["final_test_acc"]
    wall = time.perf_counter() - t_start
    fit_time, first, sps = summary["fit_time_s"], summary["first_epoch_s"], summary["steps_per_second"]
    print(f"best epoch {result.best_epoch} of {summary['epochs']} (by validation accuracy); with its parameters:")
    print(f"  train acc {accs['train']:.4f}   val acc {accs['val']:.4f}   test acc {accs['test']:.4f}")
    print(f"  (the last epoch's parameters: test acc {final_test:.4f})")
    ran = summary["epochs"] - result.start_epoch
    if ran == 0:
        print(f"nothing to train: the checkpoint already holds {summary['epochs']} epochs; wall time {wall:.1f} s")
    else:
        sps_text = f"{sps:.0f} steps/s after the first epoch" if ran > 1 and sps else "steps/s n/a (one epoch)"
        print(
            f"wall time {wall:.1f} s (training {fit_time:.1f} s, first epoch incl. compilation {first or 0:.1f} s); "
            f"{ran * result.steps_per_epoch} steps, {sps_text}"
        )
    print(f"run dir {out}: {', '.join(RUN_FILES)}")
    return 0


def _add_train_parser(sub, suppress: bool, chosen: tuple[str, str] | None = None) -> None:
    p = sub.add_parser(
        "train",
        help="train a model of jaxlayers ops (default: a FullyConnectedNet on digits, about 10 s on 2 CPU cores)",
        description="Train a model (--model: FullyConnectedNet, ConvNet, ThreeLayerConvNet) built from jaxlayers' hand-differentiated ops with optax; "
        "writes config.json, metrics.jsonl, curves.png, checkpoint.safetensors and summary.json to the run "
        "directory. One process writes a run directory at a time (a lock); a directory that holds a run is "
        "continued with --resume or replaced with --overwrite.",
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    _add_train_arguments(p, suppress=suppress, chosen=chosen)
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

    if args.output_dir == "":
        return _fail("sweep", "--output-dir is an empty path; give a directory such as runs/sweep", 2)
    opts = _resolve(args, args.given, SWEEP_OUTPUT_DEFAULT)

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
        net, config, ds = _net_and_config(opts, ds)
        k_models = len(next(iter(lists.values())))
        code = _preflight("sweep", net, ds, config, num_models=k_models)
        if code:
            return code
        print(ds.summary())
        print(f"sweep: {k_models} models over {', '.join(lists)}; model {type(net).__name__}")
        bar = None
        if not args.quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.epochs, unit="epoch", desc=f"{k_models} models", file=sys.stderr)

        def on_epoch(r: jl_train.EpochReport) -> None:
            if bar is not None:
                bar.set_postfix(best_val_acc=f"{float(max(r.val_acc)):.4f}", refresh=False)
                bar.update(1)

        try:
            result = jl_train.fit_many(net, ds, config, callback=on_epoch, **lists)
        except jl_train.TrainingInterrupted as e:
            name = "SIGTERM" if e.signum == signal.SIGTERM else "SIGINT"
            print(f"\n{name}: the sweep stopped after epoch {e.epoch}; nothing was written", file=sys.stderr)
            return 128 + int(e.signum)
        finally:
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
    out = opts["output_dir"]
    if True:  # sweep.json always goes to -o (default runs/<dataset>-sweep)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _fail("sweep", _os_message(e), 1)
        h = result.history
        record = {
            "dataset": opts["dataset"],
            "model": {"class": type(net).__name__, "config": net.to_dict()},
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
        try:
            jl_train.atomic_write(out / "sweep.json", (json.dumps(record, indent=1) + "\n").encode())
        except OSError as e:
            return _fail("sweep", f"cannot write {out / 'sweep.json'}: {_os_message(e)}", 1)
        print(f"wrote {out / 'sweep.json'}")
    return 0


def _add_sweep_parser(sub, suppress: bool, chosen: tuple[str, str] | None = None) -> None:
    p = sub.add_parser(
        "sweep",
        help="train many variants at once (vmapped, one compiled program), e.g. --weight-scales log:1e-4:1:20",
        description="Train K FullyConnectedNets that differ in seed, weight scale, learning rate, dropout rate or "
        "reg with jaxlayers.train.fit_many: one compiled program per epoch, vmapped over the models. The other flags "
        "are `jaxlayers train`'s and set what all models share; each swept list gives one value per model "
        "(a,b,c or log:START:STOP:NUM or lin:START:STOP:NUM). Prints one row per model and writes sweep.json.",
        epilog=SWEEP_EXIT_CODES,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    _add_train_arguments(p, suppress=suppress, sweep=True, chosen=chosen)
    from jaxlayers.sweep import SWEPT  # the one list of sweepable settings

    for flag in SWEPT:
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            type=_sweep_values,
            metavar="VALUES",
            dest=flag,
            default=argparse.SUPPRESS if suppress else None,
            help=f"per-model {flag.replace('_', ' ')}",
        )
    p.add_argument(
        "--grid",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="train every combination of the lists (else zip them)",
    )
    p.set_defaults(func=_sweep)


def _load_run(run_dir: str, which: str):
    """``jaxlayers.load_run(run_dir, which)``; a run that cannot be loaded is one line (exit 1)."""
    import jaxlayers

    if not hasattr(jaxlayers, "load_run"):  # the library side lands separately
        raise RuntimeError("this jaxlayers has no load_run; update jaxlayers")
    return jaxlayers.load_run(run_dir, which)


class _UsageError(Exception):
    """A command-line usage error found by a command itself (exit status 2)."""


def _run_errors(command: str, action):
    """Run ``action()``; errors a user can cause become one line: 1 for a run or file that cannot be read or
    written, 2 for an input of the wrong shape or kind."""
    try:
        return action()
    except _UsageError as e:
        return _fail(command, str(e), 2)
    except BrokenPipeError:  # the reader left (`| head`): main's one handler
        raise
    except FileNotFoundError as e:
        return _fail(command, _os_message(e) if e.filename else str(e), 1)
    except OSError as e:
        return _fail(command, _os_message(e), 1)
    except (ValueError, TypeError) as e:
        from jaxlayers.train import CheckpointError

        return _fail(command, str(e), 1 if isinstance(e, CheckpointError) else 2)
    except RuntimeError as e:
        return _fail(command, str(e), 1)


def _predict_labels(run, X, batch_size: int = 1024):
    """Labels of the model on inputs ``X`` that are already standardised, in test mode."""
    import jax.numpy as jnp
    import numpy as np

    labels = []
    for i in range(0, len(X), batch_size):
        scores, _ = run.model.apply(run.params, run.model_state, jnp.asarray(X[i : i + batch_size]), train=False)
        labels.append(np.asarray(jnp.argmax(scores, axis=-1)))
    return np.concatenate(labels) if labels else np.zeros(0, np.int64)


def _evaluate(args: argparse.Namespace) -> int:
    def action() -> int:
        import numpy as np

        from jaxlayers import data as jl_data
        from jaxlayers.training.plots import confusion_matrix, plot_confusion

        run = _load_run(args.run_dir, args.which)
        name = args.dataset or (run.metadata.get("data") or {}).get("name") or (run.config or {}).get("dataset")
        if not name:
            raise ValueError(f"{args.run_dir}: the run does not record its dataset; give --dataset")
        ds = jl_data.load(name)
        X, y = getattr(ds, f"X_{args.split}"), np.asarray(getattr(ds, f"y_{args.split}"))
        X = run.preprocessing.as_input(X, f"dataset {name!r} {args.split}")  # the one reshaping rule
        # The loader standardises with the training statistics, as training did: the model sees what it saw.
        pred = _predict_labels(run, X)
        num_classes = int(max(pred.max(initial=0), y.max(initial=0)) + 1)
        num_classes = max(num_classes, len(run.class_names or ()))
        matrix = confusion_matrix(y, pred, num_classes)
        names = list(run.class_names) if run.class_names else [str(i) for i in range(num_classes)]
        acc = float(np.trace(matrix) / max(matrix.sum(), 1))
        print(
            f"{run.which} parameters (epoch {run.epoch}) of {args.run_dir} on {name} {args.split} ({len(y)} examples)"
        )
        print(f"accuracy {acc:.4f} ({int(np.trace(matrix))}/{int(matrix.sum())})")
        print("per class: " + "  ".join(
            f"{names[c]} {matrix[c, c] / matrix[c].sum():.3f}" if matrix[c].sum() else f"{names[c]} n/a"
            for c in range(num_classes)
        ))  # fmt: skip
        width = max(max(len(n) for n in names), len(str(int(matrix.max(initial=0)))), 3)
        print("confusion matrix (rows: true, columns: predicted):")
        print(" " * (width + 1) + " ".join(n.rjust(width) for n in names))
        for c in range(num_classes):
            print(names[c].rjust(width) + " " + " ".join(str(int(v)).rjust(width) for v in matrix[c]))
        out = Path(args.output) if args.output else Path(args.run_dir) / "confusion.png"
        try:
            plot_confusion(matrix, out, class_names=names, title=f"{name} {args.split}: accuracy {acc:.4f}")
        except OSError as e:
            raise OSError(e.errno, f"cannot write {out}: {e.strerror}", str(out)) from e
        print(f"wrote {out}")
        return 0

    return _run_errors("evaluate", action)


def _read_inputs(path: Path):
    """Examples from ``.npy``, ``.npz`` (its one array, or ``X``) or ``.csv`` (one example per row, an optional
    header line)."""
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = "X" if "X" in keys else "x" if "x" in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise ValueError(f"{path}: holds arrays {keys}; name the inputs X (or save only one array)")
            return z[key]
    if suffix == ".csv":
        try:
            return np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError:
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)  # a header line
            except ValueError as e:
                raise ValueError(f"{path}: not a CSV of numbers, one example per row ({e})") from None
    raise ValueError(f"{path}: unknown input format {suffix or '(no suffix)'!r}; give a .npy, .npz or .csv file")


def _predict(args: argparse.Namespace) -> int:
    def action() -> int:

        import numpy as np

        path = Path(args.input)
        if args.output != "-" and Path(args.output).exists() and not args.overwrite:  # before any work
            raise _UsageError(
                f"--output {args.output} exists; give --overwrite to replace it, another --output, "
                "or --output - for standard output"
            )
        if not path.is_file():
            raise FileNotFoundError(2, f"no input file {path}", str(path))
        X = _read_inputs(path)
        run = _load_run(args.run_dir, args.which)
        X = run.preprocessing.as_input(X, str(path))  # the shapes Run.predict takes, by the same rule
        if not np.issubdtype(X.dtype, np.number):
            raise TypeError(f"{path}: inputs must be numbers, got dtype {X.dtype}")
        proba = np.asarray(run.predict_proba(X))
        labels = proba.argmax(axis=1) if len(proba) else np.zeros(0, np.int64)
        names = list(run.class_names) if run.class_names else None
        header = ["index", "label"] + (["class"] if names else []) + [f"p_{c}" for c in range(proba.shape[1])]
        lines = [",".join(header)]
        for i, (label, p) in enumerate(zip(labels, proba, strict=True)):
            row = [str(i), str(int(label))] + ([f'"{names[label]}"'] if names else []) + [f"{v:.6g}" for v in p]
            lines.append(",".join(row))
        text = "\n".join(lines) + "\n"
        done = f"{len(labels)} predictions ({run.which} parameters, epoch {run.epoch})"
        if args.output == "-":  # the CSV is the output; the note goes to stderr
            sys.stdout.write(text)
            sys.stdout.flush()
            print(f"wrote {done} to standard output", file=sys.stderr)
            return 0
        out = Path(args.output)
        from jaxlayers.train import atomic_write

        try:
            atomic_write(out, text.encode())
        except OSError as e:
            raise OSError(e.errno, f"cannot write {out}: {e.strerror}", str(out)) from e
        print(f"wrote {done} to {out}")
        return 0

    return _run_errors("predict", action)


def _add_run_parsers(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, per-class accuracy and confusion matrix of a trained run on a dataset split",
        description="Load a run directory written by `jaxlayers train` (or fit(run_dir=)) and evaluate it on a "
        "split of a dataset (default: the run's own): accuracy, per-class accuracy, the confusion matrix "
        "(printed, and drawn to confusion.png in the run directory).",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its checkpoint.safetensors)")
    p.add_argument("--dataset", default=None, help="digits | mnist1d | mnist:DIR | cifar10:DIR; None: the run's")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split")
    p.add_argument("--which", choices=["best", "last"], default="best", help="the best-validation or the last epoch")
    p.add_argument("--output", "-o", default=None, help="the confusion plot (None: RUN_DIR/confusion.png)")
    p.set_defaults(func=_evaluate)
    p = sub.add_parser(
        "predict",
        help="labels and class probabilities of a trained run for raw inputs (.npy, .npz, .csv)",
        description="Load a run directory and predict raw inputs (as the dataset's loader reads them; the run's "
        "stored standardisation is applied): one CSV row per example with its label and the class probabilities.",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its checkpoint.safetensors)")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz (array X) or .csv (one example per row) of raw inputs")
    p.add_argument("--output", "-o", default="predictions.csv", help="the CSV to write; - for standard output")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists (else refused)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="the best-validation or the last epoch")
    p.set_defaults(func=_predict)


class _Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` (the subcommands' parsers too) whose unknown-option error suggests the
    nearest option of that (sub)command: ``--epoch`` -> "did you mean --epochs?" (Python 3.12's
    ``suggest_on_error`` does it for choices only, and we support 3.11)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        unknown = [a for a in extras if a.startswith("-") and a != "-" and not a.lstrip("-").isdigit()]
        if unknown:
            self.error(self._unknown(extras))
        return namespace, extras

    def _unknown(self, extras: list[str]) -> str:
        import difflib

        options = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        message = f"unrecognized arguments: {' '.join(extras)}"
        for arg in extras:
            name = arg.split("=", 1)[0]
            if name.startswith("--"):
                close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
                if close:
                    return f"{message} (did you mean {close[0]}?)"
        return message


class _VersionAction(argparse.Action):
    """``--version``: jaxlayers', jax's and jaxlib's versions and JAX's default backend (JAX is imported
    only here, so that other commands' start-up does not pay for it twice)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


def _version_text() -> str:
    """``jaxlayers X (jax Y, jaxlib Z; default backend B)``."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"

    try:
        import jax

        backend = jax.default_backend()
    except Exception as e:  # a broken accelerator plugin still lets --version answer
        backend = f"unavailable ({type(e).__name__})"
    return f"jaxlayers {version('jaxlayers')} (jax {version('jax')}, jaxlib {version('jaxlib')}; default backend {backend})"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the exit-status epilog as written."""


def build_parser(*, suppress: bool = False, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``jaxlayers`` parser; ``suppress``: without defaults (which flags were given, see :func:`_given`);
    ``argv``: the command line, whose ``--model``/``--dataset`` choose the defaults `train --help` shows."""
    parser = _Parser(
        prog="jaxlayers",
        description=re.sub(r"``(.*?)``", r"\1", __doc__.splitlines()[0]),  # the docstring's markup, as text
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="show the versions of jaxlayers, jax and jaxlib, and the default backend",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "gradcheck",
        help="check every op's custom VJP against autodiff and finite differences (float64)",
        allow_abbrev=False,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one row per sample, not per op")
    p.add_argument(
        "--op",
        nargs="+",
        metavar="NAME",
        help="check only these ops (e.g. conv2d batchnorm); default: every op (about 1-2 minutes on 2 cores)",
    )
    p.set_defaults(func=_gradcheck)
    chosen = _chosen(argv) if argv and argv[0] in ("train", "sweep") else None
    _add_train_parser(sub, suppress, chosen)
    _add_sweep_parser(sub, suppress, chosen)
    _add_run_parsers(sub)
    return parser


def _reader_left() -> int:
    """The reader of standard output closed it (``jaxlayers evaluate RUN | head -3``): stop quietly with
    128 + SIGPIPE, as a program killed by SIGPIPE would. Standard output is pointed at ``/dev/null`` so that
    the interpreter's final flush does not fail again (the Python docs' recipe for SIGPIPE)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (captured): nothing to redirect
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))


def main(argv: list[str] | None = None) -> int:
    """Run the ``jaxlayers`` command; the exit status (see ``EXIT_CODES``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    restore = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        restore = signal.signal(signal.SIGTERM, _terminate)  # start-up: SIGTERM leaves as Ctrl-C does
    try:
        args = build_parser(argv=argv).parse_args(argv)
        args.given = _given(argv)
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _reader_left()
    except SystemExit:  # --help, --version, a usage error: argparse printed and exits
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _reader_left()
        raise
    except KeyboardInterrupt as e:  # before training started (fit stops at an epoch boundary itself)
        signum = getattr(e, "signum", signal.SIGINT)
        name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
        print(f"\njaxlayers: {name} during start-up; nothing was trained", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


if __name__ == "__main__":
    sys.exit(main())
