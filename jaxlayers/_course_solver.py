"""The course's training drivers (its ``solver.py`` and ``captioning_solver.py``).

Re-exported by :mod:`jaxlayers.compat`. They drive any model with the
course's interface -- a ``params`` dict of NumPy arrays and ``loss(X, y)``
returning ``(loss, grads)`` -- with the update rules of
:mod:`jaxlayers.compat` (``sgd``, ``sgd_momentum``, ``rmsprop``, ``adam``),
one parameter at a time, in NumPy, drawing minibatches and accuracy samples
from NumPy's global generator (``np.random.seed`` makes a run repeatable),
as the course does.
"""

from __future__ import annotations

import pickle

import numpy as np

from jaxlayers import _course_optim as optim

__all__ = ["CaptioningSolver", "Solver", "sample_coco_minibatch"]


def _update_rule(cls: str, rule):
    """A rule name of :mod:`jaxlayers._course_optim`, or a callable ``rule(w, dw, config) -> (next_w, config)``."""
    if callable(rule):
        return rule
    if not isinstance(rule, str) or rule not in optim.__all__:
        raise ValueError(
            f'{cls}: Invalid update_rule "{rule}" (expected one of {", ".join(optim.__all__)} or a callable)'
        )
    return getattr(optim, rule)


def _unrecognized(cls: str, kwargs: dict) -> None:
    if kwargs:
        extra = ", ".join(f'"{k}"' for k in kwargs)
        raise ValueError(f"{cls}: Unrecognized arguments {extra}")


class _SolverBase:
    def _reset(self):
        """Set up the book-keeping variables for an optimization; don't call this manually."""
        self.epoch = 0
        self.best_val_acc = 0
        self.best_params = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        # A deep copy of optim_config for each parameter.
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}

    def _update(self, grads):
        for p, w in self.model.params.items():
            next_w, next_config = self.update_rule(w, grads[p], self.optim_configs[p])
            self.model.params[p] = next_w
            self.optim_configs[p] = next_config

    def _decay_learning_rate(self):
        for config in self.optim_configs.values():
            if "learning_rate" in config:  # a callable update_rule may not use one
                config["learning_rate"] *= self.lr_decay


