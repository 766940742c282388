"""What a run trains, validates and evaluates on, open set or closed set, decided once before the first epoch.

Closed set (the built-in datasets without ``train_classes``/``holdout_classes``): a stratified
subset of the training split trains, fixed random test triplets give the validation loss, and a
stratified subset of the test split is the per-epoch evaluation, exactly as tripletnet always did.

Open set (a :class:`~tripletnet.data.classes.ClassSplit`): only the training classes' training
images are used for training; the validation triplets come from a stratified slice of those images
carved off before the training subset is drawn (never from the test classes); the per-epoch
evaluation embeds the held-out classes' test images, and the training classes' test images (when
the dataset has any) give the ``seen_`` figures beside them.
With ``selection_classes``, a few training classes (drawn from the seed) leave training too:
their training images give the ``select_`` figures, by which the loop keeps its best epoch.

An image folder or CSV list over the ``--cache_images`` budget stays on disk
(:attr:`~tripletnet.data.ImageSplits.streamed`): the training images stay files, read for every
batch (:func:`batch_source`), while the few images evaluated every epoch (the validation triplets'
and the evaluation subsets) are decoded into memory once here. The indices drawn are the same
either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..console import Logger
from ..data import DATASETS, ClassSplit, DatasetSplits, ImageSplits, class_split, indices_of_classes, stratified_subset
from ..data.folder import ImageFiles
from ..data.loading import BatchSource, InMemoryBatches, StreamedBatches
from ..errors import ParameterError, UserError
from ..models import input_shape_of
from ..sampler import ClassBalancedBatchSampler
from .validation import draw_validation_triplets

VAL_CARVE_FRACTION = 0.1  # share of the training classes' images set aside for the validation triplets ...
VAL_CARVE_MAX = 1000  # ... at most this many ...
VAL_PER_CLASS_MIN = 2  # ... and at least two per class, so every class can give an anchor and a positive


@dataclass
class RunData:
    """The tensors a run reads every epoch (uint8 images on the CPU) and what its checkpoint records about them."""

    train_images: torch.Tensor | ImageFiles  # files when the dataset is streamed (over the cache budget)
    train_labels: torch.Tensor
    val_images: torch.Tensor  # the images the validation triplets index
    val_triplets: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    seen_eval_images: torch.Tensor | None  # open set: the training classes' test images; None otherwise
    seen_eval_labels: torch.Tensor | None
    split: ClassSplit | None
    records: dict[str, Any]  # checkpoint fields: input, dataset_source, image_counts and, open set, split
    # --selection_classes: training images of training classes kept out of training, for choosing best.pt
    select_images: torch.Tensor | None = None
    select_labels: torch.Tensor | None = None


@dataclass(frozen=True)
class _Images:
    """A split's images, held (a tensor) or on disk (files): indexed alike, decoded on :meth:`load`."""

    held: torch.Tensor | None
    files: ImageFiles | None

    @classmethod
    def of(cls, data: DatasetSplits, split: str) -> _Images:
        if isinstance(data, ImageSplits) and data.streamed:
            return cls(None, data.train_files if split == "train" else data.test_files)
        return cls(data.train_images if split == "train" else data.test_images, None)

    def subset(self, indices: torch.Tensor) -> _Images:
        """The images at ``indices``, held or on disk as these are."""
        if self.held is not None:
            return _Images(self.held[indices], None)
        assert self.files is not None
        return _Images(None, self.files.subset(indices))

    def take(self, indices: torch.Tensor) -> torch.Tensor | ImageFiles:
        """The images at ``indices``: a tensor, or still files."""
        taken = self.subset(indices)
        return taken.held if taken.held is not None else taken.files  # type: ignore[return-value]

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at ``indices``, decoded into memory."""
        taken = self.take(indices)
        return taken.load() if isinstance(taken, ImageFiles) else taken


def _validation(images: _Images, triplets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images the validation triplets index, and the triplets: all images held, or only the triplets' own decoded
    (in triplet order, so the validation loss embeds the very same tensor)."""
    if images.held is not None:
        return images.held, triplets
    return images.load(triplets.flatten()), torch.arange(triplets.numel()).view(triplets.shape)


def batch_source(run_data: RunData, sampler: ClassBalancedBatchSampler, config: TrainConfig, device: torch.device,
                 log: Logger) -> BatchSource:
    """The training batches of a run: indexed from memory, or decoded from disk by ``config.num_workers`` processes.

    Args:
        run_data: the run's data (its training images held or on disk).
        sampler: the P x K sampler over ``run_data.train_labels``.
        config: num_workers and skip_bad_images.
        device: where batches go.
        log: where streaming is announced and skipped images are counted.

    Returns:
        A :class:`~tripletnet.data.loading.BatchSource`.
    """
    if isinstance(run_data.train_images, torch.Tensor):
        return InMemoryBatches(run_data.train_images, run_data.train_labels, sampler, device)
    workers = f"{config.num_workers} worker processes" if config.num_workers else "the main process (--num_workers 0)"
    log(f"training images are decoded from disk for every batch by {workers}")
    return StreamedBatches(run_data.train_images, run_data.train_labels, sampler, device, config.num_workers,
                           config.skip_bad_images, log)


