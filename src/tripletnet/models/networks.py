"""Embedding networks: an image of (channels, height, width) in, an L2-normalised embedding out.

Every network takes float images in [0, 1] of shape (B, C, H, W) and normalises them itself
(mean 0.5, std 0.5, as the reference does, unless :meth:`EmbeddingNet.set_input_normalization`
gives the training data's per-channel mean and std), so training, validation, evaluation and an
exported model all see the same inputs. Linear heads are sized from the input shape; for MNIST's
(1, 28, 28) the networks are layer for layer (and, from the same seed, weight for weight) the
ones tripletnet always built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError

InputShape = tuple[int, int, int]
"""(channels, height, width) of the images a network takes."""

MNIST_SHAPE: InputShape = (1, 28, 28)


class EmbeddingNet(nn.Module):
    """A convolutional trunk followed by a linear projection and L2 normalisation.

    Args:
        trunk: maps (B, C, H, W) images to features (flattened before the head).
        trunk_features: the number of features per image after flattening.
        embedding_dim: the embedding size.
        input_shape: the (channels, height, width) the network was built for.
    """

    def __init__(self, trunk: nn.Module, trunk_features: int, embedding_dim: int, input_shape: InputShape = MNIST_SHAPE) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk_features, embedding_dim)
        self.embedding_dim = embedding_dim
        self.input_shape = tuple(input_shape)
        # Per-channel (1, C, 1, 1) mean and std; None: 0.5 and 0.5. Not persistent: the state_dict
        # keys stay those of every earlier checkpoint; the checkpoint records the values beside it.
        self.register_buffer("input_mean", None, persistent=False)
        self.register_buffer("input_std", None, persistent=False)
        # Set by add_projection_head: used by the training loss only, never part of the embedding.
        self.projection: nn.Module | None = None

    def add_projection_head(self, projection_dim: int) -> None:
        """Train through a projection head that inference drops (as in SimCLR).

        The loss then sees ``normalize(linear(relu(h)))`` where ``h`` is the pre-normalisation
        embedding; the embedding itself stays ``normalize(h)``. Features before such a head keep
        more of what the loss does not need, which is what classes unseen in training need.

        Args:
            projection_dim: the size of the projected vectors the loss compares.
        """
        if projection_dim <= 0:
            raise ParameterError("projection_dim", f"must be positive, got {projection_dim}")
        device = next(self.parameters()).device
        self.projection = nn.Sequential(nn.ReLU(), nn.Linear(self.embedding_dim, projection_dim)).to(device)

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise inputs by these per-channel values (the training data's) instead of 0.5 and 0.5.

        Args:
            mean: one value per input channel, on the [0, 1] scale.
            std: one value per channel; a zero std (a constant channel) counts as 1.
        """
        channels = self.input_shape[0]
        if len(mean) != channels or len(std) != channels:
            raise ParameterError(
                "mean", f"and std need {channels} values (one per channel), got {len(mean)} and {len(std)}", related=("std",)
            )
        device = next(self.parameters()).device
        self.input_mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.input_std = torch.tensor([s if s > 0 else 1.0 for s in std], dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) per channel that the network normalises its inputs with."""
        if self.input_mean is None or self.input_std is None:
            return (0.5,) * self.input_shape[0], (0.5,) * self.input_shape[0]
        return tuple(self.input_mean.flatten().tolist()), tuple(self.input_std.flatten().tolist())

    def forward(self, images: torch.Tensor, project: bool = False) -> torch.Tensor:
        """L2-normalised embeddings of float images in [0, 1], (B, C, H, W).

        With ``project`` (training only) and a projection head, the normalised projections the
        loss compares instead.
        """
        if self.input_mean is None or self.input_std is None:
            x = (images - 0.5) / 0.5  # scalars: MNIST runs stay bit for bit what they always were
        else:
            x = (images - self.input_mean) / self.input_std
        x = self.head(self.trunk(x).flatten(1))
        if project and self.projection is not None:
            x = self.projection(x)
        return F.normalize(x, p=2.0, dim=1)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _conv_pool_block(c_in: int, c_out: int) -> list[nn.Module]:
    """conv3x3+BN, 2x2 max-pool, then ReLU: max-pooling before the ReLU gives the same outputs and
    the same gradients as after it (both are monotone; a window's maximum is negative exactly when
    all of it is), with the ReLU and its backward on a quarter of the pixels: on a CPU the 28x28
    ReLU costs as much as a convolution. The layers with weights keep their indices, so the
    state_dict is the conv-BN-ReLU-pool block's."""
    conv, norm, relu = _conv_block(c_in, c_out)
    return [conv, norm, nn.MaxPool2d(2), relu]


