"""Verification metrics: is a pair of images the same class? (the FaceNet protocol)

Conventions used everywhere in this module
------------------------------------------
* Distances are Euclidean. A pair is *accepted* (predicted "same class") when ``d < t``.
* The threshold at a target false-accept rate ``far`` is the largest t such that
  #(negative pairs with d < t) / #(negative pairs) <= far. Sort the negative distances
  n_0 <= n_1 <= ... and let k be the largest integer with k / n_negative <= far (the division done
  in float64, as scikit-learn computes its FPR, so FAR 0.1 on 30 negatives allows exactly 3).
  Then t = n_k: every t > n_k accepts n_0..n_k, which is k + 1 negatives, and t = n_k accepts only
  the negatives strictly below it. Negatives tied with n_k are rejected, so with ties fewer than k
  may be accepted; ``far_reached`` reports what was. k = 0 (a FAR too small to allow a single
  false accept) gives t = the smallest negative distance, accepting no negative, and VAL counts
  the positives strictly below it. far >= 1 gives t = +inf: everything is accepted.
* VAL = TP / (TP + FN), the fraction of positive pairs with d < t; accuracy = (TP + TN) / pairs;
  FAR reached = FP / (FP + TN).
* ROC AUC = P(d_neg > d_pos) + 0.5 * P(d_neg == d_pos): the area under the step ROC of "d < t".
* EER: the ROC has the point (FAR 0, FRR 1) plus one point per distinct distance v (accept
  d <= v). The EER is where FAR and FRR = 1 - VAL cross: linearly interpolated between the first
  point with FAR >= FRR and the point before it.
* Distance means and standard deviations are population statistics (ddof = 0).

Two implementations give the same numbers. ``verify_distances`` works on explicit arrays of pair
distances (random pairs and k-fold, whose distances are computed in float64); ``all_pairs``
streams all N(N-1)/2 pairs of a test set in tiles of the distance matrix, so memory is bounded by
a tile rather than by N^2. Its distances are float32 from a matmul, and its results are exactly
those of sorting them all; another tiling (or a full N x N matmul) may round a distance
differently in its last bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import UserError

DEFAULT_FARS = (1e-2, 1e-3, 1e-4, 1e-5)

# all_pairs bins a distance by its float32 bit pattern, which orders non-negative floats like their
# values: coarse key = bits >> 10 gives 8192 bins per octave (relative width <= 1.2e-4), and each
# bin holds exactly 1024 representable floats, so a 1024-slot sub-histogram of a bin is exact.
_SHIFT = 10
_SUB = 1 << _SHIFT
_KEYS = 1 << (31 - _SHIFT)  # keys of all non-negative float32 values; the mask also maps -0.0 to key 0
_KEY_MASK = _KEYS - 1


def allowed_false_accepts(far: float, n_negative: int) -> int:
    """The largest k in [0, n_negative] with k / n_negative <= far, the division done in float64."""
    if n_negative <= 0:
        return 0
    if far >= 1:
        return n_negative
    k = min(n_negative, max(0, int(math.floor(far * n_negative))))
    # far * n can land one ulp off an integer; settle it with the same division sklearn's FPR uses.
    while k < n_negative and (k + 1) / n_negative <= far:
        k += 1
    while k > 0 and k / n_negative > far:
        k -= 1
    return k


@dataclass
class OperatingPoint:
    """The outcome of the classifier "accept d < threshold" on a set of pairs."""

    far_target: float
    threshold: float
    val: float  # TP / (TP + FN)
    far: float  # FP / (FP + TN), as reached
    accuracy: float  # (TP + TN) / all pairs
    true_accepts: int
    false_accepts: int


def _point(far: float, threshold: float, tp: int, fp: int, n_pos: int, n_neg: int) -> OperatingPoint:
    return OperatingPoint(far, threshold, tp / n_pos, fp / n_neg, (tp + n_neg - fp) / (n_pos + n_neg), tp, fp)


@dataclass
class VerificationResult:
    """Verification metrics of one set of pairs; see the module docstring for the definitions."""

    protocol: str
    n_pairs: int
    n_positive: int
    n_negative: int
    far: float  # the target
    threshold: float
    val: float
    accuracy: float
    far_reached: float
    auc: float
    auc_error_bound: float  # 0.0 when the AUC is exact; otherwise |auc - exact AUC| <= this
    eer: float
    positive_mean: float
    positive_std: float
    negative_mean: float
    negative_std: float
    val_at_far: dict[str, float] = field(default_factory=dict)  # "0.001" -> VAL at that FAR
    threshold_at_far: dict[str, float] = field(default_factory=dict)
    roc_far: list[float] = field(default_factory=list)  # a few hundred ROC points, log-spaced in FAR
    roc_val: list[float] = field(default_factory=list)
    histogram: dict[str, list[float]] = field(default_factory=dict)  # bin_edges, positive, negative (for plots)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- shared pieces


def _check_far(far: float) -> None:
    if not 0 <= far <= 1:
        raise UserError(f"FAR must be in [0, 1], got {far}")


def _far_warning(far: float, n_negative: int, what: str = "negative pairs") -> str | None:
    if n_negative and 1.0 / n_negative > far:
        return (
            f"{n_negative:,} {what} cannot resolve FAR {far:g} (one false accept is already {1 / n_negative:.1e}); "
            "the threshold is the smallest negative distance"
        )
    return None


def _first_crossing(cum_neg: np.ndarray, cum_pos: np.ndarray, n_neg: int, n_pos: int) -> int:
    """First index where FAR >= FRR, i.e. cum_neg/n_neg >= 1 - cum_pos/n_pos, decided in exact integers.

    cum_neg and cum_pos are non-decreasing accepted counts and the last entry accepts everything.
    """
    target = float(n_pos) * float(n_neg)
    approx = cum_neg.astype(np.float64) * n_pos + cum_pos.astype(np.float64) * n_neg  # monotone, may round

    def crossed(i: int) -> bool:
        return int(cum_neg[i]) * n_pos + int(cum_pos[i]) * n_neg >= n_pos * n_neg

    i = min(int(np.searchsorted(approx, target, side="left")), len(cum_neg) - 1)
    while i > 0 and crossed(i - 1):
        i -= 1
    while not crossed(i):
        i += 1
    return i


def _eer_between(neg0: int, pos0: int, neg1: int, pos1: int, n_neg: int, n_pos: int) -> float:
    """Linear interpolation of FAR = FRR between ROC point 0 (FAR < FRR) and point 1 (FAR >= FRR)."""
    far0, far1 = neg0 / n_neg, neg1 / n_neg
    gap0 = far0 - (1.0 - pos0 / n_pos)
    gap1 = far1 - (1.0 - pos1 / n_pos)
    w = 1.0 if gap1 == gap0 else -gap0 / (gap1 - gap0)
    return far0 + w * (far1 - far0)


def _log_spaced_roc(far: np.ndarray, val: np.ndarray, points: int = 400) -> tuple[list[float], list[float]]:
    """ROC points (non-decreasing FAR) thinned to about ``points``, dense at small FAR for a log axis."""
    positive = np.flatnonzero(far > 0)
    if len(positive) == 0:
        return [0.0, 1.0], [float(val[-1]), 1.0]
    grid = np.geomspace(far[positive[0]], 1.0, points)
    idx = np.unique(np.clip(np.searchsorted(far, grid, side="right") - 1, 0, len(far) - 1))
    return far[idx].tolist(), val[idx].tolist()


# --------------------------------------------------------------------------- explicit pair distances


def threshold_at_far(neg_distances: np.ndarray | torch.Tensor, far: float) -> float:
    """The largest t with #(negatives with d < t) / #negatives <= far (+inf when far allows all)."""
    neg = np.sort(np.asarray(neg_distances, dtype=np.float64).ravel())
    if len(neg) == 0:
        raise UserError("a threshold at a FAR needs at least one negative pair")
    k = allowed_false_accepts(far, len(neg))
    return float(neg[k]) if k < len(neg) else math.inf


