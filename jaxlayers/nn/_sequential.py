"""The combinators: :class:`Residual` (a layer) and :class:`Sequential` (a model), and the one
engine both use to number, initialise and run a declaration of layers."""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlayers._checks import check_choice, check_float_dtype, check_number, require
from jaxlayers.losses import softmax_loss, svm_loss, temporal_softmax_loss
from jaxlayers.model import PREDICT_BATCH_SIZE, predict, predict_proba, register_model
from jaxlayers.nn._layers import Dropout, _Layer
from jaxlayers.nn._registry import layer_from_record, layer_record, register_layer

__all__ = ["Residual", "Sequential"]

_LOSSES = ("softmax", "svm", "temporal_softmax")
_SEQUENCE_LOSSES = ("temporal_softmax",)  # per-step scores (T, V), labels (N, T), negative labels = padding


class _Slot(NamedTuple):
    """One layer's place in a declaration: all static, hashable (part of the model's treedef)."""

    path: str  # "layers[2]", "layers[2].layers[0]"
    title: str  # the layer's repr at declaration time
    leaf: int  # index into the flat list of leaf layers (-1: a Residual)
    naming: str  # "weight" | "norm" | "none" | "custom" | "residual"
    params: tuple  # ((local name, global name), ...); a custom layer: (("", prefix),) when it has params
    shapes: tuple  # ((global name, shape), ...) of its parameters (a custom layer's leaves: prefix + key path)
    state: str | None  # the global name of its state, if it has one
    init_key: int | None  # which subkey of init's split it gets (None: the key itself, unused)
    apply_key: int | None  # which subkey of apply's split it gets in train mode
    takes_dtype: bool
    in_shape: tuple
    out_shape: tuple
    children: tuple  # a Residual's slots


class _Plan(NamedTuple):
    slots: tuple
    out_shape: tuple
    n_init: int
    n_apply: int
    dropout: str | None  # the first dropout layer that needs a key in train mode (for the error)


def _is_node(layer) -> bool:
    """Whether ``layer`` is a pytree node (its leaves are traced); else it is held as a static value."""
    leaves = jax.tree_util.tree_leaves(layer)
    return not (len(leaves) == 1 and leaves[0] is layer)


class _Static(NamedTuple):
    layer: Any


def _split_layers(layers):
    children = tuple(layer if _is_node(layer) else None for layer in layers)
    statics = tuple(None if _is_node(layer) else _Static(layer) for layer in layers)
    return children, statics


def _merge_layers(statics, children):
    return tuple(c if s is None else s.layer for s, c in zip(statics, children, strict=True))


def _check_layers(layers, owner: str, where: str = "") -> tuple:
    for j, layer in enumerate(layers):
        name = type(layer).__name__
        require(
            not isinstance(layer, Sequential),
            owner,
            f"{where}layers[{j}] is an nn.Sequential, a model; group layers with nn.Residual or list them inline",
            TypeError,
        )
        missing = [m for m in ("init", "apply", "to_dict") if not callable(getattr(layer, m, None))]
        require(
            not missing,
            owner,
            f"{where}layers[{j}] ({name}) is not a layer: it lacks {', '.join(missing)} "
            "(see the layer protocol in jaxlayers.nn)",
            TypeError,
        )
        if not _is_node(layer):
            try:
                hash(layer)
            except TypeError:
                raise TypeError(
                    f"{owner}: {where}layers[{j}] ({name}) must be hashable (keep the default identity hash or use "
                    "a frozen dataclass) or a registered pytree, so that compiled programs can be cached"
                ) from None
    return tuple(layers)


def _leaf_layers(layers) -> list:
    out = []
    for layer in layers:
        if isinstance(layer, Residual):
            out.extend(_leaf_layers(layer.layers))
        else:
            out.append(layer)
    return out


def _takes_dtype(fn) -> bool:
    try:
        return "dtype" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _shape_tuple(value, owner: str, what: str) -> tuple[int, ...]:
    shape = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    ok = isinstance(shape, tuple | list) and all(isinstance(d, int | np.integer) and d >= 1 for d in shape)
    require(ok, owner, f"{what} must be a tuple of positive ints (no batch axis), got {value!r}", TypeError)
    return tuple(int(d) for d in shape)


class _Counter:
    def __init__(self) -> None:
        self.index = 0  # the number of the last weight layer
        self.leaf = 0
        self.init = 0
        self.apply = 0
        self.names: dict[str, str] = {}  # global name -> path of its owner
        self.dropout: str | None = None


