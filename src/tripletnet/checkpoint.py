"""Moved to :mod:`tripletnet.training.checkpoint`; this name stays importable until every caller uses the new path."""

from .training.checkpoint import (
    FORMAT,
    checkpoint_input_shape,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

__all__ = ["FORMAT", "checkpoint_input_shape", "load_checkpoint", "model_from_checkpoint", "save_checkpoint"]
