"""Pairwise Euclidean distances from the Gram matrix, with a finite gradient at d = 0."""

from __future__ import annotations

import torch

# Below this squared distance we treat d as 0: sqrt's gradient 1/(2 sqrt(x)) would be inf at 0.
_EPS = 1e-12


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances; the diagonal and identical rows are exactly 0.

    One matmul instead of B^2 differences: ||a||^2 + ||b||^2 - 2 a.b, clamped at 0 against rounding.
    Entries at (numerically) zero distance get a zero gradient instead of NaN.
    """
    squared_norms = embeddings.pow(2).sum(dim=1)
    gram = embeddings @ embeddings.T
    squared = (squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram).clamp_min(0.0)
    squared = squared.clone()
    squared.fill_diagonal_(0.0)
    positive = squared > _EPS
    return torch.sqrt(squared.clamp_min(_EPS)) * positive
