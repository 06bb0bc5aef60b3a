"""The ``jaxlayers`` command: ``train``, ``sweep``, ``evaluate``, ``predict``, ``sample`` and ``gradcheck``.

Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path
from typing import NamedTuple


def _gradcheck(args: argparse.Namespace) -> int:
    from jaxlayers.gradcheck import main as gradcheck_main

    try:
        return gradcheck_main(verbose=args.verbose, ops=args.op)
    except ValueError as e:
        return _fail("gradcheck", str(e), 2)


# ---------------------------------------------------------------------------------------------------- the flags


def _arg_type(parse, what: str):
    """An argparse ``type=``: ``parse(text)``, whose ``ValueError``/``TypeError`` (from :mod:`jaxlayers._checks`)
    becomes argparse's usage error (exit 2) naming ``what``."""

    def convert(text: str):
        try:
            return parse(text)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err) or f"bad {what} {text!r}") from None

    return convert


def _positive_ints(text: str) -> list[int]:
    """``"512,512"`` or ``"512 512"`` -> ``[512, 512]``, each an int >= 1 (:func:`jaxlayers._checks.check_int`)."""
    from jaxlayers._checks import check_int  # lazy: parsing --help imports no JAX

    try:
        items = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"hidden dims must be integers, got {text!r}") from None
    return [check_int(v, "", f"each of {text!r}", minimum=1) for v in items]


def _int_pair(text: str) -> list[int]:
    """``3`` -> ``[3, 3]``; ``1,5`` or ``1x5`` -> ``[1, 5]`` (:func:`jaxlayers._checks.int_pair`)."""
    from jaxlayers._checks import int_pair  # lazy: parsing --help imports no JAX

    return list(int_pair(text, "", "the size"))


def _model_choice(text: str) -> str:
    """A named model (``fc``, ``convnet``, ``threelayer``) or the path of a model record ending in ``.json``."""
    if text in MODELS or text.lower().endswith(".json"):
        return text
    raise ValueError(f"expected one of {', '.join(MODELS)} or a model record PATH.json, got {text!r}")


class _Flag(NamedTuple):
    """One flag of `train`/`sweep`. ``role``: ``data`` (what to train), ``model`` (the named models'
    settings; ``conv``: in the convolutional group), ``train`` (a :class:`~jaxlayers.train.TrainConfig`
    field, its default read from there), ``out`` (where and how to report), ``run`` and ``scale`` (`train`
    only). ``default``: for ``data`` and ``model`` flags, `jaxlayers train`'s (tuned on digits,
    docs/guides/train-cli.md)."""

    names: tuple[str, ...]
    role: str
    help: str
    default: object
    kw: dict


def _flag(*names: str, role: str, help: str, default=None, **kw) -> _Flag:
    return _Flag(names, role, help, default, kw)


_POSITIVE_INTS = dict(type=_arg_type(_positive_ints, "positive ints"), nargs="+")
_PAIR = dict(type=_arg_type(_int_pair, "int pair"))
FLAGS = (
    _flag("--dataset", role="data", default="digits",
          help="digits | mnist1d | mnist1d-seq | pydoc-chars[:T] | digit-captions | mnist:DIR | cifar10:DIR | npz:PATH (your arrays X_train, y_train, "
          "X_test, y_test; optional X_val, y_val, class_names, image_shape)"),
    _flag("--model", role="data", default="fc", type=_arg_type(_model_choice, "model"),
          metavar="{fc,convnet,threelayer,rnn,lstm,gru,charlm,captioning,captioning_transformer,transformer,chartransformer,PATH.json}",
          help="fc: FullyConnectedNet; convnet: ConvNet (its flags below, defaults tuned per dataset, see "
          "docs/guides/train-cli.md); threelayer: the course's ThreeLayerConvNet (first --conv-channels, "
          "--filter-size, first --hidden-dims); rnn | lstm | gru: a recurrent layer of first --hidden-dims units, "
          "then the classifier, on each example read as a sequence (--dataset mnist1d-seq unless given; a flat dataset "
          "as (features, 1)); charlm: a character language model on --dataset pydoc-chars[:T] (Embedding(V, 64) -> "
          "LSTM(first --hidden-dims) -> TemporalAffine(V)); captioning: CaptioningRNN on --dataset digit-captions (a conv "
          "image encoder of --conv-channels, 3x3 conv - --conv-norm (batchnorm or none) - ReLU - 2x2 pool each, then h0 = features W_proj, an LSTM of first "
          "--hidden-dims over word vectors of 64, scores over the words; evaluate reports exact-caption accuracy); "
          "captioning_transformer: CaptioningTransformer on digit-captions (the same encoder, its features projected to "
          "one memory token of width H, one post-norm decoder layer of width H per --hidden-dims entry: causal "
          "self-attention, cross-attention to the memory, an MLP of 4H; 4 heads); transformer: a Transformer classifier on --dataset "
          "mnist1d-seq (windows of 8 steps every 4, one pre-norm block of width H per --hidden-dims entry); chartransformer: a "
          "causal character Transformer on pydoc-chars (blocks as transformer's); PATH.json: any registered model from its record "
          "(json.dump(jaxlayers.model.model_record(model), f)), which takes none of the model flags"),
    _flag("--hidden-dims", role="model", default=[1024, 1024], metavar="H", **_POSITIVE_INTS,
          help="hidden layer widths, e.g. 512 512 or 512,512"),
    _flag("--normalization", role="model", default="batchnorm", choices=["batchnorm", "none"],
          help="normalization layer"),
    _flag("--dropout-rate", "--dropout", role="model", default=0.5, type=float, metavar="RATE",
          help="probability of dropping a hidden unit"),
    _flag("--loss", role="model", default="softmax", choices=["softmax", "svm"], help="data loss"),
    _flag("--conv-channels", role="conv", default=[32, 64], metavar="F", **_POSITIVE_INTS,
          help="filters of each conv block"),
    _flag("--filter-size", role="conv", default=[3, 3], metavar="K", **_PAIR, help="odd kernel size, K or KH,KW"),
    _flag("--conv-norm", role="conv", default="batchnorm", choices=["batchnorm", "groupnorm", "none"],
          help="after each conv"),
    _flag("--groups", role="conv", default=8, type=int, help="groups of --conv-norm groupnorm"),
    _flag("--pool-size", role="conv", default=[2, 2], metavar="P", **_PAIR, help="max pool after each conv block"),
    _flag("--fc-norm", role="conv", default="none", choices=["batchnorm", "layernorm", "none"],
          help="after each hidden affine"),
    _flag("--reg", role="model", default=3e-3, type=float, help="L2 strength, 0.5*reg*sum(W**2)"),
    _flag("--weight-scale", role="model", type=float, help="std of the normal weight init (None: He init)"),
    _flag("--optimizer", role="train", choices=["sgd", "sgd_momentum", "rmsprop", "adam", "adamw"],
          help="optax optimizer"),
    _flag("--learning-rate", "--lr", role="train", type=float, help="base step size"),
    _flag("--schedule", role="train", choices=["constant", "exponential", "cosine"],
          help="the step size over training (optax): exponential: x --lr-decay per epoch; cosine: to 0 at the "
          "last epoch"),
    _flag("--lr-decay", role="train", type=float, help="learning-rate factor per epoch (--schedule exponential)"),
    _flag("--warmup-epochs", role="train", type=int, help="epochs of linear warmup from 0 to --lr"),
    _flag("--weight-decay", role="train", type=float, help="decoupled weight decay of --optimizer adamw"),
    _flag("--clip-norm", role="train", type=float, help="clip gradients to this global norm (None: no clipping)"),
    _flag("--augment", role="train", metavar="shift:K",
          help="shift each training image by up to K pixels, or each sequence by up to K steps along time (seeded from --seed; zero fill; None: no augmentation)"),
    _flag("--epochs", role="train", type=int, help="passes over the training data{more}"),
    _flag("--batch-size", role="train", type=int, help="examples per step"),
    _flag("--seed", role="train", type=int, help="PRNG seed in [0, 2**32): init, shuffling, dropout"),
    _flag("--output-dir", "-o", role="out", help="{output_help}"),
    _flag("--quiet", "-q", role="out", default=False, action="store_true", help="no progress bar"),
    _flag("--resume", role="run", default=False, action="store_true",
          help="continue the run in the output directory from its checkpoint; flags not given are taken from "
          "the checkpoint (config.json is only a record)"),
    _flag("--overwrite", role="run", default=False, action="store_true",
          help="start afresh in an output directory that holds a run, deleting that run's files"),
    _flag("--devices", role="scale", type=int, metavar="N",
          help="train on N devices (all processes together); the batch size must be a multiple of N. "
          "On a machine without accelerators N CPU devices are simulated (they share the cores)"),
    _flag("--coordinator", role="scale", metavar="HOST:PORT",
          help="multi-process run: address of process 0's coordinator"),
    _flag("--num-processes", role="scale", type=int, metavar="P", help="multi-process run: number of processes"),
    _flag("--process-id", role="scale", type=int, metavar="I",
          help="multi-process run: this process's index in [0, P)"),
    _flag("--init-timeout", role="scale", default=60.0, type=float, metavar="S",
          help="multi-process run: seconds to wait for the coordinator and the other processes"),
)  # fmt: skip


