"""Semi-hard mining (FaceNet): per anchor-positive pair, the closest negative farther than the positive."""

from __future__ import annotations

import numpy as np
import torch

from .base import (
    MinerSpec,
    Triplets,
    as_long,
    check_inputs,
    empty_triplets,
    use_numpy_path,
)
from .rows import sorted_rows, sorted_rows_torch, to_float32, to_numpy


def mine_semihard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0, *, use_numpy: bool | None = None) -> Triplets:
    """One triplet per anchor-positive pair, with FaceNet's semi-hard negative.

    The negative is the closest one strictly farther than the positive, d(a,p) < d(a,n). When it
    is also within the margin it is the hardest semi-hard negative; when even the closest farther
    negative lies beyond the margin, there is no semi-hard negative and this zero-loss triplet
    stays (it counts in the mean, as in FaceNet and TF Addons' semi-hard loss).

    Fallback when no negative is farther than the positive: the *farthest* negative, the least
    hard of the hard ones (TF Addons' rule). The hardest negative instead would mine the
    collapsing direction early in training, when most pairs have no farther negative: FaceNet
    reports that hardest negatives early on lead to bad local minima and a collapsed model.

    Pairs whose anchor has no negative in the batch (single-class batch) give no triplet.

    Args:
        dist: (B, B) distances (read detached, as float32).
        labels: (B,) class labels.
        margin: unused: the rule does not depend on it (the signature is the miners' common one).
        use_numpy: force the numpy path (True) or the torch path (False); default numpy on CPU.

    Returns:
        The triplets, pairs in anchor order and, within an anchor, by ascending d(a,p).
    """
    if dist.shape[0] < 2:
        check_inputs(dist, labels)
        return empty_triplets(dist.device)
    if not use_numpy_path(dist, use_numpy):
        return _semihard_torch(dist, labels)
    d, lab = to_numpy(dist, labels)
    b = len(lab)
    # Negatives first at equal distance: a negative tied with the positive is not farther.
    rows = sorted_rows(d, lab, positives_first=False)
    positive, anchor = rows.positives()
    # Consecutive positives form runs. The entry after a run is the next negative for the whole
    # run, unless it is the row's last entry (the anchor itself): then no negative is farther,
    # and the entry before the run is the row's farthest negative, the fallback.
    starts = np.empty(len(positive), dtype=bool)
    starts[:1] = True
    np.not_equal(np.diff(positive), 1, out=starts[1:])
    first = np.flatnonzero(starts)
    lengths = np.diff(first, append=len(positive))
    run_first = positive[first]
    run_after = positive[first + lengths - 1] + 1
    row_start = anchor[first] * b
    ends_row = run_after == row_start + (b - 1)
    negative = np.repeat(np.where(ends_row, run_first - 1, run_after), lengths)
    no_negative = ends_row & (run_first == row_start)  # the whole row is positives
    if no_negative.any():
        keep = np.repeat(~no_negative, lengths)
        positive, negative, anchor = positive[keep], negative[keep], anchor[keep]
    return Triplets(
        as_long(anchor, dist.device),
        as_long(rows.columns(positive), dist.device),
        as_long(rows.columns(negative), dist.device),
    )


def _semihard_torch(dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """The numpy path's choice, computed in torch on the distances' device."""
    b = len(labels)
    rows = sorted_rows_torch(to_float32(dist, labels), labels, positives_first=False)
    positive, anchor = rows.positives()
    position = torch.arange(b, device=dist.device)
    is_negative = rows.negatives()
    # The next negative at or after each sorted position (b: none), by a reversed running minimum.
    next_negative = torch.where(is_negative, position, b).flip(1).cummin(dim=1).values.flip(1)
    farthest_negative = torch.where(is_negative, position, -1).max(dim=1).values
    chosen = next_negative.reshape(-1)[positive]
    chosen = torch.where(chosen == b, farthest_negative[anchor], chosen)
    keep = chosen >= 0  # -1: the anchor has no negative at all
    anchor, positive, chosen = anchor[keep], positive[keep], chosen[keep]
    return Triplets(anchor, rows.columns(positive), rows.columns(anchor * b + chosen))


MINER = MinerSpec(
    name="semihard",
    description="per anchor-positive pair, the closest negative farther than the positive (FaceNet)",
    can_collapse=False,
    loss_form="triplets",
    mine=mine_semihard,
)
