"""Retrieval against pytorch-metric-learning's AccuracyCalculator; NMI/AMI against scikit-learn."""

import numpy as np
import pytest
import torch

from tripletnet.evaluation import ami, evaluate_embeddings, format_table, nmi, retrieval_metrics
from tripletnet.errors import UserError


def _clustered(n, classes=10, dim=16, signal=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    emb = torch.randn(n, dim, generator=gen) + signal * torch.nn.functional.one_hot(labels, dim).float()
    return torch.nn.functional.normalize(emb, dim=1), labels


@pytest.mark.parametrize("n,signal,block", [(600, 1.0, 1 << 23), (1500, 2.0, 5000), (300, 0.3, 100)])
def test_retrieval_matches_pytorch_metric_learning(n, signal, block):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    emb, labels = _clustered(n, signal=signal)
    ours = retrieval_metrics(emb, labels, block_elements=block)
    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
    )
    theirs = calculator.get_accuracy(emb, labels, ref_includes_query=True)
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


def test_hand_made_retrieval_case():
    # 1-D points, no ties: class 0 at 0, 1, 6; class 1 at 2.4, 4; class 2 alone at 100 (never a query).
    emb = torch.tensor([[0.0], [1.0], [6.0], [2.4], [4.0], [100.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    result = retrieval_metrics(emb, labels, recall_ks=(1, 2))
    # Nearest R neighbours, relevant or not: 0 -> [1 yes, 2.4 no]; 1 -> [0 yes, 2.4 no]; 6 -> [4 no, 2.4 no];
    # 2.4 -> [1 no]; 4 -> [2.4 yes]. Average precisions at R: 1/2, 1/2, 0, 0, 1.
    assert result["n_queries"] == 5
    assert result["precision_at_1"] == pytest.approx(3 / 5)
    assert result["r_precision"] == pytest.approx(2 / 5)
    assert result["map_at_r"] == pytest.approx(2 / 5)
    assert result["recall_at_k"] == {"1": pytest.approx(3 / 5), "2": pytest.approx(4 / 5)}


@pytest.mark.parametrize("seed", range(4))
def test_nmi_and_ami_match_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n, k_true, k_pred = [(50, 3, 4), (400, 10, 10), (1000, 5, 8), (37, 2, 6)][seed]
    truth = rng.integers(0, k_true, n)
    predicted = np.where(rng.random(n) < 0.6, truth, rng.integers(0, k_pred, n))
    assert nmi(truth, predicted) == pytest.approx(metrics.normalized_mutual_info_score(truth, predicted), abs=1e-10)
    assert ami(truth, predicted) == pytest.approx(metrics.adjusted_mutual_info_score(truth, predicted), abs=1e-10)
    assert nmi(truth, truth) == pytest.approx(1.0) and ami(truth, truth) == pytest.approx(1.0)


def test_evaluate_embeddings_has_every_documented_key_and_a_table():
    emb, labels = _clustered(500, signal=3.0)
    for protocol in ("all-pairs", "pairs", "kfold"):
        result = evaluate_embeddings(emb, labels, protocol=protocol, far=1e-2)
        for key in ("protocol", "n_pairs", "far", "threshold", "val", "accuracy", "auc", "eer", "positive_mean", "positive_std",
                    "negative_mean", "negative_std", "precision_at_1", "r_precision", "map_at_r", "nmi", "ami"):
            assert result.get(key) is not None, (protocol, key)
        table = format_table(result)
        assert "Target FAR" in table and "MAP@R" in table
    with pytest.raises(UserError, match="unknown protocol"):
        evaluate_embeddings(emb, labels, protocol="lfw")
