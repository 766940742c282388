"""Evaluation: verification protocols, retrieval and clustering metrics, as pure functions."""

from .clustering import (
    ami,
    clustering_metrics,
    contingency_table,
    expected_mutual_information,
    kmeans_labels,
    mutual_information,
    nmi,
)
from .report import PROTOCOLS, evaluate_embeddings, fast_epoch_metrics, format_table
from .retrieval import RECALL_KS, retrieval_metrics
from .verification import (
    DEFAULT_FARS,
    KFoldResult,
    OperatingPoint,
    VerificationResult,
    all_pairs,
    allowed_false_accepts,
    draw_pairs,
    kfold,
    kfold_distances,
    pair_distances,
    random_pairs,
    repeated_random_pairs,
    threshold_at_far,
    verify_distances,
)

__all__ = [
    "DEFAULT_FARS", "KFoldResult", "OperatingPoint", "PROTOCOLS", "RECALL_KS", "VerificationResult", "all_pairs",
    "allowed_false_accepts", "ami", "clustering_metrics", "contingency_table", "draw_pairs", "evaluate_embeddings",
    "expected_mutual_information", "fast_epoch_metrics", "format_table", "kfold", "kfold_distances", "kmeans_labels",
    "mutual_information", "nmi", "pair_distances", "random_pairs", "repeated_random_pairs", "retrieval_metrics",
    "threshold_at_far", "verify_distances",
]
