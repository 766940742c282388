"""Omniglot-style one-shot N-way classification of embeddings.

An episode draws N identities, one gallery image of each, and one query image of one of them (its
target, another image than the gallery's); the episode is right when the query's nearest gallery
image (Euclidean; the first on a tie) is its target's. Accuracy is the share of right episodes.
Only identities with at least two images take part (a query needs an image besides the gallery's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError


@dataclass(frozen=True)
class Episodes:
    """Drawn episodes as indices into the embeddings.

    Attributes:
        gallery: (E, N) one image per identity of each episode.
        query: (E,) the query image.
        target: (E,) the position in ``gallery`` of the query's identity.
    """

    gallery: np.ndarray
    query: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class OneShotResult:
    n_way: int
    episodes: int
    accuracy: float
    ci95: float  # half-width of the normal-approximation 95% interval of the accuracy

    def to_dict(self) -> dict[str, Any]:
        return {"n_way": self.n_way, "episodes": self.episodes, "accuracy": self.accuracy, "ci95": self.ci95}


def draw_episodes(labels: torch.Tensor | np.ndarray, n_way: int, episodes: int = 1000, seed: int = 0) -> Episodes:
    """Draw ``episodes`` one-shot ``n_way`` episodes from ``labels`` with ``seed`` (same inputs, same episodes).

    Raises:
        ParameterError: ``n_way`` below 2, ``episodes`` below 1, or fewer than ``n_way`` identities with two images.
    """
    if n_way < 2:
        raise ParameterError("n_way", f"must be at least 2, got {n_way}")
    if episodes < 1:
        raise ParameterError("episodes", f"must be at least 1, got {episodes}")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    members = [np.flatnonzero(labels == identity) for identity in np.unique(labels)]
    eligible = [m for m in members if len(m) >= 2]
    if len(eligible) < n_way:
        raise ParameterError("n_way", f"needs {n_way} identities with at least two images, the labels have {len(eligible)}")
    rng = np.random.default_rng(seed)
    gallery = np.empty((episodes, n_way), dtype=np.int64)
    query = np.empty(episodes, dtype=np.int64)
    target = rng.integers(n_way, size=episodes)
    for e in range(episodes):
        for position, identity in enumerate(rng.choice(len(eligible), n_way, replace=False)):
            images = eligible[identity]
            if position == target[e]:
                gallery[e, position], query[e] = images[rng.choice(len(images), 2, replace=False)]
            else:
                gallery[e, position] = images[rng.integers(len(images))]
    return Episodes(gallery, query, target)


def one_shot_accuracy(embeddings: torch.Tensor, labels: torch.Tensor | np.ndarray, n_way: int, episodes: int = 1000,
                      seed: int = 0) -> OneShotResult:
    """One-shot ``n_way`` accuracy over ``episodes`` seeded episodes (see the module doc)."""
    drawn = draw_episodes(labels, n_way, episodes, seed)
    points = embeddings.detach().float().cpu()
    gallery = points[torch.from_numpy(drawn.gallery)]  # (E, N, D)
    query = points[torch.from_numpy(drawn.query)]  # (E, D)
    distances = ((gallery - query[:, None, :]) ** 2).sum(dim=2)
    right = distances.argmin(dim=1).numpy() == drawn.target
    accuracy = float(right.mean())
    return OneShotResult(n_way, episodes, accuracy, 1.96 * math.sqrt(accuracy * (1 - accuracy) / episodes))
