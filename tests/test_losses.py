"""The triplet loss: pytorch-metric-learning agreement, finite gradients at d = 0, learning, step statistics."""

import pytest
import torch

from tripletnet.distances import pairwise_distances
from tripletnet.losses import triplet_margin_loss
from tripletnet.mining import MINERS, mine_batch_all
from tripletnet.training import triplet_step


def _embeddings(seed, n=48, classes=6, dim=16):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    return emb, labels


def test_pairwise_distances_match_explicit_differences_and_are_zero_on_the_diagonal():
    emb, _ = _embeddings(0)
    dist = pairwise_distances(emb)
    explicit = (emb.double()[:, None] - emb.double()[None, :]).norm(dim=2).float()
    torch.testing.assert_close(dist, explicit, atol=1e-3, rtol=0)  # Gram-matrix rounding near 0 is ~sqrt(eps)
    assert torch.equal(dist.diagonal(), torch.zeros(len(emb)))


@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_batch_all_loss_equals_pytorch_metric_learning(margin):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    for seed in range(3):
        emb, labels = _embeddings(seed)
        ours, _ = triplet_step(emb, labels, "batch_all", margin)
        theirs = pml_losses.TripletMarginLoss(margin=margin)(emb, labels)
        assert float(ours) == pytest.approx(float(theirs), abs=1e-5)


@pytest.mark.parametrize("miner", list(MINERS))
def test_loss_over_each_miners_listed_triplets_equals_pml_loss_on_the_same_triplets(miner):
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    emb, labels = _embeddings(1)
    dist = pairwise_distances(emb)
    triplets = MINERS[miner].mine(dist, labels, 0.5)
    assert len(triplets) > 0
    ours = triplet_margin_loss(dist, triplets, 0.5)
    theirs = pml_losses.TripletMarginLoss(margin=0.5)(emb, labels, indices_tuple=tuple(triplets))
    assert float(ours) == pytest.approx(float(theirs), abs=1e-5)


@pytest.mark.parametrize("miner", ["semihard", "hard", "batch_all"])
def test_gradients_are_finite_when_embeddings_coincide(miner):
    emb, labels = _embeddings(2)
    emb = emb.clone()
    emb[1] = emb[0]
    emb[7] = emb[0]  # same class as 1: a positive pair at d = 0 and a negative at d = 0
    emb.requires_grad_(True)
    loss, _ = triplet_step(emb, labels, miner, 1.0)
    loss.backward()
    assert torch.isfinite(emb.grad).all()
    collapsed = torch.ones(8, 4, requires_grad=True)
    loss, _ = triplet_step(collapsed, torch.arange(8) % 2, miner, 1.0)
    loss.backward()
    assert torch.isfinite(collapsed.grad).all()


def test_no_triplets_gives_a_zero_loss_that_still_backpropagates():
    emb = torch.randn(6, 4, requires_grad=True)
    loss, stats = triplet_step(emb, torch.zeros(6, dtype=torch.int64), "hard", 1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and stats.num_triplets == 0 and emb.grad is not None


@pytest.mark.parametrize("miner", ["semihard", "hard", "batch_all"])
def test_a_few_steps_with_any_miner_lower_the_loss_over_all_triplets(miner):
    emb, labels = _embeddings(3)
    param = torch.nn.Parameter(emb.clone())
    opt = torch.optim.SGD([param], lr=0.5)

    def all_triplet_loss():  # a fixed yardstick: the mean loss over every valid triplet
        dist = pairwise_distances(torch.nn.functional.normalize(param.detach(), dim=1))
        same = labels[:, None] == labels[None, :]
        valid = (same & ~torch.eye(len(labels), dtype=torch.bool))[:, :, None] & ~same[:, None, :]
        return float(torch.relu(dist[:, :, None] - dist[:, None, :] + 0.5)[valid].mean())

    before = all_triplet_loss()
    for _ in range(30):
        loss, _ = triplet_step(torch.nn.functional.normalize(param, dim=1), labels, miner, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all_triplet_loss() < 0.8 * before


def test_step_statistics_describe_the_mined_triplets():
    emb, labels = _embeddings(4)
    _, stats = triplet_step(emb, labels, "hard", 1.0)
    dist = pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    hardest_pos = torch.where(same, dist, -1.0).max(dim=1).values
    hardest_neg = torch.where(~same, dist, float("inf")).min(dim=1).values
    assert stats.num_triplets == len(emb)
    assert stats.mean_pos_dist == pytest.approx(float(hardest_pos.mean()), abs=1e-5)
    assert stats.mean_neg_dist == pytest.approx(float(hardest_neg.mean()), abs=1e-5)
    assert stats.active_fraction == pytest.approx(float((hardest_pos - hardest_neg + 1 > 0).float().mean()))
    assert 0.8 < stats.embedding_spread <= 1.0


def test_pairwise_distance_gradient_is_the_gradient_of_the_explicit_norms():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    torch.autograd.gradcheck(pairwise_distances, (x.clone().requires_grad_(True),))
    # The same against autograd through explicit differences, with an upstream gradient that is
    # not symmetric (the loss reads d(a, p) and d(a, n) from rows only).
    upstream = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    ours = x.clone().requires_grad_(True)
    (pairwise_distances(ours) * upstream).sum().backward()
    explicit = x.clone().requires_grad_(True)
    i, j = torch.nonzero(~torch.eye(12, dtype=torch.bool), as_tuple=True)
    ((explicit[i] - explicit[j]).norm(dim=1) * upstream[i, j]).sum().backward()
    torch.testing.assert_close(ours.grad, explicit.grad, rtol=1e-10, atol=1e-12)


def test_pairwise_distances_of_bfloat16_inputs_are_float32_and_backpropagate_as_bfloat16():
    emb, _ = _embeddings(7)
    low = emb.to(torch.bfloat16).requires_grad_(True)
    dist = pairwise_distances(low)
    assert dist.dtype == torch.float32
    torch.testing.assert_close(dist, pairwise_distances(low.detach().float()), rtol=0, atol=0)
    dist.sum().backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize("margin", [0.3, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_batch_all_from_counts_equals_the_loss_and_gradient_over_the_listed_triplets(seed, margin):
    emb, labels = _embeddings(seed, n=30, classes=4, dim=6)
    emb = emb.clone()
    emb[1] = emb[0]  # ties: a zero distance inside a class and one across classes
    emb[5] = emb[0]
    from_counts = emb.clone().requires_grad_(True)
    loss, stats = triplet_step(from_counts, labels, "batch_all", margin)
    loss.backward()
    listed = emb.clone().requires_grad_(True)
    dist = pairwise_distances(listed)
    triplets = mine_batch_all(dist, labels, margin)
    reference = triplet_margin_loss(dist, triplets, margin)
    reference.backward()
    assert stats.num_triplets == len(triplets) > 0
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(from_counts.grad, listed.grad, rtol=1e-4, atol=1e-6)
    d = dist.detach()
    assert stats.mean_pos_dist == pytest.approx(float(d[triplets.anchor, triplets.positive].mean()), rel=1e-5)
    assert stats.mean_neg_dist == pytest.approx(float(d[triplets.anchor, triplets.negative].mean()), rel=1e-5)
    assert stats.active_fraction == 1.0
