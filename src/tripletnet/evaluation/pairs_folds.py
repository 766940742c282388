"""The LFW / FaceNet k-fold protocol on a list of pairs: every threshold chosen on the other folds.

Given each pair's distance, whether it is a matched (same identity) pair, and its fold:

* **Accuracy.** For each fold in turn, the threshold is chosen on the *other* folds to maximise
  their accuracy, then applied to the held-out fold. A pair is accepted (called "same") when its
  distance is *below* the threshold, ``d < t``, as everywhere in tripletnet. Among the training
  distances u_0 < u_1 < ... (distinct values), accepting the k smallest is done by the threshold
  halfway between u_(k-1) and u_k; accepting none by t = u_0 and all by the next float above the
  largest. The smallest k of best training accuracy wins ties.
* **VAL at a FAR.** The threshold is chosen on the other folds' mismatched pairs as tripletnet's
  exact threshold: sort their distances n_0 <= n_1 <= ..., let k be the largest whole number with
  k / (number of them) <= FAR; t = n_k (+inf if every negative may be accepted). VAL (the share of
  the held-out fold's matched pairs with d < t) and the FAR reached there are reported per fold.
* Per-fold figures are summarised by their mean and population standard deviation (ddof 0),
  over the folds where they are defined (VAL needs a matched pair in the fold).
* **ROC AUC and EER** are computed once on all pairs, as in :mod:`tripletnet.evaluation.verification`:
  AUC = P(d_mismatched > d_matched) + 0.5 P(equal); the EER interpolates linearly where the false
  accept and false reject rates cross on the ROC of "accept d <= v".

The test fold never takes part in choosing its own thresholds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError


@dataclass
class PairFoldsResult:
    """The k-fold verification figures; see the module doc for every definition."""

    n_pairs: int
    n_matched: int
    n_mismatched: int
    n_folds: int
    far_target: float
    accuracy_mean: float
    accuracy_std: float
    val_mean: float
    val_std: float
    far_mean: float  # FAR reached on the held-out folds, averaged
    auc: float
    eer: float
    fold_accuracy: list[float]
    fold_threshold: list[float]  # the accuracy threshold each fold was tested with
    fold_val: list[float]  # nan where a fold has no matched pair
    fold_far: list[float]  # nan where a fold has no mismatched pair
    fold_far_threshold: list[float]
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _allowed_false_accepts(far: float, n_negative: int) -> int:
    """The largest k in [0, n_negative] with k / n_negative <= far, the division done in float64."""
    if far >= 1:
        return n_negative
    k = min(n_negative, math.floor(far * n_negative))
    while k < n_negative and (k + 1) / n_negative <= far:  # far * n may land one ulp off an integer
        k += 1
    while k > 0 and k / n_negative > far:
        k -= 1
    return k


def accuracy_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold of best accuracy of "accept d < t" on these pairs (the rule in the module doc)."""
    values = np.unique(distances)
    pos = np.sort(distances[same])
    neg = np.sort(distances[~same])
    # Accepting the k smallest distinct values, k = 0 .. m: counts of accepted pairs of each kind.
    accepted_pos = np.concatenate([[0], np.searchsorted(pos, values, side="right")])
    accepted_neg = np.concatenate([[0], np.searchsorted(neg, values, side="right")])
    correct = accepted_pos + (len(neg) - accepted_neg)
    k = int(np.argmax(correct))  # the first maximum: the smallest k
    if k == 0:
        return float(values[0])
    if k == len(values):
        return float(np.nextafter(values[-1], np.inf))
    middle = (values[k - 1] + values[k]) / 2
    return float(middle if middle > values[k - 1] else values[k])  # adjacent floats: the midpoint rounds down


def far_threshold(neg_distances: np.ndarray, far: float) -> float:
    """tripletnet's exact threshold at ``far`` on these mismatched distances (+inf when all may pass)."""
    neg = np.sort(neg_distances)
    k = _allowed_false_accepts(far, len(neg))
    return float(neg[k]) if k < len(neg) else math.inf


def roc_auc(distances: np.ndarray, same: np.ndarray) -> float:
    """P(d_mismatched > d_matched) + 0.5 P(d_mismatched == d_matched), exact."""
    pos, neg = distances[same], np.sort(distances[~same])
    below_or_equal = np.searchsorted(neg, pos, side="right")
    below = np.searchsorted(neg, pos, side="left")
    greater = int((len(neg) - below_or_equal).sum())
    ties = int((below_or_equal - below).sum())
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def equal_error_rate(distances: np.ndarray, same: np.ndarray) -> float:
    """Where FAR and FRR cross on the ROC of "accept d <= v" (one point per distinct v, plus FAR 0 / FRR 1)."""
    values = np.unique(distances)
    pos, neg = np.sort(distances[same]), np.sort(distances[~same])
    far = np.concatenate([[0.0], np.searchsorted(neg, values, side="right") / len(neg)])
    frr = np.concatenate([[1.0], 1.0 - np.searchsorted(pos, values, side="right") / len(pos)])
    i = int(np.argmax(far >= frr))  # exists: the last point accepts all, FAR 1 >= FRR 0; i >= 1 as FAR 0 < FRR 1
    gap0, gap1 = far[i - 1] - frr[i - 1], far[i] - frr[i]
    w = 1.0 if gap1 == gap0 else -gap0 / (gap1 - gap0)
    return float(far[i - 1] + w * (far[i] - far[i - 1]))