def _claim(counter: _Counter, name: str, path: str, owner: str) -> None:
    other = counter.names.get(name)
    require(
        other is None,
        owner,
        f"{path} would name a parameter or state {name!r}, already taken by {other}: two norm layers after the "
        "same weight layer (put a weight layer between them) or a user layer named like a jaxlayers parameter",
    )
    counter.names[name] = path


def _declare(layers, shape, dtype, owner: str, counter: _Counter, prefix: str = "") -> tuple[tuple, tuple]:
    """Walk the declaration once: every layer's input and output shape, names and keys (abstractly)."""
    slots = []
    for j, layer in enumerate(layers):
        path = f"{prefix}layers[{j}]"
        if isinstance(layer, Residual):
            children, out = _declare(layer.layers, shape, dtype, owner, counter, path + ".")
            require(
                out == shape,
                owner,
                f"{path} (Residual) must keep the shape of its input to add it: its layers map {shape} to {out}",
            )
            slots.append(_Slot(path, "Residual", -1, "residual", (), (), None, None, None, False, shape, out, children))
            continue
        cls = type(layer)
        naming = cls.naming if isinstance(layer, _Layer) else "custom"
        naming = naming or "none"
        title = layer._describe(traced=False) if isinstance(layer, _Layer) else cls.__name__
        position = counter.leaf + 1
        random_init = bool(getattr(layer, "random_init", True))
        random_apply = bool(getattr(layer, "random_apply", True))
        takes_dtype = _takes_dtype(layer.init)
        box = {}

        def abstract_init(key, layer=layer, shape=shape, takes_dtype=takes_dtype, box=box):
            p, s, out = layer.init(key, shape, dtype=dtype) if takes_dtype else layer.init(key, shape)
            box["out"] = out
            return p, s

        try:
            # the key is made inside the trace: an eager jax.random.key would start a JAX backend, and a model
            # must be buildable before jax.distributed.initialize (fit(..., distributed=))
            p_abs, s_abs = jax.eval_shape(lambda: abstract_init(jax.random.key(0)))
        except (ValueError, TypeError) as e:
            raise type(e)(f"{owner}: {path} ({title}) with input shape {shape}: {e}") from None
        out = _shape_tuple(box.get("out"), owner, f"{path} ({title}).init's output_shape")
        if naming == "weight":
            counter.index += 1
        i = counter.index
        has_params = bool(jax.tree_util.tree_leaves(p_abs))
        has_state = bool(jax.tree_util.tree_leaves(s_abs))
        state_name = None
        if naming in ("weight", "norm", "none"):
            require(not has_params or naming != "none", owner, f"{path} ({title}) has parameters but no name role")
            order = tuple(getattr(layer, "param_order", ()))
            local = sorted(p_abs, key=lambda k: (order.index(k) if k in order else len(order), k)) if has_params else []
            params = tuple((k, f"{k}{i}") for k in local)
            shapes = tuple((g, tuple(p_abs[k].shape)) for k, g in params)
            if has_state:
                state_name = f"bn{i}"
        else:
            name = f"{cls.__name__}_{position}"
            params = (("", name),) if has_params else ()
            flat = jax.tree_util.tree_flatten_with_path(p_abs)[0] if has_params else []
            shapes = tuple((name + jax.tree_util.keystr(kp), tuple(a.shape)) for kp, a in flat)
            state_name = name if has_state else None
        for _, g in params:
            _claim(counter, g, path, owner)
        if state_name is not None and naming == "custom" and params:
            pass  # the same prefix names its params and its state (separate dicts)
        elif state_name is not None:
            _claim(counter, state_name, path, owner)
        init_key = None
        if random_init:
            init_key, counter.init = counter.init, counter.init + 1
        apply_key = None
        if random_apply:
            apply_key, counter.apply = counter.apply, counter.apply + 1
        if isinstance(layer, Dropout) and layer.rate > 0 and counter.dropout is None:
            counter.dropout = f"{path} ({title})"
        slots.append(
            _Slot(
                path, title, counter.leaf, naming, params, shapes, state_name, init_key, apply_key, takes_dtype,
                shape, out, (),
            )
        )  # fmt: skip
        counter.leaf += 1
        shape = out
    return tuple(slots), shape


def _plan(layers, input_shape, dtype, owner: str) -> _Plan:
    counter = _Counter()
    slots, out = _declare(layers, input_shape, dtype, owner, counter)
    return _Plan(slots, out, counter.init, counter.apply, counter.dropout)


