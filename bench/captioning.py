"""Digits captioning (issue 18): exact-caption and per-word accuracy on the test images.

Two models, on :func:`jaxlayers.data.load_digit_captions` with its defaults (10000 training images of
2-4 digits side by side, 1000 test images built only from the test split's digits):

* default: :class:`jaxlayers.CaptioningRNN` with its convolutional image encoder, trained end to end
  by :func:`jaxlayers.train.fit` with exactly the settings of ``jaxlayers train --model captioning``
  (the CLI's preset, :data:`jaxlayers.cli.CAPTIONING_PRESET`; flags here override it). The loop keeps
  the epoch with the best validation per-word accuracy (greedy captions on the validation images,
  made only from validation digits); the test figures are of those parameters.
* ``--compat``: :class:`jaxlayers.compat.CaptioningRNN` (the course's model on the raw pixels through
  one linear projection, ``h0 = pixels W_proj + b_proj``), built and initialised by compat
  (``np.random.seed(seed)`` then the constructor, as the course), trained with the same loss written
  with the jitted ops under ``jax.jit`` with optax's Adam, minibatches drawn as ``CaptioningSolver``
  draws them (NumPy's global generator, with replacement); ``--solver`` trains with
  :class:`jaxlayers.compat.CaptioningSolver` itself instead (slower). The trained parameters are
  copied back into the compat model and the test captions come from ``model.sample`` (greedy).

Reported: exact-caption accuracy (the whole caption, ``<END>`` included, right) and per-word
accuracy (over the reference's words and its ``<END>``, position by position), on the test images;
with ``--seeds 0 1 2`` the mean and range over seeds.

    python -m bench.captioning --seeds 0 1 2
    python -m bench.captioning --compat --seeds 0 1 2 --weight-decay 1.0
"""

# The course draws weights and minibatches from NumPy's legacy global generator, as this does.
# ruff: noqa: NPY002

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlayers as jl
from jaxlayers.compat import CaptioningRNN, CaptioningSolver


def caption_loss(params, features, captions, null, cell_type):
    """The course's CaptioningRNN.loss on the jitted ops (the same rules as compat's functions)."""
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    mask = captions_out != null
    h0 = features @ params["W_proj"] + params["b_proj"]
    x = jl.word_embedding(captions_in, params["W_embed"])
    recur = jl.lstm if cell_type == "lstm" else jl.rnn
    h = recur(x, h0, params["Wx"], params["Wh"], params["b"])
    scores = jl.temporal_affine(h, params["W_vocab"], params["b_vocab"])
    return jl.temporal_softmax_loss(scores, captions_out, mask)


def accuracies(model, data, split="test"):
    """(exact-caption accuracy, per-word accuracy) of ``model.sample`` on a split."""
    truth = data[f"{split}_captions"][:, 1:]
    sampled = model.sample(data[f"{split}_features"], max_length=truth.shape[1])
    end = model.word_to_idx["<END>"]
    exact, words_right, words = 0, 0, 0
    for s, t in zip(sampled, truth, strict=True):
        n = int(np.argmax(t == end)) + 1  # the reference's words and its <END>
        right = s[:n] == t[:n]
        words_right += int(right.sum())
        words += n
        exact += bool(right.all())
    return exact / len(truth), words_right / words


