"""The datasets tripletnet knows, in one registry that the config, the CLI help and the loader read.

:data:`DATASETS` holds the datasets known by name (the MNIST-style IDX sets: where their files are,
what they must contain, how to get them) and the kinds of dataset given by a path (an image folder).
Adding a dataset is one registration: a :class:`DatasetSpec` in :data:`DATASET_SPECS` for an IDX
set, or a :class:`PathKind` in :data:`DATASETS` for a new file format.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..errors import ParameterError, UserError
from ..fileio import WriteError, atomic_write_text
from .csv import load_csv_dataset
from .download import DownloadError, Opener, fetch_verified, sha256_of
from .folder import load_image_folder
from .idx import parse_idx, read_bytes
from .types import DEFAULT_OPTIONS, DatasetSplits, ImageOptions, as_tensor

DATA_ENV = "TRIPLETNET_DATA"


@dataclass(frozen=True)
class IdxFile:
    filename: str  # uncompressed name; mirrors serve filename + ".gz"
    sha256: str  # of the uncompressed content, so gzipped and raw copies both verify
    size: int  # uncompressed bytes


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folders: tuple[str, ...]  # subfolders of the data root that may hold it, in the order they are searched
    files: Mapping[str, IdxFile]  # role -> file; roles: train_images, train_labels, test_images, test_labels
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]


def _files(sha: tuple[str, str, str, str]) -> Mapping[str, IdxFile]:
    # MNIST and Fashion-MNIST share names and sizes; only the content differs.
    return MappingProxyType({
        "train_images": IdxFile("train-images-idx3-ubyte", sha[0], 47_040_016),
        "train_labels": IdxFile("train-labels-idx1-ubyte", sha[1], 60_008),
        "test_images": IdxFile("t10k-images-idx3-ubyte", sha[2], 7_840_016),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", sha[3], 10_008),
    })


DATASET_SPECS: Mapping[str, DatasetSpec] = MappingProxyType({
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
})


def resolve_data_root(data_path: str | None) -> Path:
    """``data_path`` if given, else ``$TRIPLETNET_DATA``, else ``./data/`` (absolute, so messages are unambiguous)."""
    return Path(data_path or os.environ.get(DATA_ENV) or "data").expanduser().absolute()


def find_file(root: Path, spec: DatasetSpec, file: IdxFile) -> Path | None:
    """The first existing copy of ``file``: per-dataset subfolders first, then the flat root; .gz or raw."""
    for folder in (*(root / sub for sub in spec.folders), root):
        for name in (file.filename + ".gz", file.filename):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


# --- checksum verification, done once per version of a file ----------------------------------
# A version is (path, size, mtime, ctime). A hidden stamp file beside the data remembers it across runs;
# when the folder is read-only (a shared dataset) a per-process flag still avoids re-hashing.


def _identity(path: Path) -> tuple[str, int, int, int]:
    # ctime too: an in-place edit whose mtime was set back still moves the change time, which
    # no user call can restore.
    stat = path.stat()
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@functools.lru_cache(maxsize=64)
def _verified_flag(path: str, size: int, mtime_ns: int, ctime_ns: int, sha256: str) -> threading.Event:
    """A flag for one version of one file, set once its content was seen to hash to ``sha256``."""
    return threading.Event()


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def _stamp_text(identity: tuple[str, int, int, int], sha256: str) -> str:
    return f"{identity[1]} {identity[2]} {identity[3]} {sha256}\n"


def _already_verified(path: Path, identity: tuple[str, int, int, int], sha256: str) -> bool:
    if _verified_flag(*identity, sha256).is_set():
        return True
    try:
        return _stamp_path(path).read_text() == _stamp_text(identity, sha256)
    except (OSError, UnicodeDecodeError):
        return False


def _mark_verified(path: Path, identity: tuple[str, int, int, int], sha256: str) -> None:
    _verified_flag(*identity, sha256).set()
    try:
        atomic_write_text(_stamp_path(path), _stamp_text(identity, sha256))
    except WriteError:
        pass  # read-only folder: the in-process flag is all we can keep


def _owner_of(digest: str) -> str | None:
    """Which registered dataset file has this content, if any (a flat folder holding the wrong dataset)."""
    for spec in DATASET_SPECS.values():
        for file in spec.files.values():
            if file.sha256 == digest:
                return f"{spec.name}'s {file.filename}"
    return None


def _verified_content(path: Path, file: IdxFile, dataset: str) -> bytes:
    """The uncompressed content of ``path``, checked against ``file``'s sha256 unless already verified."""
    identity = _identity(path)  # taken before reading: a file changed meanwhile is simply hashed next time
    content = read_bytes(path)
    # The size check is free and guards against a stale stamp; the hash runs once per file version.
    if len(content) == file.size and _already_verified(path, identity, file.sha256):
        return content
    digest = sha256_of(content)
    if digest != file.sha256:
        owner = _owner_of(digest)
        advice = (
            f"it holds {owner}: keep each dataset in its own subfolder (e.g. {path.parent / dataset}/)"
            if owner else "delete it so that it is downloaded again, or replace it with a good copy"
        )
        raise UserError(
            f"{path} is not {dataset}'s {file.filename}: the sha256 of its uncompressed content is {digest}, "
            f"expected {file.sha256}; {advice}"
        )
    _mark_verified(path, identity, file.sha256)
    return content


