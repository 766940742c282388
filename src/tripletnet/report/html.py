"""One self-contained HTML report of a trained model, for a person to look at.

Everything is inside the one file: figures and example images as base64 PNG, styles in a
``<style>`` element, no scripts and no links to anything outside it, so it opens offline, attaches
to an e-mail and never changes after it is written. It shows the run's configuration (grouped, only the
options that apply), the per-epoch curves, the verification table, ROC, pair distances, a t-SNE map, retrieval metrics,
the worst mistakes (closest different-class pairs, farthest same-class pairs) and a few queries
with their nearest neighbours.

:func:`collect_report_data` evaluates through the API (the run's data reloaded as the run loaded
it, :func:`~tripletnet.api.load_run_images`) into a plain :class:`ReportData`;
:func:`render_report` only formats it.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import plots
from ..api import load_run_images
from ..config import OPTION_GROUPS, TrainConfig, check_threshold_far
from ..console import Logger, log_stderr
from ..data import DATASETS, stratified_subset
from ..errors import ParameterError, UserError
from ..evaluation import EvaluationResult, evaluate_embeddings
from ..evaluation.results import ClusteringResult, RetrievalResult, VerificationResult
from ..fileio import atomic_write_text
from ..inference.index import GalleryIndex
from ..inference.model import load_model
from ..training.checkpoint import load_checkpoint
from ..training.runlog import read_records
from ..tsne import tsne_2d

N_MISTAKES = 8
N_QUERIES = 5
NEIGHBOURS = 5
TSNE_POINTS = 3000
THUMBNAIL_PX = 56  # MNIST's 28 px doubled, drawn pixelated


# --------------------------------------------------------------------------- the pairs worth showing


@dataclass(frozen=True)
class Pair:
    """Two items of the evaluated set and their embedding distance."""

    first: int
    second: int
    distance: float


def extreme_pairs(
    embeddings: torch.Tensor, labels: torch.Tensor, count: int, rows_per_block: int = 512
) -> tuple[list[Pair], list[Pair]]:
    """The worst mistakes a threshold can make on these embeddings, over all pairs.

    Args:
        embeddings: (N, D).
        labels: (N,).
        count: pairs of each kind to return.
        rows_per_block: rows of the distance matrix held at once (memory: rows x N floats).

    Returns:
        (the ``count`` closest different-class pairs, nearest first: the first false accepts of
        any threshold; the ``count`` farthest same-class pairs, farthest first: the first false
        rejects). Each pair is listed once, with ``first < second``.
    """
    if count < 1:
        raise ParameterError("count", f"must be at least 1, got {count}")
    x = torch.as_tensor(embeddings, dtype=torch.float32)
    y = torch.as_tensor(labels)
    n = len(x)
    columns = torch.arange(n)
    negatives = (torch.empty(0), torch.empty(0, dtype=torch.int64))
    positives = (torch.empty(0), torch.empty(0, dtype=torch.int64))
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        distances = torch.cdist(x[start:stop], x)
        upper = columns[None, :] > torch.arange(start, stop)[:, None]
        same = y[start:stop, None] == y[None, :]
        flat_offset = start * n
        # Twice the candidates: cdist's matrix-product shortcut may swap near-ties, which the exact pass below settles.
        negatives = _keep(negatives, distances.masked_fill(~(upper & ~same), math.inf), flat_offset, 2 * count, largest=False)
        positives = _keep(positives, distances.masked_fill(~(upper & same), -math.inf), flat_offset, 2 * count, largest=True)
    return _exact_pairs(x, negatives[1], n, count, largest=False), _exact_pairs(x, positives[1], n, count, largest=True)


def _keep(
    best: tuple[torch.Tensor, torch.Tensor], block: torch.Tensor, flat_offset: int, count: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a block's best ``count`` entries into the running best (values, flat indices)."""
    values, positions = block.flatten().topk(min(count, block.numel()), largest=largest)
    keep = torch.isfinite(values)
    values = torch.cat([best[0], values[keep]])
    positions = torch.cat([best[1], positions[keep] + flat_offset])
    order = values.argsort(descending=largest, stable=True)[:count]
    return values[order], positions[order]


