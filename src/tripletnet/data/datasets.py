"""The MNIST-style datasets tripletnet knows: where their files are, what they must contain, how to get them."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .download import DownloadError, fetch_verified, sha256_of
from .idx import parse_idx, read_bytes

DATA_ENV = "TRIPLETNET_DATA"


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset held in memory: uint8 images (N, 28, 28) and int64 labels (N,), per split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class IdxFile:
    filename: str  # uncompressed name; mirrors serve filename + ".gz"
    sha256: str  # of the uncompressed content, so gzipped and raw copies both verify
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folders: tuple[str, ...]  # subfolder names under the data root that may hold it
    files: dict[str, IdxFile]  # role -> file; roles: train_images, train_labels, test_images, test_labels
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]


def _files(sha: tuple[str, str, str, str]) -> dict[str, IdxFile]:
    return {
        "train_images": IdxFile("train-images-idx3-ubyte", sha[0], (60000, 28, 28)),
        "train_labels": IdxFile("train-labels-idx1-ubyte", sha[1], (60000,)),
        "test_images": IdxFile("t10k-images-idx3-ubyte", sha[2], (10000, 28, 28)),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", sha[3], (10000,)),
    }


DATASET_SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        folders=("mnist", "MNIST", "MNIST/raw"),
        files=_files((
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        )),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        folders=("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
        files=_files((
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        )),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}


def resolve_data_root(data_path: str | None) -> Path:
    """``data_path`` if given, else ``$TRIPLETNET_DATA``, else ``./data/``."""
    return Path(data_path or os.environ.get(DATA_ENV) or "data")


def find_file(root: Path, spec: DatasetSpec, file: IdxFile) -> Path | None:
    """The first existing copy of ``file``: per-dataset subfolders first, then the flat root; .gz or raw."""
    for folder in (*(root / sub for sub in spec.folders), root):
        for name in (file.filename + ".gz", file.filename):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _verified_array(path: Path, file: IdxFile, dataset: str) -> np.ndarray:
    content = read_bytes(path)
    digest = sha256_of(content)
    if digest != file.sha256:
        raise UserError(
            f"{path} does not hold {dataset}'s {file.filename}: sha256 of its content is {digest}, "
            f"expected {file.sha256}; delete it to download it again"
        )
    array = parse_idx(content, str(path))
    if array.shape != file.shape:  # pragma: no cover - the checksum already pins the shape
        raise UserError(f"{path}: shape {array.shape}, expected {file.shape}")
    return array


def _names(spec: DatasetSpec, roles: list[str]) -> str:
    return ", ".join(spec.files[role].filename + "[.gz]" for role in roles)


def _content_check(file: IdxFile) -> Callable[[Path], bool]:
    return lambda path: sha256_of(read_bytes(path)) == file.sha256


def load_registered(
    spec: DatasetSpec,
    data_path: str | None = None,
    download: bool = True,
    progress: Callable[[str], None] | None = None,
    opener: Callable[..., object] | None = None,
) -> DatasetSplits:
    root = resolve_data_root(data_path)
    paths = {role: find_file(root, spec, file) for role, file in spec.files.items()}
    missing = [role for role, path in paths.items() if path is None]
    if missing and not download:
        raise UserError(
            f"{spec.name}: missing {_names(spec, missing)} in {root} (looked in {', '.join(spec.folders)} and the "
            f"folder itself); download them from {spec.mirrors[0]} or drop --no-download"
        )
    if missing:
        target = root / spec.name
        try:
            for role in missing:
                file = spec.files[role]
                dest = target / (file.filename + ".gz")
                fetch_verified(
                    file.filename + ".gz", spec.mirrors, dest, _content_check(file),
                    progress=progress, **({"opener": opener} if opener else {}),
                )
                paths[role] = dest
        except (DownloadError, OSError) as exc:
            still_missing = [role for role, path in paths.items() if path is None]
            raise UserError(
                f"{spec.name}: could not download {_names(spec, still_missing)} ({exc}); put the files in {target}/ "
                f"(from {spec.mirrors[0]}) or point --data_path / ${DATA_ENV} at a folder holding them"
            ) from None
    arrays = {role: _verified_array(path, spec.files[role], spec.name) for role, path in paths.items()}
    # np.array copies: arrays parsed with frombuffer are read-only.
    tensors = {role: torch.from_numpy(np.array(a, dtype=np.int64 if role.endswith("labels") else np.uint8)) for role, a in arrays.items()}
    return DatasetSplits(
        train_images=tensors["train_images"],
        train_labels=tensors["train_labels"],
        test_images=tensors["test_images"],
        test_labels=tensors["test_labels"],
        class_names=spec.class_names,
        name=spec.name,
    )
