"""Verification protocols against brute-force enumeration and scikit-learn's ROC, plus hand-made cases.

Most tests use embeddings quantised to multiples of 1/64 in 8 dimensions: every squared distance is
then exact in float32 whatever the summation order, so the streamed all-pairs path, a numpy brute
force and scikit-learn all see bit-identical distances (with plenty of exact ties).
"""

import json
import math
import re

import numpy as np
import pytest
import torch

from tripletnet.errors import ParameterError, UserError
from tripletnet.evaluation import (
    all_pairs,
    allowed_false_accepts,
    draw_pairs,
    evaluate_embeddings,
    fast_epoch_metrics,
    format_table,
    kfold,
    kfold_distances,
    random_pairs,
    repeated_random_pairs,
    threshold_at_far,
    verify_distances,
)
from tripletnet.evaluation.verification import (
    CoarseHistograms,
    FineHistograms,
    PairTiles,
    accumulate,
    compute_all_pairs,
    plan_refinement,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _quantised(n, classes=5, dim=8, spread=1.5, seed=0, step=1 / 64):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = torch.randn(classes, dim, generator=gen) * spread
    emb = torch.nn.functional.normalize(centres[labels] + torch.randn(n, dim, generator=gen), dim=1)
    return torch.round(emb / step) * step, labels


def _brute_force(emb, labels):
    """Every pair i < j: exact squared distance in float64, then float32 sqrt like the streamed path."""
    x = emb.double().numpy()
    i, j = np.triu_indices(len(x), 1)
    d2 = ((x[i] - x[j]) ** 2).sum(axis=1).astype(np.float32)  # exact: small dyadic values
    lab = labels.numpy()
    return np.sqrt(d2).astype(np.float64), lab[i] == lab[j]


def _by_definition(d, same, far):
    """The threshold definition, literally: the largest candidate t with #(neg < t) / #neg <= far."""
    neg, pos = d[~same], d[same]
    candidates = np.append(np.unique(d), np.inf)
    ok = [t for t in candidates if np.count_nonzero(neg < t) / len(neg) <= far]
    t = max(ok)
    tp, fp = np.count_nonzero(pos < t), np.count_nonzero(neg < t)
    # A target below one false accept (and above 0) cannot be resolved: VAL is not reported.
    val = None if 0 < far < 1 / len(neg) else tp / len(pos)
    return t, val, fp / len(neg), (tp + len(neg) - fp) / len(d)


def _eer_from_sklearn(d, same):
    """EER on scikit-learn's full ROC (accept d <= v at each distinct v), by the documented rule."""
    fpr, tpr, _ = sklearn_metrics.roc_curve(same, -d, drop_intermediate=False)
    fpr, tpr = np.append(0.0, fpr), np.append(0.0, tpr)  # (0, 0) first, whatever sklearn starts with
    frr = 1 - tpr
    i = int(np.argmax(fpr >= frr))
    g0, g1 = fpr[i - 1] - frr[i - 1], fpr[i] - frr[i]
    return fpr[i - 1] + (-g0 / (g1 - g0)) * (fpr[i] - fpr[i - 1])


# --------------------------------------------------------------------------- all pairs vs brute force


@pytest.mark.parametrize("tiles", [(256, 4096), (7, 13), (1, 1000), (50, 1)])
@pytest.mark.parametrize("far", [0.3, 0.05, 1e-2, 1e-3, 1e-5])
def test_all_pairs_equals_brute_force_for_any_tiling(tiles, far):
    emb, labels = _quantised(150)
    result = all_pairs(emb, labels, far=far, tile_rows=tiles[0], tile_cols=tiles[1])
    d, same = _brute_force(emb, labels)
    t, val, far_reached, accuracy = _by_definition(d, same, far)
    assert result.threshold == t
    assert result.val == val and result.far_reached == far_reached and result.accuracy == accuracy
    assert result.n_positive == same.sum() and result.n_negative == (~same).sum() and result.n_pairs == len(d)
    assert result.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, -d), abs=1e-12)
    assert result.auc_error_bound == 0.0
    assert result.eer == pytest.approx(_eer_from_sklearn(d, same), abs=1e-12)
    assert result.positive_mean == pytest.approx(d[same].mean(), abs=1e-6)
    assert result.positive_std == pytest.approx(d[same].std(), abs=1e-6)
    assert result.negative_mean == pytest.approx(d[~same].mean(), abs=1e-6)
    assert result.negative_std == pytest.approx(d[~same].std(), abs=1e-6)
    for key, target in zip(result.val_at_far, (1e-2, 1e-3, 1e-4, 1e-5), strict=True):
        t, val, _, _ = _by_definition(d, same, target)
        assert (result.threshold_at_far[key], result.val_at_far[key]) == (t, val)


