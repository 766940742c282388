"""The triplet margin loss over mined triplets, and the per-step statistics the trainer logs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .distances import pairwise_distances
from .mining import MINERS, BatchAllCounts, Triplets, count_batch_all


def _hinges(dist: torch.Tensor, triplets: Triplets, margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per triplet: (d(a,p) + margin) - d(a,n) (before the max with 0), d(a,p) and d(a,n).

    Written as (d(a,p) + margin) - d(a,n) so that "positive loss" is exactly d(a,n) < d(a,p) + margin
    in float32, the test the batch-all miner applies: mined set and loss agree bit for bit.
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
    return torch.relu(_hinges(dist, triplets, margin)[0]).mean()


def _batch_all_sums(dist: torch.Tensor, counts: BatchAllCounts) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of d(a,p) and of d(a,n) over all active triplets."""
    return (dist * counts.per_positive).sum(), (dist * counts.per_negative).sum()


@dataclass
class StepStats:
    """What one training step measured (plain floats, ready to log).

    ``mean_pos_dist`` and ``mean_neg_dist`` are NaN when nothing was mined.
    """

    loss: float
    active_fraction: float  # share of mined triplets with positive loss
    mean_pos_dist: float  # mean d(a,p) over mined triplets
    mean_neg_dist: float  # mean d(a,n) over mined triplets
    num_triplets: int
    embedding_spread: float  # mean distance of the embeddings from their batch mean


def embedding_spread(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean distance of the embeddings from their centroid: 0 when every input maps to the same
    point (collapse); for unit vectors at most 1, and ~1 when they are spread over the sphere."""
    return (embeddings - embeddings.mean(dim=0)).norm(dim=1).mean()


def _nothing_mined(dist: torch.Tensor, spread: torch.Tensor) -> tuple[torch.Tensor, StepStats]:
    """A zero loss that still backpropagates, and statistics that say nothing was mined."""
    return dist.sum() * 0.0, StepStats(0.0, 0.0, math.nan, math.nan, 0, float(spread))


def triplet_step(embeddings: torch.Tensor, labels: torch.Tensor, miner: str, margin: float) -> tuple[torch.Tensor, StepStats]:
    """Distances once, mine, loss, statistics: what the training loop calls every step.

    ``miner`` is a key of :data:`~tripletnet.mining.MINERS`. Batch-all is the one miner whose
    triplets are too many to list (~95 million at batch 1024), so here it is computed from
    :func:`~tripletnet.mining.count_batch_all`: the same loss, gradient and statistics as
    :func:`triplet_margin_loss` over ``mine_batch_all``'s list. One host sync for the statistics.
    """
    if miner not in MINERS:
        raise ValueError(f"unknown miner {miner!r}; choose from {', '.join(MINERS)}")
    dist = pairwise_distances(embeddings)
    with torch.no_grad():
        spread = embedding_spread(embeddings.detach())
    if miner == "batch_all":
        counts = count_batch_all(dist, labels, margin)
        if counts.total == 0:
            return _nothing_mined(dist, spread)
        pos_sum, neg_sum = _batch_all_sums(dist, counts)  # the loss's own terms give the statistics
        loss = (pos_sum - neg_sum) / counts.total + margin
        with torch.no_grad():
            values = torch.stack([loss, pos_sum / counts.total, neg_sum / counts.total, spread]).tolist()
        # Every batch-all triplet has positive loss by construction: the active fraction is 1.
        return loss, StepStats(values[0], 1.0, values[1], values[2], counts.total, values[3])

    triplets = MINERS[miner](dist, labels, margin)
    if len(triplets) == 0:
        return _nothing_mined(dist, spread)
    hinge, d_ap, d_an = _hinges(dist, triplets, margin)
    loss = torch.relu(hinge).mean()
    with torch.no_grad():
        active = (hinge > 0).float().mean()
        values = torch.stack([loss.detach(), active, d_ap.mean(), d_an.mean(), spread]).tolist()
    return loss, StepStats(values[0], values[1], values[2], values[3], len(triplets), values[4])


# Collapse thresholds, for unit-norm embeddings (spread ~0.9-1 when healthy, at most 1).
# Measured on a Fashion-MNIST run that collapsed under hard mining: spread 0.97 -> 0.22 -> 0.06
# in two epochs, with the loss stuck just above the margin and the mined pairs at d ~ 0.05.
COLLAPSE_SPREAD = 0.1  # embeddings within ~0.1 of their mean: every input maps near one point
STUCK_LOSS = 0.9  # loss >= 0.9 * margin: no triplet is being separated ...
STUCK_DISTANCE = 0.1  # ... while positives and negatives are both within 0.1 * margin of their anchor


def is_collapsed(stats: StepStats, margin: float) -> bool:
    """True when the embeddings have (nearly) collapsed to one point.

    Either the spread is below ``COLLAPSE_SPREAD``, or the loss is stuck at the margin
    (>= ``STUCK_LOSS`` * margin) with mean d(a,p) and d(a,n) both below ``STUCK_DISTANCE`` * margin:
    the hinge is then ~margin for every triplet, whose gradient cannot separate anything.
    NaN statistics (nothing mined) never count as collapse by themselves.
    """
    if stats.embedding_spread < COLLAPSE_SPREAD:
        return True
    near = STUCK_DISTANCE * margin
    return stats.loss >= STUCK_LOSS * margin and stats.mean_pos_dist < near and stats.mean_neg_dist < near