def _dest(flag: _Flag) -> str:
    return flag.names[0].lstrip("-").replace("-", "_")


TRAIN_FLAGS = tuple(_dest(f) for f in FLAGS if f.role == "train")
# The flags that configure the named models; a model given as PATH.json (its record) takes none of them.
NAMED_MODEL_FLAGS = tuple(_dest(f) for f in FLAGS if f.role in ("model", "conv"))


def _first(value: list):
    return value[0]


def _square(size: list[int]) -> int:
    if size[0] != size[1]:
        raise ValueError(f"--model threelayer takes a square --filter-size, got {size[0]},{size[1]}")
    return size[0]


# The named models: their class in jaxlayers.models and the constructor field each model flag sets (with a
# conversion where the field is not the flag's value). "none" is passed on: the models take it for None.
_COMMON_FIELDS = {"loss": "loss_type", "reg": "reg", "weight_scale": "weight_scale"}
_CONVNET_FLAGS = ("conv_channels", "filter_size", "conv_norm", "groups", "pool_size", "hidden_dims", "fc_norm")
MODELS: dict[str, tuple[str, dict]] = {
    "fc": ("FullyConnectedNet", {f: f for f in ("hidden_dims", "normalization", "dropout_rate")}),
    "convnet": ("ConvNet", {f: f for f in (*_CONVNET_FLAGS, "dropout_rate")}),
    "threelayer": (
        "ThreeLayerConvNet",
        {
            "conv_channels": ("num_filters", _first),
            "filter_size": ("filter_size", _square),
            "hidden_dims": ("hidden_dim", _first),
        },
    ),
    # recurrent classifiers, nn.Sequential(nn.GRU(H), [nn.Dropout], nn.Affine(C)): examples read as sequences
    **{
        m: (m.upper(), {"hidden_dims": ("hidden", _first), "dropout_rate": "dropout_rate"})
        for m in ("rnn", "lstm", "gru")
    },
    "charlm": ("char_lm", {"hidden_dims": ("hidden", _first)}),  # models.char_lm, built from the vocabulary
    # captioning.CaptioningRNN, built from the vocabulary and the image shape
    "captioning": (
        "CaptioningRNN",
        {
            "hidden_dims": ("hidden_dim", _first),
            "conv_channels": "encoder_channels",
            "conv_norm": "encoder_norm",
            "dropout_rate": "dropout_rate",
        },
    ),
    # captioning.CaptioningTransformer: the encoder's flags as captioning's, one decoder layer per --hidden-dims entry
    "captioning_transformer": (
        "CaptioningTransformer",
        {"conv_channels": "encoder_channels", "conv_norm": "encoder_norm", "dropout_rate": "dropout_rate"},
    ),
    # models.transformer_classifier / models.char_transformer: one block of width H per --hidden-dims entry
    "transformer": ("transformer_classifier", {}),
    "chartransformer": ("char_transformer", {}),
}
RECURRENT = ("rnn", "lstm", "gru")
# their settings (any flag given overrides), tuned on mnist1d-seq for bench/RESULTS.md; their default dataset
RECURRENT_PRESET = {"dataset": "mnist1d-seq", "hidden_dims": [128], "dropout_rate": 0.0, "reg": 0.0}
RECURRENT_PRESET.update(optimizer="adam", learning_rate=3e-3, schedule="cosine", batch_size=64, epochs=40)
RNN_PRESET = {**RECURRENT_PRESET, "learning_rate": 1e-3, "clip_norm": 1.0}  # a tanh RNN stalls at 3e-3 unclipped
# `--model charlm`'s settings (any flag given overrides its entry); --dataset pydoc-chars[:T].
CHARLM_PRESET = {"dataset": "pydoc-chars", "hidden_dims": [256], "reg": 0.0, "optimizer": "adam", "batch_size": 32}
CHARLM_PRESET.update(learning_rate=2e-3, epochs=10, clip_norm=5.0, schedule="constant")
# `--model captioning`'s settings (any flag given overrides), tuned on digit-captions for bench/RESULTS.md.
CAPTIONING_PRESET = {"dataset": "digit-captions", "hidden_dims": [256], "conv_channels": [32, 64], "reg": 0.0}
CAPTIONING_PRESET.update(dropout_rate=0.5, conv_norm="batchnorm")
CAPTIONING_PRESET.update(optimizer="adamw", weight_decay=0.3, learning_rate=2e-3, schedule="cosine")
CAPTIONING_PRESET.update(batch_size=100, epochs=15)
CAPTIONING_WORDVEC = 64  # the word vectors' size of --model captioning
# `--model captioning_transformer`'s settings (any flag given overrides), tuned on digit-captions for
# bench/RESULTS.md: captioning's encoder, two post-norm decoder layers of width 128 (4 heads, MLP 512).
CAPTIONING_TRANSFORMER_PRESET = {**CAPTIONING_PRESET, "hidden_dims": [128, 128]}
CAPTIONING_TRANSFORMER_HEADS = 4  # the decoder's attention heads of --model captioning_transformer
CAPTIONING_TRANSFORMER_DROPOUT = 0.1  # its decoder_dropout (the NumPy original's)
# The presets of the models that have one besides convnet's per-dataset ones (and their default dataset).
# `--model transformer`'s settings, tuned on mnist1d-seq for bench/RESULTS.md: two blocks of width 64,
# dropout 0.1 in the blocks, AdamW, random shifts of the training signals by up to 2 steps (chosen over 4 by the
# mean validation accuracy of seeds 0-2).
TRANSFORMER_PRESET = {"dataset": "mnist1d-seq", "hidden_dims": [64, 64], "dropout_rate": 0.1, "reg": 0.0}
TRANSFORMER_PRESET.update(optimizer="adamw", learning_rate=2e-3, weight_decay=0.05, schedule="cosine")
TRANSFORMER_PRESET.update(batch_size=64, epochs=60, augment="shift:2")
# `--model chartransformer`'s: charlm's data and budget (10 epochs of batch 32), AdamW with a warmup.
CHARTRANSFORMER_PRESET = {**CHARLM_PRESET, "hidden_dims": [128, 128], "dropout_rate": 0.0, "optimizer": "adamw"}
CHARTRANSFORMER_PRESET.update(learning_rate=1e-3, weight_decay=0.01, schedule="cosine", clip_norm=1.0)
PRESETS = {"rnn": RNN_PRESET, "lstm": RECURRENT_PRESET, "gru": RECURRENT_PRESET, "charlm": CHARLM_PRESET}
PRESETS["captioning"] = CAPTIONING_PRESET
PRESETS["captioning_transformer"] = CAPTIONING_TRANSFORMER_PRESET
PRESETS.update(transformer=TRANSFORMER_PRESET, chartransformer=CHARTRANSFORMER_PRESET)


