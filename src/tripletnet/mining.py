"""Online triplet miners: choose (anchor, positive, negative) index triplets from one batch.

Each miner takes the batch's (B, B) distance matrix, the labels and the margin, and returns
:class:`Triplets`. Mining is a choice, not something to differentiate: miners read detached
distances. Nothing loops over anchors.

Semi-hard and batch-all mining rest on one O(B^2 log B) step, :func:`_sorted_rows`: each
anchor's row sorted once, negatives and positives together. In that order, "the first negative
farther than this positive" and "how many negatives are closer than d(a,p) + margin" are counts
read off a cumulative sum, so no (B, B, B) tensor and no per-pair search is needed. The sort runs
in numpy on packed int64 keys (value bits | tie bit | column): a value-only sort is several times
faster than torch's or numpy's argsort on CPU, and the packed ties make strict inequalities exact.
These two miners therefore make their decisions on float32 distances, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch


class Triplets(NamedTuple):
    """Index triplets into the batch: three int64 tensors of equal length."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.anchor.numel())


class BatchAllCounts(NamedTuple):
    """Batch-all triplets as counts instead of a list (see :func:`count_batch_all`).

    ``per_positive[a, p]``: how many negatives n make (a, p, n) a triplet with positive loss;
    ``per_negative[a, n]``: how many positives p do; both (B, B) float32, zero elsewhere.
    ``total`` is the number of such triplets.
    """

    per_positive: torch.Tensor
    per_negative: torch.Tensor
    total: int


def _check(dist: torch.Tensor, labels: torch.Tensor) -> None:
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1] or labels.shape != (dist.shape[0],):
        raise ValueError(f"need a (B, B) distance matrix and B labels, got {tuple(dist.shape)} and {tuple(labels.shape)}")


def _to_numpy(dist: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    _check(dist, labels)
    d = dist.detach().to("cpu", torch.float32).contiguous().numpy()
    return d, labels.detach().cpu().numpy()


def _as_long(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64)).to(device)


def _empty_triplets(device: torch.device) -> Triplets:
    empty = torch.empty(0, dtype=torch.int64, device=device)
    return Triplets(empty, empty, empty)


class _Rows(NamedTuple):
    """Every anchor's row sorted ascending as packed keys, its own entry moved to the end."""

    keys: np.ndarray  # (B, B) int64: value bits | tie bit | column; last column is the anchor
    is_positive: np.ndarray  # (B, B) bool; False in the last column
    column_mask: int
    num_positives: np.ndarray  # (B,) positives per anchor

    def positives(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat positions of the positives, row by row and ascending, and their anchors."""
        anchor = np.repeat(np.arange(len(self.keys)), self.num_positives)  # cheaper than // B
        return np.flatnonzero(self.is_positive), anchor

    def columns(self, flat_positions: np.ndarray) -> np.ndarray:
        return self.keys.ravel()[flat_positions] & self.column_mask

    def negatives(self) -> np.ndarray:
        """(B, B) bool: the negatives (neither a positive nor the anchor itself)."""
        negative = ~self.is_positive
        negative[:, -1] = False
        return negative


def _sorted_rows(values: np.ndarray, labels: np.ndarray, positives_first: bool) -> _Rows:
    """Sort each row of ``values`` (non-negative float32; negative ones count as 0).

    At equal values an anchor's positives sort before its negatives when ``positives_first``,
    else after them. One int64 sort of packed keys, no argsort.
    """
    b = len(labels)
    column_bits = max(1, (b - 1).bit_length())
    tie_bit = 1 << column_bits
    # Non-negative float32 bit patterns order like the floats; 31 bits + tie bit + column fit int64.
    keys = values.view(np.int32).astype(np.int64)
    np.maximum(keys, 0, out=keys)
    np.left_shift(keys, column_bits + 1, out=keys)
    # The low bits depend on the anchor only through its class: build one row per class.
    classes, class_of, class_size = np.unique(labels, return_inverse=True, return_counts=True)
    later = classes[:, None] != labels[None, :] if positives_first else classes[:, None] == labels[None, :]
    low = np.arange(b, dtype=np.int64) | (later.astype(np.int64) << column_bits)
    np.bitwise_or(keys, low[class_of.ravel()], out=keys)
    np.fill_diagonal(keys, np.iinfo(np.int64).max)  # the anchor itself sorts last
    keys.sort(axis=1)
    later_entries = (keys & tie_bit) != 0
    is_positive = ~later_entries if positives_first else later_entries
    is_positive[:, -1] = False
    return _Rows(keys, is_positive, tie_bit - 1, class_size[class_of.ravel()] - 1)


def mine_semihard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
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
    ``margin`` is unused: the rule does not depend on it (the signature is the miners' common one).
    """
    if dist.shape[0] < 2:
        _check(dist, labels)
        return _empty_triplets(dist.device)
    d, lab = _to_numpy(dist, labels)
    b = len(lab)
    # Negatives first at equal distance: a negative tied with the positive is not farther.
    rows = _sorted_rows(d, lab, positives_first=False)
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
        _as_long(anchor, dist.device),
        _as_long(rows.columns(positive), dist.device),
        _as_long(rows.columns(negative), dist.device),
    )


