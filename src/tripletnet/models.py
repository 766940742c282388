"""Embedding networks: a 28x28 grayscale image in, an L2-normalised embedding out.

Every network takes float images in [0, 1] of shape (B, 1, 28, 28) and normalises them itself
(mean 0.5, std 0.5, as the reference does), so training, validation, evaluation and an exported
model all see the same inputs. ``images_to_input`` turns the uint8 tensors the data layer holds
into that form.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError


def images_to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [0, 1]."""
    return images.unsqueeze(1).to(torch.float32).div_(255.0)


class EmbeddingNet(nn.Module):
    """A convolutional trunk followed by a linear projection and L2 normalisation."""

    def __init__(self, trunk: nn.Module, trunk_features: int, embedding_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk_features, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - 0.5) / 0.5
        x = self.trunk(x).flatten(1)
        return F.normalize(self.head(x), p=2.0, dim=1)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def reference_net(embedding_dim: int = 64) -> EmbeddingNet:
    """The reference project's network: two conv3x3+BN+ReLU+maxpool blocks, avg-pool 7x7, linear."""
    trunk = nn.Sequential(
        *_conv_block(1, 32), nn.MaxPool2d(2),
        *_conv_block(32, 64), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d((7, 7)),
    )
    return EmbeddingNet(trunk, 64 * 7 * 7, embedding_dim)


def conv3_net(embedding_dim: int = 64) -> EmbeddingNet:
    """Three conv3x3+BN+ReLU+maxpool blocks (32, 64, 128 channels) and a linear head: twice the
    reference's FLOPs, a 3x3x128 map with a receptive field that covers the whole digit."""
    trunk = nn.Sequential(
        *_conv_block(1, 32), nn.MaxPool2d(2),
        *_conv_block(32, 64), nn.MaxPool2d(2),
        *_conv_block(64, 128), nn.MaxPool2d(2),
    )
    return EmbeddingNet(trunk, 128 * 3 * 3, embedding_dim)


def wide_net(embedding_dim: int = 64) -> EmbeddingNet:
    """A wider, deeper variant: two convs per stage (32, 64, 128 channels), global pooling head."""
    trunk = nn.Sequential(
        *_conv_block(1, 32), *_conv_block(32, 32), nn.MaxPool2d(2),
        *_conv_block(32, 64), *_conv_block(64, 64), nn.MaxPool2d(2),
        *_conv_block(64, 128), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.ReLU(inplace=True),
    )
    return EmbeddingNet(trunk, 256, embedding_dim)


NETWORKS: dict[str, Callable[[int], EmbeddingNet]] = {
    "reference": reference_net,
    "conv3": conv3_net,
    "wide": wide_net,
}


def build_network(name: str, embedding_dim: int) -> EmbeddingNet:
    try:
        factory = NETWORKS[name]
    except KeyError:
        raise UserError(f"unknown network {name!r}: choose one of {', '.join(NETWORKS)}") from None
    return factory(embedding_dim)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 28) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of one image, convs and linears only."""
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
    with torch.no_grad():
        model(torch.zeros(1, 1, image_size, image_size))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total


@torch.no_grad()
def embed_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1024, progress: bool = False) -> torch.Tensor:
    """Embeddings of uint8 images (N, 28, 28) in eval mode, batched, optionally with a progress bar."""
    was_training = model.training
    model.eval()
    starts = range(0, len(images), batch_size)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch", leave=False)
    out = [model(images_to_input(images[i : i + batch_size])) for i in starts]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(model, "embedding_dim", 0))