def _conv_pool_norm_block(c_in: int, c_out: int) -> list[nn.Module]:
    """conv3x3, 2x2 max-pool, then BN and ReLU: not the same function as normalising first (the
    statistics are the pooled map's, and a negative BN scale would have wanted the minimum), but
    BatchNorm and its backward, on a CPU the costliest kernels after the convolutions, run on a
    quarter of the pixels."""
    conv, norm, relu = _conv_block(c_in, c_out)
    return [conv, nn.MaxPool2d(2), norm, relu]


def _pooled_area(input_shape: InputShape, poolings: int) -> int:
    """Height x width after ``poolings`` 2x2 max-pools (each floors odd sizes)."""
    _, height, width = input_shape
    if min(height, width) >> poolings < 1:
        raise ParameterError(
            "input_shape", f"must be at least {1 << poolings} pixels high and wide for this network, got {height}x{width}"
        )
    return (height >> poolings) * (width >> poolings)


def reference_net(embedding_dim: int = 64, input_shape: InputShape = MNIST_SHAPE) -> EmbeddingNet:
    """The reference project's network: two conv3x3+BN+ReLU+maxpool blocks, avg-pool 7x7, linear."""
    _pooled_area(input_shape, 2)
    _, height, width = input_shape
    # At 28x28 the pooled map is already 7x7: the adaptive pool would copy it forward and back.
    to_7x7 = nn.Identity() if (height >> 2, width >> 2) == (7, 7) else nn.AdaptiveAvgPool2d((7, 7))
    trunk = nn.Sequential(*_conv_pool_block(input_shape[0], 32), *_conv_pool_block(32, 64), to_7x7)
    return EmbeddingNet(trunk, 64 * 7 * 7, embedding_dim, input_shape)


def conv3_net(embedding_dim: int = 64, input_shape: InputShape = MNIST_SHAPE) -> EmbeddingNet:
    """Three conv3x3+BN+ReLU+maxpool blocks (32, 64, 128 channels) and a linear head: twice the
    reference's FLOPs, a 3x3x128 map (at 28x28) with a receptive field that covers the whole digit."""
    return _three_block_net(_conv_pool_block, embedding_dim, input_shape)


def conv3p_net(embedding_dim: int = 64, input_shape: InputShape = MNIST_SHAPE) -> EmbeddingNet:
    """conv3 with every block pooling before it normalises: the same convolutions and FLOPs, its
    BatchNorm on a quarter of the pixels; a training step a third shorter on a 2-core CPU."""
    return _three_block_net(_conv_pool_norm_block, embedding_dim, input_shape)


def _three_block_net(
    block: Callable[[int, int], list[nn.Module]], embedding_dim: int, input_shape: InputShape
) -> EmbeddingNet:
    """Three pooling blocks of 32, 64 and 128 channels and a linear head on the flattened map."""
    trunk = nn.Sequential(*block(input_shape[0], 32), *block(32, 64), *block(64, 128))
    return EmbeddingNet(trunk, 128 * _pooled_area(input_shape, 3), embedding_dim, input_shape)


