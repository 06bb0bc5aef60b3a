"""jaxlayers: hand-differentiated neural-network layers for JAX.

Every op is a pure, jit-compiled function whose backward pass is the
hand-derived one, registered with ``jax.custom_vjp`` and checked against
``jax.grad`` of a plain-``jnp`` reference and float64 finite differences.
The seed's NumPy-style API lives in :mod:`jaxlayers.compat`.
"""

# train imports jaxlayers.sweep (fit_many) at its end, which makes jaxlayers.sweep
# available here; importing sweep before train would be circular.
from jaxlayers import compat, data, gradcheck, parallel, train
from jaxlayers.layers import (
    BatchNormState,
    affine,
    batchnorm,
    batchnorm_state,
    dropout,
    groupnorm,
    layernorm,
    relu,
    spatial_batchnorm,
)
from jaxlayers.losses import softmax_loss, svm_loss
from jaxlayers.models import FullyConnectedNet

__version__ = "0.1.0"

__all__ = [
    "BatchNormState",
    "FullyConnectedNet",
    "affine",
    "batchnorm",
    "batchnorm_state",
    "compat",
    "data",
    "dropout",
    "gradcheck",
    "parallel",
    "relu",
    "softmax_loss",
    "svm_loss",
    "sweep",
    "train",
    # normalisation layers (issue 11)
    "groupnorm",
    "layernorm",
    "spatial_batchnorm",
]