def _operating_point(sorted_pos: np.ndarray, sorted_neg: np.ndarray, far: float) -> OperatingPoint:
    n_pos, n_neg = len(sorted_pos), len(sorted_neg)
    k = allowed_false_accepts(far, n_neg)
    threshold = float(sorted_neg[k]) if k < n_neg else math.inf
    tp = int(np.searchsorted(sorted_pos, threshold, side="left"))
    fp = int(np.searchsorted(sorted_neg, threshold, side="left"))
    return _point(far, threshold, tp, fp, n_pos, n_neg)


def verify_distances(
    pos_distances: np.ndarray | torch.Tensor,
    neg_distances: np.ndarray | torch.Tensor,
    far: float = 1e-3,
    protocol: str = "pairs",
    fars: tuple[float, ...] = DEFAULT_FARS,
) -> VerificationResult:
    """Exact verification metrics (AUC and EER included) from explicit positive and negative distances."""
    _check_far(far)
    pos = np.sort(np.asarray(pos_distances, dtype=np.float64).ravel())
    neg = np.sort(np.asarray(neg_distances, dtype=np.float64).ravel())
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"verification needs positive and negative pairs, got {n_pos} and {n_neg}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise UserError("pair distances contain NaN or infinite values")
    main = _operating_point(pos, neg, far)
    points = {f"{f:g}": _operating_point(pos, neg, f) for f in fars}

    # One ROC point per distinct distance v: accept d <= v.
    values = np.unique(np.concatenate([pos, neg]))
    cum_neg = np.concatenate([[0], np.searchsorted(neg, values, side="right")])
    cum_pos = np.concatenate([[0], np.searchsorted(pos, values, side="right")])
    i = _first_crossing(cum_neg, cum_pos, n_neg, n_pos)
    eer = _eer_between(int(cum_neg[i - 1]), int(cum_pos[i - 1]), int(cum_neg[i]), int(cum_pos[i]), n_neg, n_pos)

    # AUC: for each positive, the negatives above it, plus half the negatives tied with it.
    below = np.searchsorted(neg, pos, side="left")
    not_above = np.searchsorted(neg, pos, side="right")
    wins = float((n_neg - not_above).sum()) + 0.5 * float((not_above - below).sum())

    curve_far, curve_val = _log_spaced_roc(cum_neg / n_neg, cum_pos / n_pos)
    edges = np.linspace(0.0, float(values[-1]) * 1.02 or 1.0, 101)
    return VerificationResult(
        protocol=protocol,
        n_pairs=n_pos + n_neg,
        n_positive=n_pos,
        n_negative=n_neg,
        far=far,
        threshold=main.threshold,
        val=main.val,
        accuracy=main.accuracy,
        far_reached=main.far,
        auc=wins / (float(n_pos) * n_neg),
        auc_error_bound=0.0,
        eer=eer,
        positive_mean=float(pos.mean()),
        positive_std=float(pos.std()),
        negative_mean=float(neg.mean()),
        negative_std=float(neg.std()),
        val_at_far={key: p.val for key, p in points.items()},
        threshold_at_far={key: p.threshold for key, p in points.items()},
        roc_far=curve_far,
        roc_val=curve_val,
        histogram={
            "bin_edges": edges.tolist(),
            "positive": np.histogram(pos, edges)[0].tolist(),
            "negative": np.histogram(neg, edges)[0].tolist(),
        },
        warning=_far_warning(far, n_neg),
    )


