"""Your own images: a folder with one subfolder per identity, in colour or grey, of any size.

Layouts
-------
* ``root/<identity>/<image>``: one folder per identity (person, class, object); the loader splits
  it into train and test (see *Splits*).
* ``root/train/<identity>/...`` and ``root/test/<identity>/...``: the split is given. Test
  identities may be the training ones (closed set), others (open set: the usual case for
  verification, where the test people were never seen), or a mix.

Images are the files with a common image suffix (:data:`~.images.IMAGE_SUFFIXES`); other files are
ignored. Every image goes through the one image pipeline, :mod:`.images` (EXIF orientation, resize
the short side to ``image_size``, centre-crop, one channel count: grey or RGB, from the data or forced),
the same function that prepares images for a trained model.

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

import os
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..console import Logger, log_stderr, progress
from ..errors import UserError
from .images import IMAGE_SUFFIXES, ChannelStats, choose_channels, probe_image, read_image
from .types import DEFAULT_OPTIONS, ImageEntry, ImageFiles, ImageOptions, ImageSplits, as_tensor, fits_in_cache, stack_images

if TYPE_CHECKING:
    import torch

MIN_DEFAULT_SIZE = 28  # the default image_size never goes below MNIST's 28 ...
MAX_DEFAULT_SIZE = 64  # ... nor above 64: bigger inputs cost compute long before they help a small CNN
T = TypeVar("T")


@dataclass(frozen=True)
class _Probe:
    width: int
    height: int
    grey: bool


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
        loose = len(_image_files(folder))
        found = f"{loose} images but no identity subfolders" if loose else "no images"
        raise UserError(
            f"{folder} holds {found}: expected one subfolder per identity holding its images "
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
        identities_have = "identity has" if singles == 1 else "identities have"
        log(f"{what}: {singles} training {identities_have} a single image: kept, used only as negatives")


def _note_repeated_files(entries: Sequence[ImageEntry], splits: Sequence[str], what: str, log: Logger) -> None:
    """Say when one file (symlinks resolved) is listed under two identities or in both splits: a symlinked
    identity folder or a repeated CSV row makes an image a negative of itself, or a test image one trained on."""
    first: dict[str, tuple[ImageEntry, str]] = {}
    two_identities: list[tuple[ImageEntry, ImageEntry]] = []
    two_splits: list[ImageEntry] = []
    for entry, split in zip(entries, splits, strict=True):
        real = os.path.realpath(entry.path)
        if real not in first:
            first[real] = (entry, split)
            continue
        earlier, earlier_split = first[real]
        if earlier.identity != entry.identity:
            two_identities.append((earlier, entry))
        if earlier_split != split:
            two_splits.append(entry)
    if two_identities:
        earlier, later = two_identities[0]
        log(f"{what}: {len(two_identities)} images are listed under two identities (e.g. {later.where} as "
            f"{earlier.identity!r} and {later.identity!r}: a symlinked folder or a repeated row?); "
            "each is then a negative of itself")
    if two_splits:
        log(f"{what}: {len(two_splits)} images are in both the training and the test split (e.g. {two_splits[0].where}): "
            "the test figures include images the network trained on")


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
    _note_repeated_files(kept, splits, name, log)
    train_probes = [probes[i] for i, split in zip(sorted(probes), splits, strict=True) if split == "train"]
    if not train_probes:
        raise UserError(f"{name}: no training images")
    size = options.image_size if options.image_size is not None else _default_image_size(train_probes)
    smallest_side = statistics.median(min(p.width, p.height) for p in train_probes)
    if options.image_size is None and smallest_side < size:  # said, so 1x1 images never train unnoticed
        log(f"{name}: its training images are {smallest_side:g} px on the short side (median), upscaled to the "
            f"smallest default size, {size}x{size}; --image_size sets another")
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
        images = stack_images([array for array, _ in items if array is not None], chosen_channels, size)
        labels = as_tensor(np.array([label_of[entry.identity] for _, entry in items], dtype=np.int64))
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
    entries = list_image_folder(folder)
    _note_unread_files(folder, entries, log)
    return load_image_list(entries, folder.resolve().name, folder, options, log)


def _note_unread_files(root: Path, entries: Sequence[ImageEntry], log: Logger) -> None:
    """Say what the listing leaves out without a word, from one listing of each folder it read.

    Images in folders below the identity folders: an identity's images are the files directly in its folder,
    so deeper ones are not read (index and search, which label by the top folder, do read them). Symbolic
    links that point to nothing: an identity folder or image behind one is left out, and a moved target
    should not shrink the data unsaid.
    """
    identity_folders = {entry.path.parent for entry in entries}
    listings = {folder: [path for path in sorted(folder.iterdir()) if not path.name.startswith(".")]
                for folder in sorted(identity_folders | {folder.parent for folder in identity_folders})}
    nested = [path for folder in sorted(identity_folders) for sub in listings[folder] if sub.is_dir()
              for path in sub.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    if nested:
        log(f"{root.name}: {len(nested)} images in folders below the identity folders are not read "
            f"(e.g. {_relative(nested[0], root)}): an identity's images lie directly in its folder")
    broken = [path for listing in listings.values() for path in listing if path.is_symlink() and not path.exists()]
    if broken:
        links = "link points" if len(broken) == 1 else "links point"
        log(f"{root.name}: {len(broken)} symbolic {links} to nothing and are not read "
            f"(e.g. {_relative(broken[0], root)} -> {os.readlink(broken[0])})")
