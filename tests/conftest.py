"""Shared fixtures: the datasets (skipped with a reason when absent), and strict skips under CI."""

from __future__ import annotations

import pytest

from tripletnet.data import DatasetSplits

from _mnist import fashion_mnist as _fashion_mnist
from _mnist import mnist as _mnist
from _mnist import mnist_slice as _mnist_slice
from _strict_skips import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]  # hooks: pytest finds them by name here


@pytest.fixture(scope="session")
def mnist() -> DatasetSplits:
    """All of MNIST from $TRIPLETNET_DATA (or ../shared/datasets); the test is skipped if it is absent."""
    return _mnist()


@pytest.fixture(scope="session")
def fashion_mnist() -> DatasetSplits:
    """All of Fashion-MNIST; the test is skipped if it is absent."""
    return _fashion_mnist()


@pytest.fixture
def mnist_slice() -> DatasetSplits:
    """The first 2,048 training and 500 test images of MNIST: enough to train a step or two."""
    return _mnist_slice()
