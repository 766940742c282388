"""Figures a person reads at a glance: distance histograms, ROC, 2-D embeddings, training curves.

Built on ``matplotlib.figure.Figure`` objects (no pyplot, so no global figure state and no display
needed) and written atomically as PNG. Each ``plot_*`` function returns the path it wrote; the
matching ``*_figure`` builder returns the Figure so tests and notebooks can inspect or reuse it.

Colours mean the same thing in every figure: same-class (positive) pairs are blue, different-class
(negative) pairs are red, the decision threshold is a dark dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .fileio import atomic_path

__all__ = [
    "NEGATIVE_COLOR",
    "POSITIVE_COLOR",
    "distance_histogram_figure",
    "embedding_2d_figure",
    "epoch_metrics_figure",
    "losses_figure",
    "plot_distance_histograms",
    "plot_distance_histograms_from_counts",
    "plot_embedding_2d",
    "plot_epoch_metrics",
    "plot_losses",
    "plot_roc",
    "roc_figure",
    "save_figure",
]

POSITIVE_COLOR = "#1f77b4"  # same-class pairs, in every figure
NEGATIVE_COLOR = "#d62728"  # different-class pairs, in every figure
THRESHOLD_COLOR = "#222222"
ROC_COLOR = "#6a3d9a"  # neither pair colour: the ROC mixes both
MARK_COLOR = "#000000"
TRAIN_COLOR = "#2ca02c"
VALIDATION_COLOR = "#ff7f0e"
# Metric colours avoid blue/red so they are never mistaken for positive/negative pairs.
METRIC_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")

DPI = 120
ROC_MIN_FAR = 1e-6
ROC_LABEL_ABOVE_BELOW_VAL = 0.12  # a two-line label under a dot lower than this would reach the x-axis' tick labels
NOTE_COLOR = "#444444"


def _rate(x: float) -> str:
    """1e-3 rather than 0.001 or 1e-03: how FARs and learning rates are usually written."""
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def save_figure(fig: Figure, out: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG at ``out`` atomically and return ``out``."""
    out = Path(out)
    with atomic_path(out) as tmp:
        # The temp name ends in .tmp, so the format must be explicit.
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return out


# --------------------------------------------------------------------------- distance histograms


def _binned_stats(bin_edges: np.ndarray, counts: np.ndarray) -> tuple[float, float] | None:
    """Mean and std estimated from bin centres, for when only counts are known."""
    total = float(counts.sum())
    if total <= 0:
        return None
    centres = (bin_edges[:-1] + bin_edges[1:]) / 2
    mean = float((centres * counts).sum() / total)
    var = float(((centres - mean) ** 2 * counts).sum() / total)
    return mean, math.sqrt(max(var, 0.0))


def _pair_label(name: str, edges: np.ndarray, counts: np.ndarray, summary: str | None) -> str:
    label = f"{name}: {int(counts.sum()):,} pairs"
    if summary is None:
        stats = _binned_stats(edges, counts)
        summary = f"≈{stats[0]:.3f} ± {stats[1]:.3f}" if stats is not None else ""
    return f"{label}, {summary}" if summary else label


