"""Checkpoints: written atomically, read back with ``weights_only=True`` (nothing is unpickled).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
``format``, ``epoch``, ``config`` (TrainConfig as a dict), ``input_shape`` ([channels, height,
width] of the images the model takes), ``model``, ``optimizer``, ``scheduler``, ``history`` (the
metrics records so far), ``input`` (channels, image_size, mean, std: what the model normalises its
inputs with), ``dataset_source`` (the dataset as given, and for image folders and CSV lists its
absolute path), ``split`` (for open-set runs: the train_classes and holdout_classes names), ``weights_sha256``
(see :func:`weights_fingerprint`, checked at load: a flipped byte in a weight is refused) and,
after a collapse fallback, ``mining_fallback_epoch``. Checkpoints
written before ``input_shape`` existed hold MNIST models, (1, 28, 28); those written before
``state_sha256`` existed are checked by their weights' checksum alone. Older checkpoints also hold
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
from typing import Any, NoReturn

import torch

from ..config import TrainConfig
from ..errors import UserError
from ..fileio import atomic_write_bytes
from ..inference.formats import export_kind
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


def state_fingerprint(state: Mapping[str, Any]) -> str:
    """sha256 of a whole checkpoint but its own ``state_sha256``: every tensor, number, string and key.

    Walks the plain data a checkpoint holds (dicts, lists, tuples, tensors, numbers, strings, None)
    in a fixed order: dict keys sorted, each value tagged with its type, so that ``1`` and ``"1"`` or
    ``1`` and ``1.0`` hash differently. Computed from the loaded values, not the file's bytes.
    """
    digest = hashlib.sha256()
    _digest_value(digest, {key: value for key, value in state.items() if key != "state_sha256"})
    return digest.hexdigest()


def _digest_value(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            digest.update(f"{type(key).__name__}:{key!r}=".encode())
            _digest_value(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _digest_value(digest, item)
    else:  # None, bool, int, float, str: repr is exact for each (floats round-trip)
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` with its weights' and its whole content's checksums, atomically.

    Serialised in memory first: torch.save reports a full disk as a RuntimeError from deep inside
    its zip writer, while a plain write raises the OSError that :mod:`~tripletnet.fileio` turns into
    one line (and the previous file stays).
    """
    checked = {"format": FORMAT, **state, "weights_sha256": weights_fingerprint(state["model"])}
    checked["state_sha256"] = state_fingerprint(checked)
    buffer = io.BytesIO()
    torch.save(checked, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a tripletnet checkpoint; any problem is a one-line :class:`UserError`.

    Nothing is unpickled (``weights_only=True``), torch's own warnings and advice are not shown,
    the weights and the whole content must match the checksums stored beside them, and every
    field must have the type and shape that the commands reading it rely on (see :func:`_check_structure`).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a checkpoint file (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if kind := export_kind(path):
        raise UserError(f"{path} is {kind} (what 'tripletnet export' writes), not a training checkpoint: give the "
                        "checkpoint it was exported from (a run's last.pt); the export itself runs in its own runtime")
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
    _check_structure(state, path)
    expected = state.get("weights_sha256")  # absent in checkpoints written before the checksum existed
    if expected is not None and weights_fingerprint(state["model"]) != expected:
        raise UserError(f"{path} is damaged: its weights do not match the checksum stored with them")
    expected = state.get("state_sha256")  # absent in checkpoints written before the whole-state checksum
    if expected is not None and state_fingerprint(state) != expected:
        raise UserError(
            f"{path} is damaged: its content (optimiser, scheduler, epoch, config or history) does not match "
            "the checksum stored with it"
        )
    return state


def _check_structure(state: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a checkpoint whose fields have types no command can use (a hand edit, another tool)."""
    def refuse(problem: str) -> NoReturn:
        raise UserError(f"{path} is not a usable tripletnet checkpoint: {problem}")

    model = state["model"]
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        refuse("'model' is not a dict of named tensors")
    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        refuse(f"'epoch' is {epoch!r}, not a whole number >= 0")
    if not isinstance(state["config"], dict):
        refuse(f"'config' is a {type(state['config']).__name__}, not a dict")
    for key, kind in (("optimizer", dict), ("scheduler", dict), ("history", list), ("input", dict)):
        if key in state and not isinstance(state[key], kind):
            refuse(f"{key!r} is a {type(state[key]).__name__}, not a {kind.__name__}")
    if not all(isinstance(record, dict) for record in state.get("history", [])):
        refuse("'history' holds something other than per-epoch records (dicts)")
    if "input_shape" in state:
        shape = state["input_shape"]
        if not (isinstance(shape, list | tuple) and len(shape) == 3
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
            refuse(f"'input_shape' is {shape!r}, not [channels, height, width]")
    fallback = state.get("mining_fallback_epoch")
    if fallback is not None and (not isinstance(fallback, int) or isinstance(fallback, bool)):
        refuse(f"'mining_fallback_epoch' is {fallback!r}, not an epoch number")


def restore_training_state(
    state: dict[str, Any], source: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Load a checkpoint's weights, optimiser and scheduler state to continue its run; any misfit is one line.

    Raises:
        UserError: the checkpoint lacks the optimiser or scheduler state (it was not written by
            ``tripletnet train``), or its weights or optimiser state do not fit the run's network.
    """
    for key in ("optimizer", "scheduler"):
        if key not in state:
            raise UserError(f"{source} cannot be resumed: it holds no {key!r} state (it was not written by 'tripletnet train')")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        summary = str(exc).strip().splitlines()[0]
        raise UserError(f"{source}: its weights do not fit the network its config names: {summary}") from None
    _check_optimizer_fits(state["optimizer"], optimizer, source)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError) as exc:
        raise UserError(f"{source}: its optimiser or scheduler state does not fit this run ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'malformed'})") from None
    last_epoch = state["scheduler"].get("last_epoch")
    if not isinstance(last_epoch, int) or isinstance(last_epoch, bool):
        raise UserError(f"{source}: its scheduler state has no epoch count ('last_epoch' is {last_epoch!r})")


def _check_optimizer_fits(saved: dict[str, Any], optimizer: torch.optim.Optimizer, source: str | Path) -> None:
    """Moment tensors shaped like the parameters they belong to: torch would only fail at the first step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups, per_param = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or not isinstance(per_param, dict):
        raise UserError(f"{source}: its optimiser state is malformed (no 'param_groups' list or 'state' dict)")
    for index, entry in per_param.items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise UserError(f"{source}: its optimiser state names parameter {index!r}, which this network does not have")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                raise UserError(f"{source}: its optimiser state {name!r} of parameter {index} has shape "
                                f"{tuple(value.shape)}, the parameter {tuple(params[index].shape)}")


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