def test_row_tiles_of_one_and_tiny_tiles_are_exact():
    emb, labels = _quantised(40, classes=3, seed=4)
    d, same = _brute_force(emb, labels)
    reference = verify_distances(d[same], d[~same], far=0.02)
    for rows, cols in [(1, 1), (3, 2), (39, 40), (1000, 1000)]:
        result = all_pairs(emb, labels, far=0.02, tile_rows=rows, tile_cols=cols)
        for key in ("threshold", "val", "far_reached", "accuracy", "auc", "eer", "val_at_far", "threshold_at_far"):
            assert getattr(result, key) == getattr(reference, key), (rows, cols, key)


def test_heavy_ties_agree_with_the_explicit_path_and_sklearn():
    # Coordinates in {-1, 0, 1}: a handful of distinct distances, each shared by many pairs.
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (120,), generator=gen)
    emb = torch.randint(-1, 2, (120, 4), generator=gen).float() + labels[:, None].float() * torch.tensor([1.0, 0, 0, 0])
    d, same = _brute_force(emb, labels)
    assert len(np.unique(d)) < 40  # for 7140 pairs
    for far in (0.5, 0.1, 1e-2, 0.0):
        streamed = all_pairs(emb, labels, far=far)
        explicit = verify_distances(d[same], d[~same], far=far)
        for key in ("threshold", "val", "far_reached", "accuracy", "auc", "eer", "val_at_far", "threshold_at_far"):
            assert getattr(streamed, key) == pytest.approx(getattr(explicit, key), abs=1e-12), (far, key)
        assert explicit.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, -d), abs=1e-12)
        t, val, far_reached, _ = _by_definition(d, same, far)
        assert (streamed.threshold, streamed.val, streamed.far_reached) == (t, val, far_reached)
        assert streamed.far_reached <= far


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_val_and_far_are_sklearns_best_roc_point_below_the_target(seed):
    emb, labels = _quantised(220, spread=0.8, seed=seed)
    d, same = _brute_force(emb, labels)
    fpr, tpr, thresholds = sklearn_metrics.roc_curve(same, -d, drop_intermediate=False)
    for far in (0.2, 0.05, 1e-2, 1e-3, 1e-4):
        result = all_pairs(emb, labels, far=far)
        # sklearn accepts score >= cut, i.e. d <= v. Our "d < t" at t = the next distance above the last
        # point with fpr <= far is the same classifier; that point also has the largest tpr.
        best = np.flatnonzero(fpr <= far).max()
        assert result.val == tpr[best] and result.far_reached == fpr[best]
        assert result.threshold == (-thresholds[best + 1] if best + 1 < len(fpr) else math.inf)
    assert result.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, -d), abs=1e-12)


def test_histogram_auc_stays_within_its_bound():
    emb, labels = _clustered(300, spread=0.5)
    exact = all_pairs(emb, labels)
    for approx in (all_pairs(emb, labels, exact_auc=False), all_pairs(emb, labels, refine_bytes=0)):
        assert approx.auc_error_bound > 0
        assert abs(approx.auc - exact.auc) <= approx.auc_error_bound
        assert (approx.threshold, approx.val, approx.eer) == (exact.threshold, exact.val, exact.eer)
    assert exact.auc_error_bound == 0


