"""Protocol "pairs": the reference's random pairs, half same-class, thresholded at FAR on themselves."""

from __future__ import annotations

import torch

from ....errors import ParameterError, UserError
from ...results import RepeatedPairsResult, VerificationResult
from ..conventions import check_embeddings, mean_and_std
from ..exact import verify_distances
from ..folds import pair_distances
from .base import Protocol, check_pair_budget

RANDOM_PAIRS = 1024  # the reference's sample size


def draw_pairs(labels: torch.Tensor, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pairs`` random index pairs, the first n_pairs // 2 same-class, the rest different-class.

    Drawn with replacement from a ``torch.Generator`` seeded with ``seed``. A positive pair is an
    anchor uniform over the images whose class has another member, then a uniform other member
    of its class (never the anchor itself); a negative pair is a uniform anchor, then a uniform
    image of any other class.

    Args:
        labels: (N,) integer class labels.
        n_pairs: how many pairs, at least 2 and at most ``base.MAX_PAIRS``.
        seed: the generator's seed.

    Returns:
        (pairs (n, 2) int64, is_positive (n,) bool).
    """
    if n_pairs < 2:
        raise ParameterError("n_pairs", f"must be at least 2, got {n_pairs}")
    check_pair_budget(n_pairs)
    labels = torch.as_tensor(labels).to(torch.int64)
    generator = torch.Generator().manual_seed(seed)
    n_positive, n_negative = n_pairs // 2, n_pairs - n_pairs // 2
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    class_of = torch.searchsorted(classes, labels)
    can_pair = torch.nonzero(counts[class_of] >= 2).flatten()
    if len(can_pair) == 0 or len(classes) < 2:
        raise UserError("random pairs need at least two classes and a class with two images")
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))  # position of each image in label-sorted order
    # Positive: an anchor, then an offset of 1..count-1 within its class block (wrapping around).
    anchor = can_pair[torch.randint(len(can_pair), (n_positive,), generator=generator)]
    anchor_class = class_of[anchor]
    size = counts[anchor_class]
    offset = 1 + (torch.rand(n_positive, generator=generator) * (size - 1)).to(torch.int64).clamp_(max=size - 2)
    partner = order[starts[anchor_class] + (rank[anchor] - starts[anchor_class] + offset) % size]
    # Negative: an anchor, then the k-th image outside its class block in label-sorted order.
    negative_anchor = torch.randint(len(labels), (n_negative,), generator=generator)
    negative_class = class_of[negative_anchor]
    outside = len(labels) - counts[negative_class]
    k = (torch.rand(n_negative, generator=generator) * outside).to(torch.int64).clamp_(max=outside - 1)
    negative_partner = order[torch.where(k >= starts[negative_class], k + counts[negative_class], k)]
    pairs = torch.cat([torch.stack([anchor, partner], 1), torch.stack([negative_anchor, negative_partner], 1)])
    is_positive = torch.cat([torch.ones(n_positive, dtype=torch.bool), torch.zeros(n_negative, dtype=torch.bool)])
    return pairs, is_positive


def random_pairs(
    embeddings: torch.Tensor, labels: torch.Tensor, n_pairs: int | None = RANDOM_PAIRS, far: float = 1e-3, seed: int = 0
) -> VerificationResult:
    """The reference's protocol: ``n_pairs`` random pairs (half positive; None means 1024), threshold
    at FAR on them. When 1 / n_negative > far the sample cannot resolve the FAR: ``val`` is None and
    ``warning`` says so.

    Args:
        embeddings: (N, D) embeddings.
        labels: (N,) integer labels.
        n_pairs: pairs to draw (None: 1024).
        far: the target FAR.
        seed: the draw's seed.

    Returns:
        A VerificationResult with protocol "pairs".
    """
    embeddings, labels = check_embeddings(embeddings, labels)
    pairs, is_positive = draw_pairs(labels, RANDOM_PAIRS if n_pairs is None else n_pairs, seed)
    distances = pair_distances(embeddings, pairs[:, 0], pairs[:, 1])
    positive = is_positive.numpy()
    return verify_distances(distances[positive], distances[~positive], far=far, protocol="pairs")


REPEATED_KEYS = ("threshold", "val", "accuracy", "far_reached", "auc", "eer", "positive_mean", "positive_std",
                 "negative_mean", "negative_std")


def repeated_random_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_pairs: int | None = RANDOM_PAIRS,
    far: float = 1e-3,
    repeats: int = 20,
    seed: int = 0,
) -> RepeatedPairsResult:
    """Mean and population std of each metric over ``repeats`` draws, with seeds seed .. seed+repeats-1.

    A metric that is None in a draw (VAL at an unresolvable FAR) is None in the summary.

    Returns:
        A RepeatedPairsResult over the keys of ``REPEATED_KEYS``.
    """
    if repeats < 1:
        raise ParameterError("repeats", f"must be at least 1, got {repeats}")
    check_pair_budget(RANDOM_PAIRS if n_pairs is None else n_pairs, repeats)
    runs = [random_pairs(embeddings, labels, n_pairs, far, seed + r) for r in range(repeats)]
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key in REPEATED_KEYS:
        mean[key], std[key] = mean_and_std([getattr(run, key) for run in runs])
    return RepeatedPairsResult(repeats=repeats, mean=mean, std=std)


PAIRS = Protocol(
    name="pairs",
    description=f"the reference's protocol: n_pairs random pairs (default {RANDOM_PAIRS}), half same-class",
    run=random_pairs,
    default_n_pairs=RANDOM_PAIRS,
    repeatable=True,
)