def _init(plan: _Plan, leaves, key, dtype) -> tuple[dict, dict]:
    keys = jax.random.split(key, plan.n_init) if plan.n_init else None
    params: dict = {}
    state: dict = {}

    def walk(slots):
        for slot in slots:
            if slot.children:
                walk(slot.children)
                continue
            layer = leaves[slot.leaf]
            k = keys[slot.init_key] if slot.init_key is not None else key
            if slot.takes_dtype:
                p, s, _ = layer.init(k, slot.in_shape, dtype=dtype)
            else:  # a user layer without dtype=: its floating parameters are cast to the model's dtype
                p, s, _ = layer.init(k, slot.in_shape)
                p = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, p)
            if slot.naming == "custom":
                if slot.params:
                    params[slot.params[0][1]] = p
            else:
                for local, glob in slot.params:
                    params[glob] = p[local]
            if slot.state is not None:
                state[slot.state] = s

    walk(plan.slots)
    return params, state


def _run(slots, leaves, params, state, x, train: bool, keys, new_state: dict):
    for slot in slots:
        if slot.children:
            x = x + _run(slot.children, leaves, params, state, x, train, keys, new_state)
            continue
        if slot.naming == "custom":
            p = params[slot.params[0][1]] if slot.params else {}
        else:
            p = {local: params[glob] for local, glob in slot.params}
        s = state[slot.state] if slot.state is not None else {}
        k = keys[slot.apply_key] if keys is not None and slot.apply_key is not None else None
        x, ns = leaves[slot.leaf].apply(p, s, x, train=train, key=k)
        if slot.state is not None:
            new_state[slot.state] = ns
    return x


def _forward(plan: _Plan, leaves, params, state, x, *, train: bool, key):
    """Run a declaration on a batch: ``(out, new_state)``. ``new_state`` holds every state entry (``state``'s
    value in test mode is what the layers return, normally unchanged)."""
    keys = jax.random.split(key, plan.n_apply) if (train and key is not None and plan.n_apply) else None
    new_state: dict = {}
    out = _run(plan.slots, leaves, params, state, x, bool(train), keys, new_state)
    return out, new_state


def _param_shapes(slots) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for slot in slots:
        shapes.update(_param_shapes(slot.children) if slot.children else dict(slot.shapes))
    return shapes


def _param_keys(slots) -> list[str]:
    keys = []
    for slot in slots:
        keys += _param_keys(slot.children) if slot.children else [g for _, g in slot.params]
    return keys


def _state_names(slots) -> set[str]:
    names: set[str] = set()
    for slot in slots:
        names |= _state_names(slot.children) if slot.children else ({slot.state} if slot.state else set())
    return names


# the local names the L2 penalty covers (Affine, Conv2d, TemporalAffine; RNN/LSTM/GRU; MultiHeadAttention)
_PENALISED = ("W", "Wx", "Wh", "Wq", "Wk", "Wv", "Wo")


def _weights(slots) -> list[str]:
    names = []
    for slot in slots:
        names += (
            _weights(slot.children)
            if slot.children
            else [g for loc, g in slot.params if slot.naming == "weight" and loc in _PENALISED]
        )
    return names


def _check_train(train, owner: str) -> bool:
    require(
        isinstance(train, bool | np.bool_), owner, f"train must be a Python bool (static), got {train!r}", TypeError
    )
    return bool(train)


