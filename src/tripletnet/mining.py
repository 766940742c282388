"""Online triplet miners: choose (anchor, positive, negative) index triplets from one batch.

Each miner takes the batch's (B, B) distance matrix and labels and returns :class:`Triplets`.
Mining is a choice, not a computation to differentiate, so it runs on detached distances.
Everything is vectorised over the batch; only batch-all loops, over chunks of pairs, for memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class Triplets(NamedTuple):
    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.anchor.numel())


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    positive = same.clone()
    positive.fill_diagonal_(False)
    return positive, ~same


def mine_semihard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """One triplet per anchor-positive pair, with FaceNet's semi-hard negative.

    The negative is the closest one farther than the positive, d(a,p) < d(a,n): when it is also
    within the margin it is the hardest semi-hard negative; when it lies beyond the margin the
    triplet is easy (zero loss) and still counts in the mean, as in FaceNet's implementation.
    Fallback when no negative is farther than the positive: the farthest negative, the least
    hard of the hard ones (the hardest would push towards collapse early in training).
    Pairs whose anchor has no negative in the batch give no triplet.
    """
    dist = dist.detach()
    pos_mask, neg_mask = _masks(labels)
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    # Each anchor's negative distances in ascending order, non-negatives pushed to the end.
    sorted_neg, order = torch.where(neg_mask, dist, inf).sort(dim=1)
    n_neg = neg_mask.sum(dim=1)
    # For every (a, j): position of the first negative strictly farther than d(a, j).
    first_farther = torch.searchsorted(sorted_neg, dist.contiguous(), right=True)
    anchor, positive = torch.nonzero(pos_mask & (n_neg > 0)[:, None], as_tuple=True)
    position = first_farther[anchor, positive]
    has_farther = position < n_neg[anchor]
    fallback = n_neg[anchor] - 1  # farthest negative
    position = torch.where(has_farther, position, fallback)
    negative = order[anchor, position]
    return Triplets(anchor, positive, negative)


def mine_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """Batch hard (Hermans et al. 2017): per anchor, its farthest positive and closest negative."""
    dist = dist.detach()
    pos_mask, neg_mask = _masks(labels)
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    hardest_positive = torch.where(pos_mask, dist, -1.0).argmax(dim=1)
    hardest_negative = torch.where(neg_mask, dist, float("inf")).argmin(dim=1)
    anchor = torch.nonzero(valid).flatten()
    return Triplets(anchor, hardest_positive[anchor], hardest_negative[anchor])


def mine_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float, chunk_elements: int = 1 << 24) -> Triplets:
    """Every valid triplet with positive loss: d(a,p) - d(a,n) + margin > 0.

    Works per anchor-positive pair against all B candidates, in chunks of pairs so that at most
    ``chunk_elements`` losses exist at once; only the active triplets are kept.
    """
    dist = dist.detach()
    pos_mask, neg_mask = _masks(labels)
    anchor, positive = torch.nonzero(pos_mask, as_tuple=True)
    pairs_per_chunk = max(1, chunk_elements // max(1, dist.shape[0]))
    found: list[Triplets] = []
    for start in range(0, len(anchor), pairs_per_chunk):
        a = anchor[start : start + pairs_per_chunk]
        p = positive[start : start + pairs_per_chunk]
        losses = dist[a, p][:, None] - dist[a] + margin
        pair, negative = torch.nonzero((losses > 0) & neg_mask[a], as_tuple=True)
        found.append(Triplets(a[pair], p[pair], negative))
    if not found:
        empty = torch.empty(0, dtype=torch.int64, device=dist.device)
        return Triplets(empty, empty, empty)
    return Triplets(*(torch.cat(parts) for parts in zip(*found)))


Miner = Callable[[torch.Tensor, torch.Tensor, float], Triplets]

MINERS: dict[str, Miner] = {
    "semihard": mine_semihard,
    "hard": mine_hard,
    "batch_all": mine_batch_all,
}