def _clustered(n, classes=5, dim=16, spread=1.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = torch.randn(classes, dim, generator=gen) * spread
    return torch.nn.functional.normalize(centres[labels] + torch.randn(n, dim, generator=gen), dim=1), labels


def test_continuous_embeddings_match_a_float64_brute_force():
    emb, labels = _clustered(250, seed=5)
    x = emb.double()
    i, j = np.triu_indices(250, 1)
    d = (x[i] - x[j]).norm(dim=1).numpy()
    same = labels.numpy()[i] == labels.numpy()[j]
    result = all_pairs(emb, labels, far=1e-2)
    t, val, far_reached, _ = _by_definition(d, same, 1e-2)
    assert result.threshold == pytest.approx(t, abs=1e-6)
    assert (result.val, result.far_reached) == (val, far_reached)
    # A float32 distance can differ from the float64 one in its last bits, flipping a few near-tied pairs.
    assert result.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, -d), abs=1e-7)


def test_distance_statistics_survive_a_large_mean():
    # Negative distances 1000 +- ~1 (exact integer arithmetic): accumulating E[d^2] - E[d]^2 in float32
    # would cancel to noise; per-tile deviations merged in float64 must not.
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (300,), generator=gen)
    emb = torch.randint(-2, 3, (300, 4), generator=gen).float()
    emb[:, 0] += 1000 * labels
    d, same = _brute_force(emb, labels)
    for tiles in [(16, 32), (256, 4096)]:
        result = all_pairs(emb, labels, tile_rows=tiles[0], tile_cols=tiles[1])
        assert result.negative_mean == pytest.approx(d[~same].mean(), rel=1e-7)
        assert result.negative_std == pytest.approx(d[~same].std(), rel=1e-4)
        assert result.positive_std == pytest.approx(d[same].std(), rel=1e-5)


# --------------------------------------------------------------------------- hand-made cases


def test_ties_at_the_threshold_are_rejected():
    pos = np.array([0.1, 0.5, 0.5, 0.9])
    neg = np.array([0.5, 0.5, 0.7, 1.0, 1.2])
    nothing = verify_distances(pos, neg, far=0.0)
    # No false accept allowed: t = 0.5 and "d < t" rejects the positives tied at 0.5.
    assert (nothing.threshold, nothing.val, nothing.far_reached) == (0.5, 0.25, 0.0)
    # One allowed (k = 1): t = n_1 = 0.5 again, because accepting one 0.5 would accept both.
    assert (verify_distances(pos, neg, far=0.2).threshold, verify_distances(pos, neg, far=0.2).far_reached) == (0.5, 0.0)
    two = verify_distances(pos, neg, far=0.4)
    assert (two.threshold, two.val, two.far_reached) == (0.7, 0.75, 0.4)
    assert two.accuracy == (3 + 3) / 9
    wins = sum((n > p) + 0.5 * (n == p) for p in pos for n in neg)
    assert two.auc == wins / 20


def test_a_far_too_small_for_one_false_accept():
    pos, neg = np.array([0.2, 0.3, 0.9, 0.95]), np.array([0.9, 1.0, 1.1])
    tiny = verify_distances(pos, neg, far=1e-9)
    # t = the smallest negative; the positive tied with it is not accepted. Three negatives cannot
    # tell FAR 1e-9 from FAR 0, so VAL is not reported at 1e-9; at FAR 0 itself it is.
    assert (tiny.threshold, tiny.val, tiny.far_reached) == (0.9, None, 0.0)
    assert "cannot resolve" in tiny.warning and tiny.val_at_far == {"0.01": None, "0.001": None, "0.0001": None, "1e-05": None}
    zero = verify_distances(pos, neg, far=0.0)
    assert (zero.threshold, zero.val, zero.far_reached, zero.warning) == (0.9, 0.5, 0.0, None)
    everything = verify_distances(pos, neg, far=1.0)
    assert math.isinf(everything.threshold) and (everything.val, everything.far_reached) == (1.0, 1.0)
    assert everything.warning is None


def test_perfect_separation_and_a_single_image_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # class 2 has one image: it forms no positive pair
    emb = torch.eye(3)[labels] + 0.01 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    result = all_pairs(emb, labels, far=0.0)
    assert (result.n_positive, result.n_negative) == (3 + 1, 15 - 4)
    assert (result.val, result.auc, result.accuracy, result.eer, result.far_reached) == (1.0, 1.0, 1.0, 0.0, 0.0)
    i, j = torch.triu_indices(6, 6, 1)
    assert result.threshold == pytest.approx(float(torch.pdist(emb)[labels[i] != labels[j]].min()), abs=1e-6)
    unresolved = all_pairs(emb, labels, far=1e-3)
    assert "cannot resolve" in unresolved.warning  # 11 negatives cannot resolve 1e-3
    assert unresolved.val is None and (unresolved.threshold, unresolved.far_reached) == (result.threshold, 0.0)


