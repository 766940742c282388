"""The collapse verdict on synthetic embeddings (not the run it was tuned on) and the guard's snapshot/undo."""

import dataclasses
import math

import pytest
import torch

from tripletnet.training import CollapseGuard, StepStats, is_collapsed, triplet_step
from tripletnet.training.collapse import COLLAPSE_DROP, COLLAPSE_SPREAD


def _around_one_point(n, dim, scale, seed):
    """Unit embeddings within about ``scale`` of one direction: collapse when scale is small."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(dim, generator=gen)
    return torch.nn.functional.normalize(
        centre + scale * centre.norm() * torch.randn(n, dim, generator=gen) / math.sqrt(dim), dim=1
    )


@pytest.mark.parametrize("miner", ["semihard", "hard", "batch_all"])
@pytest.mark.parametrize("n, dim, classes", [(64, 16, 4), (256, 64, 10), (96, 128, 8)])
def test_embeddings_squeezed_near_one_point_are_collapsed_and_spread_ones_are_not(miner, n, dim, classes):
    labels = torch.arange(n) % classes
    for seed in range(3):
        for scale in (1e-4, 1e-3, 0.02):
            _, stats = triplet_step(_around_one_point(n, dim, scale, seed), labels, miner, 1.0)
            assert is_collapsed(stats, 1.0), (scale, stats)
        for scale in (0.5, 1.0, 100.0):  # 100: uniform on the sphere
            _, stats = triplet_step(_around_one_point(n, dim, scale, seed), labels, miner, 1.0)
            assert not is_collapsed(stats, 1.0), (scale, stats)


def test_the_verdict_turns_as_the_spread_crosses_its_threshold():
    labels = torch.arange(128) % 8
    spreads, verdicts = [], []
    for scale in torch.logspace(-3, 0, 16).tolist():
        _, stats = triplet_step(_around_one_point(128, 32, scale, 0), labels, "hard", 1.0)
        spreads.append(stats.embedding_spread)
        verdicts.append(is_collapsed(stats, 1.0))
    assert spreads == sorted(spreads), "more noise, more spread"
    assert verdicts == [s < COLLAPSE_SPREAD for s in spreads]
    assert any(verdicts) and not all(verdicts)


def test_a_loss_stuck_at_the_margin_with_everything_close_is_collapse_at_any_margin():
    for margin in (0.2, 1.0, 2.0):
        stuck = StepStats(
            loss=margin,
            active_fraction=1.0,
            mean_pos_dist=0.01 * margin,
            mean_neg_dist=0.01 * margin,
            num_triplets=10,
            embedding_spread=0.5,
        )
        assert is_collapsed(stuck, margin)
        separating = dataclasses.replace(stuck, loss=0.5 * margin)
        assert not is_collapsed(separating, margin)
        far_apart = dataclasses.replace(stuck, mean_pos_dist=0.5 * margin, mean_neg_dist=0.5 * margin)
        assert not is_collapsed(far_apart, margin)


def test_nothing_mined_is_not_collapse():
    nothing = StepStats(
        loss=0.0, active_fraction=0.0, mean_pos_dist=math.nan, mean_neg_dist=math.nan, num_triplets=0, embedding_spread=0.9
    )
    assert not is_collapsed(nothing, 1.0)


def _stats(spread):
    return StepStats(
        loss=0.5, active_fraction=0.5, mean_pos_dist=0.5, mean_neg_dist=0.9, num_triplets=10, embedding_spread=spread
    )


def test_the_guard_trips_below_its_fraction_of_the_previous_spread():
    model = torch.nn.Linear(3, 2)
    guard = CollapseGuard(model, torch.optim.SGD(model.parameters(), lr=0.1), previous_spread=0.8)
    assert guard.min_spread == pytest.approx(COLLAPSE_DROP * 0.8)
    assert not guard.trips(_stats(0.8 * COLLAPSE_DROP + 1e-6))
    assert guard.trips(_stats(0.8 * COLLAPSE_DROP - 1e-6))


def test_undo_restores_the_weights_and_the_optimiser_state_from_the_snapshot():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()  # some optimiser state before the snapshot
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    guard = CollapseGuard(model, optimizer, previous_spread=1.0)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
    assert not torch.equal(model.weight, weights["weight"])
    guard.undo()
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], moments)
    assert optimizer.state_dict()["state"][0]["step"] == 1


def test_collapse_verdict_on_a_squeezed_batch_a_healthy_batch_and_the_run_the_thresholds_were_tuned_on():
    collapsed = torch.nn.functional.normalize(torch.ones(32, 8) + 1e-4 * torch.randn(32, 8), dim=1)
    _, stats = triplet_step(collapsed, torch.arange(32) % 4, "hard", 1.0)
    assert is_collapsed(stats, 1.0)
    healthy = torch.nn.functional.normalize(torch.randn(48, 16, generator=torch.Generator().manual_seed(5)), dim=1)
    labels = torch.arange(48) % 6
    _, stats = triplet_step(healthy, labels, "hard", 1.0)
    assert not is_collapsed(stats, 1.0)
    stuck = StepStats(
        loss=1.0, active_fraction=1.0, mean_pos_dist=0.01, mean_neg_dist=0.01, num_triplets=10, embedding_spread=0.2
    )
    assert is_collapsed(stuck, 1.0)
    # Epoch means from a real Fashion-MNIST run that collapsed after switching to hard mining.
    def epoch(loss, pos, neg, spread):
        return StepStats(
            loss=loss, active_fraction=1.0, mean_pos_dist=pos, mean_neg_dist=neg, num_triplets=0, embedding_spread=spread
        )

    assert not is_collapsed(epoch(0.628, 0.515, 0.901, 0.970), 1.0)  # semi-hard, healthy
    assert is_collapsed(epoch(1.014, 0.062, 0.048, 0.061), 1.0)  # two epochs of hard mining later