def distance_histogram_figure(
    bin_edges: np.ndarray,
    pos_counts: np.ndarray,
    neg_counts: np.ndarray,
    threshold: float | None = None,
    far: float | None = None,
    title: str = "Embedding distances of same-class and different-class pairs",
    pos_summary: str | None = None,
    neg_summary: str | None = None,
) -> Figure:
    """Overlaid density histograms from pre-binned counts (the single drawing code path).

    ``pos_summary``/``neg_summary`` (e.g. ``"0.412 ± 0.101"``, exact mean ± std) go into the legend
    when the caller has them; otherwise mean ± std is estimated from the bins and shown with "≈".
    """
    edges = np.asarray(bin_edges, dtype=np.float64)
    pos = np.asarray(pos_counts, dtype=np.float64)
    neg = np.asarray(neg_counts, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("bin_edges must be a strictly increasing 1-D array of at least 2 values")
    if pos.shape != (len(edges) - 1,) or neg.shape != (len(edges) - 1,):
        raise ValueError(
            f"counts must have len(bin_edges) - 1 = {len(edges) - 1} entries, got {pos.shape} and {neg.shape}"
        )
    if np.any(pos < 0) or np.any(neg < 0):
        raise ValueError("histogram counts cannot be negative")

    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot()
    widths = np.diff(edges)
    for counts, color, name, summary in (
        (pos, POSITIVE_COLOR, "same class", pos_summary),
        (neg, NEGATIVE_COLOR, "different class", neg_summary),
    ):
        # Each class is normalised on its own: there are far more negatives than positives.
        density = counts / (max(counts.sum(), 1.0) * widths)
        ax.stairs(density, edges, fill=True, alpha=0.3, color=color)
        ax.stairs(density, edges, color=color, linewidth=1.4, label=_pair_label(name, edges, counts, summary))
    if threshold is not None:
        at_far = f" (FAR {_rate(far)})" if far is not None else ""
        ax.axvline(
            threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.6, label=f"threshold {threshold:.4f}{at_far}"
        )
    ax.set_xlabel("Euclidean distance between the two embeddings")
    ax.set_ylabel("density (each class sums to 1)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.25)
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    return fig


def plot_distance_histograms_from_counts(
    bin_edges: np.ndarray,
    pos_counts: np.ndarray,
    neg_counts: np.ndarray,
    threshold: float | None,
    out: str | Path,
    far: float | None = None,
    title: str = "Embedding distances of same-class and different-class pairs",
    pos_summary: str | None = None,
    neg_summary: str | None = None,
) -> Path:
    """Histogram PNG from counts binned elsewhere (e.g. in chunks over millions of pairs)."""
    fig = distance_histogram_figure(bin_edges, pos_counts, neg_counts, threshold, far, title, pos_summary, neg_summary)
    return save_figure(fig, out)


def _histogram_inputs(
    pos_distances: np.ndarray, neg_distances: np.ndarray, threshold: float | None, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None, str | None]:
    """Bin edges, counts and exact "mean ± std" summaries for raw distance arrays."""
    # No dtype conversion: 50M float32 negatives would double in memory for nothing.
    pos = np.asarray(pos_distances).ravel()
    neg = np.asarray(neg_distances).ravel()
    if pos.size + neg.size == 0:
        raise ValueError("no distances to plot")
    for name, arr in (("positive", pos), ("negative", neg)):
        if arr.size and not np.isfinite(arr).all():
            raise ValueError(f"{name} distances contain NaN or infinity")
    lows = [float(a.min()) for a in (pos, neg) if a.size] + ([threshold] if threshold is not None else [])
    highs = [float(a.max()) for a in (pos, neg) if a.size] + ([threshold] if threshold is not None else [])
    low, high = min(lows), max(highs)
    pad = 0.02 * (high - low) if high > low else 0.5
    edges = np.linspace(max(low - pad, 0.0) if low >= 0 else low - pad, high + pad, bins + 1)

    def summary(arr: np.ndarray, chunk: int = 1 << 22) -> str | None:
        if not arr.size:
            return None
        mean = float(arr.mean(dtype=np.float64))  # float64 accumulation: accurate over 50M float32
        # Chunked so that 50M float32 distances never need one 400 MB float64 temporary.
        sq = sum(float(np.square(arr[i : i + chunk] - mean, dtype=np.float64).sum()) for i in range(0, arr.size, chunk))
        return f"{mean:.3f} ± {np.sqrt(sq / arr.size):.3f}"

    return edges, np.histogram(pos, edges)[0], np.histogram(neg, edges)[0], summary(pos), summary(neg)


def plot_distance_histograms(
    pos_distances: np.ndarray,
    neg_distances: np.ndarray,
    threshold: float | None,
    out: str | Path,
    title: str = "Embedding distances of same-class and different-class pairs",
    far: float | None = None,
    bins: int = 100,
) -> Path:
    """Histogram PNG of raw distances: bins them, then draws through the counts path."""
    edges, pos_counts, neg_counts, pos_summary, neg_summary = _histogram_inputs(pos_distances, neg_distances, threshold, bins)
    return plot_distance_histograms_from_counts(
        edges, pos_counts, neg_counts, threshold, out, far=far, title=title, pos_summary=pos_summary, neg_summary=neg_summary
    )


# --------------------------------------------------------------------------- ROC


def roc_figure(
    far: np.ndarray,
    val: np.ndarray,
    auc: float | None = None,
    eer: float | None = None,
    marks: Mapping[float, float] | None = None,
    title: str = "Verification ROC: validation rate against false accept rate",
) -> Figure:
    """ROC on a log FAR axis; FAR = 0 points cannot be shown on it and are dropped."""
    far = np.asarray(far, dtype=np.float64).ravel()
    val = np.asarray(val, dtype=np.float64).ravel()
    if far.shape != val.shape:
        raise ValueError(f"far and val must have the same length, got {far.size} and {val.size}")
    keep = far > 0
    far, val = far[keep], val[keep]
    order = np.lexsort((val, far))  # ties in FAR drawn as a vertical step, not a zig-zag
    far, val = far[order], val[order]

    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    # Many negatives give FARs below 1e-6; then widen the axis to the decade that shows them.
    low = ROC_MIN_FAR
    if far.size and far[0] < low:
        low = 10.0 ** math.floor(math.log10(far[0]))
    details = []
    if auc is not None:
        details.append(f"AUC {auc:.4f}")
    if eer is not None:
        details.append(f"EER {eer:.4f}")
    label = "ROC" + (f" ({', '.join(details)})" if details else "")
    ax.plot(far, val, color=ROC_COLOR, linewidth=2, label=label, drawstyle="steps-post")
    chance = np.logspace(math.log10(low), 0, 200)
    ax.plot(chance, chance, color="grey", linestyle=":", linewidth=1, label="chance (VAL = FAR)")
    if eer is not None and eer > 0:
        ax.plot([eer], [1 - eer], "D", color=MARK_COLOR, markersize=5, label=f"equal error rate {eer:.4f}")
    for target, value in sorted((marks or {}).items()):
        if target <= 0:
            continue
        ax.plot([target], [value], "o", color=MARK_COLOR, markersize=6, zorder=3)
        # Below the dot as a rule; above it when the dot sits so low that the label would cover the FAR ticks.
        below = value > ROC_LABEL_ABOVE_BELOW_VAL
        ax.annotate(
            f"VAL {value:.4f}\n@ FAR {_rate(target)}",
            (target, value),
            textcoords="offset points",
            xytext=(6, -26) if below else (6, 6),
            fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.85, "lw": 0},
        )
    ax.set_xscale("log")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false accept rate (FAR = FP / all different-class pairs), log scale")
    ax.set_ylabel("validation rate (VAL = TP / all same-class pairs)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # Below the axes, not inside: inside, some curve shape always puts a VAL label under it.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=9, frameon=False)
    return fig


def plot_roc(
    far: np.ndarray,
    val: np.ndarray,
    out: str | Path,
    auc: float | None = None,
    eer: float | None = None,
    marks: Mapping[float, float] | None = None,
    title: str = "Verification ROC: validation rate against false accept rate",
) -> Path:
    """ROC PNG; ``marks`` maps target FAR -> VAL reached there, each drawn as a labelled dot."""
    return save_figure(roc_figure(far, val, auc, eer, marks, title), out)


# --------------------------------------------------------------------------- 2-D embeddings


def _class_name(label: Any, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(class_names):
        return str(class_names[int(label)])
    return str(label)


def embedding_2d_figure(
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    title: str = "t-SNE of the test embeddings",
) -> Figure:
    """Scatter coloured by class, with each class name at its cluster's median."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {points.shape}")
    if len(labels) != len(points):
        raise ValueError(f"{len(points)} points but {len(labels)} labels")
    classes = np.unique(labels)
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    # Small markers for many points so clusters read as areas, not blobs of overlapping dots.
    size = 3.0 if len(points) > 5000 else 8.0 if len(points) > 1000 else 16.0

    fig = Figure(figsize=(9, 7.5))
    ax = fig.add_subplot()
    names: list[Any] = []
    for i, cls in enumerate(classes):
        sel = labels == cls
        name = _class_name(cls, class_names)
        color = palette(i % palette.N)
        ax.scatter(points[sel, 0], points[sel, 1], s=size, color=color, alpha=0.6, linewidths=0, label=name)
        cx, cy = np.median(points[sel], axis=0)
        names.append(ax.text(
            cx, cy, name, fontsize=11, weight="bold", ha="center", va="center", color="black",
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": color, "alpha": 0.8, "lw": 1.5},
        ))
    ax.set_title(title)
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    # Axis values of a t-SNE map carry no meaning; only neighbourhoods do.
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(
        title="class", markerscale=12 / math.sqrt(size) if size < 16 else 1.5, fontsize=9,
        loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
    )
    separate_labels(fig, ax, names)
    return fig


def separate_labels(fig: Figure, ax: Axes, texts: Sequence[Any], gap: float = 2.0, rounds: int = 200) -> None:
    """Move text labels apart until no two overlap on screen (classes whose medians lie close
    would otherwise hide each other's names); each move is the least that ends an overlap.

    Args:
        fig: the figure, drawn once here so that the labels have their final sizes.
        ax: the axes whose data coordinates the labels are placed in.
        texts: matplotlib Text objects.
        gap: pixels kept between two labels.
        rounds: at most this many passes over all pairs.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if len(texts) < 2:
        return
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()  # final limits (equal aspect) and text sizes
    to_data = ax.transData.inverted()
    # The label's rounded box, not only its glyphs: the boxes are what must not cover each other.
    boxes = [(text.get_bbox_patch() or text).get_window_extent(renderer) for text in texts]
    centres = np.array([[(b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2] for b in boxes])
    halves = np.array([[b.width / 2 + gap / 2, b.height / 2 + gap / 2] for b in boxes])
    for _ in range(rounds):
        moved = False
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                overlap = halves[i] + halves[j] - np.abs(centres[i] - centres[j])
                if (overlap <= 0).any():
                    continue
                # Part along the axis that needs the smaller move (vertically for wide labels side by side).
                axis = int(np.argmin(overlap))
                direction = 1.0 if centres[j, axis] >= centres[i, axis] else -1.0
                centres[i, axis] -= direction * overlap[axis] / 2
                centres[j, axis] += direction * overlap[axis] / 2
                moved = True
        if not moved:
            break
    for text, centre in zip(texts, centres, strict=True):
        text.set_position(to_data.transform(centre))


def plot_embedding_2d(
    points: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "t-SNE of the test embeddings",
) -> Path:
    """2-D scatter PNG coloured by class (tab10)."""
    return save_figure(embedding_2d_figure(points, labels, class_names, title), out)


# --------------------------------------------------------------------------- training curves


def _epochs(history: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [record.get("epoch", i + 1) for i, record in enumerate(history)]


def _format_lr(lr: Any) -> str:
    return _rate(lr) if isinstance(lr, (int, float)) else str(lr)


def _mark_changes(ax: Axes, history: Sequence[Mapping[str, Any]]) -> int:
    """Dotted vertical lines where the learning rate or the miner changes; returns how many."""
    epochs = _epochs(history)
    marked = 0
    for (prev, cur), epoch in zip(pairwise(history), epochs[1:], strict=True):
        notes = []
        if "lr" in cur and "lr" in prev and cur["lr"] != prev["lr"]:
            notes.append(f"lr {_format_lr(prev['lr'])} → {_format_lr(cur['lr'])}")
        if "miner" in cur and "miner" in prev and cur["miner"] != prev["miner"]:
            notes.append(f"{prev['miner']} → {cur['miner']}")
        if not notes:
            continue
        x = epoch - 0.5  # the change took effect at the start of this epoch
        ax.axvline(x, color=NOTE_COLOR, linestyle=":", linewidth=1.4)
        # Stagger heights so labels of close changes do not overprint each other.
        ax.text(
            x, 0.97 - 0.09 * (marked % 3), " " + "\n ".join(notes), transform=ax.get_xaxis_transform(),
            fontsize=9, va="top", ha="left", color=NOTE_COLOR,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8, "lw": 0},
        )
        marked += 1
    return marked


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[Any], list[float]]:
    rows = [(e, float(r[key])) for e, r in zip(_epochs(history), history, strict=True) if r.get(key) is not None]
    return [e for e, _ in rows], [v for _, v in rows]


def losses_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Training and validation loss per epoch, learning-rate drops and miner switches marked."""
    if not history:
        raise ValueError("no epochs to plot")
    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot()
    drawn: list[float] = []
    for key, color, marker, label in (
        ("train_loss", TRAIN_COLOR, "o", "training loss (mean over the epoch)"),
        ("val_loss", VALIDATION_COLOR, "s", "validation loss (fixed test triplets)"),
    ):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, marker=marker, color=color, linewidth=1.8, markersize=5, label=label)
            drawn += ys
    if not drawn:
        raise ValueError("the records have neither 'train_loss' nor 'val_loss'")
    # Losses are >= 0; head-room on top keeps the change labels off the curves.
    top = max(drawn)
    ax.set_ylim(0.0, top * 1.3 if top > 0 else 1.0)
    _finish_epoch_axes(ax, history, "triplet loss", "Training and validation loss per epoch", "lower left")
    return fig


def _finish_epoch_axes(
    ax: Axes, history: Sequence[Mapping[str, Any]], ylabel: str, title: str, legend_loc: Literal["lower left", "lower right"]
) -> None:
    """What every per-epoch figure shares: change markers, integer epochs, labels, grid, legend."""
    _mark_changes(ax, history)
    epochs = [e for e in _epochs(history) if isinstance(e, (int, float))]
    if epochs and max(epochs) - min(epochs) < 2:
        # One or two epochs: matplotlib's default view is a sliver around them with ticks like
        # 0.975, and MaxNLocator(integer=True) cannot help inside a sliver. Widen to whole epochs.
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.set_xticks(range(int(min(epochs)), int(max(epochs)) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.25)
    ax.legend(loc=legend_loc, fontsize=9, framealpha=0.9)


def plot_losses(history: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Loss-curve PNG from per-epoch records (keys ``epoch``, ``train_loss``, ``val_loss``)."""
    return save_figure(losses_figure(history), out)


def _metric_labels(history: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    far = next((r["far"] for r in history if isinstance(r.get("far"), (int, float))), None)
    return {
        "val": f"VAL @ FAR {_rate(far)}" if far is not None else "VAL at the target FAR",
        "precision_at_1": "precision@1",
        "map_at_r": "MAP@R",
        "accuracy": "verification accuracy",
        "auc": "ROC AUC",
    }


EPOCH_METRIC_KEYS = ("val", "precision_at_1", "map_at_r", "accuracy", "auc")


def epoch_metrics_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Every known metric present in the records, on one shared axis (all are rates in [0, 1])."""
    present = [key for key in EPOCH_METRIC_KEYS if any(r.get(key) is not None for r in history)]
    if not present:
        raise ValueError(f"no per-epoch metrics ({', '.join(EPOCH_METRIC_KEYS)}) in these records")
    labels = _metric_labels(history)
    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot()
    low = 1.0
    # Only the metrics a run recorded are drawn, so ``present`` may be shorter than the palette.
    for key, color in zip(present, METRIC_COLORS, strict=False):
        xs, ys = _series(history, key)
        low = min(low, *ys)
        ax.plot(xs, ys, marker="o", color=color, linewidth=1.8, markersize=5, label=f"{labels[key]} (last {ys[-1]:.4f})")
    # Zoom in on the range the metrics occupy, but never past [0, 1].
    bottom = max(0.0, low - 0.1 * (1.0 - low) - 0.02)
    ax.set_ylim(bottom, 1.0 + 0.3 * (1.0 - bottom))  # head-room for the change labels
    # No tick above 1: these are rates, the band above is only room for the labels.
    ax.set_yticks([t for t in ax.get_yticks() if bottom - 1e-9 <= t <= 1.0 + 1e-9])
    _finish_epoch_axes(ax, history, "metric on the test set", "Evaluation metrics per epoch", "lower right")
    return fig


def plot_epoch_metrics(history: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Per-epoch metrics PNG; ValueError if none of the known metric keys is present."""
    return save_figure(epoch_metrics_figure(history), out)


# --------------------------------------------------------------------------- metrics file


