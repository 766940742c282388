"""Any folder of labelled images: one subfolder per class, read with Pillow as 28x28 grayscale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from .datasets import DatasetSplits

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
SIZE = 28
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the same folder always splits the same way


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            gray = img.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None


def _read_classes(root: Path, class_names: list[str], allow_empty_class: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(class_names):
        files = _image_files(root / name)
        if not files and not allow_empty_class:
            raise UserError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images.extend(_read_image(path) for path in files)
        labels.extend([label] * len(files))
    if not images:
        raise UserError(f"{root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in its class subfolders)")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def _classes_of(folder: Path) -> list[str]:
    names = _class_folders(folder)
    if len(names) < 2:
        raise UserError(f"{folder} needs at least two class subfolders (one per class, holding its images), found {len(names)}")
    return names


def _stratified_split(labels: torch.Tensor, n_classes: int, test_fraction: float, seed: int) -> torch.Tensor:
    """A boolean test mask: ``test_fraction`` of each class, at least one image of classes with two or more."""
    gen = torch.Generator().manual_seed(seed)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for label in range(n_classes):
        members = torch.nonzero(labels == label).flatten()
        n_test = max(1, round(len(members) * test_fraction)) if len(members) > 1 else 0
        is_test[members[torch.randperm(len(members), generator=gen)[:n_test]]] = True
    return is_test


def load_image_folder(root: str | Path, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> DatasetSplits:
    """Load ``root/<class>/<image>``, or ``root/train/<class>/...`` and ``root/test/<class>/...`` if both exist.

    Without explicit splits, a stratified ``test_fraction`` of each class becomes the test split,
    drawn from a fixed ``seed`` so the split is the same on every run.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        present, absent = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise UserError(f"{root} has {present.name}/ but no {absent.name}/: give both splits, or one subfolder per class")
    if train_dir.is_dir():
        class_names = _classes_of(train_dir)
        unknown = sorted(set(_class_folders(test_dir)) - set(class_names))
        if unknown:
            raise UserError(f"{test_dir} has classes missing from {train_dir}: {', '.join(unknown)}")
        train_images, train_labels = _read_classes(train_dir, class_names, allow_empty_class=False)
        test_images, test_labels = _read_classes(test_dir, class_names, allow_empty_class=True)
    else:
        class_names = _classes_of(root)
        images, labels = _read_classes(root, class_names, allow_empty_class=False)
        is_test = _stratified_split(labels, len(class_names), test_fraction, seed)
        train_images, train_labels = images[~is_test], labels[~is_test]
        test_images, test_labels = images[is_test], labels[is_test]
    return DatasetSplits(train_images, train_labels, test_images, test_labels, tuple(class_names), root.resolve().name)
