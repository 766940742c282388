"""Training: the loop in phases (:mod:`.loop`), one step (:mod:`.step`), the collapse guard
(:mod:`.collapse`), metrics.jsonl (:mod:`.runlog`), checkpoints (:mod:`.checkpoint`) and the
validation loss (:mod:`.validation`)."""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .collapse import CollapseGuard, is_collapsed
from .loop import DEVICES, TrainResult, resolve_device, train
from .runlog import RunLog, read_records
from .step import StepStats, embedding_spread, train_step, triplet_step
from .validation import draw_validation_triplets, validation_loss

__all__ = [
    "DEVICES", "CollapseGuard", "RunLog", "StepStats", "TrainResult", "draw_validation_triplets", "embedding_spread",
    "is_collapsed", "load_checkpoint", "model_from_checkpoint", "read_records", "resolve_device", "save_checkpoint",
    "train", "train_step", "triplet_step", "validation_loss",
]
