"""High-level calls behind ``tripletnet embed`` and ``tripletnet evaluate``; notebooks use them too."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .console import Logger, log_stderr
from .data import DATASETS, ClassSplit, DatasetSplits, ImageSplits, class_split, indices_of_classes, load_dataset
from .data.classes import CLASS_CHOICES
from .data.pairs import load_pair_images, read_pairs
from .data.transforms import combine_flip_embeddings, with_horizontal_flips
from .errors import ParameterError, UserError
from .evaluation import EvaluationResult, check_far, evaluate_embeddings, get_protocol
from .evaluation.pairs_folds import PairFoldsResult, evaluate_pair_folds, pair_distances
from .fileio import WriteError, atomic_path, atomic_write_text, output_folder, staged_files
from .inference.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, GalleryIndex
from .inference.model import existing_calibration, list_images, load_model, readable_images, write_calibration
from .models import embed_images
from .training.checkpoint import checkpoint_input_shape, load_checkpoint, model_from_checkpoint, weights_fingerprint
from .training.loop import resolve_device
from .training.runlog import read_records

SPLITS = ("train", "test")
FLIP_CHOICES = ("none", "mean", "concat")


@dataclass
class EmbeddedSplit:
    embeddings: torch.Tensor  # (N, D) float32
    labels: torch.Tensor  # (N,) int64
    config: TrainConfig | None = None
    class_names: tuple[str, ...] | None = None
    run_dir: Path | None = None
    fingerprint: str | None = None  # the checkpoint's weights_fingerprint, for its calibration file


def load_checkpoint_dataset(config: TrainConfig, data_path: str | None = None, download: bool = True) -> DatasetSplits:
    """The dataset a run was trained on, loaded with the run's image options (same size, channels and split).

    Args:
        config: the run's recorded config.
        data_path: for a registered dataset, where its files are (default: the run's); for a run on
            an image folder or CSV list, its new place if it moved since training.
        download: fetch a registered dataset's missing files.

    Returns:
        The dataset's splits.
    """
    if DATASETS.is_path(config.dataset):
        return load_dataset(data_path or config.dataset, None, download=download, options=config.image_options())
    return load_dataset(config.dataset, data_path or config.data_path, download=download)


def default_classes(state: dict, data: DatasetSplits) -> str:
    """``unseen`` when the run held classes out (or the data has test-only identities), else ``all``."""
    if state.get("split") or class_split(data) is not None:
        return "unseen"
    return "all"


def checkpoint_split(state: dict, data: DatasetSplits, source: str) -> ClassSplit | None:
    """The open-set split a checkpoint recorded, in the labels of ``data``; for older runs, the data's own."""
    if state.get("split"):
        return ClassSplit.from_dict(state["split"], data.class_names, source)
    return class_split(data)


@dataclass(frozen=True)
class RunImages:
    """Images of a run's dataset as the run saw them: its image options, its class split.

    Attributes:
        images: uint8 (N, C, H, W) or (N, H, W), in memory (a streamed dataset's files decoded).
        labels: (N,) int64.
        data: the whole dataset, reloaded.
        split: ``"train"`` or ``"test"``.
        classes: which classes were kept: ``"unseen"``, ``"seen"`` or ``"all"``.
        state: the checkpoint's contents.
    """

    images: torch.Tensor
    labels: torch.Tensor
    data: DatasetSplits
    split: str
    classes: str
    state: dict

    def describe(self) -> str:
        """``"the test split of faces (the unseen classes)"``."""
        return f"the {self.split} split of {self.data.name}" + (f" ({self.classes} classes)" if self.classes != "all" else "")


def _split_images(data: DatasetSplits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images in memory (a dataset over the cache budget is decoded here) and its labels."""
    labels = data.train_labels if split == "train" else data.test_labels
    if isinstance(data, ImageSplits) and data.streamed:
        files = data.train_files if split == "train" else data.test_files
        assert files is not None  # streamed datasets list both splits' files
        return files.load(), labels
    return (data.train_images if split == "train" else data.test_images), labels


def _check_test_identities_unchanged(state: dict, data: DatasetSplits, checkpoint: str, log: Logger) -> None:
    """Refuse a reloaded dataset whose test split now holds identities the run trained on; note other changes.

    A folder's identities are split by a seeded draw over its identity list, so adding or removing
    identities draws again: a training identity can land in the test split, where every evaluation
    would take it for unseen (and calibrate on it). Runs record their test identities (``test_classes``);
    older runs did not, and are not checked.
    """
    recorded = state.get("split") or {}
    if "test_classes" not in recorded:
        return
    then, trained = set(recorded["test_classes"]), set(recorded.get("train_classes", []))
    now = {data.class_names[label] for label in torch.unique(data.test_labels).tolist()}
    if trained_now_tested := sorted((now - then) & trained):
        raise UserError(
            f"{data.name} changed since {checkpoint} was trained: its identities were split again, and its test split now "
            f"holds {len(trained_now_tested)} {'identity' if len(trained_now_tested) == 1 else 'identities'} the run trained on "
            f"({_few(trained_now_tested)}), so no evaluation of it would "
            "be of unseen identities; put the folder back as it was, or give it train/ and test/ subfolders, whose split is fixed"
        )
    added, gone = sorted(now - then), sorted(then - now)
    changes = []
    if added:
        changes.append(f"{len(added)} new identities ({_few(added)}), unseen in training")
    if gone:
        changes.append(f"no longer {len(gone)} of the run's ({_few(gone)})")
    if changes:
        log(f"note: {data.name} changed since {checkpoint} was trained: its test split holds {'; '.join(changes)}")


def _few(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_run_images(
    checkpoint: str | Path,
    split: str = "test",
    data_path: str | None = None,
    download: bool = True,
    data: DatasetSplits | None = None,
    classes: str | None = None,
    state: dict | None = None,
    log: Logger = log_stderr,
) -> RunImages:
    """The ``split`` of the dataset a checkpoint was trained on, reloaded as the run loaded it.

    The one way every command (embed, evaluate, index, report) finds a run's data again: the
    run's image options (size, channels, split rules: :func:`load_checkpoint_dataset`), the path
    it recorded, and its class split.

    Args:
        checkpoint: a tripletnet checkpoint.
        split: ``"train"`` or ``"test"``.
        data_path: where the dataset is (see :func:`load_checkpoint_dataset`).
        download: fetch a registered dataset's missing files.
        data: an already loaded dataset to use instead.
        classes: ``"unseen"`` (the classes held out of training), ``"seen"``, ``"all"``; None: for the
            test split, unseen when the run held classes out, else all; for the train split, all.
        state: the checkpoint's contents when already loaded.
        log: where the choice of classes is reported.
    """
    if split not in SPLITS:
        raise ParameterError("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    if classes is not None and classes not in CLASS_CHOICES:
        raise ParameterError("classes", f"must be one of {', '.join(CLASS_CHOICES)}, got {classes!r}")
    state = state if state is not None else load_checkpoint(checkpoint)
    if data is None:
        config = TrainConfig.from_dict(state["config"], source=str(checkpoint))
        # A folder or CSV list is found again by the absolute path the run recorded (the run may have
        # been started from another working directory), unless data_path names its new place.
        recorded_path = (state.get("dataset_source") or {}).get("path")
        if DATASETS.is_path(config.dataset):
            # The images as the network takes them, whatever a moved or replaced folder now holds
            # (an RGB copy of a grey run's folder is converted, as verify and index convert files).
            channels, side, _ = checkpoint_input_shape(state)
            config = dataclasses.replace(config, channels=channels, image_size=side)
            where = data_path or recorded_path or config.dataset
            if data_path is None and not Path(where).exists():
                raise UserError(f"the images {checkpoint} was trained on were at {where}, which no longer exists: "
                                "give their new place with --data_path (data_path= in Python)")
        data = load_checkpoint_dataset(config, data_path or recorded_path, download)
        _check_test_identities_unchanged(state, data, str(checkpoint), log)
    images, labels = _split_images(data, split)
    # Held-out classes have no training images: the train split defaults to all of its classes.
    chosen = classes or (default_classes(state, data) if split == "test" else "all")
    if chosen != "all":
        class_split_ = checkpoint_split(state, data, str(checkpoint))
        if class_split_ is None:
            raise ParameterError("classes", f"{chosen} needs a run that held classes out (--train_classes or --holdout_classes); this one did not")
        keep = indices_of_classes(labels, class_split_.labels(chosen))
        if len(keep) == 0:
            raise UserError(f"{checkpoint}: the {split} split has no images of the {chosen} classes")
        images, labels = images[keep], labels[keep]
        log(f"{len(labels):,} {split} images of the {chosen} classes ({len(torch.unique(labels))} classes)")
    return RunImages(images, labels, data, split, chosen, state)


def embed_checkpoint(checkpoint: str | Path, split: str = "test", data_path: str | None = None, download: bool = True,
                     data: DatasetSplits | None = None, classes: str | None = None, log: Logger = log_stderr,
                     device: str = "auto") -> EmbeddedSplit:
    """Load a checkpoint and embed the ``split`` of the dataset it was trained on (see :func:`load_run_images`),
    on ``device`` (``auto``: cuda when present, as the all-pairs evaluation that follows uses it).

    Returns:
        The embeddings and labels of the chosen images.
    """
    state = load_checkpoint(checkpoint)
    model, config = model_from_checkpoint(state, source=str(checkpoint))
    run = load_run_images(checkpoint, split, data_path, download, data, classes, state=state, log=log)
    embeddings = embed_images(model.to(resolve_device(device)), run.images, progress=True)
    return EmbeddedSplit(embeddings, run.labels, config, run.data.class_names, Path(checkpoint).parent,
                         weights_fingerprint(state["model"]))


@dataclass(frozen=True)
class IndexedGallery:
    """What :func:`index_gallery` wrote: the index, its folder and what it holds in words."""

    index: GalleryIndex
    folder: Path
    description: str


def index_gallery(
    checkpoint: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    images: str | Path | None = None,
    data_path: str | None = None,
    kind: str = "exact",
    nlist: int | None = None,
    nprobe: int = IVF_NPROBE,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef_search: int = HNSW_EF_SEARCH,
    device: str = "auto",
    skip_bad_images: bool = False,
    log: Logger = log_stderr,
) -> IndexedGallery:
    """Embed a gallery with a checkpoint and write an index folder for :func:`search_gallery`.

    Args:
        checkpoint: a tripletnet checkpoint.
        out: the index folder to write (replaced if it is one).
        split: a split of the checkpoint's dataset (``"train"`` or ``"test"``, every class of it),
            reloaded as the run loaded it (:func:`load_run_images`); or
        images: a folder of image files (searched recursively; a subfolder's name is the label),
            prepared by the image pipeline. Give exactly one of the two.
        data_path: where the checkpoint's dataset is, if it moved (with ``split``).
        kind: ``"exact"``, ``"ivf"`` or ``"hnsw"``; nlist, nprobe, hnsw_m, ef_construction, ef_search: their settings.
        device: where the gallery is embedded (``auto``: cuda when present); the faiss index is
            built and searched on the CPU (faiss-cpu).
        skip_bad_images: with ``images``, leave out (and count) files that do not decode instead of
            stopping at the first.
        log: where notes go.

    Returns:
        The index, where it was written and what it holds.
    """
    if (split is None) == (images is None):
        raise ParameterError("split", "or images: give exactly one", related=("images",))
    state = load_checkpoint(checkpoint)
    model = load_model(checkpoint, log=log, device=device, state=state)
    labels: list[Any] | None
    paths: list[str] | None
    if split is not None:
        run = load_run_images(checkpoint, split, data_path, model.config.download, classes="all", state=state, log=log)
        labels, paths = [run.data.class_names[int(t)] for t in run.labels], None
        embeddings = model.embed(run.images)
        what = run.describe()
    else:
        root = Path(images)  # type: ignore[arg-type]
        files = list_images(root)
        if skip_bad_images:
            files = readable_images(files, log)
        relative = [f.relative_to(root).parts for f in files]
        labels = [parts[0] if len(parts) > 1 else None for parts in relative]
        labels = labels if any(label is not None for label in labels) else None
        paths = [str(f) for f in files]
        embeddings = model.embed(files)
        what = f"{len(files):,} images in {root}"
    index = GalleryIndex.build(embeddings, fingerprint=model.fingerprint, labels=labels, paths=paths, kind=kind,
                               checkpoint=str(Path(checkpoint).resolve()), nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                               ef_construction=ef_construction, ef_search=ef_search)
    return IndexedGallery(index, index.save(out), what)


def search_gallery(
    index_folder: str | Path,
    queries: str | Path | Sequence[str | Path],
    *,
    k: int = 5,
    checkpoint: str | Path | None = None,
    skip_bad_images: bool = False,
    log: Logger = log_stderr,
) -> list[dict[str, Any]]:
    """The ``k`` nearest gallery items of each query image, by the checkpoint the index was built with.

    Args:
        index_folder: a folder written by :func:`index_gallery`.
        queries: a folder of images (searched recursively), or a list of image files.
        k: neighbours per query.
        checkpoint: the checkpoint, if it moved since the index was built (it must hold the same weights).
        skip_bad_images: leave out (and count) query files that do not decode instead of stopping at the first.
        log: where notes go.

    Returns:
        Per query ``{"query": path, "neighbours": [{"rank", "distance", "index", and "label"/"path" when known}]}``.
    """
    index = GalleryIndex.load(index_folder)
    source = checkpoint or index.checkpoint
    if not source:
        raise ParameterError("checkpoint", f"is needed: index {index_folder} does not record its checkpoint")
    model = load_model(source, log=log)
    index.check_fingerprint(model.fingerprint, index_folder)
    files = list_images(queries) if isinstance(queries, (str, Path)) else [Path(q) for q in queries]
    if skip_bad_images:
        files = readable_images(files, log)
    distances, positions = index.search(model.embed(files), k)
    return [
        {"query": str(f), "neighbours": [{"rank": rank, "distance": float(d), **index.item(int(p))}
                                         for rank, (d, p) in enumerate(zip(ds, ps, strict=True), start=1)]}
        for f, ds, ps in zip(files, distances, positions, strict=True)
    ]


def save_embeddings(path: str | Path, embeddings: torch.Tensor, labels: torch.Tensor) -> Path:
    """Write ``embeddings`` (N x D float32) and ``labels`` (N int64) as an .npz, atomically.

    Raises:
        ParameterError: what :func:`load_embeddings` would refuse (shapes that do not pair up, no
            values, non-finite ones), so that no file is written that cannot be read back.
    """
    if not isinstance(embeddings, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ParameterError("embeddings" if not isinstance(embeddings, torch.Tensor) else "labels", "must be a torch.Tensor")
    if embeddings.dim() != 2 or embeddings.shape[1] == 0:
        raise ParameterError("embeddings", f"must be N x D with D > 0, got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or len(labels) != len(embeddings):
        raise ParameterError("labels", f"must hold one label per embedding ({len(embeddings)}), got shape {tuple(labels.shape)}")
    if embeddings.is_floating_point() and not bool(torch.isfinite(embeddings).all()):
        raise ParameterError("embeddings", "must be finite (they hold NaN or infinity)")
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=embeddings.detach().to("cpu", torch.float32).numpy(),
             labels=labels.detach().to("cpu", torch.int64).numpy())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def load_embeddings(path: str | Path) -> EmbeddedSplit:
    """Read an .npz written by ``tripletnet embed`` (no pickles are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"embeddings file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # an .npy: one bare array, no labels beside it
            raise UserError(f"{path} is a single .npy array; give an .npz with arrays embeddings and labels "
                            "(what 'tripletnet embed' writes)")
        with loaded as npz:
            missing = [name for name in ("embeddings", "labels") if name not in npz.files]
            if missing:
                raise UserError(f"{path} lacks the array(s) {', '.join(missing)} (found: {', '.join(npz.files) or 'none'})")
            embeddings, labels = npz["embeddings"], npz["labels"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from None
    if embeddings.ndim != 2 or labels.ndim != 1 or len(embeddings) != len(labels):
        raise UserError(f"{path}: expected embeddings (N, D) and labels (N,), got {embeddings.shape} and {labels.shape}")
    if embeddings.shape[1] == 0:
        raise UserError(f"{path}: the embeddings have dimension 0 ({len(embeddings)} rows of no values)")
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
    classes: str | None = None,
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
        classes: with a checkpoint, which test classes: unseen, seen or all (None: unseen when
            the run held classes out, else all).
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
    if classes is not None and checkpoint is None:
        raise ParameterError("classes", "applies to a checkpoint (an embeddings file holds the images it holds)", related=("checkpoint",))
    # An output folder that cannot exist is refused before minutes of work; one this call created is
    # removed again if it fails before writing into it.
    with output_folder(out_dir) if out_dir is not None else contextlib.nullcontext():
        split = embed_checkpoint(checkpoint, "test", data_path, classes=classes, log=log) if checkpoint else load_embeddings(embeddings_file)  # type: ignore[arg-type]
        if checkpoint is None:
            _note_unnormalised(split.embeddings, log)
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


def _note_unnormalised(embeddings: torch.Tensor, log: Logger) -> None:
    """Say so when an embeddings file is not on the unit sphere, where tripletnet's thresholds live."""
    if len(embeddings) == 0:
        return
    norms = embeddings.norm(dim=1)
    low, high = float(norms.min()), float(norms.max())
    if low < 1 - 1e-3 or high > 1 + 1e-3:
        log(f"note: these embeddings are not L2-normalised (norms {low:.3g} to {high:.3g}): the thresholds below are "
            "distances on their own scale, not the [0, 2] of unit vectors that 'tripletnet verify' takes")


def _calibrate(checkpoint: Path, result: EvaluationResult, split: EmbeddedSplit, data_path: str | None, log: Logger) -> None:
    """Write the threshold at the evaluated FAR beside the checkpoint, with what it was calibrated on.

    Later ``verify`` calls use it. Skipped when the data could not resolve the FAR; a folder that is
    not writable (a shared model) costs a note, not the evaluation. A calibration of another
    protocol that it replaces is named, with its threshold, so that verify's change is never silent.
    """
    verification = result.verification
    if verification.val is None or not math.isfinite(verification.threshold):
        # Said, or verify's advice (calibrate with evaluate) would send the user round in a circle.
        smallest = 1 / max(verification.n_negative, 1)  # one false accept among the negatives
        digits = 10.0 ** (math.floor(math.log10(smallest)) - 1)
        log(f"note: no threshold was saved for 'tripletnet verify': {verification.n_negative:,} negative pairs cannot "
            f"resolve FAR {verification.far:g}; give --far {math.ceil(smallest / digits) * digits:.2g} or above, or "
            "evaluate on more test images")
        return
    data = {
        "dataset": split.config.dataset if split.config else None, "data_path": data_path, "split": "test",
        "images": len(split.labels), "pairs": verification.n_pairs, "protocol": verification.protocol,
    }
    previous = existing_calibration(checkpoint)
    try:
        path = write_calibration(checkpoint, threshold=verification.threshold, far=verification.far, data=data,
                                 far_reached=verification.far_reached, val=verification.val, fingerprint=split.fingerprint)
    except UserError as exc:
        log(f"note: the threshold was not saved for later verification ({exc})")
        return
    log(f"threshold {verification.threshold:.4f} at FAR {verification.far:g} saved for 'tripletnet verify' in {path}")
    replaced = previous.data.get("protocol") if previous is not None else None
    if previous is not None and replaced != verification.protocol:
        log(f"note: it replaces the calibration of protocol {replaced or 'unrecorded'} ({previous.describe()}): 'tripletnet "
            f"verify' now uses the {verification.protocol} threshold; run 'tripletnet evaluate --protocol {replaced}' to go back"
            if replaced else
            f"note: it replaces an earlier calibration ({previous.describe()}): 'tripletnet verify' now uses this one")


# Every file write_report may write into a report folder.
REPORT_FILES = ("metrics.json", "curves.json", "distances.png", "roc.png", "tsne.png", "losses.png", "epoch_metrics.png")


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

    # Written beside the folder's files and moved in by renames: a failure leaves the old report whole.
    with staged_files(out) as stage:
        written = ["metrics.json", "curves.json", "distances.png", "roc.png"]
        if tsne:
            from .tsne import tsne_2d

            log(f"t-SNE of {len(split.embeddings):,} embeddings ...")
            points, seconds = tsne_2d(split.embeddings.numpy(), seed=seed)
            result.tsne_seconds = seconds
            plots.plot_embedding_2d(points, split.labels.numpy(), stage / "tsne.png", class_names=split.class_names,
                                    title=f"t-SNE of {len(points):,} test embeddings")  # its run time is in metrics.json
            written.append("tsne.png")
        atomic_write_text(stage / "metrics.json", json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
        atomic_write_text(stage / "curves.json", json.dumps(result.curves(), allow_nan=False) + "\n")
        verification = result.verification
        histogram = verification.histogram
        plots.plot_distance_histograms_from_counts(
            np.asarray(histogram["bin_edges"]), np.asarray(histogram["positive"]), np.asarray(histogram["negative"]),
            verification.threshold if math.isfinite(verification.threshold) else None,
            stage / "distances.png", far=verification.far,
            title=f"Pair distances ({verification.protocol}, {verification.n_pairs:,} pairs)",
            pos_summary=f"{verification.positive_mean:.3f} ± {verification.positive_std:.3f}",
            neg_summary=f"{verification.negative_mean:.3f} ± {verification.negative_std:.3f}",
        )
        # A FAR the pairs cannot resolve has no VAL: no dot is drawn for it.
        marks = {float(key): val for key, val in verification.val_at_far.items() if val is not None}
        plots.plot_roc(np.asarray(verification.roc_far), np.asarray(verification.roc_val), stage / "roc.png",
                       auc=verification.auc, eer=verification.eer, marks=marks)
        history_file = split.run_dir / "metrics.jsonl" if split.run_dir else None
        if history_file and history_file.is_file():
            history = read_records(history_file)
            if history:
                plots.plot_losses(history, stage / "losses.png")
                written.append("losses.png")
                try:
                    plots.plot_epoch_metrics(history, stage / "epoch_metrics.png")
                    written.append("epoch_metrics.png")
                except ValueError:
                    pass  # a run trained with --eval_every 0 has no per-epoch metrics to draw
    # The folder holds this evaluation's report alone: a figure this run did not draw (no t-SNE now, no
    # run history for an embeddings file) would otherwise sit beside it from an earlier one.
    for name in set(REPORT_FILES) - set(written):
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as exc:
            raise WriteError(out / name, exc) from None
    log(f"report written to {out}/: {', '.join(written)}")


def evaluate_pairs_file(
    checkpoint: str | Path,
    pairs: str | Path,
    images: str | Path | None = None,
    *,
    flip: str = "none",
    far: float = 1e-3,
    log: Logger = log_stderr,
) -> PairFoldsResult:
    """Verify the pairs of a pairs file with a checkpoint's model, by the file's folds (LFW's 10-fold protocol).

    Args:
        checkpoint: a tripletnet checkpoint; its input size and channels decide how images are read.
        pairs: an LFW ``pairs.txt`` or a CSV pairs file (see :mod:`tripletnet.data.pairs`).
        images: the folder image names are relative to (default: the pairs file's folder).
        flip: horizontal-flip test-time augmentation: ``"mean"``, ``"concat"`` or ``"none"``.
        far: the target false-accept rate for VAL.
        log: where progress lines go.

    Returns:
        Accuracy and VAL (mean and std over the folds), ROC AUC and EER over all pairs.
    """
    check_far(far, zero_allowed=False)
    if flip not in FLIP_CHOICES:
        raise ParameterError("flip", f"must be one of {', '.join(FLIP_CHOICES)}, got {flip!r}")
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint), source=str(checkpoint))
    channels, height, _width = model.input_shape
    pair_list = read_pairs(pairs, images)
    if pair_list.n_folds < 2:  # said before any image is read, in the file's terms
        raise UserError(f"{pairs} holds {pair_list.n_folds} fold: each fold's threshold is chosen on the other folds, so a pairs "
                        "file needs at least two ('tripletnet pairs --folds N' writes such a file)")
    pictures, index_a, index_b = load_pair_images(pair_list, height, channels, log)
    if flip == "none":
        embeddings = embed_images(model, pictures, progress=True)
    else:
        embeddings = combine_flip_embeddings(embed_images(model, with_horizontal_flips(pictures), progress=True), flip)  # type: ignore[arg-type]
    distances = pair_distances(embeddings, index_a, index_b)
    return evaluate_pair_folds(distances, pair_list.same, pair_list.folds, far=far)


def format_pair_folds(result: PairFoldsResult, source: str) -> str:
    """A short table of a pairs-file evaluation."""
    named = [
        ("pairs", f"{result.n_pairs:,} ({result.n_matched:,} matched, {result.n_mismatched:,} mismatched), {result.n_folds} folds"),
        ("accuracy", f"{result.accuracy_mean:.4f} ± {result.accuracy_std:.4f}  (threshold chosen on the other folds)"),
        (f"VAL @ FAR {result.far_target:g}", f"{result.val_mean:.4f} ± {result.val_std:.4f}  (FAR reached {result.far_mean:.4g})"),
        ("ROC AUC", f"{result.auc:.4f}"),
        ("EER", f"{result.eer:.4f}"),
    ]
    width = max(len(name) for name, _ in named)
    rows = [f"pairs-file verification: {source}"] + [f"  {name:<{width}}  {value}" for name, value in named]
    if result.warning:
        rows.append(f"  warning: {result.warning}")
    return "\n".join(rows)
