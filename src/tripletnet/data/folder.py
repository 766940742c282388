"""Any folder of labelled images: one subfolder per class, read with Pillow as 28x28 grayscale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from .datasets import DatasetSplits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
SIZE = 28


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_classes(root: Path, class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(class_names):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        for path in files:
            try:
                with Image.open(path) as img:
                    gray = img.convert("L").resize((SIZE, SIZE), Image.BILINEAR)
                    images.append(np.asarray(gray, dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"cannot read image {path}: {exc}") from None
            labels.append(label)
    if not images:
        raise UserError(f"{root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in its class subfolders)")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def load_image_folder(root: str | Path, test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """Load ``root/<class>/<image>``; use ``root/train`` and ``root/test`` if both exist.

    Without explicit splits, a stratified ``test_fraction`` of each class (at least one image of
    classes with two or more) becomes the test split, drawn from a fixed ``seed``.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_names = [p.name for p in _class_folders(root / "train")]
        if len(class_names) < 2:
            raise UserError(f"{root / 'train'} needs at least two class subfolders, found {len(class_names)}")
        train_images, train_labels = _read_classes(root / "train", class_names)
        test_images, test_labels = _read_classes(root / "test", class_names)
    else:
        class_names = [p.name for p in _class_folders(root)]
        if len(class_names) < 2:
            raise UserError(f"{root} needs at least two class subfolders (one per class), found {len(class_names)}")
        images, labels = _read_classes(root, class_names)
        gen = torch.Generator().manual_seed(seed)
        is_test = torch.zeros(len(labels), dtype=torch.bool)
        for label in range(len(class_names)):
            members = torch.nonzero(labels == label).flatten()
            n_test = int(round(len(members) * test_fraction)) if len(members) > 1 else 0
            n_test = max(n_test, 1) if len(members) > 1 else 0
            is_test[members[torch.randperm(len(members), generator=gen)[:n_test]]] = True
        train_images, train_labels = images[~is_test], labels[~is_test]
        test_images, test_labels = images[is_test], labels[is_test]
    return DatasetSplits(train_images, train_labels, test_images, test_labels, tuple(class_names), root.name)
