"""The course's model classes (its ``fc_net.py``, ``cnn.py`` and ``rnn.py``) on :mod:`jaxlayers.compat`.

Re-exported by :mod:`jaxlayers.compat`. Each model keeps the course's
interface, which its notebooks and its ``Solver`` rely on:

* ``model.params``: a dict of writable NumPy arrays under the course's names
  (``W1``, ``b1``, ``gamma1``, ``beta1``, ...). :meth:`loss` reads the dict at
  every call, so entries may be replaced (``model.params['W1'] = ...``) or
  changed in place (the course's ``eval_numerical_gradient`` does both)
  between calls.
* ``model.loss(X)`` returns the class scores ``(N, C)``; ``model.loss(X, y)``
  returns ``(loss, grads)``, ``grads`` a dict of NumPy arrays under the names
  of ``params``, each of its parameter's shape and dtype. The loss is the mean
  softmax loss plus ``0.5 * reg * sum(W**2)`` over the weight matrices (not
  the biases, gammas or betas), as the course.

The forward and backward passes are the course's, layer by layer, calling
the compat layer functions (``affine_forward``, ``affine_relu_backward``,
``conv_relu_pool_forward``, ...), i.e. the same ``<op>_fwd``/``<op>_bwd``
rules as the jitted ops. Weights are drawn from NumPy's global generator
(``np.random.randn``) in the course's order, so ``np.random.seed(231)``
before the constructor gives the course's initial weights.

Precision: float64 parameters give float64 results with JAX's x64 mode on;
with it off they are computed in float32 (compat warns once) and the
gradients are returned in the parameters' dtype.
"""

from __future__ import annotations

import warnings

import numpy as np

from jaxlayers import _compat_layers as L

__all__ = ["CaptioningRNN", "FullyConnectedNet", "ThreeLayerConvNet", "TwoLayerNet"]


def _writable(a, dtype=None) -> np.ndarray:
    """A writable NumPy copy (``np.asarray`` of a JAX array is read-only)."""
    return np.array(a, dtype=dtype, copy=True)


def _grads_like(params: dict, grads: dict) -> dict:
    return {k: _writable(g, params[k].dtype) for k, g in grads.items()}


def _add_reg(model, loss, grads, names) -> float:
    """Add ``0.5 * reg * sum(W**2)`` to ``loss`` and ``reg * W`` to ``grads[W]`` for each name."""
    for name in names:
        w = model.params[name]
        loss += 0.5 * model.reg * np.sum(w * w)
        grads[name] = grads[name] + model.reg * w
    return loss


class TwoLayerNet:
    """The course's two-layer net: affine - relu - affine - softmax.

    Args:
      input_dim: ``D``, features per example (inputs ``(N, d_1, ..., d_k)``
        are flattened to ``D``).
      hidden_dim: ``H``, hidden units.
      num_classes: ``C``.
      weight_scale: standard deviation of the Gaussian initial weights; biases start at zero.
      reg: L2 regularisation strength.

    Attributes:
      params: ``W1 (D, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)``, float64
        (the course draws them with ``np.random.randn`` and keeps NumPy's float64).
      reg: may be changed between calls to :meth:`loss`.
    """

    def __init__(self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3, reg=0.0):
        self.params = {}
        self.reg = reg
        self.params["W1"] = weight_scale * np.random.randn(input_dim, hidden_dim)  # noqa: NPY002 (the course's draw)
        self.params["b1"] = np.zeros(hidden_dim)
        self.params["W2"] = weight_scale * np.random.randn(hidden_dim, num_classes)  # noqa: NPY002
        self.params["b2"] = np.zeros(num_classes)

    def loss(self, X, y=None):
        """Scores ``(N, C)`` if ``y`` is None, else ``(loss, grads)``.

        Args:
          X: ``(N, d_1, ..., d_k)`` floats, ``d_1 * ... * d_k == D``.
          y: ``(N,)`` integer labels in ``[0, C)``, or None.

        Raises:
          ValueError: shapes that do not fit (as :func:`jaxlayers.compat.affine_forward`).
        """
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        h1, cache1 = L.affine_relu_forward(X, W1, b1)
        scores, cache2 = L.affine_forward(h1, W2, b2)
        if y is None:
            return _writable(scores)

        loss, dscores = L.softmax_loss(scores, y)
        grads = {}
        dh1, grads["W2"], grads["b2"] = L.affine_backward(dscores, cache2)
        _, grads["W1"], grads["b1"] = L.affine_relu_backward(dh1, cache1)
        grads = _grads_like(self.params, grads)
        loss = _add_reg(self, loss, grads, ("W1", "W2"))
        return loss, grads


