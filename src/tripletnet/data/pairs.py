"""Pairs files: lists of image pairs to verify, with the fold of each pair; read and written.

The LFW format (``pairs.txt``)
------------------------------
The first line is ``folds pairs_per_fold`` (e.g. ``10 300``) or a single count (one fold). Then, fold
after fold, ``pairs_per_fold`` matched pairs and as many mismatched ones (so a fold holds twice the
header's count), one per line, fields separated by tabs or spaces:

* ``name n1 n2``: two images of the same identity,
* ``name1 n1 name2 n2``: images of two identities,

where image ``n`` of ``name`` is the file ``<images>/name/name_%04d.<ext>``, its extension found among
:data:`PAIR_IMAGE_EXTENSIONS`. A pair's fold is its position: lines ``2k * count + 1 .. 2(k+1) * count``
of the pair lines are fold ``k``. The number of pair lines must be what the header says.

The CSV format (``*.csv``)
--------------------------
Rows ``path_a,path_b,same`` or ``path_a,path_b,same,fold`` with an optional header of those names.
``same`` is 1/0, true/false, yes/no or same/different; paths are relative to the images folder
(by default the CSV's own folder) or absolute. Without a fold column the folds are dealt in turn:
the k-th matched pair goes to fold ``k mod 10``, and so does the k-th mismatched pair.

Mistakes are one-line :class:`~tripletnet.errors.UserError` s with the line number: a wrong header,
a wrong number of fields, a bad number or flag, and images that do not exist (counted, the first few named).

Writing
-------
:func:`write_pairs_file` draws a balanced, seeded pairs file from a folder of identities, with folds
disjoint in identities as LFW's are. It writes the LFW format, or CSV when ``out`` ends in ``.csv``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..console import Logger, log_stderr, progress
from ..errors import ParameterError, UserError
from ..fileio import atomic_write_text
from ..seeds import check_seed
from .csv import MissingFilesError, csv_rows, is_file, missing_files_error, read_text
from .folder import list_image_folder
from .images import read_image

PAIR_IMAGE_EXTENSIONS = ("jpg", "png", "jpeg", "bmp", "JPG", "PNG", "JPEG", "pgm", "ppm", "tif", "tiff", "webp", "gif")
CSV_FOLDS = 10  # folds dealt to a CSV pairs file without a fold column
_TRUE = frozenset({"1", "true", "yes", "same"})
_FALSE = frozenset({"0", "false", "no", "different"})
_CSV_HEADERS = (["path_a", "path_b", "same"], ["path_a", "path_b", "same", "fold"])
_LFW_FILE = re.compile(r"^(?P<name>.+)_(?P<number>\d+)\.(?P<ext>[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class PairList:
    """Image pairs with their same/different flags and folds.

    Attributes:
        paths_a: the first image of each pair.
        paths_b: the second image of each pair.
        same: bool (P,): whether the pair shows one identity.
        folds: int64 (P,): the fold of each pair, 0 .. n_folds - 1.
        n_folds: how many folds.
        source: the pairs file.
        lines: int64 (P,): the line of each pair in the file (for messages).
    """

    paths_a: tuple[Path, ...]
    paths_b: tuple[Path, ...]
    same: np.ndarray
    folds: np.ndarray
    n_folds: int
    source: Path
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.same)

    def unique_images(self) -> tuple[tuple[Path, ...], np.ndarray, np.ndarray]:
        """Each image once, and for every pair the index of its two images in that tuple.

        Returns:
            (paths, index_a, index_b): embed ``paths`` once, then pair ``i`` is
            ``(embeddings[index_a[i]], embeddings[index_b[i]])``.
        """
        paths = tuple(sorted(set(self.paths_a) | set(self.paths_b)))
        position = {path: i for i, path in enumerate(paths)}
        index_a = np.array([position[p] for p in self.paths_a], dtype=np.int64)
        index_b = np.array([position[p] for p in self.paths_b], dtype=np.int64)
        return paths, index_a, index_b


# --- reading ----------------------------------------------------------------------------------


def _positive_int(text: str, where: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise UserError(f"{where}: {what} must be a positive whole number, got {text!r}")
    return int(text)


class _LfwImages:
    """Finds ``name/name_%04d.<ext>``, trying the extension that worked last first."""

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir
        self.extensions = list(PAIR_IMAGE_EXTENSIONS)

    def find(self, name: str, number: int) -> Path | None:
        for ext in self.extensions:
            candidate = self.images_dir / name / f"{name}_{number:04d}.{ext}"
            if is_file(candidate):
                if ext != self.extensions[0]:
                    self.extensions.remove(ext)
                    self.extensions.insert(0, ext)
                return candidate
        return None


def _check_name(name: str, where: str) -> None:
    # A name is a folder inside images_dir: never a path that leaves it.
    if "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise UserError(f"{where}: {name!r} is not an identity name (it would not name a folder inside the images folder)")


def _read_lfw(path: Path, images_dir: Path) -> PairList:
    numbered = [(n, line.split()) for n, line in enumerate(read_text(path, "pairs file").splitlines(), start=1)]
    numbered = [(n, fields) for n, fields in numbered if fields]
    if not numbered:
        raise UserError(f"{path} is empty: expected a header line 'folds pairs_per_fold', then the pairs")
    header_line, header = numbered[0]
    where = f"{path.name} line {header_line}"
    if len(header) not in (1, 2):
        raise UserError(
            f"{where}: the header must be 'folds pairs_per_fold' (e.g. '10 300') or a single count, got {' '.join(header)!r}"
        )
    n_folds = _positive_int(header[0], where, "the number of folds") if len(header) == 2 else 1
    per_kind = _positive_int(header[-1], where, "the number of pairs per fold")
    pair_lines = numbered[1:]
    expected = n_folds * 2 * per_kind
    if len(pair_lines) != expected:
        raise UserError(
            f"{where}: the header promises {n_folds} folds of {per_kind} matched and {per_kind} mismatched pairs "
            f"({expected} pair lines), the file has {len(pair_lines)}"
        )
    images = _LfwImages(images_dir)
    paths_a, paths_b, same, lines, missing = [], [], [], [], []
    for line, fields in pair_lines:
        where = f"{path.name} line {line}"
        if len(fields) == 3:
            names, numbers = (fields[0], fields[0]), (fields[1], fields[2])
        elif len(fields) == 4:
            names, numbers = (fields[0], fields[2]), (fields[1], fields[3])
        else:
            raise UserError(
                f"{where}: expected 'name n1 n2' (same) or 'name1 n1 name2 n2' (different), found {len(fields)} fields"
            )
        found = []
        for name, number_text in zip(names, numbers, strict=True):
            _check_name(name, where)
            number = _positive_int(number_text, where, "an image number")
            image = images.find(name, number)
            if image is None:
                missing.append(f"line {line}: {name}/{name}_{number:04d}.*")
            found.append(image or images_dir / name)
        paths_a.append(found[0])
        paths_b.append(found[1])
        same.append(len(fields) == 3)
        lines.append(line)
    if missing:
        raise missing_files_error(path, missing, images_dir)
    folds = np.arange(len(same), dtype=np.int64) // (2 * per_kind)
    return PairList(
        tuple(paths_a), tuple(paths_b), np.array(same, dtype=bool), folds, n_folds, path, np.array(lines, dtype=np.int64)
    )


def _flag(text: str, where: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise UserError(f"{where}: same must be 1/0, true/false, yes/no or same/different, got {text!r}")


def _read_csv(path: Path, images_dir: Path) -> PairList:
    rows = csv_rows(path, "pairs file", _CSV_HEADERS)
    if not rows:
        raise UserError(f"{path} lists no pairs: expected rows path_a,path_b,same[,fold]")
    with_fold = len(rows[0][1]) == 4
    paths_a, paths_b, same, folds, lines, missing = [], [], [], [], [], []
    for line, fields in rows:
        where = f"{path.name} line {line}"
        if len(fields) != (4 if with_fold else 3):
            raise UserError(
                f"{where}: expected {'path_a,path_b,same,fold' if with_fold else 'path_a,path_b,same'} "
                f"(as on line {rows[0][0]}), found {len(fields)} fields"
            )
        pair = []
        for text in fields[:2]:
            if not text:
                raise UserError(f"{where}: empty image path")
            image = images_dir / text
            if not is_file(image):
                missing.append(f"line {line}: {text}")
            pair.append(image)
        paths_a.append(pair[0])
        paths_b.append(pair[1])
        same.append(_flag(fields[2], where))
        if with_fold:
            if not fields[3].isascii() or not fields[3].isdigit():
                raise UserError(f"{where}: fold must be a whole number (0, 1, ...), got {fields[3]!r}")
            folds.append(int(fields[3]))
        lines.append(line)
    if missing:
        raise missing_files_error(path, missing, images_dir)
    flags = np.array(same, dtype=bool)
    if with_fold:
        # Renumber to 0 .. k-1 in order of the fold numbers used, so gaps do not make empty folds.
        fold_ids, fold_array = np.unique(np.array(folds, dtype=np.int64), return_inverse=True)
        n_folds = len(fold_ids)
        fold_array = fold_array.astype(np.int64)
    else:
        fold_array = np.zeros(len(flags), dtype=np.int64)
        for flag in (True, False):
            members = np.flatnonzero(flags == flag)
            fold_array[members] = np.arange(len(members)) % CSV_FOLDS
        n_folds = int(fold_array.max()) + 1
    return PairList(tuple(paths_a), tuple(paths_b), flags, fold_array, n_folds, path, np.array(lines, dtype=np.int64))


def read_pairs(path: str | Path, images_dir: str | Path | None = None) -> PairList:
    """Read a pairs file: CSV if its name ends in ``.csv``, else the LFW format (see the module doc).

    Args:
        path: the pairs file.
        images_dir: where the images are; default: the pairs file's folder.

    Returns:
        The pairs, each image path checked to exist.

    Raises:
        UserError: a wrong header, a bad line (with its number), or images that do not exist.
    """
    source = Path(path).expanduser().absolute()
    images = Path(images_dir).expanduser().absolute() if images_dir is not None else source.parent
    if images_dir is not None and not images.is_dir():
        raise UserError(f"images folder not found: {images}")
    try:
        return _read_csv(source, images) if source.suffix.lower() == ".csv" else _read_lfw(source, images)
    except MissingFilesError as error:
        if images_dir is None:
            # Names are relative to the folder the pairs were drawn from, which may not be the file's own.
            raise UserError(f"{error} (names are relative to the images folder: give it with --images, "
                            "images_dir= in Python)") from None
        raise


def load_pair_images(
    pairs: PairList, image_size: int, channels: int, log: Logger = log_stderr
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Read each image of ``pairs`` once, by the folder rules (resize the short side, centre-crop).

    Args:
        pairs: from :func:`read_pairs`.
        image_size: the side the model takes (from its checkpoint).
        channels: the channel count the model takes.
        log: where a summary line goes.

    Returns:
        (images uint8 (N, channels, image_size, image_size), index_a, index_b) as in :meth:`PairList.unique_images`.
    """
    paths, index_a, index_b = pairs.unique_images()
    arrays = [
        read_image(p, image_size, channels) for p in progress(paths, total=len(paths), desc="reading pair images", unit="img")
    ]
    log(
        f"{pairs.source.name}: {len(pairs)} pairs ({int(pairs.same.sum())} matched) of {len(paths)} images "
        f"in {pairs.n_folds} folds"
    )
    return torch.from_numpy(np.stack(arrays)), index_a, index_b