def _exact_pairs(x: torch.Tensor, flat_positions: torch.Tensor, n: int, count: int, largest: bool) -> list[Pair]:
    """The candidates' distances recomputed from the differences (exact for near-duplicates too), best ``count`` kept."""
    first, second = flat_positions // n, flat_positions % n
    distances = torch.linalg.vector_norm(x[first] - x[second], dim=1)
    order = distances.argsort(descending=largest, stable=True)[:count]
    return [Pair(int(first[i]), int(second[i]), float(distances[i])) for i in order]


# --------------------------------------------------------------------------- inline images


def figure_png(figure: Any) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=plots.DPI, bbox_inches="tight")
    return buffer.getvalue()


def image_png(image: torch.Tensor | np.ndarray) -> bytes:
    """A uint8 image, (H, W) or (C, H, W) with C in {1, 3}, as PNG bytes."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, css_class: str = "") -> str:
    class_attr = f' class="{css_class}"' if css_class else ""
    return f'<img{class_attr} src="{_data_uri(png)}" alt="{html.escape(alt)}">'


# --------------------------------------------------------------------------- formatting


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: Sequence[tuple[str, str]], css_class: str = "kv") -> str:
    body = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in rows)
    return f'<table class="{css_class}">{body}</table>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d1d1f; background: #f6f7f9; }
header { background: #243447; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 2px 0; font-size: 13px; opacity: .85; }
main { padding: 12px 32px 40px; max-width: 1200px; }
section { background: #fff; border-radius: 8px; padding: 14px 20px; margin: 16px 0; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 17px; margin: 0 0 10px; }
.headlines { display: flex; flex-wrap: wrap; gap: 12px; }
.headline { background: #fff; border-radius: 8px; padding: 10px 16px; min-width: 130px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.headline .value { font-size: 24px; font-weight: 600; }
.headline .name { font-size: 12px; color: #555; }
table { border-collapse: collapse; font-size: 13px; }
table.kv th { text-align: left; font-weight: 500; color: #444; padding: 3px 18px 3px 0; }
table.kv td { font-variant-numeric: tabular-nums; padding: 3px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figures img { max-width: 100%; width: 560px; height: auto; border: 1px solid #eee; }
.thumb { width: 56px; height: 56px; image-rendering: pixelated; border: 2px solid #ccc; border-radius: 3px; }
.thumb.right { border-color: #2ca02c; }
.thumb.wrong { border-color: #d62728; }
.pairs { display: flex; flex-wrap: wrap; gap: 14px; }
.pair { text-align: center; font-size: 12px; }
.query { display: flex; align-items: center; gap: 10px; margin: 6px 0; }
.neighbour { text-align: center; font-size: 11px; }
.note { font-size: 12px; color: #555; }
.columns { display: flex; flex-wrap: wrap; gap: 40px; }
"""


# --------------------------------------------------------------------------- the report


def resolve_checkpoint(run_dir_or_checkpoint: str | os.PathLike) -> Path:
    """A checkpoint file itself, or a run folder's ``last.pt`` (else its latest ``epoch_<n>.pt``)."""
    path = Path(run_dir_or_checkpoint)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"no run folder or checkpoint at {path}")
    if (path / "last.pt").is_file():
        return path / "last.pt"
    epochs = sorted(path.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else -1)
    if not epochs:
        raise UserError(f"{path} holds no checkpoint (last.pt or epoch_<n>.pt)")
    return epochs[-1]


