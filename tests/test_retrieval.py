"""Retrieval metrics against pytorch-metric-learning's AccuracyCalculator, a brute force and a hand-made case."""

import numpy as np
import pytest
import torch

from tripletnet.errors import UserError
from tripletnet.evaluation import retrieval_metrics


def _clustered(n, classes=10, dim=16, signal=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = torch.randn(classes, dim, generator=gen)
    emb = torch.randn(n, dim, generator=gen) + signal * centres[labels]
    return torch.nn.functional.normalize(emb, dim=1), labels


def _brute_force(emb, labels, ks=(1, 2, 4, 8)):
    """Full argsort of float64 distances per query, definitions from Musgrave et al. 2020 written out."""
    x, lab = emb.double().numpy(), labels.numpy()
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    p1, rp, mapr, recall = [], [], [], {k: [] for k in ks}
    for q in range(len(x)):
        r = int((lab == lab[q]).sum()) - 1
        if r == 0:
            continue
        rel = (lab[np.argsort(d[q], kind="stable")[:-1]] == lab[q]).astype(float)  # drop self, sorted last
        p1.append(rel[0])
        rp.append(rel[:r].sum() / r)
        mapr.append(sum(rel[:i].sum() / i for i in range(1, r + 1) if rel[i - 1]) / r)
        for k in ks:
            recall[k].append(float(rel[:k].any()))
    return np.mean(p1), np.mean(rp), np.mean(mapr), {str(k): np.mean(v) for k, v in recall.items()}, len(p1)


@pytest.mark.parametrize("n,signal,block,singletons", [(600, 1.0, 1 << 23, 0), (1500, 2.0, 5000, 3), (300, 0.3, 100, 5)])
def test_retrieval_matches_pytorch_metric_learning(n, signal, block, singletons):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    emb, labels = _clustered(n, signal=signal)
    labels[:singletons] = 100 + torch.arange(singletons)  # classes of one image: no query from them
    ours = retrieval_metrics(emb, labels, block_elements=block)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
    )
    theirs = calculator.get_accuracy(emb, labels, ref_includes_query=True)
    assert ours.n_queries == n - singletons
    assert ours.precision_at_1 == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours.r_precision == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


@pytest.mark.parametrize("seed,classes,block", [(0, 7, 1 << 23), (1, 30, 997), (2, 3, 1)])
def test_retrieval_matches_a_brute_force_with_recall(seed, classes, block):
    emb, labels = _clustered(200, classes=classes, signal=1.5, seed=seed)
    labels[0] = 1000  # one singleton class
    p1, rp, mapr, recall, m = _brute_force(emb, labels)
    ours = retrieval_metrics(emb, labels, block_elements=block)
    assert ours.n_queries == m == 199
    assert ours.precision_at_1 == pytest.approx(p1, abs=1e-12)
    assert ours.r_precision == pytest.approx(rp, abs=1e-12)
    assert ours.map_at_r == pytest.approx(mapr, abs=1e-12)
    assert ours.recall_at_k == pytest.approx(recall, abs=1e-12)


def test_hand_made_retrieval_case():
    # 1-D points, no ties: class 0 at 0, 1, 6; class 1 at 2.4, 4; class 2 alone at 100 (never a query).
    emb = torch.tensor([[0.0], [1.0], [6.0], [2.4], [4.0], [100.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    result = retrieval_metrics(emb, labels, recall_ks=(1, 2, 8))
    # Neighbours in order: 0 -> [1+, 2.4, 4, 6+]; 1 -> [0+, 2.4, 4, 6+]; 6 -> [4, 2.4, 1+, 0+];
    # 2.4 -> [1, 4+]; 4 -> [2.4+]. R = 2, 2, 2, 1, 1. AP@R: 1/2, 1/2, 0, 0, 1. recall@8 is capped at 5.
    assert result.n_queries == 5
    assert result.precision_at_1 == pytest.approx(3 / 5)
    assert result.r_precision == pytest.approx((1 / 2 + 1 / 2 + 0 + 0 + 1) / 5)
    assert result.map_at_r == pytest.approx((1 / 2 + 1 / 2 + 0 + 0 + 1) / 5)
    assert result.recall_at_k == {"1": pytest.approx(3 / 5), "2": pytest.approx(4 / 5), "8": 1.0}


def test_map_at_r_rewards_order_within_the_first_r():
    # Class 0 at 0, 1, 3; class 1 alone at 1.5 (never a query); class 2 at 10, 11.
    emb = torch.tensor([[0.0], [1.0], [1.5], [3.0], [10.0], [11.0]])
    labels = torch.tensor([0, 0, 1, 0, 2, 2])
    result = retrieval_metrics(emb, labels)
    # R = 2 for 0, 1, 3. Query 0: [1+, 1.5] -> R-precision 1/2, AP@R 1/2. Query 1: [1.5, 0+] -> 1/2 and
    # (1/2)/2 = 1/4. Query 3: [1.5, 1+] -> 1/2 and 1/4. Queries 10 and 11: 1 and 1.
    assert result.n_queries == 5
    assert result.r_precision == pytest.approx((1 / 2 + 1 / 2 + 1 / 2 + 1 + 1) / 5)
    assert result.map_at_r == pytest.approx((1 / 2 + 1 / 4 + 1 / 4 + 1 + 1) / 5)
    assert result.precision_at_1 == pytest.approx(3 / 5)


def test_no_possible_query_is_a_user_error():
    with pytest.raises(UserError, match="at least two"):
        retrieval_metrics(torch.randn(4, 3), torch.arange(4))


def test_ten_thousand_separated_embeddings_retrieve_perfectly():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10_000) % 10
    emb = torch.nn.functional.normalize(4 * torch.eye(16)[labels] + 0.2 * torch.randn(10_000, 16, generator=gen), dim=1)
    result = retrieval_metrics(emb, labels)
    assert result.n_queries == 10_000
    assert result.precision_at_1 == result.r_precision == result.map_at_r == 1.0
    assert set(result.recall_at_k.values()) == {1.0}
