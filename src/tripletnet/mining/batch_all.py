"""Batch-all mining: every valid triplet with positive loss, listed or (for the loss) counted."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .base import (
    BatchAllCounts,
    MinerSpec,
    Triplets,
    as_long,
    check_inputs,
    empty_triplets,
    use_numpy_path,
)
from .rows import (
    Array,
    Rows,
    arange_like,
    cumsum,
    flatnonzero,
    repeat,
    sorted_rows,
    sorted_rows_torch,
    to_float32,
    to_numpy,
)


class _ActiveRows(NamedTuple):
    rows: Rows
    positive: Array  # flat positions of the positive entries (a, p), row by row, ascending
    anchor: Array  # their anchors
    active: Array  # how many negatives (the anchor's closest ones) make a positive loss with each


def _active_rows(dist: torch.Tensor, labels: torch.Tensor, margin: float, numpy_path: bool) -> _ActiveRows:
    """Rows sorted with positives keyed by d(a,p) + margin instead of d(a,p).

    (a, p, n) has positive loss (d(a,p) + margin) - d(a,n) > 0 exactly when d(a,n) sorts before
    the float32 value d(a,p) + margin (the rounding of :func:`~tripletnet.losses.triplet_margin_loss`),
    so the negatives before a positive in its row are its active ones. Positives sort first at a
    tie: d(a,n) == d(a,p) + margin gives zero loss, not an active triplet.
    """
    if numpy_path:
        d, lab = to_numpy(dist, labels)
        same = lab[:, None] == lab[None, :]
        rows = sorted_rows(np.where(same, d + np.float32(margin), d), lab, positives_first=True)
    else:
        d32 = to_float32(dist, labels)
        rows = sorted_rows_torch(torch.where(labels[:, None] == labels[None, :], d32 + margin, d32), labels, positives_first=True)
    positive, anchor = rows.positives()
    num_positives = rows.num_positives
    rank = arange_like(len(positive), positive) - (cumsum(num_positives) - num_positives)[anchor]
    return _ActiveRows(rows, positive, anchor, positive - anchor * len(labels) - rank)


def mine_batch_all(
    dist: torch.Tensor, labels: torch.Tensor, margin: float, chunk_elements: int = 1 << 22, *, use_numpy: bool | None = None
) -> Triplets:
    """Every valid triplet with positive loss: (d(a,p) + margin) - d(a,n) > 0.

    A pair's active negatives are its anchor's closest ones, so each anchor-positive pair's
    triplets are a prefix of the anchor's sorted negatives: only active triplets are ever built.
    They are written into preallocated outputs in chunks of about ``chunk_elements`` triplets,
    so temporaries stay bounded; the output itself is 24 bytes per triplet (with random
    embeddings at batch 1024 that is ~95 million triplets, ~2.3 GB): training never lists them,
    it uses :func:`count_batch_all`.

    Args:
        dist: (B, B) distances (read detached, as float32).
        labels: (B,) class labels.
        margin: the triplet margin.
        chunk_elements: triplets written per chunk on the numpy path (bounds the temporaries).
        use_numpy: force the numpy path (True) or the torch path (False); default numpy on CPU.

    Returns:
        The triplets, ordered by anchor, then positive by ascending d(a,p), then negative by ascending d(a,n).
    """
    b = dist.shape[0]
    if b < 2:
        check_inputs(dist, labels)
        return empty_triplets(dist.device)
    numpy_path = use_numpy_path(dist, use_numpy)
    found = _active_rows(dist, labels, margin, numpy_path)
    rows = found.rows
    negatives = rows.keys[rows.negatives()] & rows.column_mask  # each row's negatives, ascending
    num_negatives = (b - 1) - rows.num_positives
    keep = found.active > 0
    anchor, active = found.anchor[keep], found.active[keep]
    positive = rows.columns(found.positive[keep])
    first_negative = (cumsum(num_negatives) - num_negatives)[anchor]
    ends = cumsum(active)
    if not numpy_path:  # the torch path builds the list in one piece
        pair = repeat(arange_like(len(active), active), active)
        k = arange_like(len(pair), pair) - (ends - active)[pair]
        return Triplets(anchor[pair], positive[pair], negatives[first_negative[pair] + k])
    total = int(ends[-1]) if len(ends) else 0
    out_a, out_p, out_n = (np.empty(total, dtype=np.int64) for _ in range(3))
    # Cut the pairs where the output crosses multiples of chunk_elements.
    cuts = np.unique(np.searchsorted(ends, np.arange(0, total, max(1, chunk_elements)), side="right"))
    # With no triplets ``cuts`` is empty while the stops keep len(ends): nothing to write, so no strict zip.
    for lo, hi in zip(cuts, [*cuts[1:], len(ends)], strict=False):
        start = int(ends[lo - 1]) if lo else 0
        stop = int(ends[hi - 1])
        pair = np.repeat(np.arange(lo, hi), active[lo:hi])
        k = np.arange(start, stop) - (ends[pair] - active[pair])  # k-th output of a pair ...
        out_a[start:stop] = anchor[pair]
        out_p[start:stop] = positive[pair]
        out_n[start:stop] = negatives[first_negative[pair] + k]  # ... is its k-th closest negative
    return Triplets(as_long(out_a, dist.device), as_long(out_p, dist.device), as_long(out_n, dist.device))


def count_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float, *, use_numpy: bool | None = None) -> BatchAllCounts:
    """The triplets of :func:`mine_batch_all` as per-pair counts, in O(B^2) memory.

    The batch-all loss is linear in the distances once the active set is known:
    sum over active (a,p,n) of (d(a,p) + margin - d(a,n)) =
    sum(per_positive * dist) - sum(per_negative * dist) + margin * total.
    So the loss and its gradient need only the counts, never the list (~95 million triplets at
    batch 1024, ~1.5 billion at 4096).

    Args:
        dist: (B, B) distances (read detached, as float32).
        labels: (B,) class labels.
        margin: the triplet margin.
        use_numpy: force the numpy path (True) or the torch path (False); default numpy on CPU.

    Returns:
        The counts, float32 tensors on ``dist``'s device.
    """
    b = dist.shape[0]
    if b < 2:
        check_inputs(dist, labels)
        zeros = torch.zeros(b, b, device=dist.device)
        return BatchAllCounts(zeros, zeros.clone(), 0)
    numpy_path = use_numpy_path(dist, use_numpy)
    found = _active_rows(dist, labels, margin, numpy_path)
    rows = found.rows
    # A negative is active with the positives sorted after it in its row.
    negative = flatnonzero(rows.negatives())
    num_negatives = (b - 1) - rows.num_positives
    anchor = repeat(arange_like(b, negative), num_negatives)
    negatives_before = arange_like(len(negative), negative) - (cumsum(num_negatives) - num_negatives)[anchor]
    positives_before = negative - anchor * b - negatives_before
    positive_entries = found.anchor * b + rows.columns(found.positive)
    negative_entries = anchor * b + rows.columns(negative)
    per_negative = rows.num_positives[anchor] - positives_before
    if numpy_path:
        counts = np.zeros((2, b, b), dtype=np.float32)
        counts[0].ravel()[positive_entries] = found.active
        counts[1].ravel()[negative_entries] = per_negative
        both = torch.from_numpy(counts).to(dist.device)
    else:
        both = torch.zeros(2, b * b, dtype=torch.float32, device=dist.device)
        both[0, positive_entries] = found.active.to(torch.float32)
        both[1, negative_entries] = per_negative.to(torch.float32)
        both = both.view(2, b, b)
    return BatchAllCounts(both[0], both[1], int(found.active.sum()))


MINER = MinerSpec(
    name="batch_all",
    description="every valid triplet with positive loss; its loss is computed from per-pair counts, never a list",
    can_collapse=False,
    loss_form="counts",
    mine=mine_batch_all,
    count=count_batch_all,
)