# --------------------------------------------------------------------------- all pairs, streamed


def _check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels)
    if embeddings.ndim != 2:
        raise UserError(f"embeddings must be an N x D matrix, got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise UserError(f"need one label per embedding, got {tuple(labels.shape)} labels for {len(embeddings)} embeddings")
    if labels.is_floating_point() or labels.is_complex():
        raise UserError("labels must be integers")
    embeddings = embeddings.detach().to(torch.float32).cpu()
    if not torch.isfinite(embeddings).all():
        raise UserError("embeddings contain NaN or infinite values")
    return embeddings, labels.detach().cpu().to(torch.int64)


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations, merged tile by tile (Chan et al.) in float64."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: torch.Tensor) -> None:
        m = values.numel()
        if m == 0:
            return
        tile_mean = float(values.sum()) / m
        # Deviations from the tile's own mean: no catastrophic cancellation when std << mean.
        tile_m2 = float((values - tile_mean).square_().sum())
        delta = tile_mean - self.mean
        total = self.n + m
        self.mean += delta * m / total
        self.m2 += tile_m2 + delta * delta * (self.n * m / total)
        self.n = total

    @property
    def std(self) -> float:
        return math.sqrt(max(self.m2, 0.0) / self.n) if self.n else math.nan


class _PairTiles:
    """The distances of all pairs i < j, tile by tile, each tile all-positive or all-negative.

    Embeddings are sorted by label, so same-class pairs form diagonal blocks. A row block [a, b)
    either lies inside one class or holds whole classes only; its pairs are the diagonal square
    [a, b) x [a, b) (above the diagonal, split by label), then the same-class rectangle up to the
    class end e, then the all-negative rectangle [e, N). Iterating twice yields bit-identical values.
    """

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor, tile_rows: int, tile_cols: int) -> None:
        if tile_rows < 1 or tile_cols < 1:
            raise ValueError("tile sizes must be positive")
        order = torch.argsort(labels, stable=True)
        self.x = embeddings[order].contiguous()
        self.sq = self.x.pow(2).sum(dim=1)
        self.labels = labels[order]
        sorted_labels = self.labels.numpy()
        n = len(sorted_labels)
        boundaries = np.flatnonzero(np.diff(sorted_labels)) + 1
        starts = np.concatenate([[0], boundaries])
        ends = np.concatenate([boundaries, [n]])
        class_of = np.repeat(np.arange(len(starts)), ends - starts)
        self.class_of, self.start_of, self.end_of = class_of.tolist(), starts[class_of].tolist(), ends[class_of].tolist()
        self.n, self.rows, self.cols = n, tile_rows, tile_cols
        # No distance exceeds twice the largest norm; the margin covers float32 rounding. Sizing the
        # histograms by it keeps them small (an out-of-range key would raise, not miscount).
        bound = np.float32(2.0 * float(self.sq.max().sqrt()) * 1.001 + 1e-30)
        self.n_keys = min(_KEYS, int(bound.view(np.int32) >> _SHIFT) + 1)
        self.upper = torch.ones(tile_rows, tile_rows, dtype=torch.bool).triu_(1)
        # One reused output buffer: same shapes and addresses on every pass, so identical results.
        self.buffer = torch.empty(tile_rows * max(tile_rows, tile_cols), dtype=torch.float32)

    def _distances(self, a: int, b: int, c0: int, c1: int) -> torch.Tensor:
        out = self.buffer[: (b - a) * (c1 - c0)].view(b - a, c1 - c0)
        torch.addmm(self.sq[None, c0:c1], self.x[a:b], self.x[c0:c1].T, alpha=-2.0, out=out)
        out.add_(self.sq[a:b, None]).clamp_min_(0.0)
        # numpy's float32 sqrt is correctly rounded; torch's vectorised one is 1 ulp off for ~20% of
        # values on some CPUs (measured on an AMD EPYC), which would make thresholds machine-dependent.
        values = out.numpy()
        np.sqrt(values, out=values)
        return out

    def row_blocks(self) -> Iterator[tuple[int, int]]:
        a, n = 0, self.n
        while a < n - 1:
            b = min(a + self.rows, n)
            if self.class_of[a] != self.class_of[b - 1] and self.end_of[b - 1] > b:
                b = self.start_of[b - 1]  # do not cut a class in a multi-class block
            yield a, b
            a = b

    def __iter__(self) -> Iterator[tuple[torch.Tensor, bool]]:
        """Yield (distances as a contiguous 1-D tensor, is_positive); valid until the next item."""
        for a, b in self.row_blocks():
            e = self.end_of[b - 1]
            if b - a > 1:
                square = self._distances(a, b, a, b)
                upper = self.upper[: b - a, : b - a]
                if self.class_of[a] == self.class_of[b - 1]:
                    yield square[upper], True
                else:
                    same = self.labels[a:b, None] == self.labels[None, a:b]
                    yield square[upper & same], True
                    yield square[upper & ~same], False
            for c0 in range(b, e, self.cols):
                yield self._distances(a, b, c0, min(c0 + self.cols, e)).view(-1), True
            for c0 in range(e, self.n, self.cols):
                yield self._distances(a, b, c0, min(c0 + self.cols, self.n)).view(-1), False


