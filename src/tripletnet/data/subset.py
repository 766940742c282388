"""Class-stratified subsets: ``--num_images N`` keeps each class's share of the full set."""

from __future__ import annotations

import torch

from ..errors import UserError


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``n`` items whose class counts match the full set's proportions.

    Counts are rounded by largest remainder so they add up to exactly ``n``; which items of a class
    are kept is drawn from ``seed``.
    """
    total = len(labels)
    if not 0 < n <= total:
        raise UserError(f"--num_images must be between 1 and {total}, got {n}")
    if n == total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    ideal = counts.to(torch.float64) * n / total
    take = ideal.floor().to(torch.int64)
    shortfall = n - int(take.sum())
    if shortfall:
        # Largest remainders first; ties broken by class order (stable sort) for reproducibility.
        order = torch.sort(ideal - take, descending=True, stable=True).indices
        take[order[:shortfall]] += 1
    chosen = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.sort(torch.cat(chosen)).values
