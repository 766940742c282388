"""Exact verification metrics from explicit arrays of positive and negative pair distances."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import UserError
from ..results import VerificationResult
from .conventions import (
    DEFAULT_FARS,
    OperatingPoint,
    allowed_false_accepts,
    check_far,
    equal_error_rate,
    first_crossing,
    log_spaced_roc,
    operating_point,
    verification_result,
)

PLOT_BINS = 100


def threshold_at_far(neg_distances: np.ndarray | torch.Tensor, far: float) -> float:
    """The largest t with #(negatives with d < t) / #negatives <= far (+inf when far allows all).

    Args:
        neg_distances: distances of the negative (different-class) pairs, any shape.
        far: the target false-accept rate in [0, 1].

    Returns:
        The threshold t of the conventions.
    """
    check_far(far)
    negatives = np.sort(np.asarray(neg_distances, dtype=np.float64).ravel())
    if len(negatives) == 0:
        raise UserError("a threshold at a FAR needs at least one negative pair")
    k = allowed_false_accepts(far, len(negatives))
    return float(negatives[k]) if k < len(negatives) else math.inf


def _sorted_operating_point(sorted_positives: np.ndarray, sorted_negatives: np.ndarray, far: float) -> OperatingPoint:
    n_positive, n_negative = len(sorted_positives), len(sorted_negatives)
    k = allowed_false_accepts(far, n_negative)
    threshold = float(sorted_negatives[k]) if k < n_negative else math.inf
    true_accepts = int(np.searchsorted(sorted_positives, threshold, side="left"))
    false_accepts = int(np.searchsorted(sorted_negatives, threshold, side="left"))
    return operating_point(far, threshold, true_accepts, false_accepts, n_positive, n_negative)


def verify_distances(
    pos_distances: np.ndarray | torch.Tensor,
    neg_distances: np.ndarray | torch.Tensor,
    far: float = 1e-3,
    protocol: str = "pairs",
    fars: tuple[float, ...] = DEFAULT_FARS,
) -> VerificationResult:
    """Exact verification metrics (AUC and EER included) from explicit positive and negative distances.

    Args:
        pos_distances: distances of same-class pairs.
        neg_distances: distances of different-class pairs.
        far: the target false-accept rate of the headline threshold, in [0, 1].
        protocol: the name recorded in the result.
        fars: further targets for ``val_at_far`` and ``threshold_at_far``.

    Returns:
        A VerificationResult; ``val`` is None when ``far`` cannot be resolved (see the conventions).
    """
    check_far(far)
    positives = np.sort(np.asarray(pos_distances, dtype=np.float64).ravel())
    negatives = np.sort(np.asarray(neg_distances, dtype=np.float64).ravel())
    n_positive, n_negative = len(positives), len(negatives)
    if n_positive == 0 or n_negative == 0:
        raise UserError(f"verification needs positive and negative pairs, got {n_positive} and {n_negative}")
    if not (np.isfinite(positives).all() and np.isfinite(negatives).all()):
        raise UserError("pair distances contain NaN or infinite values")
    main = _sorted_operating_point(positives, negatives, far)
    points = {f"{f:g}": _sorted_operating_point(positives, negatives, f) for f in fars}

    # One ROC point per distinct distance v: accept d <= v.
    values = np.unique(np.concatenate([positives, negatives]))
    accepted_negatives = np.concatenate([[0], np.searchsorted(negatives, values, side="right")])
    accepted_positives = np.concatenate([[0], np.searchsorted(positives, values, side="right")])
    i = first_crossing(accepted_negatives, accepted_positives, n_negative, n_positive)
    eer = equal_error_rate(
        (int(accepted_negatives[i - 1]), int(accepted_positives[i - 1])),
        (int(accepted_negatives[i]), int(accepted_positives[i])),
        n_negative, n_positive,
    )

    # AUC: for each positive, the negatives above it, plus half the negatives tied with it.
    below = np.searchsorted(negatives, positives, side="left")
    not_above = np.searchsorted(negatives, positives, side="right")
    wins = float((n_negative - not_above).sum()) + 0.5 * float((not_above - below).sum())

    edges = np.linspace(0.0, float(values[-1]) * 1.02 or 1.0, PLOT_BINS + 1)
    return verification_result(
        protocol, main, points,
        n_positive=n_positive,
        n_negative=n_negative,
        auc=wins / (float(n_positive) * n_negative),
        auc_error_bound=0.0,
        eer=eer,
        positive_stats=(float(positives.mean()), float(positives.std())),
        negative_stats=(float(negatives.mean()), float(negatives.std())),
        roc=log_spaced_roc(accepted_negatives / n_negative, accepted_positives / n_positive),
        histogram={
            "bin_edges": edges.tolist(),
            "positive": np.histogram(positives, edges)[0].tolist(),
            "negative": np.histogram(negatives, edges)[0].tolist(),
        },
    )