# --- loading and downloading --------------------------------------------------------------------


def _names(spec: DatasetSpec, roles: list[str]) -> str:
    return ", ".join(spec.files[role].filename + "[.gz]" for role in roles)


def _download_check(file: IdxFile) -> Callable[[Path], str | None]:
    def check(path: Path) -> str | None:
        try:
            content = read_bytes(path)
        except UserError:
            return "not a valid gzip file"
        if sha256_of(content) != file.sha256:
            return "content does not match the expected sha256"
        _mark_verified(path, _identity(path), file.sha256)  # so loading it next does not hash it again
        return None

    return check


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def _download_missing(
    spec: DatasetSpec, root: Path, paths: dict[str, Path | None], progress: Callable[[str], None] | None, opener: Opener | None
) -> None:
    """Fill in ``paths`` by downloading the missing files beside the ones found, else into ``<root>/<name>/``."""
    found = [path for path in paths.values() if path is not None]
    target = found[0].parent if found else root / spec.name
    created = [folder for folder in (target, *target.parents) if not folder.exists()]
    missing = sorted((role for role, path in paths.items() if path is None), key=lambda role: spec.files[role].size)
    options: dict[str, Callable[[str], None]] = {"progress": progress} if progress else {}
    try:
        for role in missing:  # smallest first: when offline, fail on a 10 kB file, not after a 10 MB one
            file = spec.files[role]
            dest = target / (file.filename + ".gz")
            fetch_verified(file.filename + ".gz", spec.mirrors, dest, _download_check(file), opener=opener, **options)  # type: ignore[arg-type]
            paths[role] = dest
    except (DownloadError, OSError) as exc:
        _remove_empty(created)
        still_missing = [role for role, path in paths.items() if path is None]
        raise UserError(
            f"{spec.name}: could not download {_names(spec, still_missing)} ({exc}); put the files (gzipped or not) in "
            f"{target}/ from {spec.mirrors[0]}, or point --data_path / ${DATA_ENV} at a folder that holds them"
        ) from None


def load_registered(
    spec: DatasetSpec,
    data_path: str | None = None,
    download: bool = True,
    progress: Callable[[str], None] | None = None,
    opener: Opener | None = None,
) -> DatasetSplits:
    """Load a registered dataset from the data root, downloading missing files if allowed."""
    root = resolve_data_root(data_path)
    paths = {role: find_file(root, spec, file) for role, file in spec.files.items()}
    missing = [role for role, path in paths.items() if path is None]
    if missing and not download:
        raise UserError(
            f"{spec.name}: missing {_names(spec, missing)} in {root} (looked in its subfolders {', '.join(spec.folders)} "
            f"and in the folder itself); put them there from {spec.mirrors[0]}, or drop --no-download to fetch them"
        )
    if missing:
        _download_missing(spec, root, paths, progress, opener)
    arrays = {}
    for role, path in paths.items():
        assert path is not None  # every missing file was downloaded or we raised
        arrays[role] = parse_idx(_verified_content(path, spec.files[role], spec.name), str(path))
    # np.array copies: frombuffer arrays are read-only, and labels are widened to int64.
    tensors = {
        role: as_tensor(np.array(a, dtype=np.int64 if role.endswith("labels") else np.uint8)) for role, a in arrays.items()
    }
    return DatasetSplits(
        train_images=tensors["train_images"],
        train_labels=tensors["train_labels"],
        test_images=tensors["test_images"],
        test_labels=tensors["test_labels"],
        class_names=spec.class_names,
        name=spec.name,
    )


