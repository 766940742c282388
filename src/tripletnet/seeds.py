"""The one range every ``--seed`` takes: what torch's generators, numpy and scikit-learn all accept."""

from __future__ import annotations

from .errors import ParameterError

# torch.Generator.manual_seed takes 64 bits, numpy's generators non-negative integers, scikit-learn's
# random_state 0 .. 2**32 - 1: the last is what one seed can mean everywhere.
SEED_MAX = 2**32 - 1


def check_seed(seed: object, name: str = "seed") -> None:
    """Raise :class:`ParameterError` unless ``seed`` is a whole number in 0 .. :data:`SEED_MAX`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ParameterError(name, f"must be a whole number from 0 to {SEED_MAX} (2**32 - 1), got {seed!r}")
