"""Data: MNIST-style IDX datasets and image folders, held in memory as uint8 tensors."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .datasets import DATA_ENV, DATASET_SPECS, DatasetSplits, load_registered, resolve_data_root
from .folder import load_image_folder
from .idx import read_idx
from .subset import stratified_subset


def load_dataset(name: str, data_path: str | None = None, download: bool = True) -> DatasetSplits:
    """Load a registered dataset (``mnist``, ``fashion-mnist``) or, given a folder, an image folder.

    A registered name wins over a folder of the same name; write ``./mnist`` to mean the folder.
    """
    if name in DATASET_SPECS:
        return load_registered(DATASET_SPECS[name], data_path, download)
    if Path(name).expanduser().is_dir():
        return load_image_folder(name)
    raise UserError(
        f"unknown dataset {name!r}: choose one of {', '.join(DATASET_SPECS)}, or give a folder with one subfolder of images per class"
    )


__all__ = ["DATA_ENV", "DATASET_SPECS", "DatasetSplits", "load_dataset", "load_image_folder", "read_idx", "resolve_data_root", "stratified_subset"]
