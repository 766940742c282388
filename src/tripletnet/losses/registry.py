"""The one list of loss terms added to the mined class triplets.

Every training step computes the class triplet loss of its miner (:mod:`.triplet`); each
registered term that a run's config enables adds ``weight x term``. A term may keep state
between steps (cross-batch memory's queue), made once per run by ``make_state``.

To add a term: write ``losses/<name>.py`` with its function and a ``TERM = LossTerm(...)``, add
the module to ``_MODULES`` in :mod:`tripletnet.losses`, give it its options in
:class:`~tripletnet.config.TrainConfig`, and test it against a reference implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LossTerm:
    """A registered loss term.

    Attributes:
        name: its name.
        description: one line for the CLI help and the README.
        enabled: whether a config uses it.
        weight: its weight under a config.
        make_state: (config, embedding size, device) -> the state it keeps between steps, or None.
        compute: (embeddings, labels, config, state) -> the term (0-d, differentiable).
    """

    name: str
    description: str
    enabled: Callable[[Any], bool]
    weight: Callable[[Any], float]
    compute: Callable[[torch.Tensor, torch.Tensor, Any, Any], torch.Tensor]
    make_state: Callable[[Any, int, torch.device], Any] | None = None
