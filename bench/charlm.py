"""Character language model (issue 18): validation bits per character, jaxlayers vs Flax vs PyTorch.

Three implementations of the same network, ``embedding (V, E) -> one LSTM layer of H units -> affine
(H, V)``, trained side by side on ``jl.data.load("pydoc-chars:T")`` (loaded once) with:

* the same batches in the same order: one NumPy generator (``default_rng(seed)``) shuffles the
  training windows each epoch, and every implementation gets the same ``(B, T)`` batch at every step;
* the same optimizer: Adam (``b1=0.9, b2=0.999, eps=1e-8``, constant learning rate) after clipping
  the gradients to a global norm (``optax.clip_by_global_norm`` / ``torch.nn.utils.clip_grad_norm_``);
* the same number of steps and sequence length, every window starting from a zero state.

The implementations:

* ``jaxlayers``: :func:`jaxlayers.models.char_lm` (``nn.Embedding -> nn.LSTM -> nn.TemporalAffine``,
  ``loss="temporal_softmax"``) trained by :func:`jaxlayers.train.make_train_step` -- the library's
  own step, hand-written backward passes throughout;
* ``flax``: ``flax.linen`` ``Embed -> RNN(OptimizedLSTMCell) -> Dense``, ``jax.grad`` of optax's
  ``softmax_cross_entropy_with_integer_labels`` averaged over characters, jitted;
* ``torch``: ``nn.Embedding -> nn.LSTM(batch_first=True) -> nn.Linear``, ``F.cross_entropy``
  averaged over characters, ``torch.optim.Adam``, eager, ``torch.set_num_threads(1)`` by default
  (``--torch-threads``; on the shared 2-core machine two threads spin against the other jobs and
  a step took 10x longer).

**The loss scale.** jaxlayers' ``temporal_softmax_loss`` is the NumPy original's: summed over time
and divided by ``N``, i.e. ``T`` times the per-character mean the peers minimise, so its gradients
are ``T`` times theirs. Adam's update is invariant to that scale (up to ``eps``, whose effect is
then ``T`` times smaller), so the learning rate is the same for all three; the clipping threshold
is not, so jaxlayers clips at ``T * clip`` -- the same clipping of the per-character gradient.
All the reported losses are per character, in bits.

**Init differs** between the frameworks (same shapes, each framework's default init):
jaxlayers ``E ~ N(0, 1)`` (:func:`jaxlayers.models.char_lm`'s default, as PyTorch's; ``nn.Embedding``'s
own default, ``N(0, 1/E)``, with ``--jaxlayers-embed-scale 0.125`` at ``E = 64``), ``Wx ~ N(0, 1/E)``,
orthogonal ``Wh`` blocks, forget bias 1, He-normal output; Flax ``Embed`` ``N(0, 1/E)``, LeCun-normal input kernels, orthogonal recurrent kernels, zero
biases, LeCun-normal ``Dense``; PyTorch ``N(0, 1)`` embedding, ``U(-1/sqrt(H), 1/sqrt(H))``
for the LSTM and the output layer.

The steps are interleaved (step ``i`` of every implementation, then step ``i + 1``), so the
machine's load hits all three alike; "train s" is each one's summed step time (``block_until_ready``
for JAX), its first step (the compile) reported apart. Validation bits per character are over all
of the validation windows, every window from a zero state, for all three.

    PYTHONPATH=$PWD python -m bench.charlm                  # seed 0, H=128, T=64, B=32, 1000 steps
    PYTHONPATH=$PWD python -m bench.charlm --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlayers as jl

PEERS = ("jaxlayers", "flax", "torch")
TARGET = 0.02  # jaxlayers' validation bpc within 2% of each peer's


def batch_order(n_train: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch)`` window indices: a fresh permutation of the training windows each epoch
    (``np.random.default_rng(seed)``), cut into batches; a last partial batch of an epoch is dropped."""
    rng = np.random.default_rng(seed)
    per_epoch = n_train // batch
    out = []
    while len(out) < steps:
        perm = rng.permutation(n_train)
        out.extend(perm[i * batch : (i + 1) * batch] for i in range(per_epoch))
    return np.stack(out[:steps])


# ---------------------------------------------------------------------------
# The three implementations: each gives step(x, y) -> per-char loss (nats) and val_bpc(X, y) -> float
# ---------------------------------------------------------------------------


