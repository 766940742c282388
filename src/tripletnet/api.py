"""High-level calls behind ``tripletnet embed`` and ``tripletnet evaluate``; notebooks use them too."""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .console import Logger, log_stderr
from .data import DatasetSplits, load_dataset
from .errors import ParameterError, UserError
from .evaluation import EvaluationResult, check_far, evaluate_embeddings, get_protocol
from .fileio import atomic_path, atomic_write_text, ensure_folder
from .models import embed_images
from .training.checkpoint import load_checkpoint, model_from_checkpoint

SPLITS = ("train", "test")


@dataclass
class EmbeddedSplit:
    embeddings: torch.Tensor  # (N, D) float32
    labels: torch.Tensor  # (N,) int64
    config: TrainConfig | None = None
    class_names: tuple[str, ...] | None = None
    run_dir: Path | None = None


def embed_checkpoint(
    checkpoint: str | Path, split: str = "test", data_path: str | None = None, download: bool = True, data: DatasetSplits | None = None
) -> EmbeddedSplit:
    """Load a checkpoint and embed the ``split`` of the dataset it was trained on."""
    if split not in SPLITS:
        raise ParameterError("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    state = load_checkpoint(checkpoint)
    model, config = model_from_checkpoint(state, source=str(checkpoint))
    if data is None:
        data = load_dataset(config.dataset, data_path or config.data_path, download=download)
    images = data.train_images if split == "train" else data.test_images
    labels = data.train_labels if split == "train" else data.test_labels
    embeddings = embed_images(model, images, progress=True)
    return EmbeddedSplit(embeddings, labels, config, data.class_names, Path(checkpoint).parent)


def save_embeddings(path: str | Path, embeddings: torch.Tensor, labels: torch.Tensor) -> Path:
    """Write ``embeddings`` (N x D float32) and ``labels`` (N int64) as an .npz, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=embeddings.to(torch.float32).numpy(), labels=labels.to(torch.int64).numpy())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def load_embeddings(path: str | Path) -> EmbeddedSplit:
    """Read an .npz written by ``tripletnet embed`` (no pickles are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"embeddings file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in ("embeddings", "labels") if name not in npz.files]
            if missing:
                raise UserError(f"{path} lacks the array(s) {', '.join(missing)} (found: {', '.join(npz.files) or 'none'})")
            embeddings, labels = npz["embeddings"], npz["labels"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from None
    if embeddings.ndim != 2 or labels.ndim != 1 or len(embeddings) != len(labels):
        raise UserError(f"{path}: expected embeddings (N, D) and labels (N,), got {embeddings.shape} and {labels.shape}")
    if not np.issubdtype(embeddings.dtype, np.floating) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: embeddings must be floats and labels integers, got {embeddings.dtype} and {labels.dtype}")
    return EmbeddedSplit(torch.from_numpy(embeddings.astype(np.float32)), torch.from_numpy(labels.astype(np.int64)))


def evaluate(
    *,
    checkpoint: str | Path | None = None,
    embeddings_file: str | Path | None = None,
    data_path: str | None = None,
    protocol: str = "all-pairs",
    far: float = 1e-3,
    n_pairs: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    clustering: bool = True,
    out_dir: str | Path | None = None,
    tsne: bool = True,
    log: Logger = log_stderr,
) -> EvaluationResult:
    """Evaluate a checkpoint (on its dataset's test split) or an embeddings file; optionally write a report folder.

    Args:
        checkpoint: a tripletnet checkpoint; its dataset's test split is embedded.
        embeddings_file: an .npz from ``tripletnet embed`` (give exactly one of the two).
        data_path: where the checkpoint's dataset lies (default: the checkpoint's).
        protocol: a name in ``evaluation.PROTOCOLS`` (all-pairs, pairs, kfold).
        far: the target false-accept rate, in (0, 1].
        n_pairs: pairs to draw for protocols that draw pairs (None: their default).
        repeats: draws to average, for repeatable protocols (pairs).
        seed: the seed of drawn pairs, k-means and t-SNE.
        clustering: compute k-means NMI and AMI.
        out_dir: write metrics.json, curves.json, distances.png, roc.png, tsne.png (unless ``tsne``
            is False) and, for a checkpoint whose run folder has them, the per-epoch metrics and
            losses plots.
        tsne: draw the t-SNE map (with ``out_dir``).
        log: where progress messages go.

    Returns:
        The EvaluationResult; ``to_dict()`` is what metrics.json and ``--json`` hold.

    Raises:
        ParameterError: for a bad far, protocol, n_pairs or repeats, before anything is loaded.
        UserError: for a missing or unreadable checkpoint, embeddings file or dataset.
    """
    # Every option is checked before a checkpoint is embedded: a typo costs no minutes.
    check_far(far, zero_allowed=False)
    get_protocol(protocol).check_options(n_pairs=n_pairs, repeats=repeats)
    if (checkpoint is None) == (embeddings_file is None):
        raise UserError("give exactly one of a checkpoint or an embeddings file")
    if out_dir is not None:
        ensure_folder(out_dir)  # an output folder that cannot exist is refused before minutes of work
    split = embed_checkpoint(checkpoint, "test", data_path) if checkpoint else load_embeddings(embeddings_file)  # type: ignore[arg-type]
    result = evaluate_embeddings(
        split.embeddings, split.labels, protocol=protocol, far=far, n_pairs=n_pairs, repeats=repeats, seed=seed,
        clustering=clustering,
    )
    result.source = str(checkpoint or embeddings_file)
    if checkpoint is not None:
        _calibrate(Path(checkpoint), result, split, data_path, log)
    if out_dir is not None:
        write_report(Path(out_dir), result, split, tsne=tsne, seed=seed, log=log)
    return result


def _calibrate(checkpoint: Path, result: EvaluationResult, split: EmbeddedSplit, data_path: str | None, log: Logger) -> None:
    """Write the threshold at the evaluated FAR beside the checkpoint, with what it was calibrated on.

    Later ``verify`` calls use it. Skipped when the data could not resolve the FAR; a folder that is
    not writable (a shared model) costs a note, not the evaluation.
    """
    from .inference.model import write_calibration

    verification = result.verification
    if verification.val is None or not math.isfinite(verification.threshold):
        return
    data = {
        "dataset": split.config.dataset if split.config else None, "data_path": data_path, "split": "test",
        "images": len(split.labels), "pairs": verification.n_pairs, "protocol": verification.protocol,
    }
    try:
        path = write_calibration(checkpoint, threshold=verification.threshold, far=verification.far, data=data,
                                 far_reached=verification.far_reached, val=verification.val)
    except UserError as exc:
        log(f"note: the threshold was not saved for later verification ({exc})")
        return
    log(f"threshold {verification.threshold:.4f} at FAR {verification.far:g} saved for 'tripletnet verify' in {path}")


def write_report(out: Path, result: EvaluationResult, split: EmbeddedSplit, *, tsne: bool, seed: int, log: Logger = log_stderr) -> None:
    """Write metrics.json, curves.json and the plots of ``result`` into the folder ``out``.

    Args:
        out: the report folder (created if needed).
        result: the evaluation of ``split``; gains ``tsne_seconds`` when the t-SNE map is drawn.
        split: the embeddings evaluated (for the t-SNE map and the run folder's history).
        tsne: draw the t-SNE map.
        seed: t-SNE's seed.
        log: where progress messages go.
    """
    from . import plots

    ensure_folder(out)
    written = ["metrics.json", "curves.json", "distances.png", "roc.png"]
    if tsne:
        from .tsne import tsne_2d

        log(f"t-SNE of {len(split.embeddings):,} embeddings ...")
        points, seconds = tsne_2d(split.embeddings.numpy(), seed=seed)
        result.tsne_seconds = seconds
        plots.plot_embedding_2d(points, split.labels.numpy(), out / "tsne.png", class_names=split.class_names,
                                title=f"t-SNE of {len(points):,} test embeddings ({seconds:.1f} s)")
        written.append("tsne.png")
    atomic_write_text(out / "metrics.json", json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "curves.json", json.dumps(result.curves(), allow_nan=False) + "\n")
    verification = result.verification
    histogram = verification.histogram
    plots.plot_distance_histograms_from_counts(
        np.asarray(histogram["bin_edges"]), np.asarray(histogram["positive"]), np.asarray(histogram["negative"]),
        verification.threshold if math.isfinite(verification.threshold) else None,
        out / "distances.png", far=verification.far,
        title=f"Pair distances ({verification.protocol}, {verification.n_pairs:,} pairs)",
        pos_summary=f"{verification.positive_mean:.3f} ± {verification.positive_std:.3f}",
        neg_summary=f"{verification.negative_mean:.3f} ± {verification.negative_std:.3f}",
    )
    # A FAR the pairs cannot resolve has no VAL: no dot is drawn for it.
    marks = {float(key): val for key, val in verification.val_at_far.items() if val is not None}
    plots.plot_roc(np.asarray(verification.roc_far), np.asarray(verification.roc_val), out / "roc.png",
                   auc=verification.auc, eer=verification.eer, marks=marks)
    history_file = split.run_dir / "metrics.jsonl" if split.run_dir else None
    if history_file and history_file.is_file():
        history = plots.load_metrics_jsonl(history_file)
        if history:
            plots.plot_losses(history, out / "losses.png")
            written.append("losses.png")
            try:
                plots.plot_epoch_metrics(history, out / "epoch_metrics.png")
                written.append("epoch_metrics.png")
            except ValueError:
                pass  # a run trained with --eval_every 0 has no per-epoch metrics to draw
    log(f"report written to {out}/: {', '.join(written)}")