def _default_dataset(model: str) -> str:
    return PRESETS.get(model, {}).get("dataset", "digits")


# `--model convnet`'s settings per dataset (model flags and training flags), tuned for the figures in
# docs/guides/train-cli.md; any flag given overrides its entry. Datasets not listed take the flags' defaults.
_CONVNET_SHARED = {"conv_norm": "batchnorm", "hidden_dims": [256], "fc_norm": "none", "dropout_rate": 0.5, "reg": 0.0}
_CONVNET_SHARED.update(optimizer="adam", learning_rate=2e-3, lr_decay=0.9, batch_size=64)
CONVNET_PRESETS: dict[str, dict] = {
    "digits": {**_CONVNET_SHARED, "conv_channels": [32, 64], "filter_size": [3, 3], "pool_size": [2, 2], "epochs": 30},
    "mnist1d": {**_CONVNET_SHARED, "conv_channels": [64] * 3, "filter_size": [1, 5], "pool_size": [1, 2], "epochs": 25},
}


def _train_defaults() -> dict:
    """The defaults of the flags that describe a run: the table's, and TrainConfig's for the training flags
    (the one place they are set)."""
    import dataclasses

    from jaxlayers.training.config import TrainConfig  # lazy, for start-up time: importing the CLI imports no JAX

    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    roles = ("data", "model", "conv", "train")
    return {_dest(f): fields[_dest(f)] if f.role == "train" else f.default for f in FLAGS if f.role in roles}


def _shown_defaults(model: str, dataset: str) -> dict:
    """The defaults a run of ``model`` on ``dataset`` takes for the flags not given (``--model convnet``:
    its preset for the dataset), as the help shows them; :func:`_resolve` applies the same."""
    d = _train_defaults()
    if model == "convnet":
        d.update(CONVNET_PRESETS.get(dataset.partition(":")[0], {}))
    d.update(PRESETS.get(model, {}))
    return {**d, "model": model, "dataset": dataset}


_GROUPS = {
    "conv": (
        "convolutional models (--model convnet | threelayer)",
        "for --model convnet, flags not given take the tuned settings of the dataset (docs/guides/train-cli.md, 'The "
        "--model convnet presets'; `--model convnet --dataset D --help` shows them as the defaults); --hidden-dims, "
        "--dropout-rate, --reg, --loss and --weight-scale apply to every model",
    ),
    "scale": (
        "scaling out",
        "data-parallel training: every minibatch is split over the devices, batchnorm statistics span the "
        "global batch, and the result equals the one-device run up to float rounding (docs/guides/scaling-out.md)",
    ),
}


