"""Training batches, from images held in memory or decoded from disk by DataLoader workers.

The training loop sees one interface, :class:`BatchSource`: ``len(source)`` batches per epoch and
``source.epoch(n)`` yielding ``(uint8 images, labels)`` on the training device, in the order the
:class:`~tripletnet.sampler.ClassBalancedBatchSampler` gives for epoch ``n``. Two sources:

* :class:`InMemoryBatches`: index a uint8 tensor (MNIST, and image folders within ``--cache_images``).
* :class:`StreamedBatches`: a ``torch.utils.data.DataLoader`` whose batch sampler is that same list
  of index batches; ``num_workers`` processes (0: the main process) decode the files by the one
  image pipeline (:mod:`.images`) that decoded the images held in memory, so a batch
  holds the same indices, labels and pixels as in memory. Augmentation is not done here: the
  training step draws it in the main process from the epoch's generator, so a run gives the same
  results whether its images are held or streamed and whatever ``num_workers`` is.

Workers never raise a :class:`~tripletnet.errors.UserError` across the process boundary (it would
come back wrapped in a multi-line traceback): an image that has become unreadable since loading is
reported back with its one-line reason, and the main process stops with that line or, with
``skip_bad_images``, leaves the image out of its batch and counts it at the end of the epoch. The
workers of an epoch are shut down when the epoch ends, also when it is left early.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..console import Logger, log_stderr
from ..errors import UserError
from ..models.inputs import host_to_device
from ..sampler import ClassBalancedBatchSampler
from .types import ImageFiles

Decoded = tuple[np.ndarray | None, str | None]  # the image, or None and why it could not be read


class BatchSource(Protocol):
    """Where the training loop draws its batches from (see the module doc)."""

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of 1-based ``epoch``: (uint8 images (B, ...), int64 labels (B,)) on the training device."""
        ...


class InMemoryBatches:
    """Batches indexed from uint8 images held in memory (moved to ``device`` once).

    Args:
        images: uint8 (N, H, W) or (N, C, H, W) training images.
        labels: (N,) their labels.
        sampler: the P x K sampler over ``labels``.
        device: where batches are delivered.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sampler: ClassBalancedBatchSampler,
                 device: torch.device) -> None:
        self.images = host_to_device(images, device)
        self.labels = host_to_device(labels, device)
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for indices in self.sampler.batches(epoch):
            indices = host_to_device(indices, self.images.device)  # on a GPU: one non-blocking copy, not two waits
            yield self.images[indices], self.labels[indices]


class _DecodedFiles(Dataset[Decoded]):
    """What a worker runs: one image per index, a bad one reported instead of raised."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Decoded:
        try:
            return self.files.read(index), None
        except UserError as exc:
            return None, str(exc)


def _collate(items: list[Decoded]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(the readable images stacked, a mask of which were readable, the reasons of the others)."""
    readable = torch.tensor([image is not None for image, _ in items], dtype=torch.bool)
    arrays = [image for image, _ in items if image is not None]
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, dtype=torch.uint8)
    return images, readable, [reason for _, reason in items if reason is not None]


class StreamedBatches:
    """Batches decoded from image files by a DataLoader with ``num_workers`` processes.

    Args:
        files: the training images on disk.
        labels: (N,) their labels.
        sampler: the P x K sampler over ``labels``: the DataLoader's batch sampler.
        device: where batches are delivered.
        num_workers: decoding processes (0: decode in the main process).
        skip_bad_images: leave an image that has become unreadable out of its batch (counted per
            epoch) instead of stopping with its one-line error.
        log: where the per-epoch count of skipped images goes.
    """

    def __init__(self, files: ImageFiles, labels: torch.Tensor, sampler: ClassBalancedBatchSampler, device: torch.device,
                 num_workers: int = 0, skip_bad_images: bool = False, log: Logger = log_stderr) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} image files but {len(labels)} labels")
        self.files = files
        self.labels = labels.to(device)
        self.sampler = sampler
        self.device = device
        self.num_workers = num_workers
        self.skip_bad_images = skip_bad_images
        self.log = log

    def __len__(self) -> int:
        return len(self.sampler)

    def loader(self, batches: list[torch.Tensor]) -> DataLoader[Decoded]:
        """A DataLoader whose batch sampler is ``batches`` (the sampler's index batches of one epoch)."""
        # Pinned batches on a GPU: the copy to the device is then asynchronous and overlaps the next decode.
        return DataLoader(_DecodedFiles(self.files), batch_sampler=[indices.tolist() for indices in batches],
                          num_workers=self.num_workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skipped: list[str] = []
        batches = self.sampler.batches(epoch)
        iterator = iter(self.loader(batches))
        try:
            for indices, (images, readable, reasons) in zip(batches, iterator, strict=True):
                labels = self.labels[host_to_device(indices, self.labels.device)]
                if reasons:
                    if not self.skip_bad_images:
                        raise UserError(f"{reasons[0]} (found while training; --skip_bad_images leaves such images out)")
                    skipped.extend(reasons)
                    if len(images) < 2:
                        raise UserError(f"a training batch has fewer than two readable images: {reasons[0]}")
                    labels = labels[readable.to(labels.device)]
                yield host_to_device(images, self.device), labels
        finally:
            # Workers end with the epoch, even when the loop leaves it early (an undone epoch, an error).
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        if skipped:
            self.log(f"epoch {epoch}: skipped {len(skipped)} images that became unreadable since loading "
                     f"(the first: {skipped[0]})")
