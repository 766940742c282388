"""Checkpoints: written atomically, read back with ``weights_only=True`` (nothing is unpickled).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``format``, ``epoch``, ``config`` (TrainConfig as a dict), ``input_shape`` ([channels, height,
width] of the images the model takes), ``model``, ``optimizer``, ``scheduler``, ``history`` (the
metrics records so far), ``input`` (channels, image_size, mean, std: what the model normalises its
inputs with), ``dataset_source`` (the dataset as given, and for image folders and CSV lists its
absolute path), ``split`` (for open-set runs: the train_classes and holdout_classes names) and,
after a collapse fallback, ``mining_fallback_epoch``. Checkpoints
written before ``input_shape`` existed hold MNIST models, (1, 28, 28). Older checkpoints also hold
``torch_rng``, which nothing reads: training draws from its own seeded generators, never from
torch's global RNG.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import UserError
from ..fileio import atomic_path
from ..models import MNIST_SHAPE, EmbeddingNet, InputShape, build_network

FORMAT = "tripletnet-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a tripletnet checkpoint; any problem is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any object that is not plain data: a crafted pickle ends here.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise UserError(f"{path} is not a safe tripletnet checkpoint (refused to unpickle: {first_line})") from None
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes break the unpickler in arbitrary ways (IndexError, KeyError, ...)
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}); is it truncated or another kind of file?") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a tripletnet checkpoint (no '{FORMAT}' marker)")
    for key in ("model", "config", "epoch"):
        if key not in state:
            raise UserError(f"{path} is an incomplete tripletnet checkpoint (missing {key!r})")
    return state


def model_from_checkpoint(state: dict[str, Any], source: str = "checkpoint") -> tuple[EmbeddingNet, TrainConfig]:
    """Rebuild the network a checkpoint was trained with and load its weights (eval mode)."""
    config = TrainConfig.from_dict(state["config"], source=source)
    model = build_network(config.network, config.embedding_dim, checkpoint_input_shape(state))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        summary = str(exc).strip().splitlines()[0]
        raise UserError(f"{source}: weights do not fit network {config.network!r}: {summary}") from None
    recorded_input = state.get("input")
    if isinstance(recorded_input, dict) and "mean" in recorded_input and "std" in recorded_input:
        model.set_input_normalization(recorded_input["mean"], recorded_input["std"])
    model.eval()
    return model, config


def checkpoint_input_shape(state: dict[str, Any]) -> InputShape:
    """(channels, height, width) the checkpoint's model takes; MNIST's for checkpoints that predate the field."""
    shape = state.get("input_shape", MNIST_SHAPE)
    return (int(shape[0]), int(shape[1]), int(shape[2]))
