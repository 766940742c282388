"""Your own images: a folder with one subfolder per identity, in colour or grey, of any size.

Layouts
-------
* ``root/<identity>/<image>``: one folder per identity (person, class, object); the loader splits
  it into train and test (see *Splits*).
* ``root/train/<identity>/...`` and ``root/test/<identity>/...``: the split is given. Test
  identities may be the training ones (closed set), others (open set: the usual case for
  verification, where the test people were never seen), or a mix.

Images are the files with a common image suffix (:data:`IMAGE_SUFFIXES`); other files are ignored.
Every image is turned upright (a camera's EXIF orientation) and brought to ``image_size`` x
``image_size`` by the rule in :mod:`.transforms`
(resize the short side, centre-crop) and to one channel count (grey or RGB, from the data or forced).

Splits
------
Without ``train/`` and ``test/`` folders, ``split_by`` decides:

* ``"identity"`` (the default: open set): ``test_fraction`` of the identities, rounded, at least two,
  drawn with ``seed``, become the test split with all their images; the others are for training.
  At least two identities must remain for training.
* ``"image"`` (closed set): ``test_fraction`` of each identity's images (at least one of an identity
  with two or more images, none of an identity with one) become test images.

The same folder, seed and fraction always give the same split.

Labels
------
``class_names`` lists the training identities first (sorted), then the identities found only in the
test split (sorted): training labels are ``0 .. n_train_classes - 1``, and a test label at or above
``n_train_classes`` is an identity the model never saw.

Bad input
---------
An identity with a single image cannot form a positive pair: it is kept (it still serves as a
negative) and counted in a log line. An image Pillow cannot read (damaged, truncated, not an image)
is an error naming it, or with ``skip_bad_images=True`` is skipped and counted. An image larger than
Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is refused as such, skipped
like a bad image when asked. Fewer than two training identities with two usable images is an error.

Held in memory or read from disk
--------------------------------
Every image is decoded once while loading (to find bad images and compute the training mean/std).
When the decoded images of both splits (N x channels x image_size^2 bytes) fit ``cache_images`` MiB
they are kept as uint8 tensors; otherwise only their paths are kept (:class:`ImageFiles`, in
``ImageSplits.train_files`` / ``test_files``) and training decodes them again for every batch
(:mod:`.loading`), by the same rules, to the same pixels.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from ..console import Logger, log_stderr, progress
from ..errors import ParameterError, UserError
from .datasets import DatasetSplits
from .transforms import (
    ChannelStats,
    check_channels,
    check_image_size,
    choose_channels,
    is_grey,
    resize_and_crop,
    to_channels,
)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"})
# Only these decoders are tried, whatever a file's name says: fewer parsers meet untrusted bytes.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
MIN_DEFAULT_SIZE = 28  # the default image_size never goes below MNIST's 28 ...
MAX_DEFAULT_SIZE = 64  # ... nor above 64: bigger inputs cost compute long before they help a small CNN
T = TypeVar("T")
SplitBy = Literal["identity", "image"]
SPLIT_BY_CHOICES: tuple[str, ...] = ("identity", "image")


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
        chosen = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
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
        return _stack([self.read(i) for i in range(len(self))], self.channels, self.image_size)


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


@dataclass(frozen=True)
class _Probe:
    width: int
    height: int
    grey: bool


# --- reading one image ------------------------------------------------------------------------


@contextlib.contextmanager
def _pillow_errors(where: str) -> Iterator[None]:
    """Turn whatever Pillow raises on one file into a UserError naming it."""
    with warnings.catch_warnings():
        # Damaged metadata (EXIF, TIFF tags) makes Pillow warn while the pixels may be fine: the
        # pixels decide. Pillow only warns between MAX_IMAGE_PIXELS and twice that: we refuse both alike.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UserError(
                f"{where}: refused as a possible decompression bomb ({exc}); Pillow's limit is "
                f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels"
            ) from None
        except FileNotFoundError:
            raise UserError(f"{where}: image file not found") from None
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on damaged files (OSError, ValueError, SyntaxError, struct.error, ...)
            reason = str(exc) or type(exc).__name__
            raise UserError(f"cannot read image {where}: {reason}") from None


def probe_image(path: str | Path, where: str | None = None) -> tuple[int, int, bool]:
    """(width, height, grey) of an image from its header, without decoding the pixels.

    Raises:
        UserError: the file is not an image Pillow can open, or exceeds the decompression-bomb limit.
    """
    with _pillow_errors(where or str(path)), Image.open(path, formats=PILLOW_FORMATS) as img:
        return img.width, img.height, is_grey(img)


def _upright(img: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: a camera's EXIF orientation applied (phone photos)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - damaged EXIF data: the pixels are still good, keep them as stored
        return img


def read_image(path: str | Path, image_size: int, channels: int, where: str | None = None) -> np.ndarray:
    """Decode one image, turn it upright (EXIF orientation), bring it to uint8 (channels, image_size, image_size).

    Args:
        path: the image file.
        image_size: the side of the square result (resize the short side, centre-crop).
        channels: 1 (grey) or 3 (RGB).
        where: how to name the image in an error (default: its path).

    Returns:
        uint8 array (channels, image_size, image_size).

    Raises:
        UserError: the file is unreadable, truncated, not an image, or a possible decompression bomb.
    """
    check_image_size(image_size)
    check_channels(channels)
    with _pillow_errors(where or str(path)), Image.open(path, formats=PILLOW_FORMATS) as opened:
        opened.load()  # decode here, so a truncated file fails inside the error translation
        if opened.width < 1 or opened.height < 1:
            raise ValueError("the image has no pixels")
        img = _upright(opened)
        # Convert before resizing where the mode cannot be resized as is (palettes, 1-bit).
        if img.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB" if channels == 3 else "L")
        return to_channels(resize_and_crop(img, image_size), channels)


# --- listing a folder -------------------------------------------------------------------------


def _identity_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _list_split(folder: Path, split: str | None, empty_allowed: bool) -> list[ImageEntry]:
    identities = _identity_folders(folder)
    entries: list[ImageEntry] = []
    for identity in identities:
        files = _image_files(identity)
        if not files and not empty_allowed:
            raise UserError(f"identity folder {identity} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        entries.extend(ImageEntry(path, identity.name, split, str(path)) for path in files)
    if not entries:
        raise UserError(
            f"{folder} holds no images: expected one subfolder per identity holding its images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return entries


def list_image_folder(root: str | Path) -> list[ImageEntry]:
    """The images of a folder in either layout (see the module doc), with their identity and given split."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        present, absent = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise UserError(f"{root} has {present.name}/ but no {absent.name}/: give both splits, or one subfolder per identity")
    if train_dir.is_dir():
        return _list_split(train_dir, "train", empty_allowed=False) + _list_split(test_dir, "test", empty_allowed=True)
    return _list_split(root, None, empty_allowed=False)


