"""Evaluation: verification protocols, retrieval and clustering metrics as pure functions, typed results."""

from .clustering import (
    ami,
    clustering_metrics,
    contingency_table,
    expected_mutual_information,
    kmeans_labels,
    mutual_information,
    nmi,
)
from .report import evaluate_embeddings, fast_epoch_metrics, format_table
from .results import (
    ClusteringResult,
    EpochMetrics,
    EvaluationResult,
    RetrievalResult,
    json_safe,
)
from .retrieval import RECALL_KS, retrieval_metrics
from .verification import (
    DEFAULT_FARS,
    PROTOCOLS,
    KFoldResult,
    OperatingPoint,
    Protocol,
    RepeatedPairsResult,
    VerificationResult,
    all_pairs,
    allowed_false_accepts,
    check_far,
    draw_pairs,
    get_protocol,
    kfold,
    kfold_distances,
    pair_distances,
    random_pairs,
    repeated_random_pairs,
    threshold_at_far,
    verify_distances,
)

__all__ = [
    "DEFAULT_FARS", "PROTOCOLS", "RECALL_KS", "ClusteringResult", "EpochMetrics", "EvaluationResult", "KFoldResult",
    "OperatingPoint", "Protocol", "RepeatedPairsResult", "RetrievalResult", "VerificationResult", "all_pairs",
    "allowed_false_accepts", "ami", "check_far", "clustering_metrics", "contingency_table", "draw_pairs",
    "evaluate_embeddings", "expected_mutual_information", "fast_epoch_metrics", "format_table", "get_protocol",
    "json_safe", "kfold", "kfold_distances", "kmeans_labels", "mutual_information", "nmi", "pair_distances",
    "random_pairs", "repeated_random_pairs", "retrieval_metrics", "threshold_at_far", "verify_distances",
]