def _add_train_arguments(
    p: argparse.ArgumentParser, *, suppress: bool, sweep: bool = False, chosen: tuple[str, str] | None = None
) -> None:
    """The flags of :data:`FLAGS` that `train` and `sweep` share; `train`'s own (roles ``run``, ``scale``)
    unless ``sweep``.

    ``suppress``: no defaults at all, so that parsing tells which flags were given (see :func:`_given`).
    ``chosen``: ``(model, dataset)`` of the command line (:func:`_chosen`), whose defaults the help shows.
    """
    model, dataset = chosen or ("fc", "digits")
    d = _shown_defaults(model, dataset)
    template = SWEEP_OUTPUT_DEFAULT if sweep else OUTPUT_DEFAULT
    d["output_dir"] = _default_output(template, dataset, model)
    text = {
        "more": "" if sweep else "; with --resume, more epochs extend the run",
        "output_help": ("directory for sweep.json" if sweep else "run directory")
        + f": {template} for --model fc, {template.replace('<dataset>', '<dataset>-<model>')} otherwise",
    }
    groups = {role: p.add_argument_group(*_GROUPS[role]) for role in ("conv", *(() if sweep else ("scale",)))}
    for f in FLAGS:
        if sweep and f.role in ("run", "scale"):
            continue
        target = groups.get(f.role, p)
        dest = _dest(f)
        default = argparse.SUPPRESS if suppress else d.get(dest, f.default)
        target.add_argument(*f.names, dest=dest, default=default, help=f.help.format(**text), **f.kw)


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
    pre.add_argument("--model", default="fc")
    pre.add_argument("--dataset", default=None)
    known, _ = pre.parse_known_args(list(argv or [])[1:])
    model = known.model if known.model in MODELS else "fc"
    return model, known.dataset or _default_dataset(model)


def _resolve(args: argparse.Namespace, given: set[str], default_out: str = OUTPUT_DEFAULT) -> dict:
    """Flags given > the checkpointed run's settings (with --resume) > the defaults (``--model convnet``:
    the dataset's preset).

    Raises:
      CheckpointError: with --resume, a checkpoint that is corrupt or not of `jaxlayers train`.
    """
    from jaxlayers.train import CHECKPOINT_NAME

    defaults = _train_defaults()
    opts = {k: getattr(args, k) for k in defaults if k in given}
    for name in ("hidden_dims", "conv_channels"):  # nargs="+" of lists: "8,8 4" -> [8, 8, 4]
        if name in opts:
            opts[name] = [h for part in opts[name] for h in part]
    model = opts.get("model", defaults["model"])
    dataset = opts.get("dataset", _default_dataset(model))
    out = _output_dir(args, dataset, default_out, model, given)
    base = _shown_defaults(model, dataset)
    if getattr(args, "resume", False) and (out / CHECKPOINT_NAME).is_file():
        base.update(_checkpoint_settings(out / CHECKPOINT_NAME, defaults))
    return {**base, **opts, "output_dir": out, "given": given}


def _checkpoint_settings(ckpt: Path, defaults: dict) -> dict:
    """The settings of the run checkpointed at ``ckpt``: its dataset, training flags and model record
    (``model``: the named model of the record's class, else ``"record"``)."""
    from jaxlayers.train import CheckpointError, read_checkpoint_metadata

    meta = read_checkpoint_metadata(ckpt)
    try:
        record, tc = meta["models"][0], meta["train_configs"][0]
        named = {cls: name for name, (cls, _) in MODELS.items()}
        return {
            "dataset": meta["data"]["name"] or defaults["dataset"],
            "model": named.get(record["class"], "record"),
            "model_record": record if isinstance(record["config"], dict) else {}["config"],
            **{k: tc.get(k, defaults[k]) for k in TRAIN_FLAGS},  # older checkpoints lack the newer fields
        }
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {ckpt}: not a checkpoint of `jaxlayers train` (its metadata lacks {e}); "
            "was it written by fit_many or another model?"
        ) from None


def _setup_devices(args: argparse.Namespace):
    """``--devices`` / ``--coordinator``: join the run and build the mesh, before any JAX backend starts.

    Returns the ``jax.sharding.Mesh``, or ``None`` (no flag: the default device).
    Raises ``ValueError`` or ``jaxlayers.parallel.DistributedInitError``.
    """
    from jaxlayers import parallel
    from jaxlayers._checks import check_int

    multi = (args.coordinator, args.num_processes, args.process_id)
    if any(v is None for v in multi) and any(v is not None for v in multi):
        raise ValueError("--coordinator, --num-processes and --process-id go together")
    if args.devices is not None:
        check_int(args.devices, "", "--devices", minimum=1)
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
    from jaxlayers.training.config import TrainConfig

    from_flags = opts.get("given", set()) & {"model", *NAMED_MODEL_FLAGS}
    if opts["model"] in MODELS and (from_flags or "model_record" not in opts):
        net, ds = _named_model(opts, ds)
    else:  # PATH.json, or with --resume and no model flag the checkpoint's model
        net, ds = _model_of_record(opts, ds)
    return net, TrainConfig(**{k: opts[k] for k in TRAIN_FLAGS}), ds


def _named_model(opts: dict, ds):
    """``(model, dataset)`` for ``--model fc | convnet | threelayer``: the constructor's fields from the flags
    (:data:`MODELS`) and the data; with --resume, from the checkpoint's record and the model flags given."""
    from jaxlayers import models

    cls_name, fields_of = MODELS[opts["model"]]
    if cls_name == "char_lm":
        if getattr(ds, "vocab", None) is None:
            raise ValueError(f"--model charlm needs a token dataset (--dataset pydoc-chars); {ds.name} has none")
        hidden, reg = _first(opts["hidden_dims"]), opts["reg"]
        return models.char_lm(len(ds.vocab), ds.input_shape[0], hidden=hidden, reg=reg), ds
    if cls_name in ("CaptioningRNN", "CaptioningTransformer"):
        return _captioning_model(opts, ds)
    if cls_name in ("transformer_classifier", "char_transformer"):
        return _transformer(opts, ds)
    record = opts.get("model_record") or {}
    base = record.get("config") if record.get("class") == cls_name else None
    fields = dict(base or {})
    for flag, field in {**fields_of, **_COMMON_FIELDS}.items():
        if base is None or flag in opts["given"]:
            name, convert = field if isinstance(field, tuple) else (field, None)
            fields[name] = convert(opts[flag]) if convert else opts[flag]
    if opts["model"] in RECURRENT:  # each example a sequence (T, D): as it is, or a flat one as (features, 1)
        from jaxlayers import nn

        shape = ds.input_shape if len(ds.input_shape) == 2 else (ds.num_features, 1)
        drop = [nn.Dropout(fields["dropout_rate"])] if fields["dropout_rate"] > 0 else []
        cell = getattr(nn, cls_name)(fields["hidden"])
        head = nn.Affine(max(ds.num_classes, 2), weight_scale=fields["weight_scale"])
        return nn.Sequential(cell, *drop, head, input_shape=shape, loss=fields["loss_type"], reg=fields["reg"]), ds
    ds = ds if opts["model"] == "fc" else ds.as_images()
    fields.update(input_dim=ds.num_features if opts["model"] == "fc" else ds.image_shape)
    return getattr(models, cls_name)(**{**fields, "num_classes": max(ds.num_classes, 2)}), ds


