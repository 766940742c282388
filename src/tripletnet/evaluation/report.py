"""One call for every metric of a set of embeddings, the table that prints them, and the per-epoch subset."""

from __future__ import annotations

import math
from typing import Any

import torch

from .clustering import clustering_metrics
from .results import EpochMetrics, EvaluationResult, KFoldResult
from .retrieval import retrieval_metrics
from .verification import (
    PROTOCOLS,
    all_pairs,
    check_far,
    get_protocol,
    repeated_random_pairs,
)

__all__ = ["PROTOCOLS", "evaluate_embeddings", "fast_epoch_metrics", "format_table"]


def evaluate_embeddings(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    protocol: str = "all-pairs",
    far: float = 1e-3,
    n_pairs: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    retrieval: bool = True,
    clustering: bool = True,
) -> EvaluationResult:
    """Verification under ``protocol``, then retrieval and clustering metrics.

    Args:
        embeddings: (N, D) embeddings.
        labels: (N,) integer labels.
        protocol: a name in ``PROTOCOLS``: "all-pairs" (every pair, exact), "pairs" (``n_pairs``
            random pairs, half positive, default 1024) or "kfold" (``n_pairs`` random pairs in 10
            folds, default 6000).
        far: the target false-accept rate, in (0, 1].
        n_pairs: pairs to draw, for protocols that draw pairs (None: the protocol's default);
            refused by protocols that do not.
        repeats: with a repeatable protocol (pairs), also the mean and std over this many draws.
        seed: the seed of the drawn pairs and of k-means.
        retrieval: compute precision@1, R-precision, MAP@R and recall@k.
        clustering: compute k-means NMI and AMI.

    Returns:
        An EvaluationResult; ``to_dict()`` gives the flat keys of metrics.json.

    Raises:
        ParameterError: for a bad ``far``, ``protocol``, ``n_pairs`` or ``repeats``, before any work.
    """
    check_far(far, zero_allowed=False)
    chosen = get_protocol(protocol)
    pairs = chosen.check_options(n_pairs=n_pairs, repeats=repeats)
    outcome = chosen.run(embeddings, labels, far=far, n_pairs=pairs, seed=seed)
    result = EvaluationResult(outcome.pooled, kfold=outcome) if isinstance(outcome, KFoldResult) else EvaluationResult(outcome)
    if repeats > 1:
        result.repeated = repeated_random_pairs(embeddings, labels, pairs, far, repeats, seed)
    if retrieval:
        result.retrieval = retrieval_metrics(embeddings, labels)
    if clustering:
        result.clustering = clustering_metrics(embeddings, labels, seed=seed)
    return result


def fast_epoch_metrics(embeddings: torch.Tensor, labels: torch.Tensor, far: float = 1e-3,
                       device: torch.device | str | None = None) -> EpochMetrics:
    """Per-epoch evaluation during training: exact all-pairs verification (AUC from the fine
    histogram, within ``auc_error_bound``), precision@1 and MAP@R; no clustering.

    ``device`` is where the all-pairs tiles are computed: a training run passes its own, so a
    ``--device cpu`` run on a machine with a GPU neither touches the GPU nor gets figures that
    depend on whether one is there (default: a GPU if there is one).

    Returns:
        EpochMetrics; ``to_dict()`` has the keys threshold, val, accuracy, far_reached, auc, eer,
        positive_mean, negative_mean, precision_at_1 and map_at_r.
    """
    verification = all_pairs(embeddings, labels, far=far, exact_auc=False, device=device)
    retrieval = retrieval_metrics(embeddings, labels)
    return EpochMetrics(
        threshold=verification.threshold,
        val=verification.val,
        accuracy=verification.accuracy,
        far_reached=verification.far_reached,
        auc=verification.auc,
        eer=verification.eer,
        positive_mean=verification.positive_mean,
        negative_mean=verification.negative_mean,
        precision_at_1=retrieval.precision_at_1,
        map_at_r=retrieval.map_at_r,
    )


