"""Face-verification style metrics: is a pair of images the same class? (FaceNet protocol)

Convention, everywhere: a pair is *accepted* (predicted "same") when its distance d < t.
The threshold at a target false-accept rate FAR is the largest t whose false accepts stay within
it: with k = floor(FAR * n_negative), t is the (k+1)-th smallest negative distance, so exactly
the negatives strictly closer than it are accepted (ties at t are rejected). When k reaches the
number of negatives, t = +inf and everything is accepted.

Two paths give the same numbers: ``verify_distances`` on explicit arrays of positive and negative
pair distances (the reference's random pairs, k-fold, tests), and ``all_pairs`` over all
N(N-1)/2 pairs of a set of embeddings, streamed in row blocks so memory is bounded by the block,
not by N^2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError

DEFAULT_FARS = (1e-2, 1e-3, 1e-4, 1e-5)


def allowed_false_accepts(far: float, n_negative: int) -> int:
    """k = floor(FAR * n), robust to FAR * n landing a hair below an integer."""
    return min(n_negative, int(math.floor(far * n_negative * (1 + 1e-12) + 1e-9)))


@dataclass
class OperatingPoint:
    """The verification outcome at one threshold."""

    far_target: float
    threshold: float
    val: float  # TP / (TP + FN)
    far: float  # FP / (FP + TN), as reached
    accuracy: float  # (TP + TN) / all pairs
    true_accepts: int
    false_accepts: int


@dataclass
class VerificationResult:
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
    auc_error_bound: float  # 0 when exact; else |auc - exact| <= this
    eer: float
    positive_mean: float
    positive_std: float
    negative_mean: float
    negative_std: float
    val_at_far: dict[str, float] = field(default_factory=dict)
    threshold_at_far: dict[str, float] = field(default_factory=dict)
    roc_far: list[float] = field(default_factory=list)
    roc_val: list[float] = field(default_factory=list)
    histogram: dict[str, list[float]] = field(default_factory=dict)  # bin_edges, positive, negative
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _operating_point(sorted_pos: np.ndarray, sorted_neg: np.ndarray, far: float) -> OperatingPoint:
    n_pos, n_neg = len(sorted_pos), len(sorted_neg)
    k = allowed_false_accepts(far, n_neg)
    threshold = float(sorted_neg[k]) if k < n_neg else math.inf
    tp = int(np.searchsorted(sorted_pos, threshold, side="left"))
    fp = int(np.searchsorted(sorted_neg, threshold, side="left"))
    return OperatingPoint(
        far_target=far,
        threshold=threshold,
        val=tp / n_pos if n_pos else math.nan,
        far=fp / n_neg if n_neg else math.nan,
        accuracy=(tp + n_neg - fp) / (n_pos + n_neg),
        true_accepts=tp,
        false_accepts=fp,
    )


def threshold_at_far(neg_distances: np.ndarray, far: float) -> float:
    """The largest t with #(negatives with d < t) / #negatives <= far."""
    neg = np.sort(np.asarray(neg_distances, dtype=np.float64))
    k = allowed_false_accepts(far, len(neg))
    return float(neg[k]) if k < len(neg) else math.inf


def _auc_exact(sorted_pos: np.ndarray, sorted_neg: np.ndarray) -> float:
    """P(d_neg > d_pos) + 0.5 P(d_neg == d_pos): the area under the ROC of "accept if d < t"."""
    if len(sorted_pos) == 0 or len(sorted_neg) == 0:
        return math.nan
    below = np.searchsorted(sorted_neg, sorted_pos, side="left")
    not_above = np.searchsorted(sorted_neg, sorted_pos, side="right")
    greater = len(sorted_neg) - not_above
    ties = not_above - below
    return float((greater.sum() + 0.5 * ties.sum()) / (len(sorted_pos) * len(sorted_neg)))