def _captioning_model(opts: dict, ds):
    """``(model, dataset)`` for ``--model captioning`` (:class:`~jaxlayers.CaptioningRNN`) and
    ``--model captioning_transformer`` (:class:`~jaxlayers.CaptioningTransformer`): the vocabulary, the image
    shape and the caption length from the data; the dataset as images when there is an encoder
    (``--conv-channels``)."""
    from jaxlayers.captioning import CaptioningRNN, CaptioningTransformer

    y = ds.y_train
    if getattr(ds, "vocab", None) is None or y.ndim != 2 or ds.image_shape is None:
        raise ValueError(
            f"--model {opts['model']} needs a captioning dataset of images and captions (--dataset "
            f"digit-captions); {ds.name} is not one"
        )
    channels = tuple(opts["conv_channels"])
    shared = dict(
        input_dim=tuple(ds.image_shape) if channels else ds.num_features,
        encoder_channels=channels,
        max_length=int(y.shape[1]) - 1,
        dropout_rate=opts["dropout_rate"],
        reg=opts["reg"],
        encoder_norm=opts["conv_norm"] if channels else "none",
    )
    if opts["model"] == "captioning_transformer":
        dims = list(opts["hidden_dims"])
        if len(set(dims)) != 1:
            raise ValueError(f"--model {opts['model']}: the decoder layers share one width, got --hidden-dims {dims}")
        if dims[0] % CAPTIONING_TRANSFORMER_HEADS:
            raise ValueError(
                f"--model {opts['model']}: --hidden-dims {dims[0]} must be a multiple of the decoder's "
                f"{CAPTIONING_TRANSFORMER_HEADS} attention heads"
            )
        net = CaptioningTransformer(
            ds.vocab, wordvec_dim=dims[0], num_heads=CAPTIONING_TRANSFORMER_HEADS, num_layers=len(dims),
            mlp_dim=4 * dims[0], decoder_dropout=CAPTIONING_TRANSFORMER_DROPOUT, **shared,
        )  # fmt: skip
    else:
        net = CaptioningRNN(
            ds.vocab, wordvec_dim=CAPTIONING_WORDVEC, hidden_dim=_first(opts["hidden_dims"]), cell_type="lstm",
            **shared,
        )  # fmt: skip
    return net, ds.as_images() if channels else ds


def _transformer(opts: dict, ds):
    """``(model, dataset)`` for ``--model transformer | chartransformer``: one block of width ``H`` per
    ``--hidden-dims`` entry (all equal), 4 heads, ``--dropout-rate`` in the blocks."""
    import dataclasses

    from jaxlayers import models

    dims = list(opts["hidden_dims"])
    if len(set(dims)) != 1:
        raise ValueError(f"--model {opts['model']}: the blocks share one width, got --hidden-dims {dims}")
    kw = dict(dim=dims[0], depth=len(dims), dropout=opts["dropout_rate"], reg=opts["reg"])
    if opts["model"] == "chartransformer":
        if getattr(ds, "vocab", None) is None:
            raise ValueError(
                f"--model chartransformer needs a token dataset (--dataset pydoc-chars); {ds.name} has none"
            )
        return models.char_transformer(len(ds.vocab), ds.input_shape[0], **kw), ds
    if getattr(ds, "vocab", None) is not None:
        raise ValueError(f"--model transformer classifies real-valued sequences; {ds.name} is a token dataset")
    if len(ds.input_shape) != 2:  # a flat set read as (features, 1) sequences (so --augment shift:K shifts them)
        seq = (ds.num_features, 1)
        ds = dataclasses.replace(
            ds, **{f"X_{s}": getattr(ds, f"X_{s}").reshape(-1, *seq) for s in ("train", "val", "test")}
        )
    shape = ds.input_shape
    patch, stride = (8, 4) if shape[0] >= 8 else (1, 1)  # windows of 8 steps every 4 (tuned on mnist1d-seq)
    return models.transformer_classifier(shape, max(ds.num_classes, 2), patch=patch, stride=stride, **kw), ds


def _model_of_record(opts: dict, ds):
    """``(model, dataset)`` for ``--model PATH.json`` (or a resumed run's record): the model rebuilt with
    :func:`jaxlayers.model.model_from_record`, the dataset shaped as its examples (flat or images).

    Raises:
      ValueError: an unreadable file, a record that cannot be rebuilt, model flags given with it, or a
        model whose input shape the dataset's examples cannot take.
    """
    import dataclasses
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
    if opts["model"].lower().endswith(".json"):
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
    want = None if want is None else tuple(int(d) for d in (want if isinstance(want, list | tuple) else [want]))
    if want is None or want == ds.input_shape:
        return net, ds
    if math.prod(want) != ds.num_features:
        raise ValueError(
            f"the model of {opts['model']} takes examples of shape {want}, but {ds.name} has {ds.input_shape} "
            f"({ds.num_features} features)"
        )
    if ds.image_shape is not None and tuple(ds.image_shape) == want:
        return net, ds.as_images()
    return net, dataclasses.replace(
        ds, **{f"X_{s}": getattr(ds, f"X_{s}").reshape(-1, *want) for s in ("train", "val", "test")}
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
_FLAG_NAMES = re.compile(r"\b(" + "|".join(d for d in (*TRAIN_FLAGS, *NAMED_MODEL_FLAGS) if "_" in d) + r")\b")


def _as_flags(message: str, where: str) -> str:
    """A library error's message for the command line: without its ``where:`` prefix (the command
    names itself), field names spelt as the flags that set them."""
    message = message.removeprefix(f"{where}: ")
    return _FLAG_NAMES.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)


