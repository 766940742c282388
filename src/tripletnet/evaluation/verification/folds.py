"""The one k-fold loop: each fold's thresholds chosen on the other folds, measured on it.

Both k-fold evaluations run it: the ``kfold`` protocol (random pairs dealt into folds,
:mod:`.protocols.kfold`) and the pairs-file evaluation (the folds a pairs file gives,
:mod:`tripletnet.evaluation.pairs_folds`). Thresholds follow :mod:`.conventions`: the threshold at a
FAR is :func:`~.exact.threshold_at_far` on the other folds' negatives, and a pair is accepted when
``d < t``. The best-accuracy threshold is chosen on the other folds too (see :func:`accuracy_threshold`).
The held-out fold never takes part in choosing its own thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import ParameterError
from .exact import threshold_at_far


@dataclass(frozen=True)
class FoldOutcome:
    """One held-out fold: its thresholds (chosen on the other folds) and the counts they give on it.

    Attributes:
        fold: the fold's id.
        training_negatives: how many negatives the other folds hold (what resolves the FAR).
        far_threshold: the threshold at the target FAR (nan when the other folds hold no negative).
        true_accepts, positives, false_accepts, negatives: the held-out fold's counts at ``far_threshold``.
        accuracy_threshold: the threshold of best accuracy on the other folds.
        accuracy: the held-out fold's accuracy at ``accuracy_threshold``.
    """

    fold: int
    training_negatives: int
    far_threshold: float
    true_accepts: int
    positives: int
    false_accepts: int
    negatives: int
    accuracy_threshold: float
    accuracy: float


def accuracy_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold of best accuracy of "accept d < t" on these pairs.

    Among the distinct distances u_0 < u_1 < ..., accepting the k smallest is done by the threshold
    halfway between u_(k-1) and u_k; accepting none by t = u_0 and all by the next float above the
    largest. The smallest k of best accuracy wins ties.
    """
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


def fold_outcomes(distances: np.ndarray, same: np.ndarray, folds: np.ndarray, far: float) -> list[FoldOutcome]:
    """The k-fold loop over float64 ``distances`` (P,), bool ``same`` (P,) and int ``folds`` (P,), by fold id."""
    outcomes = []
    for fold in np.unique(folds):
        test, train = folds == fold, folds != fold
        train_d, train_s, test_d, test_s = distances[train], same[train], distances[test], same[test]
        train_neg = train_d[~train_s]
        t_far = threshold_at_far(train_neg, far) if len(train_neg) else math.nan
        accepted = test_d < t_far  # all False for a nan threshold
        t_accuracy = accuracy_threshold(train_d, train_s)
        outcomes.append(FoldOutcome(
            fold=int(fold), training_negatives=len(train_neg), far_threshold=t_far,
            true_accepts=int(np.count_nonzero(accepted & test_s)), positives=int(test_s.sum()),
            false_accepts=int(np.count_nonzero(accepted & ~test_s)), negatives=int((~test_s).sum()),
            accuracy_threshold=t_accuracy, accuracy=float(((test_d < t_accuracy) == test_s).mean()),
        ))
    return outcomes


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
