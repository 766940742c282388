"""A plain PyTorch + pytorch-metric-learning training loop, written the way a PML user would.

The baseline for section 2: one epoch on MNIST with a DataLoader over a TensorDataset, a
class-balanced batch sampler, Adam, ``TripletMarginMiner(semihard)`` + ``TripletMarginLoss``.
Run alone: ``python -m benchmarks.pml_loop --network embeddingnet --threads 2``. It prints one
tagged JSON line with the epoch's time and images/s (the training loop only); the parent adds
the whole process's wall time.

As the time-to-target section's peer: ``--epochs N --run_dir DIR [--dataset fashion-mnist]``
evaluates after every epoch the way tripletnet's loop does (VAL@1e-3 and P@1 on the same fixed
2,000-image test subset) and writes ``DIR/metrics.jsonl`` and ``DIR/config.json``, which
``python -m benchmarks.time_to_target DIR ...`` reads beside tripletnet's runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
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
                for members, k in zip(self.by_class, counts.tolist(), strict=True)
            ]
            yield torch.cat(batch).tolist()


def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """The per-epoch evaluation tripletnet's loop runs (VAL@1e-3, P@1, MAP@R on a fixed test subset), timed."""
    from tripletnet.evaluation import fast_epoch_metrics

    started = time.perf_counter()
    model.eval()
    with torch.no_grad():
        embeddings = torch.cat([model(chunk) for chunk in images.split(1000)])
    model.train()
    record = fast_epoch_metrics(embeddings, labels, far=1e-3).to_dict()
    record["eval_seconds"] = time.perf_counter() - started
    record["eval_images"] = len(labels)
    return record


def train(
    network: str, num_images: int, data_path: str, threads: int, batch_size: int = 256, *,
    epochs: int = 1, dataset: str = "mnist", run_dir: str | None = None, keep_freed_memory: bool = False,
) -> dict[str, Any]:
    """Train ``epochs`` epochs; with ``run_dir``, evaluate after each one and write metrics.jsonl
    and config.json there as tripletnet's loop does, so ``benchmarks.time_to_target`` reads it as a peer.
    With ``keep_freed_memory``, malloc is given tripletnet's setting first (what a peer would gain from it)."""
    set_threads(threads)
    if keep_freed_memory:
        from tripletnet.allocator import keep_freed_memory as keep

        keep()
    from pytorch_metric_learning import losses, miners  # benchmark-only dependency

    from tripletnet.config import TrainConfig
    from tripletnet.data import load_dataset, stratified_subset
    from tripletnet.fileio import atomic_write_text
    from tripletnet.training.runlog import RunLog

    torch.manual_seed(0)
    data = load_dataset(dataset, data_path, download=False)

    def to_input(uint8_images: torch.Tensor) -> torch.Tensor:
        x = uint8_images.unsqueeze(1).float() / 255.0
        # tripletnet's reference network normalises [0, 1] inputs itself; the classic network expects
        # them already normalised, as a PML user's transform would do.
        return (x - 0.5) / 0.5 if network == "embeddingnet" else x

    images = to_input(data.train_images)
    dataset_rows = TensorDataset(images, data.train_labels)
    sampler = BalancedBatchSampler(data.train_labels, batch_size, num_images // batch_size)
    loader = DataLoader(dataset_rows, batch_sampler=sampler, num_workers=0)

    model = build_model(network)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    miner = miners.TripletMarginMiner(margin=1.0, type_of_triplets="semihard")
    loss_fn = losses.TripletMarginLoss(margin=1.0)

    runlog = None
    if run_dir is not None:
        # The same fixed test subset as tripletnet's per-epoch evaluation with its default seed and size.
        defaults = TrainConfig()
        subset = stratified_subset(data.test_labels, defaults.eval_images, defaults.seed)
        eval_images, eval_labels = to_input(data.test_images[subset]), data.test_labels[subset]
        atomic_write_text(Path(run_dir) / "config.json", json.dumps({
            "program": "benchmarks.pml_loop", "dataset": dataset, "network": network, "epochs": epochs,
            "num_images": num_images, "batch_size": batch_size, "threads": threads,
        }, indent=2) + "\n")
        runlog = RunLog(run_dir)
        runlog.start()

    model.train()
    seen, last_loss, total_seconds, epoch_seconds = 0, float("nan"), 0.0, 0.0
    for epoch in range(1, epochs + 1):
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
        epoch_seconds = time.perf_counter() - started
        total_seconds += epoch_seconds
        if runlog is not None:
            record = {"epoch": epoch, "miner": "semihard", "train_loss": last_loss, "epoch_seconds": epoch_seconds,
                      "images_per_second": len(sampler) * batch_size / epoch_seconds}
            runlog.append(record | _evaluate(model, eval_images, eval_labels))
    return {"epoch_seconds": epoch_seconds, "images": seen, "images_per_second": seen / total_seconds, "last_loss": last_loss}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One epoch of a plain PML training loop on MNIST.")
    parser.add_argument("--network", choices=NETWORKS, default="embeddingnet")
    parser.add_argument("--num_images", type=int, default=59904)
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist")
    parser.add_argument("--run_dir", help="evaluate after every epoch and write metrics.jsonl + config.json here")
    parser.add_argument("--keep_freed_memory", action="store_true", help="give malloc tripletnet's CPU training setting")
    a = parser.parse_args(argv)
    run_worker(lambda: train(
        a.network, a.num_images, a.data_path, a.threads, epochs=a.epochs, dataset=a.dataset, run_dir=a.run_dir,
        keep_freed_memory=a.keep_freed_memory,
    ))


if __name__ == "__main__":
    main()
