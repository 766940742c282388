"""Exact all-pairs verification, streamed: an update step over tiles of pairs and a compute step.

All N(N-1)/2 pair distances of a test set are produced tile by tile (``PairTiles``), so memory is a
tile plus fixed-size histograms, never N^2. Two accumulators take the tiles:

1. ``CoarseHistograms``: positive and negative counts per *coarse key* (the top bits of a
   distance's float32 bit pattern, 8192 keys per octave) plus float64 count, mean and sum of
   squared deviations of each class.
2. ``FineHistograms``: for a few chosen coarse keys, the count of every one of the 1024 float32
   values the key holds, so thresholds, VAL and EER equal those of sorting all distances.

Both are plain sums: ``a + b`` of accumulators fed disjoint tiles (other row blocks, another
process) equals one accumulator fed all of them, so the work can be split across chunks or
processes and merged before ``compute_all_pairs``. ``plan_refinement`` picks, from the merged coarse
counts, which keys the second pass refines. ``all_pairs`` runs the whole thing in one process.

Distances are float32, d = sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0)) from a matmul; another tiling (or a
full N x N matmul) may round a distance differently in its last bit.

On a GPU (``device="cuda"``, the default for :func:`all_pairs` where one is present) the tiles, the
square roots and both histograms stay on the device; only the finished histograms come back. Memory
there is one tile plus the histograms, whatever N is. CUDA's float32 square root is correctly
rounded like numpy's, so thresholds differ from the CPU's only where the matmul rounds differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from ...errors import UserError
from ..results import VerificationResult
from .conventions import (
    DEFAULT_FARS,
    OperatingPoint,
    allowed_false_accepts,
    check_embeddings,
    check_far,
    equal_error_rate,
    first_crossing,
    log_spaced_roc,
    operating_point,
    verification_result,
)

# A distance's coarse key is its float32 bit pattern >> FINE_BITS. Bit patterns order non-negative
# floats like their values, and each key holds exactly FLOATS_PER_BIN consecutive floats (relative
# width <= 1.2e-4), so a FLOATS_PER_BIN-slot fine histogram of one key is exact.
FINE_BITS = 10
FLOATS_PER_BIN = 1 << FINE_BITS
COARSE_KEY_COUNT = 1 << (31 - FINE_BITS)  # keys of all non-negative float32 values
_COARSE_KEY_MASK = COARSE_KEY_COUNT - 1  # also maps -0.0 to key 0


def coarse_keys(distances: torch.Tensor) -> torch.Tensor:
    """The coarse key of each float32 distance."""
    return distances.view(torch.int32).bitwise_right_shift(FINE_BITS).bitwise_and_(_COARSE_KEY_MASK)


def float_of(coarse_key: int, position: int) -> float:
    """The float32 value at ``position`` (0..1023) inside ``coarse_key``."""
    return float(np.array([(coarse_key << FINE_BITS) | position], dtype=np.int32).view(np.float32)[0])


# --------------------------------------------------------------------------- the pairs, tile by tile


class PairTiles:
    """The distances of all pairs i < j, tile by tile, each tile all-positive or all-negative.

    Embeddings are sorted by label, so same-class pairs form diagonal blocks. A row block [a, b)
    either lies inside one class or holds whole classes only; its pairs are the diagonal square
    [a, b) x [a, b) (above the diagonal, split by label), then the same-class rectangle up to the
    class end, then the all-negative rectangle to N. Iterating twice yields bit-identical values.
    """

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor, tile_rows: int = 256, tile_cols: int = 4096,
                 device: torch.device | str | None = None) -> None:
        if tile_rows < 1 or tile_cols < 1:
            raise ValueError("tile sizes must be positive")
        self.device = torch.device(device) if device is not None else embeddings.device
        labels = labels.cpu()
        order = torch.argsort(labels, stable=True)
        self.embeddings = embeddings.to(self.device)[order.to(self.device)].contiguous()
        self.squared_norms = self.embeddings.pow(2).sum(dim=1)
        sorted_labels = labels[order].numpy()
        self.labels = labels[order].to(self.device)
        n = len(sorted_labels)
        boundaries = np.flatnonzero(np.diff(sorted_labels)) + 1
        starts = np.concatenate([[0], boundaries])
        ends = np.concatenate([boundaries, [n]])
        class_of = np.repeat(np.arange(len(starts)), ends - starts)
        self.class_of, self.class_start, self.class_end = class_of.tolist(), starts[class_of].tolist(), ends[class_of].tolist()
        self.n, self.rows, self.cols = n, tile_rows, tile_cols
        # No distance exceeds twice the largest norm; the margin covers float32 rounding. Sizing the
        # histograms by it keeps them small (an out-of-range key would raise, not miscount).
        bound = np.float32(2.0 * float(self.squared_norms.max().sqrt()) * 1.001 + 1e-30)
        self.key_count = min(COARSE_KEY_COUNT, int(bound.view(np.int32) >> FINE_BITS) + 1)
        self.upper = torch.ones(tile_rows, tile_rows, dtype=torch.bool, device=self.device).triu_(1)
        # One reused output buffer: same shapes and addresses on every pass, so identical results.
        self.buffer = torch.empty(tile_rows * max(tile_rows, tile_cols), dtype=torch.float32, device=self.device)

    def _distances(self, a: int, b: int, c0: int, c1: int) -> torch.Tensor:
        out = self.buffer[: (b - a) * (c1 - c0)].view(b - a, c1 - c0)
        x, sq = self.embeddings, self.squared_norms
        torch.addmm(sq[None, c0:c1], x[a:b], x[c0:c1].T, alpha=-2.0, out=out)
        out.add_(sq[a:b, None]).clamp_min_(0.0)
        if out.device.type != "cpu":
            return out.sqrt_()  # CUDA's float32 sqrt is correctly rounded (IEEE), as numpy's is
        # numpy's float32 sqrt is correctly rounded; torch's vectorised one is 1 ulp off for ~20% of
        # values on some CPUs (measured on an AMD EPYC), which would make thresholds machine-dependent.
        values = out.numpy()
        np.sqrt(values, out=values)
        return out

    def row_blocks(self) -> list[tuple[int, int]]:
        """The row ranges [a, b) the tiles are cut from; split them to split the work."""
        blocks = []
        a = 0
        while a < self.n - 1:
            b = min(a + self.rows, self.n)
            if self.class_of[a] != self.class_of[b - 1] and self.class_end[b - 1] > b:
                b = self.class_start[b - 1]  # do not cut a class in a multi-class block
            blocks.append((a, b))
            a = b
        return blocks

    def tiles(self, row_blocks: Iterable[tuple[int, int]] | None = None) -> Iterator[tuple[torch.Tensor, bool]]:
        """Yield (distances as a contiguous 1-D tensor, is_positive); each valid until the next.

        Args:
            row_blocks: a subset of ``row_blocks()`` (default: all), e.g. one process's share.
        """
        for a, b in self.row_blocks() if row_blocks is None else row_blocks:
            class_end = self.class_end[b - 1]
            if b - a > 1:
                square = self._distances(a, b, a, b)
                upper = self.upper[: b - a, : b - a]
                if self.class_of[a] == self.class_of[b - 1]:
                    yield square[upper], True
                else:
                    same = self.labels[a:b, None] == self.labels[None, a:b]
                    yield square[upper & same], True
                    yield square[upper & ~same], False
            for c0 in range(b, class_end, self.cols):
                yield self._distances(a, b, c0, min(c0 + self.cols, class_end)).view(-1), True
            for c0 in range(class_end, self.n, self.cols):
                yield self._distances(a, b, c0, min(c0 + self.cols, self.n)).view(-1), False


# --------------------------------------------------------------------------- accumulators (update, +)


@dataclass
class DistanceMoments:
    """Count, mean and sum of squared deviations of distances, merged (Chan et al.) in float64."""

    count: int = 0
    mean: float = 0.0
    squared_deviations: float = 0.0

    def __add__(self, other: DistanceMoments) -> DistanceMoments:
        total = self.count + other.count
        if total == 0:
            return DistanceMoments()
        delta = other.mean - self.mean
        return DistanceMoments(
            total,
            self.mean + delta * other.count / total,
            self.squared_deviations + other.squared_deviations + delta * delta * (self.count * other.count / total),
        )

    def update(self, distances: torch.Tensor) -> None:
        """Add a tile of distances."""
        count = distances.numel()
        if count == 0:
            return
        tile_mean = float(distances.sum()) / count
        # Deviations from the tile's own mean: no catastrophic cancellation when std << mean.
        tile = DistanceMoments(count, tile_mean, float((distances - tile_mean).square_().sum()))
        merged = self + tile
        self.count, self.mean, self.squared_deviations = merged.count, merged.mean, merged.squared_deviations

    @property
    def std(self) -> float:
        """Population standard deviation (NaN when empty)."""
        return math.sqrt(max(self.squared_deviations, 0.0) / self.count) if self.count else math.nan


class CoarseHistograms:
    """Pass 1: positive and negative counts per coarse key, and the moments of each class."""

    def __init__(self, key_count: int, device: torch.device | str = "cpu") -> None:
        self.positive_counts = torch.zeros(key_count, dtype=torch.int64, device=device)
        self.negative_counts = torch.zeros(key_count, dtype=torch.int64, device=device)
        self.positive_moments = DistanceMoments()
        self.negative_moments = DistanceMoments()
        self._one = torch.ones(1, dtype=torch.int64, device=device)

    def update(self, distances: torch.Tensor, is_positive: bool) -> None:
        """Count a tile of float32 distances, all positive or all negative pairs."""
        if distances.numel() == 0:
            return
        (self.positive_moments if is_positive else self.negative_moments).update(distances)
        counts = self.positive_counts if is_positive else self.negative_counts
        # index_add_ into a persistent histogram is several times faster than torch.bincount here.
        counts.index_add_(0, coarse_keys(distances), self._one.expand(distances.numel()))

    def __add__(self, other: CoarseHistograms) -> CoarseHistograms:
        if len(self.positive_counts) != len(other.positive_counts):
            raise ValueError("coarse histograms of different key ranges: build both from the same PairTiles")
        merged = CoarseHistograms(len(self.positive_counts), self.positive_counts.device)
        merged.positive_counts = self.positive_counts + other.positive_counts
        merged.negative_counts = self.negative_counts + other.negative_counts
        merged.positive_moments = self.positive_moments + other.positive_moments
        merged.negative_moments = self.negative_moments + other.negative_moments
        return merged


class FineHistograms:
    """Pass 2: for each chosen coarse key, the count of each of its 1024 float32 values."""

    def __init__(self, refined_keys: np.ndarray, key_count: int, dtype: torch.dtype = torch.int64,
                 device: torch.device | str = "cpu") -> None:
        self.refined_keys = np.asarray(refined_keys, dtype=np.int64)
        self.key_count = key_count
        discard = len(self.refined_keys)  # every other key counts into one extra row: cheaper than selecting
        row_of_key = torch.full((key_count,), discard, dtype=torch.int32)
        row_of_key[torch.as_tensor(self.refined_keys)] = torch.arange(len(self.refined_keys), dtype=torch.int32)
        self._row_of_key = row_of_key.to(device)
        size = (len(self.refined_keys) + 1) * FLOATS_PER_BIN
        self._positive = torch.zeros(size, dtype=dtype, device=device)
        self._negative = torch.zeros(size, dtype=dtype, device=device)
        self._one = torch.ones(1, dtype=dtype, device=device)

    def update(self, distances: torch.Tensor, is_positive: bool) -> None:
        """Count a tile of float32 distances, all positive or all negative pairs."""
        if distances.numel() == 0:
            return
        cell = torch.index_select(self._row_of_key, 0, coarse_keys(distances))
        cell.mul_(FLOATS_PER_BIN).add_(distances.view(torch.int32).bitwise_and(FLOATS_PER_BIN - 1))  # row * 1024 + position
        (self._positive if is_positive else self._negative).index_add_(0, cell, self._one.expand(distances.numel()))

    def __add__(self, other: FineHistograms) -> FineHistograms:
        if not np.array_equal(self.refined_keys, other.refined_keys) or self.key_count != other.key_count:
            raise ValueError("fine histograms of different refined keys: build both from the same plan")
        merged = FineHistograms(self.refined_keys, self.key_count, self._positive.dtype, self._positive.device)
        merged._positive = self._positive + other._positive
        merged._negative = self._negative + other._negative
        return merged

    def _rows(self, counts: torch.Tensor) -> np.ndarray:
        return counts.view(-1, FLOATS_PER_BIN)[:-1].cpu().numpy()

    @property
    def positive_counts(self) -> np.ndarray:
        """(len(refined_keys), 1024) counts of positive distances."""
        return self._rows(self._positive)

    @property
    def negative_counts(self) -> np.ndarray:
        """(len(refined_keys), 1024) counts of negative distances."""
        return self._rows(self._negative)


Accumulator = TypeVar("Accumulator", CoarseHistograms, FineHistograms)


def accumulate(tiles: PairTiles, accumulator: Accumulator, row_blocks: Sequence[tuple[int, int]] | None = None) -> Accumulator:
    """Feed the tiles of ``row_blocks`` (default: all) to ``accumulator``; returns it."""
    for distances, is_positive in tiles.tiles(row_blocks):
        accumulator.update(distances, is_positive)
    return accumulator


# --------------------------------------------------------------------------- compute


class _OccupiedKeys:
    """Pass-1 counts over the occupied key range; index b below means coarse key first_key + b."""

    def __init__(self, coarse: CoarseHistograms) -> None:
        positives, negatives = coarse.positive_counts.cpu().numpy(), coarse.negative_counts.cpu().numpy()
        occupied = np.flatnonzero(positives | negatives)
        if len(occupied) == 0:
            raise ValueError("the coarse histograms are empty")
        self.first_key, end = int(occupied[0]), int(occupied[-1]) + 1
        self.positives, self.negatives = positives[self.first_key:end], negatives[self.first_key:end]
        # accepted_*[b]: pairs in bins 0..b, i.e. accepted by a threshold just above bin b.
        self.accepted_positives, self.accepted_negatives = np.cumsum(self.positives), np.cumsum(self.negatives)
        self.n_positive, self.n_negative = int(self.accepted_positives[-1]), int(self.accepted_negatives[-1])

    def bin_of_false_accept(self, k: int) -> int:
        """The bin holding the (k+1)-th smallest negative distance (k < n_negative)."""
        return int(np.searchsorted(self.accepted_negatives, k, side="right"))

    def eer_bin(self) -> int:
        return first_crossing(self.accepted_negatives, self.accepted_positives, self.n_negative, self.n_positive)


@dataclass
class RefinementPlan:
    """Which coarse keys pass 2 counts float by float, and the counter type that holds their counts."""

    refined_keys: np.ndarray
    dtype: torch.dtype

    def fine_histograms(self, key_count: int, device: torch.device | str = "cpu") -> FineHistograms:
        """An empty pass-2 accumulator for this plan."""
        return FineHistograms(self.refined_keys, key_count, self.dtype, device)


def plan_refinement(
    coarse: CoarseHistograms, fars: Iterable[float], *, exact_auc: bool = True, refine_bytes: int = 1 << 28
) -> RefinementPlan:
    """The keys to refine: those holding each FAR's threshold rank and the EER crossing and, with
    ``exact_auc``, the keys where positives and negatives overlap, largest first, up to ``refine_bytes``
    of counters."""
    bins = _OccupiedKeys(coarse)
    needed = {
        bins.bin_of_false_accept(k) for k in (allowed_false_accepts(f, bins.n_negative) for f in fars) if k < bins.n_negative
    }
    needed.add(bins.eer_bin())
    chosen = sorted(needed)
    # A fine count is at most its key's coarse count: int32 halves the memory traffic when it fits.
    fits_int32 = max(int(bins.positives.max()), int(bins.negatives.max())) < 1 << 31
    if exact_auc:
        counter_bytes = 4 if fits_int32 else 8
        rows = min(refine_bytes // (2 * FLOATS_PER_BIN * counter_bytes), (1 << 31) // FLOATS_PER_BIN - 2)  # row * 1024 fits int32
        budget = max(rows - len(chosen), 0)
        overlap = np.setdiff1d(np.flatnonzero((bins.positives > 0) & (bins.negatives > 0)), chosen)
        weight = bins.positives[overlap].astype(np.float64) * bins.negatives[overlap]
        chosen = sorted(chosen + overlap[np.argsort(-weight, kind="stable")[:budget]].tolist())
    return RefinementPlan(np.asarray(chosen, dtype=np.int64) + bins.first_key, torch.int32 if fits_int32 else torch.int64)


def compute_all_pairs(
    coarse: CoarseHistograms, fine: FineHistograms, far: float = 1e-3, fars: tuple[float, ...] = DEFAULT_FARS
) -> VerificationResult:
    """The verification result of merged pass-1 and pass-2 accumulators.

    Args:
        coarse: pass-1 counts and moments of every pair.
        fine: pass-2 counts of every pair, for a plan made from ``coarse`` with the same FARs.
        far: the headline target FAR.
        fars: the targets of ``val_at_far``.

    Returns:
        The all-pairs VerificationResult; AUC within ``auc_error_bound`` (0 when every overlapping key was refined).
    """
    check_far(far)
    bins = _OccupiedKeys(coarse)
    n_positive, n_negative = bins.n_positive, bins.n_negative
    refined = fine.refined_keys - bins.first_key
    fine_positives, fine_negatives = fine.positive_counts, fine.negative_counts
    if not (np.array_equal(fine_positives.sum(axis=1), bins.positives[refined])
            and np.array_equal(fine_negatives.sum(axis=1), bins.negatives[refined])):
        raise RuntimeError("the two passes over the pairs computed different distances")
    row_of_bin = {int(b): i for i, b in enumerate(refined)}

    def accepted_inside(b: int) -> tuple[np.ndarray, np.ndarray]:
        """Accepted (negatives, positives) below each of bin b's 1024 floats, and after the last."""
        if b not in row_of_bin:
            raise ValueError(f"coarse key {b + bins.first_key} was not refined: plan with the same FARs")
        row = row_of_bin[b]
        negatives_before, positives_before = (
            (int(bins.accepted_negatives[b - 1]), int(bins.accepted_positives[b - 1])) if b else (0, 0)
        )
        negatives = np.concatenate([[negatives_before], negatives_before + np.cumsum(fine_negatives[row], dtype=np.int64)])
        positives = np.concatenate([[positives_before], positives_before + np.cumsum(fine_positives[row], dtype=np.int64)])
        return negatives, positives

    def point(target: float) -> OperatingPoint:
        k = allowed_false_accepts(target, n_negative)
        if k >= n_negative:
            return operating_point(target, math.inf, n_positive, n_negative, n_positive, n_negative)
        b = bins.bin_of_false_accept(k)
        negatives, positives = accepted_inside(b)
        j = int(np.searchsorted(negatives, k, side="right")) - 1  # the bin's float holding the (k+1)-th negative
        return operating_point(
            target, float_of(bins.first_key + b, j), int(positives[j]), int(negatives[j]), n_positive, n_negative
        )

    main = point(far)
    points = {f"{f:g}": point(f) for f in fars}

    # EER: the exact ROC points inside the crossing bin, after the bin's predecessor point.
    negatives, positives = accepted_inside(bins.eer_bin())
    i = first_crossing(negatives, positives, n_negative, n_positive)
    eer = equal_error_rate(
        (int(negatives[i - 1]), int(positives[i - 1])), (int(negatives[i]), int(positives[i])), n_negative, n_positive
    )

    # AUC: negatives in later bins beat a positive outright; inside a refined bin, negatives at
    # later floats do and equal floats tie; unrefined bins count each (positive, negative) as a tie.
    wins = float(np.dot(bins.positives.astype(np.float64), (n_negative - bins.accepted_negatives).astype(np.float64)))
    for start in range(0, len(refined), 1024):  # in chunks, to bound the temporaries
        chunk = slice(start, start + 1024)
        chunk_positives, chunk_negatives = fine_positives[chunk].astype(np.float64), fine_negatives[chunk].astype(np.float64)
        negatives_later = bins.negatives[refined[chunk], None] - np.cumsum(chunk_negatives, axis=1)
        wins += float((chunk_positives * negatives_later).sum() + 0.5 * (chunk_positives * chunk_negatives).sum())
    unrefined = np.ones(len(bins.positives), dtype=bool)
    unrefined[refined] = False
    tied_in_unrefined = float((bins.positives[unrefined].astype(np.float64) * bins.negatives[unrefined]).sum())
    pairs = float(n_positive) * float(n_negative)

    positive_moments, negative_moments = coarse.positive_moments, coarse.negative_moments
    return verification_result(
        "all-pairs",
        main,
        points,
        n_positive=n_positive,
        n_negative=n_negative,
        auc=(wins + 0.5 * tied_in_unrefined) / pairs,
        auc_error_bound=0.5 * tied_in_unrefined / pairs,
        eer=eer,
        positive_stats=(positive_moments.mean, positive_moments.std),
        negative_stats=(negative_moments.mean, negative_moments.std),
        roc=log_spaced_roc(
            np.concatenate([[0.0], bins.accepted_negatives / n_negative]),
            np.concatenate([[0.0], bins.accepted_positives / n_positive]),
        ),
        histogram=_plot_histogram(bins),
    )


