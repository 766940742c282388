"""Seeing collapse (every input mapped to nearly one point) and undoing an epoch that collapses.

:func:`is_collapsed` judges an epoch's mean statistics after the fact. :class:`CollapseGuard`
watches an epoch mined by a miner that can collapse (``MinerSpec.can_collapse``): it snapshots the
weights and optimiser before the epoch, trips when a batch's spread falls below a fraction of the
previous epoch's, and restores the snapshot so the epoch can be rerun with a safe miner.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .step import StepStats

# Collapse thresholds, for unit-norm embeddings (spread ~0.9-1 when healthy, at most 1).
# Measured on a Fashion-MNIST run that collapsed under hard mining: spread 0.97 -> 0.22 -> 0.06
# in two epochs, with the loss stuck just above the margin and the mined pairs at d ~ 0.05.
COLLAPSE_SPREAD = 0.1  # embeddings within ~0.1 of their mean: every input maps near one point
STUCK_LOSS = 0.9  # loss >= 0.9 * margin: no triplet is being separated ...
STUCK_DISTANCE = 0.1  # ... while positives and negatives are both within 0.1 * margin of their anchor

COLLAPSE_DROP = 0.5
"""A guarded epoch is undone when a batch's spread falls below this fraction of the previous epoch's mean."""

FALLBACK_MINER = "semihard"
"""The miner a run continues with after an undone epoch."""


def is_collapsed(stats: StepStats, margin: float) -> bool:
    """True when the embeddings have (nearly) collapsed to one point.

    Either the spread is below ``COLLAPSE_SPREAD``, or the loss is stuck at the margin
    (>= ``STUCK_LOSS`` * margin) with mean d(a,p) and d(a,n) both below ``STUCK_DISTANCE`` * margin:
    the hinge is then ~margin for every triplet, whose gradient cannot separate anything.
    NaN statistics (nothing mined) never count as collapse by themselves.

    Args:
        stats: one step's statistics, or an epoch's means in the same form.
        margin: the triplet margin the statistics were measured with.

    Returns:
        Whether the statistics describe collapsed embeddings.
    """
    if stats.embedding_spread < COLLAPSE_SPREAD:
        return True
    near = STUCK_DISTANCE * margin
    return stats.loss >= STUCK_LOSS * margin and stats.mean_pos_dist < near and stats.mean_neg_dist < near


class CollapseGuard:
    """Snapshot before a risky epoch, a spread threshold during it, undo after a trip.

    Args:
        model: the network being trained.
        optimizer: its optimiser (its state is restored with the weights).
        previous_spread: the previous epoch's mean embedding spread.
        drop: the guard trips below ``drop * previous_spread``.
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, previous_spread: float, drop: float = COLLAPSE_DROP
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.min_spread = drop * previous_spread
        self._snapshot: tuple[dict[str, Any], dict[str, Any]] = copy.deepcopy((model.state_dict(), optimizer.state_dict()))

    def trips(self, stats: StepStats) -> bool:
        """True when this step's spread says the epoch is collapsing."""
        return stats.embedding_spread < self.min_spread

    def undo(self) -> None:
        """Restore the weights and optimiser state from before the epoch."""
        self.model.load_state_dict(self._snapshot[0])
        self.optimizer.load_state_dict(self._snapshot[1])