_NORMALIZATIONS = (None, "batchnorm", "layernorm")


def _resolve_dropout_and_normalization(dropout_keep_ratio, normalization, dropout, use_batchnorm):
    """The keep probability (1 = no dropout) and the normalization from either spelling."""
    if dropout is not None and dropout_keep_ratio is not None:
        raise TypeError("FullyConnectedNet: pass dropout_keep_ratio= or its older spelling dropout=, not both")
    if use_batchnorm is not None and normalization is not None:
        raise TypeError("FullyConnectedNet: pass normalization= or its older spelling use_batchnorm=, not both")
    if isinstance(normalization, bool):  # the 2017 signature's 5th positional argument was use_batchnorm
        use_batchnorm, normalization = normalization, None
    if use_batchnorm is not None:
        normalization = "batchnorm" if use_batchnorm else None
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"FullyConnectedNet: normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
        )
    if dropout is not None:
        keep = float(dropout)
        if keep == 0:  # the 2017 signature's default, dropout=0: no dropout
            keep = 1.0
        elif use_batchnorm is not None and keep < 1:
            warnings.warn(
                f"FullyConnectedNet: dropout={dropout} is read as the probability of KEEPING a unit (the "
                "course's fc_net.py since 2018, and compat.dropout_forward's p); the 2017 version, which "
                "spelt use_batchnorm=, meant the probability of dropping one: pass dropout=1 - p for that code",
                UserWarning,
                stacklevel=3,
            )
        name = "dropout"
    else:
        keep = 1.0 if dropout_keep_ratio is None else float(dropout_keep_ratio)
        name = "dropout_keep_ratio"
    if not 0 < keep <= 1:
        raise ValueError(f"FullyConnectedNet: {name} (the probability of keeping a unit) must be in (0, 1], got {keep}")
    return keep, normalization