def _plot_histogram(bins: _OccupiedKeys, plot_bins: int = 100) -> dict[str, list[float]]:
    """Re-bin the coarse keys onto ``plot_bins`` equal-width bins from 0 for drawing.

    Each coarse key (relative width <= 1.2e-4) goes wholly to the plot bin holding its lower edge.
    """
    keys = np.arange(bins.first_key, bins.first_key + len(bins.positives) + 1, dtype=np.int64)
    key_edges = (keys << FINE_BITS).astype(np.int32).view(np.float32).astype(np.float64)
    top = float(key_edges[-1]) or 1.0
    edges = np.linspace(0.0, top, plot_bins + 1)
    which = np.clip(np.searchsorted(edges, key_edges[:-1], side="right") - 1, 0, plot_bins - 1)
    return {
        "bin_edges": edges.tolist(),
        "positive": np.bincount(which, weights=bins.positives, minlength=plot_bins).astype(np.int64).tolist(),
        "negative": np.bincount(which, weights=bins.negatives, minlength=plot_bins).astype(np.int64).tolist(),
    }


def count_pairs(labels: torch.Tensor) -> tuple[int, int]:
    """(positive, negative) pair counts of a labelling, without enumerating pairs."""
    sizes = torch.unique(labels, return_counts=True)[1].to(torch.float64)
    n = len(labels)
    n_positive = int((sizes * (sizes - 1) / 2).sum())
    return n_positive, n * (n - 1) // 2 - n_positive


