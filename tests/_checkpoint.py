"""A tiny trained checkpoint (two short epochs on an MNIST slice) shared by the inference tests of a session."""

from __future__ import annotations

from pathlib import Path

from tripletnet.config import TrainConfig
from tripletnet.training import train

from _mnist import data_root, mnist_slice


def train_tiny(run_dir: Path, precision: str = "fp32") -> Path:
    """Train a few steps into ``run_dir`` (with per-epoch metrics, for the report); return its last checkpoint."""
    config = TrainConfig(num_images=256, batch_size=64, epochs=2, eval_every=1, eval_images=500, checkpoint_path=str(run_dir),
                         data_path=data_root(), precision=precision, augment=False, num_val_triplets=32)
    train(config, data=mnist_slice(n_train=1024, n_test=500), log=lambda _: None)
    return run_dir / "last.pt"


def shared_checkpoint(tmp_path_factory) -> Path:
    """One tiny run per test session, whichever test module asks first (training is the slow part)."""
    run_dir = tmp_path_factory.getbasetemp() / "shared-tiny-run"
    checkpoint = run_dir / "last.pt"
    return checkpoint if checkpoint.is_file() else train_tiny(run_dir)


def train_tiny_on(dataset: Path, run_dir: Path, image_size: int = 32) -> Path:
    """One short epoch on an image folder or CSV list at a non-default ``image_size``; return its last checkpoint."""
    config = TrainConfig(dataset=str(dataset), image_size=image_size, num_images=24, batch_size=12, epochs=1, eval_every=1,
                         eval_images=0, num_val_triplets=8, checkpoint_path=str(run_dir), precision="fp32", augment=False,
                         threads=1)
    train(config, log=lambda _: None)
    return run_dir / "last.pt"
