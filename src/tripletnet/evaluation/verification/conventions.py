"""Verification metrics: is a pair of images the same class? (the FaceNet protocol)

Conventions used by every protocol
----------------------------------
* Distances are Euclidean. A pair is *accepted* (predicted "same class") when ``d < t``.
* The threshold at a target false-accept rate ``far`` is the largest t such that
  #(negative pairs with d < t) / #(negative pairs) <= far. Sort the negative distances
  n_0 <= n_1 <= ... and let k be the largest integer with k / n_negative <= far (the division done
  in float64, as scikit-learn computes its FPR, so FAR 0.1 on 30 negatives allows exactly 3).
  Then t = n_k: every t > n_k accepts n_0..n_k, which is k + 1 negatives, and t = n_k accepts only
  the negatives strictly below it. Negatives tied with n_k are rejected, so with ties fewer than k
  may be accepted; ``far_reached`` reports what was. k = 0 gives t = the smallest negative distance,
  accepting no negative. far >= 1 gives t = +inf: everything is accepted.
* A target 0 < far < 1 / n_negative cannot be resolved by the data: one false accept is already
  more than the target, so the threshold above accepts no negative and its VAL is a VAL at FAR 0,
  not at ``far``. VAL is then reported as not reached (None) with a warning. far = 0 itself
  ("accept no known negative") is always resolved.
* VAL = TP / (TP + FN), the fraction of positive pairs with d < t; accuracy = (TP + TN) / pairs;
  FAR reached = FP / (FP + TN).
* ROC AUC = P(d_neg > d_pos) + 0.5 * P(d_neg == d_pos): the area under the step ROC of "d < t".
* EER: the ROC has the point (FAR 0, FRR 1) plus one point per distinct distance v (accept
  d <= v). The EER is where FAR and FRR = 1 - VAL cross: linearly interpolated between the first
  point with FAR >= FRR and the point before it.
* Distance means and standard deviations are population statistics (ddof = 0).

``exact.verify_distances`` applies these to explicit arrays of pair distances (random pairs and
k-fold, whose distances are computed in float64); ``streaming.all_pairs`` streams all N(N-1)/2
pairs of a test set and gives exactly the numbers of sorting all its float32 distances.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import ParameterError, UserError
from ..results import VerificationResult

DEFAULT_FARS = (1e-2, 1e-3, 1e-4, 1e-5)


def check_far(far: float, *, zero_allowed: bool = True) -> float:
    """Validate a target false-accept rate: the one place that does.

    Args:
        far: the target FAR.
        zero_allowed: whether 0 ("accept no known negative") is a valid target here.

    Returns:
        ``far`` as a float.

    Raises:
        ParameterError: naming ``far`` when it is outside [0, 1] (or (0, 1]) or not a number.
    """
    interval = "[0, 1]" if zero_allowed else "(0, 1]"
    if not isinstance(far, numbers.Real) or isinstance(far, bool):
        raise ParameterError("far", f"must be a number in {interval}, got {far!r}")
    if not (0 <= far <= 1) or (far == 0 and not zero_allowed):
        raise ParameterError("far", f"must be in {interval}, got {far}")
    return float(far)


def allowed_false_accepts(far: float, n_negative: int) -> int:
    """The largest k in [0, n_negative] with k / n_negative <= far, the division done in float64."""
    if n_negative <= 0:
        return 0
    if far >= 1:
        return n_negative
    k = min(n_negative, max(0, math.floor(far * n_negative)))
    # far * n can land one ulp off an integer; settle it with the same division sklearn's FPR uses.
    while k < n_negative and (k + 1) / n_negative <= far:
        k += 1
    while k > 0 and k / n_negative > far:
        k -= 1
    return k


def far_is_resolved(far: float, n_negative: int) -> bool:
    """Whether ``n_negative`` negatives can tell FAR ``far`` from FAR 0 (see the conventions)."""
    return far == 0 or allowed_false_accepts(far, n_negative) > 0


def far_warning(far: float, n_negative: int, what: str = "negative pairs") -> str | None:
    """The warning for a target FAR the negatives cannot resolve, else None."""
    if n_negative and not far_is_resolved(far, n_negative):
        return (
            f"{n_negative:,} {what} cannot resolve FAR {far:g} (one false accept is already {1 / n_negative:.1e}): "
            "VAL is reported as not reached; the threshold is the smallest negative distance"
        )
    return None


@dataclass
class OperatingPoint:
    """The outcome of the classifier "accept d < threshold" on a set of pairs."""

    far_target: float
    threshold: float
    val: float | None  # TP / (TP + FN); None when the negatives cannot resolve far_target
    far: float  # FP / (FP + TN), as reached
    accuracy: float  # (TP + TN) / all pairs
    true_accepts: int
    false_accepts: int


def operating_point(
    far_target: float, threshold: float, true_accepts: int, false_accepts: int, n_positive: int, n_negative: int
) -> OperatingPoint:
    """The rates of a threshold that accepts ``true_accepts`` positives and ``false_accepts`` negatives."""
    val = true_accepts / n_positive if far_is_resolved(far_target, n_negative) else None
    accuracy = (true_accepts + n_negative - false_accepts) / (n_positive + n_negative)
    return OperatingPoint(far_target, threshold, val, false_accepts / n_negative, accuracy, true_accepts, false_accepts)


def verification_result(
    protocol: str,
    main: OperatingPoint,
    points: dict[str, OperatingPoint],
    *,
    n_positive: int,
    n_negative: int,
    auc: float,
    auc_error_bound: float,
    eer: float,
    positive_stats: tuple[float, float],
    negative_stats: tuple[float, float],
    roc: tuple[list[float], list[float]],
    histogram: dict[str, list[float]],
) -> VerificationResult:
    """Assemble a VerificationResult from the headline operating point, the points at the standard
    FARs (keyed "0.001"), and the curve and distance statistics ((mean, std) of each class)."""
    return VerificationResult(
        protocol=protocol,
        n_pairs=n_positive + n_negative,
        n_positive=n_positive,
        n_negative=n_negative,
        far=main.far_target,
        threshold=main.threshold,
        val=main.val,
        accuracy=main.accuracy,
        far_reached=main.far,
        auc=auc,
        auc_error_bound=auc_error_bound,
        eer=eer,
        positive_mean=positive_stats[0],
        positive_std=positive_stats[1],
        negative_mean=negative_stats[0],
        negative_std=negative_stats[1],
        val_at_far={key: point.val for key, point in points.items()},
        threshold_at_far={key: point.threshold for key, point in points.items()},
        roc_far=roc[0],
        roc_val=roc[1],
        histogram=histogram,
        warning=far_warning(main.far_target, n_negative),
    )


def first_crossing(accepted_negatives: np.ndarray, accepted_positives: np.ndarray, n_negative: int, n_positive: int) -> int:
    """First index where FAR >= FRR, i.e. negatives/n_neg >= 1 - positives/n_pos, decided in exact integers.

    Both arrays are non-decreasing accepted counts, and their last entry accepts everything.
    """
    target = float(n_positive) * float(n_negative)
    approx = accepted_negatives.astype(np.float64) * n_positive + accepted_positives.astype(np.float64) * n_negative

    def crossed(i: int) -> bool:
        return int(accepted_negatives[i]) * n_positive + int(accepted_positives[i]) * n_negative >= n_positive * n_negative

    i = min(int(np.searchsorted(approx, target, side="left")), len(accepted_negatives) - 1)  # approx may round
    while i > 0 and crossed(i - 1):
        i -= 1
    while not crossed(i):
        i += 1
    return i


def equal_error_rate(
    before: tuple[int, int], after: tuple[int, int], n_negative: int, n_positive: int
) -> float:
    """FAR = FRR interpolated between two ROC points given as (accepted negatives, accepted positives):
    ``before`` has FAR < FRR, ``after`` has FAR >= FRR."""
    far_before, far_after = before[0] / n_negative, after[0] / n_negative
    gap_before = far_before - (1.0 - before[1] / n_positive)
    gap_after = far_after - (1.0 - after[1] / n_positive)
    weight = 1.0 if gap_after == gap_before else -gap_before / (gap_after - gap_before)
    return far_before + weight * (far_after - far_before)


def log_spaced_roc(far: np.ndarray, val: np.ndarray, points: int = 400) -> tuple[list[float], list[float]]:
    """ROC points (non-decreasing FAR) thinned to about ``points``, dense at small FAR for a log axis."""
    positive = np.flatnonzero(far > 0)
    if len(positive) == 0:
        return [0.0, 1.0], [float(val[-1]), 1.0]
    grid = np.geomspace(far[positive[0]], 1.0, points)
    idx = np.unique(np.clip(np.searchsorted(far, grid, side="right") - 1, 0, len(far) - 1))
    return far[idx].tolist(), val[idx].tolist()


def mean_and_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Population mean and std of a metric over folds or draws; (None, None) if any value is None.

    An infinite value (the threshold at FAR 1) gives an infinite mean and a NaN std, without a warning.
    """
    if any(value is None for value in values):
        return None, None
    array = np.array(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf
        return float(array.mean()), float(array.std())


def check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings as a finite (N, D) float32 CPU tensor and labels as (N,) int64; bad data is a UserError."""
    if not isinstance(labels, torch.Tensor) and np.asarray(labels).dtype.kind in "USO":
        raise UserError("labels must be integers, got strings or objects: map names to ids first, e.g. "
                        "np.unique(labels, return_inverse=True)[1]")
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
