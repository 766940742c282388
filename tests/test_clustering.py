"""NMI and AMI against scikit-learn; k-means clustering metrics on data with a known answer."""

import numpy as np
import pytest
import torch

from tripletnet.evaluation import (
    ami,
    clustering_metrics,
    contingency_table,
    expected_mutual_information,
    mutual_information,
    nmi,
)

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize(
    "n,k_true,k_pred,agree",
    [(50, 3, 4, 0.6), (400, 10, 10, 0.6), (1000, 5, 8, 0.3), (37, 2, 6, 0.0), (3000, 50, 40, 0.8),
     (200, 1, 3, 0.0), (120, 4, 1, 0.0)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_nmi_and_ami_match_scikit_learn(n, k_true, k_pred, agree, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k_true, n)
    predicted = np.where(rng.random(n) < agree, truth, rng.integers(0, k_pred, n))
    assert nmi(truth, predicted) == pytest.approx(sk.normalized_mutual_info_score(truth, predicted), abs=1e-10)
    assert ami(truth, predicted) == pytest.approx(sk.adjusted_mutual_info_score(truth, predicted), abs=1e-10)
    table = contingency_table(truth, predicted)
    assert np.array_equal(table, sk.cluster.contingency_matrix(truth, predicted))
    assert mutual_information(table) == pytest.approx(sk.mutual_info_score(truth, predicted), abs=1e-12)


def test_unbalanced_sizes_and_arbitrary_label_values():
    rng = np.random.default_rng(3)
    sizes = [1, 2, 5, 40, 300]
    truth = np.repeat(np.array([7, -3, 100, 4, 0]), sizes)
    predicted = np.where(rng.random(len(truth)) < 0.5, truth * 2, rng.integers(0, 6, len(truth)))
    assert nmi(truth, predicted) == pytest.approx(sk.normalized_mutual_info_score(truth, predicted), abs=1e-10)
    assert ami(truth, predicted) == pytest.approx(sk.adjusted_mutual_info_score(truth, predicted), abs=1e-10)


def test_special_cases():
    labels = np.array([0, 0, 1, 1, 2, 2])
    permuted = np.array([5, 5, 3, 3, 9, 9])
    assert nmi(labels, permuted) == pytest.approx(1.0) and ami(labels, permuted) == pytest.approx(1.0)
    one = np.zeros(6, dtype=int)
    assert nmi(one, one) == 1.0 and ami(one, one) == 1.0  # both a single cluster: a match by convention
    assert nmi(labels, one) == 0.0 and ami(labels, one) == pytest.approx(0.0)
    # Expected MI of a random labeling is the average MI over all labelings with those cluster sizes.
    assert expected_mutual_information(contingency_table(labels, labels)) > 0


def test_expected_mutual_information_by_enumeration():
    # Every way of splitting 6 items into groups of sizes (3, 3) against fixed sizes (2, 4), averaged.
    from itertools import combinations

    truth = np.array([0, 0, 0, 1, 1, 1])
    mis = []
    for picked in combinations(range(6), 2):
        predicted = np.ones(6, dtype=int)
        predicted[list(picked)] = 0
        mis.append(mutual_information(contingency_table(truth, predicted)))
    table = contingency_table(truth, np.array([0, 0, 1, 1, 1, 1]))
    assert expected_mutual_information(table) == pytest.approx(np.mean(mis), abs=1e-12)


def test_kmeans_on_separated_clusters_scores_one_and_is_reproducible():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 6
    emb = 10 * torch.eye(8)[labels] + 0.1 * torch.randn(600, 8, generator=gen)
    result = clustering_metrics(emb, labels, seed=1)
    assert result.to_dict() == {"nmi": pytest.approx(1.0), "ami": pytest.approx(1.0), "n_clusters": 6}
    noisy = 0.5 * torch.eye(8)[labels] + torch.randn(600, 8, generator=gen)
    first, second = clustering_metrics(noisy, labels, seed=3), clustering_metrics(noisy, labels, seed=3)
    assert first == second and 0 < first.ami < 1


def test_clustering_refuses_labels_of_another_length_as_every_evaluation_does():
    from tripletnet.errors import UserError
    from tripletnet.evaluation import clustering_metrics

    with pytest.raises(UserError, match=r"need one label per embedding, got \(3,\) labels for 50 embeddings"):
        clustering_metrics(torch.randn(50, 8), torch.arange(3))
