"""The triplet margin loss, from listed triplets or from per-pair counts (batch-all)."""

from __future__ import annotations

import torch

from ..mining import BatchAllCounts, Triplets


def triplet_hinges(dist: torch.Tensor, triplets: Triplets, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per triplet: (d(a,p) + margin) - d(a,n) (before the max with 0), d(a,p) and d(a,n).

    Written as (d(a,p) + margin) - d(a,n) so that "positive loss" is exactly d(a,n) < d(a,p) + margin
    in float32, the test the batch-all miner applies: mined set and loss agree bit for bit.

    Args:
        dist: (B, B) differentiable distances.
        triplets: indices into the batch.
        margin: the triplet margin.

    Returns:
        Three tensors of length ``len(triplets)``: hinge, d(a,p), d(a,n).
    """
    # One index_select on the flat matrix: its backward is one index_add into one (B, B) buffer,
    # about half the cost of two 2-D gathers (two zero-filled buffers, then their sum).
    b = dist.shape[1]
    anchor = triplets.anchor * b
    both = dist.reshape(-1).index_select(0, torch.cat([anchor + triplets.positive, anchor + triplets.negative]))
    d_ap, d_an = both.split(len(triplets))
    return (d_ap + margin) - d_an, d_ap, d_an


def triplet_margin_loss(dist: torch.Tensor, triplets: Triplets, margin: float) -> torch.Tensor:
    """Mean over ``triplets`` of max(d(a,p) - d(a,n) + margin, 0), gathered from ``dist``.

    With no triplets the result is a zero that still depends on ``dist``, so backward() works.
    """
    if len(triplets) == 0:
        return dist.sum() * 0.0
    return torch.relu(triplet_hinges(dist, triplets, margin)[0]).mean()


def counted_distance_sums(dist: torch.Tensor, counts: BatchAllCounts) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of d(a,p) and of d(a,n) over all counted triplets (differentiable)."""
    return (dist * counts.per_positive).sum(), (dist * counts.per_negative).sum()