class FullyConnectedNet:
    """The course's fully connected net of any depth.

    ``{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax``.

    Args:
      hidden_dims: list of the hidden layers' sizes (``L - 1`` of them).
      input_dim: ``D``, features per example.
      num_classes: ``C``.
      dropout_keep_ratio: the probability of KEEPING a unit in dropout; 1 means
        no dropout layers, and so does the default None (the course's default
        is 1; None tells "not given" from the older ``dropout=`` spelling).
      normalization: None, ``'batchnorm'`` or ``'layernorm'``.
      reg: L2 regularisation strength.
      weight_scale: standard deviation of the Gaussian initial weights.
      dtype: the parameters' NumPy dtype; inputs are cast to it in :meth:`loss`.
        Use ``np.float64`` (with JAX's x64 mode on) for numeric gradient checks.
      seed: when given, every dropout mask is drawn from this seed (the
        same mask at every call: for gradient checks).
      dropout: the older spelling of the keep probability (the course's
        ``fc_net.py`` of 2018-2020, ``dropout=1``); ``dropout=0`` -- the
        2017 version's default -- also means no dropout. The 2017 version's
        ``dropout`` was the probability of DROPPING a unit: code written for
        it must pass ``1 - p`` (a warning says so when ``use_batchnorm=`` is
        passed with ``0 < dropout < 1``).
      use_batchnorm: the 2017 spelling: ``True`` is ``normalization='batchnorm'``.

    Attributes:
      params: ``W1..WL``, ``b1..bL`` and, with a normalization, ``gamma1..gamma{L-1}``
        (ones), ``beta1..beta{L-1}`` (zeros), all of ``dtype``.
      dropout_param: ``{}`` or ``{'mode': ..., 'p': keep, ['seed': seed]}``,
        the dict passed to :func:`jaxlayers.compat.dropout_forward`.
      bn_params: one dict per hidden layer: ``{'mode': ...}`` with the running
        statistics added by batchnorm, ``{}`` for layernorm, none without
        normalization.
      normalization, use_batchnorm, use_dropout, reg, num_layers, dtype: as the course.

    Raises:
      TypeError: both spellings of one option given.
      ValueError: an unknown normalization, a keep probability outside ``(0, 1]``.
    """

    def __init__(
        self,
        hidden_dims,
        input_dim=3 * 32 * 32,
        num_classes=10,
        dropout_keep_ratio=None,
        normalization=None,
        reg=0.0,
        weight_scale=1e-2,
        dtype=np.float32,
        seed=None,
        *,
        dropout=None,
        use_batchnorm=None,
    ):
        keep, normalization = _resolve_dropout_and_normalization(
            dropout_keep_ratio, normalization, dropout, use_batchnorm
        )
        self.normalization = normalization
        self.use_batchnorm = normalization == "batchnorm"
        self.use_dropout = keep != 1
        self.reg = reg
        self.num_layers = 1 + len(hidden_dims)
        self.dtype = dtype
        self.params = {}

        dims = [input_dim, *hidden_dims, num_classes]
        for i in range(self.num_layers):
            self.params[f"W{i + 1}"] = weight_scale * np.random.randn(dims[i], dims[i + 1])  # noqa: NPY002
            self.params[f"b{i + 1}"] = np.zeros(dims[i + 1])
            if normalization is not None and i < self.num_layers - 1:
                self.params[f"gamma{i + 1}"] = np.ones(dims[i + 1])
                self.params[f"beta{i + 1}"] = np.zeros(dims[i + 1])

        self.dropout_param = {}
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": keep}
            if seed is not None:
                self.dropout_param["seed"] = seed

        self.bn_params = []
        if normalization == "batchnorm":
            self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]
        if normalization == "layernorm":
            self.bn_params = [{} for _ in range(self.num_layers - 1)]

        for k, v in self.params.items():
            self.params[k] = _writable(v, dtype)

    def loss(self, X, y=None):
        """Scores ``(N, C)`` if ``y`` is None (test mode: dropout off, batchnorm's
        running statistics), else ``(loss, grads)`` (train mode).

        Args:
          X: ``(N, d_1, ..., d_k)``, cast to ``dtype``.
          y: ``(N,)`` integer labels in ``[0, C)``, or None.

        Raises:
          ValueError: shapes that do not fit (as the compat layer functions).
        """
        X = np.asarray(X).astype(self.dtype)
        mode = "test" if y is None else "train"
        if self.use_dropout:
            self.dropout_param["mode"] = mode
        if self.normalization == "batchnorm":
            for bn_param in self.bn_params:
                bn_param["mode"] = mode

        p = self.params
        caches = []
        h = X
        for i in range(1, self.num_layers):
            h, fc_cache = L.affine_forward(h, p[f"W{i}"], p[f"b{i}"])
            norm_cache = None
            if self.normalization == "batchnorm":
                h, norm_cache = L.batchnorm_forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            elif self.normalization == "layernorm":
                h, norm_cache = L.layernorm_forward(h, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            h, relu_cache = L.relu_forward(h)
            dropout_cache = None
            if self.use_dropout:
                h, dropout_cache = L.dropout_forward(h, self.dropout_param)
            caches.append((fc_cache, norm_cache, relu_cache, dropout_cache))
        n = self.num_layers
        scores, out_cache = L.affine_forward(h, p[f"W{n}"], p[f"b{n}"])
        if mode == "test":
            return _writable(scores)

        loss, dscores = L.softmax_loss(scores, y)
        grads = {}
        dh, grads[f"W{n}"], grads[f"b{n}"] = L.affine_backward(dscores, out_cache)
        for i in range(n - 1, 0, -1):
            fc_cache, norm_cache, relu_cache, dropout_cache = caches[i - 1]
            if self.use_dropout:
                dh = L.dropout_backward(dh, dropout_cache)
            dh = L.relu_backward(dh, relu_cache)
            if self.normalization == "batchnorm":
                dh, grads[f"gamma{i}"], grads[f"beta{i}"] = L.batchnorm_backward(dh, norm_cache)
            elif self.normalization == "layernorm":
                dh, grads[f"gamma{i}"], grads[f"beta{i}"] = L.layernorm_backward(dh, norm_cache)
            dh, grads[f"W{i}"], grads[f"b{i}"] = L.affine_backward(dh, fc_cache)
        grads = _grads_like(self.params, grads)
        loss = _add_reg(self, loss, grads, [f"W{i}" for i in range(1, n + 1)])
        return loss, grads


class ThreeLayerConvNet:
    """The course's three-layer convolutional net, NCHW.

    ``conv - relu - 2x2 max pool - affine - relu - affine - softmax``; the
    convolution has stride 1 and ``(filter_size - 1) // 2`` zero padding
    (the spatial size is kept for an odd ``filter_size``), the pool stride 2.

    Args:
      input_dim: ``(C, H, W)`` of one image.
      num_filters: ``F``, filters of the convolution.
      filter_size: ``HH = WW``, the filters' height and width.
      hidden_dim: units of the hidden affine layer.
      num_classes: number of scores.
      weight_scale: standard deviation of the Gaussian initial weights.
      reg: L2 regularisation strength.
      dtype: the parameters' NumPy dtype (``np.float64`` for gradient checks).

    Attributes:
      params: ``W1 (F, C, HH, WW)``, ``b1 (F,)``, ``W2 (F * H' * W', hidden_dim)``
        with ``H' x W'`` the pooled size (``H // 2 x W // 2`` for an odd
        ``filter_size``), ``b2``, ``W3 (hidden_dim, num_classes)``, ``b3``.
    """

    def __init__(
        self,
        input_dim=(3, 32, 32),
        num_filters=32,
        filter_size=7,
        hidden_dim=100,
        num_classes=10,
        weight_scale=1e-3,
        reg=0.0,
        dtype=np.float32,
    ):
        self.params = {}
        self.reg = reg
        self.dtype = dtype
        C, H, W = input_dim
        pad = (filter_size - 1) // 2
        pooled = [1 + (1 + s + 2 * pad - filter_size - 2) // 2 for s in (H, W)]
        self.params["W1"] = weight_scale * np.random.randn(num_filters, C, filter_size, filter_size)  # noqa: NPY002
        self.params["b1"] = np.zeros(num_filters)
        self.params["W2"] = weight_scale * np.random.randn(num_filters * pooled[0] * pooled[1], hidden_dim)  # noqa: NPY002
        self.params["b2"] = np.zeros(hidden_dim)
        self.params["W3"] = weight_scale * np.random.randn(hidden_dim, num_classes)  # noqa: NPY002
        self.params["b3"] = np.zeros(num_classes)
        for k, v in self.params.items():
            self.params[k] = _writable(v, dtype)

    def loss(self, X, y=None):
        """Scores ``(N, num_classes)`` if ``y`` is None, else ``(loss, grads)``.

        Args:
          X: ``(N, C, H, W)`` floats.
          y: ``(N,)`` integer labels, or None.

        Raises:
          ValueError: shapes that do not fit (as the compat layer functions).
        """
        W1, b1 = self.params["W1"], self.params["b1"]
        W2, b2 = self.params["W2"], self.params["b2"]
        W3, b3 = self.params["W3"], self.params["b3"]
        filter_size = W1.shape[2]
        conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
        pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}

        h1, cache1 = L.conv_relu_pool_forward(X, W1, b1, conv_param, pool_param)
        h2, cache2 = L.affine_relu_forward(h1, W2, b2)
        scores, cache3 = L.affine_forward(h2, W3, b3)
        if y is None:
            return _writable(scores)

        loss, dscores = L.softmax_loss(scores, y)
        grads = {}
        dh2, grads["W3"], grads["b3"] = L.affine_backward(dscores, cache3)
        dh1, grads["W2"], grads["b2"] = L.affine_relu_backward(dh2, cache2)
        _, grads["W1"], grads["b1"] = L.conv_relu_pool_backward(dh1, cache1)
        grads = _grads_like(self.params, grads)
        loss = _add_reg(self, loss, grads, ("W1", "W2", "W3"))
        return loss, grads


class CaptioningRNN:
    """The course's image-captioning model: a vanilla RNN or an LSTM over word vectors, started
    from a projection of the image's features.

    ``h0 = features W_proj + b_proj``; the words ``captions[:, :-1]`` are embedded
    (``W_embed``), run through the recurrent layer from ``h0``, and each hidden
    state is scored over the vocabulary (``W_vocab``, ``b_vocab``); the loss is
    the temporal softmax loss against ``captions[:, 1:]``, the ``<NULL>`` words
    masked out, summed over time and divided by ``N`` (as the course). No
    regularisation.

    Args:
      word_to_idx: dict word -> index in ``[0, V)``, ``V = len(word_to_idx)``; it must
        hold ``'<NULL>'`` (the padding, masked in the loss); :meth:`sample` needs
        ``'<START>'`` too (``'<END>'`` is looked up but not used, as the course).
      input_dim: ``D``, features per image.
      wordvec_dim: ``W``, the word vectors' size.
      hidden_dim: ``H``, the recurrent layer's hidden size.
      cell_type: ``'rnn'`` (``tanh`` cell) or ``'lstm'`` (gate order i, f, o, g).
      dtype: the parameters' NumPy dtype (``np.float64``, with JAX's x64 mode on,
        for numeric gradient checks).

    Attributes:
      params: writable NumPy arrays of ``dtype``, drawn with ``np.random.randn``
        in the course's order and scale: ``W_embed (V, W)`` / 100,
        ``W_proj (D, H)`` / sqrt(D), ``b_proj (H,)`` zeros, ``Wx (W, kH)`` /
        sqrt(W), ``Wh (H, kH)`` / sqrt(H), ``b (kH,)`` zeros (``k`` = 1 for
        ``'rnn'``, 4 for ``'lstm'``), ``W_vocab (H, V)`` / sqrt(H),
        ``b_vocab (V,)`` zeros.
      cell_type, dtype, word_to_idx, idx_to_word (dict index -> word): as given.

    Raises:
      ValueError: an unknown ``cell_type``; a ``word_to_idx`` without ``'<NULL>'``.
    """

    def __init__(self, word_to_idx, input_dim=512, wordvec_dim=128, hidden_dim=128, cell_type="rnn", dtype=np.float32):
        if cell_type not in {"rnn", "lstm"}:
            raise ValueError(f'CaptioningRNN: Invalid cell_type "{cell_type}" (expected "rnn" or "lstm")')
        if "<NULL>" not in word_to_idx:
            raise ValueError(f"CaptioningRNN: word_to_idx must hold '<NULL>' (got {len(word_to_idx)} words)")
        self.cell_type = cell_type
        self.dtype = dtype
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self.params = {}

        vocab_size = len(word_to_idx)
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>", None)
        self._end = word_to_idx.get("<END>", None)

        p = self.params
        p["W_embed"] = np.random.randn(vocab_size, wordvec_dim) / 100  # noqa: NPY002 (the course's draws)
        p["W_proj"] = np.random.randn(input_dim, hidden_dim) / np.sqrt(input_dim)  # noqa: NPY002
        p["b_proj"] = np.zeros(hidden_dim)
        dim_mul = {"lstm": 4, "rnn": 1}[cell_type]
        p["Wx"] = np.random.randn(wordvec_dim, dim_mul * hidden_dim) / np.sqrt(wordvec_dim)  # noqa: NPY002
        p["Wh"] = np.random.randn(hidden_dim, dim_mul * hidden_dim) / np.sqrt(hidden_dim)  # noqa: NPY002
        p["b"] = np.zeros(dim_mul * hidden_dim)
        p["W_vocab"] = np.random.randn(hidden_dim, vocab_size) / np.sqrt(hidden_dim)  # noqa: NPY002
        p["b_vocab"] = np.zeros(vocab_size)
        for k, v in p.items():
            p[k] = _writable(v, dtype)

    def loss(self, features, captions):
        """The training loss and its gradients: ``(loss, grads)``.

        Args:
          features: ``(N, D)`` image features (cast to ``dtype``).
          captions: ``(N, T)`` integer word indices in ``[0, V)``, ``T >= 2``; the
            model reads ``captions[:, :-1]`` and predicts ``captions[:, 1:]``,
            ignoring the targets equal to ``<NULL>``.

        Returns:
          ``loss``: a NumPy scalar, the masked cross-entropy summed over the
          ``T - 1`` steps and divided by ``N``; ``grads``: a dict of NumPy
          arrays under the names of ``params``, each of its parameter's shape
          and dtype.

        Raises:
          ValueError: ``captions`` not ``(N, T)`` with ``T >= 2``, indices outside
            ``[0, V)``, or shapes that do not fit the parameters (as the compat
            layer functions).
        """
        features = np.asarray(features).astype(self.dtype)
        captions = np.asarray(captions)
        if captions.ndim != 2 or captions.shape[1] < 2:
            raise ValueError(f"CaptioningRNN.loss: captions must be (N, T) with T >= 2, got shape {captions.shape}")
        captions_in = captions[:, :-1]
        captions_out = captions[:, 1:]
        mask = captions_out != self._null

        p = self.params
        h0, cache_proj = L.affine_forward(features, p["W_proj"], p["b_proj"])
        x, cache_embed = L.word_embedding_forward(captions_in, p["W_embed"])
        if self.cell_type == "rnn":
            h, cache_rnn = L.rnn_forward(x, h0, p["Wx"], p["Wh"], p["b"])
        else:
            h, cache_rnn = L.lstm_forward(x, h0, p["Wx"], p["Wh"], p["b"])
        scores, cache_vocab = L.temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])
        loss, dscores = L.temporal_softmax_loss(scores, captions_out, mask)

        grads = {}
        dh, grads["W_vocab"], grads["b_vocab"] = L.temporal_affine_backward(dscores, cache_vocab)
        backward = L.rnn_backward if self.cell_type == "rnn" else L.lstm_backward
        dx, dh0, grads["Wx"], grads["Wh"], grads["b"] = backward(dh, cache_rnn)
        grads["W_embed"] = L.word_embedding_backward(dx, cache_embed)
        _, grads["W_proj"], grads["b_proj"] = L.affine_backward(dh0, cache_proj)
        return loss, _grads_like(self.params, grads)

    def sample(self, features, max_length=30):
        """Greedy captions: from ``h0 = features W_proj + b_proj`` and the word ``<START>``,
        each step feeds the previous step's most likely word (argmax of the scores).

        Args:
          features: ``(N, D)`` image features.
          max_length: ``T``, the number of words generated.

        Returns:
          int32 ``(N, T)``: the words after ``<START>`` (which is not included),
          as the course: the steps after an ``<END>`` go on sampling, so read a
          caption up to its first ``<END>`` (:func:`jaxlayers.data.decode_captions`
          does).

        Raises:
          ValueError: ``word_to_idx`` has no ``'<START>'``; shapes that do not fit.
        """
        if self._start is None:
            raise ValueError("CaptioningRNN.sample: word_to_idx has no '<START>' word to start from")
        features = np.asarray(features).astype(self.dtype)
        N = features.shape[0]
        captions = self._null * np.ones((N, max_length), dtype=np.int32)

        p = self.params
        h, _ = L.affine_forward(features, p["W_proj"], p["b_proj"])
        c = np.zeros_like(h)
        word = np.full(N, self._start, dtype=np.int32)
        for t in range(max_length):
            x = np.asarray(p["W_embed"])[word]
            if self.cell_type == "rnn":
                h, _ = L.rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])
            else:
                h, c, _ = L.lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])
            scores, _ = L.affine_forward(h, p["W_vocab"], p["b_vocab"])
            word = np.argmax(scores, axis=1).astype(np.int32)
            captions[:, t] = word
        return captions