def all_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    far: float = 1e-3,
    fars: tuple[float, ...] = DEFAULT_FARS,
    *,
    exact_auc: bool = True,
    tile_rows: int | None = None,
    tile_cols: int = 4096,
    refine_bytes: int = 1 << 28,
    device: torch.device | str | None = None,
) -> VerificationResult:
    """Exact verification over all N(N-1)/2 pairs of a test set, in two streaming passes.

    Memory is one tile (``tile_rows`` x ``tile_cols``) plus fixed-size histograms. Pass 1 fills
    ``CoarseHistograms``; pass 2 recomputes the same tiles into ``FineHistograms`` for the keys that
    hold each FAR's threshold rank and the EER crossing (so thresholds, VAL, accuracy, FAR reached and
    EER are exact, equal to sorting all distances) and, with ``exact_auc``, the keys where positives
    and negatives overlap, largest first, up to ``refine_bytes`` of counters (32768 keys at the
    default 256 MiB). Pairs sharing an unrefined key count as half a win in the AUC, which is then off
    by at most ``auc_error_bound``. ROC points and the plot histogram come from the coarse keys.

    Args:
        embeddings: (N, D) embeddings.
        labels: (N,) integer class labels.
        far: the headline target FAR, in [0, 1].
        fars: the targets of ``val_at_far``.
        exact_auc: refine overlapping keys so the AUC is exact (within the byte budget).
        tile_rows, tile_cols: the tile shape (rows default: 256 on the CPU, 2048 on a GPU, where
            larger tiles keep it busy; a 2048 x 4096 tile is 32 MiB).
        refine_bytes: the budget of pass-2 counters.
        device: where tiles and histograms are computed (default: a CUDA GPU if there is one, else
            the embeddings' device).

    Returns:
        A VerificationResult with protocol "all-pairs".
    """
    check_far(far)
    embeddings, labels = check_embeddings(embeddings, labels)
    n_positive, n_negative = count_pairs(labels)
    if n_positive == 0 or n_negative == 0:  # checked before the long passes, not after
        raise UserError(f"all-pairs evaluation needs positive and negative pairs, got {n_positive} and {n_negative}")
    if device is not None:
        where = torch.device(device)
    else:
        where = torch.device("cuda") if torch.cuda.is_available() else embeddings.device
    tiles = PairTiles(embeddings, labels, tile_rows or (2048 if where.type == "cuda" else 256), tile_cols, where)
    coarse = accumulate(tiles, CoarseHistograms(tiles.key_count, where))
    if (coarse.positive_moments.count, coarse.negative_moments.count) != (n_positive, n_negative):
        raise RuntimeError("the pair tiles did not cover every pair exactly once")
    plan = plan_refinement(coarse, (far, *fars), exact_auc=exact_auc, refine_bytes=refine_bytes)
    fine = accumulate(tiles, plan.fine_histograms(tiles.key_count, where))
    return compute_all_pairs(coarse, fine, far, fars)
