"""Plots are valid PNGs written atomically, and their figures say what they claim; t-SNE separates clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tripletnet import plots
from tripletnet.tsne import tsne_2d

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_width: int = 400, min_height: int = 300) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= min_height, image.size
    # atomic_path leaves nothing behind: only finished files in the folder.
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def vertical_lines_at(ax) -> list[float]:
    """x of every axvline (a Line2D whose two x values are equal)."""
    xs = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if len(x) == 2 and x[0] == x[1]:
            xs.append(float(x[0]))
    return xs


def history(n: int = 6, **extra_keys) -> list[dict]:
    records = []
    for epoch in range(1, n + 1):
        record = {
            "epoch": epoch,
            "train_loss": 0.3 / epoch,
            "val_loss": 0.35 / epoch,
            "lr": 1e-3 if epoch <= 4 else 1e-4,
            "miner": "semi-hard" if epoch <= 2 else "hard",
        }
        record.update({key: value(epoch) for key, value in extra_keys.items()})
        records.append(record)
    return records


# --------------------------------------------------------------------------- histograms


def test_array_histogram_goes_through_the_counts_path(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    pos = rng.normal(0.5, 0.1, 500).clip(0)
    neg = rng.normal(1.3, 0.2, 5000).clip(0)
    calls = []
    original = plots.plot_distance_histograms_from_counts

    def spy(bin_edges, pos_counts, neg_counts, threshold, out, **kwargs):
        calls.append((np.asarray(bin_edges), np.asarray(pos_counts), np.asarray(neg_counts), threshold, kwargs))
        return original(bin_edges, pos_counts, neg_counts, threshold, out, **kwargs)

    monkeypatch.setattr(plots, "plot_distance_histograms_from_counts", spy)
    out = plots.plot_distance_histograms(pos, neg, 0.8, tmp_path / "hist.png", far=1e-3, bins=50)

    assert out == tmp_path / "hist.png"
    assert_png(out)
    assert len(calls) == 1
    edges, pos_counts, neg_counts, threshold, kwargs = calls[0]
    assert len(edges) == 51 and threshold == 0.8
    # Every distance lands in a bin: nothing is clipped off the picture.
    assert pos_counts.sum() == 500 and neg_counts.sum() == 5000
    assert edges[0] <= min(pos.min(), neg.min()) and edges[-1] >= max(pos.max(), neg.max())
    assert kwargs["pos_summary"] == f"{pos.mean():.3f} ± {pos.std():.3f}"


def test_histogram_figure_shows_threshold_counts_and_stats():
    edges = np.linspace(0.0, 2.0, 21)
    pos_counts = np.zeros(20)
    pos_counts[4:7] = [10, 20, 10]
    neg_counts = np.zeros(20)
    neg_counts[12:15] = [100, 300, 100]
    fig = plots.distance_histogram_figure(
        edges, pos_counts, neg_counts, threshold=0.95, far=1e-3, title="My pairs", neg_summary="1.300 ± 0.050"
    )
    ax = fig.axes[0]
    assert ax.get_title() == "My pairs"
    assert ax.get_xlabel() and ax.get_ylabel()
    assert vertical_lines_at(ax) == [0.95]
    texts = legend_texts(fig)
    assert texts[0].startswith("same class: 40 pairs, ≈0.5")  # estimated from the bins
    assert texts[1] == "different class: 500 pairs, 1.300 ± 0.050"  # exact, as given
    assert texts[2] == "threshold 0.9500 (FAR 1e-3)"
    # Densities: each class integrates to 1 over the bins, whatever its pair count.
    widths = np.diff(edges)
    filled = ax.patches[::2]  # each class is a filled stairs patch plus an outline
    assert len(filled) == 2
    for patch in filled:
        heights = patch.get_data()[0]
        assert np.isclose((heights * widths).sum(), 1.0)


def test_histogram_without_threshold_has_no_vertical_line():
    fig = plots.distance_histogram_figure(np.array([0.0, 1.0, 2.0]), np.array([3, 1]), np.array([1, 3]), None)
    assert vertical_lines_at(fig.axes[0]) == []
    assert not any(t.startswith("threshold") for t in legend_texts(fig))


def test_histogram_rejects_mismatched_counts_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="len\\(bin_edges\\) - 1"):
        plots.plot_distance_histograms_from_counts(np.linspace(0, 1, 11), np.ones(9), np.ones(10), 0.5, tmp_path / "h.png")
    with pytest.raises(ValueError, match="NaN"):
        plots.plot_distance_histograms(np.array([0.1, np.nan]), np.array([1.0]), None, tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ROC


def test_roc_is_log_scale_with_marked_operating_points(tmp_path):
    far = np.logspace(-6, 0, 200)
    val = np.clip(1 + np.log10(far) / 8, 0, 1)
    marks = {1e-3: 0.625, 1e-4: 0.5}
    fig = plots.roc_figure(far, val, auc=0.98, eer=0.05, marks=marks)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    low, high = ax.get_xlim()
    assert low <= 1e-6 and high == 1.0
    assert ax.get_xlabel().startswith("false accept rate") and ax.get_ylabel().startswith("validation rate")
    dots = {(float(line.get_xdata()[0]), float(line.get_ydata()[0])) for line in ax.get_lines() if line.get_marker() == "o"}
    assert dots == {(1e-3, 0.625), (1e-4, 0.5)}
    annotations = sorted(t.get_text() for t in ax.texts)
    assert annotations == ["VAL 0.5000\n@ FAR 1e-4", "VAL 0.6250\n@ FAR 1e-3"]
    assert legend_texts(fig)[0] == "ROC (AUC 0.9800, EER 0.0500)"

    out = plots.plot_roc(far, val, tmp_path / "roc.png", auc=0.98, marks=marks)
    assert out == tmp_path / "roc.png"
    assert_png(out)


def _drawn(fig):
    """Lay the figure out as when saving, so text and legend extents are final."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize("shape", ["strong", "weak", "steep"])
