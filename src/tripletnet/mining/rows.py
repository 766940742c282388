"""Every anchor's row of the distance matrix sorted once: the machinery semi-hard and batch-all share.

In a row sorted ascending, negatives and positives together, "the first negative farther than this
positive" and "how many negatives are closer than d(a,p) + margin" are positions and counts read off
the order, so no (B, B, B) tensor and no per-pair search is needed: O(B^2 log B) in all.

The sort is of packed int64 keys (value bits | tie bit | column): non-negative float32 bit patterns
order like the floats, the tie bit decides whether positives or negatives come first at equal
values (which makes strict inequalities exact), and the column makes every key unique. On CPU
the sort runs in numpy (a value-only sort is several times faster than torch's or numpy's
argsort there); :func:`sorted_rows_torch` is the same computation in torch for other devices.
Decisions are made on float32 distances either way.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

import numpy as np
import torch

from .base import check_inputs

_LAST_KEY = np.iinfo(np.int64).max  # the anchor's own entry: sorts to the end of its row


def to_numpy(dist: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 distances and labels as CPU numpy arrays."""
    check_inputs(dist, labels)
    d = dist.detach().to("cpu", torch.float32).contiguous().numpy()
    return d, labels.detach().cpu().numpy()


def to_float32(dist: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Checked, detached, contiguous float32 distances on their own device (the torch path)."""
    check_inputs(dist, labels)
    return dist.detach().to(torch.float32).contiguous()


# np.ndarray on the CPU fast path, torch.Tensor elsewhere. Any, because the code that serves both
# paths picks one per call, which a static checker cannot follow through a union.
Array: TypeAlias = Any


def arange_like(n: int, like: Array) -> Array:
    """0..n-1 as int64, in ``like``'s library (and on its device)."""
    return np.arange(n) if isinstance(like, np.ndarray) else torch.arange(n, device=like.device)


def repeat(values: Array, counts: Array) -> Array:
    """Each entry of ``values`` repeated ``counts`` times (np.repeat / torch.repeat_interleave)."""
    return np.repeat(values, counts) if isinstance(values, np.ndarray) else torch.repeat_interleave(values, counts)


def flatnonzero(mask: Array) -> Array:
    """Flat positions of the True entries, ascending."""
    return np.flatnonzero(mask) if isinstance(mask, np.ndarray) else torch.nonzero(mask.reshape(-1)).flatten()


def cumsum(values: Array) -> Array:
    return np.cumsum(values) if isinstance(values, np.ndarray) else torch.cumsum(values, 0)


class Rows(NamedTuple):
    """Every anchor's row sorted ascending as packed keys, its own entry moved to the end.

    numpy arrays from :func:`sorted_rows`, torch tensors from :func:`sorted_rows_torch`.
    """

    keys: Array  # (B, B) int64: value bits | tie bit | column; last column is the anchor
    is_positive: Array  # (B, B) bool; False in the last column
    column_mask: int
    num_positives: Array  # (B,) positives per anchor

    def positives(self) -> tuple[Array, Array]:
        """Flat positions of the positives, row by row and ascending, and their anchors."""
        anchor = repeat(arange_like(len(self.keys), self.keys), self.num_positives)  # cheaper than // B
        return flatnonzero(self.is_positive), anchor

    def columns(self, flat_positions: Array) -> Array:
        return self.keys.ravel()[flat_positions] & self.column_mask

    def negatives(self) -> Array:
        """(B, B) bool: the negatives (neither a positive nor the anchor itself)."""
        negative = ~self.is_positive
        negative[:, -1] = False
        return negative


def sorted_rows(values: np.ndarray, labels: np.ndarray, positives_first: bool) -> Rows:
    """Sort each row of ``values`` (non-negative float32; negative ones count as 0).

    At equal values an anchor's positives sort before its negatives when ``positives_first``,
    else after them. One int64 sort of packed keys, no argsort.
    """
    b = len(labels)
    column_bits = max(1, (b - 1).bit_length())
    tie_bit = 1 << column_bits
    # Non-negative float32 bit patterns order like the floats; 31 bits + tie bit + column fit int64.
    keys = values.view(np.int32).astype(np.int64)
    np.maximum(keys, 0, out=keys)
    np.left_shift(keys, column_bits + 1, out=keys)
    # The low bits depend on the anchor only through its class: build one row per class.
    classes, class_of, class_size = np.unique(labels, return_inverse=True, return_counts=True)
    later = classes[:, None] != labels[None, :] if positives_first else classes[:, None] == labels[None, :]
    low = np.arange(b, dtype=np.int64) | (later.astype(np.int64) << column_bits)
    np.bitwise_or(keys, low[class_of.ravel()], out=keys)
    np.fill_diagonal(keys, _LAST_KEY)
    keys.sort(axis=1)
    later_entries = (keys & tie_bit) != 0
    is_positive = ~later_entries if positives_first else later_entries
    is_positive[:, -1] = False
    return Rows(keys, is_positive, tie_bit - 1, class_size[class_of.ravel()] - 1)


def sorted_rows_torch(values: torch.Tensor, labels: torch.Tensor, positives_first: bool) -> Rows:
    """:func:`sorted_rows` in torch, on ``values``' device; the same keys, so the same order."""
    b = len(labels)
    device = values.device
    column_bits = max(1, (b - 1).bit_length())
    tie_bit = 1 << column_bits
    keys = values.contiguous().view(torch.int32).to(torch.int64).clamp_min_(0).bitwise_left_shift_(column_bits + 1)
    classes, class_of, class_size = torch.unique(labels, return_inverse=True, return_counts=True)
    later = classes[:, None] != labels[None, :] if positives_first else classes[:, None] == labels[None, :]
    low = torch.arange(b, device=device, dtype=torch.int64) | (later.to(torch.int64) << column_bits)
    keys |= low[class_of]
    keys.fill_diagonal_(int(_LAST_KEY))
    keys = keys.sort(dim=1).values
    later_entries = (keys & tie_bit) != 0
    is_positive = ~later_entries if positives_first else later_entries
    is_positive[:, -1] = False
    return Rows(keys, is_positive, tie_bit - 1, class_size[class_of] - 1)
