"""What a long command shows a person while it works: one-line messages and progress bars on stderr.

Library code takes a ``log`` callable (default :func:`log_stderr`) instead of printing, so a
notebook or a test can capture or silence it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

Logger = Callable[[str], None]


def log_stderr(message: str) -> None:
    """Print ``message`` on stderr at once (stdout is kept for results, e.g. ``--json``)."""
    print(message, file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T] | Iterable[T]:
    """A tqdm bar over ``iterable`` when stderr is a terminal; the iterable itself otherwise.

    Logs and CI output stay free of carriage-return noise.
    """
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