@dataclass(frozen=True)
class Query:
    """One example query and its nearest other test images: (distance, position) nearest first."""

    position: int
    neighbours: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, collected through the API; :func:`render_report` only formats it.

    Attributes:
        checkpoint: the checkpoint reported.
        fingerprint: its weights' fingerprint.
        config: the run's configuration.
        embedding_dim: size of the embeddings.
        dataset: the dataset's name.
        evaluated: what was evaluated, in words ("the test split of mnist").
        images: the evaluated uint8 images (for thumbnails), labels their labels, class_names the names.
        result: the all-pairs evaluation of their embeddings.
        history: the per-epoch records up to this checkpoint's epoch.
        tsne: the t-SNE map (points, their labels, seconds), or None when not drawn.
        false_accepts, false_rejects: the worst mistakes (see :func:`extreme_pairs`).
        queries: example queries with their neighbours.
    """

    checkpoint: Path
    fingerprint: str
    config: TrainConfig
    embedding_dim: int
    dataset: str
    evaluated: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    result: EvaluationResult
    history: list[dict[str, Any]]
    tsne: tuple[np.ndarray, np.ndarray, float] | None
    false_accepts: list[Pair]
    false_rejects: list[Pair]
    queries: list[Query]


def collect_report_data(
    run_dir_or_checkpoint: str | os.PathLike,
    *,
    data_path: str | None = None,
    far: float = 1e-3,
    test_images: int = 0,
    tsne: bool = True,
    tsne_points: int = TSNE_POINTS,
    n_mistakes: int = N_MISTAKES,
    n_queries: int = N_QUERIES,
    clustering: bool = True,
    seed: int = 0,
    log: Logger = log_stderr,
) -> ReportData:
    """Evaluate a checkpoint on its run's test data, reloaded as the run loaded it (:func:`~tripletnet.api.load_run_images`).

    Args:
        run_dir_or_checkpoint: a run folder (its ``last.pt``) or a checkpoint file.
        data_path: dataset folder (default: the checkpoint's, $TRIPLETNET_DATA, ./data/); for a run
            on an image folder or CSV list, its new place if it moved.
        far: target false-accept rate of the verification table.
        test_images: evaluate a class-stratified subset of this many test images (0 = all).
        tsne: draw a t-SNE map of (at most ``tsne_points``) test embeddings.
        tsne_points: class-stratified subset size for t-SNE.
        n_mistakes: pairs shown of each kind of worst mistake.
        n_queries: example queries shown with their nearest neighbours.
        clustering: include k-means NMI/AMI.
        seed: seed of the t-SNE subset, the example queries and k-means.
        log: where progress messages go.

    Returns:
        What the report shows.
    """
    check_threshold_far(far)
    if test_images < 0:
        raise ParameterError("test_images", f"must be >= 0, got {test_images}")
    if n_mistakes < 1 or n_queries < 0:
        raise ParameterError("n_mistakes" if n_mistakes < 1 else "n_queries", "must be positive")
    checkpoint = resolve_checkpoint(run_dir_or_checkpoint)
    state = load_checkpoint(checkpoint)
    history = _history(checkpoint, state)  # a damaged metrics.jsonl is refused now, not after minutes of evaluation
    model = load_model(checkpoint, log=log, state=state)
    run = load_run_images(checkpoint, "test", data_path, model.config.download, state=state, log=log)
    images, labels = run.images, run.labels
    if 0 < test_images < len(labels):
        subset = stratified_subset(labels, test_images, seed)
        images, labels = images[subset], labels[subset]
        counts = torch.unique(labels, return_counts=True)[1]
        if len(counts) < 2 or not bool((counts >= 2).any()):  # said before the embedding, naming what to change
            raise ParameterError("test_images", "must hold two images of one identity and two identities, got "
                                                f"{test_images} of the test split's {len(torch.unique(run.labels))} "
                                                "identities (0 = all)")
    log(f"embedding {len(images):,} test images ...")
    embeddings = model.embed(images)
    log("evaluating all test pairs ...")
    result = evaluate_embeddings(embeddings, labels, protocol="all-pairs", far=far, clustering=clustering, seed=seed)
    tsne_map = None
    if tsne:
        chosen = stratified_subset(labels, min(tsne_points, len(labels)), seed)
        log(f"t-SNE of {len(chosen):,} test embeddings ...")
        points, seconds = tsne_2d(embeddings[chosen].numpy(), seed=seed)
        tsne_map = (points, labels[chosen].numpy(), seconds)
    log("finding the worst mistakes ...")
    false_accepts, false_rejects = extreme_pairs(embeddings, labels, n_mistakes)
    return ReportData(
        checkpoint=checkpoint, fingerprint=model.fingerprint, config=model.config, embedding_dim=model.embedding_dim,
        dataset=run.data.name, evaluated=run.describe(), images=images, labels=labels, class_names=run.data.class_names,
        result=result, history=history, tsne=tsne_map, false_accepts=false_accepts,
        false_rejects=false_rejects, queries=_queries(model.fingerprint, embeddings, n_queries, seed),
    )


def write_html_report(run_dir_or_checkpoint: str | os.PathLike, out_html: str | os.PathLike, **options: Any) -> Path:
    """Evaluate a checkpoint on its dataset's test split and write the report as one HTML file (atomically).

    Args:
        run_dir_or_checkpoint: a run folder (its ``last.pt``) or a checkpoint file.
        out_html: the HTML file to write; checked before minutes of evaluation.
        options: the keyword arguments of :func:`collect_report_data` (data_path, far, test_images, tsne, ...).

    Returns:
        The path written.
    """
    target = Path(out_html)
    if target.suffix.lower() not in (".html", ".htm"):  # a browser opens the report by its name
        raise UserError(f"a report is an .html file, and {target.name} is not one: give a name ending in .html")
    _check_writable(target)  # before minutes of evaluation, not after
    data = collect_report_data(run_dir_or_checkpoint, **options)
    atomic_write_text(target, render_report(data))  # a failure is a WriteError naming the file
    return target


def render_report(data: ReportData) -> str:
    """The report page of ``data``: one self-contained HTML document."""
    verification = data.result.verification
    histogram = verification.histogram
    threshold = verification.threshold if math.isfinite(verification.threshold) else None
    figures: list[tuple[str, bytes]] = []
    distance_figure = plots.distance_histogram_figure(
        np.asarray(histogram["bin_edges"]), np.asarray(histogram["positive"]), np.asarray(histogram["negative"]),
        threshold, far=verification.far,
        title=f"Pair distances (all {verification.n_pairs:,} test pairs)",
        pos_summary=f"{verification.positive_mean:.3f} ± {verification.positive_std:.3f}",
        neg_summary=f"{verification.negative_mean:.3f} ± {verification.negative_std:.3f}",
    )
    figures.append(("pair distances", figure_png(distance_figure)))
    # A FAR the negatives cannot resolve has no VAL (None): there is no point to mark.
    marks = {float(k): v for k, v in verification.val_at_far.items() if v is not None}
    roc = plots.roc_figure(np.asarray(verification.roc_far), np.asarray(verification.roc_val),
                           auc=verification.auc, eer=verification.eer, marks=marks)
    figures.append(("ROC", figure_png(roc)))
    if data.tsne is not None:
        points, tsne_labels, _ = data.tsne
        tsne_title = f"t-SNE of {len(points):,} test embeddings"  # its run time is the log's business, not the figure's
        figures.append(("t-SNE", figure_png(plots.embedding_2d_figure(points, tsne_labels, data.class_names, title=tsne_title))))
    curves: list[tuple[str, bytes]] = []
    if data.history:
        curves.append(("losses", figure_png(plots.losses_figure(data.history))))
        try:
            curves.append(("metrics per epoch", figure_png(plots.epoch_metrics_figure(data.history))))
        except ValueError:
            pass  # a run trained with --eval_every 0 has no per-epoch metrics to draw
    images, labels, names = data.images, data.labels, data.class_names
    mistakes = (
        _pairs_html("Closest different-class pairs (the first false accepts of any threshold)",
                    data.false_accepts, images, labels, names, verification.threshold)
        + _pairs_html("Farthest same-class pairs (the first false rejects)", data.false_rejects, images, labels, names,
                      verification.threshold)
    )
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>tripletnet report: {html.escape(str(data.checkpoint))}</title>",
        f"<style>{STYLE}</style></head><body>",
        _header(data),
        "<main>",
        _headlines(verification, data.result.retrieval),
        _subset_note(data),
        _section("verification", "Verification: every test pair", _verification_table(verification)),
        _section("figures", "ROC, pair distances" + (" and t-SNE" if data.tsne is not None else ""),
                 '<div class="figures">' + "".join(_img(png, title) for title, png in figures) + "</div>"),
        _section("retrieval", "Retrieval and clustering: every test image a query",
                 _retrieval_table(data.result.retrieval, data.result.clustering)),
        _section("mistakes", "Worst mistakes", mistakes),
        _section("queries", f"Queries and their {NEIGHBOURS} nearest test images", _queries_html(data)) if data.queries else "",
        _section("curves", "Training curves",
                 '<div class="figures">' + "".join(_img(png, title) for title, png in curves) + "</div>" if curves
                 else '<p class="note">This run recorded no per-epoch metrics.</p>'),
        _section("config", "Configuration", _config_html(data.config)),
        "</main></body></html>",
    ])


def _check_writable(target: Path) -> None:
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a folder; give a file name")
    existing = next(p for p in (target.parent, *target.parent.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"cannot write {target}: {existing} is not a writable folder")


def _history(checkpoint: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-epoch records: the run folder's metrics.jsonl up to this checkpoint's epoch, else the checkpoint's own."""
    metrics = checkpoint.parent / "metrics.jsonl"
    records = read_records(metrics) if metrics.is_file() else list(state.get("history") or [])
    where = metrics if metrics.is_file() else f"the history in {checkpoint}"
    for number, record in enumerate(records, start=1):  # what the loss figure reads, checked before any evaluation
        epoch = record.get("epoch")
        losses = [record[key] for key in ("train_loss", "val_loss") if key in record]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not losses or any(
                value is not None and (isinstance(value, bool) or not isinstance(value, int | float)) for value in losses):
            raise UserError(f"{where}: record {number} is not an epoch record of tripletnet (an integer epoch and a "
                            f"numeric train_loss or val_loss): {json.dumps(record)[:120]}")
    return [r for r in records if r["epoch"] <= state["epoch"]]


def _header(data: ReportData) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    checkpoint = data.checkpoint
    return (
        f"<header><h1>tripletnet report: {html.escape(checkpoint.parent.name or str(checkpoint))}</h1>"
        f"<p>checkpoint {html.escape(str(checkpoint))} · weights {data.fingerprint[:12]} · "
        f"network {html.escape(data.config.network)}, "
        f"{data.embedding_dim}-d embeddings</p>"
        f"<p>evaluated on {html.escape(data.evaluated)} ({len(data.labels):,} images) · written {when}</p></header>"
    )


def _subset_note(data: ReportData) -> str:
    """Why the headline VAL differs from the last point of the per-epoch curve: the pairs each is computed on."""
    verification = data.result.verification
    shown = f"The headline VAL is over all {verification.n_pairs:,} pairs of the {len(data.labels):,} test images evaluated here."
    if data.config.eval_every > 0 and data.history:
        eval_images = data.config.eval_images
        subset = "every test image" if eval_images == 0 else f"a subset of at most {eval_images:,} test images"
        shown += (f" The per-epoch curve's VAL (training curves, below) was computed during training on {subset} "
                  "(--eval_images), so the two need not agree.")
    return f'<p class="note">{html.escape(shown)}</p>'


def _headlines(verification: VerificationResult, retrieval: RetrievalResult | None) -> str:
    cards = [
        ("val", f"VAL @ FAR {verification.far:g}", _fmt(verification.val)),
        ("threshold", "threshold", _fmt(verification.threshold)),
        ("accuracy", "accuracy", _fmt(verification.accuracy)),
        ("auc", "ROC AUC", _fmt(verification.auc, 5)),
        ("eer", "EER", _fmt(verification.eer)),
        ("precision-at-1", "precision@1", _fmt(retrieval.precision_at_1 if retrieval else None)),
        ("map-at-r", "MAP@R", _fmt(retrieval.map_at_r if retrieval else None)),
    ]
    body = "".join(
        f'<div class="headline" id="headline-{key}"><div class="value">{html.escape(value)}</div>'
        f'<div class="name">{html.escape(name)}</div></div>'
        for key, name, value in cards
    )
    return f'<div class="headlines">{body}</div>'


def _verification_table(verification: VerificationResult) -> str:
    v = verification
    rows = [
        ("pairs", f"{v.n_pairs:,} ({v.n_positive:,} same-class, {v.n_negative:,} different-class)"),
        ("target FAR", f"{v.far:g}"),
        ("threshold", _fmt(v.threshold)),
        ("FAR reached", _fmt(v.far_reached, 6)),
        ("VAL (true accept rate)", _fmt(v.val)),
        ("accuracy", _fmt(v.accuracy)),
        ("ROC AUC", _fmt(v.auc, 6)),
        ("EER", _fmt(v.eer)),
        ("same-class distances", f"{v.positive_mean:.4f} ± {v.positive_std:.4f}"),
        ("different-class distances", f"{v.negative_mean:.4f} ± {v.negative_std:.4f}"),
    ]
    rows += [(f"VAL @ FAR {key}", f"{_fmt(val)} (threshold {_fmt(v.threshold_at_far.get(key))})")
             for key, val in v.val_at_far.items()]
    warning = f'<p class="note">{html.escape(v.warning)}</p>' if v.warning else ""
    return _table(rows) + warning


def _retrieval_table(retrieval: RetrievalResult | None, clustering: ClusteringResult | None) -> str:
    rows: list[tuple[str, str]] = []
    if retrieval is not None:
        rows += [("precision@1", _fmt(retrieval.precision_at_1)), ("R-precision", _fmt(retrieval.r_precision)),
                 ("MAP@R", _fmt(retrieval.map_at_r))]
        rows += [(f"recall@{k}", _fmt(value)) for k, value in retrieval.recall_at_k.items()]
    if clustering is not None:
        rows += [("NMI (k-means)", _fmt(clustering.nmi)), ("AMI (k-means)", _fmt(clustering.ami))]
    return _table(rows)


def _class(label: Any, names: Sequence[str]) -> str:
    index = int(label)
    return names[index] if 0 <= index < len(names) else str(index)


def _pairs_html(title: str, pairs: Sequence[Pair], images: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                threshold: float) -> str:
    cells = []
    for pair in pairs:
        a, b = int(pair.first), int(pair.second)
        accepted = pair.distance <= threshold
        wrong = accepted != bool(labels[a] == labels[b])
        verdict = ("accepted" if accepted else "rejected") + (" (wrong)" if wrong else " (right)")
        css = "thumb wrong" if wrong else "thumb right"
        cells.append(
            f'<div class="pair">{_img(image_png(images[a]), f"test image {a}", css)}'
            f'{_img(image_png(images[b]), f"test image {b}", css)}'
            f"<br>{html.escape(_class(labels[a], names))} / {html.escape(_class(labels[b], names))}"
            f"<br>d = {pair.distance:.4f}<br>{verdict}</div>"
        )
    return f"<h3>{html.escape(title)}</h3><div class=\"pairs\">{''.join(cells)}</div>"


def _verdict_class(right: Any) -> str:
    return "thumb right" if right else "thumb wrong"


def _queries(fingerprint: str, embeddings: torch.Tensor, n_queries: int, seed: int) -> list[Query]:
    """``n_queries`` seeded example queries and their nearest other test images (exact search)."""
    if n_queries == 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(embeddings), generator=generator)[:n_queries]
    k = min(NEIGHBOURS + 1, len(embeddings))
    distances, found = GalleryIndex.build(embeddings, fingerprint=fingerprint).search(embeddings[chosen], k)
    # The query is in the gallery; skip it (not necessarily rank 0 when duplicates tie).
    return [Query(q, tuple((float(d), int(n)) for d, n in zip(ds, ns, strict=True) if int(n) != q)[:NEIGHBOURS])
            for q, ds, ns in zip(chosen.tolist(), distances, found, strict=True)]


