"""Data: MNIST-style IDX datasets and image folders, as uint8 tensors in memory or, over a budget, on disk (:mod:`.loading`).

The names below are imported from their modules when first used, so that importing one data module
(the CLI imports the registry for its help) does not import torch with the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .classes import ClassSplit, class_split, indices_of_classes, parse_class_spec
    from .datasets import DATA_ENV, DATASET_SPECS, DATASETS, DatasetRegistry, PathKind, load_dataset, resolve_data_root
    from .folder import load_image_folder
    from .idx import read_idx
    from .subset import stratified_subset
    from .types import DatasetSplits, ImageOptions, ImageSplits

_MODULE_OF = {
    "ClassSplit": "classes", "class_split": "classes", "indices_of_classes": "classes", "parse_class_spec": "classes",
    "DATA_ENV": "datasets", "DATASET_SPECS": "datasets", "DATASETS": "datasets", "DatasetRegistry": "datasets",
    "PathKind": "datasets", "load_dataset": "datasets", "resolve_data_root": "datasets",
    "load_image_folder": "folder", "read_idx": "idx", "stratified_subset": "subset",
    "DatasetSplits": "types", "ImageOptions": "types", "ImageSplits": "types",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


__all__ = [
    "DATASETS", "DATASET_SPECS", "DATA_ENV", "ClassSplit", "DatasetRegistry", "DatasetSplits", "ImageOptions",
    "ImageSplits", "PathKind", "class_split", "indices_of_classes", "load_dataset", "load_image_folder", "parse_class_spec",
    "read_idx", "resolve_data_root", "stratified_subset",
]
