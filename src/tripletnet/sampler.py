"""Class-balanced P x K batches, so that every anchor has positives and negatives in its batch.

Random batches of 256 MNIST images almost always hold every class, but a triplet miner only sees
what is in the batch: balancing makes the number of positives per anchor steady (about 25 at
batch 256) and guarantees that no anchor is wasted. Images of a class are drawn without
replacement until the class is exhausted, then from a fresh permutation.
"""

from __future__ import annotations

import torch

from .errors import UserError


class ClassBalancedBatchSampler:
    """Batches of ``batch_size`` indices over ``labels``, ``num_batches`` per epoch.

    Each batch holds P = min(#classes, batch_size // images_per_class) classes, chosen at random
    when not all fit, with the batch split between them as evenly as possible (so at least
    ``images_per_class`` images each: K of P x K, two by default, which puts the most classes in
    a batch).
    Batches of an epoch depend only on (seed, epoch): resuming at an epoch boundary needs no
    sampler state.
    """

    def __init__(
        self, labels: torch.Tensor, batch_size: int, num_batches: int, seed: int, images_per_class: int = 2
    ) -> None:
        labels = labels.to(torch.int64).cpu()
        classes, counts = torch.unique(labels, return_counts=True)
        usable = classes[counts >= 2]
        if len(usable) < 2:
            raise UserError("need at least two classes with two or more images each to form triplets")
        if batch_size < 4:
            raise UserError(f"--batch_size must be at least 4 (two classes with two images each), got {batch_size}")
        if not 2 <= images_per_class <= batch_size // 2:
            raise UserError(f"images per class must be between 2 and half the batch size ({batch_size // 2}), got {images_per_class}")
        if num_batches < 1:
            raise UserError("an epoch must hold at least one batch")
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.seed = seed
        self.class_indices = [torch.nonzero(labels == c).flatten() for c in usable.tolist()]
        self.classes_per_batch = min(len(usable), batch_size // images_per_class)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def images_per_class_in_batch(self) -> int:
        """The fewest images a chosen class gets in a batch (K, or more when fewer classes fill the batch)."""
        return self.batch_size // self.classes_per_batch

    def classes_too_small(self) -> int:
        """How many classes have fewer images than a batch takes of them, so that their batches repeat images."""
        return sum(len(indices) < self.images_per_class_in_batch for indices in self.class_indices)

    def epoch_generator(self, epoch: int) -> torch.Generator:
        # A distinct, reproducible stream per (seed, epoch).
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7_919 + 17)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """All batches of 1-based ``epoch`` as a list of index tensors."""
        gen = self.epoch_generator(epoch)
        n_classes, p = len(self.class_indices), self.classes_per_batch
        # counts[b, c]: how many images of class c go into batch b.
        counts = torch.zeros(self.num_batches, n_classes, dtype=torch.int64)
        base, extra = divmod(self.batch_size, p)
        for b in range(self.num_batches):
            chosen = torch.randperm(n_classes, generator=gen)[:p]
            counts[b, chosen] = base
            counts[b, chosen[:extra]] += 1
        # One stream of indices per class, long enough for the whole epoch.
        per_class_chunks = []
        for c, indices in enumerate(self.class_indices):
            needed = int(counts[:, c].sum())
            rounds = -(-needed // len(indices)) if needed else 0
            stream = torch.cat([indices[torch.randperm(len(indices), generator=gen)] for _ in range(rounds)]) if rounds else indices[:0]
            per_class_chunks.append(torch.split(stream[:needed], counts[:, c].tolist()))
        return [torch.cat([chunks[b] for chunks in per_class_chunks]) for b in range(self.num_batches)]