def pair_distances(embeddings: Any, index_a: Any, index_b: Any, chunk: int = 65536) -> np.ndarray:
    """Euclidean distances, in float64, between the embeddings of each pair's two images.

    Args:
        embeddings: (N, D) embeddings of the distinct images (a torch tensor or array).
        index_a: (P,) row of each pair's first image.
        index_b: (P,) row of each pair's second image.
        chunk: pairs per step, so memory stays at ``chunk`` x D values whatever P is.

    Returns:
        float64 (P,).
    """
    e = torch.as_tensor(embeddings).detach().cpu()
    a, b = torch.as_tensor(index_a, dtype=torch.int64), torch.as_tensor(index_b, dtype=torch.int64)
    if e.ndim != 2 or a.shape != b.shape or a.ndim != 1:
        raise ParameterError(
            "embeddings",
            f"must be (N, D) with index_a and index_b of one shape (P,), "
            f"got {tuple(e.shape)}, {tuple(a.shape)}, {tuple(b.shape)}",
        )
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), chunk):
        rows = slice(start, start + chunk)
        out[rows] = (e[a[rows]].to(torch.float64) - e[b[rows]].to(torch.float64)).norm(dim=1).numpy()
    return out


def _checked(distances: Any, same: Any, folds: Any, far: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64)
    s = np.asarray(same)
    f = np.asarray(folds)
    if d.ndim != 1 or len(d) == 0:
        raise ParameterError("distances", f"must be a non-empty 1-D array, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ParameterError("distances", f"must be finite, found {int((~np.isfinite(d)).sum())} NaN or infinite values")
    if s.shape != d.shape or s.dtype != bool:
        raise ParameterError("same", f"must be a bool array shaped like distances {d.shape}, got {s.dtype} {s.shape}")
    if f.shape != d.shape or not np.issubdtype(f.dtype, np.integer) or (f < 0).any():
        raise ParameterError("folds", f"must be non-negative integers shaped like distances {d.shape}, got {f.dtype} {f.shape}")
    if len(np.unique(f)) < 2:
        raise ParameterError("folds", "must name at least two folds: each fold's threshold is chosen on the others")
    if not 0 < far <= 1:
        raise ParameterError("far", f"must be in (0, 1], got {far}")
    if s.all() or not s.any():
        raise ParameterError("same", "must hold both matched and mismatched pairs")
    return d, s, f.astype(np.int64)


def _mean_std(values: list[float]) -> tuple[float, float]:
    defined = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(defined) == 0:
        return math.nan, math.nan
    return float(defined.mean()), float(defined.std())


def evaluate_pair_folds(distances: Any, same: Any, folds: Any, far: float = 1e-3) -> PairFoldsResult:
    """The k-fold protocol (see the module doc) on pair distances with their flags and folds.

    Args:
        distances: float (P,): the distance of each pair.
        same: bool (P,): True for a matched (same identity) pair.
        folds: int (P,): the fold of each pair; at least two distinct values.
        far: the target false accept rate of the VAL figure.

    Returns:
        :class:`PairFoldsResult`, with per-fold accuracies, thresholds, VAL and FAR.

    Raises:
        ParameterError: arrays of the wrong shape or type, non-finite distances, fewer than two
            folds, a FAR outside (0, 1], or pairs of only one kind.
    """
    d, s, f = _checked(distances, same, folds, far)
    fold_ids = np.unique(f)
    accuracy, threshold, val, far_reached, far_thresholds = [], [], [], [], []
    warnings = []
    for fold in fold_ids:
        test, train = f == fold, f != fold
        train_d, train_s = d[train], s[train]
        t = accuracy_threshold(train_d, train_s)
        test_d, test_s = d[test], s[test]
        accepted = test_d < t
        accuracy.append(float((accepted == test_s).mean()))
        threshold.append(t)
        train_neg = train_d[~train_s]
        if len(train_neg) == 0:
            val.append(math.nan)
            far_reached.append(math.nan)
            far_thresholds.append(math.nan)
            warnings.append(f"fold {int(fold)}: the other folds hold no mismatched pair, so no FAR threshold")
            continue
        if len(train_neg) * far < 1:
            warnings.append(
                f"fold {int(fold)}: {len(train_neg)} mismatched pairs in the other folds cannot resolve FAR {far:g}; "
                "its threshold is their smallest distance"
            )
        t_far = far_threshold(train_neg, far)
        far_thresholds.append(t_far)
        val.append(float((test_d[test_s] < t_far).mean()) if test_s.any() else math.nan)
        far_reached.append(float((test_d[~test_s] < t_far).mean()) if (~test_s).any() else math.nan)
    accuracy_mean, accuracy_std = _mean_std(accuracy)
    val_mean, val_std = _mean_std(val)
    far_mean, _ = _mean_std(far_reached)
    return PairFoldsResult(
        n_pairs=len(d),
        n_matched=int(s.sum()),
        n_mismatched=int((~s).sum()),
        n_folds=len(fold_ids),
        far_target=far,
        accuracy_mean=accuracy_mean,
        accuracy_std=accuracy_std,
        val_mean=val_mean,
        val_std=val_std,
        far_mean=far_mean,
        auc=roc_auc(d, s),
        eer=equal_error_rate(d, s),
        fold_accuracy=accuracy,
        fold_threshold=threshold,
        fold_val=val,
        fold_far=far_reached,
        fold_far_threshold=far_thresholds,
        warning="; ".join(warnings[:3]) + (f" (and {len(warnings) - 3} more folds)" if len(warnings) > 3 else "")
        if warnings
        else None,
    )