def test_roc_legend_never_covers_a_val_label(shape):
    far = np.logspace(-6, 0, 200)
    curves = {
        "strong": np.clip(1 + np.log10(far) / 8, 0, 1),  # labels high, to the right
        "weak": np.clip(0.5 + np.log10(far) / 12, 0, 1),  # labels low, where a lower-right legend sat
        "steep": np.clip(1 + np.log10(far) / 30, 0, 1),  # labels near the top
    }
    val = curves[shape]
    marks = {target: float(np.interp(np.log10(target), np.log10(far), val)) for target in (1e-2, 1e-3, 1e-4, 1e-5)}
    fig = plots.roc_figure(far, val, auc=0.9, eer=0.1, marks=marks)
    renderer = _drawn(fig)
    ax = fig.axes[0]
    legend_box = ax.get_legend().get_window_extent(renderer)
    labels = [text for text in ax.texts if text.get_text().startswith("VAL")]
    assert len(labels) == 4
    for text in labels:
        assert not text.get_window_extent(renderer).overlaps(legend_box), text.get_text()


@pytest.mark.parametrize("records", [1, 2])
def test_per_epoch_plots_of_a_short_run_have_whole_epoch_ticks(records):
    runs = history(records, val=lambda e: 0.5 + e / 20)
    for fig in (plots.losses_figure(runs), plots.epoch_metrics_figure(runs)):
        _drawn(fig)
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert shown == list(range(1, records + 1))
        assert [label.get_text() for label in ax.get_xticklabels()] == [str(e) for e in range(1, records + 1)]


def test_roc_widens_the_axis_for_tiny_fars_and_drops_zero():
    far = np.array([0.0, 2e-8, 1e-4, 1.0])
    val = np.array([0.1, 0.2, 0.7, 1.0])
    ax = plots.roc_figure(far, val).axes[0]
    assert ax.get_xlim()[0] == pytest.approx(1e-8)
    curve = ax.get_lines()[0]
    assert np.all(np.asarray(curve.get_xdata()) > 0)


# --------------------------------------------------------------------------- 2-D embedding


def test_embedding_scatter_has_class_names_in_legend_and_at_medians(tmp_path):
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.repeat([0, 1, 2], 50)
    points = centres[labels] + rng.normal(0, 0.5, (150, 2))
    names = ["zero", "one", "two"]
    fig = plots.embedding_2d_figure(points, labels, class_names=names, title="Map")
    ax = fig.axes[0]
    assert ax.get_title() == "Map"
    assert legend_texts(fig) == names
    placed = {t.get_text(): t.get_position() for t in ax.texts}
    assert set(placed) == set(names)
    for name, centre in zip(names, centres, strict=True):
        assert np.allclose(placed[name], centre, atol=0.5)
    # Distinct tab10 colours per class.
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in ax.collections}
    assert len(colours) == 3

    out = plots.plot_embedding_2d(points, labels, tmp_path / "tsne.png", class_names=names)
    assert_png(out)


def test_embedding_without_names_uses_labels_and_checks_shapes():
    fig = plots.embedding_2d_figure(np.zeros((4, 2)), np.array([3, 3, 7, 7]))
    assert legend_texts(fig) == ["3", "7"]
    with pytest.raises(ValueError):
        plots.embedding_2d_figure(np.zeros((4, 3)), np.array([0, 0, 1, 1]))


# --------------------------------------------------------------------------- training curves


def test_losses_mark_lr_drop_and_miner_switch(tmp_path):
    records = history()
    fig = plots.losses_figure(records)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel() == "triplet loss"
    assert len(legend_texts(fig)) == 2
    assert sorted(vertical_lines_at(ax)) == [2.5, 4.5]
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "semi-hard → hard" in notes and "lr 1e-3 → 1e-4" in notes

    steady = [dict(r, lr=1e-3, miner="hard") for r in records]
    assert vertical_lines_at(plots.losses_figure(steady).axes[0]) == []

    out = plots.plot_losses(records, tmp_path / "losses.png")
    assert_png(out)


