"""The protocol registry: every evaluation protocol by the name users type.

Adding a protocol: write one module here that defines its function and a ``Protocol`` object
(name, description, run, whether it draws ``n_pairs`` and is ``repeatable``), add that object to
``_REGISTERED`` below, and add a test that checks it against a brute force. The CLI's choices,
the option checks and ``evaluate_embeddings`` read this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ....errors import ParameterError
from .all_pairs import ALL_PAIRS
from .base import (
    BYTES_PER_PAIR,
    MAX_PAIRS,
    MAX_REPEATED_PAIRS,
    PAIR_MEMORY_LIMIT,
    Protocol,
    check_pair_budget,
)
from .kfold import FOLDS, KFOLD, KFOLD_PAIRS, kfold, kfold_distances
from .random_pairs import (
    PAIRS,
    RANDOM_PAIRS,
    draw_pairs,
    pair_distances,
    random_pairs,
    repeated_random_pairs,
)

_REGISTERED = (ALL_PAIRS, PAIRS, KFOLD)

PROTOCOLS: Mapping[str, Protocol] = MappingProxyType({protocol.name: protocol for protocol in _REGISTERED})


def get_protocol(name: str) -> Protocol:
    """The registered protocol called ``name``.

    Raises:
        ParameterError: naming ``protocol`` when no protocol has that name.
    """
    if name not in PROTOCOLS:
        raise ParameterError("protocol", f"{name!r} is unknown: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


__all__ = [
    "BYTES_PER_PAIR", "FOLDS", "KFOLD_PAIRS", "MAX_PAIRS", "MAX_REPEATED_PAIRS", "PAIR_MEMORY_LIMIT", "PROTOCOLS",
    "RANDOM_PAIRS", "Protocol", "check_pair_budget", "draw_pairs", "get_protocol", "kfold", "kfold_distances",
    "pair_distances", "random_pairs", "repeated_random_pairs",
]