def train_input_shape(run_data: RunData) -> tuple[int, int, int]:
    """(channels, height, width) of the training images, held or on disk."""
    images = run_data.train_images
    return images.input_shape if isinstance(images, ImageFiles) else input_shape_of(images)


def _eval_subset(labels: torch.Tensor, eval_images: int, seed: int) -> torch.Tensor:
    n_eval = len(labels) if eval_images == 0 else min(eval_images, len(labels))
    return stratified_subset(labels, n_eval, seed)


def input_record(data: DatasetSplits) -> dict[str, Any]:
    """channels, image_size, mean and std of the network's inputs: the training split's for image files, 0.5 for IDX sets."""
    if isinstance(data, ImageSplits):
        return {"channels": data.channels, "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std)}
    channels = 1 if data.train_images.dim() == 3 else int(data.train_images.shape[1])
    size = int(data.train_images.shape[-1])
    return {"channels": channels, "image_size": size, "mean": [0.5] * channels, "std": [0.5] * channels}


def dataset_source(config: TrainConfig, data: DatasetSplits) -> dict[str, Any]:
    """How to find the dataset again: its name, or for a folder/CSV list its absolute path and kind."""
    if not DATASETS.is_path(config.dataset):
        return {"dataset": config.dataset}
    root = str(data.root) if isinstance(data, ImageSplits) else config.dataset
    return {"dataset": config.dataset, "path": str(Path(config.dataset).expanduser().absolute()), "root": root}


def prepare_run_data(config: TrainConfig, data: DatasetSplits, log: Logger) -> RunData:
    """Subsets, validation triplets and evaluation images of a run (see the module doc).

    Args:
        config: the run's settings (num_images, seed, num_val_triplets, eval_images, class specs).
        data: the loaded dataset.
        log: where a capped image count is reported.

    Returns:
        The run's data.

    Raises:
        ParameterError: a bad class spec for this dataset.
        UserError: too few images for a batch or for validation triplets.
    """
    split = class_split(data, config.train_classes, config.holdout_classes)
    records: dict[str, Any] = {"input": input_record(data), "dataset_source": dataset_source(config, data),
                               # so that a resume can say when the images changed under the run (a folder edited)
                               "image_counts": {"train": len(data.train_labels), "test": len(data.test_labels)}}
    train, test = _Images.of(data, "train"), _Images.of(data, "test")
    if split is None and config.selection_classes:
        raise ParameterError("selection_classes", "needs an open-set run (--train_classes or --holdout_classes, or a folder "
                                                  "whose test identities differ from its training ones): in a closed set "
                                                  "every class is a test class")
    if split is None:
        # Closed set: every draw exactly as before open-set splits existed (MNIST runs replay bit for bit).
        n_train = _capped(config, len(data.train_labels), log) if DATASETS.is_path(config.dataset) else config.num_images
        subset = stratified_subset(data.train_labels, n_train, config.seed)
        eval_subset = _eval_subset(data.test_labels, config.eval_images, config.seed)
        _check_evaluable(config, data, data.test_labels[eval_subset])
        val_images, val_triplets = _validation(
            test, draw_validation_triplets(data.test_labels, config.num_val_triplets, config.seed))
        return RunData(
            train_images=train.take(subset), train_labels=data.train_labels[subset],
            val_images=val_images, val_triplets=val_triplets,
            eval_images=test.load(eval_subset), eval_labels=data.test_labels[eval_subset],
            seen_eval_images=None, seen_eval_labels=None, split=None, records=records,
        )
    if config.selection_classes:
        split, selection = _without_selection_classes(split, config)
    records["split"] = split.to_dict()
    # The identities of the test split as the run saw it: a folder whose identities are split again after a change
    # (more identities, a new draw) can put a trained identity there, which evaluation must not take for unseen.
    records["split"]["test_classes"] = [split.class_names[label] for label in torch.unique(data.test_labels).tolist()]
    pool = indices_of_classes(data.train_labels, split.train)
    pool_labels = data.train_labels[pool]
    # Validation images come from classes of two images or more: a single-image identity stays in training,
    # where it serves as a negative (as the folder loader says), and asks for no validation images.
    classes, counts = torch.unique(pool_labels, return_counts=True)
    several = classes[counts >= VAL_PER_CLASS_MIN]
    carvable = torch.nonzero(torch.isin(pool_labels, several)).flatten()  # positions in pool
    n_val = max(VAL_PER_CLASS_MIN * len(several), min(VAL_CARVE_MAX, round(len(carvable) * VAL_CARVE_FRACTION)))
    if n_val >= len(carvable):
        raise UserError(f"{data.name}: the training classes with two images or more hold {len(carvable)} images, too few to "
                        f"set {n_val} aside for validation and train on the rest; add images per identity")
    carved = torch.zeros(len(pool), dtype=torch.bool)
    carved[carvable[stratified_subset(pool_labels[carvable], n_val, config.seed)]] = True
    val_index, rest = pool[carved], pool[~carved]
    val_labels = data.train_labels[val_index]
    if not _pairs_both_ways(val_labels):
        raise UserError(f"{data.name}: the validation images set aside cannot form a triplet (two classes, one with two images); "
                        "add images per identity")
    carved_note = f" (of the training classes' {len(pool)}, {len(val_index)} are set aside for validation)"
    subset = rest[stratified_subset(data.train_labels[rest], _capped(config, len(rest), log, carved_note), config.seed)]
    unseen = indices_of_classes(data.test_labels, split.holdout)
    unseen = unseen[_eval_subset(data.test_labels[unseen], config.eval_images, config.seed)]
    _check_evaluable(config, data, data.test_labels[unseen])
    seen = indices_of_classes(data.test_labels, split.train)
    if len(seen):
        seen = seen[_eval_subset(data.test_labels[seen], config.eval_images, config.seed)]
    names = split.class_names
    log(
        f"open set: training on {len(split.train)} classes ({_listed(names, split.train)}), {len(subset)} training images and "
        f"{len(val_index)} set aside for validation; evaluating on {len(unseen)} test images of "
        f"{len(split.holdout)} held-out classes "
        f"({_listed(names, split.holdout)})" + (f" and {len(seen)} of the training classes" if len(seen) else "")
    )
    val_images, val_triplets = _validation(
        train.subset(val_index), draw_validation_triplets(val_labels, config.num_val_triplets, config.seed))
    chosen = None
    if config.selection_classes:
        chosen = indices_of_classes(data.train_labels, selection)
        chosen = chosen[_eval_subset(data.train_labels[chosen], config.eval_images, config.seed)]
        records["split"]["selection_classes"] = [names[label] for label in selection]
        log(f"model selection: {len(chosen)} training images of {len(selection)} classes kept out of training "
            f"({_listed(names, selection)}); the epoch with their best VAL@1e-3 is saved as best.pt")
    return RunData(
        train_images=train.take(subset), train_labels=data.train_labels[subset],
        val_images=val_images, val_triplets=val_triplets,
        eval_images=test.load(unseen), eval_labels=data.test_labels[unseen],
        seen_eval_images=test.load(seen) if len(seen) else None,
        seen_eval_labels=data.test_labels[seen] if len(seen) else None,
        split=split, records=records,
        select_images=train.load(chosen) if chosen is not None else None,
        select_labels=data.train_labels[chosen] if chosen is not None else None,
    )


def _pairs_both_ways(labels: torch.Tensor) -> bool:
    """Whether ``labels`` hold a positive pair (two images of one identity) and a negative one (two identities):
    what a triplet and an all-pairs evaluation both need."""
    counts = torch.unique(labels, return_counts=True)[1]
    return len(counts) >= 2 and bool((counts >= 2).any())


def _check_evaluable(config: TrainConfig, data: DatasetSplits, eval_labels: torch.Tensor) -> None:
    """Refuse, before the first epoch, a run whose per-epoch evaluation would find no pairs to score.

    All-pairs verification needs a positive pair (two images of one identity) and a negative one; a
    test split of one image per identity (a glyph build with one test font) failed after the first
    epoch's training, and left a run folder that a rerun was refused.
    """
    if not config.eval_every:
        return
    if not _pairs_both_ways(eval_labels):
        raise UserError(
            f"{data.name}: the {len(eval_labels):,} test images evaluated after each epoch hold "
            + ("a single identity" if len(torch.unique(eval_labels)) < 2 else "no two images of one identity")
            + ", so the evaluation has no positive and negative pairs to score: add test images per identity "
            "(--eval_images 0 takes them all), or train without it (--eval_every 0)")


def _without_selection_classes(split: ClassSplit, config: TrainConfig) -> tuple[ClassSplit, tuple[int, ...]]:
    """The split with ``config.selection_classes`` training classes (drawn from the seed) taken out of
    training, and those classes: identities the model never trains on, to choose its best epoch by
    without looking at the test classes."""
    kept = len(split.train) - config.selection_classes
    if kept < 2:
        raise ParameterError("selection_classes",
                             f"is {config.selection_classes}, but the run has {len(split.train)} training classes: "
                             "at least two must remain to train on")
    order = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(config.seed)).tolist()
    selection = tuple(sorted(split.train[i] for i in order[:config.selection_classes]))
    train = tuple(label for label in split.train if label not in selection)
    return ClassSplit(train, split.holdout, split.class_names), selection


def _capped(config: TrainConfig, available: int, log: Logger, why: str = "") -> int:
    """``num_images``, or all ``available`` images when it asks for more (said once); ``why`` says how
    ``available`` differs from the count the dataset's first line gave."""
    if config.num_images <= available:
        return config.num_images
    if available < config.batch_size:
        raise UserError(f"only {available} training images are available{why}, fewer than --batch_size "
                        f"({config.batch_size}): give a smaller --batch_size")
    log(f"--num_images {config.num_images} is more than the {available} training images available{why}: "
        f"using all {available}")
    return available


def _listed(names: tuple[str, ...], labels: tuple[int, ...], shown: int = 6) -> str:
    text = ", ".join(names[label] for label in labels[:shown])
    return text + (f", ... {len(labels) - shown} more" if len(labels) > shown else "")