def test_epoch_metrics_draw_only_present_keys(tmp_path):
    records = history(val=lambda e: 0.5 + e / 20, precision_at_1=lambda e: 0.9 + e / 100)
    records[0].pop("precision_at_1")  # a metric missing in some epochs is drawn where present
    fig = plots.epoch_metrics_figure(records)
    texts = legend_texts(fig)
    assert len(texts) == 2
    assert texts[0].startswith("VAL") and texts[1].startswith("precision@1")
    lengths = sorted(len(line.get_xdata()) for line in fig.axes[0].get_lines() if line.get_marker() == "o")
    assert lengths == [5, 6]
    assert max(fig.axes[0].get_yticks()) <= 1.0

    out = plots.plot_epoch_metrics(records, tmp_path / "metrics.png")
    assert_png(out)


def test_epoch_metrics_without_metrics_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="no per-epoch metrics"):
        plots.plot_epoch_metrics(history(), tmp_path / "metrics.png")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- t-SNE


def test_tsne_keeps_separated_clusters_apart():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16))
    centres *= 8 / np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat([0, 1, 2], 100)
    x = (centres[labels] + rng.normal(0, 0.5, (300, 16))).astype(np.float32)

    points, seconds = tsne_2d(x, seed=0, n_jobs=1)
    assert points.shape == (300, 2) and points.dtype == np.float64
    assert np.isfinite(points).all()
    assert seconds > 0
    # Each point's 2-D neighbours (itself excluded) mostly share its class.
    knn = KNeighborsClassifier(n_neighbors=6).fit(points, labels)
    neighbours = knn.kneighbors(points, return_distance=False)[:, 1:]
    purity = (labels[neighbours] == labels[:, None]).mean()
    assert purity > 0.95


def test_tsne_rejects_bad_input():
    with pytest.raises(ValueError):
        tsne_2d(np.zeros(10))
    with pytest.raises(ValueError):
        tsne_2d(np.full((10, 3), np.nan))


def test_roc_labels_of_a_low_val_never_sit_on_the_far_tick_labels():
    far = np.logspace(-6, 0, 200)
    val = np.clip(0.02 + 0.2 * (np.log10(far) + 6) / 6, 0, 1) ** 2  # a weak model: VAL 0.0004 to 0.05 below FAR 1e-2
    marks = {target: float(np.interp(np.log10(target), np.log10(far), val)) for target in (1e-2, 1e-3, 1e-4, 1e-5)}
    assert max(marks.values()) < 0.1
    fig = plots.roc_figure(far, val, auc=0.6, eer=0.4, marks=marks)
    renderer = _drawn(fig)
    ax = fig.axes[0]
    ticks = [label.get_window_extent(renderer) for label in ax.get_xticklabels() if label.get_text()]
    assert ticks
    labels = [text for text in ax.texts if text.get_text().startswith("VAL")]
    assert len(labels) == 4
    for text in labels:
        box = text.get_bbox_patch().get_window_extent(renderer)
        assert not any(box.overlaps(tick) for tick in ticks), text.get_text()
        assert box.y0 >= ax.get_window_extent(renderer).y0, text.get_text()  # inside the axes, above the x-axis


def test_named_classes_whose_clusters_lie_close_keep_readable_labels():
    rng = np.random.default_rng(0)
    # Ten clusters, their medians closer than a label is wide: unseparated, the names would cover each other.
    centres = np.array([[0.3 * i, 0.1 * (i % 2)] for i in range(10)])
    labels = np.repeat(np.arange(10), 40)
    points = centres[labels] + rng.normal(0, 0.05, (400, 2))
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    fig = plots.embedding_2d_figure(points, labels, class_names=names)
    renderer = _drawn(fig)
    boxes = [text.get_bbox_patch().get_window_extent(renderer) for text in fig.axes[0].texts]
    assert len(boxes) == 10
    for i, first in enumerate(boxes):
        for second in boxes[i + 1:]:
            assert not first.overlaps(second)


def test_the_tsne_title_of_an_evaluation_carries_no_run_time(tmp_path, monkeypatch):
    import torch

    from tripletnet import api
    from tripletnet.evaluation import evaluate_embeddings

    titles = []
    real = plots.plot_embedding_2d
    monkeypatch.setattr(plots, "plot_embedding_2d",
                        lambda *args, **kwargs: titles.append(kwargs["title"]) or real(*args, **kwargs))
    embeddings = torch.nn.functional.normalize(torch.randn(90, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.arange(90) % 3
    split = api.EmbeddedSplit(embeddings, labels, class_names=("a", "b", "c"))
    result = evaluate_embeddings(embeddings, labels, clustering=False)
    api.write_report(tmp_path, result, split, tsne=True, seed=0, log=lambda _: None)
    assert titles == ["t-SNE of 90 test embeddings"]