def _queries_html(data: ReportData) -> str:
    images, labels, names = data.images, data.labels, data.class_names
    rows = []
    for query in data.queries:
        q = query.position
        neighbours = "".join(
            f'<div class="neighbour">{_img(image_png(images[n]), f"test image {n}", _verdict_class(labels[n] == labels[q]))}'
            f"<br>{html.escape(_class(labels[n], names))}<br>{d:.3f}</div>"
            for d, n in query.neighbours
        )
        rows.append(f'<div class="query"><div class="neighbour">{_img(image_png(images[q]), f"query {q}", "thumb")}'
                    f"<br><b>query</b><br>{html.escape(_class(labels[q], names))}</div>{neighbours}</div>")
    return "".join(rows)


# --------------------------------------------------------------------------- the configuration, grouped

# The report groups the options as ``train --help`` does (each config field's metadata names its
# group); an option listed here is shown only when its condition holds for the run, the others always.
def _path_dataset(config: TrainConfig) -> bool:
    return DATASETS.is_path(config.dataset)


def _augmented(config: TrainConfig) -> bool:
    return bool(config.augment)


OPTION_APPLIES: dict[str, Callable[[TrainConfig], bool]] = {
    "data_path": lambda c: not _path_dataset(c), "download": lambda c: not _path_dataset(c),
    **dict.fromkeys(("image_size", "channels", "split_by", "skip_bad_images", "cache_images", "num_workers"), _path_dataset),
    "train_classes": lambda c: c.train_classes is not None, "holdout_classes": lambda c: c.holdout_classes is not None,
    "selection_classes": lambda c: c.selection_classes > 0,
    **dict.fromkeys(("rotation", "scaling", "shift", "hflip", "elastic", "stroke", "erasing"), _augmented),
    "projection_dim": lambda c: c.projection_dim > 0, "instance_margin": lambda c: c.instance_weight > 0,
    "xbm_weight": lambda c: c.xbm_size > 0, "lr_drop_epoch": lambda c: c.lr_schedule == "step",
    "patience": lambda c: c.patience > 0, "compile": lambda c: c.compile,
    "eval_images": lambda c: c.eval_every > 0, "tensorboard": lambda c: bool(c.tensorboard),
}


def config_groups(config: TrainConfig) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The run's options that apply to it, by group in :data:`OPTION_GROUPS` order:
    (group, [(option, value)]), empty groups left out; a field of no known group comes under "other"."""
    values = config.to_dict()
    groups: dict[str, list[tuple[str, Any]]] = {title: [] for title in (*OPTION_GROUPS, "other")}
    for f in fields(TrainConfig):
        applies = OPTION_APPLIES.get(f.name)
        if applies is None or applies(config):
            group = f.metadata.get("group")
            groups[group if group in OPTION_GROUPS else "other"].append((f.name, values[f.name]))
    return [(title, rows) for title, rows in groups.items() if rows]


def _config_html(config: TrainConfig) -> str:
    return "".join(
        f"<h3>{html.escape(title)}</h3>{_table([(name, _fmt(value)) for name, value in rows])}"
        for title, rows in config_groups(config)
    )