# --- splitting ----------------------------------------------------------------------------------


def _split_by_identity(identities: Sequence[str], test_fraction: float, seed: int, what: str) -> list[str]:
    """Each image's split when whole identities go to test; ``identities`` holds one entry per image."""
    names = sorted(set(identities))
    n_test = max(2, round(len(names) * test_fraction))
    if len(names) - n_test < 2:
        raise UserError(
            f"{what}: {len(names)} identities are too few to split by identity (a test fraction of {test_fraction:g}, "
            "at least two identities for test and two for training); add identities, or split by image"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    test_names = {names[i] for i in order[:n_test]}
    return ["test" if name in test_names else "train" for name in identities]


def _split_by_image(identities: Sequence[str], test_fraction: float, seed: int) -> list[str]:
    """Each image's split, stratified: ``test_fraction`` of each identity's images (none of a single image)."""
    rng = np.random.default_rng(seed)
    splits = ["train"] * len(identities)
    members: dict[str, list[int]] = {}
    for index, name in enumerate(identities):
        members.setdefault(name, []).append(index)
    for name in sorted(members):
        indices = members[name]
        n_test = max(1, round(len(indices) * test_fraction)) if len(indices) > 1 else 0
        for i in rng.permutation(len(indices))[:n_test]:
            splits[indices[i]] = "test"
    return splits


def assign_splits(entries: Sequence[ImageEntry], split_by: str, test_fraction: float, seed: int, what: str) -> list[str]:
    """The split of each entry: as given, or drawn by identity or by image (see the module doc)."""
    given = [entry.split for entry in entries]
    if all(split is not None for split in given):
        return [str(split) for split in given]
    identities = [entry.identity for entry in entries]
    if split_by == "identity":
        return _split_by_identity(identities, test_fraction, seed, what)
    return _split_by_image(identities, test_fraction, seed)


# --- from a list of images to the splits ----------------------------------------------------------


def _default_image_size(probes: Sequence[_Probe]) -> int:
    median_short = statistics.median(min(p.width, p.height) for p in probes)
    return int(min(MAX_DEFAULT_SIZE, max(MIN_DEFAULT_SIZE, round(median_short))))


def _check_identities(train_identities: Sequence[str], what: str, log: Logger) -> None:
    counts = Counter(train_identities)
    usable = sum(1 for n in counts.values() if n >= 2)
    if usable < 2:
        raise UserError(
            f"{what}: triplets need at least two training identities with two or more images each, found {usable} "
            f"(of {len(counts)} training identities)"
        )
    singles = len(counts) - usable
    if singles:
        log(f"{what}: {singles} training identities have a single image: kept, used only as negatives")


def _stack(images: list[np.ndarray], channels: int, image_size: int) -> torch.Tensor:
    if not images:
        return torch.zeros((0, channels, image_size, image_size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(images))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def load_image_list(
    entries: Sequence[ImageEntry],
    name: str,
    root: Path,
    options: ImageOptions = DEFAULT_OPTIONS,
    log: Logger = log_stderr,
) -> ImageSplits:
    """Read listed images into train and test splits; the engine behind folders and CSV lists.

    Args:
        entries: the images with their identity and, optionally, their split.
        name: the dataset's name (for logs and ``DatasetSplits.name``).
        root: the folder image paths are reported relative to.
        options: size, channels and split rules (see :class:`ImageOptions`).
        log: where the summary and warnings go.

    Returns:
        The splits, with the paths, channel count, image size and training mean/std.
    """
    skipped: list[str] = []

    def readable(read: Callable[[ImageEntry], T], entry: ImageEntry) -> T | None:
        """``read(entry)``, or None with the reason kept when bad images are to be skipped."""
        try:
            return read(entry)
        except UserError as exc:
            if not options.skip_bad_images:
                raise
            skipped.append(str(exc))
            return None

    probes: dict[int, _Probe] = {}
    for index, entry in enumerate(progress(entries, total=len(entries), desc="checking images", unit="img")):
        probe = readable(lambda e: _Probe(*probe_image(e.path, e.where)), entry)
        if probe is not None:
            probes[index] = probe
    kept = [entries[i] for i in sorted(probes)]
    if not kept:
        raise UserError(f"{name}: none of its {len(entries)} images could be read")
    splits = assign_splits(kept, options.split_by, options.test_fraction, options.seed, name)
    train_probes = [probes[i] for i, split in zip(sorted(probes), splits, strict=True) if split == "train"]
    if not train_probes:
        raise UserError(f"{name}: no training images")
    size = options.image_size if options.image_size is not None else _default_image_size(train_probes)
    n_grey = sum(p.grey for p in probes.values())
    n_colour = len(probes) - n_grey
    chosen_channels = choose_channels(n_grey, n_colour, options.channels, name, log)

    # Every image is decoded once either way: bad images are found now, and the training mean/std
    # come from the same pixels; over the budget the pixels are dropped once counted.
    in_memory = fits_in_cache(len(kept), chosen_channels, size, options.cache_images)
    decoded: dict[str, list[tuple[np.ndarray | None, ImageEntry]]] = {"train": [], "test": []}
    stats = ChannelStats(chosen_channels)
    for entry, split in progress(list(zip(kept, splits, strict=True)), total=len(kept), desc="reading images", unit="img"):
        array = readable(lambda e: read_image(e.path, size, chosen_channels, e.where), entry)
        if array is not None:
            if split == "train":
                stats.add(array)
            decoded[split].append((array if in_memory else None, entry))
    if skipped:
        log(f"{name}: skipped {len(skipped)} unreadable images (the first: {skipped[0]})")

    train_identities = [entry.identity for _, entry in decoded["train"]]
    _check_identities(train_identities, name, log)
    train_names = sorted(set(train_identities))
    test_only = sorted({entry.identity for _, entry in decoded["test"]} - set(train_names))
    class_names = tuple(train_names + test_only)
    label_of = {identity: label for label, identity in enumerate(class_names)}

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], ImageFiles | None]:
        items = decoded[split]
        images = _stack([array for array, _ in items if array is not None], chosen_channels, size)
        labels = torch.tensor([label_of[entry.identity] for _, entry in items], dtype=torch.int64)
        files = None if in_memory else ImageFiles(
            tuple(entry.path for _, entry in items), tuple(entry.where for _, entry in items), size, chosen_channels
        )
        return images, labels, tuple(_relative(entry.path, root) for _, entry in items), files

    train_images, train_labels, train_paths, train_files = tensors("train")
    test_images, test_labels, test_paths, test_files = tensors("test")
    mean, std = stats.mean_std()
    split = "given" if all(entry.split is not None for entry in kept) else options.split_by
    test_seen = len({entry.identity for _, entry in decoded["test"]}) - len(test_only)
    log(
        f"{name}: {len(train_labels)} training images of {len(train_names)} identities, {len(test_labels)} test images "
        f"of {test_seen + len(test_only)} identities ({len(test_only)} unseen in training; split {split}), "
        f"{size}x{size} {'RGB' if chosen_channels == 3 else 'grey'}"
    )
    if not in_memory:
        needed = len(train_labels) + len(test_labels)
        log(f"{name}: {needed} decoded images would take {needed * chosen_channels * size * size / 2**20:.1f} MiB, over "
            f"the {options.cache_images} MiB cache budget: they are read from disk for every batch")
    return ImageSplits(
        train_images, train_labels, test_images, test_labels, class_names, name,
        root=root, train_paths=train_paths, test_paths=test_paths, n_train_classes=len(train_names),
        channels=chosen_channels, image_size=size, mean=mean, std=std, split=split, skipped=tuple(skipped),
        train_files=train_files, test_files=test_files,
    )


def load_image_folder(root: str | Path, options: ImageOptions = DEFAULT_OPTIONS, log: Logger = log_stderr) -> ImageSplits:
    """Load ``root/<identity>/*`` or ``root/train|test/<identity>/*``; see the module doc for every rule.

    Args:
        root: the folder.
        options: size, channels and split rules (see :class:`ImageOptions`); the split options
            are ignored when ``train/`` and ``test/`` exist.
        log: where progress lines and warnings go.

    Returns:
        :class:`ImageSplits` with uint8 images (N, C, image_size, image_size).
    """
    folder = Path(root).expanduser().absolute()
    return load_image_list(list_image_folder(folder), folder.resolve().name, folder, options, log)