def _eer_from_curve(far: np.ndarray, frr: np.ndarray) -> float:
    """Equal error rate: where FAR (rising) meets FRR (falling), linearly interpolated."""
    diff = far - frr
    crossing = int(np.argmax(diff >= 0))
    if crossing == 0:
        return float((far[0] + frr[0]) / 2)
    a, b = crossing - 1, crossing
    span = diff[b] - diff[a]
    w = 0.0 if span == 0 else -diff[a] / span
    return float(far[a] + w * (far[b] - far[a]))


def _log_spaced_roc(far: np.ndarray, val: np.ndarray, points: int = 400) -> tuple[list[float], list[float]]:
    """ROC points thinned to about ``points``, dense at small FAR for a log-scale plot."""
    positive = np.nonzero(far > 0)[0]
    if len(positive) == 0:
        return [], []
    grid = np.unique(np.concatenate([np.geomspace(far[positive[0]], 1.0, points), [1.0]]))
    idx = np.clip(np.searchsorted(far, grid, side="right") - 1, 0, len(far) - 1)
    return far[idx].tolist(), val[idx].tolist()


def verify_distances(
    pos_distances: np.ndarray | torch.Tensor,
    neg_distances: np.ndarray | torch.Tensor,
    far: float = 1e-3,
    protocol: str = "pairs",
    fars: tuple[float, ...] = DEFAULT_FARS,
) -> VerificationResult:
    """Exact verification metrics from explicit positive and negative pair distances."""
    pos = np.sort(np.asarray(pos_distances, dtype=np.float64).ravel())
    neg = np.sort(np.asarray(neg_distances, dtype=np.float64).ravel())
    if len(pos) == 0 or len(neg) == 0:
        raise UserError(f"verification needs positive and negative pairs, got {len(pos)} and {len(neg)}")
    main = _operating_point(pos, neg, far)
    # ROC over every distinct threshold: accept d < t for t just above each observed distance.
    cuts = np.unique(np.concatenate([pos, neg]))
    roc_far = np.concatenate([[0.0], np.searchsorted(neg, cuts, side="right") / len(neg)])
    roc_val = np.concatenate([[0.0], np.searchsorted(pos, cuts, side="right") / len(pos)])
    warning = None
    if 1.0 / len(neg) > far:
        warning = (
            f"{len(neg)} negative pairs cannot resolve FAR {far:g} (one false accept is already {1 / len(neg):.1e}); "
            "the threshold is the smallest negative distance"
        )
    curve_far, curve_val = _log_spaced_roc(roc_far, roc_val)
    points = {f"{f:g}": _operating_point(pos, neg, f) for f in fars}
    edges = np.linspace(0.0, max(pos[-1], neg[-1]) * 1.02 or 1.0, 101)
    return VerificationResult(
        protocol=protocol,
        n_pairs=len(pos) + len(neg),
        n_positive=len(pos),
        n_negative=len(neg),
        far=far,
        threshold=main.threshold,
        val=main.val,
        accuracy=main.accuracy,
        far_reached=main.far,
        auc=_auc_exact(pos, neg),
        auc_error_bound=0.0,
        eer=_eer_from_curve(roc_far, 1.0 - roc_val),
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
        warning=warning,
    )


