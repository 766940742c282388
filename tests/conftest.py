"""Shared fixtures: the datasets (skipped with a reason when absent), and strict skips under CI."""

from __future__ import annotations

import os

import pytest

from tripletnet.data import DatasetSplits

from _mnist import fashion_mnist as _fashion_mnist
from _mnist import mnist as _mnist
from _mnist import mnist_slice as _mnist_slice
from _strict_skips import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]  # hooks: pytest finds them by name here


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n auto``) each worker takes its share of the cores, in-process and, through
    OMP_NUM_THREADS, in the commands its tests start: torch would otherwise give every worker all of them,
    and oversubscribed OpenMP threads wait for each other. Tests that pass ``--threads`` keep their value."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _auto_precision_as_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process training resolves ``--precision auto`` to fp32 on every CPU, so that no assertion
    depends on which kind of CPU runs the suite (bf16 changes the numerics: a best epoch, a collapse).
    Tests of the rule itself patch ``native_bf16`` again or ``monkeypatch.undo()`` this; tests that
    train in a subprocess pass ``--precision fp32``. `.ci/run-as-bf16-cpu` runs the suite as if the
    CPU had native bf16, which is how this is checked on a machine without it."""
    from tripletnet.training import loop

    real = loop.native_bf16
    monkeypatch.setattr(loop, "native_bf16", lambda device: device.type != "cpu" and real(device))


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
