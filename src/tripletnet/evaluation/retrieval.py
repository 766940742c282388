"""Retrieval metrics: each item a query against all the others (itself excluded).

Definitions follow Musgrave et al. 2020, "A Metric Learning Reality Check": for a query whose
class has R other members, R-precision = (relevant among the R nearest) / R and
MAP@R = (1/R) * sum over i <= R of P(i) * rel(i), with P(i) the precision among the i nearest.
Queries whose class has no other member have nothing to retrieve and are left out.
"""

from __future__ import annotations

import torch

RECALL_KS = (1, 2, 4, 8)


def retrieval_metrics(
    embeddings: torch.Tensor, labels: torch.Tensor, recall_ks: tuple[int, ...] = RECALL_KS, block_elements: int = 1 << 23
) -> dict[str, float | dict[str, float] | int]:
    """precision@1, R-precision, MAP@R and recall@k (hit in the k nearest), averaged over queries."""
    x = embeddings.to(torch.float32)
    labels = labels.to(torch.int64)
    n = len(x)
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    r_all = counts[inverse] - 1  # other members of each query's class
    queries = torch.nonzero(r_all > 0).flatten()
    if len(queries) == 0:
        raise ValueError("no query has another item of its class")
    k = int(min(max(int(r_all.max()), max(recall_ks)), n - 1))
    sq = x.pow(2).sum(dim=1)
    totals = torch.zeros(3, dtype=torch.float64)  # precision@1, R-precision, MAP@R
    hits = torch.zeros(len(recall_ks), dtype=torch.float64)
    rows = max(1, block_elements // n)
    ranks = torch.arange(1, k + 1, dtype=torch.float64)
    for start in range(0, len(queries), rows):
        q = queries[start : start + rows]
        d2 = sq[q, None] + sq[None, :] - 2.0 * (x[q] @ x.T)
        d2[torch.arange(len(q)), q] = float("inf")  # never retrieve the query itself
        nearest = torch.topk(d2, k, dim=1, largest=False, sorted=True).indices
        relevant = labels[nearest] == labels[q, None]
        r = r_all[q]
        within_r = torch.arange(k)[None, :] < r[:, None]
        rel_r = (relevant & within_r).to(torch.float64)
        precision_at_i = torch.cumsum(rel_r, dim=1) / ranks
        totals[0] += relevant[:, 0].to(torch.float64).sum()
        totals[1] += (rel_r.sum(dim=1) / r).sum()
        totals[2] += ((precision_at_i * rel_r).sum(dim=1) / r).sum()
        for i, kk in enumerate(recall_ks):
            hits[i] += relevant[:, :kk].any(dim=1).to(torch.float64).sum()
    m = len(queries)
    return {
        "precision_at_1": float(totals[0] / m),
        "r_precision": float(totals[1] / m),
        "map_at_r": float(totals[2] / m),
        "recall_at_k": {str(kk): float(hits[i] / m) for i, kk in enumerate(recall_ks)},
        "n_queries": m,
    }