class JaxlayersLM:
    embed_scale = None  # --jaxlayers-embed-scale: the std of the embedding's init (None: char_lm's default, 1)

    def __init__(self, V, T, E, H, lr, clip, seed):
        self.T = T
        scale = {} if self.embed_scale is None else {"embed_scale": self.embed_scale}
        self.model = jl.models.char_lm(V, T, embed_dim=E, hidden=H, **scale)
        opt = optax.chain(optax.clip_by_global_norm(clip * T), optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
        self.state = jl.train.init_train_state(self.model, opt, jax.random.key(seed))
        self.step_fn = jl.train.make_train_step(self.model, opt)

    def n_params(self):
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.state.params))

    def set_weights(self, w):
        ifgo_to_ifog = [0, 1, 3, 2]  # jaxlayers' LSTM gate blocks are i, f, o, g

        def gates(a):
            return np.concatenate([np.split(a, 4, axis=-1)[k] for k in ifgo_to_ifog], axis=-1)

        params = {
            "E1": w["embed"],
            "Wx2": gates(w["Wx"]),
            "Wh2": gates(w["Wh"]),
            "b2": gates(w["b"]),
            "W3": w["Wout"],
            "b3": w["bout"],
        }
        assert {k: v.shape for k, v in params.items()} == {k: v.shape for k, v in self.state.params.items()}
        self.state = self.state._replace(params={k: jnp.asarray(v) for k, v in params.items()})

    def step(self, x, y):
        self.state, metrics = self.step_fn(self.state, x, y)
        return float(metrics["loss"]) / self.T  # summed over time / N -> per character

    def val_bpc(self, X, y):
        return jl.train.bits_per_token(self.model, self.state.params, self.state.model_state, X, y)


class FlaxLM:
    def __init__(self, V, T, E, H, lr, clip, seed):
        import flax.linen as fnn

        class CharLM(fnn.Module):
            @fnn.compact
            def __call__(self, x):
                h = fnn.Embed(V, E)(x)
                h = fnn.RNN(fnn.OptimizedLSTMCell(H))(h)
                return fnn.Dense(V)(h)

        model = CharLM()
        self.params = model.init(jax.random.key(seed), jnp.zeros((1, T), jnp.int32))
        opt = optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
        self.opt = opt
        self.opt_state = opt.init(self.params)

        def loss_fn(params, x, y):
            logits = model.apply(params, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        @jax.jit
        def step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self._step = step
        self._loss = jax.jit(loss_fn)

    def n_params(self):
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.params))

    def set_weights(self, w):
        cell = {f"i{g}": {"kernel": k} for g, k in zip("ifgo", np.split(w["Wx"], 4, axis=-1), strict=True)}
        for g, k, b in zip("ifgo", np.split(w["Wh"], 4, axis=-1), np.split(w["b"], 4), strict=True):
            cell[f"h{g}"] = {"kernel": k, "bias": b}
        params = {
            "params": {
                "Embed_0": {"embedding": w["embed"]},
                "OptimizedLSTMCell_0": cell,
                "Dense_0": {"kernel": w["Wout"], "bias": w["bout"]},
            }
        }
        shapes = jax.tree.map(np.shape, params)
        assert shapes == jax.tree.map(np.shape, self.params), (shapes, jax.tree.map(np.shape, self.params))
        self.params = jax.tree.map(jnp.asarray, params)
        self.opt_state = self.opt.init(self.params)

    def step(self, x, y):
        self.params, self.opt_state, loss = self._step(self.params, self.opt_state, x, y)
        return float(loss)

    def val_bpc(self, X, y):
        return float(self._loss(self.params, X, y)) / math.log(2)


