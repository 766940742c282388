"""Mining schedules: which miner to use in which epoch.

A schedule is written ``"semihard:0.4,hard"``: each entry is ``miner[:fraction]`` where the
fraction is the share of the epochs that miner runs for, in order; the last entry may omit its
fraction and takes the remaining epochs. ``"hard"`` alone is hard mining throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ParameterError
from .registry import MINERS


@dataclass(frozen=True)
class ScheduleEntry:
    miner: str
    fraction: float  # share of all epochs


def parse_schedule(text: str) -> tuple[ScheduleEntry, ...]:
    """Parse and check a schedule string; raise :class:`ParameterError` naming ``mining`` if it is malformed
    (the CLI spells it --mining, a TOML file names its key and the file)."""
    raw = [part.strip() for part in text.split(",") if part.strip()]
    if not raw:
        raise ParameterError("mining", "is empty: give e.g. 'semihard:0.4,hard'")
    entries: list[ScheduleEntry] = []
    for position, part in enumerate(raw):
        name, _, fraction_text = part.partition(":")
        name = name.strip().replace("-", "_")
        if name not in MINERS:
            raise ParameterError("mining", f"names an unknown miner {name!r}; choose from {', '.join(MINERS)}")
        is_last = position == len(raw) - 1
        if fraction_text:
            try:
                fraction = float(fraction_text)
            except ValueError:
                raise ParameterError("mining", f"has {fraction_text!r} in {part!r}, which is not a fraction") from None
            if not 0 < fraction <= 1:
                raise ParameterError("mining", f"has a fraction outside (0, 1] in {part!r}")
        elif is_last:
            fraction = 1.0 - sum(e.fraction for e in entries)
        else:
            raise ParameterError("mining", f"may leave out the fraction only in its last entry, not in {part!r}")
        entries.append(ScheduleEntry(name, fraction))
    total = sum(e.fraction for e in entries)
    if total > 1 + 1e-9:
        raise ParameterError("mining", f"has fractions that add up to {total:g}, more than 1")
    if entries[-1].fraction <= 1e-12:
        raise ParameterError("mining", "leaves the last miner no epochs; drop it or shorten the ones before")
    return tuple(entries)


def miner_for_epoch(schedule: tuple[ScheduleEntry, ...], epoch: int, epochs: int) -> str:
    """The miner for 1-based ``epoch`` of ``epochs``.

    Entry i covers the epochs up to round(cumulative fraction * epochs); the reference's
    "semi-hard for the first 40%" over 20 epochs is thus epochs 1-8, then hard from epoch 9.
    Each entry runs for at least one epoch while epochs last, so a short run never skips the
    schedule's first miner: one epoch of "semihard:0.4,hard" is semi-hard, not hard mining from
    random weights (which collapses the embeddings).
    """
    cumulative = 0.0
    end = 0
    for entry in schedule:
        cumulative += entry.fraction
        end = max(math.floor(cumulative * epochs + 0.5), end + 1)
        if epoch <= end:
            return entry.miner
    return schedule[-1].miner