def test_allowed_false_accepts_uses_the_division_sklearn_uses():
    assert allowed_false_accepts(1e-3, 3000) == 3
    assert allowed_false_accepts(0.1, 30) == 3  # 0.1 * 30 = 3.0000000000000004
    assert allowed_false_accepts(0.7, 10) == 7  # 0.7 * 10 = 6.999999999999999
    assert allowed_false_accepts(1e-3, 999) == 0
    assert allowed_false_accepts(0.0, 10) == 0 and allowed_false_accepts(1.0, 10) == 10
    rng = np.random.default_rng(0)
    for n in rng.integers(1, 10_000, 200):
        far = float(rng.random() ** 3)
        k = allowed_false_accepts(far, int(n))
        assert k / n <= far and (k == n or (k + 1) / n > far)
    assert threshold_at_far(np.array([3.0, 1.0, 2.0]), 0.0) == 1.0


def test_bad_inputs_are_user_errors():
    emb, labels = _quantised(20)
    with pytest.raises(UserError):
        all_pairs(emb, labels[:-1])
    with pytest.raises(UserError, match="NaN"):
        all_pairs(torch.full((4, 2), float("nan")), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(UserError, match="positive and negative"):
        all_pairs(emb, torch.zeros(20, dtype=torch.int64))  # one class: no negatives
    with pytest.raises(UserError, match="positive and negative"):
        all_pairs(emb, torch.arange(20))  # all singletons: no positives
    with pytest.raises(ParameterError, match=r"far must be in \[0, 1\], got 1.5") as raised:
        all_pairs(emb, labels, far=1.5)
    assert raised.value.parameter == "far" and not isinstance(raised.value, UserError)


def test_result_dict_is_json_ready_and_has_a_log_far_roc():
    emb, labels = _clustered(400, spread=0.7)
    result = all_pairs(emb, labels).to_dict()
    json.dumps(result, allow_nan=False)
    far, val = np.array(result["roc_far"]), np.array(result["roc_val"])
    assert 20 <= len(far) <= 401 and np.all(np.diff(far) >= 0) and np.all(np.diff(val) >= 0)
    assert far[-1] == 1.0 and val[-1] == 1.0 and far[0] <= 1e-4
    hist = result["histogram"]
    assert len(hist["bin_edges"]) == len(hist["positive"]) + 1
    assert sum(hist["positive"]) == result["n_positive"] and sum(hist["negative"]) == result["n_negative"]


def test_ten_thousand_separated_embeddings():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10_000) % 10
    emb = torch.nn.functional.normalize(4 * torch.eye(16)[labels] + 0.2 * torch.randn(10_000, 16, generator=gen), dim=1)
    result = all_pairs(emb, labels, far=1e-3)
    assert result.n_pairs == 10_000 * 9_999 // 2 and result.n_positive == 10 * 1000 * 999 // 2
    assert (result.val, result.auc, result.eer) == (1.0, 1.0, 0.0)
    # Every positive is accepted; the only errors are the false accepts FAR 1e-3 allows.
    assert result.far_reached == allowed_false_accepts(1e-3, result.n_negative) / result.n_negative
    assert result.accuracy == 1 - result.far_reached * result.n_negative / result.n_pairs


# --------------------------------------------------------------------------- random pairs and k-fold


