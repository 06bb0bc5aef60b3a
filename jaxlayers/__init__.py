"""jaxlayers: hand-differentiated neural-network layers for JAX.

Every op is a pure, jit-compiled function whose backward pass is the
hand-derived one, registered with ``jax.custom_vjp`` and checked against
``jax.grad`` of a plain-``jnp`` reference and float64 finite differences.
The NumPy original's NumPy-style API lives in :mod:`jaxlayers.compat`.
"""

from jaxlayers import compat, data, gradcheck, model, nn, parallel, sweep, train
from jaxlayers.captioning import CaptioningRNN, CaptioningTransformer
from jaxlayers.layers import (
    BatchNormState,
    affine,
    batchnorm,
    batchnorm_state,
    conv2d,
    dot_product_attention,
    dropout,
    groupnorm,
    gru,
    gru_step,
    layernorm,
    lstm,
    lstm_step,
    max_pool2d,
    multi_head_attention,
    relu,
    rnn,
    rnn_step,
    spatial_batchnorm,
    temporal_affine,
    word_embedding,
)
from jaxlayers.losses import softmax_loss, svm_loss, temporal_softmax_loss
from jaxlayers.model import Model, register_model
from jaxlayers.models import ConvNet, FullyConnectedNet, ThreeLayerConvNet
from jaxlayers.training.run import Run, load_run

__version__ = "0.1.0"

__all__ = [
    "BatchNormState",
    "ConvNet",
    "FullyConnectedNet",
    "ThreeLayerConvNet",
    "Model",
    "Run",
    "affine",
    "batchnorm",
    "batchnorm_state",
    "compat",
    "data",
    "dropout",
    "gradcheck",
    "load_run",
    "model",
    "multi_head_attention",
    "nn",
    "parallel",
    "register_model",
    "relu",
    "softmax_loss",
    "svm_loss",
    "sweep",
    "train",
    # issue 11, convolutional networks
    "conv2d",
    "max_pool2d",
    # normalisation layers (issue 11)
    "groupnorm",
    "layernorm",
    "spatial_batchnorm",
    # sequence models (issue 18)
    "temporal_affine",
    "temporal_softmax_loss",
    "word_embedding",
    # recurrent layers (issue 18)
    "gru",
    "gru_step",
    "lstm",
    "lstm_step",
    "rnn",
    "rnn_step",
    # the captioning models (issues 18, 19)
    "CaptioningRNN",
    "CaptioningTransformer",
    # attention (issue 19)
    "dot_product_attention",
]
