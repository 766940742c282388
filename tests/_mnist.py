"""Small MNIST slices for fast tests, read from the shared datasets (never the network)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from tripletnet.data import DatasetSplits, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def data_root() -> str:
    """Absolute, so that tests may symlink to it from a temporary folder (CI passes a relative path)."""
    return os.path.abspath(os.environ.get("TRIPLETNET_DATA") or SHARED)


@functools.lru_cache(maxsize=None)
def mnist() -> DatasetSplits:
    return load_dataset("mnist", data_root(), download=False)


def mnist_slice(n_train: int = 2048, n_test: int = 500) -> DatasetSplits:
    full = mnist()
    return DatasetSplits(
        train_images=full.train_images[:n_train], train_labels=full.train_labels[:n_train],
        test_images=full.test_images[:n_test], test_labels=full.test_labels[:n_test],
        class_names=full.class_names, name="mnist",
    )


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
