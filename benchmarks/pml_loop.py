"""A plain PyTorch + pytorch-metric-learning training loop, written the way a PML user would.

The baseline for section 2: one epoch on MNIST with a DataLoader over a TensorDataset, a
class-balanced batch sampler, Adam, ``TripletMarginMiner(semihard)`` + ``TripletMarginLoss``.
Run alone: ``python -m benchmarks.pml_loop --network embeddingnet --threads 2``. It prints one
tagged JSON line with the epoch's time and images/s (the training loop only); the parent adds
the whole process's wall time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from .timing import run_worker, set_threads

NETWORKS = ("reference", "embeddingnet")


class EmbeddingNetSized(nn.Module):
    """The classic siamese/triplet MNIST network: two conv5x5+PReLU+maxpool, three linears."""

    def __init__(self, embedding_dim: int = 64) -> None:
        super().__init__()
        self.convnet = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.PReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(32, 64, 5), nn.PReLU(), nn.MaxPool2d(2, stride=2),
        )
        self.fc = nn.Sequential(
            nn.Linear(64 * 4 * 4, 256), nn.PReLU(),
            nn.Linear(256, 256), nn.PReLU(),
            nn.Linear(256, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(self.convnet(x).flatten(1)), p=2, dim=1)


def build_model(network: str) -> nn.Module:
    if network == "reference":
        from tripletnet.models import build_network

        return build_network("reference", 64)
    return EmbeddingNetSized(64)


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches holding every class: batch_size // C of each, plus one more for a random few.

    PML's MPerClassSampler needs m to divide the batch size, so 256 images cannot hold all 10
    MNIST classes with it (m = 32 gives 8 classes); this keeps the batch at 256 with all 10.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, num_batches: int, seed: int = 0) -> None:
        self.by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        classes = len(self.by_class)
        for _ in range(self.num_batches):
            counts = torch.full((classes,), self.batch_size // classes)
            counts[torch.randperm(classes, generator=self.generator)[: self.batch_size % classes]] += 1
            batch = [
                members[torch.randperm(len(members), generator=self.generator)[:k]]
                for members, k in zip(self.by_class, counts.tolist())
            ]
            yield torch.cat(batch).tolist()


def train_one_epoch(network: str, num_images: int, data_path: str, threads: int, batch_size: int = 256) -> dict[str, Any]:
    set_threads(threads)
    from pytorch_metric_learning import losses, miners  # benchmark-only dependency

    from tripletnet.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("mnist", data_path, download=False)
    images = data.train_images.unsqueeze(1).float() / 255.0
    # tripletnet's reference network normalises [0, 1] inputs itself; the classic network expects
    # them already normalised, as a PML user's transform would do.
    if network == "embeddingnet":
        images = (images - 0.5) / 0.5
    dataset = TensorDataset(images, data.train_labels)
    sampler = BalancedBatchSampler(data.train_labels, batch_size, num_images // batch_size)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=0)

    model = build_model(network)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    miner = miners.TripletMarginMiner(margin=1.0, type_of_triplets="semihard")
    loss_fn = losses.TripletMarginLoss(margin=1.0)

    model.train()
    seen, last_loss = 0, float("nan")
    started = time.perf_counter()
    for x, y in loader:
        embeddings = model(x)
        triplets = miner(embeddings, y)
        loss = loss_fn(embeddings, y, triplets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
        last_loss = loss.item()
    seconds = time.perf_counter() - started
    return {"epoch_seconds": seconds, "images": seen, "images_per_second": seen / seconds, "last_loss": last_loss}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One epoch of a plain PML training loop on MNIST.")
    parser.add_argument("--network", choices=NETWORKS, default="embeddingnet")
    parser.add_argument("--num_images", type=int, default=59904)
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args(argv)
    run_worker(lambda: train_one_epoch(a.network, a.num_images, a.data_path, a.threads))


if __name__ == "__main__":
    main()
