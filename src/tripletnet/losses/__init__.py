"""Losses: the triplet margin loss of the mined triplets, and the registered terms a run may add to it."""

from __future__ import annotations

from typing import Any

import torch

from . import xbm
from .registry import LossTerm
from .triplet import counted_distance_sums, triplet_hinges, triplet_margin_loss
from .xbm import EmbeddingQueue, memory_triplet_loss

_MODULES = (xbm,)

LOSS_TERMS: dict[str, LossTerm] = {module.TERM.name: module.TERM for module in _MODULES}
"""Every registered loss term by name."""


def enabled_terms(config: Any) -> list[LossTerm]:
    """The terms ``config`` enables, in registry order."""
    return [term for term in LOSS_TERMS.values() if term.enabled(config)]


def term_states(config: Any, embedding_dim: int, device: torch.device) -> dict[str, Any]:
    """The per-run state of each enabled term that keeps one (made once, before the first step)."""
    return {term.name: term.make_state(config, embedding_dim, device) for term in enabled_terms(config)
            if term.make_state is not None}


def added_terms(embeddings: torch.Tensor, labels: torch.Tensor, config: Any, states: dict[str, Any]) -> torch.Tensor | None:
    """Sum of ``weight x term`` over the enabled terms, or None when none is enabled."""
    total: torch.Tensor | None = None
    for term in enabled_terms(config):
        value = term.weight(config) * term.compute(embeddings, labels, config, states.get(term.name))
        total = value if total is None else total + value
    return total


def describe_terms() -> list[tuple[str, str]]:
    """(name, description) of every registered term, for the CLI help and the README."""
    return [(term.name, term.description) for term in LOSS_TERMS.values()]


__all__ = [
    "LOSS_TERMS", "EmbeddingQueue", "LossTerm", "added_terms", "counted_distance_sums", "describe_terms", "enabled_terms",
    "memory_triplet_loss", "term_states", "triplet_hinges", "triplet_margin_loss",
]
