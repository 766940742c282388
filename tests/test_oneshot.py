"""One-shot N-way accuracy against a loop that scores every episode by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tripletnet.errors import ParameterError
from tripletnet.evaluation.oneshot import draw_episodes, one_shot_accuracy


def _data(seed: int = 0, classes: int = 30, noise: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 6, (classes,), generator=gen)  # some identities have one image only
    labels = torch.repeat_interleave(torch.arange(classes), sizes)
    centres = torch.randn(classes, 8, generator=gen)
    return centres[labels] + noise * torch.randn(len(labels), 8, generator=gen), labels


def _brute_force(embeddings: torch.Tensor, labels: torch.Tensor, gallery: np.ndarray, query: np.ndarray) -> float:
    right = 0
    for row, q in zip(gallery, query, strict=True):
        best, best_label = math.inf, None
        for g in row:
            d = math.dist(embeddings[q].tolist(), embeddings[g].tolist())
            if d < best:
                best, best_label = d, int(labels[g])
        right += best_label == int(labels[q])
    return right / len(query)


@pytest.mark.parametrize("n_way", [5, 20])
def test_accuracy_matches_brute_force(n_way: int) -> None:
    embeddings, labels = _data()
    result = one_shot_accuracy(embeddings, labels, n_way, episodes=300, seed=3)
    drawn = draw_episodes(labels, n_way, episodes=300, seed=3)
    assert result.accuracy == pytest.approx(_brute_force(embeddings, labels, drawn.gallery, drawn.query), abs=1e-12)
    assert 0 < result.accuracy < 1  # the noise makes some episodes wrong: the comparison is not trivial


def test_episodes_are_well_formed_and_seeded() -> None:
    _, labels = _data(1)
    drawn = draw_episodes(labels, 5, episodes=200, seed=7)
    gallery_labels = labels.numpy()[drawn.gallery]
    assert all(len(set(row)) == 5 for row in gallery_labels)  # N distinct identities
    assert (labels.numpy()[drawn.query] == gallery_labels[np.arange(200), drawn.target]).all()
    assert (drawn.query != drawn.gallery[np.arange(200), drawn.target]).all()  # another image than the gallery's
    counts = np.bincount(labels.numpy())
    assert (counts[labels.numpy()[drawn.query]] >= 2).all()
    again = draw_episodes(labels, 5, episodes=200, seed=7)
    assert (again.gallery == drawn.gallery).all() and (again.query == drawn.query).all()
    other = draw_episodes(labels, 5, episodes=200, seed=8)
    assert not (other.gallery == drawn.gallery).all()


def test_separated_identities_score_one_and_chance_is_about_one_in_n() -> None:
    embeddings, labels = _data(2, classes=40, noise=0.0)
    assert one_shot_accuracy(embeddings, labels, 20, episodes=100).accuracy == 1.0
    noise = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(0))
    chance = one_shot_accuracy(noise, labels, 5, episodes=1000).accuracy
    assert abs(chance - 0.2) < 0.06


def test_refuses_too_few_identities() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    with pytest.raises(ParameterError, match="n_way"):
        draw_episodes(labels, 3)
    with pytest.raises(ParameterError, match="episodes"):
        draw_episodes(labels, 2, episodes=0)