@register_layer
class Residual:
    """``x + f(x)``, where ``f`` runs ``layers`` in order: a residual (skip) connection.

    A layer of the layer protocol. ``f`` must keep the shape of its input; otherwise
    ``init`` (or building the :class:`Sequential` that holds it) raises a ``ValueError``
    naming both shapes. Inside a :class:`Sequential` its layers take part in the model's
    one numbering (``W{i}``, ``gamma{i}``, ... continue through it); on its own, its
    parameters are numbered from 1.

    Args:
      *layers: the layers of ``f``, at least one.
    """

    def __init__(self, *layers) -> None:
        require(len(layers) >= 1, "nn.Residual", "needs at least one layer")
        self.layers = _check_layers(layers, "nn.Residual")

    def _plan(self, input_shape, dtype) -> _Plan:
        shape = _shape_tuple(input_shape, "nn.Residual", "input_shape")
        return _plan((self,), shape, dtype, "nn.Residual")

    def init(self, key, input_shape, *, dtype=jnp.float32):
        """``(params, state, output_shape)``: flat dicts named as in :class:`Sequential`; the input shape."""
        plan = self._plan(input_shape, dtype)
        params, state = _init(plan, _leaf_layers(self.layers), key, dtype)
        return params, state, plan.out_shape

    def apply(self, params, state, x, *, train, key=None):
        """``(x + f(x), new_state)``."""
        plan = self._plan(tuple(np.shape(x)[1:]), jnp.result_type(x))
        return _forward(
            plan, _leaf_layers(self.layers), params, state, x, train=_check_train(train, "nn.Residual"), key=key
        )

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer_record(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Residual:
        require(
            isinstance(d, dict) and isinstance(d.get("layers"), list), "nn.Residual", f"from_dict: bad config {d!r}"
        )
        return cls(*(layer_from_record(r) for r in d["layers"]))

    def __repr__(self) -> str:
        return f"Residual({', '.join(map(repr, self.layers))})"


jax.tree_util.register_pytree_node(
    Residual,
    lambda r: (_split_layers(r.layers)[0], _split_layers(r.layers)[1]),
    lambda statics, children: _new(Residual, layers=_merge_layers(statics, children)),
)


def _new(cls, **attrs):
    obj = object.__new__(cls)
    for k, v in attrs.items():
        object.__setattr__(obj, k, v)
    return obj


def _with_weight_scale(layers, weight_scale) -> tuple[tuple, int]:
    """``layers`` with every jaxlayers layer that has a ``weight_scale`` (Affine, Conv2d) rebuilt with
    the new one, through Residual blocks; and how many were."""
    out, count = [], 0
    for layer in layers:
        if isinstance(layer, Residual):
            inner, n = _with_weight_scale(layer.layers, weight_scale)
            layer, count = Residual(*inner), count + n
        elif isinstance(layer, _Layer) and "weight_scale" in layer._fields():
            fields = {n: getattr(layer, n) for n in layer._KWARGS}
            layer = type(layer)(*(getattr(layer, n) for n in layer._ARGS), **{**fields, "weight_scale": weight_scale})
            count += 1
        out.append(layer)
    return tuple(out), count


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _table(rows, title: str) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.append(title)
    return "\n".join(line.rstrip() for line in lines)


class Classifier:
    """The model protocol's objective and predictions, written once for :class:`Sequential` and jaxlayers'
    models (:mod:`jaxlayers.models`), over the class's own ``apply``, ``weight_names()``, ``reg``, ``dtype``
    and ``loss_type``."""

    def l2_penalty(self, params) -> jax.Array:
        """``0.5 * reg * sum_i sum(W{i}**2)`` over :meth:`weight_names` (a scalar in ``dtype``).

        ``reg`` may be traced; it is always applied (``reg = 0`` adds an exact 0).
        """
        # vdot(W, W), not sum(W**2): its VJP keeps W itself (an input), not a new 2*W array.
        total = sum(jnp.vdot(params[n], params[n]) for n in self.weight_names())
        return 0.5 * jnp.asarray(self.reg, self.dtype) * total

    def loss(self, params, state, x, y, *, key=None):
        """Training objective: data loss (train mode) plus :meth:`l2_penalty`.

        Shaped for ``jax.value_and_grad(model.loss, has_aux=True)``.

        Args:
          params, state: as :meth:`apply`.
          x: inputs, as :meth:`apply`.
          y: integer labels, shape ``(N,)``, each in ``[0, num_classes)``; for ``loss_type="temporal_softmax"``
            ``(N, T)``, masked by :meth:`target_mask` (``y >= 0``; negative labels are padding).
          key: PRNG key for dropout (required in train mode when a dropout rate is ``> 0``).

        Returns:
          ``(loss, (new_state, scores))``: the scalar mean data loss (softmax or SVM, ``loss_type``; for
          ``"temporal_softmax"`` the masked loss summed over time and divided by N) plus
          ``0.5 * reg * sum(W**2)``; the updated running statistics; the train-mode scores
          ``(N, num_classes)``.

        Raises:
          ValueError: as :meth:`apply`; labels of the wrong shape; concrete labels outside
            ``[0, num_classes)`` (under ``jit`` the loss is NaN instead, see :func:`jaxlayers.softmax_loss`).
          TypeError: non-integer labels.
        """
        scores, new_state = self.apply(params, state, x, train=True, key=key)
        if self.loss_type == "temporal_softmax":
            y = jnp.asarray(y)
            data_loss = temporal_softmax_loss(scores, y, self.target_mask(y))
        else:
            data_loss = softmax_loss(scores, y) if self.loss_type == "softmax" else svm_loss(scores, y)
        return data_loss + self.l2_penalty(params).astype(data_loss.dtype), (new_state, scores)

    def predict(self, params, state, x, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Predicted labels, int32 ``(N,)``: :func:`jaxlayers.model.predict` of this model.

        ``x`` as :meth:`apply` (standardised as in training); any ``N``, ``0`` included; jitted batches of
        ``batch_size``, the last padded.
        """
        return predict(self, params, state, x, batch_size=batch_size)

    def predict_proba(self, params, state, x, *, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities ``(N, num_classes)``: :func:`jaxlayers.model.predict_proba` of this model.

        The softmax of the test-mode scores; with ``loss_type="svm"`` the softmax of the SVM scores, which
        is uncalibrated (a ranking, not a confidence).
        """
        return predict_proba(self, params, state, x, batch_size=batch_size)


@register_model
class Sequential(Classifier):
    """A classifier declared as a sequence of layers: a model of the model protocol (:mod:`jaxlayers.model`).

    It trains through :func:`jaxlayers.train.fit` (one device or a mesh),
    :func:`~jaxlayers.train.fit_many`, checkpoints, :func:`jaxlayers.load_run`,
    ``evaluate`` and ``predict``. It is a pytree: ``reg`` and every layer's
    ``weight_scale`` are traced leaves (``fit_many`` stacks them); the rest is static.

    The declaration is checked once, when the model is built: each layer's
    ``init`` is evaluated abstractly (``jax.eval_shape``: nothing is allocated),
    giving every layer's input and output shape, parameter names and shapes. A
    layer that refuses its input raises there, naming its index, its name and
    the shapes.

    Parameters are one flat dict (names: see :mod:`jaxlayers.nn`): ``W1, b1,
    gamma1, beta1, W2, ...`` for jaxlayers' layers, ``{Class}_{position}`` for
    any other layer's whole parameter pytree. Running statistics: ``{"bn{i}":
    BatchNormState, "{Class}_{position}": ...}``.

    Args:
      *layers: layers (see the layer protocol), applied in order; the last
        must output class scores ``(C,)``, ``C >= 2`` (per-step scores
        ``(T, V)``, ``V >= 2``, for ``loss="temporal_softmax"``).
      input_shape: one example's shape, without the batch axis (an int for
        ``(D,)``). ``apply`` takes ``(N, *input_shape)``, or ``(N, prod(input_shape))``.
      loss: ``"softmax"`` (cross-entropy) or ``"svm"`` (multiclass hinge) over
        scores ``(N, C)`` and labels ``(N,)``; or ``"temporal_softmax"``, for
        sequence models (a language model: ``nn.Embedding -> recurrent layers
        -> nn.TemporalAffine(V)``): :func:`jaxlayers.temporal_softmax_loss`
        over per-step scores ``(N, T, V)`` and labels ``y`` ``(N, T)``, with
        the mask ``y >= 0``: a negative label (``-1``, say) is padding, an
        ignored step. As the NumPy original, that loss is SUMMED over the
        unmasked steps and divided by N (not a per-token mean).
      reg: L2 strength ``>= 0``: the loss adds ``0.5 * reg * sum(W**2)`` over the
        ``W`` of every :class:`~jaxlayers.nn.Affine`, :class:`~jaxlayers.nn.Conv2d` and
        :class:`~jaxlayers.nn.TemporalAffine`, and the ``Wx``, ``Wh`` of every recurrent layer
        (:class:`~jaxlayers.nn.RNN`, :class:`~jaxlayers.nn.LSTM`, :class:`~jaxlayers.nn.GRU`);
        not biases, norms, embeddings or user layers' parameters. Traced.
      dtype: parameter and compute dtype (inputs are cast to it, except
        integer inputs of a model whose first layer is an :class:`~jaxlayers.nn.Embedding`:
        word indices stay integers); float64 needs x64.

    Raises:
      TypeError: something that is not a layer (naming its index); a bad
        ``input_shape`` or ``dtype``.
      ValueError: a layer that refuses its input shape, a Residual that
        changes the shape, a last layer that does not output ``(C,)``, an
        unknown ``loss``, a negative ``reg`` -- each naming the layer and shapes.
    """

    def __init__(self, *layers, input_shape, loss: str = "softmax", reg: float = 0.0, dtype=jnp.float32) -> None:
        owner = "nn.Sequential"
        require(len(layers) >= 1, owner, "needs at least one layer")
        layers = _check_layers(layers, owner)
        input_shape = _shape_tuple(input_shape, owner, "input_shape")
        check_choice(loss, owner, "loss", _LOSSES)
        if not isinstance(reg, jax.Array):
            reg = check_number(reg, owner, "reg (L2 strength)", low=0.0)
        dtype = check_float_dtype(dtype, owner)
        # shapes only: with x64 off a float64 model is declared with float32 shapes (its init refuses it)
        available = jax.dtypes.canonicalize_dtype(dtype) == dtype
        plan = _plan(layers, input_shape, dtype if available else np.dtype(np.float32), owner)
        out = plan.out_shape
        if loss in _SEQUENCE_LOSSES:
            require(
                len(out) == 2 and out[1] >= 2,
                owner,
                f"loss={loss!r}: the last layer ({plan.slots[-1].path}, {plan.slots[-1].title}) must output "
                f"per-step scores (T, V) with V >= 2, got output shape {out}; end with nn.TemporalAffine(V)",
            )
        else:
            require(
                len(out) == 1 and out[0] >= 2,
                owner,
                f"the last layer ({plan.slots[-1].path}, {plan.slots[-1].title}) must output class scores (C,) "
                f"with C >= 2, got output shape {out}; end with nn.Affine(num_classes)",
            )
        self._set(layers=layers, input_shape=input_shape, loss_type=loss, reg=reg, dtype=dtype, _plan=plan)

    def _set(self, **values) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name, value):
        raise AttributeError("nn.Sequential is immutable (a configuration)")

    # ---------------------------------------------------------------- pytree

    def _tree_flatten(self):
        children, statics = _split_layers(self.layers)
        return (self.reg, children), (statics, self.input_shape, self.loss_type, self.dtype, self._plan)

    @classmethod
    def _tree_unflatten(cls, aux, leaves):
        statics, input_shape, loss_type, dtype, plan = aux
        reg, children = leaves
        return _new(
            cls,
            layers=_merge_layers(statics, children),
            input_shape=input_shape,
            loss_type=loss_type,
            reg=reg,
            dtype=dtype,
            _plan=plan,
        )

    # ---------------------------------------------------------------- the declaration

    @property
    def num_classes(self) -> int:
        """``C``: the width of the last layer's output (``V``, the vocabulary, for per-step scores ``(T, V)``)."""
        return self._plan.out_shape[-1]

    @property
    def sequence_targets(self) -> bool:
        """Whether the labels are sequences ``(N, T)`` (``loss="temporal_softmax"``) rather than ``(N,)``."""
        return self.loss_type in _SEQUENCE_LOSSES

    def target_mask(self, y) -> jax.Array:
        """Which labels count, bool of ``y``'s shape: all of them for ``(N,)`` class labels; for
        sequence labels ``(N, T)`` those ``>= 0`` (negative labels are padding). The loss masks with it;
        an accuracy is ``sum(argmax(scores, -1) == y) / sum(target_mask(y))`` (a padding label never
        equals an argmax)."""
        y = jnp.asarray(y)
        return y >= 0 if self.sequence_targets else jnp.ones(y.shape, bool)

    def target_count(self, y) -> jax.Array:
        """``sum(target_mask(y))`` (int32): the denominator of an accuracy over labels ``y``: ``N`` for
        class labels, the number of non-padding steps for sequence labels."""
        return jnp.sum(self.target_mask(y), dtype=jnp.int32)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape by name, in declaration order (a user layer's leaves as ``prefix[key]``)."""
        return _param_shapes(self._plan.slots)

    def state_keys(self) -> set[str]:
        """The keys of the state dict (``bn{i}`` of batch norms, user layers' prefixes)."""
        return _state_names(self._plan.slots)

    def weight_names(self) -> list[str]:
        """The parameters the L2 penalty covers, in order: the ``W{i}`` of Affine, Conv2d and TemporalAffine
        layers, the ``Wx{i}`` and ``Wh{i}`` of RNN, LSTM and GRU layers (not biases, norms, embeddings)."""
        return _weights(self._plan.slots)

    def num_params(self) -> int:
        """The number of parameters (scalars)."""
        return sum(math.prod(s) for s in self.param_shapes().values())

    def layer_table(self) -> list[tuple[str, str, tuple[int, ...], tuple]]:
        """``[(path, title, output_shape, ((param name, shape), ...)), ...]``, one entry per layer
        (a Residual's own entry, then its layers)."""
        rows = []

        def walk(slots):
            for slot in slots:
                rows.append((slot.path, slot.title, slot.out_shape, slot.shapes))
                walk(slot.children)

        walk(self._plan.slots)
        return rows

    def summary(self, *, by: str = "layer", title: str | None = None) -> str:
        """A table of the declaration and a total line.

        ``by="layer"``: one row per layer (its path, name and output shape, its parameters,
        their count and bytes). ``by="number"``: one row per parameter number ``i`` (``W{i}``,
        ``b{i}``, ``gamma{i}``, ... together; the output shape of the weight layer).
        """
        check_choice(by, "nn.Sequential.summary", "by", ("layer", "number"))
        itemsize = np.dtype(self.dtype).itemsize
        rows = [("layer", "parameters", "output", "params", "bytes")]
        total = 0
        if by == "layer":
            for path, name, out, shapes in self.layer_table():
                depth = path.count(".")
                number = path.rsplit("[", 1)[1].rstrip("]")
                count = sum(math.prod(s) for _, s in shapes)
                total += count
                rows.append(
                    (
                        "  " * depth + f"{number} {name}",
                        ", ".join(f"{n} {s}" for n, s in shapes),
                        f"(N, {', '.join(map(str, out))})",
                        f"{count:,}",
                        _format_bytes(count * itemsize),
                    )
                )
        else:
            groups: dict[str, list] = {}
            outs: dict[str, tuple] = {}
            for _, _, out, shapes in self.layer_table():
                for n, s in shapes:
                    # a user layer's leaves ("Block_4['W1']") group under its prefix ("Block_4")
                    number = (
                        n.lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
                        if "_" not in n
                        else n.split("[")[0]
                    )
                    groups.setdefault(number, []).append((n, s))
                    outs.setdefault(number, out)
            for number, shapes in groups.items():
                count = sum(math.prod(s) for _, s in shapes)
                total += count
                out = outs[number]
                rows.append(
                    (
                        number,
                        ", ".join(f"{n} {s}" for n, s in shapes),
                        f"(N, {', '.join(map(str, out))})",
                        f"{count:,}",
                        _format_bytes(count * itemsize),
                    )
                )
        name = title or type(self).__name__
        return _table(rows, f"{name}: {total:,} parameters, {_format_bytes(total * itemsize)}")

    # ---------------------------------------------------------------- the model protocol

    def _check_dtype_available(self, owner: str) -> None:
        available = jax.dtypes.canonicalize_dtype(self.dtype)
        require(
            available == self.dtype,
            owner,
            f"dtype {self.dtype} is not available: JAX's x64 mode is off, so it would silently run in "
            f"{available}. Wrap the calls in `with jax.enable_x64(True):`",
            TypeError,
        )

    def init(self, key: jax.Array) -> tuple[dict, dict]:
        """``(params, state)``: every layer's ``init`` with its own subkey.

        ``key`` is split once into one subkey per layer that draws random
        numbers at init (``random_init``, true for Affine, Conv2d and any layer
        that does not say otherwise), given in declaration order.

        Raises:
          TypeError: ``dtype`` float64 with x64 off.
        """
        self._check_dtype_available("nn.Sequential")
        return _init(self._plan, _leaf_layers(self.layers), key, self.dtype)

    def _check_inputs(self, params, state, x, train, key, owner: str) -> jax.Array:
        train = _check_train(train, owner)
        require(
            not (train and key is None and self._plan.dropout),
            owner,
            f"a PRNG key is required for dropout ({self._plan.dropout}) in train mode: pass key=",
        )
        shape = tuple(np.shape(x))
        d = math.prod(self.input_shape)
        ok = len(shape) >= 2 and (shape[1:] == self.input_shape or shape[1:] == (d,))
        require(
            ok,
            owner,
            f"x must have shape (N, {', '.join(map(str, self.input_shape))}) (or (N, {d}) flat), got {shape}",
        )
        require(
            isinstance(params, dict),
            owner,
            f"params must be a dict (from init), got {type(params).__name__}",
            TypeError,
        )
        want = set(_param_keys(self._plan.slots))
        missing, extra = sorted(want - set(params)), sorted(set(params) - want)
        require(
            not missing and not extra, owner, f"params do not match this model: missing {missing}, unexpected {extra}"
        )
        for name, s in self.param_shapes().items():
            if name in params:
                got = tuple(np.shape(params[name]))
                require(got == s, owner, f"params[{name!r}] must have shape {s}, got {got}")
        got_state = sorted(state) if isinstance(state, dict) else type(state).__name__
        require(
            isinstance(state, dict) and set(state) == self.state_keys(),
            owner,
            f"state must be a dict with keys {sorted(self.state_keys())} (from init), got {got_state}",
        )
        x = jnp.asarray(x)
        x = x.reshape(x.shape[0], *self.input_shape)
        if self._integer_input():
            require(
                jnp.issubdtype(x.dtype, jnp.integer),
                owner,
                f"x must hold integer indices for the first layer ({self._plan.slots[0].title}), got dtype {x.dtype}",
                TypeError,
            )
            return x
        return x.astype(self.dtype)

    def _integer_input(self) -> bool:
        """Whether the first layer takes integer indices (an Embedding): the input is then not cast."""
        return bool(getattr(_leaf_layers(self.layers)[0], "integer_input", False))

    def apply(self, params, state, x, *, train: bool, key=None):
        """Class scores ``(N, C)`` (per-step scores ``(N, T, V)`` for a sequence model) and the new state.

        Args:
          params, state: from :meth:`init` (or training).
          x: ``(N, *input_shape)`` or ``(N, prod(input_shape))``; cast to ``dtype``.
          train: static bool: batch statistics and dropout when ``True``.
          key: PRNG key, split once into one subkey per layer that draws random numbers in
            train mode (``random_apply``: Dropout and user layers), in declaration order;
            required in train mode when a Dropout has ``rate > 0``.

        Raises:
          ValueError: ``x`` of the wrong shape, params / state that do not match (naming them),
            no ``key`` when dropout needs one.
          TypeError: a non-bool ``train``.
        """
        x = self._check_inputs(params, state, x, train, key, "nn.Sequential")
        return _forward(self._plan, _leaf_layers(self.layers), params, state, x, train=bool(train), key=key)

    # ---------------------------------------------------------------- records

    def to_dict(self) -> dict[str, Any]:
        """The declaration as JSON values: ``{"layers": [{"class", "config"}, ...], "input_shape", "loss",
        "reg", "dtype"}``."""
        return {
            "layers": [layer_record(layer) for layer in self.layers],
            "input_shape": list(self.input_shape),
            "loss": self.loss_type,
            "reg": float(self.reg),
            "dtype": np.dtype(self.dtype).name,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sequential:
        """Inverse of :meth:`to_dict`; layers are rebuilt from the layer registry
        (:func:`jaxlayers.nn.register_layer`), nothing is imported by name.

        Raises:
          ValueError: unknown fields or layer classes; TypeError / ValueError: values the constructor refuses.
        """
        require(isinstance(d, dict), "nn.Sequential", f"from_dict needs a dict, got {type(d).__name__}", TypeError)
        known = {"layers", "input_shape", "loss", "reg", "dtype"}
        unknown = sorted(set(d) - known)
        require(not unknown, "nn.Sequential", f"from_dict: unknown fields {unknown}; known: {sorted(known)}")
        require(isinstance(d.get("layers"), list), "nn.Sequential", "from_dict: 'layers' must be a list of records")
        layers = [layer_from_record(r) for r in d["layers"]]
        rest = {k: v for k, v in d.items() if k != "layers"}
        return cls(*layers, **rest)

    def replace(self, **changes) -> Sequential:
        """A copy with ``reg`` and/or ``weight_scale`` changed: what
        :func:`jaxlayers.train.fit_many` sweeps (``regs=``, ``weight_scales=``).

        Args:
          reg: the new L2 strength, ``>= 0``.
          weight_scale: the new ``weight_scale`` of *every* :class:`~jaxlayers.nn.Affine`,
            :class:`~jaxlayers.nn.TemporalAffine` and :class:`~jaxlayers.nn.Conv2d`, inside :class:`~jaxlayers.nn.Residual` blocks too
            (``None``: He init), as the built-in models have one ``weight_scale`` for all their
            weight layers. Other layers, user layers included, are unchanged.

        Returns:
          A new :class:`Sequential` (checked as the constructor checks it).

        Raises:
          TypeError: any other field (naming it): declare a new model for other changes.
          ValueError: a value the layers or the constructor refuse; ``weight_scale`` for a
            model without an Affine or Conv2d layer.
        """
        owner = "nn.Sequential.replace"
        unknown = sorted(set(changes) - {"reg", "weight_scale"})
        require(
            not unknown,
            owner,
            f"changes reg and weight_scale only, not {unknown}: declare a new nn.Sequential "
            "(or pass fit_many a list of models) for other changes",
            TypeError,
        )
        layers = self.layers
        if "weight_scale" in changes:
            layers, count = _with_weight_scale(layers, changes["weight_scale"])
            require(count > 0, owner, "weight_scale: this model has no Affine or Conv2d layer to set it on")
        reg = changes.get("reg", self.reg)
        return type(self)(*layers, input_shape=self.input_shape, loss=self.loss_type, reg=reg, dtype=self.dtype)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner},\n  input_shape={self.input_shape}, loss={self.loss_type!r}, reg={self.reg})"


jax.tree_util.register_pytree_node(Sequential, Sequential._tree_flatten, Sequential._tree_unflatten)
