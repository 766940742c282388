"""What an evaluation protocol declares, and the memory bound on the pairs a protocol may draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol as TypingProtocol

import torch

from ....errors import ParameterError
from ...results import KFoldResult, VerificationResult

# Peak memory of drawing, measuring and scoring random pairs, per pair (int64 indices and their
# temporaries in draw_pairs, float64 distances, the sorted copies and ROC arrays of
# verify_distances): the peak RSS grew by 100-130 bytes per pair at 2 and 8 million pairs (pairs
# and k-fold, 10,000 x 64 embeddings); twice that leaves room for other allocators and inputs.
BYTES_PER_PAIR = 256
# 2 GiB of pairs (8.4 million) keeps a draw well inside a laptop's memory; the exhaustive answer for
# more pairs is the all-pairs protocol, whose memory does not grow with the number of pairs.
PAIR_MEMORY_LIMIT = 2 << 30
MAX_PAIRS = PAIR_MEMORY_LIMIT // BYTES_PER_PAIR
# Repeated draws run one after another, so memory is one draw's; the product bounds the work
# (about 2 minutes per 100 million pairs on one core).
MAX_REPEATED_PAIRS = 200_000_000


def check_pair_budget(n_pairs: int, repeats: int = 1) -> None:
    """Refuse, before any work, a number of random pairs (times repeats) beyond the documented caps.

    Raises:
        ParameterError: naming ``n_pairs`` (with the memory estimate) or ``repeats``.
    """
    if n_pairs > MAX_PAIRS:
        raise ParameterError(
            "n_pairs",
            f"of {n_pairs:,} needs about {n_pairs * BYTES_PER_PAIR / 2**30:.1f} GiB ({BYTES_PER_PAIR} bytes per pair), "
            f"over the {PAIR_MEMORY_LIMIT / 2**30:.0f} GiB limit ({MAX_PAIRS:,} pairs); "
            "for every pair of the test set use the all-pairs protocol",
        )
    if n_pairs * repeats > MAX_REPEATED_PAIRS:
        raise ParameterError(
            "repeats",
            f"x n_pairs = {repeats:,} x {n_pairs:,} = {n_pairs * repeats:,} pairs, over the limit of {MAX_REPEATED_PAIRS:,} "
            "pairs drawn in total",
        )


class ProtocolRun(TypingProtocol):
    """The signature of a protocol's evaluation function."""

    def __call__(
        self, embeddings: torch.Tensor, labels: torch.Tensor, *, far: float, n_pairs: int | None, seed: int
    ) -> VerificationResult | KFoldResult: ...


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: how the verification pairs are chosen and scored.

    Attributes:
        name: the name users type (``--protocol NAME``).
        description: one line for help texts and the README.
        run: ``run(embeddings, labels, *, far, n_pairs, seed)`` returning a VerificationResult
            (or a KFoldResult, whose ``pooled`` result is the protocol's VerificationResult).
        default_n_pairs: the number of pairs drawn when ``n_pairs`` is not given; None for a
            protocol that takes no ``n_pairs`` (it decides its pairs itself).
        repeatable: whether repeated draws (``repeats`` > 1, mean and std over seeds) make sense.
    """

    name: str
    description: str
    run: ProtocolRun
    default_n_pairs: int | None = None
    repeatable: bool = False

    def uses(self, option: str) -> bool:
        """Whether this protocol reads the evaluation option ``option`` (far, seed, n_pairs, repeats)."""
        if option == "n_pairs":
            return self.default_n_pairs is not None
        if option == "repeats":
            return self.repeatable
        return option in ("far", "seed")

    def check_options(self, *, n_pairs: int | None = None, repeats: int = 1) -> int | None:
        """Refuse options this protocol would ignore and pair counts beyond the memory cap.

        Args:
            n_pairs: the requested number of pairs, or None for the protocol's default.
            repeats: the requested number of draws (1 = a single evaluation).

        Returns:
            The number of pairs the protocol will draw (None when it takes no ``n_pairs``).

        Raises:
            ParameterError: naming the option.
        """
        if n_pairs is not None and not self.uses("n_pairs"):
            raise ParameterError("n_pairs", f"is not used by protocol {self.name!r}, which chooses its own pairs")
        if repeats < 1:
            raise ParameterError("repeats", f"must be at least 1, got {repeats}")
        if repeats > 1 and not self.uses("repeats"):
            raise ParameterError("repeats", f"is not used by protocol {self.name!r}; only random pairs are redrawn")
        pairs = self.default_n_pairs if n_pairs is None else n_pairs
        if pairs is None:
            return None
        if pairs < 2:
            raise ParameterError("n_pairs", f"must be at least 2, got {pairs}")
        check_pair_budget(pairs, repeats)
        return pairs
