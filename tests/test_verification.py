"""Verification protocols against brute force and scikit-learn's ROC, plus hand-made cases."""

import math

import numpy as np
import pytest
import torch

from tripletnet.evaluation import all_pairs, draw_pairs, kfold, random_pairs, threshold_at_far, verify_distances
from tripletnet.evaluation.verification import allowed_false_accepts

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _clustered(n, classes=5, dim=8, spread=1.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = torch.randn(classes, dim, generator=gen) * spread
    emb = torch.nn.functional.normalize(centres[labels] + torch.randn(n, dim, generator=gen), dim=1)
    return emb, labels


def _brute_force(emb, labels):
    """Every pair i < j, with distances computed the same way (float32 Gram) as the streaming path."""
    x = emb.to(torch.float32)
    sq = x.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0).sqrt()
    i, j = torch.triu_indices(len(x), len(x), 1)
    return d[i, j].double().numpy(), (labels[i] == labels[j]).numpy()


def _reference_point(d, same, far):
    """The definition, literally: the largest t among candidate cut points with FP/N_neg <= far."""
    neg, pos = np.sort(d[~same]), d[same]
    candidates = np.append(np.unique(d), np.inf)
    ok = [t for t in candidates if np.count_nonzero(neg < t) / len(neg) <= far]
    t = max(ok)
    return t, np.count_nonzero(pos < t) / len(pos), np.count_nonzero(neg < t) / len(neg)


