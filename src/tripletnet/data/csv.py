"""Images listed in a CSV file: ``path,label`` or ``path,label,split`` rows.

* A header row ``path,label`` or ``path,label,split`` is optional (recognised by those names).
* ``path`` is relative to the CSV file's folder (or absolute); ``label`` names the identity (any
  text); ``split`` is ``train`` or ``test``. Either every row gives a split or none does: without
  one, the rows are split as a folder would be (by identity or by image, see :mod:`.folder`).
* Blank rows are skipped. Fields are trimmed of surrounding spaces; quote a field that holds a comma.

Every mistake is reported with its line number: a wrong number of fields, an empty path or label, an
unknown split, and the images that do not exist (all of them counted, the first few named).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..console import Logger, log_stderr
from ..errors import UserError
from .folder import load_image_list
from .types import DEFAULT_OPTIONS, ImageEntry, ImageOptions, ImageSplits

SPLITS = ("train", "test")
_HEADERS = (["path", "label"], ["path", "label", "split"])
_SHOWN_MISSING = 3  # how many missing images an error names; the rest are counted


def read_text(path: Path, what: str) -> str:
    """A user's UTF-8 text file (a BOM, as spreadsheets write, is dropped); every failure a UserError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def csv_rows(path: Path, what: str, headers: tuple[list[str], ...]) -> list[tuple[int, list[str]]]:
    """(line number, trimmed fields) of each non-blank row, without a first row equal to one of ``headers``."""
    reader = csv.reader(io.StringIO(read_text(path, what), newline=""), strict=True)  # strict: a stray quote is an error
    rows = []
    try:
        for fields in reader:
            trimmed = [field.strip() for field in fields]
            if any(trimmed):
                rows.append((reader.line_num, trimmed))
    except csv.Error as exc:
        raise UserError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if rows and [field.lower() for field in rows[0][1]] in headers:
        return rows[1:]
    return rows


def is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a name too long or holding a NUL byte is simply not one."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


class MissingFilesError(UserError):
    """Files a list names do not exist in the folder its names were looked up in."""


def missing_files_error(source: Path, missing: list[str], where: Path) -> MissingFilesError:
    """One line for the files a list names that do not exist: counted, the first few shown."""
    shown = "; ".join(missing[:_SHOWN_MISSING]) + ("; ..." if len(missing) > _SHOWN_MISSING else "")
    return MissingFilesError(f"{source}: {len(missing)} listed images do not exist in {where}: {shown}")


def read_image_list_csv(path: str | Path) -> list[ImageEntry]:
    """Parse an image list (see the module doc) without reading the images.

    Args:
        path: the CSV file.

    Returns:
        One :class:`~tripletnet.data.types.ImageEntry` per row, paths resolved against the file's folder.

    Raises:
        UserError: a bad row (with its line number), listed images that do not exist, or no rows at all.
    """
    path = Path(path).expanduser().absolute()
    rows = csv_rows(path, "CSV file", _HEADERS)
    if not rows:
        raise UserError(f"{path} lists no images: expected rows path,label or path,label,split")
    with_split = len(rows[0][1]) == 3
    entries, missing = [], []
    for line, fields in rows:
        where = f"{path.name} line {line}"
        if len(fields) not in (2, 3):
            found = "1 field" if len(fields) == 1 else f"{len(fields)} fields"
            other = next((sep for sep in (";", "\t", "|") if sep in fields[0]), None) if len(fields) == 1 else None
            hint = f" (the row is separated by {other!r}: the list must be comma-separated)" if other else ""
            raise UserError(f"{where}: expected path,label or path,label,split, found {found}{hint}")
        if (len(fields) == 3) != with_split:
            raise UserError(
                f"{where}: {'no' if with_split else 'a'} split column, unlike line {rows[0][0]}: "
                "give a split on every row or on none"
            )
        image, label = fields[0], fields[1]
        if not image or not label:
            raise UserError(f"{where}: empty {'path' if not image else 'label'}")
        split = fields[2].lower() if with_split else None
        if split is not None and split not in SPLITS:
            raise UserError(f"{where}: unknown split {fields[2]!r} (use {' or '.join(SPLITS)})")
        image_path = path.parent / image
        if not is_file(image_path):
            missing.append(f"line {line}: {image}")
        entries.append(ImageEntry(image_path, label, split, f"{where} ({image})"))
    if missing:
        raise missing_files_error(path, missing, path.parent)
    return entries


def load_csv_dataset(path: str | Path, options: ImageOptions = DEFAULT_OPTIONS, log: Logger = log_stderr) -> ImageSplits:
    """Load the images a CSV file lists; the size, channel and split rules are those of image folders.

    Args:
        path: the CSV file (see the module doc for its rows).
        options: size, channels and split rules (see :class:`~tripletnet.data.types.ImageOptions`);
            the split options are used when the rows give no split.
        log: where progress lines and warnings go.

    Returns:
        :class:`~tripletnet.data.types.ImageSplits`, paths relative to the CSV file's folder.
    """
    csv_path = Path(path).expanduser().absolute()
    return load_image_list(read_image_list_csv(csv_path), csv_path.stem, csv_path.parent, options, log)