def _run_failure(command: str, e: Exception, started: bool) -> int:
    """The exit status (after one error line) for an error of ``fit`` / ``fit_many``: one raised before the
    run started (the library's checks, in ``preflight`` and ``open_checkpoint``) is a usage error (2), its
    message with the flags' names; a run directory in use, an unwritable file or a failure while training is 1."""
    from jaxlayers.training.checkpoint import RunDirError, RunExists

    where = f"jaxlayers {command}"
    if isinstance(e, RunExists):
        return _fail(command, str(e), 2)
    if isinstance(e, RunDirError):
        return _fail(command, str(e), 1)
    if not started and isinstance(e, ValueError | TypeError | MemoryError | FileNotFoundError):
        return _fail(command, _as_flags(str(e), where), 2)
    if isinstance(e, OSError):
        return _fail(command, _os_message(e), 1)
    if isinstance(e, ValueError | TypeError | FloatingPointError):  # CheckpointError is a ValueError
        return _fail(command, str(e), 1)
    raise e


def _signal_name(signum: int) -> str:
    return "SIGTERM" if signum == signal.SIGTERM else "SIGINT"


def _train_setup(args: argparse.Namespace):
    """``(opts, mesh, out, net, config, ds)`` of a `train` command line; or the exit status of the check
    that failed (its one line printed). The run's own checks are ``fit``'s, before it starts."""
    fail = lambda message, code=2: _fail("train", message, code)  # noqa: E731
    if args.output_dir == "":
        return fail("--output-dir is an empty path; give a directory such as runs/mine")
    if args.resume and args.overwrite:
        return fail("--resume continues the run and --overwrite replaces it; give one of them, not both")
    from jaxlayers import data as jl_data
    from jaxlayers.train import CheckpointError

    try:
        opts = _resolve(args, args.given)
    except CheckpointError as e:
        return fail(str(e), 1)
    except OSError as e:
        return fail(_os_message(e), 1)
    import jax

    try:
        mesh = _setup_devices(args)
    except ValueError as e:  # flags that do not go together, more devices than there are
        return fail(str(e))
    except RuntimeError as e:  # DistributedInitError
        return fail(str(e), 1)
    out = opts["output_dir"]
    if jax.process_index() > 0:  # every process keeps its own copy of the run (and can resume from it)
        out, args.quiet = out / f"process-{jax.process_index()}", True
    try:
        net, config, ds = _net_and_config(opts, jl_data.load(opts["dataset"]))
    except (ValueError, TypeError, FileNotFoundError) as e:
        return fail(str(e))
    return opts, mesh, out, net, config, ds


def _print_train_plan(net, ds, config, mesh, out: Path) -> None:
    from jaxlayers.training import memory

    print(ds.summary())
    if mesh is not None:
        from jaxlayers.parallel import describe

        print(f"devices: {describe(mesh)}")
    settings = ", ".join(f"{k}={v}" for k, v in net.to_dict().items() if k not in ("dtype", "num_classes", "words"))
    print(f"model: {type(net).__name__}({settings})")
    if hasattr(net, "summary"):
        print(net.summary())
    print(f"memory: {memory.estimate_memory(net, config, ds).describe()}")  # checked before on_start
    print(f"train: {_describe_training(config)} | run dir {out}", flush=True)


def _fit_run(args: argparse.Namespace, opts: dict, net, ds, config, out: Path, mesh, on_start):
    """The one call of `jaxlayers train` into the training side: ``fit`` in the run directory ``out``;
    ``on_start`` runs once every check passed (it describes the run)."""
    from jaxlayers import train as jl_train

    class Describe(jl_train.Callback):
        def on_start(self, start: jl_train.RunStart) -> None:
            on_start()

    record = {
        "dataset": opts["dataset"],
        "command": sys.argv[1:] if sys.argv and sys.argv[0].endswith("jaxlayers") else None,
    }
    return jl_train.fit(
        net, ds, config, run_dir=out, resume=args.resume, overwrite=args.overwrite, mesh=mesh,
        verbose=not args.quiet, callbacks=[Describe()], record=record, where="jaxlayers train",
    )  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    import json
    import time

    t_start = time.perf_counter()
    setup = _train_setup(args)
    if isinstance(setup, int):
        return setup
    opts, mesh, out, net, config, ds = setup
    from jaxlayers import train as jl_train

    started = []
    try:
        result = _fit_run(
            args,
            opts,
            net,
            ds,
            config,
            out,
            mesh,
            lambda: (started.append(1), _print_train_plan(net, ds, config, mesh, out)),
        )
    except jl_train.TrainingInterrupted as e:
        return _train_interrupted(e, out / jl_train.CHECKPOINT_NAME)
    except Exception as e:
        return _run_failure("train", e, bool(started))
    summary = json.loads((out / "summary.json").read_text())
    _print_train_result(result, summary, time.perf_counter() - t_start, out)
    return 0


def _print_train_result(result, summary: dict, wall: float, out: Path) -> None:
    accs = {k[: -len("_acc")]: v for k, v in summary.items() if k in ("train_acc", "val_acc", "test_acc")}
    fit_time, first, sps = summary["fit_time_s"], summary["first_epoch_s"], summary["steps_per_second"]
    print(f"best epoch {result.best_epoch} of {summary['epochs']} (by validation accuracy); with its parameters:")
    print(f"  train acc {accs['train']:.4f}   val acc {accs['val']:.4f}   test acc {accs['test']:.4f}")
    print(f"  (the last epoch's parameters: test acc {summary['final_test_acc']:.4f})")
    ran = summary["epochs"] - result.start_epoch
    if ran == 0:
        print(f"nothing to train: the checkpoint already holds {summary['epochs']} epochs; wall time {wall:.1f} s")
    else:
        sps_text = (
            f"{sps:.0f} steps/s in the epochs after the first (compilation, checkpoints and the final "
            "evaluation not counted)"
            if ran > 1 and sps
            else "steps/s n/a (one epoch)"
        )
        print(
            f"wall time {wall:.1f} s (training {fit_time:.1f} s, first epoch incl. compilation {first or 0:.1f} s); "
            f"{ran * result.steps_per_epoch} steps, {sps_text}"
        )
    print(f"run dir {out}: {', '.join(RUN_FILES)}")


def _train_interrupted(e, ckpt: Path) -> int:
    """Ctrl-C or SIGTERM stopped training at an epoch boundary: say how to continue; 128 + the signal."""
    name = _signal_name(e.signum)
    if ckpt.is_file():
        print(f"\n{name}: stopped; epoch {e.epoch} is checkpointed in {ckpt}. Continue with:", file=sys.stderr)
        print(f"  jaxlayers train --resume --output-dir {ckpt.parent}", file=sys.stderr)
    else:
        print(f"\n{name}: interrupted before the first epoch ended; there is nothing to resume.", file=sys.stderr)
    return 128 + int(e.signum)


