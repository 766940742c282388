"""Moved to :mod:`tripletnet.mining.schedule`; this name stays importable until config.py imports the new path."""

from .mining.schedule import ScheduleEntry, miner_for_epoch, parse_schedule

__all__ = ["ScheduleEntry", "miner_for_epoch", "parse_schedule"]
