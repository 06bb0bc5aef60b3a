"""The NumPy original's API, unchanged: its layer functions and its model classes and drivers.

Code written for the NumPy original (the course's layer library that jaxlayers re-implements) runs
with its import lines changed to ``from jaxlayers.compat import *``:

* the layer functions, ``forward -> (out, cache)`` and ``backward(dout, cache) -> grads``, on the
  very ``<op>_fwd`` / ``<op>_bwd`` rules behind the jitted ops (the ``cache`` *is* the
  ``custom_vjp`` residuals): affine, ReLU, batch norm, dropout, the losses, the convolutional
  family, and the recurrent layers (``rnn_*``, ``lstm_*``, ``word_embedding_*``, ``temporal_*``);
* the course's model classes (``TwoLayerNet``, ``FullyConnectedNet``, ``ThreeLayerConvNet``,
  ``CaptioningRNN``) with a mutable ``params`` dict of NumPy arrays and ``loss``, built on those
  functions;
* its drivers: ``Solver``, ``CaptioningSolver`` and the update rules ``sgd``, ``sgd_momentum``,
  ``rmsprop``, ``adam`` (also as the namespace ``optim``).

The conventions and the deliberate differences are in the layer functions' module docstring
(:mod:`jaxlayers._compat_layers`, re-exported here) and in each function's docstring.
"""

from __future__ import annotations

from jaxlayers import _compat_layers
from jaxlayers import _course_optim as optim
from jaxlayers._compat_layers import *  # noqa: F403  (the layer functions: their __all__)
from jaxlayers._course_models import CaptioningRNN, FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet
from jaxlayers._course_optim import adam, rmsprop, sgd, sgd_momentum
from jaxlayers._course_solver import CaptioningSolver, Solver, sample_coco_minibatch

__all__ = [
    *_compat_layers.__all__,
    # the course's model classes, Solver and update rules
    "TwoLayerNet",
    "FullyConnectedNet",
    "ThreeLayerConvNet",
    "CaptioningRNN",
    "Solver",
    "CaptioningSolver",
    "sample_coco_minibatch",
    "optim",
    "sgd",
    "sgd_momentum",
    "rmsprop",
    "adam",
]
