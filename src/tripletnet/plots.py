"""Figures a person reads at a glance: distance histograms, ROC, 2-D embeddings, training curves.

Built on ``matplotlib.figure.Figure`` (no pyplot, so no global figure state) and written
atomically. Each ``plot_*`` function returns the path it wrote; the ``*_figure`` builders
return the Figure so tests can inspect it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .errors import UserError
from .fileio import atomic_path

POSITIVE_COLOR = "#1f77b4"  # same-class pairs, everywhere
NEGATIVE_COLOR = "#d62728"  # different-class pairs, everywhere
THRESHOLD_COLOR = "#333333"


def save_figure(fig: Figure, out: str | Path, dpi: int = 120) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return out


def distance_histogram_figure(
    bin_edges: np.ndarray,
    pos_counts: np.ndarray,
    neg_counts: np.ndarray,
    threshold: float | None = None,
    far: float | None = None,
    title: str = "Pair distances",
    pos_summary: str = "",
    neg_summary: str = "",
) -> Figure:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    widths = np.diff(bin_edges)
    for counts, color, name, summary in (
        (pos_counts, POSITIVE_COLOR, "same class", pos_summary),
        (neg_counts, NEGATIVE_COLOR, "different class", neg_summary),
    ):
        total = max(float(np.sum(counts)), 1.0)
        density = np.asarray(counts, dtype=float) / (total * widths)
        label = f"{name} ({int(total):,} pairs{', ' + summary if summary else ''})"
        ax.stairs(density, bin_edges, fill=True, alpha=0.35, color=color)
        ax.stairs(density, bin_edges, color=color, linewidth=1.2, label=label)
    if threshold is not None:
        at = f" (FAR {far:g})" if far is not None else ""
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.4f}{at}")
    ax.set_xlabel("Euclidean distance between embeddings")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(alpha=0.25)
    return fig


def plot_distance_histograms_from_counts(
    bin_edges: np.ndarray, pos_counts: np.ndarray, neg_counts: np.ndarray, threshold: float | None, out: str | Path, **kwargs: Any
) -> Path:
    return save_figure(distance_histogram_figure(bin_edges, pos_counts, neg_counts, threshold, **kwargs), out)


def plot_distance_histograms(
    pos_distances: np.ndarray, neg_distances: np.ndarray, threshold: float | None, out: str | Path, bins: int = 100, **kwargs: Any
) -> Path:
    """Histograms of raw distances; bins them and draws through the counts path."""
    pos, neg = np.asarray(pos_distances, dtype=float), np.asarray(neg_distances, dtype=float)
    high = max(pos.max(initial=0.0), neg.max(initial=0.0), threshold or 0.0) or 1.0
    edges = np.linspace(0.0, high * 1.02, bins + 1)
    summaries = {
        "pos_summary": f"{pos.mean():.3f} ± {pos.std():.3f}" if len(pos) else "",
        "neg_summary": f"{neg.mean():.3f} ± {neg.std():.3f}" if len(neg) else "",
    }
    return plot_distance_histograms_from_counts(
        edges, np.histogram(pos, edges)[0], np.histogram(neg, edges)[0], threshold, out, **{**summaries, **kwargs}
    )


def roc_figure(
    far: np.ndarray, val: np.ndarray, auc: float | None = None, eer: float | None = None, marks: Mapping[float, float] | None = None
) -> Figure:
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    far = np.asarray(far, dtype=float)
    keep = far > 0
    label = "ROC" + (f" (AUC {auc:.5f}" + (f", EER {eer:.4f}" if eer is not None else "") + ")" if auc is not None else "")
    ax.plot(far[keep], np.asarray(val, dtype=float)[keep], color=POSITIVE_COLOR, linewidth=2, label=label)
    for target, value in (marks or {}).items():
        ax.plot([target], [value], "o", color=NEGATIVE_COLOR)
        ax.annotate(f"VAL {value:.4f} @ FAR {target:g}", (target, value), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1.0)
    ax.set_xlabel("false accept rate (FAR), log scale")
    ax.set_ylabel("validation rate (VAL = TP / (TP + FN))")
    ax.set_title("Verification ROC")
    ax.grid(alpha=0.25, which="both")
    ax.legend(loc="lower right", fontsize=9)
    return fig


def plot_roc(far: np.ndarray, val: np.ndarray, out: str | Path, **kwargs: Any) -> Path:
    return save_figure(roc_figure(far, val, **kwargs), out)


def embedding_2d_figure(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None, title: str = "t-SNE of the test embeddings"
) -> Figure:
    fig = Figure(figsize=(8, 7))
    ax = fig.add_subplot()
    labels = np.asarray(labels)
    classes = np.unique(labels)
    colors = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, cls in enumerate(classes):
        sel = labels == cls
        name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
        ax.scatter(points[sel, 0], points[sel, 1], s=2, color=colors(i % colors.N), alpha=0.6, label=name, rasterized=True)
        cx, cy = np.median(points[sel], axis=0)
        ax.text(cx, cy, name, fontsize=11, weight="bold", ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=6, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def plot_embedding_2d(points: np.ndarray, labels: np.ndarray, out: str | Path, **kwargs: Any) -> Path:
    return save_figure(embedding_2d_figure(points, labels, **kwargs), out)


def _mark_changes(ax: Any, history: Sequence[Mapping[str, Any]]) -> None:
    """Dotted lines where the learning rate drops or the miner changes."""
    for prev, cur in zip(history, history[1:]):
        notes = []
        if "lr" in cur and cur.get("lr") != prev.get("lr"):
            notes.append(f"lr {cur['lr']:.0e}")
        if "miner" in cur and cur.get("miner") != prev.get("miner"):
            notes.append(str(cur["miner"]))
        if notes:
            x = cur["epoch"] - 0.5
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            ax.text(x, 0.98, " " + ", ".join(notes), transform=ax.get_xaxis_transform(), fontsize=8, va="top", color="dimgrey")


def losses_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="training loss (mean over the epoch)")
    if all("val_loss" in r for r in history):
        ax.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation loss (fixed test triplets)")
    _mark_changes(ax, history)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("triplet loss")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=9)
    return fig


def plot_losses(history: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    return save_figure(losses_figure(history), out)


EPOCH_METRICS = {
    "val": "VAL @ FAR 1e-3",
    "accuracy": "accuracy",
    "precision_at_1": "precision@1",
    "map_at_r": "MAP@R",
    "auc": "ROC AUC",
}


def epoch_metrics_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    present = [key for key in EPOCH_METRICS if any(r.get(key) is not None for r in history)]
    if not present:
        raise ValueError(f"no per-epoch metrics ({', '.join(EPOCH_METRICS)}) in these records")
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for key in present:
        rows = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        ax.plot(*zip(*rows), "o-", label=EPOCH_METRICS[key])
    _mark_changes(ax, history)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("metric on the test set")
    ax.set_title("Evaluation metrics per epoch")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=9)
    return fig


def plot_epoch_metrics(history: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    return save_figure(epoch_metrics_figure(history), out)


def load_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a run's metrics file; a broken line is a :class:`UserError` naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read metrics file {path}: {exc.strerror or exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object")
        records.append(record)
    return records