def wide_net(embedding_dim: int = 64, input_shape: InputShape = MNIST_SHAPE) -> EmbeddingNet:
    """A wider, deeper variant: two convs per stage (32, 64, 128 channels), global pooling head."""
    trunk = nn.Sequential(
        *_conv_block(input_shape[0], 32), *_conv_pool_block(32, 32),
        *_conv_block(32, 64), *_conv_pool_block(64, 64),
        *_conv_pool_block(64, 128),
        nn.Flatten(), nn.Linear(128 * _pooled_area(input_shape, 3), 256), nn.ReLU(inplace=True),
    )
    return EmbeddingNet(trunk, 256, embedding_dim, input_shape)


class _ResidualBlock(nn.Module):
    """Two conv3x3+BN layers added to the input (a 1x1 conv+BN where the width changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_block(c_in, c_out), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)
        )
        self.shortcut = (
            nn.Identity() if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


def resnet_net(embedding_dim: int = 64, input_shape: InputShape = MNIST_SHAPE) -> EmbeddingNet:
    """A small residual network: a conv stem at full resolution, then three residual blocks
    (32, 64, 128 channels) each after a 2x2 max-pool, and conv3's flattening linear head. Seven
    convs where conv3 has three, at about conv3's cost: the depth works at the pooled sizes."""
    trunk = nn.Sequential(
        *_conv_pool_block(input_shape[0], 32),
        _ResidualBlock(32, 32), nn.MaxPool2d(2),
        _ResidualBlock(32, 64), nn.MaxPool2d(2),
        _ResidualBlock(64, 128),
    )
    return EmbeddingNet(trunk, 128 * _pooled_area(input_shape, 3), embedding_dim, input_shape)


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its factory and a one-line description (CLI help, README)."""

    name: str
    description: str
    build: Callable[[int, InputShape], EmbeddingNet]


NETWORKS: dict[str, NetworkSpec] = {
    spec.name: spec
    for spec in (
        NetworkSpec("conv3", "three conv blocks, 15 MFLOPs/image at 28x28", conv3_net),
        NetworkSpec("conv3p", "conv3 pooling before each BatchNorm: the same 15 MFLOPs, a third faster on a CPU", conv3p_net),
        NetworkSpec("reference", "the reference project's two-block CNN, 8 MFLOPs", reference_net),
        NetworkSpec("wide", "five convs and a 256-wide hidden layer, 44 MFLOPs", wide_net),
        NetworkSpec("resnet", "a conv stem and three residual blocks (seven convs), 18 MFLOPs", resnet_net),
    )
}
"""Every network by name (the one list the config, the CLI and the README read)."""


def describe_networks() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered network."""
    return [(spec.name, spec.description) for spec in NETWORKS.values()]


def build_network(name: str, embedding_dim: int, input_shape: InputShape = MNIST_SHAPE, projection_dim: int = 0) -> EmbeddingNet:
    """Build the registered network ``name`` (fresh weights from torch's global RNG).

    Args:
        name: a key of :data:`NETWORKS`.
        embedding_dim: the embedding size.
        input_shape: (channels, height, width) of the input images.
        projection_dim: if positive, a projection head of this size that training's loss goes
            through and inference drops (:meth:`EmbeddingNet.add_projection_head`).

    Returns:
        The network, in training mode.

    Raises:
        ParameterError: for an unknown name or an input too small for the network.
    """
    try:
        spec = NETWORKS[name]
    except KeyError:
        raise ParameterError("network", f"must be one of {', '.join(NETWORKS)}, got {name!r}") from None
    model = spec.build(embedding_dim, tuple(input_shape))  # type: ignore[arg-type]
    if projection_dim:
        model.add_projection_head(projection_dim)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: InputShape | None = None) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of one image, convs and linears only.

    Args:
        model: the network.
        input_shape: (channels, height, width); default the model's own ``input_shape`` (else MNIST's).
    """
    shape: InputShape = input_shape if input_shape is not None else getattr(model, "input_shape", MNIST_SHAPE)
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * kernel * output[0].numel()

    def linear_hook(module: nn.Linear, _inputs, _output) -> None:
        nonlocal total
        total += 2 * module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.zeros(1, *shape, device=device))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total
