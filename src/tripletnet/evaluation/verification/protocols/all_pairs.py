"""Protocol "all-pairs": every pair of the test set, exact, streamed (the default)."""

from __future__ import annotations

import torch

from ...results import VerificationResult
from ..streaming import all_pairs
from .base import Protocol


def _run(embeddings: torch.Tensor, labels: torch.Tensor, *, far: float, n_pairs: int | None, seed: int) -> VerificationResult:
    return all_pairs(embeddings, labels, far=far)  # every pair: nothing to draw, so neither n_pairs nor seed


ALL_PAIRS = Protocol(
    name="all-pairs",
    description="every pair of the test set, exact (default)",
    run=_run,
)