def test_random_pairs_are_half_positive_reproducible_and_warn_when_too_few():
    emb, labels = _clustered(300)
    pairs, is_positive = draw_pairs(labels, 1025, seed=5)
    assert int(is_positive.sum()) == 512 and len(pairs) == 1025
    assert torch.equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], is_positive)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    again, _ = draw_pairs(labels, 1025, seed=5)
    other, _ = draw_pairs(labels, 1025, seed=6)
    assert torch.equal(pairs, again) and not torch.equal(pairs, other)
    result = random_pairs(emb, labels, n_pairs=1024, far=1e-3)
    assert (result.n_positive, result.n_negative, result.n_pairs, result.protocol) == (512, 512, 1024, "pairs")
    assert "cannot resolve" in result.warning and result.far_reached == 0.0
    assert random_pairs(emb, labels, n_pairs=1024, far=1e-2).warning is None
    assert random_pairs(emb, labels, seed=3).to_dict() == random_pairs(emb, labels, seed=3).to_dict()
    assert random_pairs(emb, labels, n_pairs=None).n_pairs == 1024  # None: the protocol's default


def test_random_positive_pairs_skip_single_image_classes():
    labels = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4])
    pairs, is_positive = draw_pairs(labels, 400, seed=0)
    anchors = labels[pairs[is_positive][:, 0]]
    assert set(anchors.tolist()) == {0, 3}
    with pytest.raises(UserError):
        draw_pairs(torch.arange(5), 10)


def test_random_pairs_match_the_explicit_path_on_their_distances():
    emb, labels = _clustered(300)
    pairs, is_positive = draw_pairs(labels, 2000, seed=1)
    d = (emb[pairs[:, 0]].double() - emb[pairs[:, 1]].double()).norm(dim=1).numpy()
    result = random_pairs(emb, labels, n_pairs=2000, far=1e-2, seed=1)
    t, val, far_reached, accuracy = _by_definition(d, is_positive.numpy(), 1e-2)
    assert (result.threshold, result.val, result.far_reached, result.accuracy) == (t, val, far_reached, accuracy)
    assert result.auc == pytest.approx(sklearn_metrics.roc_auc_score(is_positive.numpy(), -d), abs=1e-12)


def test_repeated_random_pairs_average_the_single_draws():
    emb, labels = _clustered(300)
    summary = repeated_random_pairs(emb, labels, n_pairs=512, far=1e-2, repeats=5, seed=7)
    vals = [random_pairs(emb, labels, n_pairs=512, far=1e-2, seed=7 + r).val for r in range(5)]
    assert summary.mean["val"] == pytest.approx(np.mean(vals)) and summary.std["val"] == pytest.approx(np.std(vals))
    assert summary.std["val"] > 0 and set(summary.mean) >= {"threshold", "accuracy", "auc", "far_reached"}


def test_kfold_chooses_each_threshold_without_its_test_fold():
    # 10 positives at 0.5, 20 negatives at 1.0..2.9; the first negative (fold 0) is 0.01 instead.
    neg = np.arange(20) / 10 + 1.0
    neg[0] = 0.01
    d = np.concatenate([np.full(10, 0.5), neg])
    positive = np.arange(30) < 10
    result = kfold_distances(d, positive, folds=10, far=0.0)
    thresholds = [f["threshold"] for f in result.per_fold]
    # Fold 0 holds the 0.01 negative, so only its threshold ignores it and accepts its positive.
    assert thresholds[0] == 1.1 and thresholds[1:] == [0.01] * 9
    assert [f["val"] for f in result.per_fold] == [1.0] + [0.0] * 9
    assert result.val == pytest.approx(0.1) and result.val_std == pytest.approx(0.3)
    assert result.folds == 10 and result.n_pairs == 30


def test_kfold_on_embeddings_uses_other_folds_only():
    emb, labels = _clustered(400, spread=0.6)
    result = kfold(emb, labels, n_pairs=2000, folds=10, far=1e-2, seed=1)
    assert len(result.per_fold) == 10 and result.pooled.n_pairs == 2000
    pairs, is_positive = draw_pairs(labels, 2000, seed=1)
    d = (emb[pairs[:, 0]].double() - emb[pairs[:, 1]].double()).norm(dim=1).numpy()
    neg = np.flatnonzero(~is_positive.numpy())
    for fold, record in enumerate(result.per_fold):
        assert record["threshold"] == threshold_at_far(d[neg[np.arange(len(neg)) % 10 != fold]], 1e-2)
    assert result.accuracy == pytest.approx(np.mean([r["accuracy"] for r in result.per_fold]))
    flat = result.to_dict()
    assert flat["protocol"] == "kfold" and flat["val"] == result.val and flat["auc"] == result.pooled.auc
    assert kfold(emb, labels).n_pairs == 6000


