"""Tensor-side transforms around the image pipeline (:mod:`.images`): mean/std of a tensor of images,
normalisation, horizontal-flip test-time augmentation."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..errors import ParameterError
from .images import ChannelStats, check_channels, check_image_size, choose_channels

# config.py and older callers import the option checks and the channel rule from here.
__all__ = [
    "ChannelStats", "FlipMode", "channel_mean_std", "check_channels", "check_image_size", "choose_channels",
    "combine_flip_embeddings", "normalize", "with_horizontal_flips",
]

FlipMode = Literal["mean", "concat"]


def channel_mean_std(images: torch.Tensor | np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 images (N, C, H, W), on the [0, 1] scale.

    Memory stays at one image's size beyond the input (see :class:`ChannelStats`).

    Args:
        images: uint8 (N, C, H, W); the training split.

    Returns:
        (mean, std), each a tuple of C floats.
    """
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or len(array) == 0:
        raise ParameterError("images", f"must be a non-empty (N, C, H, W) array, got shape {tuple(array.shape)}")
    stats = ChannelStats(array.shape[1])
    for image in array:
        stats.add(image)
    return stats.mean_std()


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std`` per channel (a zero std counts as 1)."""
    if images.ndim != 4 or images.shape[1] != len(mean) or len(mean) != len(std):
        raise ParameterError(
            "mean", f"needs one value per channel of images {tuple(images.shape)}, got {len(mean)} (std {len(std)})"
        )
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor([v if v > 0 else 1.0 for v in std], dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


# --- horizontal-flip test-time augmentation ------------------------------------------------------
# Two pure steps around the caller's embedding function:  with_horizontal_flips(images) -> embed ->
# combine_flip_embeddings(embeddings, mode). "mean" (the default) averages an image's embedding with
# its mirror's and re-normalises: the result keeps the model's dimension, so thresholds and galleries
# stay comparable. "concat" joins the two (2 x dim) and divides by sqrt(2) so the result has unit
# norm; its dot products are then the mean of the two cosine similarities.


def with_horizontal_flips(images: torch.Tensor) -> torch.Tensor:
    """``images`` (N, ..., W) followed by their left-right mirrors: (2N, ..., W)."""
    if images.ndim < 2:
        raise ParameterError("images", f"must have at least a batch and a width axis, got shape {tuple(images.shape)}")
    return torch.cat([images, torch.flip(images, dims=(-1,))])


def combine_flip_embeddings(embeddings: torch.Tensor, mode: FlipMode = "mean") -> torch.Tensor:
    """Join the embeddings of images and their mirrors, as :func:`with_horizontal_flips` ordered them.

    Args:
        embeddings: (2N, D): the first N of the originals, the last N of their mirrors.
        mode: ``"mean"`` -> (N, D), the L2-normalised average; ``"concat"`` -> (N, 2D), both halves
            side by side, scaled to unit norm.

    Returns:
        One unit-norm embedding per original image.
    """
    if embeddings.ndim != 2 or len(embeddings) % 2:
        raise ParameterError("embeddings", f"must be (2N, D) with originals then mirrors, got shape {tuple(embeddings.shape)}")
    original, mirrored = embeddings.chunk(2)
    if mode == "mean":
        return torch.nn.functional.normalize(original + mirrored, dim=1)
    if mode == "concat":
        joined = torch.cat(
            [torch.nn.functional.normalize(original, dim=1), torch.nn.functional.normalize(mirrored, dim=1)], dim=1
        )
        return joined / np.sqrt(2.0)
    raise ParameterError("mode", f"must be 'mean' or 'concat', got {mode!r}")
