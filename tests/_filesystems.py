"""A real small filesystem for tests of full and read-only disks."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(where: Path, size_bytes: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``where`` (root only); the test is skipped where mounting is
    not allowed (tests/test_fileio.py injects ENOSPC instead, so the behaviour stays covered)."""
    where.mkdir()
    options = f"size={max(size_bytes, 4096)}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