class TorchLM:
    threads = 1

    def __init__(self, V, T, E, H, lr, clip, seed):
        import torch

        torch.set_num_threads(self.threads)
        torch.manual_seed(seed)
        self.torch, self.clip = torch, clip

        class CharLM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(V, E)
                self.lstm = torch.nn.LSTM(E, H, batch_first=True)
                self.out = torch.nn.Linear(H, V)

            def forward(self, x):
                return self.out(self.lstm(self.embed(x))[0])

        self.model = CharLM()
        self.lr = lr
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def n_params(self):
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def weights(self) -> dict:
        """This model's initial weights in the neutral layout (``x @ W``, LSTM gate blocks i, f, g, o,
        one LSTM bias: ``bias_ih + bias_hh``) that ``set_weights`` of every implementation reads."""
        m = self.model
        return {
            "embed": m.embed.weight.detach().numpy().copy(),
            "Wx": m.lstm.weight_ih_l0.detach().numpy().T.copy(),
            "Wh": m.lstm.weight_hh_l0.detach().numpy().T.copy(),
            "b": (m.lstm.bias_ih_l0 + m.lstm.bias_hh_l0).detach().numpy().copy(),
            "Wout": m.out.weight.detach().numpy().T.copy(),
            "bout": m.out.bias.detach().numpy().copy(),
        }

    def set_weights(self, w):
        """Load ``w``; ``bias_hh`` becomes zero and FROZEN, so the LSTM has one trained bias as in the
        other two (PyTorch's two biases get the same gradient, so Adam moves their sum twice as fast)."""
        torch, m = self.torch, self.model
        with torch.no_grad():
            m.embed.weight.copy_(torch.from_numpy(w["embed"]))
            m.lstm.weight_ih_l0.copy_(torch.from_numpy(w["Wx"].T.copy()))
            m.lstm.weight_hh_l0.copy_(torch.from_numpy(w["Wh"].T.copy()))
            m.lstm.bias_ih_l0.copy_(torch.from_numpy(w["b"]))
            m.lstm.bias_hh_l0.zero_()
            m.out.weight.copy_(torch.from_numpy(w["Wout"].T.copy()))
            m.out.bias.copy_(torch.from_numpy(w["bout"]))
        m.lstm.bias_hh_l0.requires_grad_(False)
        self.opt = torch.optim.Adam(
            [p for p in m.parameters() if p.requires_grad], lr=self.lr, betas=(0.9, 0.999), eps=1e-8
        )

    def _loss(self, x, y):
        logits = self.model(self.torch.from_numpy(np.asarray(x, np.int64)))
        target = self.torch.from_numpy(np.asarray(y, np.int64))
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.clip)
        self.opt.step()
        return loss.item()

    def val_bpc(self, X, y):
        with self.torch.no_grad():
            return float(self._loss(X, y)) / math.log(2)


IMPLS = {"jaxlayers": JaxlayersLM, "flax": FlaxLM, "torch": TorchLM}


# ---------------------------------------------------------------------------
# One seed: train the three in lock-step
# ---------------------------------------------------------------------------


