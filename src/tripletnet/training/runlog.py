"""metrics.jsonl: one JSON record per epoch, written and read by this module only.

Each record is appended and fsynced as soon as its epoch ends, so a crash loses at most the line
being written; :func:`read_records` skips such a torn last line. Only the main process writes
(``is_main_process``): other processes of a multi-process run keep the same calls but write nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import append_line, atomic_write_text

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """The metrics file of one run folder.

    Args:
        run_dir: the run folder; the file is ``run_dir / "metrics.jsonl"``.
        is_main_process: False in every process but the one that writes the run's files.
    """

    def __init__(self, run_dir: str | os.PathLike, *, is_main_process: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.is_main_process = is_main_process

    def start(self, records: Iterable[dict[str, Any]] = ()) -> None:
        """(Re)write the file with ``records`` (a resumed run's history; none for a new run), atomically."""
        if self.is_main_process:
            atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in records))

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it, so it survives a crash right after."""
        if not self.is_main_process:
            return
        append_line(self.path, json.dumps(record))

    def read(self) -> list[dict[str, Any]]:
        """The records written so far (see :func:`read_records`)."""
        return read_records(self.path)


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file back, one dict per epoch.

    A last line cut short by a crash (no newline, not valid JSON) is skipped; damage anywhere
    else is a :class:`UserError` naming the line.

    Args:
        path: the metrics.jsonl file, or a run folder holding one.

    Returns:
        The records in file order.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no metrics file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read metrics file {path}: {exc}") from None
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, without its newline: torn by a crash
                break
            raise UserError(f"{path}: line {number} is not a JSON record") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records
