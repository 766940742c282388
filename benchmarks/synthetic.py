"""Seeded synthetic embeddings and labels, identical in every process that asks for the same ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_labels(n: int, classes: int = 10) -> torch.Tensor:
    """P x K labels: class i % classes for item i, so every class has n // classes or one more."""
    return torch.arange(n, dtype=torch.int64) % classes


def random_unit_embeddings(n: int, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Unit vectors spread uniformly over the sphere (what an untrained network produces)."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=gen), dim=1)


def clustered_embeddings(labels: torch.Tensor, dim: int = 64, noise: float = 0.12, seed: int = 0) -> torch.Tensor:
    """Unit vectors scattered around one random centre per class, like a trained embedding.

    ``noise`` is the per-coordinate standard deviation added to the unit centres; at 0.12 in 64-d
    the classes overlap enough that verification at FAR 1e-3 is neither trivial nor hopeless.
    """
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(int(labels.max()) + 1, dim, generator=gen), dim=1)
    points = centres[labels] + noise * torch.randn(len(labels), dim, generator=gen)
    return F.normalize(points, dim=1)