# The repeated draws' keys (metrics.json's names) as the table's rows name them.
REPEATED_LABELS = {
    "threshold": "Threshold", "val": "VAL", "accuracy": "Accuracy", "far_reached": "FAR reached", "auc": "ROC AUC",
    "eer": "EER", "positive_mean": "Positive distance, mean", "positive_std": "Positive distance, std",
    "negative_mean": "Negative distance, mean", "negative_std": "Negative distance, std",
}


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _with_std(flat: dict[str, Any], key: str, digits: int = 4) -> str:
    if flat.get(key) is None and key == "val":
        return "not reached (see the warning)"
    text = _number(flat.get(key), digits)
    return text + (f" ± {_number(flat[key + '_std'], digits)}" if flat.get(f"{key}_std") is not None else "")


def format_table(result: EvaluationResult) -> str:
    """The result as aligned text: the reference's verification table, then retrieval, clustering,
    the repeated draws and the warning.

    Args:
        result: what ``evaluate_embeddings`` (or ``api.evaluate``) returned.

    Returns:
        Lines of text without a trailing newline.
    """
    verification = result.verification
    flat = result.to_dict()
    rows: list[tuple[str, str]] = []
    title = f"Verification ({verification.protocol}, {verification.n_pairs:,} pairs: "
    title += f"{verification.n_positive:,} positive, {verification.n_negative:,} negative"
    if result.kfold is not None:
        title += f", {result.kfold.folds} folds: mean ± std over held-out folds"
    sections = [(title + ")", rows)]
    rows += [
        ("Target FAR", f"{verification.far:g}"),
        ("Threshold", _with_std(flat, "threshold")),
        ("FAR reached", _with_std(flat, "far_reached", 6)),
        ("Accuracy", _with_std(flat, "accuracy")),
        ("VAL", _with_std(flat, "val")),
        ("Positive distances", f"{verification.positive_mean:.4f} ± {verification.positive_std:.4f}"),
        ("Negative distances", f"{verification.negative_mean:.4f} ± {verification.negative_std:.4f}"),
        ("ROC AUC", _number(verification.auc, 6)),
        ("EER", _number(verification.eer)),
    ]
    for key, val in verification.val_at_far.items():
        shown = "not reached" if val is None else _number(val)
        rows.append((f"VAL @ FAR {key}", f"{shown}  (threshold {_number(verification.threshold_at_far.get(key))})"))
    if result.retrieval is not None:
        retrieval = result.retrieval
        retrieval_rows = [
            ("precision@1", _number(retrieval.precision_at_1)),
            ("R-precision", _number(retrieval.r_precision)),
            ("MAP@R", _number(retrieval.map_at_r)),
        ]
        retrieval_rows += [(f"recall@{k}", _number(v)) for k, v in retrieval.recall_at_k.items()]
        sections.append((f"Retrieval ({retrieval.n_queries:,} queries)", retrieval_rows))
    if result.clustering is not None:
        clustering = result.clustering
        sections.append((f"Clustering (k-means, k = {clustering.n_clusters})",
                         [("NMI", _number(clustering.nmi)), ("AMI", _number(clustering.ami))]))
    if result.repeated is not None:
        repeated = result.repeated
        sections.append((f"Repeated random pairs, over {repeated.repeats} draws of {verification.n_pairs:,} pairs (mean ± std)", [
            (REPEATED_LABELS.get(key, key),
             "not reached" if repeated.mean[key] is None else f"{repeated.mean[key]:.4f} ± {repeated.std[key]:.4f}")
            for key in repeated.mean
        ]))
    width = max(len(name) for _, section in sections for name, _ in section)
    lines = []
    for section_title, section in sections:
        lines.append(section_title)
        lines += [f"  {name:<{width}}  {value}" for name, value in section]
    warning = flat.get("warning")
    if warning:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