def _subcommand(sub, name: str, func, help: str, description: str, epilog: str | None = None):
    """A subcommand's parser (defaults in the help, no abbreviations) that runs ``func``."""
    p = sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=_HelpFormatter, allow_abbrev=False
    )
    p.set_defaults(func=func)
    return p


def _add_train_parser(sub, suppress: bool, chosen: tuple[str, str] | None = None) -> None:
    p = _subcommand(
        sub,
        "train",
        _train,
        help="train a model of jaxlayers ops (default: a FullyConnectedNet on digits, about 10 s on 2 CPU cores)",
        description="Train a model (--model: FullyConnectedNet, ConvNet, ThreeLayerConvNet, a recurrent or "
        "Transformer nn.Sequential) built from jaxlayers' hand-differentiated ops with optax; writes config.json, metrics.jsonl, "
        "curves.png, checkpoint.safetensors and summary.json to the run directory. One process writes a run directory "
        "at a time (a lock); a directory that holds a run is continued with --resume or replaced with --overwrite.",
        epilog=EXIT_CODES,
    )
    _add_train_arguments(p, suppress=suppress, chosen=chosen)


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
                raise ValueError(f"expected {kind}:START:STOP:NUM, got {item!r}") from None
            if num < 1 or (kind == "log" and min(start, stop) <= 0):
                raise ValueError(f"{item!r}: NUM must be >= 1, and log bounds > 0")
            values += [float(v) for v in (np.geomspace if kind == "log" else np.linspace)(start, stop, num)]
        elif item.lower() == "he":
            values.append(None)
        else:
            try:
                values.append(float(item))
            except ValueError:
                raise ValueError(f"expected numbers like 0.1,0.2 or log:1e-4:1:20, got {item!r}") from None
    if not values:
        raise ValueError("no values given")
    return values


def _sweep_lists(args: argparse.Namespace) -> dict[str, list]:
    """The per-model lists of the swept flags given (zipped, or their product with --grid)."""
    from jaxlayers import sweep as jl_sweep

    lists = {flag: getattr(args, flag) for flag in jl_sweep.SWEPT if getattr(args, flag) is not None}
    if not lists:
        raise ValueError(f"give at least one of --{', --'.join(f.replace('_', '-') for f in jl_sweep.SWEPT)}")
    if "seeds" in lists:
        if any(v is None or v != int(v) for v in lists["seeds"]):
            raise ValueError(f"--seeds must be integers, got {lists['seeds']}")
        lists["seeds"] = [int(v) for v in lists["seeds"]]
    return jl_sweep.grid(**lists) if args.grid else lists


def _sweep(args: argparse.Namespace) -> int:
    import time

    t_start = time.perf_counter()
    if args.output_dir == "":
        return _fail("sweep", "--output-dir is an empty path; give a directory such as runs/sweep", 2)
    opts = _resolve(args, args.given, SWEEP_OUTPUT_DEFAULT)
    from jaxlayers import data as jl_data
    from jaxlayers import train as jl_train

    try:
        lists = _sweep_lists(args)
        net, config, ds = _net_and_config(opts, jl_data.load(opts["dataset"]))
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _fail("sweep", str(e), 2)
    k_models = len(next(iter(lists.values())))
    started = []

    class Describe(jl_train.Callback):
        def on_start(self, start: jl_train.RunStart) -> None:  # every check passed
            started.append(1)
            print(ds.summary())
            print(f"sweep: {k_models} models over {', '.join(lists)}; model {type(net).__name__}")

    def best(r: jl_train.EpochReport) -> dict[str, str]:
        return {"best_val_acc": f"{float(max(r.val_acc)):.4f}"}

    bar = [] if args.quiet else [jl_train.ProgressBar(f"{k_models} models", postfix=best)]
    try:
        result = jl_train.fit_many(net, ds, config, callbacks=[Describe(), *bar], where="jaxlayers sweep", **lists)
    except jl_train.TrainingInterrupted as e:
        print(
            f"\n{_signal_name(e.signum)}: the sweep stopped after epoch {e.epoch}; nothing was written", file=sys.stderr
        )
        return 128 + int(e.signum)
    except Exception as e:
        return _run_failure("sweep", e, bool(started))
    _print_sweep_result(result, k_models, time.perf_counter() - t_start)
    return _write_sweep(opts, net, config, result)


def _print_sweep_result(result, k_models: int, wall: float) -> None:
    print(result.table())
    times = result.history.epoch_time_s
    steps = k_models * result.steps_per_epoch * (len(times) - 1)
    rate = f"{steps / sum(times[1:]):.0f} model-steps/s after the first epoch" if len(times) > 1 else ""
    print(f"wall time {wall:.1f} s (first epoch incl. compilation {times[0]:.1f} s); {rate}")
    if not result.finite.all():
        rows = [k for k in range(k_models) if not result.finite[k]]
        print(f"{len(rows)} model(s) diverged (non-finite loss; their rows show nan): k = {rows}")


def _write_sweep(opts: dict, net, config, result) -> int:
    """``sweep.json`` in -o (default runs/<dataset>-sweep): the settings, each model's best epoch, the history."""
    import json

    from jaxlayers.train import atomic_write

    out = opts["output_dir"]
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
            for k in range(len(result.best_val_acc))
        ],
        "history": result.history.to_dict(),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _fail("sweep", _os_message(e), 1)
    try:
        atomic_write(out / "sweep.json", (json.dumps(record, indent=1) + "\n").encode())
    except OSError as e:
        return _fail("sweep", f"cannot write {out / 'sweep.json'}: {_os_message(e)}", 1)
    print(f"wrote {out / 'sweep.json'}")
    return 0


def _add_sweep_parser(sub, suppress: bool, chosen: tuple[str, str] | None = None) -> None:
    p = _subcommand(
        sub,
        "sweep",
        _sweep,
        help="train many variants at once (vmapped, one compiled program), e.g. --weight-scales log:1e-4:1:20",
        description="Train K FullyConnectedNets that differ in seed, weight scale, learning rate, dropout rate or "
        "reg with jaxlayers.train.fit_many: one compiled program per epoch, vmapped over the models. The other flags "
        "are `jaxlayers train`'s and set what all models share; each swept list gives one value per model "
        "(a,b,c or log:START:STOP:NUM or lin:START:STOP:NUM). Prints one row per model and writes sweep.json.",
        epilog=SWEEP_EXIT_CODES,
    )
    _add_train_arguments(p, suppress=suppress, sweep=True, chosen=chosen)
    from jaxlayers.sweep import SWEPT  # the one list of sweepable settings

    for flag in SWEPT:
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            type=_arg_type(_sweep_values, "values"),
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