# --- writing ----------------------------------------------------------------------------------


def _pair_in_identity(index: int) -> tuple[int, int]:
    """The ``index``-th pair (i < j) in the order (0,1), (0,2), (1,2), (0,3), ...: decoded exactly."""
    j = (1 + math.isqrt(1 + 8 * index)) // 2
    return index - j * (j - 1) // 2, j


def _balanced_folds(counts: list[int], n_folds: int, rng: np.random.Generator) -> list[list[int]]:
    """Identities (by index) per fold: each identity in one fold, same-pair capacity spread evenly."""
    shuffled = rng.permutation(len(counts)).tolist()  # ties broken at random, reproducibly
    order = sorted(shuffled, key=lambda i: -(counts[i] * (counts[i] - 1) // 2))  # stable: keeps the random tie order
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    capacity = [0] * n_folds
    for identity in order:
        fold = min(range(n_folds), key=lambda f: (capacity[f], len(folds[f])))
        folds[fold].append(int(identity))
        capacity[fold] += counts[identity] * (counts[identity] - 1) // 2
    return folds


class _PairIndex:
    """All distinct pairs of a fold's images, numbered, so that a uniform draw of numbers is a draw of pairs.

    Matched pairs are numbered identity by identity, (0,1), (0,2), (1,2), (0,3), ... within each.
    Mismatched pairs (image i of identity k, image j of a later identity) are numbered block by block
    over k; nothing is enumerated, so memory stays linear in the number of identities.
    """

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts
        self.same_sizes = counts * (counts - 1) // 2
        self.same_ends = np.cumsum(self.same_sizes)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first image of each identity, all images in a row
        self.later = int(counts.sum()) - np.cumsum(counts)  # images of the identities after each one
        self.diff_sizes = counts * self.later
        self.diff_ends = np.cumsum(self.diff_sizes)

    @property
    def n_same(self) -> int:
        return int(self.same_ends[-1])

    @property
    def n_different(self) -> int:
        return int(self.diff_ends[-1])

    def same(self, number: int) -> tuple[int, int, int, int]:
        k = int(np.searchsorted(self.same_ends, number, side="right"))
        i, j = _pair_in_identity(number - int(self.same_ends[k] - self.same_sizes[k]))
        return k, i, k, j

    def different(self, number: int) -> tuple[int, int, int, int]:
        k = int(np.searchsorted(self.diff_ends, number, side="right"))
        local = number - int(self.diff_ends[k] - self.diff_sizes[k])
        i, rest = divmod(local, int(self.later[k]))
        image = int(self.starts[k] + self.counts[k]) + rest  # among all images in a row
        m = int(np.searchsorted(self.starts, image, side="right")) - 1
        return k, i, m, image - int(self.starts[m])


def _sample_fold(identities: list[int], counts: list[int], n_each: int, rng: np.random.Generator, fold: int, n_folds: int
                 ) -> list[tuple[int, int, int, int, bool]]:
    """``n_each`` distinct matched and mismatched pairs as (identity_a, image_a, identity_b, image_b, same)."""
    index = _PairIndex(np.array([counts[i] for i in identities], dtype=np.int64))
    for kind, capacity in (("matched (same-identity)", index.n_same), ("mismatched", index.n_different)):
        if capacity < n_each:
            raise UserError(
                f"fold {fold + 1} of {n_folds} can form only {capacity} distinct {kind} pairs "
                f"from its {len(identities)} identities, "
                f"{n_each} needed (each identity's images stay in one fold, as in LFW): lower per_fold or folds, or add images"
            )
    pairs = []
    for same, capacity, decode in ((True, index.n_same, index.same), (False, index.n_different, index.different)):
        for number in np.sort(rng.choice(capacity, n_each, replace=False)):
            a, i, b, j = decode(int(number))
            pairs.append((identities[a], i, identities[b], j, same))
    return pairs


def _lfw_number(path: Path, identity: str) -> int:
    match = _LFW_FILE.match(path.name)
    # Only names the reader finds again: exactly name_%04d.<ext> with an extension it tries.
    if match is None or match["name"] != identity or match["ext"] not in PAIR_IMAGE_EXTENSIONS \
            or path.name != f"{identity}_{int(match['number']):04d}.{match['ext']}":
        raise UserError(
            f"{path} is not named as LFW names images ({identity}/{identity}_0001.jpg), so an LFW pairs file cannot "
            "refer to it: write a CSV pairs file instead (an output name ending in .csv)"
        )
    return int(match["number"])


def looks_like_pairs_file(path: str | Path) -> bool:
    """Whether ``path`` begins like a pairs file (LFW's header and pair lines, or CSV pair rows), or is empty:
    what ``tripletnet pairs --out`` may replace without ``--overwrite``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    lines = [line.strip() for line in head.splitlines() if line.strip()][:2]
    if not lines:
        return True
    tokens = lines[0].split()
    if 1 <= len(tokens) <= 2 and all(token.isdigit() for token in tokens):  # LFW: a header of counts, then pairs
        pair = lines[1].split() if len(lines) > 1 else []
        numbers = pair[1:] if len(pair) == 3 else pair[1::2]  # "name n m" or "name n other m"
        return not pair or (len(pair) in (3, 4) and all(number.isdigit() for number in numbers))
    fields = [field.strip().lower() for field in lines[0].split(",")]
    return fields in _CSV_HEADERS or (len(fields) in (3, 4) and fields[2] in _TRUE | _FALSE)


def write_pairs_file(
    images_dir: str | Path,
    out: str | Path,
    folds: int = 10,
    per_fold: int = 600,
    seed: int = 0,
    log: Logger = log_stderr,
) -> PairList:
    """Draw a balanced pairs file from ``images_dir/<identity>/<images>`` and write it atomically.

    Each fold holds ``per_fold / 2`` distinct matched and as many distinct mismatched pairs, drawn
    uniformly among the pairs its identities can form; every identity belongs to one fold (as in
    LFW), so a threshold chosen on other folds never saw the test fold's people. An identity with a
    single image takes part in mismatched pairs only. The same folder and seed give the same file.

    Args:
        images_dir: one folder per identity (e.g. the test split of a dataset).
        out: the file to write; CSV (path_a,path_b,same,fold) if it ends in ``.csv``, else LFW format.
        folds: number of folds.
        per_fold: pairs per fold, even (half matched, half mismatched).
        seed: seed of the draw.
        log: where the summary goes.

    Returns:
        The pairs as :func:`read_pairs` reads the written file back.

    Raises:
        ParameterError: folds, per_fold or seed out of range.
        UserError: too few identities or images, names LFW cannot express, or the file cannot be written.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ParameterError("folds", f"must be a positive whole number, got {folds!r}")
    if isinstance(per_fold, bool) or not isinstance(per_fold, int) or per_fold < 2 or per_fold % 2:
        raise ParameterError(
            "per_fold", f"must be an even number of at least 2 (half matched, half mismatched pairs), got {per_fold!r}"
        )
    check_seed(seed)
    root = Path(images_dir).expanduser().absolute()
    target = Path(out).expanduser().absolute()
    as_csv = target.suffix.lower() == ".csv"
    entries = list_image_folder(root)
    if any(entry.split is not None for entry in entries):
        raise UserError(f"{root} holds train/ and test/ folders: give the split to draw pairs from, e.g. {root / 'test'}")
    names = sorted({entry.identity for entry in entries})
    files: dict[str, list[Path]] = {name: [] for name in names}
    for entry in entries:
        files[entry.identity].append(entry.path)
    if len(names) < 2 * folds:
        most = len(names) // 2
        fewer = f": at most {most} folds can be drawn from it" if most >= 2 else ": a pairs file needs at least 4 (two folds)"
        raise UserError(
            f"{root} has {len(names)} identities; {folds} folds disjoint in identities need at least {2 * folds} "
            f"(two per fold){fewer}"
        )
    if not as_csv:
        for name in names:
            if any(ch.isspace() for ch in name):
                raise UserError(f"identity {name!r} has a space, which the LFW format cannot hold: write a CSV pairs file (.csv)")
    counts = [len(files[name]) for name in names]
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int, int, int, int, bool]] = []
    for fold, members in enumerate(_balanced_folds(counts, folds, rng)):
        pairs.extend((fold, *pair) for pair in _sample_fold(sorted(members), counts, per_fold // 2, rng, fold, folds))
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path_a", "path_b", "same", "fold"])
        for fold, a, i, b, j, same in pairs:
            writer.writerow(
                [
                    files[names[a]][i].relative_to(root).as_posix(),
                    files[names[b]][j].relative_to(root).as_posix(),
                    int(same),
                    fold,
                ]
            )
        text = buffer.getvalue()
    else:
        lines = [f"{folds}\t{per_fold // 2}"]
        for _, a, i, b, j, same in pairs:
            na, nb = names[a], names[b]
            ia, ib = _lfw_number(files[na][i], na), _lfw_number(files[nb][j], nb)
            lines.append(f"{na}\t{ia}\t{ib}" if same else f"{na}\t{ia}\t{nb}\t{ib}")
        text = "\n".join(lines) + "\n"
    atomic_write_text(target, text)  # a failure is a WriteError naming the file
    log(
        f"wrote {target}: {folds} folds of {per_fold // 2} matched and {per_fold // 2} mismatched pairs "
        f"from {len(names)} identities (seed {seed})"
        # Its names are relative to root; read beside another folder, evaluate needs to be told where they are.
        + ("" if target.parent == root
           else f"; its names are relative to {root}: evaluate it with --pairs {target} --images {root}")
    )
    return read_pairs(target, root)
