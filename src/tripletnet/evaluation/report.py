"""One call for every metric of a set of embeddings, the table that prints them, and the per-epoch subset."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import UserError
from .clustering import clustering_metrics
from .retrieval import retrieval_metrics
from .verification import all_pairs, kfold, random_pairs

PROTOCOLS = ("all-pairs", "pairs", "kfold")


def evaluate_embeddings(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    protocol: str = "all-pairs",
    far: float = 1e-3,
    n_pairs: int | None = None,
    seed: int = 0,
    retrieval: bool = True,
    clustering: bool = True,
) -> dict[str, Any]:
    """Verification under ``protocol``, then retrieval and clustering metrics, as one flat dict.

    protocol: "all-pairs" (every pair of the set, exact), "pairs" (``n_pairs`` random pairs, half
    positive, default 1024) or "kfold" (``n_pairs`` random pairs in 10 folds, default 6000).
    ``n_pairs`` is ignored by all-pairs; in the result, ``n_pairs`` is the number of pairs evaluated.
    Keys: protocol, n_pairs, n_positive, n_negative, far, threshold, val, accuracy, far_reached, auc,
    auc_error_bound, eer, positive_mean/std, negative_mean/std, val_at_far, threshold_at_far,
    warning, the bulky roc_far, roc_val and histogram (for plots), k-fold's *_std, folds and
    per_fold, and unless disabled precision_at_1, r_precision, map_at_r, recall_at_k, n_queries,
    nmi, ami, n_clusters.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if not 0 < far <= 1:
        raise UserError(f"--far must be in (0, 1], got {far}")
    if n_pairs is not None and n_pairs < 2:
        raise UserError(f"--n_pairs must be at least 2, got {n_pairs}")
    result: dict[str, Any]
    if protocol == "all-pairs":
        result = all_pairs(embeddings, labels, far=far).to_dict()
    elif protocol == "pairs":
        result = random_pairs(embeddings, labels, n_pairs=n_pairs, far=far, seed=seed).to_dict()
    else:
        result = kfold(embeddings, labels, n_pairs=n_pairs, far=far, seed=seed).to_dict()
    if retrieval:
        result.update(retrieval_metrics(embeddings, labels))
    if clustering:
        result.update(clustering_metrics(embeddings, labels, seed=seed))
    return result


def fast_epoch_metrics(embeddings: torch.Tensor, labels: torch.Tensor, far: float = 1e-3) -> dict[str, Any]:
    """Per-epoch evaluation during training: exact all-pairs verification (AUC from the fine
    histogram, within ``auc_error_bound``), precision@1 and MAP@R; no clustering."""
    verification = all_pairs(embeddings, labels, far=far, exact_auc=False)
    retrieval = retrieval_metrics(embeddings, labels)
    return {
        "threshold": verification.threshold,
        "val": verification.val,
        "accuracy": verification.accuracy,
        "far_reached": verification.far_reached,
        "auc": verification.auc,
        "eer": verification.eer,
        "positive_mean": verification.positive_mean,
        "negative_mean": verification.negative_mean,
        "precision_at_1": retrieval["precision_at_1"],
        "map_at_r": retrieval["map_at_r"],
    }


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _with_std(result: dict[str, Any], key: str, digits: int = 4) -> str:
    text = _number(result.get(key), digits)
    return text + (f" ± {result[key + '_std']:.{digits}f}" if f"{key}_std" in result else "")


def format_table(result: dict[str, Any]) -> str:
    """The result as aligned text: the reference's verification table, then retrieval and clustering."""
    rows: list[tuple[str, str]] = []
    pairs = result.get("n_pairs")
    title = f"Verification ({result['protocol']}"
    if isinstance(pairs, int):
        title += f", {pairs:,} pairs"
        if "n_positive" in result:
            title += f": {result['n_positive']:,} positive, {result['n_negative']:,} negative"
    if "folds" in result:
        title += f", {result['folds']} folds: mean ± std over held-out folds"
    sections = [(title + ")", rows)]
    rows += [
        ("Target FAR", f"{result['far']:g}"),
        ("Threshold", _with_std(result, "threshold")),
        ("FAR reached", _with_std(result, "far_reached", 6)),
        ("Accuracy", _with_std(result, "accuracy")),
        ("VAL", _with_std(result, "val")),
        ("Positive distances", f"{result['positive_mean']:.4f} ± {result['positive_std']:.4f}"),
        ("Negative distances", f"{result['negative_mean']:.4f} ± {result['negative_std']:.4f}"),
        ("ROC AUC", _number(result.get("auc"), 6)),
        ("EER", _number(result.get("eer"))),
    ]
    thresholds = result.get("threshold_at_far") or {}
    for key, val in (result.get("val_at_far") or {}).items():
        rows.append((f"VAL @ FAR {key}", f"{_number(val)}  (threshold {_number(thresholds.get(key))})"))
    if "precision_at_1" in result:
        retrieval_rows = [
            ("precision@1", _number(result["precision_at_1"])),
            ("R-precision", _number(result["r_precision"])),
            ("MAP@R", _number(result["map_at_r"])),
        ]
        retrieval_rows += [(f"recall@{k}", _number(v)) for k, v in (result.get("recall_at_k") or {}).items()]
        sections.append((f"Retrieval ({result.get('n_queries', '?'):,} queries)", retrieval_rows))
    if "nmi" in result:
        k = result.get("n_clusters")
        sections.append((f"Clustering (k-means, k = {k})", [("NMI", _number(result["nmi"])), ("AMI", _number(result["ami"]))]))
    width = max(len(name) for _, section in sections for name, _ in section)
    lines = []
    for title, section in sections:
        lines.append(title)
        lines += [f"  {name:<{width}}  {value}" for name, value in section]
    if result.get("warning"):
        lines.append(f"warning: {result['warning']}")
    return "\n".join(lines)