def _coarse_keys(values: torch.Tensor) -> torch.Tensor:
    return values.view(torch.int32).bitwise_right_shift(_SHIFT).bitwise_and_(_KEY_MASK)


def _float_of(key: int, sub: int) -> float:
    return float(np.array([(key << _SHIFT) | sub], dtype=np.int32).view(np.float32)[0])


def _counting_pass(tiles: _PairTiles) -> tuple[np.ndarray, np.ndarray, _Moments, _Moments]:
    """Histograms of positive and negative distances over the coarse keys, and their moments."""
    hist = {True: torch.zeros(tiles.n_keys, dtype=torch.int64), False: torch.zeros(tiles.n_keys, dtype=torch.int64)}
    moments = {True: _Moments(), False: _Moments()}
    one = torch.ones(1, dtype=torch.int64)
    for values, positive in tiles:
        if values.numel() == 0:
            continue
        moments[positive].add(values)
        # index_add_ into a persistent histogram is several times faster than torch.bincount here.
        hist[positive].index_add_(0, _coarse_keys(values), one.expand(values.numel()))
    return hist[True].numpy(), hist[False].numpy(), moments[True], moments[False]


def _refining_pass(tiles: _PairTiles, bins: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Exact sub-histograms (len(bins) x 1024, positive and negative) of the given coarse keys.

    ``dtype`` must hold the largest pass-1 bin count (int32 halves the memory traffic when it can).
    """
    trash = len(bins)  # every other key goes to one extra slot: cheaper than selecting the wanted values
    slot = torch.full((tiles.n_keys,), trash, dtype=torch.int32)
    slot[torch.as_tensor(bins, dtype=torch.int64)] = torch.arange(len(bins), dtype=torch.int32)
    size = (len(bins) + 1) * _SUB
    sub = {True: torch.zeros(size, dtype=dtype), False: torch.zeros(size, dtype=dtype)}
    one = torch.ones(1, dtype=dtype)
    for values, positive in tiles:
        if values.numel() == 0:
            continue
        code = torch.index_select(slot, 0, _coarse_keys(values))
        code.mul_(_SUB).add_(values.view(torch.int32).bitwise_and(_SUB - 1))  # slot * 1024 + position in the bin
        sub[positive].index_add_(0, code, one.expand(values.numel()))
    shape = (len(bins) + 1, _SUB)
    return sub[True].view(shape)[:-1].numpy(), sub[False].view(shape)[:-1].numpy()


def all_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    far: float = 1e-3,
    fars: tuple[float, ...] = DEFAULT_FARS,
    *,
    exact_auc: bool = True,
    tile_rows: int = 256,
    tile_cols: int = 4096,
    refine_bytes: int = 1 << 28,
) -> VerificationResult:
    """Exact verification over all N(N-1)/2 pairs of a test set, in two streaming passes.

    Distances are float32, d = sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0)), computed tile by tile with
    a matmul; memory is one tile (``tile_rows`` x ``tile_cols``) plus fixed-size histograms,
    never N^2. Pass 1 histograms positive and negative distances by the top bits of their float32
    bit pattern (8192 bins per octave) and accumulates float64 means and variances. Pass 2
    recomputes the same tiles and counts, for a few chosen bins, every one of the 1024 floats a
    bin can hold: the bins holding each FAR's threshold rank and the EER crossing (so thresholds,
    VAL, accuracy, FAR reached and EER are exact, equal to sorting all distances) and, with
    ``exact_auc``, the bins where positives and negatives overlap, largest first, up to
    ``refine_bytes`` of counters (32768 bins at the default 256 MiB). Pairs sharing an unrefined bin are
    counted as half a win in the AUC, which is then off by at most ``auc_error_bound`` (0 when every
    overlapping bin was refined). ROC points and the plot histogram come from the pass-1 bins.
    """
    _check_far(far)
    embeddings, labels = _check_embeddings(embeddings, labels)
    n = len(embeddings)
    sizes = torch.unique(labels, return_counts=True)[1].to(torch.float64)
    n_pos = int((sizes * (sizes - 1) / 2).sum())
    n_neg = n * (n - 1) // 2 - n_pos
    if n_pos == 0 or n_neg == 0:  # checked before the long passes, not after
        raise UserError(f"all-pairs evaluation needs positive and negative pairs, got {n_pos} and {n_neg}")
    tiles = _PairTiles(embeddings, labels, tile_rows, tile_cols)
    pos_hist, neg_hist, pos_moments, neg_moments = _counting_pass(tiles)
    if (pos_moments.n, neg_moments.n) != (n_pos, n_neg):
        raise RuntimeError("the pair tiles did not cover every pair exactly once")

    # Work on the occupied key range only; bin b below means coarse key lo + b.
    occupied = np.flatnonzero(pos_hist | neg_hist)
    lo, hi = int(occupied[0]), int(occupied[-1]) + 1
    p, q = pos_hist[lo:hi], neg_hist[lo:hi]
    cum_p, cum_q = np.cumsum(p), np.cumsum(q)
    targets = {f: allowed_false_accepts(f, n_neg) for f in dict.fromkeys((far, *fars))}
    needed = {int(np.searchsorted(cum_q, k, side="right")) for k in targets.values() if k < n_neg}
    eer_bin = _first_crossing(cum_q, cum_p, n_neg, n_pos)
    needed.add(eer_bin)
    chosen = sorted(needed)
    # A sub-histogram slot is one float value, so its count is at most its bin's count.
    small = max(int(p.max()), int(q.max())) < 1 << 31
    if exact_auc:
        slots = min(refine_bytes // (2 * _SUB * (4 if small else 8)), (1 << 31) // _SUB - 2)  # slot * 1024 fits int32
        budget = max(slots - len(chosen), 0)
        overlap = np.setdiff1d(np.flatnonzero((p > 0) & (q > 0)), chosen)
        weight = p[overlap].astype(np.float64) * q[overlap]
        chosen = sorted(chosen + overlap[np.argsort(-weight, kind="stable")[:budget]].tolist())
    refined = np.asarray(chosen, dtype=np.int64)
    ps, qs = _refining_pass(tiles, refined + lo, torch.int32 if small else torch.int64)
    if not (np.array_equal(ps.sum(axis=1), p[refined]) and np.array_equal(qs.sum(axis=1), q[refined])):
        raise RuntimeError("the two passes over the pairs computed different distances")
    slot_of = {int(b): i for i, b in enumerate(refined)}

    def inside(b: int) -> tuple[np.ndarray, np.ndarray]:
        """Accepted (negatives, positives) at each of bin b's 1024 floats, counting from 0."""
        s = slot_of[b]
        fp_before, tp_before = (int(cum_q[b - 1]), int(cum_p[b - 1])) if b else (0, 0)
        fine_q = np.concatenate([[fp_before], fp_before + np.cumsum(qs[s], dtype=np.int64)])
        fine_p = np.concatenate([[tp_before], tp_before + np.cumsum(ps[s], dtype=np.int64)])
        return fine_q, fine_p  # entry j accepts d below the bin's j-th float

    def point(target: float) -> OperatingPoint:
        k = targets[target]
        if k >= n_neg:
            return _point(target, math.inf, n_pos, n_neg, n_pos, n_neg)
        b = int(np.searchsorted(cum_q, k, side="right"))
        fine_q, fine_p = inside(b)
        j = int(np.searchsorted(fine_q, k, side="right")) - 1  # the bin's float holding the (k+1)-th negative
        return _point(target, _float_of(lo + b, j), int(fine_p[j]), int(fine_q[j]), n_pos, n_neg)

    main = point(far)
    points = {f"{f:g}": point(f) for f in fars}

    # EER: the exact ROC points inside the crossing bin, after the bin's predecessor point.
    fine_q, fine_p = inside(eer_bin)
    i = _first_crossing(fine_q, fine_p, n_neg, n_pos)
    eer = _eer_between(int(fine_q[i - 1]), int(fine_p[i - 1]), int(fine_q[i]), int(fine_p[i]), n_neg, n_pos)

    # AUC: negatives in later bins beat a positive outright; inside a refined bin, negatives at
    # later floats do and equal floats tie; unrefined bins count each (positive, negative) as a tie.
    wins = float(np.dot(p.astype(np.float64), (n_neg - cum_q).astype(np.float64)))
    for start in range(0, len(refined), 1024):  # in chunks, to bound the temporaries
        chunk = slice(start, start + 1024)
        ps_c, qs_c = ps[chunk].astype(np.float64), qs[chunk].astype(np.float64)
        later = q[refined[chunk], None] - np.cumsum(qs_c, axis=1)
        wins += float((ps_c * later).sum() + 0.5 * (ps_c * qs_c).sum())
    unrefined = np.ones(len(p), dtype=bool)
    unrefined[refined] = False
    shared = float((p[unrefined].astype(np.float64) * q[unrefined]).sum())
    pairs = float(n_pos) * float(n_neg)

    curve_far, curve_val = _log_spaced_roc(np.concatenate([[0.0], cum_q / n_neg]), np.concatenate([[0.0], cum_p / n_pos]))
    return VerificationResult(
        protocol="all-pairs",
        n_pairs=n_pos + n_neg,
        n_positive=n_pos,
        n_negative=n_neg,
        far=far,
        threshold=main.threshold,
        val=main.val,
        accuracy=main.accuracy,
        far_reached=main.far,
        auc=(wins + 0.5 * shared) / pairs,
        auc_error_bound=0.5 * shared / pairs,
        eer=eer,
        positive_mean=pos_moments.mean,
        positive_std=pos_moments.std,
        negative_mean=neg_moments.mean,
        negative_std=neg_moments.std,
        val_at_far={key: pt.val for key, pt in points.items()},
        threshold_at_far={key: pt.threshold for key, pt in points.items()},
        roc_far=curve_far,
        roc_val=curve_val,
        histogram=_plot_histogram(p, q, lo),
        warning=_far_warning(far, n_neg),
    )