def _pair_blocks(embeddings: torch.Tensor, labels: torch.Tensor, block_elements: int):
    """Yield (distances, is_positive) for the pairs i < j, one block of rows at a time."""
    n = len(embeddings)
    x = embeddings.to(torch.float32)
    sq = x.pow(2).sum(dim=1)
    rows = max(1, block_elements // max(n, 1))
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        cols = slice(start + 1, n)  # only j > i, so j starts after the block's first row
        d2 = sq[start:stop, None] + sq[None, cols] - 2.0 * (x[start:stop] @ x[cols].T)
        dist = d2.clamp_min_(0.0).sqrt_()
        i = torch.arange(start, stop)[:, None]
        j = torch.arange(start + 1, n)[None, :]
        upper = j > i
        same = labels[start:stop, None] == labels[None, cols]
        yield dist, same, upper


def _coarse_histogram(pos_counts: np.ndarray, neg_counts: np.ndarray, scale: float, coarse: int = 100) -> dict[str, list[float]]:
    """Merge the fine bins into ``coarse`` plot-ready bins spanning the occupied range."""
    occupied = np.nonzero(pos_counts + neg_counts)[0]
    last = int(occupied[-1]) + 1 if len(occupied) else len(pos_counts)
    starts = np.unique(np.linspace(0, last, coarse, endpoint=False).astype(np.int64))
    return {
        "bin_edges": (np.append(starts, last) / scale).tolist(),
        "positive": np.add.reduceat(pos_counts[:last], starts).tolist(),
        "negative": np.add.reduceat(neg_counts[:last], starts).tolist(),
    }


def all_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    far: float = 1e-3,
    fars: tuple[float, ...] = DEFAULT_FARS,
    bins: int = 1 << 16,
    block_elements: int = 1 << 23,
) -> VerificationResult:
    """Exact verification over all N(N-1)/2 pairs, in two streaming passes.

    Pass 1 histograms positive and negative distances on ``bins`` fine bins and accumulates
    means and variances; pass 2 revisits only the bins that hold each target FAR's threshold
    rank to find the exact order statistic. Memory: one block of ``block_elements`` distances.
    AUC is computed from the histogram, with ties inside a bin counted as half: its distance from
    the exact value is at most ``auc_error_bound``; EER is interpolated between bin edges.
    """
    labels = labels.to(torch.int64)
    n = len(embeddings)
    if n < 2:
        raise UserError(f"all-pairs evaluation needs at least two embeddings, got {n}")
    norms = embeddings.to(torch.float32).norm(dim=1)
    top = float(2.0 * norms.max()) * (1 + 1e-6) + 1e-12  # no distance exceeds twice the largest norm
    scale = bins / top
    counts = torch.zeros(2 * bins, dtype=torch.int64)  # [positive bins | negative bins]
    sums = torch.zeros(4, dtype=torch.float64)  # sum d+, sum d+^2, sum d-, sum d-^2
    for dist, same, upper in _pair_blocks(embeddings, labels, block_elements):
        key = (dist * scale).to(torch.int64).clamp_(max=bins - 1) + bins * (~same)
        counts += torch.bincount(key[upper], minlength=2 * bins)
        pos, neg = (same & upper), (~same & upper)
        d64 = dist.to(torch.float64)
        sums += torch.stack([(d64 * pos).sum(), (d64.square() * pos).sum(), (d64 * neg).sum(), (d64.square() * neg).sum()])
    pos_counts, neg_counts = counts[:bins].numpy(), counts[bins:].numpy()
    n_pos, n_neg = int(pos_counts.sum()), int(neg_counts.sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"all-pairs evaluation needs positive and negative pairs, got {n_pos} and {n_neg}")
    cum_neg, cum_pos = np.cumsum(neg_counts), np.cumsum(pos_counts)

    # Pass 2: the exact values inside the bins that hold each threshold.
    targets = {f: allowed_false_accepts(f, n_neg) for f in (far, *fars)}
    wanted_bins = {int(np.searchsorted(cum_neg, k + 1, side="left")) for k in targets.values() if k < n_neg}
    lut = torch.zeros(bins, dtype=torch.bool)
    lut[list(wanted_bins)] = True
    pos_vals, neg_vals = [], []
    for dist, same, upper in _pair_blocks(embeddings, labels, block_elements):
        idx = (dist * scale).to(torch.int64).clamp_(max=bins - 1)
        keep = lut[idx] & upper
        pos_vals.append(dist[keep & same])
        neg_vals.append(dist[keep & ~same])
    bin_pos = np.sort(torch.cat(pos_vals).to(torch.float64).numpy())
    bin_neg = np.sort(torch.cat(neg_vals).to(torch.float64).numpy())
    bin_of = lambda v: np.minimum((v * scale).astype(np.int64), bins - 1)  # noqa: E731 - same binning as torch
    pos_bin, neg_bin = bin_of(bin_pos), bin_of(bin_neg)

    def point(target: float) -> OperatingPoint:
        k = targets[target]
        if k >= n_neg:
            return OperatingPoint(target, math.inf, 1.0, 1.0, n_pos / (n_pos + n_neg), n_pos, n_neg)
        b = int(np.searchsorted(cum_neg, k + 1, side="left"))
        before_neg = int(cum_neg[b - 1]) if b else 0
        before_pos = int(cum_pos[b - 1]) if b else 0
        in_bin_neg = bin_neg[neg_bin == b]
        threshold = float(in_bin_neg[k - before_neg])
        tp = before_pos + int(np.count_nonzero(bin_pos[pos_bin == b] < threshold))
        fp = before_neg + int(np.count_nonzero(in_bin_neg < threshold))
        return OperatingPoint(target, threshold, tp / n_pos, fp / n_neg, (tp + n_neg - fp) / (n_pos + n_neg), tp, fp)

    main = point(far)
    # ROC at bin edges: accept d < edge.
    roc_far = np.concatenate([[0.0], cum_neg / n_neg])
    roc_val = np.concatenate([[0.0], cum_pos / n_pos])
    neg_above = n_neg - cum_neg
    pairs = float(n_pos) * float(n_neg)
    auc = float((pos_counts * neg_above).sum() + 0.5 * (pos_counts * neg_counts.astype(np.float64)).sum()) / pairs
    auc_bound = float(0.5 * (pos_counts * neg_counts.astype(np.float64)).sum() / pairs)
    pos_mean, neg_mean = float(sums[0]) / n_pos, float(sums[2]) / n_neg
    curve_far, curve_val = _log_spaced_roc(roc_far, roc_val)
    points = {f"{f:g}": point(f) for f in fars}
    histogram = _coarse_histogram(pos_counts, neg_counts, scale)
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
        auc=auc,
        auc_error_bound=auc_bound,
        eer=_eer_from_curve(roc_far, 1.0 - roc_val),
        positive_mean=pos_mean,
        positive_std=math.sqrt(max(float(sums[1]) / n_pos - pos_mean**2, 0.0)),
        negative_mean=neg_mean,
        negative_std=math.sqrt(max(float(sums[3]) / n_neg - neg_mean**2, 0.0)),
        val_at_far={key: p.val for key, p in points.items()},
        threshold_at_far={key: p.threshold for key, p in points.items()},
        roc_far=curve_far,
        roc_val=curve_val,
        histogram=histogram,
    )