@pytest.mark.parametrize("far", [0.3, 1e-1, 1e-2, 1e-3, 1e-5])
@pytest.mark.parametrize("block", [1, 37, 10_000_000])
def test_all_pairs_equals_brute_force_for_any_block_size(far, block):
    emb, labels = _clustered(150)
    result = all_pairs(emb, labels, far=far, block_elements=block)
    d, same = _brute_force(emb, labels)
    t, val, far_reached = _reference_point(d, same, far)
    assert result.threshold == pytest.approx(t, abs=1e-6)
    assert result.val == pytest.approx(val, abs=1e-12)
    assert result.far_reached == pytest.approx(far_reached, abs=1e-12)
    accepted = d < result.threshold
    assert result.accuracy == pytest.approx(np.mean(accepted == same), abs=1e-12)
    assert result.n_positive == same.sum() and result.n_negative == (~same).sum()
    assert result.positive_mean == pytest.approx(d[same].mean(), abs=1e-6)
    assert result.negative_std == pytest.approx(d[~same].std(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_val_auc_and_threshold_agree_with_sklearn_roc(seed):
    emb, labels = _clustered(200, spread=0.8, seed=seed)
    d, same = _brute_force(emb, labels)
    fpr, tpr, thresholds = sklearn_metrics.roc_curve(same, -d, drop_intermediate=False)  # sklearn accepts score >= cut, i.e. d <= -cut
    auc = sklearn_metrics.roc_auc_score(same, -d)
    exact = verify_distances(d[same], d[~same], far=1e-2)
    streamed = all_pairs(emb, labels, far=1e-2)
    assert exact.auc == pytest.approx(auc, abs=1e-12)
    assert abs(streamed.auc - auc) <= streamed.auc_error_bound + 1e-12
    for far in (0.05, 1e-2, 1e-3):
        result = verify_distances(d[same], d[~same], far=far)
        # Our "d < t" at t = the next distance above sklearn's best "d <= cut" operating point is the same classifier.
        best = np.nonzero(fpr <= far + 1e-15)[0].max()
        assert result.val == pytest.approx(tpr[best], abs=1e-12)
        assert result.far_reached == pytest.approx(fpr[best], abs=1e-12)
    # EER from either path sits where sklearn's FPR meets its FNR.
    fnr = 1 - tpr
    k = np.argmin(np.abs(fpr - fnr))
    assert exact.eer == pytest.approx((fpr[k] + fnr[k]) / 2, abs=0.02)
    assert streamed.eer == pytest.approx(exact.eer, abs=0.01)


def test_ties_are_rejected_at_the_threshold():
    pos = np.array([0.1, 0.5, 0.5, 0.9])
    neg = np.array([0.5, 0.5, 0.7, 1.0, 1.2])
    result = verify_distances(pos, neg, far=0.0)
    # No false accept allowed: t = 0.5, and d < t rejects the positives tied at 0.5.
    assert result.threshold == 0.5 and result.val == 0.25 and result.far_reached == 0.0
    # AUC by definition: P(neg > pos) + 0.5 P(tie)
    wins = sum((n > p) + 0.5 * (n == p) for p in pos for n in neg)
    assert result.auc == pytest.approx(wins / 20)
    assert verify_distances(pos, neg, far=0.4).threshold == 0.7  # two false accepts allowed: both 0.5s


def test_a_far_too_small_for_any_false_accept_and_a_far_of_one():
    pos, neg = np.array([0.2, 0.3, 0.95]), np.array([0.9, 1.0, 1.1])
    tiny = verify_distances(pos, neg, far=1e-9)
    assert tiny.threshold == 0.9 and tiny.val == pytest.approx(2 / 3) and tiny.far_reached == 0
    assert "cannot resolve" in tiny.warning
    everything = verify_distances(pos, neg, far=1.0)
    assert math.isinf(everything.threshold) and everything.val == 1.0 and everything.far_reached == 1.0


def test_perfect_separation_and_single_image_classes():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # class 2 has one image: it forms no positive pair
    centres = torch.eye(3)
    emb = centres[labels] + 0.01 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    result = all_pairs(torch.nn.functional.normalize(emb, dim=1), labels, far=1e-3)
    assert result.n_positive == 3 + 1 and result.n_negative == 15 - 4
    assert result.val == 1.0 and result.auc == 1.0 and result.accuracy == 1.0 and result.eer == 0.0


def test_allowed_false_accepts_is_robust_to_rounding():
    assert allowed_false_accepts(1e-3, 3000) == 3
    assert allowed_false_accepts(0.1, 30) == 3  # 0.1 * 30 = 3.0000000000000004 in floating point
    assert allowed_false_accepts(0.7, 10) == 7  # 0.7 * 10 = 6.999999999999999
    assert threshold_at_far(np.array([3.0, 1.0, 2.0]), 0.0) == 1.0


def test_random_pairs_are_half_positive_reproducible_and_warn_when_too_few():
    emb, labels = _clustered(300)
    pairs, is_positive = draw_pairs(labels, 1024, seed=5)
    assert int(is_positive.sum()) == 512 and len(pairs) == 1024
    assert torch.equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], is_positive)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    again, _ = draw_pairs(labels, 1024, seed=5)
    other, _ = draw_pairs(labels, 1024, seed=6)
    assert torch.equal(pairs, again) and not torch.equal(pairs, other)
    result = random_pairs(emb, labels, n_pairs=1024, far=1e-3)
    assert result.n_negative == 512 and result.warning and "cannot resolve" in result.warning
    assert random_pairs(emb, labels, n_pairs=1024, far=1e-2).warning is None


def test_kfold_chooses_each_threshold_without_its_test_fold():
    emb, labels = _clustered(400, spread=0.6)
    summary = kfold(emb, labels, n_pairs=2000, folds=10, far=1e-2, seed=1)
    assert summary["folds"] == 10 and len(summary["per_fold"]) == 10
    pairs, is_positive = draw_pairs(labels, 2000, seed=1)
    d = (emb[pairs[:, 0]].double() - emb[pairs[:, 1]].double()).norm(dim=1).numpy()
    neg_index = np.nonzero(~is_positive.numpy())[0]
    fold_of_neg = np.arange(len(neg_index)) % 10
    for fold, record in enumerate(summary["per_fold"]):
        train_neg = d[neg_index[fold_of_neg != fold]]
        assert record["threshold"] == threshold_at_far(train_neg, 1e-2)
    assert summary["val"] == pytest.approx(np.mean([r["val"] for r in summary["per_fold"]]))
    assert summary["val_std"] > 0
