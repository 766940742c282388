"""Our batch-hard miner against pytorch-metric-learning's BatchHardMiner, the counterpart the
benchmarks compare it with: the same triplets (up to ties), the same loss and the same gradient."""

import pytest
import torch

from tripletnet.distances import pairwise_distances
from tripletnet.mining import mine_hard
from tripletnet.training import triplet_step

MARGIN = 1.0


def _batch(seed: int, n: int = 32, classes: int = 4, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    embeddings = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    return embeddings, labels


def _by_anchor(dist: torch.Tensor, triplets: tuple[torch.Tensor, ...]) -> dict[int, tuple[float, float]]:
    """anchor -> (d(a,p), d(a,n)) of its triplet: indices may differ between equally distant images."""
    return {
        a: (float(dist[a, p]), float(dist[a, n]))
        for a, p, n in zip(*(t.tolist() for t in triplets), strict=True)
    }


@pytest.mark.parametrize("seed", range(3))
def test_batch_hard_mines_the_same_triplet_per_anchor_as_pml_batch_hard_miner(seed):
    miners = pytest.importorskip("pytorch_metric_learning.miners")
    embeddings, labels = _batch(seed)
    dist = pairwise_distances(embeddings)
    ours = _by_anchor(dist, tuple(mine_hard(dist, labels, MARGIN)))
    theirs = _by_anchor(dist, miners.BatchHardMiner()(embeddings, labels))
    assert ours.keys() == theirs.keys() == set(range(len(labels)))
    for anchor, (d_ap, d_an) in theirs.items():
        assert ours[anchor] == pytest.approx((d_ap, d_an), abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_batch_hard_loss_and_gradient_equal_pml_batch_hard_miner_with_triplet_margin_loss(seed, margin):
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses, miners, reducers

    assert pml is not None
    embeddings, labels = _batch(seed)
    raw = embeddings * torch.linspace(0.5, 2.0, len(labels))[:, None]  # off the sphere: normalisation is in the graph
    # PML's distance L2-normalises inside the loss; ours expects the network's normalised output.
    ours_leaf = raw.clone().requires_grad_(True)
    ours, stats = triplet_step(torch.nn.functional.normalize(ours_leaf, dim=1), labels, "hard", margin)
    ours.backward()

    theirs_leaf = raw.clone().requires_grad_(True)
    triplets = miners.BatchHardMiner()(theirs_leaf, labels)
    # Our loss is the mean over every mined triplet, including those already past the margin;
    # PML's default reducer averages only the non-zero ones, so its MeanReducer is the same loss.
    theirs = losses.TripletMarginLoss(margin=margin, reducer=reducers.MeanReducer())(theirs_leaf, labels, triplets)
    theirs.backward()

    assert stats.num_triplets == len(triplets[0])
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), abs=1e-5)
    assert float(ours.detach()) > 0, "the batch has active triplets, so the comparison says something"
    torch.testing.assert_close(ours_leaf.grad, theirs_leaf.grad, atol=1e-5, rtol=1e-4)
