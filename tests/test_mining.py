"""Miners against brute-force enumeration of every triplet and against pytorch-metric-learning;
the torch path against the numpy path; the registry and what reads it."""

import itertools
import re

import pytest
import torch

from tripletnet.distances import pairwise_distances
from tripletnet.errors import ParameterError
from tripletnet.mining import (
    MINERS,
    MinerSpec,
    Triplets,
    count_batch_all,
    describe_miners,
    get_miner,
    mine_batch_all,
    mine_hard,
    mine_semihard,
    miner_names,
    parse_schedule,
)
from tripletnet.training import triplet_step

MARGIN = 0.5


def _batch(seed, n=24, classes=4, dim=8, duplicates=True):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    labels[-1] = classes  # a class with a single image: an anchor without positives
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    if duplicates:
        emb[1] = emb[0]  # identical embeddings: d = 0 and ties
        emb[3] = emb[2]
    return emb, labels


def _all_triplets(labels):
    n = len(labels)
    for a, p, q in itertools.product(range(n), repeat=3):
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]:
            yield a, p, q


SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_semihard_picks_the_closest_negative_beyond_the_positive(seed):
    emb, labels = _batch(seed)
    dist = pairwise_distances(emb)
    mined = mine_semihard(dist, labels, MARGIN)
    chosen = {(a, p): n for a, p, n in zip(*(t.tolist() for t in mined), strict=True)}
    expected = {}
    for a, p in {(a, p) for a, p, _ in _all_triplets(labels.tolist())}:
        negatives = [float(dist[a, n]) for n in range(len(labels)) if labels[n] != labels[a]]
        farther = [d for d in negatives if d > float(dist[a, p])]
        expected[(a, p)] = min(farther) if farther else max(negatives)  # FaceNet rule, documented fallback
    assert chosen.keys() == expected.keys()
    for pair, n in chosen.items():
        assert float(dist[pair[0], n]) == pytest.approx(expected[pair], abs=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_hard_is_batch_hard(seed):
    emb, labels = _batch(seed)
    dist = pairwise_distances(emb)
    mined = mine_hard(dist, labels, MARGIN)
    got = {a: (float(dist[a, p]), float(dist[a, n])) for a, p, n in zip(*(t.tolist() for t in mined), strict=True)}
    expected = {}
    for a, p, n in _all_triplets(labels.tolist()):
        hp, hn = expected.get(a, (-1.0, float("inf")))
        expected[a] = (max(hp, float(dist[a, p])), min(hn, float(dist[a, n])))
    assert got == expected
    assert len(labels) - 1 not in got, "the single-image class has no positive"


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_all_is_every_triplet_with_positive_loss(seed):
    emb, labels = _batch(seed)
    dist = pairwise_distances(emb)
    mined = mine_batch_all(dist, labels, MARGIN, chunk_elements=50)  # tiny chunks: the loop must not lose any
    got = sorted(zip(*(t.tolist() for t in mined), strict=True))
    expected = sorted(t for t in _all_triplets(labels.tolist()) if dist[t[0], t[1]] - dist[t[0], t[2]] + MARGIN > 0)
    assert got == expected


def test_semihard_triplets_agree_with_pytorch_metric_learning():
    miners = pytest.importorskip("pytorch_metric_learning.miners")
    for seed in range(4):
        emb, labels = _batch(seed, n=40, classes=5, duplicates=False)
        dist = pairwise_distances(emb)
        ours = mine_semihard(dist, labels, MARGIN)
        a, p, n = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard")(emb, labels)
        theirs: dict[tuple[int, int], list[int]] = {}
        for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist(), strict=True):
            theirs.setdefault((ai, pi), []).append(ni)
        assert theirs, "the batch has semi-hard triplets"
        ours_map = {(ai, pi): ni for ai, pi, ni in zip(*(t.tolist() for t in ours), strict=True)}
        for (ai, pi), negatives in theirs.items():
            # PML lists all semi-hard negatives of the pair; ours is the closest of them.
            closest = min(negatives, key=lambda ni: float(dist[ai, ni]))
            assert float(dist[ai, ours_map[(ai, pi)]]) == pytest.approx(float(dist[ai, closest]), abs=1e-6)
        # And every pair of ours with a negative inside the margin is one PML calls semi-hard.
        for (ai, pi), ni in ours_map.items():
            if float(dist[ai, pi]) < float(dist[ai, ni]) < float(dist[ai, pi]) + MARGIN - 1e-6:
                assert (ai, pi) in theirs


def test_miners_cope_with_a_single_class_batch():
    emb, _ = _batch(0)
    labels = torch.zeros(len(emb), dtype=torch.int64)
    dist = pairwise_distances(emb)
    for miner in (mine_semihard, mine_hard, mine_batch_all):
        assert len(miner(dist, labels, MARGIN)) == 0


def _assert_same_triplets(a: Triplets, b: Triplets) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x.cpu(), y.cpu())


@pytest.mark.parametrize("name", list(MINERS))
@pytest.mark.parametrize("seed", range(4))
def test_torch_path_lists_the_same_triplets_in_the_same_order_as_the_numpy_path(name, seed):
    emb, labels = _batch(seed, n=40, classes=5)
    emb[5] = emb[4]  # more ties, across classes this time when labels differ
    dist = pairwise_distances(emb)
    spec = MINERS[name]
    fast = spec.mine(dist, labels, MARGIN, use_numpy=True)
    portable = spec.mine(dist, labels, MARGIN, use_numpy=False)
    assert len(fast) > 0
    _assert_same_triplets(fast, portable)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_torch_path_counts_batch_all_exactly_as_the_numpy_path(seed, margin):
    emb, labels = _batch(seed, n=40, classes=5)
    dist = pairwise_distances(emb)
    fast = count_batch_all(dist, labels, margin, use_numpy=True)
    portable = count_batch_all(dist, labels, margin, use_numpy=False)
    assert fast.total == portable.total == len(mine_batch_all(dist, labels, margin)) > 0
    assert torch.equal(fast.per_positive, portable.per_positive)
    assert torch.equal(fast.per_negative, portable.per_negative)


