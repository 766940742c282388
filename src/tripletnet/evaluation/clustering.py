"""Clustering quality: k-means with k = number of classes, scored by NMI and AMI.

NMI and AMI are computed here from the contingency table (arithmetic-mean normalisation, the
usual default) and tested against scikit-learn's; k-means itself is scikit-learn's.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import gammaln


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(table, (t, p), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(table: np.ndarray) -> float:
    n = table.sum()
    a, b = table.sum(axis=1), table.sum(axis=0)
    i, j = np.nonzero(table)
    nij = table[i, j].astype(np.float64)
    return float((nij / n * (np.log(nij * n) - np.log(a[i] * b[j].astype(np.float64)))).sum())


def expected_mutual_information(table: np.ndarray) -> float:
    """E[MI] under the hypergeometric model of random labelings with the same marginals."""
    n = int(table.sum())
    a, b = table.sum(axis=1), table.sum(axis=0)
    total = 0.0
    log_fact = lambda x: gammaln(np.asarray(x, dtype=np.float64) + 1)  # noqa: E731
    for ai in a:
        for bj in b:
            lo, hi = max(1, ai + bj - n), min(ai, bj)
            if lo > hi:
                continue
            nij = np.arange(lo, hi + 1, dtype=np.float64)
            log_p = (
                log_fact(ai) + log_fact(bj) + log_fact(n - ai) + log_fact(n - bj)
                - log_fact(n) - log_fact(nij) - log_fact(ai - nij) - log_fact(bj - nij) - log_fact(n - ai - bj + nij)
            )
            total += float((nij / n * (np.log(n * nij) - np.log(float(ai) * float(bj))) * np.exp(log_p)).sum())
    return total


def nmi(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    table = contingency(np.asarray(labels_true), np.asarray(labels_pred))
    h_true, h_pred = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    if h_true == 0 and h_pred == 0:
        return 1.0
    return mutual_information(table) / ((h_true + h_pred) / 2)


def ami(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    table = contingency(np.asarray(labels_true), np.asarray(labels_pred))
    if table.shape[0] == table.shape[1] == 1 or min(table.shape) == 0:
        return 1.0
    h_true, h_pred = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    mi, emi = mutual_information(table), expected_mutual_information(table)
    denominator = (h_true + h_pred) / 2 - emi
    if abs(denominator) < np.finfo(np.float64).eps:
        denominator = np.finfo(np.float64).eps if denominator >= 0 else -np.finfo(np.float64).eps
    return float((mi - emi) / denominator)


def kmeans_labels(embeddings: torch.Tensor, k: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=3, random_state=seed)
    return model.fit_predict(embeddings.to(torch.float32).numpy())


def clustering_metrics(embeddings: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict[str, float]:
    truth = labels.numpy()
    predicted = kmeans_labels(embeddings, len(np.unique(truth)), seed)
    return {"nmi": nmi(truth, predicted), "ami": ami(truth, predicted)}
