"""What every section shares: the run's settings, logging and markdown formatting."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The repository root: subprocesses run from here so that ``-m benchmarks.<module>`` resolves.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Options of one benchmark run, passed to every section."""

    quick: bool
    threads: int
    data_path: Path
    memory_cap_gib: float  # address-space cap per subprocess, so a runaway case cannot take the shared machine
    runs: tuple[Path, ...] = ()  # run folders whose metrics.jsonl the time-to-target section reads
    # Smaller sizes for a busy shared machine, where the full ones would run for an hour; None = the section's own.
    mining_batches: tuple[int, ...] | None = None
    e2e_images: int | None = None
    tsne_n: int | None = None
    allpairs_70k: bool = True  # the all-pairs section's 70,000-embedding case (minutes per pass)


def log(message: str) -> None:
    """Progress goes to stderr; the results go to the markdown file."""
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"
