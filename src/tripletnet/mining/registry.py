"""The one list of miners. The schedule parser, ``triplet_step``, the training loop, the CLI help,
the README table and the benchmarks all read it.

To add a miner: write ``mining/<name>.py`` with its function(s) and a ``MINER = MinerSpec(...)``,
add that module to ``_MODULES`` below, and add a brute-force test in tests/test_mining.py.
"""

from __future__ import annotations

from ..errors import ParameterError
from . import batch_all, hard, semihard
from .base import MinerSpec

_MODULES = (semihard, hard, batch_all)

MINERS: dict[str, MinerSpec] = {module.MINER.name: module.MINER for module in _MODULES}
"""Every registered miner by name, in the order the CLI and README list them."""


def miner_names() -> tuple[str, ...]:
    """The registered miner names, e.g. ``("semihard", "hard", "batch_all")``."""
    return tuple(MINERS)


def get_miner(name: str) -> MinerSpec:
    """The miner registered as ``name``.

    Args:
        name: a miner name; ``-`` is accepted for ``_`` (``batch-all``).

    Returns:
        Its :class:`MinerSpec`.

    Raises:
        ParameterError: for an unknown name (the message lists the known ones).
    """
    try:
        return MINERS[name.replace("-", "_")]
    except KeyError:
        raise ParameterError("miner", f"must be one of {', '.join(MINERS)}, got {name!r}") from None


def describe_miners() -> list[tuple[str, str]]:
    """(name, one-line description) of every miner, for the CLI help and the README table."""
    return [(spec.name, spec.description) for spec in MINERS.values()]
