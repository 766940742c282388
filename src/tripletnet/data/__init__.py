"""Data: MNIST-style IDX datasets and image folders, as uint8 tensors in memory or, over a budget, on disk (:mod:`.loading`)."""

from __future__ import annotations

from .classes import ClassSplit, class_split, indices_of_classes, parse_class_spec
from .datasets import DATA_ENV, DATASET_SPECS, DATASETS, DatasetRegistry, PathKind, resolve_data_root
from .folder import load_image_folder
from .idx import read_idx
from .subset import stratified_subset
from .types import DatasetSplits, ImageOptions, ImageSplits


def load_dataset(
    dataset: str, data_path: str | None = None, download: bool = True, options: ImageOptions | None = None
) -> DatasetSplits:
    """Load a registered dataset (``mnist``, ``fashion-mnist``) or a dataset given by its path (an image folder).

    A registered name wins over a folder of the same name; write ``./mnist`` to mean the folder.

    Args:
        dataset: a name or path that :data:`DATASETS` knows.
        data_path: where registered datasets' files are (default ``$TRIPLETNET_DATA``, else ``./data/``).
        download: fetch a registered dataset's missing files from its mirrors.
        options: image size, channels and split rules for image folders and CSV lists.

    Returns:
        The train and test splits in memory.

    Raises:
        ParameterError: ``dataset`` is neither a registered name nor a path of a registered kind.
        UserError: the dataset's files are missing, damaged or unreadable.
    """
    return DATASETS.load(dataset, data_path, download, options)


__all__ = [
    "DATASETS", "DATASET_SPECS", "DATA_ENV", "ClassSplit", "DatasetRegistry", "DatasetSplits", "ImageOptions",
    "ImageSplits", "PathKind", "class_split", "indices_of_classes", "load_dataset", "load_image_folder", "parse_class_spec",
    "read_idx", "resolve_data_root", "stratified_subset",
]
