"""Protocol "kfold": LFW-style, each fold's threshold chosen on the other folds and measured on it."""

from __future__ import annotations

import numpy as np
import torch

from ....errors import ParameterError, UserError
from ...results import KFoldResult
from ..conventions import (
    check_embeddings,
    check_far,
    far_is_resolved,
    far_warning,
    mean_and_std,
    operating_point,
)
from ..exact import verify_distances
from ..folds import fold_outcomes, pair_distances
from .base import Protocol
from .random_pairs import draw_pairs

KFOLD_PAIRS = 6000  # LFW's ten folds of 600
FOLDS = 10


def kfold_distances(distances: np.ndarray, is_positive: np.ndarray, folds: int = FOLDS, far: float = 1e-3) -> KFoldResult:
    """k-fold verification on explicit pair distances, by the one k-fold loop (:func:`..folds.fold_outcomes`).

    Fold assignment is deterministic: the i-th positive pair (in the given order) goes to fold
    i % folds, and likewise for negatives, so every fold has an equal share of each. For each fold
    the threshold is chosen at ``far`` on the negatives of the other folds only, then applied to
    the held-out fold. A fold whose training negatives cannot resolve ``far`` reports VAL None,
    and so does the mean.

    Args:
        distances: one distance per pair.
        is_positive: whether each pair is same-class.
        folds: the number of folds, at least 2.
        far: the target FAR in [0, 1].

    Returns:
        A KFoldResult.
    """
    check_far(far)
    if folds < 2:
        raise ParameterError("folds", f"must be at least 2, got {folds}")
    d = np.asarray(distances, dtype=np.float64).ravel()
    positive = np.asarray(is_positive, dtype=bool).ravel()
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive < folds or n_negative < folds:
        raise UserError(f"k-fold needs a positive and a negative pair per fold, "
                        f"got {folds} folds for {n_positive} positive and {n_negative} negative pairs")
    fold_of = np.empty(len(d), dtype=np.int64)
    fold_of[positive] = np.arange(n_positive) % folds
    fold_of[~positive] = np.arange(n_negative) % folds
    per_fold: list[dict[str, float | None]] = []
    for outcome in fold_outcomes(d, positive, fold_of, far):  # every fold's training share holds negatives (checked above)
        point = operating_point(far, outcome.far_threshold, outcome.true_accepts, outcome.false_accepts,
                                outcome.positives, outcome.negatives)
        # VAL is resolved by the negatives the threshold was chosen on, not by the few held-out ones.
        val = outcome.true_accepts / outcome.positives if far_is_resolved(far, outcome.training_negatives) else None
        per_fold.append({"threshold": outcome.far_threshold, "val": val, "far_reached": point.far, "accuracy": point.accuracy})
    stats: dict[str, float | None] = {}
    for key in ("threshold", "val", "accuracy", "far_reached"):
        stats[key], stats[f"{key}_std"] = mean_and_std([record[key] for record in per_fold])
    smallest_training = min(int((~positive & (fold_of != f)).sum()) for f in range(folds))
    return KFoldResult(
        protocol="kfold",
        folds=folds,
        n_pairs=len(d),
        far=far,
        per_fold=per_fold,
        pooled=verify_distances(d[positive], d[~positive], far=far, protocol="kfold"),
        warning=far_warning(far, smallest_training, "training negatives per fold"),
        **stats,  # type: ignore[arg-type]  # threshold, accuracy and far_reached are never None
    )


def kfold(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_pairs: int | None = KFOLD_PAIRS,
    folds: int = FOLDS,
    far: float = 1e-3,
    seed: int = 0,
) -> KFoldResult:
    """LFW-style: ``n_pairs`` random pairs (as ``draw_pairs``, half positive; None means 6000) split
    into ``folds`` folds; each fold's threshold is chosen at ``far`` on the other folds and measured on it.

    Returns:
        A KFoldResult.
    """
    embeddings, labels = check_embeddings(embeddings, labels)
    n_pairs = KFOLD_PAIRS if n_pairs is None else n_pairs
    if n_pairs < 2 * folds:  # half are positive: each fold needs one of each (kfold_distances would name folds instead)
        raise ParameterError("n_pairs", f"must be at least {2 * folds} for {folds} folds (a positive and a negative "
                                        f"pair in each), got {n_pairs}")
    pairs, is_positive = draw_pairs(labels, n_pairs, seed)
    return kfold_distances(pair_distances(embeddings, pairs[:, 0], pairs[:, 1]), is_positive.numpy(), folds=folds, far=far)


KFOLD = Protocol(
    name="kfold",
    description=(
        f"LFW-style: n_pairs random pairs (default {KFOLD_PAIRS}) in {FOLDS} folds, each fold's threshold chosen on the others"
    ),
    run=kfold,
    default_n_pairs=KFOLD_PAIRS,
)