def _plot_histogram(p: np.ndarray, q: np.ndarray, lo: int, bins: int = 100) -> dict[str, list[float]]:
    """Re-bin the fine key bins onto ``bins`` equal-width bins from 0 for drawing.

    Each fine bin (relative width <= 1.2e-4) goes wholly to the plot bin holding its lower edge.
    """
    keys = np.arange(lo, lo + len(p) + 1, dtype=np.int64)
    edges_of_keys = (keys << _SHIFT).astype(np.int32).view(np.float32).astype(np.float64)
    top = float(edges_of_keys[-1]) or 1.0
    edges = np.linspace(0.0, top, bins + 1)
    which = np.clip(np.searchsorted(edges, edges_of_keys[:-1], side="right") - 1, 0, bins - 1)
    return {
        "bin_edges": edges.tolist(),
        "positive": np.bincount(which, weights=p, minlength=bins).astype(np.int64).tolist(),
        "negative": np.bincount(which, weights=q, minlength=bins).astype(np.int64).tolist(),
    }


# --------------------------------------------------------------------------- random pairs and k-fold


def draw_pairs(labels: torch.Tensor, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` random index pairs, the first n_pairs // 2 same-class, the rest different-class.

    Drawn with replacement from a ``torch.Generator`` seeded with ``seed``. A positive pair is an
    anchor uniform over the images whose class has another member, then a uniform other member
    of its class (never the anchor itself); a negative pair is a uniform anchor, then a uniform
    image of any other class. Returns (pairs (n, 2) int64, is_positive (n,) bool).
    """
    if n_pairs < 2:
        raise UserError(f"--n_pairs must be at least 2, got {n_pairs}")
    labels = torch.as_tensor(labels).to(torch.int64)
    gen = torch.Generator().manual_seed(seed)
    n_pos, n_neg = n_pairs // 2, n_pairs - n_pairs // 2
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    class_of = torch.searchsorted(classes, labels)
    can_pair = torch.nonzero(counts[class_of] >= 2).flatten()
    if len(can_pair) == 0 or len(classes) < 2:
        raise UserError("random pairs need at least two classes and a class with two images")
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))  # position of each image in label-sorted order
    # Positive: an anchor, then an offset of 1..count-1 within its class block (wrapping around).
    a = can_pair[torch.randint(len(can_pair), (n_pos,), generator=gen)]
    c = class_of[a]
    offset = 1 + (torch.rand(n_pos, generator=gen) * (counts[c] - 1)).to(torch.int64).clamp_(max=counts[c] - 2)
    b = order[starts[c] + (rank[a] - starts[c] + offset) % counts[c]]
    # Negative: an anchor, then the k-th image outside its class block in label-sorted order.
    na = torch.randint(len(labels), (n_neg,), generator=gen)
    nc = class_of[na]
    others = len(labels) - counts[nc]
    k = (torch.rand(n_neg, generator=gen) * others).to(torch.int64).clamp_(max=others - 1)
    nb = order[torch.where(k >= starts[nc], k + counts[nc], k)]
    pairs = torch.cat([torch.stack([a, b], 1), torch.stack([na, nb], 1)])
    is_positive = torch.cat([torch.ones(n_pos, dtype=torch.bool), torch.zeros(n_neg, dtype=torch.bool)])
    return pairs, is_positive


def pair_distances(embeddings: torch.Tensor, pairs: torch.Tensor) -> np.ndarray:
    """Euclidean distance of each index pair, computed in float64."""
    x = torch.as_tensor(embeddings).to(torch.float64)
    return (x[pairs[:, 0]] - x[pairs[:, 1]]).norm(dim=1).numpy()


RANDOM_PAIRS = 1024  # the reference's sample size


def random_pairs(
    embeddings: torch.Tensor, labels: torch.Tensor, n_pairs: int | None = RANDOM_PAIRS, far: float = 1e-3, seed: int = 0
) -> VerificationResult:
    """The reference's protocol: ``n_pairs`` random pairs (half positive; None means 1024), threshold
    at FAR on them. ``warning`` is set when 1 / n_negative > far: the sample cannot resolve the FAR.
    """
    embeddings, labels = _check_embeddings(embeddings, labels)
    pairs, is_positive = draw_pairs(labels, RANDOM_PAIRS if n_pairs is None else n_pairs, seed)
    d = pair_distances(embeddings, pairs)
    positive = is_positive.numpy()
    return verify_distances(d[positive], d[~positive], far=far, protocol="pairs")


REPEATED_KEYS = ("threshold", "val", "accuracy", "far_reached", "auc", "eer", "positive_mean", "positive_std",
                 "negative_mean", "negative_std")


def repeated_random_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_pairs: int | None = RANDOM_PAIRS,
    far: float = 1e-3,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean and (population) std of each metric over ``repeats`` draws, with seeds seed .. seed+repeats-1."""
    if repeats < 1:
        raise UserError(f"repeats must be at least 1, got {repeats}")
    runs = [random_pairs(embeddings, labels, n_pairs, far, seed + r) for r in range(repeats)]
    summary = {}
    for key in REPEATED_KEYS:
        values = np.array([getattr(run, key) for run in runs], dtype=np.float64)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std())}
    return summary


@dataclass
class KFoldResult:
    """LFW-style k-fold verification. threshold, VAL, accuracy and FAR reached are the mean (and
    std) over held-out folds; ``pooled`` holds AUC, EER, distance statistics, VAL at the standard
    FARs and the ROC over all the pairs of all folds together."""

    protocol: str
    folds: int
    n_pairs: int
    far: float
    threshold: float
    threshold_std: float
    val: float
    val_std: float
    accuracy: float
    accuracy_std: float
    far_reached: float
    far_reached_std: float
    per_fold: list[dict[str, float]]
    pooled: VerificationResult
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """One flat dict: the pooled metrics, overridden by the per-fold means."""
        flat = self.pooled.to_dict()
        flat.update({key: value for key, value in asdict(self).items() if key != "pooled"})
        return flat


def kfold_distances(
    distances: np.ndarray, is_positive: np.ndarray, folds: int = 10, far: float = 1e-3
) -> KFoldResult:
    """k-fold verification on explicit pair distances.

    Fold assignment is deterministic: the i-th positive pair (in the given order) goes to fold
    i % folds, and likewise for negatives, so every fold has an equal share of each. For each fold
    the threshold is chosen at ``far`` on the negatives of the other folds only, then applied to
    the held-out fold.
    """
    _check_far(far)
    d = np.asarray(distances, dtype=np.float64).ravel()
    positive = np.asarray(is_positive, dtype=bool).ravel()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if folds < 2 or n_pos < folds or n_neg < folds:
        raise UserError(f"k-fold needs at least 2 folds and a positive and a negative pair per fold, "
                        f"got {folds} folds for {n_pos} positive and {n_neg} negative pairs")
    fold_of = np.empty(len(d), dtype=np.int64)
    fold_of[positive] = np.arange(n_pos) % folds
    fold_of[~positive] = np.arange(n_neg) % folds
    per_fold = []
    for fold in range(folds):
        test = fold_of == fold
        t = threshold_at_far(d[~test & ~positive], far)
        accepted = d[test] < t
        tp = int(np.count_nonzero(accepted & positive[test]))
        fp = int(np.count_nonzero(accepted & ~positive[test]))
        pt = _point(far, t, tp, fp, int(positive[test].sum()), int((~positive[test]).sum()))
        per_fold.append({"threshold": t, "val": pt.val, "far_reached": pt.far, "accuracy": pt.accuracy})
    stats = {}
    for key in ("threshold", "val", "accuracy", "far_reached"):
        values = np.array([r[key] for r in per_fold])
        stats[key], stats[f"{key}_std"] = float(values.mean()), float(values.std())
    smallest_train = min(int((~positive & (fold_of != f)).sum()) for f in range(folds))
    return KFoldResult(
        protocol="kfold",
        folds=folds,
        n_pairs=len(d),
        far=far,
        per_fold=per_fold,
        pooled=verify_distances(d[positive], d[~positive], far=far, protocol="kfold"),
        warning=_far_warning(far, smallest_train, "training negatives per fold"),
        **stats,
    )


KFOLD_PAIRS = 6000  # LFW's ten folds of 600


def kfold(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_pairs: int | None = KFOLD_PAIRS,
    folds: int = 10,
    far: float = 1e-3,
    seed: int = 0,
) -> KFoldResult:
    """LFW-style: ``n_pairs`` random pairs (as ``draw_pairs``, half positive; None means 6000) split
    into ``folds`` folds; each fold's threshold is chosen at ``far`` on the other folds and measured on it."""
    embeddings, labels = _check_embeddings(embeddings, labels)
    pairs, is_positive = draw_pairs(labels, KFOLD_PAIRS if n_pairs is None else n_pairs, seed)
    return kfold_distances(pair_distances(embeddings, pairs), is_positive.numpy(), folds=folds, far=far)
