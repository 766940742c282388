"""Instance-level triplets: two views of every image, the other view as the only positive."""

import dataclasses

import pytest
import torch

from tripletnet.config import TrainConfig
from tripletnet.errors import ParameterError
from tripletnet.training.step import instance_triplet_step, triplet_step


def _two_views(seed: int, batch: int = 24, classes: int = 4, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    first = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1)
    second = torch.nn.functional.normalize(first + 0.3 * torch.randn(batch, dim, generator=gen), dim=1)
    labels = torch.arange(batch) % classes
    return torch.cat([first, second]), labels


def _brute_force_instance_loss(embeddings: torch.Tensor, margin: float) -> float:
    """Per view: its other view is the positive; the negative is the closest other image farther
    than it (semi-hard), else the farthest one; mean hinge."""
    n = len(embeddings)
    half = n // 2
    hinges = []
    for a in range(n):
        p = (a + half) % n
        d_ap = float((embeddings[a] - embeddings[p]).norm())
        negatives = [float((embeddings[a] - embeddings[j]).norm()) for j in range(n) if j not in (a, p)]
        farther = [d for d in negatives if d > d_ap]
        d_an = min(farther) if farther else max(negatives)
        hinges.append(max(d_ap - d_an + margin, 0.0))
    return sum(hinges) / len(hinges)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_instance_loss_is_the_class_loss_plus_the_weighted_brute_force_instance_loss(seed, weight):
    embeddings, labels = _two_views(seed)
    config = TrainConfig(margin=0.5, instance_weight=weight, instance_margin=0.2)
    loss, stats = instance_triplet_step(embeddings, labels, "hard", config)
    class_loss, class_stats = triplet_step(embeddings, labels.repeat(2), "hard", config.margin)
    expected = float(class_loss) + weight * _brute_force_instance_loss(embeddings, config.instance_margin)
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert stats == class_stats  # the logged statistics are the class term's


def test_instance_term_pulls_the_two_views_of_an_image_together():
    embeddings, labels = _two_views(3)
    embeddings = embeddings.clone().requires_grad_(True)
    config = TrainConfig(instance_weight=1.0, instance_margin=0.5)
    with_instance, _ = instance_triplet_step(embeddings, labels, "semihard", config)
    (grad_with,) = torch.autograd.grad(with_instance, embeddings)
    without, _ = instance_triplet_step(embeddings, labels, "semihard", dataclasses.replace(config, instance_weight=0.0))
    (grad_without,) = torch.autograd.grad(without, embeddings)
    # A small step along the instance term's own gradient brings each image's views closer on average.
    step = embeddings.detach() - 0.05 * (grad_with - grad_without)
    half = len(labels)
    before = (embeddings[:half] - embeddings[half:]).norm(dim=1).mean()
    after = (step[:half] - step[half:]).norm(dim=1).mean()
    assert after < before


@pytest.mark.parametrize(("field", "value"),
                         [("instance_weight", -1.0), ("instance_weight", float("nan")), ("instance_margin", 0.0)])
def test_bad_instance_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ParameterError, match=field):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()