# --- the registry ---------------------------------------------------------------------------------

NamedLoader = Callable[[str | None, bool], DatasetSplits]  # (data_path, download) -> splits
PathLoader = Callable[[Path, ImageOptions], DatasetSplits]  # (path, image options) -> splits


@dataclass(frozen=True)
class PathKind:
    """A kind of dataset given by its path, e.g. a folder of class subfolders.

    Args:
        kind: a short name ("folder", "csv").
        description: how the CLI help lists it ("a folder of class subfolders").
        matches: whether a path (which may not exist yet) is this kind; the first match loads it.
        load: reads the dataset at the path with the given image options (size, channels, split
            rules); a problem with the files is a :class:`UserError`.
    """

    kind: str
    description: str
    matches: Callable[[Path], bool]
    load: PathLoader


def has_suffix(suffix: str) -> Callable[[Path], bool]:
    """A :attr:`PathKind.matches` for files named ``*<suffix>`` (any case); the loader reports a missing file."""
    return lambda path: path.suffix.lower() == suffix.lower()


@dataclass(frozen=True)
class DatasetRegistry:
    """Datasets known by name, then kinds of dataset given by a path, searched in that order.

    A registered name wins over a folder of the same name; write ``./mnist`` to mean the folder.
    """

    named: Mapping[str, NamedLoader]
    path_kinds: tuple[PathKind, ...]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self.named)

    def describe(self) -> str:
        """Every choice in one phrase, for help texts: ``"mnist, fashion-mnist, a folder of class subfolders, or ..."``."""
        choices = [*self.named, *(kind.description for kind in self.path_kinds)]
        return choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + ", or " + choices[-1]

    def is_path(self, dataset: str) -> bool:
        """Whether ``dataset`` is given by its path (a folder, a CSV file) rather than a registered name."""
        return dataset not in self.named

    def loader(self, dataset: str, options: ImageOptions | None = None) -> Callable[[str | None, bool], DatasetSplits]:
        """How to load ``dataset`` (a registered name or a path), as ``load(data_path, download)``.

        ``options`` (default: :class:`~tripletnet.data.folder.ImageOptions`'s defaults) reach the
        loaders of datasets given by a path; registered datasets have their own fixed format.

        Raises:
            ParameterError: ``dataset`` is neither a registered name nor a path of a registered kind.
        """
        if dataset in self.named:
            return self.named[dataset]
        if not dataset.strip():  # Path("") is the current directory: a slip, not a choice
            raise ParameterError("dataset", f"must be {self.describe()}; got an empty name")
        try:
            path = Path(dataset).expanduser()
            for kind in self.path_kinds:
                if kind.matches(path):
                    return lambda _data_path, _download: kind.load(path, options or DEFAULT_OPTIONS)
            why = "which is none of these"
        except (OSError, RuntimeError) as exc:  # a name too long for the OS; "~user" of an unknown user
            why = f"which cannot be a path here ({exc.strerror if isinstance(exc, OSError) else exc})"
        raise ParameterError("dataset", f"must be {self.describe()}; got {dataset!r}, {why}")

    def check(self, dataset: str) -> None:
        """Raise :class:`ParameterError` unless :meth:`loader` knows ``dataset``; loads nothing."""
        self.loader(dataset)

    def load(
        self, dataset: str, data_path: str | None = None, download: bool = True, options: ImageOptions | None = None
    ) -> DatasetSplits:
        """Load ``dataset``: a registered name (from ``data_path``, downloading if allowed) or a path.

        Args:
            dataset: a registered name or a path of a registered kind.
            data_path: where registered datasets' files are (default ``$TRIPLETNET_DATA``, else ``./data/``).
            download: fetch a registered dataset's missing files.
            options: image size, channels and split rules for datasets given by a path.

        Returns:
            The train and test splits in memory.
        """
        return self.loader(dataset, options)(data_path, download)


IMAGE_FOLDER = PathKind("folder", "a folder of class subfolders", lambda path: path.is_dir(), load_image_folder)
CSV_FILE = PathKind("csv", "a .csv file of image paths and labels", has_suffix(".csv"), load_csv_dataset)

DATASETS = DatasetRegistry(
    named=MappingProxyType({name: functools.partial(load_registered, spec) for name, spec in DATASET_SPECS.items()}),
    path_kinds=(IMAGE_FOLDER, CSV_FILE),
)


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