# --------------------------------------------------------------------------- the combined entry point


def test_evaluate_embeddings_has_every_documented_key_for_every_protocol():
    emb, labels = _clustered(300, spread=2.0)
    keys = ("protocol", "n_pairs", "far", "threshold", "val", "accuracy", "auc", "eer", "positive_mean", "positive_std",
            "negative_mean", "negative_std", "precision_at_1", "r_precision", "map_at_r", "nmi", "ami", "far_reached",
            "val_at_far", "recall_at_k", "roc_far", "roc_val")
    expected_pairs = {"all-pairs": 300 * 299 // 2, "pairs": 1024, "kfold": 6000}
    for protocol, n_pairs in expected_pairs.items():
        evaluated = evaluate_embeddings(emb, labels, protocol=protocol, far=1e-2)
        result = evaluated.to_dict(include_curves=True)
        for key in keys:
            assert result.get(key) is not None, (protocol, key)
        assert "warning" in result and result["protocol"] == protocol and result["n_pairs"] == n_pairs
        table = format_table(evaluated)
        for text in ("Target FAR", "Threshold", "Accuracy", "VAL", "Positive distances", "MAP@R", "NMI"):
            assert text in table
    drawn = evaluate_embeddings(emb, labels, protocol="pairs", n_pairs=100, retrieval=False, clustering=False)
    assert drawn.verification.n_pairs == 100
    with pytest.raises(ParameterError, match="protocol 'lfw' is unknown"):
        evaluate_embeddings(emb, labels, protocol="lfw")


def test_format_table_aligns_values_and_shows_warnings():
    emb, labels = _clustered(200)
    table = format_table(evaluate_embeddings(emb, labels, protocol="pairs", far=1e-3, clustering=False))
    rows = [re.match(r"^  (\S.*?)  +(\S.*)$", line) for line in table.splitlines() if line.startswith("  ")]
    assert len(rows) >= 15 and all(rows)
    assert len({row.start(2) for row in rows}) == 1  # every value starts in the same column
    assert dict(row.groups() for row in rows)["Target FAR"] == "0.001"
    assert table.splitlines()[-1].startswith("warning:") and "NMI" not in table


def test_fast_epoch_metrics_match_the_full_evaluation():
    emb, labels = _clustered(500, spread=1.0)
    fast = fast_epoch_metrics(emb, labels, far=1e-3).to_dict()
    full = evaluate_embeddings(emb, labels, far=1e-3, clustering=False).to_dict()
    for key in ("threshold", "val", "accuracy", "far_reached", "eer", "precision_at_1", "map_at_r"):
        assert fast[key] == full[key]
    assert fast["auc"] == pytest.approx(full["auc"], abs=1e-4)


# --------------------------------------------------------------------------- the streaming engine's update / + / compute


@pytest.mark.parametrize("split", ["halves", "interleaved"])
def test_accumulators_over_two_shares_of_the_rows_add_up_to_one_pass(split):
    emb, labels = _quantised(300, seed=2)
    tiles = PairTiles(emb.float(), labels, tile_rows=16, tile_cols=64)
    blocks = tiles.row_blocks()
    # Two "processes": the first and second half of the row blocks, or every other block.
    shares = (blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :]) if split == "halves" else (blocks[::2], blocks[1::2])
    whole = accumulate(tiles, CoarseHistograms(tiles.key_count))
    first_half = accumulate(tiles, CoarseHistograms(tiles.key_count), shares[0])
    merged = first_half + accumulate(tiles, CoarseHistograms(tiles.key_count), shares[1])
    assert torch.equal(merged.positive_counts, whole.positive_counts)
    assert torch.equal(merged.negative_counts, whole.negative_counts)
    for ours, one_pass in ((merged.positive_moments, whole.positive_moments), (merged.negative_moments, whole.negative_moments)):
        assert ours.count == one_pass.count
        assert ours.mean == pytest.approx(one_pass.mean, rel=1e-12) and ours.std == pytest.approx(one_pass.std, rel=1e-9)

    fars = (0.05, 1e-2, 1e-3, 1e-4, 1e-5)
    plan = plan_refinement(merged, fars)
    fine_whole = accumulate(tiles, plan.fine_histograms(tiles.key_count))
    fine_merged = accumulate(tiles, plan.fine_histograms(tiles.key_count), shares[0]) + accumulate(
        tiles, plan.fine_histograms(tiles.key_count), shares[1]
    )
    assert np.array_equal(fine_merged.positive_counts, fine_whole.positive_counts)
    assert np.array_equal(fine_merged.negative_counts, fine_whole.negative_counts)

    result = compute_all_pairs(merged, fine_merged, far=0.05, fars=fars[1:])
    reference = all_pairs(emb, labels, far=0.05, fars=fars[1:], tile_rows=16, tile_cols=64)
    for key in ("n_pairs", "threshold", "val", "far_reached", "accuracy", "auc", "eer",
                "val_at_far", "threshold_at_far", "histogram"):
        assert getattr(result, key) == getattr(reference, key), key
    d, same = _brute_force(emb, labels)
    assert (result.threshold, result.val, result.far_reached, result.accuracy) == _by_definition(d, same, 0.05)
    assert result.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, -d), abs=1e-12)


