"""What every miner shares: the result types, the miner interface, and small helpers.

A miner reads a batch's detached (B, B) distance matrix, its labels and the margin and chooses
(anchor, positive, negative) index triplets. Mining is a choice, not something to differentiate.
Each miner is described by a :class:`MinerSpec` and registered in :mod:`tripletnet.mining.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

from ..errors import ParameterError

LossForm = Literal["triplets", "counts"]
"""How the loss over a miner's choice is computed: from the listed triplets, or from per-pair
counts (:class:`BatchAllCounts`) when the triplets are too many to list."""


class Triplets(NamedTuple):
    """Index triplets into the batch: three int64 tensors of equal length."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.anchor.numel())


class BatchAllCounts(NamedTuple):
    """Mined triplets as counts instead of a list.

    ``per_positive[a, p]``: how many negatives n make (a, p, n) a mined triplet;
    ``per_negative[a, n]``: how many positives p do; both (B, B) float32, zero elsewhere.
    ``total`` is the number of mined triplets.
    """

    per_positive: torch.Tensor
    per_negative: torch.Tensor
    total: int


class MineFunction(Protocol):
    def __call__(self, dist: torch.Tensor, labels: torch.Tensor, margin: float, *, use_numpy: bool | None = None) -> Triplets: ...


class CountFunction(Protocol):
    def __call__(
        self, dist: torch.Tensor, labels: torch.Tensor, margin: float, *, use_numpy: bool | None = None
    ) -> BatchAllCounts: ...


@dataclass(frozen=True)
class MinerSpec:
    """One miner as the rest of tripletnet sees it.

    Attributes:
        name: the name used in ``--mining`` schedules (``semihard``, ``hard``, ...).
        description: one line saying what it mines (CLI help, README table).
        can_collapse: True when mining with it from random weights can collapse the embeddings
            to one point; the training loop guards such epochs (``collapse_fallback``).
        loss_form: ``"triplets"``: the loss is the mean hinge over :attr:`mine`'s list;
            ``"counts"``: the same loss computed from :attr:`count` (never listing the triplets).
        mine: lists the mined triplets (every miner has it; tests check it against brute force).
        count: the mined triplets as per-pair counts; required when ``loss_form == "counts"``.
    """

    name: str
    description: str
    can_collapse: bool
    loss_form: LossForm
    mine: MineFunction
    count: CountFunction | None = None

    def __post_init__(self) -> None:
        if self.loss_form == "counts" and self.count is None:
            raise ParameterError("count", f"is required for miner {self.name!r} whose loss_form is 'counts'")


def check_inputs(dist: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise :class:`ParameterError` unless ``dist`` is (B, B) and ``labels`` has B entries."""
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1] or labels.shape != (dist.shape[0],):
        raise ParameterError(
            "dist", f"must be a (B, B) distance matrix with B labels, got {tuple(dist.shape)} and {tuple(labels.shape)}"
        )


def use_numpy_path(dist: torch.Tensor, use_numpy: bool | None) -> bool:
    """The numpy fast path runs on CPU tensors unless the caller forces one path."""
    return dist.device.type == "cpu" if use_numpy is None else use_numpy


def as_long(values: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """int64 tensor on ``device`` from numpy or torch indices."""
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64)).to(device)


def empty_triplets(device: torch.device) -> Triplets:
    empty = torch.empty(0, dtype=torch.int64, device=device)
    return Triplets(empty, empty, empty)

