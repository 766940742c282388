"""Batched image augmentation on tensors: one random transform per image, no per-sample Python."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .models.inputs import host_to_device


def random_affine(
    images: torch.Tensor,
    gen: torch.Generator,
    max_degrees: float = 10.0,
    max_scale: float = 0.1,
    max_shift: float = 2.0,
    flip: float = 0.0,
) -> torch.Tensor:
    """Rotate (±max_degrees), scale (1 ± max_scale) and shift (±max_shift px) each image of a
    (B, C, H, W) batch by its own random amount, and mirror it left-right with probability
    ``flip``; bilinear, zero (background) outside the image."""
    b, _, h, w = images.shape
    return apply_affine(images, draw_affine(b, h, w, gen, max_degrees, max_scale, max_shift, flip))


def draw_affine(
    count: int,
    height: int,
    width: int,
    gen: torch.Generator,
    max_degrees: float = 10.0,
    max_scale: float = 0.1,
    max_shift: float = 2.0,
    flip: float = 0.0,
) -> torch.Tensor:
    """The random transforms :func:`random_affine` applies, for ``count`` images of height x width.

    Drawing them apart from applying them lets several processes draw the transforms of one
    global batch from the same generator and each apply its own share.

    Args:
        count: how many images (one transform each).
        height: image height in pixels (shifts are in pixels).
        width: image width in pixels.
        gen: the (CPU) generator the draws come from.
        max_degrees: largest rotation either way.
        max_scale: largest relative scale change either way.
        max_shift: largest shift in pixels either way.
        flip: probability of a left-right mirror (drawn only when positive, so runs without it
            draw exactly what they always drew).

    Returns:
        (count, 2, 3) float32 affine matrices in affine_grid's [-1, 1] coordinates, on the CPU.
    """

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=gen)

    angle = uniform(-max_degrees, max_degrees) * (math.pi / 180)
    scale = uniform(1 - max_scale, 1 + max_scale)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    tx = uniform(-max_shift, max_shift) * 2 / width
    ty = uniform(-max_shift, max_shift) * 2 / height
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    if flip > 0:
        # The matrix maps output to input coordinates: negating its x column mirrors the output.
        mirrored = torch.rand(count, generator=gen) < flip
        theta[mirrored, :, 0] *= -1
    return theta


def apply_affine(images: torch.Tensor, theta: torch.Tensor, displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Warp each image of a (B, C, H, W) batch by its (2, 3) matrix of ``theta``, plus an optional
    per-pixel ``displacement`` (B, H, W, 2) in the same [-1, 1] coordinates (one resampling for
    both); zero outside the image."""
    # The draws come from the (CPU) generator; the transform runs where the images are (on a GPU, the
    # draws travel through pinned memory without making the host wait).
    theta = host_to_device(theta, images.device).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if displacement is not None:
        grid = grid + host_to_device(displacement, images.device).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


ELASTIC_SIGMA = 4.0
"""Smoothing of the elastic displacement field in pixels (Simard et al. 2003 use 4 on MNIST)."""


def draw_elastic(
    count: int, height: int, width: int, gen: torch.Generator, alpha: float, sigma: float = ELASTIC_SIGMA
) -> torch.Tensor:
    """Random elastic displacement fields (Simard et al. 2003), for :func:`apply_affine`.

    Each pixel's displacement is uniform in [-1, 1] per axis, smoothed by a Gaussian of ``sigma``
    pixels and scaled by ``alpha`` pixels: with their MNIST values (alpha 34, sigma 4) pixels move
    about 1.4 px (standard deviation), and neighbouring pixels move together.

    Args:
        count: how many fields (one per image).
        height: image height in pixels.
        width: image width in pixels.
        gen: the (CPU) generator the draws come from.
        alpha: the scale in pixels.
        sigma: the smoothing in pixels.

    Returns:
        (count, height, width, 2) float32 displacements (x, y) in affine_grid's [-1, 1] coordinates.
    """
    field = torch.rand(count, 2, height, width, generator=gen) * 2 - 1
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    # Separable blur, each axis of each component on its own (groups=2).
    field = F.conv2d(field, taps.view(1, 1, 1, -1).repeat(2, 1, 1, 1), padding=(0, radius), groups=2)
    field = F.conv2d(field, taps.view(1, 1, -1, 1).repeat(2, 1, 1, 1), padding=(radius, 0), groups=2)
    pixels_to_grid = torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)
    return (field * alpha * pixels_to_grid).permute(0, 2, 3, 1).contiguous()


def vary_stroke(images: torch.Tensor, draws: torch.Tensor, probability: float) -> torch.Tensor:
    """Thicken (3x3 max filter) or thin (3x3 min filter) each image of a (B, C, H, W) batch with
    ``probability``, either with equal odds: the pen-width variation of handwriting.

    Args:
        images: the batch.
        draws: (B,) uniform [0, 1) draws, one per image: below probability/2 thickens, below
            probability thins, else the image stays.
        probability: the chance that an image changes.
    """
    draw = host_to_device(draws, images.device).view(-1, 1, 1, 1)
    thick = F.max_pool2d(images, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-images, 3, stride=1, padding=1)
    return torch.where(draw < probability / 2, thick, torch.where(draw < probability, thin, images))


ERASED_AREA = (0.02, 0.2)
"""Share of the image a random erasing blanks, drawn uniformly (Zhong et al. 2020 use 0.02 to 0.4;
a glyph loses too much of itself above a fifth)."""

ERASED_ASPECT = (0.3, 1 / 0.3)
"""Height/width of an erased rectangle, drawn log-uniformly between these (Zhong et al.'s range)."""


def draw_erasing(count: int, height: int, width: int, gen: torch.Generator, probability: float) -> torch.Tensor:
    """Random erasing rectangles (Zhong et al. 2020), for :func:`erase`.

    Args:
        count: how many images.
        height: image height in pixels.
        width: image width in pixels.
        gen: the (CPU) generator the draws come from.
        probability: the chance that an image has a rectangle erased.

    Returns:
        (count, 4) int64 rows of (top, bottom, left, right), bottom and right exclusive; an image
        left whole has an empty rectangle (top == bottom).
    """
    draws = torch.rand(count, 5, generator=gen)
    area = (ERASED_AREA[0] + draws[:, 0] * (ERASED_AREA[1] - ERASED_AREA[0])) * height * width
    log_low, log_high = math.log(ERASED_ASPECT[0]), math.log(ERASED_ASPECT[1])
    aspect = torch.exp(log_low + draws[:, 1] * (log_high - log_low))
    box_h = torch.sqrt(area * aspect).round().clamp(1, height).to(torch.int64)
    box_w = torch.sqrt(area / aspect).round().clamp(1, width).to(torch.int64)
    top = (draws[:, 2] * (height - box_h + 1)).floor().to(torch.int64)
    left = (draws[:, 3] * (width - box_w + 1)).floor().to(torch.int64)
    erased = draws[:, 4] < probability
    bottom = torch.where(erased, top + box_h, top)
    return torch.stack([top, bottom, left, left + box_w], dim=1)


def erase(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Set each (B, C, H, W) image's rectangle of ``boxes`` (from :func:`draw_erasing`) to 0, the
    background of stroke images, on every channel: an occluded or missing part of the pattern."""
    _, _, height, width = images.shape
    boxes = host_to_device(boxes, images.device)
    rows = torch.arange(height, device=images.device).view(1, -1, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, -1)
    top, bottom, left, right = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return images.masked_fill(inside.unsqueeze(1), 0.0)
