"""The LFW / FaceNet k-fold protocol on a list of pairs: every threshold chosen on the other folds.

Given each pair's distance, whether it is a matched (same identity) pair, and its fold:

The folds are run by the one k-fold loop, :func:`~.verification.folds.fold_outcomes` (the
``kfold`` protocol runs it too), and the FAR, VAL, AUC and EER follow
:mod:`~.verification.conventions`:

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

from ..errors import ParameterError
from .verification.exact import verify_distances
from .verification.folds import fold_outcomes, pair_distances

__all__ = ["PairFoldsResult", "evaluate_pair_folds", "pair_distances"]


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
    outcomes = fold_outcomes(d, s, f, far)
    accuracy = [o.accuracy for o in outcomes]
    threshold = [o.accuracy_threshold for o in outcomes]
    far_thresholds = [o.far_threshold for o in outcomes]
    val = [o.true_accepts / o.positives if o.positives and o.training_negatives else math.nan for o in outcomes]
    far_reached = [o.false_accepts / o.negatives if o.negatives and o.training_negatives else math.nan for o in outcomes]
    warnings = []
    for o in outcomes:
        if o.training_negatives == 0:
            warnings.append(f"fold {o.fold}: the other folds hold no mismatched pair, so no FAR threshold")
        elif o.training_negatives * far < 1:
            warnings.append(
                f"fold {o.fold}: {o.training_negatives} mismatched pairs in the other folds cannot resolve FAR {far:g}; "
                "its threshold is their smallest distance"
            )
    accuracy_mean, accuracy_std = _mean_std(accuracy)
    val_mean, val_std = _mean_std(val)
    far_mean, _ = _mean_std(far_reached)
    pooled = verify_distances(d[s], d[~s], far=far, protocol="pairs-file")  # AUC and EER over all pairs
    return PairFoldsResult(
        n_pairs=len(d),
        n_matched=int(s.sum()),
        n_mismatched=int((~s).sum()),
        n_folds=len(outcomes),
        far_target=far,
        accuracy_mean=accuracy_mean,
        accuracy_std=accuracy_std,
        val_mean=val_mean,
        val_std=val_std,
        far_mean=far_mean,
        auc=pooled.auc,
        eer=pooled.eer,
        fold_accuracy=accuracy,
        fold_threshold=threshold,
        fold_val=val,
        fold_far=far_reached,
        fold_far_threshold=far_thresholds,
        warning="; ".join(warnings[:3]) + (f" (and {len(warnings) - 3} more folds)" if len(warnings) > 3 else "")
        if warnings
        else None,
    )
