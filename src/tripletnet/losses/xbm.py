"""Cross-batch memory (XBM, Wang et al. 2020, "Cross-Batch Memory for Embedding Learning").

Embeddings drift slowly once training has settled, so the embeddings of the last few thousand
training images, kept in a queue, are nearly what the network would give them now: every
anchor of the batch can then meet positives and negatives from far more identities than one
batch holds, which matters with thousands of classes (a batch of 256 holds at most 128 of them).

The term: the current batch is enqueued first (its oldest entries make room); then every triplet
(a, p, n) with the anchor in the batch and p, n in the queue, p of a's identity but not a's own
entry, n of another identity, contributes max(d(a,p) - d(a,n) + margin, 0); the loss is the mean
over the triplets with positive loss (batch-all's reduction). The queue holds detached
embeddings: gradients flow through the anchors only. This is what pytorch-metric-learning's
``CrossBatchMemory(TripletMarginLoss(margin), embedding_size, memory_size)`` computes, which the
tests check on the same embeddings. The queue starts empty at every (re)start of a run.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ParameterError
from .registry import LossTerm


class EmbeddingQueue:
    """A first-in first-out queue of (embedding, label), ``size`` entries, on one device."""

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ParameterError("size", f"must be positive, got {size}")
        self.embeddings = torch.zeros(size, dim, device=device)
        self.labels = torch.zeros(size, dtype=torch.int64, device=device)
        self.next = 0  # where the next entry goes
        self.filled = False

    @property
    def size(self) -> int:
        return len(self.embeddings)

    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Store a batch (detached) over the oldest entries; returns the slots it went to."""
        if len(embeddings) > self.size:
            raise ParameterError("embeddings", f"a batch of {len(embeddings)} does not fit a queue of {self.size}")
        slots = torch.arange(self.next, self.next + len(embeddings), device=self.labels.device) % self.size
        self.embeddings[slots] = embeddings.detach().to(self.embeddings.dtype)
        self.labels[slots] = labels.to(self.labels.device)
        wrapped = self.next + len(embeddings) >= self.size
        self.next = (self.next + len(embeddings)) % self.size
        self.filled = self.filled or wrapped
        return slots

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored embeddings and labels (only the filled part until the queue has wrapped)."""
        end = self.size if self.filled else self.next
        return self.embeddings[:end], self.labels[:end]


def _distances_to(anchors: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(B, M) Euclidean distances, differentiable in ``anchors``; a floor on the squared
    distance keeps the gradient finite where an anchor meets its own queue entry (d = 0)."""
    squared = anchors.pow(2).sum(1, keepdim=True) + references.pow(2).sum(1)[None, :] - 2.0 * anchors @ references.T
    return squared.clamp_min(1e-12).sqrt()


def memory_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, queue: EmbeddingQueue, margin: float) -> torch.Tensor:
    """Enqueue the batch, then the batch-all triplet loss of its anchors against the queue (see the module doc).

    Counted without listing the triplets: per anchor the negatives' distances are sorted once, and
    each positive's count of active negatives (d(a,n) < d(a,p) + margin) and their distance sum are
    read off by a binary search and a prefix sum: O(B M log M) time, O(B M) memory.

    Args:
        embeddings: (B, D) the batch's embeddings.
        labels: (B,) their labels.
        queue: the memory; the batch is added to it.
        margin: the triplet margin.

    Returns:
        The loss (0-d); a zero that still depends on ``embeddings`` when no triplet is active.
    """
    slots = queue.enqueue(embeddings, labels)
    references, reference_labels = queue.contents()
    dist = _distances_to(embeddings.float(), references.float())
    same = labels[:, None] == reference_labels[None, :]
    own = torch.zeros_like(same)
    own[torch.arange(len(labels), device=own.device), slots] = True
    positive = same & ~own
    negatives_sorted, _ = torch.where(same, torch.inf, dist).sort(dim=1)  # non-negatives last, never counted
    prefix = torch.nn.functional.pad(torch.where(negatives_sorted.isfinite(), negatives_sorted, 0.0).cumsum(dim=1), (1, 0))
    thresholds = torch.where(positive, dist + margin, -torch.inf)  # a non-positive counts no negative
    active = torch.searchsorted(negatives_sorted.detach(), thresholds.detach().contiguous(), side="left")
    total = int(active.sum())
    if total == 0:
        return dist.sum() * 0.0
    loss_sum = (active * (dist + margin) - prefix.gather(1, active)).where(positive, 0.0).sum()
    return loss_sum / total


def _make_queue(config: Any, dim: int, device: torch.device) -> EmbeddingQueue:
    return EmbeddingQueue(config.xbm_size, dim, device)


def _term(embeddings: torch.Tensor, labels: torch.Tensor, config: Any, queue: EmbeddingQueue | None) -> torch.Tensor:
    if queue is None:
        raise ParameterError("states", "must hold the cross-batch memory's queue when xbm_size > 0 "
                                       "(tripletnet.losses.term_states)")
    return memory_triplet_loss(embeddings, labels, queue, config.margin)


TERM = LossTerm(
    name="xbm",
    description="cross-batch memory: batch-all triplets of the batch's anchors against a queue of the last "
                "--xbm_size training embeddings (Wang et al. 2020), weighted by --xbm_weight",
    enabled=lambda config: config.xbm_size > 0,
    weight=lambda config: config.xbm_weight,
    make_state=_make_queue,
    compute=_term,
)
