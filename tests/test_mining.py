"""Miners against brute-force enumeration of every triplet, and against pytorch-metric-learning."""

import itertools

import pytest
import torch

from tripletnet.distances import pairwise_distances
from tripletnet.mining import mine_batch_all, mine_hard, mine_semihard

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
    chosen = {(a, p): n for a, p, n in zip(*(t.tolist() for t in mined))}
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
    got = {a: (float(dist[a, p]), float(dist[a, n])) for a, p, n in zip(*(t.tolist() for t in mined))}
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
    got = sorted(zip(*(t.tolist() for t in mined)))
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
        for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
            theirs.setdefault((ai, pi), []).append(ni)
        assert theirs, "the batch has semi-hard triplets"
        ours_map = {(ai, pi): ni for ai, pi, ni in zip(*(t.tolist() for t in ours))}
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
