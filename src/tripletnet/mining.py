"""Online triplet miners: choose (anchor, positive, negative) index triplets from one batch.

Each miner takes the batch's (B, B) distance matrix and labels and returns :class:`Triplets`.
Mining is a choice, not a computation to differentiate, so it runs on detached distances.
Everything is vectorised over the batch; only batch-all loops, over chunks of pairs, for memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
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
    # numpy's row sort is several times faster than torch's on CPU at these sizes, and mining
    # needs no gradient; float64 keeps the row shifts below exact.
    d = dist.detach().to("cpu", torch.float64).numpy()
    lab = labels.cpu().numpy()
    b = len(lab)
    neg = lab[:, None] != lab[None, :]
    pos = ~neg
    np.fill_diagonal(pos, False)
    n_neg = neg.sum(axis=1)
    anchor, positive = np.nonzero(pos & (n_neg > 0)[:, None])
    # Each anchor's negatives in ascending order; other entries pushed past the end.
    sentinel = (d.max() if d.size else 0.0) + 1.0
    masked = np.where(neg, d, sentinel)
    order = np.argsort(masked, axis=1)
    ranked = np.take_along_axis(masked, order, axis=1)
    # One flat searchsorted for every pair: shifting row r by r * stride keeps rows apart.
    stride = sentinel + 1.0
    shift = np.arange(b) * stride
    flat = (ranked + shift[:, None]).ravel()
    first_farther = np.searchsorted(flat, d[anchor, positive] + shift[anchor], side="right") - anchor * b
    farthest = n_neg[anchor] - 1
    negative = order[anchor, np.where(first_farther < n_neg[anchor], first_farther, farthest)]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(dist.device)  # noqa: E731
    return Triplets(as_tensor(anchor), as_tensor(positive), as_tensor(negative))


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