def train_jit(model, data, *, epochs, batch_size, lr, lr_decay, weight_decay=0.0):
    params = {k: jnp.asarray(v) for k, v in model.params.items()}
    num_train = data["train_captions"].shape[0]
    steps_per_epoch = max(num_train // batch_size, 1)
    schedule = optax.exponential_decay(lr, steps_per_epoch, lr_decay, staircase=True)
    opt = optax.adamw(schedule, weight_decay=weight_decay) if weight_decay else optax.adam(schedule)
    state = opt.init(params)

    @jax.jit
    def step(params, state, features, captions):
        loss, grads = jax.value_and_grad(caption_loss)(params, features, captions, model._null, model.cell_type)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(epochs * steps_per_epoch):
        idx = np.random.choice(num_train, batch_size)  # as the course's sample_coco_minibatch
        caps = data["train_captions"][idx]
        feats = data["train_features"][data["train_image_idxs"][idx]]
        params, state, loss = step(params, state, feats, caps)
        losses.append(loss)
    for k, v in params.items():
        model.params[k] = np.array(v, dtype=model.dtype)
    return [float(x) for x in losses]


def run(seed, args, data):
    np.random.seed(seed)
    model = CaptioningRNN(
        data["word_to_idx"],
        input_dim=data["train_features"].shape[1],
        wordvec_dim=args.wordvec,
        hidden_dim=args.hidden,
        cell_type=args.cell,
    )
    t0 = time.perf_counter()
    if args.solver:
        solver = CaptioningSolver(
            model,
            data,
            update_rule="adam",
            optim_config={"learning_rate": args.lr},
            lr_decay=args.lr_decay,
            num_epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=False,
        )
        solver.train()
        losses = solver.loss_history
    else:
        losses = train_jit(
            model,
            data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            lr_decay=args.lr_decay,
            weight_decay=args.weight_decay,
        )
    train_s = time.perf_counter() - t0
    exact, per_word = accuracies(model, data, "test")
    print(
        f"seed {seed}: test exact-caption {exact:.4f}, per-word {per_word:.4f}; "
        f"final train loss {np.mean(losses[-20:]):.4f}; train {train_s:.1f} s",
        flush=True,
    )
    return exact, per_word, train_s


COMPAT_DEFAULTS = {"hidden": 256, "wordvec": 64, "epochs": 15, "batch_size": 100, "lr": 3e-3, "lr_decay": 0.85}


def run_jl(seed, args):
    """``jaxlayers train --model captioning``'s model and settings (the CLI's own code), through ``fit``."""
    from jaxlayers import cli
    from jaxlayers.train import fit

    flags = {"hidden": "hidden_dims", "epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate"}
    flags.update(lr_decay="lr_decay", weight_decay="weight_decay", encoder="conv_channels", augment="augment")
    flags.update(dropout="dropout_rate", schedule="schedule", norm="conv_norm")
    argv = ["train", "--model", args.model, "--seed", str(seed), "-q"]
    for name, flag in flags.items():
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    if args.weight_decay is not None:
        argv += ["--optimizer", "adamw"]
    parsed = cli.build_parser().parse_args(argv)
    parsed.given = cli._given(argv)
    opts = cli._resolve(parsed, parsed.given)
    net, config, ds = cli._net_and_config(opts, jl.data.load(opts["dataset"]))
    if args.cell is not None and args.model == "captioning":  # the CLI's model is an LSTM
        net = dataclasses.replace(net, cell_type=args.cell)
    if seed == args.seeds[0]:
        print(f"{type(net).__name__}({', '.join(f'{k}={v}' for k, v in net.to_dict().items() if k != 'words')})")
        print(f"{net.num_params():,} parameters; {cli._describe_training(config)}", flush=True)
    t0 = time.perf_counter()
    result = fit(net, ds, config)
    train_s = time.perf_counter() - t0
    exact, per_word = net.caption_accuracy(result.best_params, ds.X_test, ds.y_test, state=result.best_model_state)
    print(
        f"seed {seed}: test exact-caption {exact:.4f}, per-word {per_word:.4f} (epoch {int(result.best_epoch)}, "
        f"val per-word {float(result.best_val_acc):.4f}); train {train_s:.1f} s",
        flush=True,
    )
    return exact, per_word, train_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--compat", action="store_true", help="compat.CaptioningRNN on raw pixels (no image encoder)")
    p.add_argument("--cell", choices=("rnn", "lstm", "gru"), default=None)
    p.add_argument(
        "--model",
        choices=("captioning", "captioning_transformer"),
        default="captioning",
        help="the CLI's model (not --compat): CaptioningRNN or CaptioningTransformer",
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        help="LSTM size (--compat: one), or the decoder layers' widths of captioning_transformer",
    )
    p.add_argument("--wordvec", type=int, default=None, help="(--compat only)")
    p.add_argument("--encoder", type=int, nargs="+", default=None, help="the encoder's conv channels (not --compat)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("constant", "exponential", "cosine"), default=None, help="(not --compat)")
    p.add_argument("--weight-decay", type=float, default=None, help="optax.adamw's decoupled weight decay")
    p.add_argument("--norm", choices=("none", "batchnorm"), default=None, help="the encoder's conv norm (not --compat)")
    p.add_argument("--dropout", type=float, default=None, help="dropout rate of the image features (not --compat)")
    p.add_argument("--augment", default=None, help="the loop's image augmentation, shift:K (not --compat)")
    p.add_argument("--solver", action="store_true", help="with --compat: train with compat.CaptioningSolver (slower)")
    args = p.parse_args(argv)

    if args.compat:
        for k, v in COMPAT_DEFAULTS.items():
            setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
        args.cell = args.cell or "lstm"
        args.hidden = args.hidden[0] if isinstance(args.hidden, list) else args.hidden
        args.weight_decay = args.weight_decay or 0.0
        data = jl.data.load_digit_captions()
        print(
            f"digit captions: {len(data['train_captions'])} train / {len(data['test_captions'])} test images; "
            f"compat {args.cell} hidden {args.hidden}, wordvec {args.wordvec}, {args.epochs} epochs of batch "
            f"{args.batch_size}, adam lr {args.lr} x{args.lr_decay}/epoch, "
            f"{'CaptioningSolver' if args.solver else 'jit'}"
        )
        results = np.array([run(s, args, data) for s in args.seeds])
    else:
        results = np.array([run_jl(s, args) for s in args.seeds])
    exact, per_word = results[:, 0], results[:, 1]
    print(
        f"test exact-caption accuracy: mean {exact.mean():.4f} (range {exact.min():.4f}-{exact.max():.4f}); "
        f"per-word: mean {per_word.mean():.4f} (range {per_word.min():.4f}-{per_word.max():.4f}) "
        f"over seeds {args.seeds}; train time mean {results[:, 2].mean():.0f} s"
    )


if __name__ == "__main__":
    main()