class _UsageError(Exception):
    """A command-line usage error found by a command itself (exit status 2)."""


def _one_line_errors(command: str):
    """Decorate a command (`evaluate`, `predict`): errors a user can cause become one line, exit status 1 for
    a run or file that cannot be read or written, 2 for an input of the wrong shape or kind."""

    def wrap(func):
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
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

        return run

    return wrap


@_one_line_errors("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxlayers import data as jl_data
    from jaxlayers import load_run
    from jaxlayers.model import predict
    from jaxlayers.training.plots import confusion_matrix, plot_confusion

    run = load_run(args.run_dir, args.which)
    name = args.dataset or (run.metadata.get("data") or {}).get("name") or (run.config or {}).get("dataset")
    if not name:
        raise ValueError(f"{args.run_dir}: the run does not record its dataset; give --dataset")
    ds = jl_data.load(name)
    X, y = getattr(ds, f"X_{args.split}"), np.asarray(getattr(ds, f"y_{args.split}"))
    X = run.preprocessing.as_input(X, f"dataset {name!r} {args.split}")  # the one reshaping rule
    if hasattr(run.model, "caption_accuracy"):  # a captioning model: its greedy captions against the references
        exact, per_word = run.caption_accuracy(X, y, standardized=True)
        print(f"{run.which} parameters (epoch {run.epoch}) of {args.run_dir} on {name} {args.split} ({len(y)} images)")
        print(f"exact-caption accuracy {exact:.4f}; per-word accuracy {per_word:.4f} (greedy captions, each "
              "reference's words and <END>)")  # fmt: skip
        from jaxlayers.data import decode_captions

        sampled = run.captions(X[:3], y.shape[1] - 1, standardized=True)
        words = run.model.idx_to_word
        for ref, got in zip(decode_captions(y[:3, 1:], words), decode_captions(sampled, words), strict=True):
            print(f"  reference: {ref:<40} sampled: {got}")
        return 0
    if getattr(run.model, "sequence_targets", False):  # a token model: per-token accuracy and bits per token
        unit = "character" if run.vocab is not None and run.vocab.separator == "" else "token"
        counted = int(np.sum(y >= 0))
        print(f"{run.which} parameters (epoch {run.epoch}) of {args.run_dir} on {name} {args.split} ({len(y)} "
              f"sequences, {counted} {unit}s)")  # fmt: skip
        print(f"accuracy {run.evaluate(X, y):.4f} per {unit}; bits per {unit} {run.bits_per_token(X, y):.4f}")
        return 0
    # The loader standardises with the training statistics, as training did: the model sees what it saw.
    pred = predict(run.model, run.params, run.model_state, X)
    num_classes = int(max(pred.max(initial=0), y.max(initial=0)) + 1)
    num_classes = max(num_classes, len(run.class_names or ()))
    matrix = confusion_matrix(y, pred, num_classes)
    names = list(run.class_names) if run.class_names else [str(i) for i in range(num_classes)]
    acc = float(np.trace(matrix) / max(matrix.sum(), 1))
    print(f"{run.which} parameters (epoch {run.epoch}) of {args.run_dir} on {name} {args.split} ({len(y)} examples)")
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


@_one_line_errors("sample")
def _sample(args: argparse.Namespace) -> int:
    from jaxlayers import load_run

    run = load_run(args.run_dir, args.which)
    print(run.sample(args.length, args.prompt, temperature=args.temperature, seed=args.seed))
    return 0


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


@_one_line_errors("predict")
def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxlayers import load_run

    path = Path(args.input)
    if args.output != "-" and Path(args.output).exists() and not args.overwrite:  # before any work
        raise _UsageError(
            f"--output {args.output} exists; give --overwrite to replace it, another --output, "
            "or --output - for standard output"
        )
    if not path.is_file():
        raise FileNotFoundError(2, f"no input file {path}", str(path))
    X = _read_inputs(path)
    run = load_run(args.run_dir, args.which)
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


def _add_run_parsers(sub) -> None:
    p = _subcommand(
        sub,
        "evaluate",
        _evaluate,
        help="accuracy, per-class accuracy and confusion matrix of a trained run on a dataset split",
        description="Load a run directory written by `jaxlayers train` (or fit(run_dir=)) and evaluate it on a "
        "split of a dataset (default: the run's own): accuracy, per-class accuracy, the confusion matrix "
        "(printed, and drawn to confusion.png in the run directory).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its checkpoint.safetensors)")
    p.add_argument("--dataset", default=None, help="digits | mnist1d | mnist:DIR | cifar10:DIR; None: the run's")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split")
    p.add_argument("--which", choices=["best", "last"], default="best", help="the best-validation or the last epoch")
    p.add_argument("--output", "-o", default=None, help="the confusion plot (None: RUN_DIR/confusion.png)")
    p = _subcommand(
        sub,
        "predict",
        _predict,
        help="labels and class probabilities of a trained run for raw inputs (.npy, .npz, .csv)",
        description="Load a run directory and predict raw inputs (as the dataset's loader reads them; the run's "
        "stored standardisation is applied): one CSV row per example with its label and the class probabilities.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its checkpoint.safetensors)")
    p.add_argument("input", metavar="INPUT", help=".npy, .npz (array X) or .csv (one example per row) of raw inputs")
    p.add_argument("--output", "-o", default="predictions.csv", help="the CSV to write; - for standard output")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists (else refused)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="the best-validation or the last epoch")
    p = _subcommand(
        sub,
        "sample",
        _sample,
        help="text generated by a trained token model (--model charlm | chartransformer)",
        description="Load a run of a token model and print PROMPT followed by --length generated tokens, each "
        "drawn from softmax(scores / --temperature) (0: greedy), seeded by --seed.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its checkpoint.safetensors)")
    p.add_argument("--length", type=int, default=300, help="tokens to generate")
    p.add_argument("--prompt", default="", help="the text to continue (empty: start from the first token)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0: the argmax")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the draws")
    p.add_argument("--which", choices=["best", "last"], default="best", help="the best-validation or the last epoch")


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