@pytest.mark.parametrize("name", list(MINERS))
def test_torch_path_copes_with_single_class_and_tiny_batches(name):
    spec = MINERS[name]
    emb, _ = _batch(0)
    one_class = torch.zeros(len(emb), dtype=torch.int64)
    assert len(spec.mine(pairwise_distances(emb), one_class, MARGIN, use_numpy=False)) == 0
    single = pairwise_distances(emb[:1])
    assert len(spec.mine(single, one_class[:1], MARGIN, use_numpy=False)) == 0


@pytest.mark.parametrize("name", list(MINERS))
def test_triplet_step_gives_the_same_loss_and_gradient_on_either_path(name):
    emb, labels = _batch(1, n=40, classes=5, duplicates=False)
    results = []
    for use_numpy in (True, False):
        leaf = emb.clone().requires_grad_(True)
        loss, stats = triplet_step(leaf, labels, name, MARGIN, use_numpy=use_numpy)
        loss.backward()
        results.append((loss.detach(), leaf.grad, stats))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine: the GPU path is tested where one exists"
)
@pytest.mark.parametrize("name", list(MINERS))
def test_miners_on_cuda_choose_what_the_cpu_numpy_path_chooses(name):
    emb, labels = _batch(2, n=64, classes=6)
    dist = pairwise_distances(emb)
    spec = MINERS[name]
    on_gpu = spec.mine(dist.cuda(), labels.cuda(), MARGIN)
    assert on_gpu.anchor.device.type == "cuda"
    _assert_same_triplets(spec.mine(dist, labels, MARGIN), on_gpu)
    loss, _ = triplet_step(emb.cuda().requires_grad_(True), labels.cuda(), name, MARGIN)
    assert loss.device.type == "cuda"


def test_every_registered_miner_declares_itself_consistently():
    assert miner_names() == tuple(MINERS) == ("semihard", "hard", "batch_all")
    for name, spec in MINERS.items():
        assert spec.name == name and spec.description
        assert spec.loss_form in ("triplets", "counts")
        assert (spec.count is not None) == (spec.loss_form == "counts")
    assert [name for name, _ in describe_miners()] == list(MINERS)
    assert MINERS["hard"].can_collapse and not MINERS["semihard"].can_collapse and not MINERS["batch_all"].can_collapse


def test_miner_names_are_looked_up_with_dashes_or_underscores_and_unknown_ones_name_the_parameter():
    assert get_miner("batch-all") is MINERS["batch_all"]
    with pytest.raises(ParameterError, match="semihard, hard, batch_all") as caught:
        get_miner("hardest")
    assert caught.value.parameter == "miner"
    with pytest.raises(ParameterError, match="mining names an unknown miner 'hardest'"):
        parse_schedule("semihard:0.5,hardest")


def test_a_counts_miner_without_a_count_function_is_refused():
    with pytest.raises(ParameterError, match="count"):
        MinerSpec("broken", "lists nothing", can_collapse=False, loss_form="counts", mine=mine_hard)


def _mine_easiest(dist, labels, margin=0.0, *, use_numpy=None):
    """A miner written the way a contributor adds one: per anchor-positive pair, the farthest negative."""
    same = labels[:, None] == labels[None, :]
    anchor, positive = torch.nonzero(same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device), as_tuple=True)
    negative = torch.where(same, -1.0, dist.detach()).argmax(dim=1)
    has_negative = (~same).any(dim=1)[anchor]
    return Triplets(anchor[has_negative], positive[has_negative], negative[anchor][has_negative])


def test_a_newly_registered_miner_is_accepted_by_the_schedule_and_the_training_step(monkeypatch):
    """The worked example for adding a miner: a function, a MinerSpec, registration, a brute-force check."""
    spec = MinerSpec(
        "easiest", "per anchor-positive pair, the farthest negative", can_collapse=False, loss_form="triplets", mine=_mine_easiest
    )
    monkeypatch.setitem(MINERS, "easiest", spec)
    assert [entry.miner for entry in parse_schedule("easiest:0.5,hard")] == ["easiest", "hard"]
    emb, labels = _batch(3)
    dist = pairwise_distances(emb)
    got = {(a, p): n for a, p, n in zip(*(t.tolist() for t in _mine_easiest(dist, labels)), strict=True)}
    for a, p in {(a, p) for a, p, _ in _all_triplets(labels.tolist())}:  # brute force
        farthest = max(float(dist[a, n]) for n in range(len(labels)) if labels[n] != labels[a])
        assert float(dist[a, got[(a, p)]]) == farthest
    loss, stats = triplet_step(emb, labels, "easiest", MARGIN)
    assert stats.num_triplets == len(got)
    expected = sum(max(float(dist[a, p] - dist[a, n]) + MARGIN, 0.0) for (a, p), n in got.items()) / len(got)
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_the_documented_miner_table_is_the_registry():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "mining.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| (yes|no) \| (triplets|counts) \|$", page, flags=re.MULTILINE)
    assert rows == [
        (spec.name, spec.description, "yes" if spec.can_collapse else "no", spec.loss_form) for spec in MINERS.values()
    ]
