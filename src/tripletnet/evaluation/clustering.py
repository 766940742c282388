"""Clustering quality: k-means with k = number of classes, scored by NMI and AMI.

NMI and AMI are computed here from the contingency table, with the arithmetic mean of the two
entropies as normaliser (scikit-learn's default), and tested against scikit-learn. AMI uses the
expected mutual information of two random labelings with the same cluster sizes (Vinh, Epps and
Bailey 2010). Natural logarithms throughout; the normalised scores do not depend on the base.
K-means itself is scikit-learn's, with fixed ``n_init`` and ``random_state``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .results import ClusteringResult
from .verification.conventions import check_embeddings


def contingency_table(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
    """Counts n_ij of items in true class i and predicted cluster j (classes in sorted order)."""
    labels_true, labels_pred = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if len(labels_true) != len(labels_pred):
        raise ValueError(f"labelings differ in length: {len(labels_true)} and {len(labels_pred)}")
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    n_t, n_p = (int(t.max()) + 1, int(p.max()) + 1) if len(t) else (0, 0)
    return np.bincount(t * n_p + p, minlength=n_t * n_p).reshape(n_t, n_p).astype(np.int64)


def _entropy(sizes: np.ndarray) -> float:
    sizes = sizes[sizes > 0].astype(np.float64)
    if len(sizes) <= 1:
        return 0.0
    total = sizes.sum()
    return float(-(sizes / total * (np.log(sizes) - math.log(total))).sum())


def mutual_information(table: np.ndarray) -> float:
    """MI (nats) of a contingency table; rounding below zero is clipped to 0."""
    n = float(table.sum())
    rows, cols = table.sum(axis=1).astype(np.float64), table.sum(axis=0).astype(np.float64)
    i, j = np.nonzero(table)
    nij = table[i, j].astype(np.float64)
    terms = nij / n * (np.log(nij) + math.log(n) - np.log(rows[i]) - np.log(cols[j]))
    return max(float(terms.sum()), 0.0)


def _log_factorials(n: int) -> np.ndarray:
    """log(k!) for k = 0..n, each from lgamma (accurate to an ulp, unlike a running sum)."""
    return np.array([math.lgamma(k + 1.0) for k in range(n + 1)])


def expected_mutual_information(table: np.ndarray) -> float:
    """E[MI] over random labelings with the table's row and column sums (hypergeometric model).

    EMI = sum_ij sum_nij (nij/N) log(N nij / (a_i b_j)) P(nij | a_i, b_j, N), with nij running
    from max(1, a_i + b_j - N) to min(a_i, b_j). Rows and columns of equal size give equal terms,
    so the sum runs over distinct sizes, weighted by how often each occurs.
    """
    n = int(table.sum())
    if n == 0:
        return 0.0
    # Every row and column of a contingency table is non-empty, so all sizes are >= 1.
    a_sizes, a_mult = np.unique(table.sum(axis=1), return_counts=True)
    b_sizes, b_mult = np.unique(table.sum(axis=0), return_counts=True)
    lf = _log_factorials(n)
    total = 0.0
    for a, a_count in zip(a_sizes.tolist(), a_mult.tolist(), strict=True):
        lo = np.maximum(1, a + b_sizes - n)
        hi = np.minimum(a, b_sizes)
        lengths = np.maximum(hi - lo + 1, 0)
        if lengths.sum() == 0:
            continue
        # Flatten the ragged ranges lo_j..hi_j into one vector of nij values.
        owner = np.repeat(np.arange(len(b_sizes)), lengths)
        nij = lo[owner] + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        b = b_sizes[owner]
        log_p = (lf[a] + lf[b] + lf[n - a] + lf[n - b] - lf[n]
                 - lf[nij] - lf[a - nij] - lf[b - nij] - lf[n - a - b + nij])
        terms = nij / n * (np.log(nij) + math.log(n) - math.log(a) - np.log(b)) * np.exp(log_p)
        total += a_count * float((terms * b_mult[owner]).sum())
    return total


def _single_cluster_each(table: np.ndarray) -> bool:
    # Both labelings put everything in one group (or there is nothing): a perfect match by convention.
    return table.shape[0] == table.shape[1] and table.shape[0] <= 1


def nmi(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Normalised mutual information, MI / ((H(true) + H(pred)) / 2)."""
    table = contingency_table(labels_true, labels_pred)
    if _single_cluster_each(table):
        return 1.0
    mi = mutual_information(table)
    if mi == 0.0:
        return 0.0
    return mi / ((_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2)


def ami(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted mutual information, (MI - EMI) / ((H(true) + H(pred)) / 2 - EMI)."""
    table = contingency_table(labels_true, labels_pred)
    if _single_cluster_each(table):
        return 1.0
    mi, emi = mutual_information(table), expected_mutual_information(table)
    denominator = (_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2 - emi
    eps = np.finfo(np.float64).eps
    # Keep the sign but never divide by (almost) zero, as scikit-learn does.
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    return float((mi - emi) / denominator)


def kmeans_labels(embeddings: torch.Tensor, k: int, seed: int = 0, n_init: int = 3) -> np.ndarray:
    """scikit-learn k-means cluster indices, reproducible through ``seed``."""
    from sklearn.cluster import KMeans

    x = torch.as_tensor(embeddings).detach().to(torch.float32).cpu().numpy()
    if k <= 1:
        return np.zeros(len(x), dtype=np.int64)
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


def clustering_metrics(embeddings: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> ClusteringResult:
    """k-means with k = number of classes, then NMI and AMI of the clusters against the labels.

    Args:
        embeddings: (N, D) embeddings.
        labels: (N,) labels.
        seed: k-means' random state.

    Returns:
        A ClusteringResult.
    """
    truth = check_embeddings(embeddings, labels)[1].numpy()  # one integer label per embedding, else a UserError
    k = len(np.unique(truth))
    predicted = kmeans_labels(embeddings, k, seed)
    return ClusteringResult(nmi=nmi(truth, predicted), ami=ami(truth, predicted), n_clusters=k)
