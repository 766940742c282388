"""Embedding networks (a registry of them) and the conversion from stored images to network inputs."""

from .inputs import embed_images, host_to_device, ieee_float32, images_to_input, input_shape_of
from .networks import (
    MNIST_SHAPE,
    NETWORKS,
    EmbeddingNet,
    InputShape,
    NetworkSpec,
    build_network,
    conv3_net,
    count_flops,
    count_parameters,
    describe_networks,
    reference_net,
    wide_net,
)

__all__ = [
    "MNIST_SHAPE", "NETWORKS", "EmbeddingNet", "InputShape", "NetworkSpec", "build_network", "conv3_net",
    "count_flops", "count_parameters", "describe_networks", "embed_images", "host_to_device", "ieee_float32",
    "images_to_input", "input_shape_of",
    "reference_net", "wide_net",
]
