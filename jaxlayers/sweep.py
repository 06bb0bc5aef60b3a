"""Many models trained at once: :func:`fit_many` (one compiled, vmapped program per epoch) and :func:`grid`.

``fit_many`` is the training loop of :func:`jaxlayers.train.fit` run with the
``ManyModels`` strategy (:mod:`jaxlayers.training.strategies`); see its
docstring for how each swept setting reaches the program. Each model's result
equals a separate ``fit`` with its settings up to float32 rounding: a batched
matmul may sum in another order than a single one (about ``1e-7`` after a few
epochs in the tests; ``1e-16`` in float64). Two cases look worse after many
steps, for any two summation orders, ``fit`` and ``fit_many`` included:

* Training that amplifies rounding -- batchnorm after weights of scale
  ``1e-4``, whose first steps are huge next to the weights -- drifts apart in
  float32 after tens of steps.
* A bias just before batchnorm has a zero gradient in exact arithmetic, so
  its gradient is rounding noise, which ``adam`` and ``rmsprop`` normalise
  into steps of the size of the learning rate: that bias (and the running
  mean that follows it) differs by ``O(learning_rate)``. Under ``sgd`` and
  ``sgd_momentum`` the noise stays noise-sized.
"""

from __future__ import annotations

from jaxlayers.training.loop import SWEPT, fit_many, grid

__all__ = ["SWEPT", "fit_many", "grid"]
