"""What surrounds the image pipeline (:mod:`.images`): option checks, a dataset's channel count, mean/std, flips.

The channel rule of a dataset
-----------------------------
A dataset takes 3 channels if *any* of its images is in colour (no colour is thrown away) and 1 if
all are grey (:func:`~tripletnet.data.images.is_grey`), unless the caller forces a count. Images of
the other kind are converted by the pipeline, and the conversion is said once per dataset, with the count.

Normalisation statistics are per channel, on the [0, 1] scale, from the training split only,
accumulated in float64 (population standard deviation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..console import Logger, log_stderr
from ..errors import ParameterError

FlipMode = Literal["mean", "concat"]


def check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ParameterError("image_size", f"must be a positive whole number of pixels, got {image_size!r}")


def check_channels(channels: int | None) -> None:
    if channels is not None and channels not in (1, 3):
        raise ParameterError("channels", f"must be 1 (grey) or 3 (colour), got {channels!r}")


def choose_channels(n_grey: int, n_colour: int, channels: int | None, what: str, log: Logger = log_stderr) -> int:
    """The channel count of a dataset with ``n_grey`` grey and ``n_colour`` colour images.

    Args:
        n_grey: how many images are grey.
        n_colour: how many are in colour.
        channels: 1 or 3 to force a count, None to take it from the data (any colour -> 3).
        what: the dataset's name, for the log line.
        log: where the one line about converted images goes.

    Returns:
        1 or 3.
    """
    check_channels(channels)
    chosen = channels if channels is not None else (3 if n_colour else 1)
    converted = n_grey if chosen == 3 else n_colour
    if converted:
        kind, into = ("grey", "RGB (grey replicated)") if chosen == 3 else ("colour", "grey (luma)")
        mixed = " (the data mixes grey and colour)" if n_grey and n_colour else ""
        log(f"{what}: {converted} of {n_grey + n_colour} images are {kind}, converted to {into}{mixed}")
    return chosen


class ChannelStats:
    """Running per-channel sums of uint8 images, one image at a time: mean/std without holding the images.

    Sums are taken in float64, image by image, so the result does not depend on whether the images
    were held in memory (:func:`channel_mean_std`) or streamed from disk, nor, beyond rounding in
    the last bits, on how many there are.
    """

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels, dtype=np.float64)
        self.total_sq = np.zeros(channels, dtype=np.float64)
        self.pixels = 0

    def add(self, image: np.ndarray) -> None:
        """Count one uint8 image (C, H, W)."""
        values = image.reshape(len(self.total), -1).astype(np.float64)
        self.total += values.sum(axis=1)
        self.total_sq += np.square(values).sum(axis=1)
        self.pixels += values.shape[1]

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, population std) per channel on the [0, 1] scale."""
        if not self.pixels:
            raise ParameterError("images", "must hold at least one image to compute a mean and std")
        mean = self.total / self.pixels
        # E[x^2] - E[x]^2 is exact enough here: values are at most 255, the sums are exact integers in float64.
        var = np.maximum(self.total_sq / self.pixels - np.square(mean), 0.0)
        return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in np.sqrt(var) / 255.0)


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
