"""Verification: is a pair of images the same class? Conventions, exact metrics from explicit
distances, the streamed all-pairs engine, and the protocols that choose the pairs.

The conventions every number follows are in :mod:`.conventions`.
"""

from ..results import KFoldResult, RepeatedPairsResult, VerificationResult
from .conventions import (
    DEFAULT_FARS,
    OperatingPoint,
    allowed_false_accepts,
    check_far,
    far_is_resolved,
)
from .exact import threshold_at_far, verify_distances
from .protocols import (
    PROTOCOLS,
    Protocol,
    draw_pairs,
    get_protocol,
    kfold,
    kfold_distances,
    pair_distances,
    random_pairs,
    repeated_random_pairs,
)
from .streaming import (
    CoarseHistograms,
    FineHistograms,
    PairTiles,
    accumulate,
    all_pairs,
    compute_all_pairs,
    plan_refinement,
)

__all__ = [
    "DEFAULT_FARS", "PROTOCOLS", "CoarseHistograms", "FineHistograms", "KFoldResult", "OperatingPoint", "PairTiles",
    "Protocol", "RepeatedPairsResult", "VerificationResult", "accumulate", "all_pairs", "allowed_false_accepts",
    "check_far", "compute_all_pairs", "draw_pairs", "far_is_resolved", "get_protocol", "kfold", "kfold_distances",
    "pair_distances", "plan_refinement", "random_pairs", "repeated_random_pairs", "threshold_at_far", "verify_distances",
]
