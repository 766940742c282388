"""The per-epoch validation loss: the triplet loss on fixed random test triplets."""

from __future__ import annotations

import torch

from ..models import EmbeddingNet, embed_images


def draw_validation_triplets(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` fixed random (anchor, positive, negative) index triplets, drawn once from the seed.

    Args:
        labels: (N,) labels of the images the triplets index.
        count: how many triplets.
        seed: the run's seed (the draw uses its own generator).

    Returns:
        (count, 3) int64 indices.
    """
    gen = torch.Generator().manual_seed(seed + 12_345)
    labels = labels.to(torch.int64)
    triplets: list[tuple[int, int, int]] = []
    while len(triplets) < count:
        anchor = int(torch.randint(len(labels), (1,), generator=gen))
        same = torch.nonzero(labels == labels[anchor]).flatten()
        same = same[same != anchor]
        other = torch.nonzero(labels != labels[anchor]).flatten()
        if len(same) == 0 or len(other) == 0:
            continue
        positive = same[torch.randint(len(same), (1,), generator=gen)]
        negative = other[torch.randint(len(other), (1,), generator=gen)]
        triplets.append((anchor, int(positive), int(negative)))
    return torch.tensor(triplets, dtype=torch.int64)


def validation_loss(model: EmbeddingNet, images: torch.Tensor, triplets: torch.Tensor, margin: float) -> float:
    """Mean max(d(a,p) - d(a,n) + margin, 0) over ``triplets`` of ``images``, embedded in eval mode.

    Args:
        model: the network.
        images: uint8 images the triplets index.
        triplets: (T, 3) anchor, positive, negative indices.
        margin: the triplet margin.

    Returns:
        The mean hinge as a float.
    """
    emb = embed_images(model, images[triplets.flatten()]).view(len(triplets), 3, -1)
    d_ap = (emb[:, 0] - emb[:, 1]).norm(dim=1)
    d_an = (emb[:, 0] - emb[:, 2]).norm(dim=1)
    return float(torch.relu(d_ap - d_an + margin).mean())
