"""The k-fold pairs protocol against a brute-force reference, scikit-learn's ROC, and its own test folds."""

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from tripletnet.errors import ParameterError
from tripletnet.evaluation.pairs_folds import evaluate_pair_folds, pair_distances


def _data(seed: int, n: int = 120, n_folds: int = 5, levels: int | None = None):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    distances = np.where(same, rng.normal(0.8, 0.3, n), rng.normal(1.3, 0.3, n))
    if levels:  # coarse values: many ties, the hard case for threshold choices
        distances = np.round(distances * levels) / levels
    folds = rng.integers(0, n_folds, n)
    return distances, same, folds


def _brute_threshold(d, s):
    """Try every candidate of the documented rule one by one, counting pairs in Python."""
    values = sorted(set(d.tolist()))
    candidates = [values[0]] + [(a + b) / 2 for a, b in itertools.pairwise(values)] + [float(np.nextafter(values[-1], np.inf))]
    best, best_t = -1, None
    for t in candidates:  # in increasing order: a later candidate must be strictly better to win
        correct = sum((di < t) == si for di, si in zip(d.tolist(), s.tolist(), strict=True))
        if correct > best:
            best, best_t = correct, t
    return best_t


def _brute_far_threshold(neg, far):
    """The largest threshold t among the negatives (and +inf) with #(neg < t) / #neg <= far."""
    best = None
    for t in sorted(set(neg.tolist())) + [math.inf]:
        if sum(v < t for v in neg.tolist()) / len(neg) <= far:
            best = t
    return best


def _brute_eer(d, s):
    fpr, tpr, _ = roc_curve(s, -d, drop_intermediate=False)  # accept -d >= -v, i.e. d <= v
    frr = 1 - tpr
    i = next(k for k in range(len(fpr)) if fpr[k] >= frr[k])
    gap0, gap1 = fpr[i - 1] - frr[i - 1], fpr[i] - frr[i]
    w = 1.0 if gap1 == gap0 else -gap0 / (gap1 - gap0)
    return fpr[i - 1] + w * (fpr[i] - fpr[i - 1])


@pytest.mark.parametrize("seed,levels,far", [(0, None, 1e-3), (1, 10, 0.05), (2, 4, 0.2), (3, None, 0.1)])
def test_every_fold_matches_a_brute_force_reference(seed, levels, far):
    d, s, f = _data(seed, levels=levels)
    result = evaluate_pair_folds(d, s, f, far=far)
    assert result.n_folds == 5 and result.n_pairs == 120
    for k, fold in enumerate(np.unique(f)):
        train, test = f != fold, f == fold
        t = _brute_threshold(d[train], s[train])
        assert result.fold_threshold[k] == t
        assert result.fold_accuracy[k] == np.mean((d[test] < t) == s[test])
        t_far = _brute_far_threshold(d[train][~s[train]], far)
        assert result.fold_far_threshold[k] == t_far
        assert result.fold_val[k] == np.mean(d[test][s[test]] < t_far)
        assert result.fold_far[k] == np.mean(d[test][~s[test]] < t_far)
    assert result.accuracy_mean == pytest.approx(np.mean(result.fold_accuracy))
    assert result.accuracy_std == pytest.approx(np.std(result.fold_accuracy))
    assert result.val_mean == pytest.approx(np.mean(result.fold_val))
    assert result.auc == pytest.approx(roc_auc_score(s, -d), abs=1e-12)
    assert result.eer == pytest.approx(_brute_eer(d, s), abs=1e-12)


def test_the_test_fold_never_influences_its_own_thresholds():
    d, s, f = _data(7)
    before = evaluate_pair_folds(d, s, f, far=0.1)
    rng = np.random.default_rng(0)
    for fold in range(5):
        mangled_d, mangled_s = d.copy(), s.copy()
        test = f == fold
        mangled_d[test] = rng.uniform(0, 3, test.sum())  # anything at all in the held-out fold
        mangled_s[test] = ~s[test]
        after = evaluate_pair_folds(mangled_d, mangled_s, f, far=0.1)
        assert after.fold_threshold[fold] == before.fold_threshold[fold]
        assert after.fold_far_threshold[fold] == before.fold_far_threshold[fold]
        others = [k for k in range(5) if k != fold]
        assert any(after.fold_threshold[k] != before.fold_threshold[k] for k in others), "the other folds did see the change"


def test_a_fold_without_matched_pairs_has_no_val_but_still_an_accuracy():
    d = np.array([0.1, 0.2, 0.9, 1.0, 0.15, 0.95, 1.1, 1.2])
    s = np.array([True, True, False, False, True, False, False, False])
    f = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    result = evaluate_pair_folds(d, s, f, far=0.5)
    assert math.isnan(result.fold_val[2]) and not math.isnan(result.val_mean)
    assert result.fold_accuracy[2] == 1.0
    assert result.warning is None


def test_a_far_too_small_for_the_negatives_is_warned_about():
    d, s, f = _data(5, n=40)
    assert "cannot resolve FAR 0.001" in evaluate_pair_folds(d, s, f, far=1e-3).warning


@pytest.mark.parametrize("args,parameter", [
    (([0.1, np.nan], [True, False], [0, 1]), "distances"),
    (([0.1, 0.2], [1, 0], [0, 1]), "same"),
    (([0.1, 0.2], [True, False], [0, 0]), "folds"),
    (([0.1, 0.2], [True, False], [0.0, 1.0]), "folds"),
    (([0.1, 0.2], [True, True], [0, 1]), "same"),
    (([], [], []), "distances"),
])
def test_bad_arrays_name_their_parameter(args, parameter):
    with pytest.raises(ParameterError, match=parameter):
        evaluate_pair_folds(*args)


@pytest.mark.parametrize("far", [0.0, -0.1, 1.5])
def test_a_far_outside_its_range_is_refused(far):
    with pytest.raises(ParameterError, match="far"):
        evaluate_pair_folds([0.1, 0.2], [True, False], [0, 1], far=far)


def test_pair_distances_are_euclidean_in_any_chunking():
    import torch

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(9, 4)).astype(np.float32)
    a, b = rng.integers(0, 9, 50), rng.integers(0, 9, 50)
    expected = np.array([math.dist(emb[i].astype(np.float64), emb[j].astype(np.float64)) for i, j in zip(a, b, strict=True)])
    np.testing.assert_allclose(pair_distances(emb, a, b), expected, rtol=1e-12)
    np.testing.assert_allclose(pair_distances(torch.from_numpy(emb), a, b, chunk=7), expected, rtol=1e-12)
    with pytest.raises(ParameterError, match="embeddings"):
        pair_distances(emb[0], a, b)
