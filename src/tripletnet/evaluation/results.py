"""Typed evaluation results, each with a ``to_dict()`` that is valid JSON by construction.

JSON has no NaN or Infinity. ``to_dict()`` therefore maps every non-finite float to ``None``
(``null``) while it builds the dict, value by value; strings are never touched, so an embeddings
file named ``NaN-Infinity.npz`` keeps its name. ``json.dumps(result.to_dict(), allow_nan=False)``
always succeeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

# Large per-pair arrays for plots: in curves.json, not in metrics.json or --json output.
CURVE_KEYS = ("roc_far", "roc_val", "histogram", "per_fold")


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None, tuples as lists and numpy scalars as Python numbers.

    Args:
        value: a float, int, bool, str, None, or a dict/list/tuple of those (nested).

    Returns:
        The same structure, valid for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _fields_dict(result: Any) -> dict[str, Any]:
    """The dataclass's fields, shallow (nested results use their own ``to_dict``), made JSON-safe."""
    return {f.name: json_safe(getattr(result, f.name)) for f in fields(result)}


@dataclass
class VerificationResult:
    """Verification metrics of one set of pairs; the definitions are in ``verification.conventions``.

    ``val`` (and an entry of ``val_at_far``) is None when the target FAR is below what the
    negatives can resolve (one false accept is already more than the target): a VAL "at FAR
    1e-3" measured on 512 negatives would be a VAL at FAR 0. ``warning`` then says so.
    """

    protocol: str
    n_pairs: int
    n_positive: int
    n_negative: int
    far: float  # the target
    threshold: float
    val: float | None
    accuracy: float
    far_reached: float
    auc: float
    auc_error_bound: float  # 0.0 when the AUC is exact; otherwise |auc - exact AUC| <= this
    eer: float
    positive_mean: float
    positive_std: float
    negative_mean: float
    negative_std: float
    val_at_far: dict[str, float | None] = field(default_factory=dict)  # "0.001" -> VAL at that FAR
    threshold_at_far: dict[str, float] = field(default_factory=dict)
    roc_far: list[float] = field(default_factory=list)  # a few hundred ROC points, log-spaced in FAR
    roc_val: list[float] = field(default_factory=list)
    histogram: dict[str, list[float]] = field(default_factory=dict)  # bin_edges, positive, negative (for plots)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, non-finite floats (an infinite threshold) as None."""
        return _fields_dict(self)


@dataclass
class KFoldResult:
    """LFW-style k-fold verification: threshold, VAL, accuracy and FAR reached are the mean (and
    population std) over held-out folds; ``pooled`` holds AUC, EER, distance statistics, VAL at the
    standard FARs and the ROC over all the pairs of all folds together."""

    protocol: str
    folds: int
    n_pairs: int
    far: float
    threshold: float
    threshold_std: float
    val: float | None  # None when a fold's training negatives cannot resolve ``far``
    val_std: float | None
    accuracy: float
    accuracy_std: float
    far_reached: float
    far_reached_std: float
    per_fold: list[dict[str, float | None]]
    pooled: VerificationResult
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """One flat dict: the pooled metrics, overridden by the per-fold means."""
        flat = self.pooled.to_dict()
        flat.update({key: value for key, value in _fields_dict(self).items() if key != "pooled"})
        return flat


@dataclass
class RepeatedPairsResult:
    """Mean and population std of each verification metric over ``repeats`` random-pair draws."""

    repeats: int
    mean: dict[str, float | None]
    std: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """``{"repeats": r, metric: {"mean": m, "std": s}, ...}`` (the layout of metrics.json's "repeated")."""
        return {"repeats": self.repeats, **{key: json_safe({"mean": self.mean[key], "std": self.std[key]}) for key in self.mean}}


@dataclass
class RetrievalResult:
    """Retrieval with every item as a query against all others; definitions in ``evaluation.retrieval``."""

    precision_at_1: float
    r_precision: float
    map_at_r: float
    recall_at_k: dict[str, float]
    n_queries: int

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values."""
        return _fields_dict(self)


@dataclass
class ClusteringResult:
    """k-means (k = number of classes) scored against the labels."""

    nmi: float
    ami: float
    n_clusters: int

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values."""
        return _fields_dict(self)


@dataclass
class EpochMetrics:
    """The per-epoch evaluation during training; ``to_dict()`` is what the epoch's record gains."""

    threshold: float
    val: float | None
    accuracy: float
    far_reached: float
    auc: float
    eer: float
    positive_mean: float
    negative_mean: float
    precision_at_1: float
    map_at_r: float

    def to_dict(self) -> dict[str, Any]:
        """Every field, non-finite floats as None."""
        return _fields_dict(self)


@dataclass
class EvaluationResult:
    """Everything ``tripletnet evaluate`` measures: verification under one protocol, retrieval,
    clustering, and the protocol's extras (k-fold's folds, repeated draws of random pairs)."""

    verification: VerificationResult  # for k-fold: the pooled pairs; the fold means are in ``kfold``
    retrieval: RetrievalResult | None = None
    clustering: ClusteringResult | None = None
    kfold: KFoldResult | None = None
    repeated: RepeatedPairsResult | None = None
    source: str | None = None  # the checkpoint or embeddings file evaluated
    tsne_seconds: float | None = None

    def to_dict(self, *, include_curves: bool = False) -> dict[str, Any]:
        """One flat JSON-ready dict, the keys of metrics.json.

        Args:
            include_curves: also the bulky plot data (roc_far, roc_val, histogram, k-fold's per_fold).

        Returns:
            protocol, n_pairs, n_positive, n_negative, far, threshold, val, accuracy, far_reached,
            auc, auc_error_bound, eer, positive/negative mean and std, val_at_far, threshold_at_far,
            warning; k-fold's folds and *_std; precision_at_1, r_precision, map_at_r, recall_at_k,
            n_queries; nmi, ami, n_clusters; source; repeated; tsne_seconds (each when present).
        """
        flat = (self.kfold or self.verification).to_dict()
        for part in (self.retrieval, self.clustering):
            if part is not None:
                flat.update(part.to_dict())
        if self.source is not None:
            flat["source"] = self.source
        if self.repeated is not None:
            flat["repeated"] = self.repeated.to_dict()
        if self.tsne_seconds is not None:
            flat["tsne_seconds"] = json_safe(self.tsne_seconds)
        if not include_curves:
            flat = {key: value for key, value in flat.items() if key not in CURVE_KEYS}
        return flat

    def curves(self) -> dict[str, Any]:
        """The plot data of curves.json: roc_far, roc_val, histogram and, for k-fold, per_fold."""
        flat = self.to_dict(include_curves=True)
        return {key: flat[key] for key in CURVE_KEYS if key in flat}