def draw_pairs(labels: torch.Tensor, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` random index pairs, half same-class (i != j) and half different-class, from ``seed``.

    Returns (pairs (n, 2), is_positive (n,)). Anchors of positive pairs are drawn among images
    whose class has another member, so a class with a single image never forms a positive.
    """
    if n_pairs < 2:
        raise UserError(f"--n_pairs must be at least 2, got {n_pairs}")
    labels = labels.to(torch.int64)
    gen = torch.Generator().manual_seed(seed)
    n_pos, n_neg = n_pairs // 2, n_pairs - n_pairs // 2
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    classes, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    class_pos = torch.searchsorted(classes, labels)  # class index of every image
    can_pair = torch.nonzero(counts[class_pos] >= 2).flatten()
    if len(can_pair) == 0 or len(classes) < 2:
        raise UserError("random pairs need a class with two images and at least two classes")
    # Positive: anchor, then another member of its class (offset 1..count-1 within the class block).
    a = can_pair[torch.randint(len(can_pair), (n_pos,), generator=gen)]
    c = class_pos[a]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    rank_a = inverse[a] - starts[c]
    offset = 1 + (torch.rand(n_pos, generator=gen) * (counts[c] - 1)).to(torch.int64).clamp_(max=counts[c] - 2)
    p = order[starts[c] + (rank_a + offset) % counts[c]]
    # Negative: anchor, then a uniformly random image outside its class.
    na = torch.randint(len(labels), (n_neg,), generator=gen)
    nc = class_pos[na]
    others = len(labels) - counts[nc]
    k = (torch.rand(n_neg, generator=gen) * others).to(torch.int64).clamp_(max=others - 1)
    # Skip over the anchor's own class block in sorted order.
    k = torch.where(k >= starts[nc], k + counts[nc], k)
    nb = order[k]
    pairs = torch.cat([torch.stack([a, p], 1), torch.stack([na, nb], 1)])
    is_positive = torch.cat([torch.ones(n_pos, dtype=torch.bool), torch.zeros(n_neg, dtype=torch.bool)])
    return pairs, is_positive


def pair_distances(embeddings: torch.Tensor, pairs: torch.Tensor) -> np.ndarray:
    x = embeddings.to(torch.float64)
    return (x[pairs[:, 0]] - x[pairs[:, 1]]).norm(dim=1).numpy()


def random_pairs(
    embeddings: torch.Tensor, labels: torch.Tensor, n_pairs: int = 1024, far: float = 1e-3, seed: int = 0
) -> VerificationResult:
    """The reference's protocol: ``n_pairs`` random pairs, half positive, threshold at FAR on them."""
    pairs, is_positive = draw_pairs(labels, n_pairs, seed)
    d = pair_distances(embeddings, pairs)
    return verify_distances(d[is_positive.numpy()], d[~is_positive.numpy()], far=far, protocol="pairs")


def repeated_random_pairs(
    embeddings: torch.Tensor, labels: torch.Tensor, n_pairs: int = 1024, far: float = 1e-3, repeats: int = 20, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean and std over ``repeats`` fresh draws of the reference's protocol (seeds seed..seed+repeats-1)."""
    keys = ("threshold", "val", "accuracy", "far_reached", "positive_mean", "positive_std", "negative_mean", "negative_std")
    runs = [random_pairs(embeddings, labels, n_pairs, far, seed + r).to_dict() for r in range(repeats)]
    return {key: {"mean": float(np.mean([r[key] for r in runs])), "std": float(np.std([r[key] for r in runs]))} for key in keys}


def kfold(
    embeddings: torch.Tensor, labels: torch.Tensor, n_pairs: int = 6000, folds: int = 10, far: float = 1e-3, seed: int = 0
) -> dict[str, Any]:
    """LFW-style: ``n_pairs`` random pairs in ``folds`` folds (each half positive); the threshold is
    chosen at FAR on the other folds' negatives and measured on the held-out fold."""
    if folds < 2 or n_pairs < 2 * folds:
        raise UserError(f"k-fold needs at least 2 folds and 2 pairs per fold, got {folds} folds and {n_pairs} pairs")
    pairs, is_positive = draw_pairs(labels, n_pairs, seed)
    d = pair_distances(embeddings, pairs)
    pos_idx, neg_idx = np.nonzero(is_positive.numpy())[0], np.nonzero(~is_positive.numpy())[0]
    fold_of = np.empty(len(d), dtype=np.int64)
    fold_of[pos_idx] = np.arange(len(pos_idx)) % folds  # each fold gets an equal share of positives and negatives
    fold_of[neg_idx] = np.arange(len(neg_idx)) % folds
    positive = is_positive.numpy()
    results = []
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        t = threshold_at_far(d[train & ~positive], far)
        accepted = d[test] < t
        tp = int(np.count_nonzero(accepted & positive[test]))
        fp = int(np.count_nonzero(accepted & ~positive[test]))
        n_pos_test, n_neg_test = int(np.count_nonzero(positive[test])), int(np.count_nonzero(~positive[test]))
        results.append({
            "threshold": t,
            "val": tp / n_pos_test,
            "far_reached": fp / n_neg_test,
            "accuracy": (tp + n_neg_test - fp) / (n_pos_test + n_neg_test),
        })
    summary: dict[str, Any] = {"protocol": "kfold", "folds": folds, "n_pairs": len(d), "far": far}
    for key in ("threshold", "val", "far_reached", "accuracy"):
        values = np.array([r[key] for r in results])
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std())
    summary["per_fold"] = results
    n_neg_train = int(np.count_nonzero(~positive)) * (folds - 1) // folds
    if 1.0 / max(n_neg_train, 1) > far:
        summary["warning"] = f"{n_neg_train} training negatives per fold cannot resolve FAR {far:g}"
    return summary
