"""Retrieval metrics: every item is a query against all the others (itself excluded).

Definitions follow Musgrave et al. 2020, "A Metric Learning Reality Check". For a query whose
class has R other members, with rel(i) = 1 when its i-th nearest neighbour is of its class and
P(i) = (relevant among the i nearest) / i:

* precision@1 = rel(1);
* R-precision = P(R);
* MAP@R = (1/R) * sum_{i=1..R} P(i) * rel(i);
* recall@k = 1 if any of the k nearest is relevant (the usual recall@k of metric learning),
  with k capped at N - 1.

All are averaged over queries. A query whose class has no other member (R = 0) has nothing to
retrieve and is excluded from every average (``n_queries`` counts the rest). Neighbours are ranked
by Euclidean distance; exact ties are broken arbitrarily.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ParameterError, UserError
from .results import RetrievalResult

RECALL_KS = (1, 2, 4, 8)


def retrieval_metrics(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    recall_ks: tuple[int, ...] = RECALL_KS,
    block_elements: int = 1 << 23,
) -> RetrievalResult:
    """precision@1, R-precision, MAP@R and recall@k, by chunked exact k-nearest-neighbour search.

    Queries are processed in blocks of about ``block_elements`` distances; each block keeps as many
    neighbours as its largest R (or largest recall k) needs.

    Args:
        embeddings: (N, D) embeddings.
        labels: (N,) integer labels.
        recall_ks: the k of recall@k.
        block_elements: distances per block of queries (bounds memory).

    Returns:
        A RetrievalResult.
    """
    x = torch.as_tensor(embeddings).detach().to(torch.float32).cpu()
    labels = torch.as_tensor(labels).detach().cpu().to(torch.int64)
    if x.ndim != 2 or labels.ndim != 1 or len(labels) != len(x):
        raise UserError(f"need an N x D embedding matrix and N labels, got {tuple(x.shape)} and {tuple(labels.shape)}")
    if not recall_ks or min(recall_ks) < 1:
        raise ParameterError("recall_ks", f"must be positive integers, got {recall_ks}")
    n = len(x)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    r_all = counts[inverse] - 1  # other members of each item's class
    queries = torch.nonzero(r_all > 0).flatten()
    if len(queries) == 0:
        raise UserError("retrieval needs a class with at least two items; every class here has one")
    # Queries with similar R share a block, so each block's top-k is no larger than it needs.
    queries = queries[torch.argsort(r_all[queries], descending=True, stable=True)]
    ks = [min(k, n - 1) for k in recall_ks]
    sq = x.pow(2).sum(dim=1)
    lab = labels.numpy()
    precision_at_1 = r_precision = map_at_r = 0.0
    hits = [0.0] * len(ks)
    rows = max(1, block_elements // n)
    for start in range(0, len(queries), rows):
        q = queries[start : start + rows]
        r = r_all[q].numpy().astype(np.float64)
        k = min(n - 1, max(int(r.max()), max(ks)))
        # Squared distances rank neighbours exactly as distances do.
        d2 = torch.addmm(sq[None, :], x[q], x.T, alpha=-2.0).add_(sq[q, None]).numpy()
        d2[np.arange(len(q)), q.numpy()] = np.inf  # never retrieve the query itself
        # The k nearest, then sorted: numpy's partition + sort is about twice as fast as torch.topk here.
        nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
        nearest = np.take_along_axis(nearest, np.argsort(np.take_along_axis(d2, nearest, 1), axis=1), 1)
        relevant = lab[nearest] == lab[q.numpy(), None]
        rel = (relevant & (np.arange(1, k + 1)[None, :] <= r[:, None])).astype(np.float64)
        hits_so_far = np.cumsum(rel, axis=1)
        precision_at_1 += float(relevant[:, 0].sum())
        r_precision += float((hits_so_far[:, -1] / r).sum())
        map_at_r += float(((hits_so_far / np.arange(1, k + 1) * rel).sum(axis=1) / r).sum())
        for i, kk in enumerate(ks):
            hits[i] += float(relevant[:, :kk].any(axis=1).sum())
    m = len(queries)
    return RetrievalResult(
        precision_at_1=precision_at_1 / m,
        r_precision=r_precision / m,
        map_at_r=map_at_r / m,
        recall_at_k={str(k): h / m for k, h in zip(recall_ks, hits, strict=True)},
        n_queries=m,
    )
