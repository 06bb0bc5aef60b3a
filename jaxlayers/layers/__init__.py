"""The NumPy original's layers, one module each: reference, fwd, bwd, and the public op."""

from jaxlayers.layers.affine import affine, affine_bwd, affine_fwd, affine_reference
from jaxlayers.layers.batchnorm import (
    BatchNormState,
    batchnorm,
    batchnorm_bwd,
    batchnorm_fwd,
    batchnorm_reference,
    batchnorm_state,
)
from jaxlayers.layers.conv import conv2d, conv2d_bwd, conv2d_fwd, conv2d_reference
from jaxlayers.layers.dropout import dropout, dropout_bwd, dropout_fwd, dropout_reference
from jaxlayers.layers.groupnorm import groupnorm, groupnorm_bwd, groupnorm_fwd, groupnorm_reference
from jaxlayers.layers.layernorm import layernorm, layernorm_bwd, layernorm_fwd, layernorm_reference
from jaxlayers.layers.pool import max_pool2d, max_pool2d_bwd, max_pool2d_fwd, max_pool2d_reference
from jaxlayers.layers.relu import relu, relu_bwd, relu_fwd, relu_reference
from jaxlayers.layers.spatial_batchnorm import (
    spatial_batchnorm,
    spatial_batchnorm_bwd,
    spatial_batchnorm_fwd,
    spatial_batchnorm_reference,
)

__all__ = [
    "BatchNormState",
    "affine",
    "affine_bwd",
    "affine_fwd",
    "affine_reference",
    "batchnorm",
    "batchnorm_bwd",
    "batchnorm_fwd",
    "batchnorm_reference",
    "batchnorm_state",
    "dropout",
    "dropout_bwd",
    "dropout_fwd",
    "dropout_reference",
    "relu",
    "relu_bwd",
    "relu_fwd",
    "relu_reference",
    # issue 11, convolutional networks
    "conv2d",
    "conv2d_bwd",
    "conv2d_fwd",
    "conv2d_reference",
    "max_pool2d",
    "max_pool2d_bwd",
    "max_pool2d_fwd",
    "max_pool2d_reference",
    # normalisation layers (issue 11)
    "groupnorm",
    "groupnorm_bwd",
    "groupnorm_fwd",
    "groupnorm_reference",
    "layernorm",
    "layernorm_bwd",
    "layernorm_fwd",
    "layernorm_reference",
    "spatial_batchnorm",
    "spatial_batchnorm_bwd",
    "spatial_batchnorm_fwd",
    "spatial_batchnorm_reference",
]