def mine_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """Batch hard (Hermans et al. 2017): per anchor, its farthest positive and closest negative.

    Anchors without a positive or without a negative in the batch are skipped. ``margin`` is
    unused (the signature is the miners' common one).
    """
    d, lab = _to_numpy(dist, labels)  # checks the shapes
    b = len(lab)
    if b < 2:
        return _empty_triplets(dist.device)
    # uint32 keys: the float bits (ordered like non-negative floats) with the top bit set on
    # same-class entries. Then one argmin finds the closest negative and one argmax the farthest
    # positive, no masked copies; numpy's SIMD argmin/argmax are ~7x faster than torch's here.
    keys = np.maximum(d.view(np.int32), 0).view(np.uint32)
    classes, class_of = np.unique(lab, return_inverse=True)
    flag = (classes[:, None] == lab[None, :]).astype(np.uint32) << 31
    np.bitwise_or(keys, flag[class_of.ravel()], out=keys)
    rows = np.arange(b)
    negative = keys.argmin(axis=1)
    has_negative = keys[rows, negative] < (1 << 31)
    np.fill_diagonal(keys, 0)  # the anchor is not its own positive
    positive = keys.argmax(axis=1)
    anchor = np.flatnonzero(has_negative & (keys[rows, positive] >= (1 << 31)))
    return Triplets(_as_long(anchor, dist.device), _as_long(positive[anchor], dist.device), _as_long(negative[anchor], dist.device))


class _BatchAllRows(NamedTuple):
    rows: _Rows
    positive: np.ndarray  # flat positions of the positive entries (a, p), row by row, ascending
    anchor: np.ndarray  # their anchors
    active: np.ndarray  # how many negatives (the anchor's closest ones) make a positive loss with each
    num_positives: np.ndarray  # (B,) positives per anchor


