"""Small MNIST slices for fast tests, read from the shared datasets (never the network).

A test that needs a dataset whose files are absent is skipped with the reason, instead of failing
(or breaking collection when a module loads data at import time); a damaged file still fails.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from tripletnet.data import DATASET_SPECS, DatasetSplits, load_dataset
from tripletnet.data.datasets import find_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def data_root() -> str:
    """Absolute, so that tests may symlink to it from a temporary folder (CI passes a relative path)."""
    return os.path.abspath(os.environ.get("TRIPLETNET_DATA") or SHARED)


def require_dataset(name: str) -> None:
    """Skip the calling test (or module, at import time) unless every file of registered dataset ``name`` is present."""
    spec = DATASET_SPECS[name]
    root = Path(data_root())
    missing = [file.filename for file in spec.files.values() if find_file(root, spec, file) is None]
    if missing:
        pytest.skip(f"{name} is not in {root} (missing {', '.join(missing)}); set TRIPLETNET_DATA to a folder that holds it",
                    allow_module_level=True)


@functools.cache
def _load(name: str) -> DatasetSplits:
    return load_dataset(name, data_root(), download=False)


def mnist() -> DatasetSplits:
    require_dataset("mnist")
    return _load("mnist")


def fashion_mnist() -> DatasetSplits:
    require_dataset("fashion-mnist")
    return _load("fashion-mnist")


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
