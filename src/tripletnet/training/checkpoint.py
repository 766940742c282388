"""Checkpoints: written atomically, read back with ``weights_only=True`` (nothing is unpickled).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``format``, ``epoch``, ``config`` (TrainConfig as a dict), ``input_shape`` ([channels, height,
width] of the images the model takes), ``model``, ``optimizer``, ``scheduler``, ``history`` (the
metrics records so far), ``input`` (channels, image_size, mean, std: what the model normalises its
inputs with), ``dataset_source`` (the dataset as given, and for image folders and CSV lists its
absolute path), ``split`` (for open-set runs: the train_classes and holdout_classes names), ``weights_sha256``
(see :func:`weights_fingerprint`, checked at load: a flipped byte in a weight is refused) and,
after a collapse fallback, ``mining_fallback_epoch``. Checkpoints
written before ``input_shape`` existed hold MNIST models, (1, 28, 28). Older checkpoints also hold
``torch_rng``, which nothing reads: training draws from its own seeded generators, never from
torch's global RNG.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import UserError
from ..fileio import atomic_write_bytes
from ..models import MNIST_SHAPE, EmbeddingNet, InputShape, build_network

FORMAT = "tripletnet-checkpoint-v1"


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a model's weights: names, dtypes, shapes and values, in name order.

    Computed from the tensors, not the file, so re-saving the same weights (another epoch counter,
    optimiser state or pickle layout) keeps the fingerprint; changing any weight changes it.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Raw bytes of the values (a uint8 view works for every dtype, bf16 included).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with its weights' checksum, atomically.

    Serialised in memory first: torch.save reports a full disk as a RuntimeError from deep inside
    its zip writer, while a plain write raises the OSError that :mod:`~tripletnet.fileio` turns into
    one line (and the previous file stays).
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state, "weights_sha256": weights_fingerprint(state["model"])}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a tripletnet checkpoint; any problem is a one-line :class:`UserError`.

    Nothing is unpickled (``weights_only=True``), torch's own warnings and advice are not shown,
    and the weights must match the checksum stored beside them.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a checkpoint file (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses any object that is not plain data: a crafted pickle ends here.
        raise UserError(
            f"{path} is not a safe tripletnet checkpoint: it holds Python objects that only unpickling could "
            "rebuild, and tripletnet never unpickles"
        ) from None
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes break the unpickler in arbitrary ways (IndexError, KeyError, ...)
        raise UserError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}); is it truncated or another kind of file?"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a tripletnet checkpoint (no '{FORMAT}' marker)")
    for key in ("model", "config", "epoch"):
        if key not in state:
            raise UserError(f"{path} is an incomplete tripletnet checkpoint (missing {key!r})")
    expected = state.get("weights_sha256")  # absent in checkpoints written before the checksum existed
    if expected is not None and weights_fingerprint(state["model"]) != expected:
        raise UserError(f"{path} is damaged: its weights do not match the checksum stored with them")
    return state


def model_from_checkpoint(state: dict[str, Any], source: str = "checkpoint") -> tuple[EmbeddingNet, TrainConfig]:
    """Rebuild the network a checkpoint was trained with and load its weights (eval mode)."""
    config = TrainConfig.from_dict(state["config"], source=source)
    model = build_network(config.network, config.embedding_dim, checkpoint_input_shape(state), config.projection_dim)
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
