"""One call for every metric of a set of embeddings, and the table that prints them."""

from __future__ import annotations

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
    n_pairs: int = 1024,
    seed: int = 0,
    retrieval: bool = True,
    clustering: bool = True,
) -> dict[str, Any]:
    """Verification under ``protocol`` plus retrieval and clustering metrics, as one flat dict."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    if not 0 < far <= 1:
        raise UserError(f"--far must be in (0, 1], got {far}")
    labels = labels.to(torch.int64)
    result: dict[str, Any]
    if protocol == "all-pairs":
        result = all_pairs(embeddings, labels, far=far).to_dict()
    elif protocol == "pairs":
        result = random_pairs(embeddings, labels, n_pairs=n_pairs, far=far, seed=seed).to_dict()
    else:
        folds = kfold(embeddings, labels, n_pairs=max(n_pairs, 6000) if n_pairs == 1024 else n_pairs, far=far, seed=seed)
        # Distances, AUC and EER over all the k-fold pairs; accuracy and VAL are the held-out means.
        pooled = random_pairs(embeddings, labels, n_pairs=folds["n_pairs"], far=far, seed=seed).to_dict()
        result = {**pooled, **folds}
    if retrieval:
        result.update(retrieval_metrics(embeddings, labels))
    if clustering:
        result.update(clustering_metrics(embeddings, labels, seed=seed))
    result.setdefault("warning", None)
    return result


def fast_epoch_metrics(embeddings: torch.Tensor, labels: torch.Tensor, far: float = 1e-3) -> dict[str, Any]:
    """The per-epoch evaluation during training: all-pairs verification and retrieval, no clustering."""
    verification = all_pairs(embeddings, labels.to(torch.int64), far=far)
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


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """A readable block of text: the reference's verification table, then retrieval and clustering."""
    lines = [f"protocol: {result['protocol']}  ({result.get('n_pairs', '?'):,} pairs)" if isinstance(result.get("n_pairs"), int) else f"protocol: {result['protocol']}"]
    rows = [
        ("Target FAR", f"{result['far']:g}"),
        ("Threshold", _fmt(result.get("threshold"))),
        ("FAR reached", _fmt(result.get("far_reached"), 6)),
        ("Accuracy", _fmt(result.get("accuracy")) + (f" ± {result['accuracy_std']:.4f}" if "accuracy_std" in result else "")),
        ("VAL", _fmt(result.get("val")) + (f" ± {result['val_std']:.4f}" if "val_std" in result else "")),
        ("Positive distances", f"{result['positive_mean']:.4f} ± {result['positive_std']:.4f}"),
        ("Negative distances", f"{result['negative_mean']:.4f} ± {result['negative_std']:.4f}"),
        ("ROC AUC", _fmt(result.get("auc"), 6)),
        ("EER", _fmt(result.get("eer"))),
    ]
    for far_key, val in (result.get("val_at_far") or {}).items():
        rows.append((f"VAL @ FAR {far_key}", _fmt(val)))
    if "precision_at_1" in result:
        rows += [
            ("precision@1", _fmt(result["precision_at_1"])),
            ("R-precision", _fmt(result["r_precision"])),
            ("MAP@R", _fmt(result["map_at_r"])),
        ]
        rows += [(f"recall@{k}", _fmt(v)) for k, v in result.get("recall_at_k", {}).items()]
    if "nmi" in result:
        rows += [("NMI (k-means)", _fmt(result["nmi"])), ("AMI (k-means)", _fmt(result["ami"]))]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    if result.get("warning"):
        lines.append(f"warning: {result['warning']}")
    return "\n".join(lines)