def run_seed(ds, *, seed, hidden, embed, steps, batch, lr, clip, evals, peers, init="native", log=print) -> dict:
    V, T = len(ds.vocab), ds.X_train.shape[1]
    order = batch_order(len(ds.X_train), batch, steps, seed)
    impls = {name: IMPLS[name](V, T, embed, hidden, lr, clip, seed) for name in peers}
    if init == "torch":  # every implementation starts from PyTorch's default init for this seed
        w = TorchLM(V, T, embed, hidden, lr, clip, seed).weights()
        for impl in impls.values():
            impl.set_weights(w)
    times = dict.fromkeys(impls, 0.0)
    first = {}
    losses = {name: [] for name in impls}
    curve = {name: [] for name in impls}
    checkpoints = {round(steps * (k + 1) / evals) for k in range(evals)}
    t0 = time.perf_counter()
    for i, idx in enumerate(order):
        x, y = ds.X_train[idx], ds.y_train[idx]
        for name in list(impls)[i % len(impls) :] + list(impls)[: i % len(impls)]:  # rotated order
            t = time.perf_counter()
            losses[name].append(impls[name].step(x, y))  # float(): waits for the step
            dt = time.perf_counter() - t
            if i == 0:
                first[name] = dt
            else:
                times[name] += dt
        if i + 1 in checkpoints:
            for name, impl in impls.items():
                curve[name].append((i + 1, impl.val_bpc(ds.X_val, ds.y_val)))
            log(
                f"  seed {seed} step {i + 1}/{steps} ({time.perf_counter() - t0:.0f} s): "
                + ", ".join(f"{n} val {c[-1][1]:.4f} bpc" for n, c in curve.items())
            )
    tail = max(1, steps // 10)
    return {
        name: {
            "val_bpc": curve[name][-1][1],
            "train_bpc_tail": statistics.fmean(losses[name][-tail:]) / math.log(2),
            "train_s": times[name],
            "first_step_s": first[name],
            "ms_per_step": 1e3 * times[name] / max(steps - 1, 1),
            "curve": curve[name],
            "params": impls[name].n_params(),
        }
        for name in impls
    }


def table(results: dict[int, dict], args) -> list[str]:
    seeds = sorted(results)
    peers = list(results[seeds[0]])
    out = [
        f"H={args.hidden}, E={args.embed}, T={args.seq_len}, batch {args.batch}, {args.steps} steps, "
        f"Adam lr {args.lr}, clip {args.clip} (per-character gradient), init {args.init}"
        + ("" if args.jaxlayers_embed_scale is None else f" (jaxlayers embedding std {args.jaxlayers_embed_scale})")
        + ","
        f" seeds {' '.join(map(str, seeds))}",
        "",
        "| implementation | params | "
        + " | ".join(f"val bpc seed {s}" for s in seeds)
        + " | val bpc mean (range) | jaxlayers / impl | train bpc (last 10%) | train s | ms/step | compile s |",
        "|---|---:|" + "---:|" * len(seeds) + "---:|---:|---:|---:|---:|---:|",
    ]
    jl_mean = statistics.fmean(results[s]["jaxlayers"]["val_bpc"] for s in seeds) if "jaxlayers" in peers else None
    for name in peers:
        v = [results[s][name]["val_bpc"] for s in seeds]
        mean = statistics.fmean(v)
        ratio = "—" if jl_mean is None else f"{jl_mean / mean:.4f}"
        out.append(
            f"| {name} | {results[seeds[0]][name]['params']:,} | "
            + " | ".join(f"{b:.4f}" for b in v)
            + f" | {mean:.4f} ({min(v):.4f}-{max(v):.4f}) | {ratio}"
            + f" | {statistics.fmean(results[s][name]['train_bpc_tail'] for s in seeds):.4f}"
            + f" | {statistics.fmean(results[s][name]['train_s'] for s in seeds):.1f}"
            + f" | {statistics.fmean(results[s][name]['ms_per_step'] for s in seeds):.1f}"
            + f" | {statistics.fmean(results[s][name]['first_step_s'] for s in seeds):.2f} |"
        )
    out += ["", "Validation bpc during training (mean over seeds):", ""]
    pts = [step for step, _ in results[seeds[0]][peers[0]]["curve"]]
    out += ["| step | " + " | ".join(peers) + " |", "|---:|" + "---:|" * len(peers)]
    for k, step in enumerate(pts):
        row = [statistics.fmean(results[s][n]["curve"][k][1] for s in seeds) for n in peers]
        out.append(f"| {step} | " + " | ".join(f"{b:.4f}" for b in row) + " |")
    if jl_mean is not None:
        out.append("")
        for name in peers:
            if name == "jaxlayers":
                continue
            peer_mean = statistics.fmean(results[s][name]["val_bpc"] for s in seeds)
            per_seed = [results[s]["jaxlayers"]["val_bpc"] / results[s][name]["val_bpc"] for s in seeds]
            met = jl_mean <= (1 + TARGET) * peer_mean
            out.append(
                f"Target: jaxlayers' mean val bpc within {TARGET:.0%} of {name}'s: {jl_mean:.4f} vs {peer_mean:.4f},"
                f" ratio {jl_mean / peer_mean:.4f} (per seed {min(per_seed):.4f}-{max(per_seed):.4f})"
                f" -> {'met' if met else 'NOT met'}"
            )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--clip", type=float, default=5.0, help="global-norm clip of the per-character gradient")
    parser.add_argument("--evals", type=int, default=4, help="validation evaluations during training")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--jaxlayers-embed-scale",
        type=float,
        default=None,
        help="(--init native) std of jaxlayers' embedding init; default char_lm's, 1 (as PyTorch's)",
    )
    parser.add_argument(
        "--init",
        choices=("native", "torch"),
        default="native",
        help="native: each framework's own init; torch: all three start from PyTorch's default init of the seed",
    )
    args = parser.parse_args(argv)
    TorchLM.threads = args.torch_threads
    JaxlayersLM.embed_scale = args.jaxlayers_embed_scale

    ds = jl.data.load(f"pydoc-chars:{args.seq_len}")
    print(
        f"pydoc-chars:{args.seq_len}: {len(ds.X_train)} training windows, {len(ds.X_val)} validation windows,"
        f" vocabulary {len(ds.vocab)}; Python {platform.python_version()}, jax {jax.__version__}"
    )
    t0 = time.perf_counter()
    results = {}
    for seed in args.seeds:
        results[seed] = run_seed(
            ds,
            seed=seed,
            hidden=args.hidden,
            embed=args.embed,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            clip=args.clip,
            evals=args.evals,
            peers=args.peers,
            init=args.init,
        )
    print()
    print("\n".join(table(results, args)))
    print(f"\nTotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
