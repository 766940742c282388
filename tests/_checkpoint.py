"""A tiny trained checkpoint (one short epoch on an MNIST slice) for the inference tests."""

from __future__ import annotations

from pathlib import Path

from tripletnet.config import TrainConfig
from tripletnet.training import train

from _mnist import data_root, mnist_slice


def train_tiny(run_dir: Path, precision: str = "fp32", epochs: int = 1) -> Path:
    """Train a few steps into ``run_dir``; return the path of its last checkpoint."""
    config = TrainConfig(num_images=512, batch_size=64, epochs=epochs, eval_every=1, eval_images=500, checkpoint_path=str(run_dir),
                         data_path=data_root(), precision=precision, augment=False)
    train(config, data=mnist_slice(n_train=1024, n_test=500), log=lambda _: None)
    return run_dir / "last.pt"
