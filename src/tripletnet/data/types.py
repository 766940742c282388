"""The data layer's types: what a dataset is and what image files become, with no loading in them.

A leaf module: the formats (:mod:`.folder`, :mod:`.csv`, :mod:`.idx`) and the registry
(:mod:`.datasets`) import it, it imports only the image pipeline (:mod:`.images`), so no import
cycle runs through the data layer. Torch is imported when the first tensor is made
(:func:`as_tensor`), not with the registry: the CLI's ``--help`` and config checks stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import ParameterError
from .images import check_channels, check_image_size, read_image

if TYPE_CHECKING:
    import torch

TEST_FRACTION = 0.2
SPLIT_SEED = 0
SplitBy = Literal["identity", "image"]
SPLIT_BY_CHOICES: tuple[str, ...] = ("identity", "image")
CLASS_CHOICES = ("unseen", "seen", "all")  # which classes of a split a command embeds (see .classes)


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset held in memory: uint8 images (N, 28, 28) and int64 labels (N,), per split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str


def check_split_options(split_by: str, test_fraction: float) -> None:
    if split_by not in SPLIT_BY_CHOICES:
        raise ParameterError("split_by", f"must be one of {', '.join(SPLIT_BY_CHOICES)}, got {split_by!r}")
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ParameterError("test_fraction", f"must be between 0 and 1 (exclusive), got {test_fraction!r}")


def check_cache_images(cache_images: int | None) -> None:
    if cache_images is not None and (isinstance(cache_images, bool) or not isinstance(cache_images, int) or cache_images < 0):
        raise ParameterError("cache_images", f"must be a whole number of MiB, 0 or more, got {cache_images!r}")


@dataclass(frozen=True)
class ImageOptions:
    """How image files become a dataset; shared by folders and CSV lists (validated on creation).

    Attributes:
        image_size: side of the square images; None: the training images' median short side,
            kept within [28, 64].
        channels: 1 or 3; None: from the data (any colour image -> 3, all grey -> 1).
        split_by: ``"identity"`` (open set, the default) or ``"image"``; used only when the data
            does not give its split.
        test_fraction: share of identities (or of each identity's images) drawn for test.
        seed: seed of that draw.
        skip_bad_images: skip and count unreadable images instead of stopping at the first.
        cache_images: MiB of decoded images (both splits) to hold in memory; a dataset that needs
            more is left on disk (:class:`ImageFiles`), 0 always leaves it there; None: no limit.
    """

    image_size: int | None = None
    channels: int | None = None
    split_by: SplitBy = "identity"
    test_fraction: float = TEST_FRACTION
    seed: int = SPLIT_SEED
    skip_bad_images: bool = False
    cache_images: int | None = None

    def __post_init__(self) -> None:
        check_split_options(self.split_by, self.test_fraction)
        check_cache_images(self.cache_images)
        check_channels(self.channels)
        if self.image_size is not None:
            check_image_size(self.image_size)


DEFAULT_OPTIONS = ImageOptions()  # frozen: safe to share as a default argument


def fits_in_cache(count: int, channels: int, image_size: int, cache_images: int | None) -> bool:
    """Whether ``count`` decoded uint8 images of ``channels`` x ``image_size``^2 fit ``cache_images`` MiB (None: no limit)."""
    return cache_images is None or count * channels * image_size * image_size <= cache_images * 2**20


@dataclass(frozen=True)
class ImageFiles:
    """Images left on disk, decoded on demand by the same rules as images held in memory.

    Small and picklable: what a DataLoader worker process receives.

    Attributes:
        paths: the image files.
        wheres: per image, how an error names it (its path, or "list.csv line 7 (path)").
        image_size: side of the square result.
        channels: 1 or 3.
    """

    paths: tuple[Path, ...]
    wheres: tuple[str, ...]
    image_size: int
    channels: int

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one decoded image."""
        return self.channels, self.image_size, self.image_size

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageFiles:
        """The images at ``indices``, in that order (repeats allowed), still on disk."""
        chosen = indices.tolist() if hasattr(indices, "tolist") else list(indices)
        return ImageFiles(tuple(self.paths[i] for i in chosen), tuple(self.wheres[i] for i in chosen),
                          self.image_size, self.channels)

    def read(self, index: int) -> np.ndarray:
        """Decode image ``index``: uint8 (channels, image_size, image_size).

        Raises:
            UserError: the file is unreadable now (see :func:`read_image`).
        """
        return read_image(self.paths[index], self.image_size, self.channels, self.wheres[index])

    def load(self) -> torch.Tensor:
        """Every image decoded into memory: uint8 (N, channels, image_size, image_size)."""
        return stack_images([self.read(i) for i in range(len(self))], self.channels, self.image_size)


@dataclass(frozen=True, kw_only=True)
class ImageSplits(DatasetSplits):
    """A dataset of image files: :class:`DatasetSplits` (uint8 images (N, C, H, W)) and where they came from.

    Attributes:
        root: the folder that image paths are relative to.
        train_paths: per training image, its path relative to ``root`` (POSIX form).
        test_paths: the same for the test images.
        n_train_classes: labels below this are training identities (see the module doc).
        channels: 1 or 3.
        image_size: height and width of every image.
        mean: per-channel mean of the training images on the [0, 1] scale.
        std: per-channel population std of the training images on the [0, 1] scale.
        split: how train and test were formed: ``"given"``, ``"identity"`` or ``"image"``.
        skipped: images left out as unreadable (only with ``skip_bad_images``), as ``path: reason``.
        train_files: the training images on disk when the dataset is streamed (see :attr:`streamed`), else None.
        test_files: the same for the test images.
    """

    root: Path
    train_paths: tuple[str, ...]
    test_paths: tuple[str, ...]
    n_train_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split: str
    skipped: tuple[str, ...] = ()
    train_files: ImageFiles | None = None
    test_files: ImageFiles | None = None

    @property
    def streamed(self) -> bool:
        """Whether the images were left on disk (over the ``cache_images`` budget): then ``train_images``
        and ``test_images`` are empty and ``train_files``/``test_files`` list the images."""
        return self.train_files is not None

    @property
    def train_class_names(self) -> tuple[str, ...]:
        return self.class_names[: self.n_train_classes]

    @property
    def test_class_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[i] for i in sorted(set(self.test_labels.tolist())))

    @property
    def unseen_test_classes(self) -> int:
        """How many test identities were never seen in training (0 for a closed set)."""
        return len({label for label in self.test_labels.tolist() if label >= self.n_train_classes})


@dataclass(frozen=True)
class ImageEntry:
    """One image listed by a folder or a CSV file, before it is read."""

    path: Path
    identity: str
    split: str | None  # "train", "test", or None when the loader is to split
    where: str  # how to point the user at it: the path, or "list.csv line 7"


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor sharing its memory: where the data layer first needs torch."""
    import torch  # here, not at the top: importing the registry (the CLI, config checks) must not load torch

    return torch.from_numpy(array)


def stack_images(images: list[np.ndarray], channels: int, image_size: int) -> torch.Tensor:
    """uint8 arrays (C, S, S) -> one tensor (N, C, S, S); no arrays: an empty one of that shape."""
    if not images:
        return as_tensor(np.zeros((0, channels, image_size, image_size), dtype=np.uint8))
    return as_tensor(np.stack(images))