def _batch_all_rows(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> _BatchAllRows:
    """Rows sorted with positives keyed by d(a,p) + margin instead of d(a,p).

    (a, p, n) has positive loss (d(a,p) + margin) - d(a,n) > 0 exactly when d(a,n) sorts before
    the float32 value d(a,p) + margin (the rounding of :func:`~tripletnet.losses.triplet_margin_loss`),
    so the negatives before a positive in its row are its active ones.
    """
    d, lab = _to_numpy(dist, labels)
    b = len(lab)
    same = lab[:, None] == lab[None, :]
    # Positives first at a tie: d(a,n) == d(a,p) + margin gives zero loss, not an active triplet.
    rows = _sorted_rows(np.where(same, d + np.float32(margin), d), lab, positives_first=True)
    positive, anchor = rows.positives()
    num_positives = rows.num_positives
    rank = np.arange(len(positive)) - (np.cumsum(num_positives) - num_positives)[anchor]
    return _BatchAllRows(rows, positive, anchor, positive - anchor * b - rank, num_positives)


def mine_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float, chunk_elements: int = 1 << 22) -> Triplets:
    """Every valid triplet with positive loss: (d(a,p) + margin) - d(a,n) > 0.

    A pair's active negatives are its anchor's closest ones, so each anchor-positive pair's
    triplets are a prefix of the anchor's sorted negatives: only active triplets are ever built.
    They are written into preallocated outputs in chunks of about ``chunk_elements`` triplets,
    so temporaries stay bounded; the output itself is 24 bytes per triplet (with random
    embeddings at batch 1024 that is ~95 million triplets, ~2.3 GB).
    """
    b = dist.shape[0]
    if b < 2:
        _check(dist, labels)
        return _empty_triplets(dist.device)
    found = _batch_all_rows(dist, labels, margin)
    rows = found.rows
    negatives = rows.keys[rows.negatives()] & rows.column_mask  # each row's negatives, ascending
    num_negatives = (b - 1) - found.num_positives
    keep = found.active > 0
    anchor, active = found.anchor[keep], found.active[keep]
    positive = rows.columns(found.positive[keep])
    first_negative = (np.cumsum(num_negatives) - num_negatives)[anchor]
    ends = np.cumsum(active)
    total = int(ends[-1]) if len(ends) else 0
    out_a, out_p, out_n = (np.empty(total, dtype=np.int64) for _ in range(3))
    # Cut the pairs where the output crosses multiples of chunk_elements.
    cuts = np.unique(np.searchsorted(ends, np.arange(0, total, max(1, chunk_elements)), side="right"))
    for lo, hi in zip(cuts, [*cuts[1:], len(ends)]):
        start = int(ends[lo - 1]) if lo else 0
        stop = int(ends[hi - 1])
        pair = np.repeat(np.arange(lo, hi), active[lo:hi])
        k = np.arange(start, stop) - (ends[pair] - active[pair])  # k-th output of a pair ...
        out_a[start:stop] = anchor[pair]
        out_p[start:stop] = positive[pair]
        out_n[start:stop] = negatives[first_negative[pair] + k]  # ... is its k-th closest negative
    return Triplets(_as_long(out_a, dist.device), _as_long(out_p, dist.device), _as_long(out_n, dist.device))


def count_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> BatchAllCounts:
    """The triplets of :func:`mine_batch_all` as per-pair counts, in O(B^2) memory.

    The batch-all loss is linear in the distances once the active set is known:
    sum over active (a,p,n) of (d(a,p) + margin - d(a,n)) =
    sum(per_positive * dist) - sum(per_negative * dist) + margin * total.
    So the loss and its gradient need only the counts, never the list (~95 million triplets at
    batch 1024, ~1.5 billion at 4096).
    """
    b = dist.shape[0]
    counts = np.zeros((2, b, b), dtype=np.float32)
    total = 0
    if b >= 2:
        found = _batch_all_rows(dist, labels, margin)
        rows = found.rows
        counts[0].ravel()[found.anchor * b + rows.columns(found.positive)] = found.active
        # A negative is active with the positives sorted after it in its row.
        negative = np.flatnonzero(rows.negatives())
        num_negatives = (b - 1) - found.num_positives
        anchor = np.repeat(np.arange(b), num_negatives)
        negatives_before = np.arange(len(negative)) - (np.cumsum(num_negatives) - num_negatives)[anchor]
        positives_before = negative - anchor * b - negatives_before
        counts[1].ravel()[anchor * b + rows.columns(negative)] = found.num_positives[anchor] - positives_before
        total = int(found.active.sum())
    else:
        _check(dist, labels)
    both = torch.from_numpy(counts).to(dist.device)
    return BatchAllCounts(both[0], both[1], total)


Miner = Callable[[torch.Tensor, torch.Tensor, float], Triplets]

MINERS: dict[str, Miner] = {
    "semihard": mine_semihard,
    "hard": mine_hard,
    "batch_all": mine_batch_all,
}
