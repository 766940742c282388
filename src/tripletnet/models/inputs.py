"""From the uint8 images the data layer holds to network inputs, and embeddings of many images."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..console import progress as progress_bar
from ..errors import ParameterError
from .networks import InputShape


def input_shape_of(images: torch.Tensor) -> InputShape:
    """(channels, height, width) of a uint8 image tensor (N, H, W) or (N, C, H, W)."""
    if images.dim() == 3:
        return (1, int(images.shape[1]), int(images.shape[2]))
    if images.dim() == 4:
        return (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    raise ParameterError("images", f"must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")


def images_to_input(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, H, W) or (B, C, H, W) -> ``dtype`` (B, C, H, W) in [0, 1], on the images' device."""
    input_shape_of(images)  # checks the rank
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.to(dtype).div_(255.0)


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: from the host to a GPU through pinned (page-locked) memory and without
    blocking, so the copy overlaps the host's next work; anywhere else a plain ``.to(device)``.

    Args:
        tensor: the tensor to move (a pinned one is not copied on the host again).
        device: where it goes.

    Returns:
        The tensor on ``device``.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    # torch's pinned-memory allocator keeps a temporary pinned copy alive until the transfer is done.
    pinned = tensor if tensor.is_pinned() else tensor.pin_memory()
    return pinned.to(device, non_blocking=True)


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """fp32 convolutions on ``device`` in IEEE float32 while the block runs.

    cuDNN computes fp32 convolutions in TF32 (a 10-bit mantissa) unless told not to, so "fp32" on a
    GPU would be another arithmetic than on a CPU (embeddings moved by about 2e-4). bf16 autocast
    is not affected: its convolutions are bf16 either way. The setting is restored afterwards.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def embed_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1024, progress: bool = False) -> torch.Tensor:
    """Embeddings of uint8 images (N, H, W) or (N, C, H, W) in eval mode, batched.

    Args:
        model: the network; batches are moved to its device.
        images: uint8 images on any device.
        batch_size: images per forward pass.
        progress: show a progress bar on a terminal.

    Returns:
        (N, embedding_dim) float32 embeddings on the CPU.
    """
    was_training = model.training
    model.eval()
    weight = next(model.parameters())  # the inputs take the weights' device and dtype (float64 under --precision fp64)
    if weight.device.type == "cuda" and images.device.type == "cpu":
        images = images.pin_memory()  # once; every batch is then a non-blocking copy of a pinned slice
    starts = range(0, len(images), batch_size)
    batches = progress_bar(starts, total=len(starts), desc="embedding", unit="batch") if progress else starts
    with ieee_float32(weight.device):
        out = [
            model(images_to_input(host_to_device(images[i : i + batch_size], weight.device), weight.dtype))
            .to("cpu", torch.float32)
            for i in batches
        ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(model, "embedding_dim", 0))