class Solver(_SolverBase):
    """The course's ``Solver``: minibatch training of a classification model.

    Usage (the course's)::

        solver = Solver(model, data, update_rule='sgd', optim_config={'learning_rate': 1e-3},
                        lr_decay=0.95, num_epochs=10, batch_size=100, print_every=100)
        solver.train()
        model.params  # the parameters that did best on the validation set

    Args:
      model: an object with ``params`` (a dict name -> NumPy array) and
        ``loss(X, y=None)``: scores ``(N, C)`` for ``y=None``, else ``(loss,
        grads)`` with ``grads`` under the names of ``params``.
      data: a dict with ``X_train (N_train, ...)``, ``y_train (N_train,)``,
        ``X_val``, ``y_val`` (NumPy arrays; ``y`` integer labels).
      update_rule: ``'sgd'`` (default), ``'sgd_momentum'``, ``'rmsprop'``,
        ``'adam'``, or a callable ``rule(w, dw, config) -> (next_w, config)``.
      optim_config: hyperparameters given to the rule; each parameter gets its
        own copy (the rule keeps its state there).
      lr_decay: ``learning_rate`` is multiplied by this after every epoch.
      batch_size: examples per gradient step (drawn with replacement, as the course).
      num_epochs: epochs to train; an epoch is ``max(N_train // batch_size, 1)`` steps.
      num_train_samples, num_val_samples: how many examples the accuracy
        after each epoch is measured on (None: all of them).
      checkpoint_name: when given, a pickle ``{checkpoint_name}_epoch_{epoch}.pkl``
        of the model and the histories is written after each epoch.
      print_every: print the training loss every this many steps.
      verbose: False prints nothing.

    Attributes:
      loss_history: the loss of every step.
      train_acc_history, val_acc_history: the accuracies measured at the
        first step, after every epoch and at the last step.
      best_val_acc, best_params: the best validation accuracy and a copy of
        the parameters that had it; :meth:`train` ends with
        ``model.params = best_params``.
      epoch, optim_configs: the epoch count and each parameter's rule config.

    Raises:
      ValueError: an unknown ``update_rule`` or keyword argument (as the course).
    """

    def __init__(self, model, data, **kwargs):
        self.model = model
        self.X_train = data["X_train"]
        self.y_train = data["y_train"]
        self.X_val = data["X_val"]
        self.y_val = data["y_val"]

        self.update_rule = kwargs.pop("update_rule", "sgd")
        self.optim_config = kwargs.pop("optim_config", {})
        self.lr_decay = kwargs.pop("lr_decay", 1.0)
        self.batch_size = kwargs.pop("batch_size", 100)
        self.num_epochs = kwargs.pop("num_epochs", 10)
        self.num_train_samples = kwargs.pop("num_train_samples", 1000)
        self.num_val_samples = kwargs.pop("num_val_samples", None)
        self.checkpoint_name = kwargs.pop("checkpoint_name", None)
        self.print_every = kwargs.pop("print_every", 10)
        self.verbose = kwargs.pop("verbose", True)
        _unrecognized("Solver", kwargs)
        self.update_rule = _update_rule("Solver", self.update_rule)
        self._reset()

    def _step(self):
        """One gradient update on a minibatch drawn with replacement; called by :meth:`train`."""
        num_train = self.X_train.shape[0]
        batch_mask = np.random.choice(num_train, self.batch_size)  # noqa: NPY002 (the course's draw)
        X_batch = self.X_train[batch_mask]
        y_batch = self.y_train[batch_mask]
        loss, grads = self.model.loss(X_batch, y_batch)
        self.loss_history.append(loss)
        self._update(grads)

    def _save_checkpoint(self):
        if self.checkpoint_name is None:
            return
        checkpoint = {
            "model": self.model,
            "update_rule": self.update_rule,
            "lr_decay": self.lr_decay,
            "optim_config": self.optim_config,
            "batch_size": self.batch_size,
            "num_train_samples": self.num_train_samples,
            "num_val_samples": self.num_val_samples,
            "epoch": self.epoch,
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
        }
        filename = f"{self.checkpoint_name}_epoch_{self.epoch}.pkl"
        if self.verbose:
            print(f'Saving checkpoint to "{filename}"')
        with open(filename, "wb") as f:
            pickle.dump(checkpoint, f)

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """The model's accuracy on ``(X, y)``, in ``[0, 1]``.

        Args:
          X: ``(N, ...)`` inputs; y: ``(N,)`` labels.
          num_samples: when given and smaller than ``N``, the accuracy on that
            many examples drawn with replacement.
          batch_size: examples per call to ``model.loss``.

        Returns:
          The fraction of examples whose highest score is their label (a NumPy float).
        """
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            mask = np.random.choice(N, num_samples)  # noqa: NPY002 (the course's draw)
            N = num_samples
            X = X[mask]
            y = y[mask]
        num_batches = -(-N // batch_size)
        y_pred = []
        for i in range(num_batches):
            scores = self.model.loss(X[i * batch_size : (i + 1) * batch_size])
            y_pred.append(np.argmax(scores, axis=1))
        y_pred = np.hstack(y_pred) if y_pred else np.zeros(0, dtype=np.int64)
        return np.mean(y_pred == y)

    def train(self):
        """Run the optimization; ends with ``model.params = best_params``."""
        num_train = self.X_train.shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch

        for t in range(num_iterations):
            self._step()
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {self.loss_history[-1]:f}")

            epoch_end = (t + 1) % iterations_per_epoch == 0
            if epoch_end:
                self.epoch += 1
                self._decay_learning_rate()

            first_it = t == 0
            last_it = t == num_iterations - 1
            if first_it or last_it or epoch_end:
                train_acc = self.check_accuracy(self.X_train, self.y_train, num_samples=self.num_train_samples)
                val_acc = self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)
                self.train_acc_history.append(train_acc)
                self.val_acc_history.append(val_acc)
                self._save_checkpoint()
                if self.verbose:
                    print(f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; val_acc: {val_acc:f}")
                if val_acc > self.best_val_acc:
                    self.best_val_acc = val_acc
                    self.best_params = {k: v.copy() for k, v in self.model.params.items()}

        # At the end of training swap the best params into the model.
        self.model.params = self.best_params


def sample_coco_minibatch(data, batch_size=100, split="train"):
    """The course's ``sample_coco_minibatch``: ``(captions, image_features, urls)`` for a random minibatch.

    Draws ``batch_size`` captions of ``data[f'{split}_captions']`` with
    replacement (NumPy's global generator), their images'
    ``data[f'{split}_features'][data[f'{split}_image_idxs'][mask]]`` and, when the
    data has them, ``data[f'{split}_urls']`` of those images (else None).
    """
    split_size = data[f"{split}_captions"].shape[0]
    mask = np.random.choice(split_size, batch_size)  # noqa: NPY002 (the course's draw)
    captions = data[f"{split}_captions"][mask]
    image_idxs = data[f"{split}_image_idxs"][mask]
    image_features = data[f"{split}_features"][image_idxs]
    urls = data[f"{split}_urls"][image_idxs] if f"{split}_urls" in data else None
    return captions, image_features, urls


class CaptioningSolver(_SolverBase):
    """The course's ``CaptioningSolver``: minibatch training of an image-captioning model.

    Args:
      model: an object with ``params`` (a dict name -> NumPy array) and
        ``loss(features, captions) -> (loss, grads)``, ``features (N, D)``,
        ``captions (N, T)`` integer word indices.
      data: the course's captioning dict: ``train_captions (N_captions, T)``
        ints, ``train_image_idxs (N_captions,)`` (the image of each caption),
        ``train_features (N_images, D)``, optional ``train_urls``; and
        ``idx_to_word``, ``word_to_idx`` and the ``val_*`` arrays, which the
        solver does not read.
      update_rule: as :class:`Solver`; likewise ``optim_config``, ``lr_decay``,
        ``batch_size``, ``num_epochs``, ``print_every`` and ``verbose``. An
        epoch is ``max(N_captions // batch_size, 1)`` steps.

    Attributes:
      loss_history: the loss of every step; ``epoch``, ``optim_configs`` as
        :class:`Solver`. ``best_params``, ``best_val_acc``, ``train_acc_history``
        and ``val_acc_history`` stay empty / 0, as the course's (it measures no
        accuracy while training).

    Raises:
      ValueError: an unknown ``update_rule`` or keyword argument.
    """

    def __init__(self, model, data, **kwargs):
        self.model = model
        self.data = data
        self.update_rule = kwargs.pop("update_rule", "sgd")
        self.optim_config = kwargs.pop("optim_config", {})
        self.lr_decay = kwargs.pop("lr_decay", 1.0)
        self.batch_size = kwargs.pop("batch_size", 100)
        self.num_epochs = kwargs.pop("num_epochs", 10)
        self.print_every = kwargs.pop("print_every", 10)
        self.verbose = kwargs.pop("verbose", True)
        _unrecognized("CaptioningSolver", kwargs)
        self.update_rule = _update_rule("CaptioningSolver", self.update_rule)
        self._reset()

    def _step(self):
        """One gradient update on a minibatch of captions; called by :meth:`train`."""
        captions, features, _urls = sample_coco_minibatch(self.data, batch_size=self.batch_size, split="train")
        loss, grads = self.model.loss(features, captions)
        self.loss_history.append(loss)
        self._update(grads)

    def train(self):
        """Run the optimization (``num_epochs`` epochs of minibatch steps)."""
        num_train = self.data["train_captions"].shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch

        for t in range(num_iterations):
            self._step()
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {self.loss_history[-1]:f}")
            if (t + 1) % iterations_per_epoch == 0:
                self.epoch += 1
                self._decay_learning_rate()
