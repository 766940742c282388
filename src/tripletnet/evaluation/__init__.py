"""Evaluation: verification protocols, retrieval and clustering metrics, as pure functions."""

from .clustering import ami, clustering_metrics, nmi
from .report import PROTOCOLS, evaluate_embeddings, fast_epoch_metrics, format_table
from .retrieval import retrieval_metrics
from .verification import all_pairs, draw_pairs, kfold, random_pairs, repeated_random_pairs, threshold_at_far, verify_distances

__all__ = [
    "PROTOCOLS", "all_pairs", "ami", "clustering_metrics", "draw_pairs", "evaluate_embeddings", "fast_epoch_metrics",
    "format_table", "kfold", "nmi", "random_pairs", "repeated_random_pairs", "retrieval_metrics", "threshold_at_far",
    "verify_distances",
]
