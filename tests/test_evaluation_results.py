"""Typed results: to_dict() is valid JSON by construction (non-finite floats become null, strings stay)."""

import json
import math

import pytest
import torch

from tripletnet.evaluation import (
    EvaluationResult,
    evaluate_embeddings,
    fast_epoch_metrics,
    json_safe,
)

EPOCH_KEYS = {"threshold", "val", "accuracy", "far_reached", "auc", "eer", "positive_mean", "negative_mean",
              "precision_at_1", "map_at_r"}


def _clustered(n=240, classes=4, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=gen) * 1.5
    return torch.nn.functional.normalize(centres[labels] + torch.randn(n, dim, generator=gen), dim=1), labels


def test_json_safe_maps_non_finite_floats_to_none_and_leaves_strings_alone():
    value = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": ("NaN", "Infinity"), "d": {"e": 2}, "f": True}
    assert json_safe(value) == {"a": None, "b": [None, None, 1.5], "c": ["NaN", "Infinity"], "d": {"e": 2}, "f": True}


@pytest.mark.parametrize("protocol", ["all-pairs", "pairs", "kfold"])
def test_every_result_dict_is_strict_json_and_keeps_strings(protocol):
    emb, labels = _clustered()
    # FAR 1 puts the threshold at +inf; "pairs" with 1,024 pairs cannot resolve 1e-4 either.
    result = evaluate_embeddings(emb, labels, protocol=protocol, far=1.0, repeats=3 if protocol == "pairs" else 1)
    result.source = "runs/NaN-Infinity.npz"
    for flat in (result.to_dict(), result.to_dict(include_curves=True), result.curves()):
        text = json.dumps(flat, allow_nan=False)  # raises on any NaN or Infinity
        assert "NaN-Infinity.npz" in text or "source" not in flat
    flat = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert flat["source"] == "runs/NaN-Infinity.npz"
    assert math.isinf(result.verification.threshold) and flat["threshold"] is None
    assert flat["protocol"] == protocol and flat["val"] == 1.0
    assert "roc_far" not in flat and "histogram" not in flat and "per_fold" not in flat
    assert result.curves()["roc_far"] == result.verification.roc_far


def test_unresolved_val_is_null_in_json_and_named_in_the_warning():
    emb, labels = _clustered()
    flat = evaluate_embeddings(emb, labels, protocol="pairs", far=1e-3, repeats=2, clustering=False).to_dict()
    text = json.dumps(flat, allow_nan=False)
    loaded = json.loads(text)
    assert loaded["val"] is None and loaded["repeated"]["val"] == {"mean": None, "std": None}
    assert loaded["repeated"]["repeats"] == 2 and loaded["repeated"]["auc"]["mean"] > 0.5
    assert "cannot resolve FAR 0.001" in loaded["warning"]


def test_metrics_json_keys_are_todays():
    emb, labels = _clustered()
    flat = evaluate_embeddings(emb, labels, protocol="kfold", far=1e-2).to_dict()
    assert set(flat) == {
        "protocol", "n_pairs", "n_positive", "n_negative", "far", "threshold", "val", "accuracy", "far_reached", "auc",
        "auc_error_bound", "eer", "positive_mean", "positive_std", "negative_mean", "negative_std", "val_at_far",
        "threshold_at_far", "warning", "folds", "threshold_std", "val_std", "accuracy_std", "far_reached_std",
        "precision_at_1", "r_precision", "map_at_r", "recall_at_k", "n_queries", "nmi", "ami", "n_clusters",
    }


def test_fast_epoch_metrics_dict_has_the_training_records_keys():
    emb, labels = _clustered()
    metrics = fast_epoch_metrics(emb, labels, far=1e-2)
    record = {"epoch": 1}
    record.update(metrics.to_dict())
    assert set(record) == EPOCH_KEYS | {"epoch"}
    json.dumps(record, allow_nan=False)
    assert record["val"] == metrics.val and 0 < record["precision_at_1"] <= 1


def test_evaluation_result_is_typed_all_the_way_down():
    emb, labels = _clustered()
    result = evaluate_embeddings(emb, labels, protocol="kfold", far=1e-2)
    assert isinstance(result, EvaluationResult)
    assert result.kfold is not None and result.verification is result.kfold.pooled
    flat = result.to_dict()
    assert (flat["val"], flat["val_std"], flat["auc"]) == (result.kfold.val, result.kfold.val_std, result.kfold.pooled.auc)
    assert result.retrieval is not None and result.to_dict()["map_at_r"] == result.retrieval.map_at_r
    assert result.clustering is not None and result.to_dict()["n_clusters"] == 4