def test_accumulators_of_different_shapes_refuse_to_add():
    with pytest.raises(ValueError, match="same PairTiles"):
        CoarseHistograms(10) + CoarseHistograms(11)
    with pytest.raises(ValueError, match="same plan"):
        FineHistograms(np.array([1, 2]), 10) + FineHistograms(np.array([1, 3]), 10)


def test_compute_refuses_fine_histograms_that_miss_a_needed_key():
    emb, labels = _quantised(120, seed=3)
    tiles = PairTiles(emb.float(), labels)
    coarse = accumulate(tiles, CoarseHistograms(tiles.key_count))
    plan = plan_refinement(coarse, (0.3,), exact_auc=False)  # planned for FAR 0.3 only
    fine = accumulate(tiles, plan.fine_histograms(tiles.key_count))
    with pytest.raises(ValueError, match="was not refined"):
        compute_all_pairs(coarse, fine, far=1e-3, fars=())


# --------------------------------------------------------------------------- a FAR the pairs cannot resolve


def test_kfold_with_too_few_training_negatives_reports_val_as_not_reached():
    emb, labels = _clustered(300)
    # 200 pairs: 100 negatives, 90 per fold's training share, cannot resolve 1e-3 (one false accept = 1.1e-2).
    result = kfold(emb, labels, n_pairs=200, far=1e-3)
    assert result.val is None and result.val_std is None
    assert all(fold["val"] is None for fold in result.per_fold)
    assert "90 training negatives per fold cannot resolve FAR 0.001" in result.warning
    assert result.pooled.val is None and result.pooled.val_at_far["0.001"] is None
    # The threshold actually chosen (the smallest training negative) is still reported and measured.
    assert math.isfinite(result.threshold) and all(fold["far_reached"] is not None for fold in result.per_fold)
    resolved = kfold(emb, labels, n_pairs=200, far=0.05)
    assert resolved.val is not None and resolved.warning is None


def test_random_pairs_leave_unresolvable_fars_out_of_val_at_far():
    emb, labels = _clustered(300)
    result = random_pairs(emb, labels, n_pairs=1024, far=1e-2)  # 512 negatives resolve 1e-2, not 1e-3
    assert result.val is not None and result.val_at_far["0.01"] == result.val
    assert result.val_at_far["0.001"] is None and result.val_at_far["0.0001"] is None
    assert all(math.isfinite(t) for t in result.threshold_at_far.values())


@pytest.mark.parametrize("labels", [np.array(["a", "b"] * 25), ["a", "b"] * 25])
def test_label_names_are_refused_with_the_mapping_to_ids_named(labels):
    from tripletnet.errors import UserError
    from tripletnet.evaluation import evaluate_embeddings

    embeddings = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    with pytest.raises(UserError, match=r"labels must be integers, got strings.*np\.unique\(labels, return_inverse=True\)\[1\]"):
        evaluate_embeddings(embeddings, labels)
