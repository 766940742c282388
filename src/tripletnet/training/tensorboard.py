"""TensorBoard output of a run (``--tensorboard DIR``): per-epoch scalars and the projector's embeddings.

Every number of an epoch's metrics.jsonl record becomes a scalar at step = epoch, under the record's
own key (``train_loss``, ``val``, ``precision_at_1``, ``lr``, ``epoch_seconds``, ...), so the two
never disagree about a name. At the end of the run the evaluation images' embeddings go to the
projector with their labels and the images themselves as sprites. TensorBoard is optional: asking for
it without the package installed is refused before the run starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

INSTALL_HINT = 'pip install "tripletnet[tensorboard]"'
# The projector's sprite sheet is one image of at most 8192 x 8192 pixels; more images than this are
# subsampled evenly (28 x 28 MNIST digits fit 85,000; the per-epoch evaluation subset is 2,000 by default).
MAX_PROJECTOR_IMAGES = 10_000


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers, by key: floats and ints, not booleans (``collapsed``), strings or missing values."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch" and math.isfinite(value)
    }


class TensorBoardWriter:
    """Writes a run's TensorBoard event files into ``folder``.

    Args:
        folder: the log folder (``tensorboard --logdir folder``); created if missing.

    Raises:
        UserError: the tensorboard package is not installed (the message says how to install it).
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}") from None
        self.folder = Path(folder)
        self._summary_writer = SummaryWriter
        self._open: Any = None  # opened at the first write, so that a run refused before its first epoch leaves no files

    @property
    def _writer(self) -> Any:
        if self._open is None:
            try:
                self._open = self._summary_writer(log_dir=str(self.folder))
            except OSError as exc:
                raise UserError(f"cannot write TensorBoard logs into {self.folder}: {exc.strerror or exc}") from None
        return self._open

    def epoch(self, record: dict[str, Any]) -> None:
        """Add every number of one epoch's metrics.jsonl record as a scalar at step ``record['epoch']``."""
        for key, value in scalars_of(record).items():
            self._writer.add_scalar(key, value, global_step=int(record["epoch"]))
        self._writer.flush()

    def projector(self, embeddings: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, epoch: int) -> None:
        """The embeddings (N, D) with their labels and uint8 images (N, C, H, W or N, H, W) as sprites, for the projector."""
        if images.ndim == 3:  # grey images stored without a channel axis
            images = images.unsqueeze(1)
        if len(embeddings) > MAX_PROJECTOR_IMAGES:  # an even subsample keeps the sprite sheet within its size limit
            keep = torch.linspace(0, len(embeddings) - 1, MAX_PROJECTOR_IMAGES).long()
            embeddings, labels, images = embeddings[keep], labels[keep], images[keep]
        self._writer.add_embedding(
            embeddings.detach().float().cpu(),
            metadata=[str(int(label)) for label in labels],
            label_img=images.detach().cpu().float() / 255.0,
            global_step=epoch,
            tag="test_embeddings",
        )
        self._writer.flush()

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
